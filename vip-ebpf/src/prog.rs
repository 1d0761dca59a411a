//! The XDP entry point.
use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use vip_common::maps::reason;

use crate::maps::STATS;

#[xdp]
pub fn vip_xdp(ctx: XdpContext) -> u32 {
    count(reason::SEEN, (ctx.data_end() - ctx.data()) as u64);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn count(reason: u32, bytes: u64) {
    if let Some(c) = STATS.get_ptr_mut(reason) {
        // SAFETY: a per-CPU slot is only touched by this CPU while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}
