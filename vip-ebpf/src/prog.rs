//! The balancer: parse, find the VIP, pick the backend from the live Maglev table, forward.
//! Anything it does not understand is passed to the kernel untouched and counted; nothing
//! malformed is ever forwarded.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    helpers::bpf_ktime_get_ns,
    macros::xdp,
    programs::XdpContext,
};
use vip_common::{
    encap::{encap_source_key, second_chances_taken, OUTER_TTL},
    flow::{flow_hash, maglev_slot, words_addr},
    maps::{
        flow_stat, peer_filter_bit, reason::*, vip_filter_bit, Backend, FlowEntry, FlowKey,
        IfaceSlot, LeaseKey, PeerKey, Settings, VipInfo, VipKey, BACKEND_F_KEEP_FLOWS, FWD_ENCAP,
        FWD_L2, FWD_LOCAL, NO_BACKEND, REASON_F_NOTED, REASON_F_TOO_BIG, SETTINGS_F_ALL_PORTS,
        SETTINGS_F_DEBUG, SETTINGS_F_PEERS, SLOTS_PER_ELEMENT, VIP_F_FLOWS, VIP_F_FLOWS_EXIT,
        VIP_F_LEASED, VIP_F_PREV_TABLE, VIP_F_SRC_HASH,
    },
    wire::*,
};

use crate::{
    debug,
    encap::{decap, egress, encapsulate, Send},
    maps::{
        count, ACTIVE, BACKENDS, BACKEND_STATS, ENCAP_SOURCES, FLOWS, FLOW_STATS, IFACES,
        IFACE_SLOTS, LEASES, PEERS, PEER_FILTER, SETTINGS, SLOTS, STATS, VIPS, VIP_FILTER,
        VIP_STATS,
    },
    pkt::{be16_at, read, read_bytes, u8_at, write_bytes, View},
    second_chance::second_chance,
    too_big,
};

/// (XDP action, reason counter).
pub type Verdict = (u32, u32);

const MALFORMED: Verdict = (XDP_PASS, PASS_MALFORMED);

/// A parsed flow in the client -> VIP direction. Addresses as `flow::addr_words`.
pub struct Flow {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
}

impl Flow {
    /// The flow an embedded packet (the backend's reply, VIP -> client) belongs to.
    #[inline(always)]
    fn reversed(&self) -> Flow {
        Flow {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
            family: self.family,
        }
    }
}

#[xdp]
pub fn vip_xdp(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let (mut action, mut why) = if surely_no_vip(&ctx) {
        (XDP_PASS, PASS_NOT_VIP)
    } else {
        balance(&ctx)
    };
    if why & (REASON_F_NOTED | REASON_F_TOO_BIG) != 0 {
        (action, why) = flagged(&ctx, (action, why));
    }
    count(&STATS, why, bytes);
    action
}

/// The common packet for no VIP, decided here without calling the balancer (whose code the
/// packet would otherwise run through, cold): untagged IPv4 or IPv6, TCP or UDP, whole, the
/// destination's `VIP_FILTER` bit clear. Exactly the packets `balance` passes as
/// `PASS_NOT_VIP` at its filter check (same header checks, same filter); anything else goes
/// to `balance`, which decides as before.
#[inline(always)]
fn surely_no_vip(ctx: &XdpContext) -> bool {
    let (dst, l4, proto) = match be16_at(ctx, 12) {
        Some(ETH_P_IP) => match ipv4_header(ctx, ETH_HLEN) {
            Ok((h, l4)) => (h.addr(16, true), l4, h.u8(9)),
            Err(_) => return false,
        },
        Some(ETH_P_IPV6) => match ipv6_header(ctx, ETH_HLEN) {
            Ok(h) => (h.addr(24, false), ETH_HLEN + IPV6_HLEN, h.u8(6)),
            Err(_) => return false,
        },
        _ => return false,
    };
    (proto == IPPROTO_TCP || proto == IPPROTO_UDP) && ports(ctx, l4).is_some() && !maybe_vip(&dst)
}

