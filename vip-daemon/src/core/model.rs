//! A pure host-side model of the XDP balancer: the same decisions, made over a byte slice and
//! plain collections instead of the packet context and BPF maps. Tests compare the kernel's
//! verdicts and output bytes against it packet by packet, and `vipd trace` answers "which
//! backend gets this flow" with it. The flow hash, Maglev slot and outer headers come from
//! `vip_common`, the one definition both sides share; parsing is written again on purpose, so
//! that the comparison checks the program rather than itself.
use std::collections::{HashMap, HashSet};

use vip_common::{
    encap::{
        encap_source_key, ipv4_outer, ipv6_outer, outer_source_v4, outer_source_v6,
        second_chance_ttl, second_chances_taken, OUTER_TTL, SECOND_CHANCES,
    },
    flow::{addr_words, flow_hash, maglev_slot},
    icmp::{answerable_v4, frag_needed_v4, packet_too_big_v6, QUOTE_V4, QUOTE_V6},
    maps::{
        flow_stat, reason::*, Backend, EncapSourceKey, FlowEntry, FlowKey, Iface, Lease, LeaseKey,
        Settings, VipInfo, VipKey, BACKEND_F_KEEP_FLOWS, FWD_ENCAP, FWD_L2, FWD_LOCAL, NO_BACKEND,
        SETTINGS_F_ALL_PORTS, SETTINGS_F_PEERS, VIP_F_FLOWS, VIP_F_FLOWS_EXIT, VIP_F_LEASED,
        VIP_F_PREV_TABLE, VIP_F_SRC_HASH,
    },
    wire::*,
};

/// The contents of the maps, as the program would see them.
#[derive(Clone, Debug, Default)]
pub struct ModelState {
    pub settings: Settings,
    pub vips: HashMap<VipKey, VipInfo>,
    /// Indexed like `BACKENDS`; missing entries are zeroed (mode 0).
    pub backends: Vec<Backend>,
    /// Indexed like `ACTIVE`: offset of the live table in `slots`.
    pub active: Vec<u32>,
    pub slots: Vec<u32>,
    pub peers: HashSet<[u8; 6]>,
    /// The receiving interface's MAC, when listed in `IFACES` (None: not checked).
    pub own_mac: Option<[u8; 6]>,
    /// The receiving interface's MTU as listed in `IFACES` (0: unlisted or unknown, not
    /// checked): what encapsulation may grow a packet to.
    pub mtu: u16,
    /// Egress ports listed in both `EGRESS` and `EGRESS_DEVS`: port -> that interface's MAC
    /// and MTU. A backend behind an unlisted port has no way out.
    pub egress: HashMap<u8, Iface>,
    pub leases: HashMap<LeaseKey, Lease>,
    /// CLOCK_MONOTONIC nanoseconds the program's `bpf_ktime_get_ns` would read.
    pub now_ns: u64,
    /// What the program's socket lookups find. None: unknown, assume every local service
    /// has its socket and connections (no second chance), as `vipd trace` does.
    pub sockets: Option<LocalSockets>,
    /// The `FLOWS` map, filled by [`process`] as the program fills it. Unbounded: the model
    /// never evicts, so it matches the kernel only while the kernel's LRU map has room
    /// (tests keep well below its size).
    pub flows: HashMap<FlowKey, FlowEntry>,
    /// The `ENCAP_SOURCES` map: where balancers send encapsulated packets from.
    pub encap_sources: HashSet<EncapSourceKey>,
}

/// This node's sockets, as the program's second chance sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalSockets {
    /// Listening TCP and bound UDP sockets as (protocol, address, port), the unspecified
    /// address for a wildcard bind.
    pub bound: HashSet<(u8, [u8; 16], u16)>,
    /// TCP connections as (client address, client port, local address, local port).
    pub connections: HashSet<([u8; 16], u16, [u8; 16], u16)>,
}

/// What the program does with one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// `XDP_*` action.
    pub action: u32,
    /// `reason::*` counter incremented.
    pub reason: u32,
    /// The frame as it leaves the program.
    pub output: Vec<u8>,
    /// VIP index and backend index when a backend was chosen.
    pub chosen: Option<(u32, u32)>,
    /// `flow_stat::*` counters incremented, in order (a stale entry, then a miss).
    pub flow_stats: Vec<u32>,
}

/// A flow in the client -> VIP direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
}

