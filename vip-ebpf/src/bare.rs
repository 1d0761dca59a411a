//! Baselines for `cargo xtask bench xdp`: the least an XDP program can do for a hit (swap MACs,
//! transmit) and for a miss (pass). The balancer's cost is reported as a ratio to these,
//! measured side by side in one run. Never attached by vipd.
use aya_ebpf::{
    bindings::xdp_action::{XDP_PASS, XDP_TX},
    macros::xdp,
    programs::XdpContext,
};

use crate::pkt::{read_bytes, write_bytes};

#[xdp]
pub fn bare_tx(ctx: XdpContext) -> u32 {
    if let Some(macs) = read_bytes::<12>(&ctx, 0) {
        let swapped = [
            macs[6], macs[7], macs[8], macs[9], macs[10], macs[11], macs[0], macs[1], macs[2],
            macs[3], macs[4], macs[5],
        ];
        let _ = write_bytes(&ctx, 0, swapped);
    }
    XDP_TX
}

#[xdp]
pub fn bare_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}