/// A verdict with flags: answer "too big" (`REASON_F_TOO_BIG`), then log the packet
/// (`REASON_F_NOTED`). Out of line, so that the entry stays as small as without them.
#[inline(never)]
fn flagged(ctx: &XdpContext, (mut action, mut why): Verdict) -> Verdict {
    let noted = why & REASON_F_NOTED != 0;
    if why & REASON_F_TOO_BIG != 0 {
        (action, why) = too_big::answer(ctx, (why >> 8) & 0xffff);
    }
    if noted {
        let verdict = debug::log(action << 8 | (why & 0xff));
        (action, why) = ((verdict >> 8) & 0x7, verdict & 0xff);
    }
    (action, why)
}

/// Backend side of encapsulated DSR: strip the outer IPv4/IPv6 header of a packet a balancer
/// sent (its outer source in `ENCAP_SOURCES`), deliver locally; drop any other IPIP/IP6IP6.
#[xdp]
pub fn vip_decap(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let why = match l3_offset(&ctx) {
        Some((ETH_P_IP, l3)) => match View::at::<20>(&ctx, l3) {
            Some(h) if h.u8(0) == 0x45 && h.u8(9) == IPPROTO_IPIP => {
                if from_balancer(words_addr(&h.addr(12, true)), FAMILY_V4) {
                    decap(&ctx, l3, IPV4_HLEN)
                } else {
                    DROP_ENCAP_SOURCE
                }
            }
            Some(_) => PASS_NOT_VIP,
            // Too short for an outer header (it could not be stripped anyway).
            None => match read::<[u8; 10]>(&ctx, l3) {
                Some(h) if h[0] != 0x45 || h[9] != IPPROTO_IPIP => PASS_NOT_VIP,
                _ => PASS_MALFORMED,
            },
        },
        Some((ETH_P_IPV6, l3)) => match View::at::<40>(&ctx, l3) {
            Some(h) if h.u8(0) >> 4 == 6 && h.u8(6) == IPPROTO_IPV6 => {
                if from_balancer(words_addr(&h.addr(8, false)), FAMILY_V6) {
                    decap(&ctx, l3, IPV6_HLEN)
                } else {
                    DROP_ENCAP_SOURCE
                }
            }
            Some(_) => PASS_NOT_VIP,
            None => match read::<[u8; 8]>(&ctx, l3) {
                Some(h) if h[0] >> 4 != 6 || h[6] != IPPROTO_IPV6 => PASS_NOT_VIP,
                _ => PASS_MALFORMED,
            },
        },
        Some(_) => PASS_NOT_IP,
        None => PASS_MALFORMED,
    };
    count(&STATS, why, bytes);
    if why == DROP_ENCAP_SOURCE {
        XDP_DROP
    } else {
        XDP_PASS
    }
}

/// Whether an outer source `addr` of `family` is one balancers send encapsulated packets
/// from (`ENCAP_SOURCES`, keyed with the per-flow part zeroed).
#[inline(always)]
fn from_balancer(addr: [u8; 16], family: u8) -> bool {
    let key = encap_source_key(addr, family);
    // SAFETY: only tests for presence.
    unsafe { ENCAP_SOURCES.get(&key) }.is_some()
}

/// EtherType after at most two VLAN tags, and the L3 offset (14, 18 or 22).
#[inline(always)]
pub(crate) fn l3_offset(ctx: &XdpContext) -> Option<(u16, usize)> {
    let mut proto = be16_at(ctx, 12)?;
    let mut l3 = ETH_HLEN;
    if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
        proto = be16_at(ctx, l3 + 2)?;
        l3 += VLAN_HLEN;
        if proto == ETH_P_8021Q || proto == ETH_P_8021AD {
            proto = be16_at(ctx, l3 + 2)?;
            l3 += VLAN_HLEN;
        }
    }
    Some((proto, l3))
}