/// Where a flow goes: the VIP, the slot and the backend index in the live table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    pub vip: VipInfo,
    pub hash: u32,
    pub slot: u32,
    /// `None`: the VIP's table has no backend for this slot (dropped).
    pub backend: Option<u32>,
}

impl ModelState {
    /// Whether `ENCAP_SOURCES` lists the outer source `addr` (per-flow part zeroed).
    pub fn from_balancer(&self, addr: [u8; 16], family: u8) -> bool {
        self.encap_sources.contains(&encap_source_key(addr, family))
    }

    /// This node's lease on a VIP address: None when not cluster-managed.
    pub fn lease(&self, addr: [u8; 16], family: u8) -> Option<bool> {
        let key = LeaseKey {
            addr,
            family,
            _pad: [0; 3],
        };
        self.leases.get(&key).map(|l| l.valid(self.now_ns))
    }

    /// The VIP of a flow: exact port first, then the all-ports entry.
    pub fn lookup_vip(&self, f: &Flow) -> Option<VipInfo> {
        let mut key = VipKey {
            addr: f.dst,
            port: f.dport,
            proto: f.proto,
            family: f.family,
        };
        if let Some(v) = self.vips.get(&key) {
            return Some(*v);
        }
        if self.settings.flags & SETTINGS_F_ALL_PORTS == 0 {
            return None;
        }
        key.port = 0;
        self.vips.get(&key).copied()
    }

    /// The program's flow hash for `flow` to `vip`.
    fn hash(&self, flow: &Flow, vip: &VipInfo) -> u32 {
        flow_hash(
            self.settings.hash_seed,
            &addr_words(&flow.src),
            &addr_words(&flow.dst),
            flow.sport,
            flow.dport,
            flow.proto,
            vip.flags & VIP_F_SRC_HASH != 0,
        )
    }

    /// The backend the live tables pick for `flow` (`vipd trace`).
    pub fn choose(&self, flow: &Flow) -> Option<Choice> {
        let vip = self.lookup_vip(flow)?;
        let base = *self.active.get(vip.index as usize)?;
        if vip.table_size == 0 {
            return Some(Choice {
                vip,
                hash: 0,
                slot: 0,
                backend: None,
            });
        }
        let hash = self.hash(flow, &vip);
        let slot = base.wrapping_add(maglev_slot(hash, vip.table_size));
        let backend = match self.slots.get(slot as usize) {
            Some(&i) if i != NO_BACKEND && (i as usize) < self.backends.len() => Some(i),
            _ => None,
        };
        Some(Choice {
            vip,
            hash,
            slot,
            backend,
        })
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn bytes<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn addr4(b: &[u8]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&b[..4]);
    a
}

fn addr16(b: &[u8]) -> [u8; 16] {
    b[..16].try_into().expect("16 bytes")
}

/// EtherType after at most two VLAN tags, and the L3 offset.
fn l3_offset(f: &[u8]) -> Option<(u16, usize)> {
    let mut proto = be16(f, 12)?;
    let mut l3 = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        proto = be16(f, l3 + 2)?;
        l3 += VLAN_HLEN;
    }
    Some((proto, l3))
}

fn verdict(frame: &[u8], action: u32, reason: u32) -> Outcome {
    Outcome {
        action,
        reason,
        output: frame.to_vec(),
        chosen: None,
        flow_stats: Vec::new(),
    }
}

/// The balancer program (`vip_xdp`) applied to one frame; updates `state.flows` as the
/// program updates `FLOWS`.
pub fn process(state: &mut ModelState, frame: &[u8]) -> Outcome {
    let pass = |reason| verdict(frame, XDP_PASS, reason);
    match l3_offset(frame) {
        Some((ETH_P_IP, l3)) => ipv4(state, frame, l3),
        Some((ETH_P_IPV6, l3)) => ipv6(state, frame, l3),
        Some((ETH_P_ARP, l3)) => match bytes::<ARP_HLEN>(frame, l3) {
            None => pass(PASS_MALFORMED),
            Some(a)
                if u16::from_be_bytes([a[0], a[1]]) == ARP_HRD_ETHER
                    && u16::from_be_bytes([a[2], a[3]]) == ETH_P_IP
                    && u16::from_be_bytes([a[6], a[7]]) == ARP_OP_REQUEST =>
            {
                let target = addr4(&a[ARP_TPA_OFFSET..ARP_TPA_OFFSET + 4]);
                match state.lease(target, FAMILY_V4) {
                    Some(false) => verdict(frame, XDP_DROP, DROP_NO_LEASE),
                    _ => pass(PASS_NOT_IP),
                }
            }
            Some(_) => pass(PASS_NOT_IP),
        },
        Some(_) => pass(PASS_NOT_IP),
        None => pass(PASS_MALFORMED),
    }
}

