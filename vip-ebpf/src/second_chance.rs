//! Second chance (as in GitHub's GLB): a packet the tables deliver to this node's own
//! service, but which this node has no socket for, goes on to the backend the VIP's fallback
//! table picks (the table without this node's backends). Two cases:
//! - the service died and the tables have not caught up yet: nothing listens;
//! - a segment of a connection this node does not have: the connection was made while this
//!   node's backend was out of the tables (the service restarted, the node was cut off or
//!   rebooted), so it lives where the table without this node sends it. A listener alone
//!   answers such a segment with a reset, so only a SYN may be taken by a listener.
//!
//! The receiving node decapsulates and, if it has no socket either, may send the packet on
//! once more: at most `SECOND_CHANCES` in all, counted down in the outer TTL, so loop-free.
use aya_ebpf::{
    bindings::{
        bpf_sock, bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2, tcphdr, BPF_F_CURRENT_NETNS,
    },
    helpers::{bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp, bpf_tcp_check_syncookie},
    programs::XdpContext,
};
use vip_common::{
    encap::{second_chance_ttl, SECOND_CHANCES},
    flow::{flow_hash, maglev_slot},
    maps::{
        reason::*, Backend, Settings, VipInfo, FWD_LOCAL, NO_BACKEND, SLOTS_PER_ELEMENT,
        VIP_F_FLOWS, VIP_F_SRC_HASH,
    },
    wire::*,
};

use crate::{
    encap::{encapsulate, Send},
    maps::{ACTIVE, BACKENDS, SLOTS},
    pkt::ptr_at,
    prog::{Flow, Verdict},
};

/// Whether a segment may be taken by a listener: a SYN opening a connection, or the ACK
/// completing one whose SYN was answered with a syncookie (the kernel keeps no state for it
/// until then, so only the cookie proves it was ours).
#[inline(always)]
fn listener_takes(ctx: &XdpContext, l3: usize, family: u8, listener: *mut bpf_sock) -> bool {
    // The IP header window first: the verifier must see it checked on its own (a check
    // implied by the TCP header's would be optimised away).
    let window = if family == FAMILY_V4 {
        ptr_at::<[u8; IPV4_HLEN]>(ctx, l3).map(|p| (p as *mut u8, IPV4_HLEN))
    } else {
        ptr_at::<[u8; IPV6_HLEN]>(ctx, l3).map(|p| (p as *mut u8, IPV6_HLEN))
    };
    let Some((iph, iph_len)) = window else {
        return false;
    };
    let l4 = if family == FAMILY_V4 {
        // SAFETY: inside the checked IP header window (IPv6: no extension headers get here).
        l3 + (unsafe { *iph } & 0xf) as usize * 4
    } else {
        l3 + IPV6_HLEN
    };
    let Some(th) = ptr_at::<[u8; TCP_HLEN]>(ctx, l4) else {
        return false;
    };
    // SAFETY: `th` points at TCP_HLEN checked bytes.
    let flags = unsafe { (*th)[TCP_FLAGS_OFFSET] };
    if flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN {
        return true;
    }
    // SAFETY: both windows were bounds-checked above; the helper only reads them.
    unsafe {
        bpf_tcp_check_syncookie(
            listener as *mut core::ffi::c_void,
            iph as *mut core::ffi::c_void,
            iph_len as u32,
            th as *mut tcphdr,
            TCP_HLEN as u32,
        ) == 0
    }
}