// Out of line: its frame (~440 bytes) must not sit under `debug::log`'s aya-log record
// (~320 bytes) within the verifier's 512-byte stack.
#[inline(never)]
fn balance(ctx: &XdpContext) -> Verdict {
    match l3_offset(ctx) {
        Some((ETH_P_IP, l3)) => ipv4(ctx, l3),
        Some((ETH_P_IPV6, l3)) => ipv6(ctx, l3),
        Some((ETH_P_ARP, l3)) => arp(ctx, l3),
        Some(_) => (XDP_PASS, PASS_NOT_IP),
        None => MALFORMED,
    }
}

/// This node's lease on a VIP address: None when the address is not cluster-managed,
/// Some(valid) otherwise.
#[inline(always)]
fn lease(addr: &[u32; 4], family: u8) -> Option<bool> {
    let key = LeaseKey::from_words(addr, family);
    // SAFETY: the value is copied out at once; bpf_ktime_get_ns has no preconditions.
    unsafe { LEASES.get(&key) }.map(|l| l.valid(unsafe { bpf_ktime_get_ns() }))
}

/// ARP requests for a cluster VIP are answered only by the node holding its lease.
#[inline(always)]
fn arp(ctx: &XdpContext, l3: usize) -> Verdict {
    let Some(a) = View::at::<ARP_HLEN>(ctx, l3) else {
        return MALFORMED;
    };
    if a.be16(0) != ARP_HRD_ETHER || a.be16(2) != ETH_P_IP || a.be16(6) != ARP_OP_REQUEST {
        return (XDP_PASS, PASS_NOT_IP);
    }
    match lease(&a.addr(ARP_TPA_OFFSET, true), FAMILY_V4) {
        Some(false) => (XDP_DROP, DROP_NO_LEASE),
        _ => (XDP_PASS, PASS_NOT_IP),
    }
}

/// Source and destination ports of the TCP/UDP header at `l4` (host order).
#[inline(always)]
fn ports(ctx: &XdpContext, l4: usize) -> Option<(u16, u16)> {
    let p = View::at::<4>(ctx, l4)?;
    Some((p.be16(0), p.be16(2)))
}

/// The IPv4 header at `l3` of a whole (unfragmented), consistent packet, and where its
/// payload starts; otherwise the verdict (malformed, fragment).
#[inline(always)]
fn ipv4_header(ctx: &XdpContext, l3: usize) -> Result<(View, usize), Verdict> {
    let h = View::at::<20>(ctx, l3).ok_or(MALFORMED)?;
    let vihl = h.u8(0);
    if vihl >> 4 != 4 || vihl & 0xf < 5 {
        return Err(MALFORMED);
    }
    let ihl = ((vihl & 0xf) as usize) * 4;
    let total = h.be16(2) as usize;
    if total < ihl || l3 + total > ctx.data_end() - ctx.data() {
        return Err(MALFORMED);
    }
    if h.be16(6) & (IPV4_MF | IPV4_FRAG_OFFSET_MASK) != 0 {
        return Err((XDP_PASS, PASS_FRAGMENT));
    }
    Ok((h, l3 + ihl))
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, l3: usize) -> Verdict {
    let (h, l4) = match ipv4_header(ctx, l3) {
        Ok(parsed) => parsed,
        Err(verdict) => return verdict,
    };
    let ihl = l4 - l3;
    let proto = h.u8(9);
    if proto == IPPROTO_TCP || proto == IPPROTO_UDP {
        let Some((sport, dport)) = ports(ctx, l4) else {
            return MALFORMED;
        };
        let flow = Flow {
            src: h.addr(12, true),
            dst: h.addr(16, true),
            sport,
            dport,
            proto,
            family: FAMILY_V4,
        };
        return to_backend(ctx, l3, l4, &flow, false);
    }
    if proto == IPPROTO_ICMP {
        return icmp4(ctx, l3, l4);
    }
    if proto == IPPROTO_IPIP && ihl == IPV4_HLEN {
        return match inner_flow_v4(ctx, l4) {
            Some(inner) => {
                let outer_src = words_addr(&h.addr(12, true));
                encapsulated(ctx, l3, IPV4_HLEN, h.u8(8), outer_src, &inner)
            }
            None => MALFORMED,
        };
    }
    (XDP_PASS, PASS_NOT_VIP)
}