fn ipv4(state: &mut ModelState, f: &[u8], l3: usize) -> Outcome {
    let pass = |reason| verdict(f, XDP_PASS, reason);
    let Some(h) = bytes::<20>(f, l3) else {
        return pass(PASS_MALFORMED);
    };
    if h[0] >> 4 != 4 || h[0] & 0xf < 5 {
        return pass(PASS_MALFORMED);
    }
    let ihl = ((h[0] & 0xf) as usize) * 4;
    let total = u16::from_be_bytes([h[2], h[3]]) as usize;
    if total < ihl || l3 + total > f.len() {
        return pass(PASS_MALFORMED);
    }
    if u16::from_be_bytes([h[6], h[7]]) & (IPV4_MF | IPV4_FRAG_OFFSET_MASK) != 0 {
        return pass(PASS_FRAGMENT);
    }
    let l4 = l3 + ihl;
    let proto = h[9];
    if proto == IPPROTO_TCP || proto == IPPROTO_UDP {
        let Some(p) = bytes::<4>(f, l4) else {
            return pass(PASS_MALFORMED);
        };
        let flow = Flow {
            src: addr4(&h[12..16]),
            dst: addr4(&h[16..20]),
            sport: u16::from_be_bytes([p[0], p[1]]),
            dport: u16::from_be_bytes([p[2], p[3]]),
            proto,
            family: FAMILY_V4,
        };
        return to_backend(state, f, l3, l4, &flow, false);
    }
    if proto == IPPROTO_ICMP {
        let Some(t) = bytes::<2>(f, l4) else {
            return pass(PASS_MALFORMED);
        };
        if t[0] != ICMP_DEST_UNREACH || t[1] != ICMP_FRAG_NEEDED {
            return pass(PASS_ICMP);
        }
        return match inner_flow_v4(f, l4 + ICMP_HLEN) {
            Some(e) => to_backend(state, f, l3, l4, &reversed(&e), true),
            None => pass(PASS_ICMP),
        };
    }
    if proto == IPPROTO_IPIP && ihl == IPV4_HLEN {
        return match inner_flow_v4(f, l4) {
            Some(inner) => encapsulated(state, f, l3, IPV4_HLEN, h[8], v4_addr(&h, 12), &inner),
            None => pass(PASS_MALFORMED),
        };
    }
    pass(PASS_NOT_VIP)
}

/// The program's `encapsulated`: an encapsulated VIP packet is stripped and delivered, or,
/// without a socket for it, given one more second chance while the outer TTL allows; dropped
/// unless `outer_src` is a balancer's.
fn encapsulated(
    state: &ModelState,
    f: &[u8],
    l3: usize,
    outer_len: usize,
    ttl: u8,
    outer_src: [u8; 16],
    inner: &Flow,
) -> Outcome {
    let Some(vip) = state.lookup_vip(inner) else {
        return verdict(f, XDP_PASS, PASS_NOT_VIP);
    };
    if !state.from_balancer(outer_src, inner.family) {
        return verdict(f, XDP_DROP, DROP_ENCAP_SOURCE);
    }
    let out = decap(f, l3, outer_len);
    if out.reason != PASS_DECAP {
        return out;
    }
    let taken = second_chances_taken(ttl);
    second_chance(state, &out.output, l3, inner, &vip, false, taken).unwrap_or(out)
}

fn reversed(e: &Flow) -> Flow {
    Flow {
        src: e.dst,
        dst: e.src,
        sport: e.dport,
        dport: e.sport,
        ..*e
    }
}

