//! Clients on the controllers themselves (cgroup socket programs, as Cilium's socket-level
//! balancer): a connect or an unconnected UDP send to a VIP from vipd's network namespace
//! gets the address of the backend the VIP's live table picks, so that a local client is
//! balanced like a remote one instead of always reaching the service on `lo` (see
//! `vip_common::maps::MAP_LOCAL_CLIENTS`). Health and drain come with the table; a pick of
//! this node's own dead service takes the fallback table's pick, as the second chance does
//! for packets. A socket is never refused: whatever cannot be balanced keeps its address.
use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_sk_release},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use vip_common::{
    flow::flow_hash,
    maps::{local_stat, Backend, FWD_LOCAL, VIP_F_FLOWS, VIP_F_SRC_HASH},
    wire::{FAMILY_V4, FAMILY_V6},
};

use crate::{
    maps::{count, BACKENDS, LOCAL_CLIENTS, LOCAL_STATS, SETTINGS},
    prog::{lookup_vip, table_pick, Flow},
    second_chance::{fallback_backend, lookup_socket},
};

/// The hook's answer: let the call go on (with whatever address it now has).
const ALLOW: i32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn vip_connect4(ctx: SockAddrContext) -> i32 {
    balance(&ctx, FAMILY_V4);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn vip_connect6(ctx: SockAddrContext) -> i32 {
    balance(&ctx, FAMILY_V6);
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn vip_sendmsg4(ctx: SockAddrContext) -> i32 {
    balance(&ctx, FAMILY_V4);
    ALLOW
}

#[cgroup_sock_addr(sendmsg6)]
pub fn vip_sendmsg6(ctx: SockAddrContext) -> i32 {
    balance(&ctx, FAMILY_V6);
    ALLOW
}

#[inline(always)]
fn balance(ctx: &SockAddrContext, family: u8) {
    let sa: *mut bpf_sock_addr = ctx.sock_addr;
    let raw = sa as *mut core::ffi::c_void;
    // SAFETY: the kernel's context for this hook; helpers allowed in it.
    let netns = unsafe { bpf_get_netns_cookie(raw) };
    match LOCAL_CLIENTS.get(0) {
        Some(c) if c.netns_cookie != 0 && c.netns_cookie == netns => {}
        _ => return,
    }
    // SAFETY: 4-byte reads of context fields, which the verifier rewrites into the socket's.
    let (dst, port, proto) = unsafe {
        let dst = if family == FAMILY_V4 {
            [(*sa).user_ip4, 0, 0, 0]
        } else {
            (*sa).user_ip6
        };
        (dst, (*sa).user_port, (*sa).protocol)
    };
    let Some(settings) = SETTINGS.get(0) else {
        return;
    };
    let flow = Flow {
        src: [0; 4],
        dst,
        sport: 0,
        dport: u16::from_be(port as u16),
        proto: proto as u8,
        family,
    };
    let Some(vip) = lookup_vip(&flow, settings.flags) else {
        return;
    };
    if vip.table_size == 0 {
        return;
    }
    // One pick per socket (a UDP socket's sends stay together); with source affinity, one
    // per node, as a remote client's address would be.
    let key = if vip.flags & VIP_F_SRC_HASH != 0 {
        netns
    } else {
        // SAFETY: as above.
        unsafe { bpf_get_socket_cookie(raw) }
    };
    let hash = flow_hash(
        settings.hash_seed,
        &[key as u32, (key >> 32) as u32, 0, 0],
        &flow.dst,
        0,
        flow.dport,
        flow.proto,
        false,
    );
    let Some((backend, stat)) = choose(raw, &flow, &vip, hash) else {
        count(&LOCAL_STATS, local_stat::UNBALANCED, 0);
        return;
    };
    if stat != local_stat::LOCAL {
        let a = vip_common::flow::addr_words(&backend.addr);
        // SAFETY: 4-byte writes of the destination fields, allowed in these hooks.
        unsafe {
            if family == FAMILY_V4 {
                (*sa).user_ip4 = a[0];
            } else {
                (*sa).user_ip6 = a;
            }
        }
    }
    count(&LOCAL_STATS, stat, 0);
}

/// The backend for a local client and the `local_stat` it counts; None: leave it alone.
#[inline(always)]
fn choose(
    raw: *mut core::ffi::c_void,
    flow: &Flow,
    vip: &vip_common::maps::VipInfo,
    hash: u32,
) -> Option<(&'static Backend, u32)> {
    let backend = BACKENDS.get(table_pick(vip, hash).ok()?)?;
    if backend.mode != FWD_LOCAL {
        return (backend.family == flow.family).then_some((backend, local_stat::BACKEND));
    }
    let sk = lookup_socket(raw, flow);
    if !sk.is_null() {
        // SAFETY: a socket the lookup returned.
        unsafe { bpf_sk_release(sk as *mut core::ffi::c_void) };
        return Some((backend, local_stat::LOCAL));
    }
    // Second chance: the fallback table (the live one without this node's backends) when
    // the VIP has one (cluster mode); a flow-table VIP's second table is its previous one, so
    // it, like a single node's VIP, picks again from the live table instead: a socket goes
    // straight to its backend, which need not run vipd.
    if vip.fallback != 0 && vip.flags & VIP_F_FLOWS == 0 {
        let backend = fallback_backend(vip, hash, flow.family)?;
        return Some((backend, local_stat::SECOND_CHANCE));
    }
    let mut again = hash;
    for _ in 0..REPICKS {
        again = flow_hash(again, &[0; 4], &[0; 4], 0, 0, 0, true);
        let backend = BACKENDS.get(table_pick(vip, again).ok()?)?;
        if backend.mode != FWD_LOCAL && backend.family == flow.family {
            return Some((backend, local_stat::SECOND_CHANCE));
        }
    }
    None
}

/// Picks from the live table when this node's own service is dead and the VIP has no
/// fallback table: with k of n backends here, all miss with probability (k/n)^REPICKS.
const REPICKS: usize = 4;