/// Encapsulated by a peer (its table or its second chance picked a backend here): when the
/// inner packet is for a VIP, strip the outer header and deliver locally, unless this node
/// has no socket for it and the outer TTL allows one more second chance. Only when a balancer
/// sent it (`outer_src` in `ENCAP_SOURCES`, looked up only for VIP packets); a VIP packet from
/// anyone else is dropped.
#[inline(always)]
fn encapsulated(
    ctx: &XdpContext,
    l3: usize,
    outer_len: usize,
    ttl: u8,
    outer_src: [u8; 16],
    inner: &Flow,
) -> Verdict {
    if !maybe_vip(&inner.dst) {
        return (XDP_PASS, PASS_NOT_VIP);
    }
    let Some(settings) = SETTINGS.get(0) else {
        return (XDP_PASS, PASS_NOT_VIP);
    };
    let Some(vip) = lookup_vip(inner, settings.flags) else {
        return (XDP_PASS, PASS_NOT_VIP);
    };
    // IPIP and IP6IP6 only: the outer family is the inner one.
    if !from_balancer(outer_src, inner.family) {
        return (XDP_DROP, DROP_ENCAP_SOURCE);
    }
    let why = decap(ctx, l3, outer_len);
    if why != PASS_DECAP {
        return (XDP_PASS, why);
    }
    let taken = second_chances_taken(ttl);
    let mtu = receiving_iface(ctx).mtu;
    match second_chance(ctx, l3, inner, &vip, settings, false, taken, mtu) {
        Some(v) => v,
        None => (XDP_PASS, PASS_DECAP),
    }
}

/// The TCP/UDP flow of the IPv4 packet at `l3` (no fragments), as sent.
#[inline(always)]
fn inner_flow_v4(ctx: &XdpContext, l3: usize) -> Option<Flow> {
    let h = View::at::<20>(ctx, l3)?;
    let (vihl, proto) = (h.u8(0), h.u8(9));
    if vihl >> 4 != 4 || vihl & 0xf < 5 || (proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
        return None;
    }
    let (sport, dport) = ports(ctx, l3 + ((vihl & 0xf) as usize) * 4)?;
    Some(Flow {
        src: h.addr(12, true),
        dst: h.addr(16, true),
        sport,
        dport,
        proto,
        family: FAMILY_V4,
    })
}

/// ICMPv4: a fragmentation-needed error about a VIP flow goes to the backend owning the flow
/// (path MTU discovery through DSR); any other ICMP goes to the kernel.
#[inline(always)]
fn icmp4(ctx: &XdpContext, l3: usize, l4: usize) -> Verdict {
    let Some(t) = read::<[u8; 2]>(ctx, l4) else {
        return MALFORMED;
    };
    if t[0] != ICMP_DEST_UNREACH || t[1] != ICMP_FRAG_NEEDED {
        return (XDP_PASS, PASS_ICMP);
    }
    // The embedded packet is the backend's reply: VIP -> client. Reverse it.
    match inner_flow_v4(ctx, l4 + ICMP_HLEN) {
        Some(e) => to_backend(ctx, l3, l4, &e.reversed(), true),
        None => (XDP_PASS, PASS_ICMP),
    }
}