fn inner_flow_v4(f: &[u8], l3: usize) -> Option<Flow> {
    let h = bytes::<20>(f, l3)?;
    if h[0] >> 4 != 4 || h[0] & 0xf < 5 || (h[9] != IPPROTO_TCP && h[9] != IPPROTO_UDP) {
        return None;
    }
    let p = bytes::<4>(f, l3 + ((h[0] & 0xf) as usize) * 4)?;
    Some(Flow {
        src: addr4(&h[12..16]),
        dst: addr4(&h[16..20]),
        sport: u16::from_be_bytes([p[0], p[1]]),
        dport: u16::from_be_bytes([p[2], p[3]]),
        proto: h[9],
        family: FAMILY_V4,
    })
}

fn inner_flow_v6(f: &[u8], l3: usize) -> Option<Flow> {
    let h = bytes::<40>(f, l3)?;
    if h[0] >> 4 != 6 || (h[6] != IPPROTO_TCP && h[6] != IPPROTO_UDP) {
        return None;
    }
    let p = bytes::<4>(f, l3 + IPV6_HLEN)?;
    Some(Flow {
        src: addr16(&h[8..24]),
        dst: addr16(&h[24..40]),
        sport: u16::from_be_bytes([p[0], p[1]]),
        dport: u16::from_be_bytes([p[2], p[3]]),
        proto: h[6],
        family: FAMILY_V6,
    })
}

fn ipv6(state: &mut ModelState, f: &[u8], l3: usize) -> Outcome {
    let pass = |reason| verdict(f, XDP_PASS, reason);
    let Some(h) = bytes::<40>(f, l3) else {
        return pass(PASS_MALFORMED);
    };
    if h[0] >> 4 != 6 {
        return pass(PASS_MALFORMED);
    }
    let payload = u16::from_be_bytes([h[4], h[5]]) as usize;
    if l3 + IPV6_HLEN + payload > f.len() {
        return pass(PASS_MALFORMED);
    }
    let l4 = l3 + IPV6_HLEN;
    match h[6] {
        IPPROTO_TCP | IPPROTO_UDP => match bytes::<4>(f, l4) {
            Some(p) => {
                let flow = Flow {
                    src: addr16(&h[8..24]),
                    dst: addr16(&h[24..40]),
                    sport: u16::from_be_bytes([p[0], p[1]]),
                    dport: u16::from_be_bytes([p[2], p[3]]),
                    proto: h[6],
                    family: FAMILY_V6,
                };
                to_backend(state, f, l3, l4, &flow, false)
            }
            None => pass(PASS_MALFORMED),
        },
        IPPROTO_ICMPV6 => match f.get(l4) {
            None => pass(PASS_MALFORMED),
            Some(&ICMPV6_NEIGH_SOLICIT) => match bytes::<24>(f, l4) {
                None => pass(PASS_MALFORMED),
                Some(ns) => match state.lease(addr16(&ns[ICMP_HLEN..]), FAMILY_V6) {
                    Some(false) => verdict(f, XDP_DROP, DROP_NO_LEASE),
                    _ => pass(PASS_ICMP),
                },
            },
            Some(&t) if t != ICMPV6_PKT_TOOBIG => pass(PASS_ICMP),
            Some(_) => match inner_flow_v6(f, l4 + ICMP_HLEN) {
                Some(e) => to_backend(state, f, l3, l4, &reversed(&e), true),
                None => pass(PASS_ICMP),
            },
        },
        IPPROTO_IPV6 => match inner_flow_v6(f, l4) {
            Some(inner) => {
                let mut src = [0u8; 16];
                src.copy_from_slice(&h[8..24]);
                encapsulated(state, f, l3, IPV6_HLEN, h[7], src, &inner)
            }
            None => pass(PASS_MALFORMED),
        },
        IPV6_NEXT_FRAGMENT => pass(PASS_FRAGMENT),
        IPV6_NEXT_HOP_BY_HOP | IPV6_NEXT_ROUTING | IPV6_NEXT_DEST_OPTS | IPV6_NEXT_AH
        | IPV6_NEXT_ESP | IPV6_NEXT_MOBILITY | IPV6_NEXT_HIP | IPV6_NEXT_SHIM6 => {
            pass(PASS_IPV6_EXT)
        }
        _ => pass(PASS_NOT_VIP),
    }
}

