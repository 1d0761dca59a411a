//! `vipd debug packets`: while `SETTINGS_F_DEBUG` is set, one log record per packet for a VIP
//! (its flow, the VIP, the live table's slot and backend for the flow, and the verdict, whose
//! reason names a flow-table hit or a second chance), written to aya-log's `AYA_LOGS` ring
//! buffer for the CLI to print. Off, it costs the flag test in `to_backend` and a bit test on
//! the verdict in `vip_xdp`. Two steps: [`note`], inline on the balancer's path, keeps the
//! packet's flow and VIP in `PACKET_NOTES`; [`log`], out of line at the program's entry,
//! filters, finds the slot and backend and writes the record (aya-log's record on top of the
//! balancer's frame would exceed the verifier's 512-byte stack).
use aya_log_ebpf::info;
use vip_common::{
    flow::{flow_hash, maglev_slot, words_addr},
    maps::{VipInfo, SETTINGS_F_DEBUG_SRC, SETTINGS_F_DEBUG_VIP, VIP_F_SRC_HASH},
    wire::FAMILY_V4,
};

use crate::{
    maps::{PACKET_NOTES, SETTINGS},
    prog::{table_pick, Flow},
};

/// The words of two addresses are equal (compared one by one: no `bcmp` in BPF).
#[inline(always)]
fn same(a: &[u32; 4], b: &[u32; 4]) -> bool {
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3]
}

/// Keeps what the record needs of this packet in this CPU's note: stores only, inline on the
/// balancer's path, so that nothing is called on top of its stack frame.
#[inline(always)]
pub fn note(flow: &Flow, vip: &VipInfo) -> bool {
    let Some(n) = PACKET_NOTES.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's entry, touched only by this program run.
    let n = unsafe { &mut *n };
    n.src = flow.src;
    n.dst = flow.dst;
    n.sport = flow.sport;
    n.dport = flow.dport;
    n.proto = flow.proto;
    n.family = flow.family;
    n.vip = *vip;
    true
}

/// Logs the note the balancer kept for this packet with its `verdict` (action << 8 |
/// reason), and returns the verdict as read back from the note. The verifier then knows
/// nothing of its value: every path out of the balancer, each with its own constant
/// verdict, reaches this record as one state, not as many (which took it past its limit).
#[inline(never)]
pub fn log(verdict: u32) -> u32 {
    let Some(n) = PACKET_NOTES.get_ptr_mut(0) else {
        return verdict;
    };
    // SAFETY: this CPU's entry, touched only by this program run.
    let n = unsafe {
        (*n).verdict = verdict;
        &*n
    };
    let Some(settings) = SETTINGS.get(0) else {
        return n.verdict;
    };
    if settings.flags & SETTINGS_F_DEBUG_VIP != 0 && !same(&n.dst, &settings.debug_vip) {
        return n.verdict;
    }
    if settings.flags & SETTINGS_F_DEBUG_SRC != 0 && !same(&n.src, &settings.debug_src) {
        return n.verdict;
    }
    let hash = flow_hash(
        settings.hash_seed,
        &n.src,
        &n.dst,
        n.sport,
        n.dport,
        n.proto,
        n.vip.flags & VIP_F_SRC_HASH != 0,
    );
    let slot = if n.vip.table_size == 0 {
        0
    } else {
        maglev_slot(hash, n.vip.table_size)
    };
    let backend = table_pick(&n.vip, hash).unwrap_or(u32::MAX);
    let (src, dst) = (v6_form(n.family, &n.src), v6_form(n.family, &n.dst));
    // One record shape for both families (IPv4 as ::ffff:a.b.c.d, which the CLI prints as
    // a.b.c.d) and the verdict as one integer: every argument adds verifier work. The CLI
    // turns `verdict N` into the action and reason names.
    info!(
        (),
        "[{:i}]:{} > [{:i}]:{} vip {} slot {} backend {} verdict {}",
        src,
        n.sport,
        dst,
        n.dport,
        n.vip.index,
        slot,
        backend,
        n.verdict
    );
    n.verdict
}

/// The address as 16 bytes, IPv4 mapped into IPv6 (`::ffff:a.b.c.d`).
#[inline(always)]
fn v6_form(family: u8, words: &[u32; 4]) -> [u8; 16] {
    let a = words_addr(words);
    if family != FAMILY_V4 {
        return a;
    }
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}