/// The IPv6 header at `l3` of a consistent packet; otherwise the verdict (malformed).
#[inline(always)]
fn ipv6_header(ctx: &XdpContext, l3: usize) -> Result<View, Verdict> {
    let h = View::at::<40>(ctx, l3).ok_or(MALFORMED)?;
    if h.u8(0) >> 4 != 6 {
        return Err(MALFORMED);
    }
    let payload = h.be16(4) as usize;
    if l3 + IPV6_HLEN + payload > ctx.data_end() - ctx.data() {
        return Err(MALFORMED);
    }
    Ok(h)
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, l3: usize) -> Verdict {
    let h = match ipv6_header(ctx, l3) {
        Ok(h) => h,
        Err(verdict) => return verdict,
    };
    let l4 = l3 + IPV6_HLEN;
    let next = h.u8(6);
    if next == IPPROTO_TCP || next == IPPROTO_UDP {
        let Some((sport, dport)) = ports(ctx, l4) else {
            return MALFORMED;
        };
        let flow = Flow {
            src: h.addr(8, false),
            dst: h.addr(24, false),
            sport,
            dport,
            proto: next,
            family: FAMILY_V6,
        };
        return to_backend(ctx, l3, l4, &flow, false);
    }
    match next {
        IPPROTO_ICMPV6 => icmp6(ctx, l3, l4),
        IPPROTO_IPV6 => match inner_flow_v6(ctx, l4) {
            Some(inner) => {
                let outer_src = words_addr(&h.addr(8, false));
                encapsulated(ctx, l3, IPV6_HLEN, h.u8(7), outer_src, &inner)
            }
            None => MALFORMED,
        },
        IPV6_NEXT_FRAGMENT => (XDP_PASS, PASS_FRAGMENT),
        IPV6_NEXT_HOP_BY_HOP | IPV6_NEXT_ROUTING | IPV6_NEXT_DEST_OPTS | IPV6_NEXT_AH
        | IPV6_NEXT_ESP | IPV6_NEXT_MOBILITY | IPV6_NEXT_HIP | IPV6_NEXT_SHIM6 => {
            (XDP_PASS, PASS_IPV6_EXT)
        }
        _ => (XDP_PASS, PASS_NOT_VIP),
    }
}

#[inline(always)]
fn inner_flow_v6(ctx: &XdpContext, l3: usize) -> Option<Flow> {
    let h = View::at::<40>(ctx, l3)?;
    let next = h.u8(6);
    if h.u8(0) >> 4 != 6 || (next != IPPROTO_TCP && next != IPPROTO_UDP) {
        return None;
    }
    let (sport, dport) = ports(ctx, l3 + IPV6_HLEN)?;
    Some(Flow {
        src: h.addr(8, false),
        dst: h.addr(24, false),
        sport,
        dport,
        proto: next,
        family: FAMILY_V6,
    })
}

#[inline(always)]
fn icmp6(ctx: &XdpContext, l3: usize, l4: usize) -> Verdict {
    let Some(t) = u8_at(ctx, l4) else {
        return MALFORMED;
    };
    if t == ICMPV6_NEIGH_SOLICIT {
        // Neighbour solicitations for a cluster VIP: only the lease holder answers.
        return match View::at::<24>(ctx, l4) {
            Some(ns) => match lease(&ns.addr(ICMP_HLEN, false), FAMILY_V6) {
                Some(false) => (XDP_DROP, DROP_NO_LEASE),
                _ => (XDP_PASS, PASS_ICMP),
            },
            None => MALFORMED,
        };
    }
    if t != ICMPV6_PKT_TOOBIG {
        return (XDP_PASS, PASS_ICMP);
    }
    match inner_flow_v6(ctx, l4 + ICMP_HLEN) {
        Some(e) => to_backend(ctx, l3, l4, &e.reversed(), true),
        None => (XDP_PASS, PASS_ICMP),
    }
}

/// Whether `dst` may be a VIP address (`VIP_FILTER`): false means surely not, so the
/// packet needs no hash lookup. An array lookup, which the verifier inlines.
#[inline(always)]
fn maybe_vip(dst: &[u32; 4]) -> bool {
    let bit = vip_filter_bit(dst);
    match VIP_FILTER.get(bit / 64) {
        Some(word) => word & (1 << (bit % 64)) != 0,
        None => true,
    }
}

/// The VIP of a flow: exact port first, then (when some VIP has one) the all-ports entry.
#[inline(always)]
pub(crate) fn lookup_vip(flow: &Flow, flags: u32) -> Option<VipInfo> {
    let mut key = VipKey::from_words(&flow.dst, flow.dport, flow.proto, flow.family);
    // SAFETY: values are plain integers copied out at once.
    if let Some(v) = unsafe { VIPS.get(&key) } {
        return Some(*v);
    }
    if flags & SETTINGS_F_ALL_PORTS == 0 {
        return None;
    }
    key.port = 0;
    unsafe { VIPS.get(&key) }.copied()
}