/// `l4`: the TCP/UDP header of the packet itself (unused for an ICMP error, `icmp`).
fn to_backend(
    state: &mut ModelState,
    f: &[u8],
    l3: usize,
    l4: usize,
    flow: &Flow,
    icmp: bool,
) -> Outcome {
    let pass = |reason| verdict(f, XDP_PASS, reason);
    let drop = |reason| verdict(f, XDP_DROP, reason);
    // Same order as the program: VIP, destination MAC, peer, lease, then the flow table and
    // the live table.
    let Some(vip) = state.lookup_vip(flow) else {
        return pass(if icmp { PASS_ICMP } else { PASS_NOT_VIP });
    };
    let unicast = f[0] & 1 == 0;
    if unicast && state.own_mac.is_some_and(|mac| f[..6] != mac) {
        return pass(PASS_OTHER_HOST);
    }
    if state.settings.flags & SETTINGS_F_PEERS != 0 && state.peers.contains(&f[6..12]) {
        return second_chance(state, f, l3, flow, &vip, icmp, 0)
            .unwrap_or_else(|| pass(PASS_FROM_PEER));
    }
    if vip.flags & VIP_F_LEASED != 0 && state.lease(flow.dst, flow.family) != Some(true) {
        return drop(DROP_NO_LEASE);
    }
    let hash = state.hash(flow, &vip);
    let mut flow_stats = Vec::new();
    let picked = if vip.flags & VIP_F_FLOWS != 0 {
        pick_with_flows(state, f, l4, flow, icmp, (&vip, hash), &mut flow_stats)
    } else if vip.flags & VIP_F_FLOWS_EXIT != 0 {
        let syn = !icmp && flow.proto == IPPROTO_TCP && syn_at(f, l4);
        (!syn)
            .then(|| usable_entry(state, &flow_key(flow), &mut flow_stats))
            .flatten()
            .or_else(|| state.choose(flow).and_then(|c| c.backend))
    } else {
        state.choose(flow).and_then(|c| c.backend)
    };
    let Some(index) = picked else {
        // No ACTIVE word, an empty table or an empty slot.
        let mut out = drop(DROP_NO_BACKEND);
        out.flow_stats = flow_stats;
        return out;
    };
    let backend = &state.backends[index as usize];
    let second = (backend.mode == FWD_LOCAL)
        .then(|| second_chance(state, f, l3, flow, &vip, icmp, 0))
        .flatten();
    let mut out = second.unwrap_or_else(|| {
        let how = Send {
            hash,
            family: flow.family,
            icmp,
            ttl: OUTER_TTL,
        };
        forward(state, f, l3, backend, &how)
    });
    // The program counts the VIP and backend before forwarding, whatever follows.
    out.chosen = Some((vip.index, index));
    out.flow_stats = flow_stats;
    out
}

/// The program's `pick_with_flows`: the backend of the flow's entry while that backend may
/// keep it, otherwise (a mid-stream TCP segment of a VIP in its transition) the previous
/// table's pick while that backend keeps its flows, otherwise the live table's pick; the
/// pick is entered. Pushes the `flow_stat` counters it counts.
fn pick_with_flows(
    state: &mut ModelState,
    f: &[u8],
    l4: usize,
    flow: &Flow,
    icmp: bool,
    (vip, hash): (&VipInfo, u32),
    stats: &mut Vec<u32>,
) -> Option<u32> {
    let key = flow_key(flow);
    let syn = !icmp && flow.proto == IPPROTO_TCP && syn_at(f, l4);
    if !syn {
        if let Some(index) = usable_entry(state, &key, stats) {
            return Some(index);
        }
    }
    let midstream = !icmp && flow.proto == IPPROTO_TCP && !syn;
    if midstream && vip.flags & VIP_F_PREV_TABLE != 0 {
        if let Some((index, serial)) = previous_pick(state, vip, hash) {
            stats.push(flow_stat::PREVIOUS);
            state.flows.insert(
                key,
                FlowEntry {
                    backend: index,
                    serial,
                },
            );
            return Some(index);
        }
    }
    let index = state.choose(flow)?.backend?;
    if !icmp {
        stats.push(if midstream {
            flow_stat::MISS_MIDSTREAM
        } else {
            flow_stat::MISS_NEW
        });
        let serial = state.backends[index as usize].serial;
        state.flows.insert(
            key,
            FlowEntry {
                backend: index,
                serial,
            },
        );
    }
    Some(index)
}

fn flow_key(flow: &Flow) -> FlowKey {
    FlowKey {
        src: flow.src,
        dst: flow.dst,
        sport: flow.sport,
        dport: flow.dport,
        proto: flow.proto,
        family: flow.family,
        _pad: [0; 2],
    }
}