/// Looks up the socket of `flow` (TCP: any, listeners, handshakes and TIME_WAIT included;
/// UDP: a bound socket) in the network namespace of `raw`, the program's context (XDP: the
/// receiving device's; cgroup: the socket's). A socket found must be released.
#[inline(always)]
pub fn lookup_socket(raw: *mut core::ffi::c_void, flow: &Flow) -> *mut bpf_sock {
    // SAFETY: a zeroed plain-integer struct.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    // Flow words are the packet's bytes loaded as-is: already network order in memory.
    let size = if flow.family == FAMILY_V4 {
        tuple.__bindgen_anon_1.ipv4 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
            saddr: flow.src[0],
            daddr: flow.dst[0],
            sport: flow.sport.to_be(),
            dport: flow.dport.to_be(),
        };
        12
    } else {
        tuple.__bindgen_anon_1.ipv6 = bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 {
            saddr: flow.src,
            daddr: flow.dst,
            sport: flow.sport.to_be(),
            dport: flow.dport.to_be(),
        };
        36
    };
    let netns = BPF_F_CURRENT_NETNS as u64;
    // SAFETY: helpers given a valid tuple of `size` bytes.
    unsafe {
        if flow.proto != IPPROTO_TCP {
            bpf_sk_lookup_udp(raw, &mut tuple, size, netns, 0)
        } else {
            bpf_skc_lookup_tcp(raw, &mut tuple, size, netns, 0)
        }
    }
}

/// Whether this node has a socket for the packet: TCP, a connection (established, in its
/// handshake, or in TIME_WAIT) for any segment, a listener only as [`listener_takes`] says;
/// UDP, a bound socket. Looked up in the namespace of the receiving device.
#[inline(always)]
fn has_socket(ctx: &XdpContext, l3: usize, flow: &Flow) -> bool {
    let sk = lookup_socket(ctx.ctx as *mut core::ffi::c_void, flow);
    if sk.is_null() {
        return false;
    }
    // SAFETY: a socket the lookup returned, released once read.
    unsafe {
        let found = flow.proto != IPPROTO_TCP
            || (*sk).state != TCP_STATE_LISTEN
            || listener_takes(ctx, l3, flow.family, sk);
        bpf_sk_release(sk as *mut core::ffi::c_void);
        found
    }
}

/// The backend the VIP's fallback table (its live table without this node's backends) gives
/// hash `hash`, when it is another node's and of `family`. The caller checked
/// `vip.fallback != 0` and `vip.table_size != 0`.
#[inline(always)]
pub fn fallback_backend(vip: &VipInfo, hash: u32, family: u8) -> Option<&'static Backend> {
    let base = ACTIVE.get(vip.fallback.wrapping_sub(1))?;
    let slot = *base + maglev_slot(hash, vip.table_size);
    let index = SLOTS.get(slot / SLOTS_PER_ELEMENT)?[(slot % SLOTS_PER_ELEMENT) as usize & 1];
    let backend = BACKENDS.get(index)?;
    if index == NO_BACKEND || backend.mode == FWD_LOCAL || backend.family != family {
        return None;
    }
    Some(backend)
}

/// The second chance itself, for a packet already given `taken` of them, received on an
/// interface of MTU `mtu` (0: unknown); None: deliver locally as usual.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn second_chance(
    ctx: &XdpContext,
    l3: usize,
    flow: &Flow,
    vip: &VipInfo,
    settings: &Settings,
    icmp: bool,
    taken: u8,
    mtu: u16,
) -> Option<Verdict> {
    // A flow-table VIP's second table is its previous table, not a fallback.
    if taken >= SECOND_CHANCES
        || vip.fallback == 0
        || vip.flags & VIP_F_FLOWS != 0
        || icmp
        || vip.table_size == 0
        || has_socket(ctx, l3, flow)
    {
        return None;
    }
    let hash = flow_hash(
        settings.hash_seed,
        &flow.src,
        &flow.dst,
        flow.sport,
        flow.dport,
        flow.proto,
        vip.flags & VIP_F_SRC_HASH != 0,
    );
    let backend = fallback_backend(vip, hash, flow.family)?;
    let how = Send {
        hash,
        family: flow.family,
        ttl: second_chance_ttl(taken),
        rx_mtu: mtu,
        icmp,
        sent: TX_SECOND_CHANCE,
    };
    Some(encapsulate(ctx, l3, backend, settings, &how))
}