#[inline(always)]
fn from_peer(ctx: &XdpContext) -> bool {
    match read_bytes::<6>(ctx, 6) {
        Some(mac) => {
            // Most frames come from a router or a client: the bitmap rules them out without
            // the hash lookup.
            let bit = peer_filter_bit(&mac);
            if PEER_FILTER
                .get(bit / 64)
                .is_some_and(|word| word & (1 << (bit % 64)) == 0)
            {
                return false;
            }
            let key = PeerKey { mac, _pad: [0; 2] };
            // SAFETY: only tests for presence.
            unsafe { PEERS.get(&key) }.is_some()
        }
        None => false,
    }
}

/// `l4`: the TCP/UDP header of the packet itself (unused for an ICMP error, `icmp`).
#[inline(always)]
fn to_backend(ctx: &XdpContext, l3: usize, l4: usize, flow: &Flow, icmp: bool) -> Verdict {
    if !maybe_vip(&flow.dst) {
        return (XDP_PASS, if icmp { PASS_ICMP } else { PASS_NOT_VIP });
    }
    let Some(settings) = SETTINGS.get(0) else {
        return (XDP_PASS, PASS_NOT_VIP);
    };
    let Some(vip) = lookup_vip(flow, settings.flags) else {
        return (XDP_PASS, if icmp { PASS_ICMP } else { PASS_NOT_VIP });
    };
    let verdict = for_vip(ctx, l3, l4, flow, icmp, settings, &vip);
    // `vipd debug packets`: off, this one test is all it costs here.
    if settings.flags & SETTINGS_F_DEBUG != 0 && debug::note(flow, &vip) {
        return (verdict.0, verdict.1 | REASON_F_NOTED);
    }
    verdict
}

/// A packet for `vip`: forwarded to its backend, given a second chance, or dropped.
#[inline(always)]
fn for_vip(
    ctx: &XdpContext,
    l3: usize,
    l4: usize,
    flow: &Flow,
    icmp: bool,
    settings: &Settings,
    vip: &VipInfo,
) -> Verdict {
    let vip = *vip;
    let iface = receiving_iface(ctx);
    if iface.other_host {
        return (XDP_PASS, PASS_OTHER_HOST);
    }
    if settings.flags & SETTINGS_F_PEERS != 0 && from_peer(ctx) {
        // Forwarded here because a backend of this node was chosen: if its service died,
        // give the connection a second chance elsewhere.
        return match second_chance(ctx, l3, flow, &vip, settings, icmp, 0, iface.mtu) {
            Some(v) => v,
            None => (XDP_PASS, PASS_FROM_PEER),
        };
    }
    if vip.flags & VIP_F_LEASED != 0 && lease(&flow.dst, flow.family) != Some(true) {
        return (XDP_DROP, DROP_NO_LEASE);
    }
    let src_only = vip.flags & VIP_F_SRC_HASH != 0;
    let hash = flow_hash(
        settings.hash_seed,
        &flow.src,
        &flow.dst,
        flow.sport,
        flow.dport,
        flow.proto,
        src_only,
    );
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let picked = if vip.flags & VIP_F_FLOWS != 0 {
        pick_with_flows(ctx, l4, flow, icmp, &vip, hash, bytes)
    } else if vip.flags & VIP_F_FLOWS_EXIT != 0 {
        let syn = !icmp && flow.proto == IPPROTO_TCP && is_syn(ctx, l4);
        match (!syn)
            .then(|| usable_entry(&flow_key(flow), bytes))
            .flatten()
        {
            Some(index) => Ok(index),
            None => table_pick(&vip, hash),
        }
    } else {
        table_pick(&vip, hash)
    };
    let index = match picked {
        Ok(index) => index,
        Err(verdict) => return verdict,
    };
    let Some(backend) = BACKENDS.get(index) else {
        return (XDP_DROP, DROP_NO_BACKEND);
    };
    count(&VIP_STATS, vip.index, bytes);
    count(&BACKEND_STATS, index, bytes);
    if backend.mode == FWD_LOCAL {
        if let Some(v) = second_chance(ctx, l3, flow, &vip, settings, icmp, 0, iface.mtu) {
            return v;
        }
    }
    let how = Send {
        hash,
        family: flow.family,
        ttl: OUTER_TTL,
        rx_mtu: iface.mtu,
        icmp,
        sent: if icmp { TX_ICMP } else { TX_ENCAP },
    };
    forward(ctx, l3, backend, settings, &how)
}