/// The program's `usable_entry`: the entry's backend while it keeps its flows.
fn usable_entry(state: &ModelState, key: &FlowKey, stats: &mut Vec<u32>) -> Option<u32> {
    let entry = state.flows.get(key)?;
    match state.backends.get(entry.backend as usize) {
        Some(b) if b.serial == entry.serial && b.flags & BACKEND_F_KEEP_FLOWS != 0 => {
            stats.push(flow_stat::HIT);
            Some(entry.backend)
        }
        _ => {
            stats.push(flow_stat::STALE);
            None
        }
    }
}

/// The program's `previous_pick`: the backend the previous table (`ACTIVE[fallback - 1]`)
/// gives a flow of hash `hash`, and its serial, when that backend keeps its flows.
fn previous_pick(state: &ModelState, vip: &VipInfo, hash: u32) -> Option<(u32, u32)> {
    if vip.fallback == 0 || vip.table_size == 0 {
        return None;
    }
    let base = *state.active.get(vip.fallback as usize - 1)?;
    let index = *state
        .slots
        .get(base.wrapping_add(maglev_slot(hash, vip.table_size)) as usize)?;
    if index == NO_BACKEND {
        return None;
    }
    let backend = state.backends.get(index as usize)?;
    (backend.flags & BACKEND_F_KEEP_FLOWS != 0 && backend.serial != 0)
        .then_some((index, backend.serial))
}

/// SYN without ACK in a whole TCP header at `l4` (the program's `is_syn`).
fn syn_at(f: &[u8], l4: usize) -> bool {
    bytes::<TCP_HLEN>(f, l4)
        .is_some_and(|t| t[TCP_FLAGS_OFFSET] & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN)
}

/// The program's `has_socket`, from [`ModelState::sockets`]: a TCP segment needs its
/// connection, except a SYN, which a listener takes (the model knows no syncookies).
fn has_socket(state: &ModelState, f: &[u8], l3: usize, flow: &Flow) -> bool {
    state.sockets.as_ref().is_none_or(|s| {
        let bound = s.bound.contains(&(flow.proto, flow.dst, flow.dport))
            || s.bound.contains(&(flow.proto, [0; 16], flow.dport));
        if flow.proto != IPPROTO_TCP {
            return bound;
        }
        let connection = (flow.src, flow.sport, flow.dst, flow.dport);
        s.connections.contains(&connection) || (bound && is_syn(f, l3, flow.family))
    })
}

/// A SYN without ACK, as the program's `listener_takes` reads it (a truncated header is not).
fn is_syn(f: &[u8], l3: usize, family: u8) -> bool {
    let l4 = match family {
        FAMILY_V4 => f.get(l3).map(|v| l3 + usize::from(v & 0xf) * 4),
        _ => Some(l3 + IPV6_HLEN),
    };
    l4.filter(|l4| f.len() >= l4 + TCP_HLEN)
        .and_then(|l4| f.get(l4 + TCP_FLAGS_OFFSET))
        .is_some_and(|flags| flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN)
}

/// The program's `second_chance`: a packet for a local service without a socket, given
/// `taken` second chances so far, goes encapsulated to the backend of the fallback table.
fn second_chance(
    state: &ModelState,
    f: &[u8],
    l3: usize,
    flow: &Flow,
    vip: &VipInfo,
    icmp: bool,
    taken: u8,
) -> Option<Outcome> {
    if taken >= SECOND_CHANCES
        || vip.fallback == 0
        || vip.flags & VIP_F_FLOWS != 0
        || icmp
        || vip.table_size == 0
        || has_socket(state, f, l3, flow)
    {
        return None;
    }
    let base = *state.active.get(vip.fallback as usize - 1)?;
    let hash = state.hash(flow, vip);
    let index = *state
        .slots
        .get(base.wrapping_add(maglev_slot(hash, vip.table_size)) as usize)?;
    let backend = state.backends.get(index as usize)?;
    if index == NO_BACKEND || backend.mode == FWD_LOCAL || backend.family != flow.family {
        return None;
    }
    let encap = Backend {
        mode: FWD_ENCAP,
        ..*backend
    };
    let how = Send {
        hash,
        family: flow.family,
        icmp: false,
        ttl: second_chance_ttl(taken),
    };
    let mut out = forward(state, f, l3, &encap, &how);
    if out.reason == TX_ENCAP {
        out.reason = TX_SECOND_CHANCE;
    }
    Some(out)
}