/// The backend index the VIP's live table gives a flow of hash `hash`.
#[inline(always)]
pub(crate) fn table_pick(vip: &VipInfo, hash: u32) -> Result<u32, Verdict> {
    const NONE: Verdict = (XDP_DROP, DROP_NO_BACKEND);
    let base = ACTIVE.get(vip.index).ok_or(NONE)?;
    if vip.table_size == 0 {
        return Err(NONE);
    }
    let slot = *base + maglev_slot(hash, vip.table_size);
    let pair = SLOTS.get(slot / SLOTS_PER_ELEMENT).ok_or(NONE)?;
    match pair[(slot % SLOTS_PER_ELEMENT) as usize & 1] {
        NO_BACKEND => Err(NONE),
        index => Ok(index),
    }
}

/// `VIP_F_PREV_TABLE`: the previous table's pick (at `ACTIVE[fallback - 1]`) and its
/// serial, when that backend still keeps its flows; None: use the live table.
#[inline(always)]
fn previous_pick(vip: &VipInfo, hash: u32) -> Option<(u32, u32)> {
    if vip.fallback == 0 || vip.table_size == 0 {
        return None;
    }
    let base = ACTIVE.get(vip.fallback - 1)?;
    let slot = *base + maglev_slot(hash, vip.table_size);
    let index = SLOTS.get(slot / SLOTS_PER_ELEMENT)?[(slot % SLOTS_PER_ELEMENT) as usize & 1];
    if index == NO_BACKEND {
        return None;
    }
    let backend = BACKENDS.get(index)?;
    if backend.flags & BACKEND_F_KEEP_FLOWS == 0 || backend.serial == 0 {
        return None;
    }
    Some((index, backend.serial))
}

/// A TCP segment opening a connection: SYN without ACK (a truncated header is not one).
#[inline(always)]
fn is_syn(ctx: &XdpContext, l4: usize) -> bool {
    View::at::<TCP_HLEN>(ctx, l4)
        .is_some_and(|t| t.u8(TCP_FLAGS_OFFSET) & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN)
}

#[inline(always)]
fn flow_key(flow: &Flow) -> FlowKey {
    FlowKey::from_words(
        &flow.src,
        &flow.dst,
        (flow.sport, flow.dport),
        flow.proto,
        flow.family,
    )
}

/// The backend of the flow's entry while that backend may keep it (counted `HIT`; an
/// entry found unusable counts `STALE`).
#[inline(always)]
fn usable_entry(key: &FlowKey, bytes: u64) -> Option<u32> {
    // SAFETY: the value is copied out at once.
    let entry = unsafe { FLOWS.get(key) }.copied()?;
    match BACKENDS.get(entry.backend) {
        Some(b) if b.serial == entry.serial && b.flags & BACKEND_F_KEEP_FLOWS != 0 => {
            count(&FLOW_STATS, flow_stat::HIT, bytes);
            Some(entry.backend)
        }
        _ => {
            count(&FLOW_STATS, flow_stat::STALE, bytes);
            None
        }
    }
}