/// How a packet is sent on: its flow hash (the outer source), its family, whether it is an
/// ICMP error, and the outer TTL if it is encapsulated.
#[derive(Clone, Copy)]
struct Send {
    hash: u32,
    family: u8,
    icmp: bool,
    ttl: u8,
}

fn forward(state: &ModelState, f: &[u8], l3: usize, b: &Backend, how: &Send) -> Outcome {
    let Send {
        hash,
        family,
        icmp,
        ttl,
    } = *how;
    let sent = if icmp { TX_ICMP } else { TX_L2 };
    if b.mode == FWD_LOCAL {
        return verdict(f, XDP_PASS, PASS_LOCAL);
    }
    if b.mode != FWD_L2 && (b.mode != FWD_ENCAP || b.family != family) {
        return verdict(f, XDP_DROP, DROP_NO_BACKEND);
    }
    // The way out: the receiving interface (its MAC is the frame's destination), or the
    // attached interface of the backend's egress port.
    let (action, src_mac, mtu) = match b.egress {
        0 => (XDP_TX, bytes::<6>(f, 0).expect("6 bytes"), state.mtu),
        port => match state.egress.get(&port) {
            Some(i) => (XDP_REDIRECT, i.mac, i.mtu),
            None => return verdict(f, XDP_DROP, DROP_NO_BACKEND),
        },
    };
    match b.mode {
        FWD_L2 => {
            let mut out = f.to_vec();
            out[0..6].copy_from_slice(&b.mac);
            out[6..12].copy_from_slice(&src_mac);
            Outcome {
                action,
                reason: sent,
                output: out,
                chosen: None,
                flow_stats: Vec::new(),
            }
        }
        FWD_ENCAP if b.family == family => {
            let grown = if family == FAMILY_V4 {
                IPV4_HLEN
            } else {
                IPV6_HLEN
            };
            if mtu != 0 && f.len() - l3 + grown > mtu as usize {
                if icmp {
                    return verdict(f, XDP_DROP, DROP_TOO_BIG);
                }
                return too_big(f, l3, u32::from(mtu).saturating_sub(grown as u32));
            }
            let (outer_len, outer): (usize, Vec<u8>) = if family == FAMILY_V4 {
                let inner_len = u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]);
                let src = outer_source_v4(state.settings.encap_src_v4, hash);
                let dst = [b.addr[0], b.addr[1], b.addr[2], b.addr[3]];
                (
                    IPV4_HLEN,
                    ipv4_outer(inner_len, f[l3 + 1], ttl, src, dst).to_vec(),
                )
            } else {
                let inner_len =
                    u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]).wrapping_add(IPV6_HLEN as u16);
                let first = [f[l3], f[l3 + 1], f[l3 + 2], f[l3 + 3]];
                let src = outer_source_v6(state.settings.encap_src_v6, hash);
                (
                    IPV6_HLEN,
                    ipv6_outer(inner_len, first, ttl, src, b.addr).to_vec(),
                )
            };
            // Same writes, in the same order, as the program after bpf_xdp_adjust_head.
            let mut out = vec![0u8; outer_len];
            out.extend_from_slice(f);
            let tail: [u8; 10] = f[12..22].try_into().expect("10 bytes");
            out[0..6].copy_from_slice(&b.mac);
            out[6..12].copy_from_slice(&src_mac);
            out[12..22].copy_from_slice(&tail);
            out[l3..l3 + outer_len].copy_from_slice(&outer);
            Outcome {
                action,
                reason: if icmp { TX_ICMP } else { TX_ENCAP },
                output: out,
                chosen: None,
                flow_stats: Vec::new(),
            }
        }
        _ => verdict(f, XDP_DROP, DROP_NO_BACKEND),
    }
}

/// The program's `too_big::answer`: the frame rewritten into the ICMP answer to its packet,
/// announcing `mtu` (the L2 header turned back, the quote after the new headers).
fn too_big(f: &[u8], l3: usize, mtu: u32) -> Outcome {
    let drop = || verdict(f, XDP_DROP, DROP_TOO_BIG);
    let head: Vec<u8> = if be16(f, l3 - 2) == Some(ETH_P_IP) {
        match bytes::<QUOTE_V4>(f, l3) {
            Some(q) if answerable_v4(&q) => frag_needed_v4(&q, mtu as u16).to_vec(),
            _ => return drop(),
        }
    } else {
        match bytes::<QUOTE_V6>(f, l3) {
            Some(q) => packet_too_big_v6(&q, mtu).to_vec(),
            None => return drop(),
        }
    };
    let mut out = f[..l3].to_vec();
    out[0..6].copy_from_slice(&f[6..12]);
    out[6..12].copy_from_slice(&f[0..6]);
    out.extend_from_slice(&head);
    out.extend_from_slice(&f[l3..l3 + head.len()]);
    Outcome {
        action: XDP_TX,
        reason: TX_TOO_BIG,
        output: out,
        chosen: None,
        flow_stats: Vec::new(),
    }
}

/// Strips the outer header at `l3`, keeping the L2 header in front of the inner packet.
/// A frame too short for the rewrite is passed as malformed (with the writes that fit done,
/// exactly like the program).
fn decap(f: &[u8], l3: usize, outer_len: usize) -> Outcome {
    let mut out = f.to_vec();
    let (Some(macs), Some(tail)) = (bytes::<12>(f, 0), bytes::<10>(f, 12)) else {
        return verdict(f, XDP_PASS, PASS_MALFORMED);
    };
    if outer_len + 12 > f.len() {
        return verdict(f, XDP_PASS, PASS_MALFORMED);
    }
    out[outer_len..outer_len + 12].copy_from_slice(&macs);
    let keep = match l3 {
        14 => 2,
        18 => 6,
        _ => 10,
    };
    if outer_len + 12 + keep > f.len() {
        return Outcome {
            action: XDP_PASS,
            reason: PASS_MALFORMED,
            output: out,
            chosen: None,
            flow_stats: Vec::new(),
        };
    }
    out[outer_len + 12..outer_len + 12 + keep].copy_from_slice(&tail[..keep]);
    Outcome {
        action: XDP_PASS,
        reason: PASS_DECAP,
        output: out[outer_len..].to_vec(),
        chosen: None,
        flow_stats: Vec::new(),
    }
}

/// The backend-side program (`vip_decap`) applied to one frame, with `ENCAP_SOURCES` holding
/// `sources`.
pub fn process_decap(frame: &[u8], sources: &HashSet<EncapSourceKey>) -> Outcome {
    let pass = |reason| verdict(frame, XDP_PASS, reason);
    let known = |addr, family| sources.contains(&encap_source_key(addr, family));
    match l3_offset(frame) {
        Some((ETH_P_IP, l3)) => match bytes::<20>(frame, l3) {
            Some(h) if h[0] == 0x45 && h[9] == IPPROTO_IPIP => {
                if known(v4_addr(&h, 12), FAMILY_V4) {
                    decap(frame, l3, IPV4_HLEN)
                } else {
                    verdict(frame, XDP_DROP, DROP_ENCAP_SOURCE)
                }
            }
            Some(_) => pass(PASS_NOT_VIP),
            None => match bytes::<10>(frame, l3) {
                Some(h) if h[0] != 0x45 || h[9] != IPPROTO_IPIP => pass(PASS_NOT_VIP),
                _ => pass(PASS_MALFORMED),
            },
        },
        Some((ETH_P_IPV6, l3)) => match bytes::<40>(frame, l3) {
            Some(h) if h[0] >> 4 == 6 && h[6] == IPPROTO_IPV6 => {
                let mut src = [0u8; 16];
                src.copy_from_slice(&h[8..24]);
                if known(src, FAMILY_V6) {
                    decap(frame, l3, IPV6_HLEN)
                } else {
                    verdict(frame, XDP_DROP, DROP_ENCAP_SOURCE)
                }
            }
            Some(_) => pass(PASS_NOT_VIP),
            None => match bytes::<8>(frame, l3) {
                Some(h) if h[0] >> 4 != 6 || h[6] != IPPROTO_IPV6 => pass(PASS_NOT_VIP),
                _ => pass(PASS_MALFORMED),
            },
        },
        Some(_) => pass(PASS_NOT_IP),
        None => pass(PASS_MALFORMED),
    }
}

/// The IPv4 address at `at` of a header, as a 16-byte map address (rest zero).
fn v4_addr<const N: usize>(h: &[u8; N], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&h[at..at + 4]);
    a
}