/// `VIP_F_FLOWS`: the backend of the flow's entry while that backend may keep it, otherwise
/// the table's pick, entered for the next packets. A SYN is always picked afresh, and an ICMP
/// error only follows an entry, never makes one.
#[inline(always)]
fn pick_with_flows(
    ctx: &XdpContext,
    l4: usize,
    flow: &Flow,
    icmp: bool,
    vip: &VipInfo,
    hash: u32,
    bytes: u64,
) -> Result<u32, Verdict> {
    let key = flow_key(flow);
    let syn = !icmp && flow.proto == IPPROTO_TCP && is_syn(ctx, l4);
    if !syn {
        if let Some(index) = usable_entry(&key, bytes) {
            return Ok(index);
        }
    }
    let midstream = !icmp && flow.proto == IPPROTO_TCP && !syn;
    if midstream && vip.flags & VIP_F_PREV_TABLE != 0 {
        // In a transition: a connection made before the change lives where the previous
        // table sent it, while that backend keeps its flows.
        if let Some((index, serial)) = previous_pick(vip, hash) {
            count(&FLOW_STATS, flow_stat::PREVIOUS, bytes);
            let entry = FlowEntry {
                backend: index,
                serial,
            };
            let _ = FLOWS.insert(&key, &entry, 0);
            return Ok(index);
        }
    }
    let index = table_pick(vip, hash)?;
    if !icmp {
        if let Some(backend) = BACKENDS.get(index) {
            let stat = if midstream {
                flow_stat::MISS_MIDSTREAM
            } else {
                flow_stat::MISS_NEW
            };
            count(&FLOW_STATS, stat, bytes);
            let entry = FlowEntry {
                backend: index,
                serial: backend.serial,
            };
            // A failed insert (no memory) only costs this flow its stickiness.
            let _ = FLOWS.insert(&key, &entry, 0);
        }
    }
    Ok(index)
}

/// What the receiving interface's `IFACES` entry says of a frame (an unlisted interface:
/// nothing, MTU unknown).
struct Receiving {
    /// A unicast frame addressed to another MAC than the interface's: someone else's to
    /// forward, if anyone's.
    other_host: bool,
    /// `Iface::mtu`, 0: unknown.
    mtu: u16,
}

#[inline(always)]
fn receiving_iface(ctx: &XdpContext) -> Receiving {
    let ifindex = ctx.ingress_ifindex() as u32;
    let slot = match IFACE_SLOTS.get(IfaceSlot::index(ifindex)) {
        Some(s) if s.ifindex == ifindex => *s,
        // Not in its slot (another interface's, or none): the hash map has it if anything.
        // SAFETY: a plain lookup; the value is copied out at once.
        _ => match unsafe { IFACES.get(&ifindex) } {
            Some(iface) => IfaceSlot::new(ifindex, *iface),
            None => {
                return Receiving {
                    other_host: false,
                    mtu: 0,
                }
            }
        },
    };
    Receiving {
        other_host: for_another_host(ctx, &slot),
        mtu: slot.mtu,
    }
}

/// A unicast frame whose destination is not the interface's MAC (two loads, two compares).
#[inline(always)]
fn for_another_host(ctx: &XdpContext, ours: &IfaceSlot) -> bool {
    let Some(eth) = View::at::<6>(ctx, 0) else {
        return false;
    };
    let unicast = eth.u8(0) & 1 == 0;
    unicast && (eth.word(0) != ours.mac_lo || eth.half(4) != ours.mac_hi)
}

#[inline(always)]
fn forward(
    ctx: &XdpContext,
    l3: usize,
    backend: &Backend,
    settings: &Settings,
    how: &Send,
) -> Verdict {
    let sent = if how.icmp { TX_ICMP } else { TX_L2 };
    match backend.mode {
        FWD_LOCAL => (XDP_PASS, PASS_LOCAL),
        FWD_L2 => {
            let (src_mac, action) = if backend.egress == 0 {
                // The frame's destination is this interface's MAC.
                match read_bytes::<6>(ctx, 0) {
                    Some(ours) => (ours, XDP_TX),
                    None => return MALFORMED,
                }
            } else {
                match egress(backend) {
                    Some(out) => (out.mac, out.action),
                    None => return (XDP_DROP, DROP_NO_BACKEND),
                }
            };
            if write_bytes(ctx, 0, backend.mac).is_none() || write_bytes(ctx, 6, src_mac).is_none()
            {
                return MALFORMED;
            }
            (action, sent)
        }
        FWD_ENCAP if backend.family == how.family => encapsulate(ctx, l3, backend, settings, how),
        _ => (XDP_DROP, DROP_NO_BACKEND),
    }
}
