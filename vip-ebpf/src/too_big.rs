//! Packets that encapsulation would grow past the interface's MTU (`Iface::mtu`): XDP cannot
//! fragment and the kernel would drop the frame silently, so the client is answered with ICMP
//! fragmentation-needed / packet-too-big from the VIP (`vip_common::icmp`) and resends
//! smaller segments. Two steps, like `debug`: [`verdict`], inline where the packet would be
//! encapsulated, only marks the verdict; [`answer`], out of line at the program's entry,
//! rewrites the frame into the answer (its 48-byte arrays on top of the balancer's frame
//! would exceed the verifier's 512-byte stack).
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_TX},
    helpers::bpf_xdp_adjust_tail,
    programs::XdpContext,
};
use vip_common::{
    icmp::{answerable_v4, frag_needed_v4, packet_too_big_v6, QUOTE_V4, QUOTE_V6},
    maps::{reason::*, REASON_F_TOO_BIG},
    wire::{ETH_P_IP, ETH_P_IPV6, IPV4_HLEN, IPV6_HLEN},
};

use crate::{
    encap::push_outer,
    pkt::{read_bytes, write_bytes},
    prog::{l3_offset, Verdict},
};

/// Whether the frame, its L3 part grown by `outer_len`, still fits `mtu` (0: unknown, fits).
#[inline(always)]
pub fn fits(ctx: &XdpContext, l3: usize, outer_len: usize, mtu: u16) -> bool {
    mtu == 0 || ctx.data_end() - ctx.data() - l3 + outer_len <= mtu as usize
}

/// The verdict for a packet that does not fit: to be answered, announcing `mtu - outer_len`,
/// unless it is an ICMP error itself (never answered with another).
#[inline(always)]
pub fn verdict(mtu: u16, outer_len: usize, icmp: bool) -> Verdict {
    if icmp {
        return (XDP_DROP, DROP_TOO_BIG);
    }
    let announced = (mtu as u32).saturating_sub(outer_len as u32) & 0xffff;
    (XDP_TX, TX_TOO_BIG | REASON_F_TOO_BIG | announced << 8)
}

/// Rewrites the frame into the answer to its packet, announcing `mtu`: the L2 header turned
/// back (to the sender's MAC, tags kept), the answer's IP and ICMP headers, then the quoted
/// start of the packet, the rest cut off.
#[inline(never)]
pub fn answer(ctx: &XdpContext, mtu: u32) -> Verdict {
    const DROP: Verdict = (XDP_DROP, DROP_TOO_BIG);
    let Some((proto, l3)) = l3_offset(ctx) else {
        return DROP;
    };
    let (Some(ours), Some(sender)) = (read_bytes::<6>(ctx, 0), read_bytes::<6>(ctx, 6)) else {
        return DROP;
    };
    let done = if proto == ETH_P_IP {
        let Some(quote) = read_bytes::<QUOTE_V4>(ctx, l3) else {
            return DROP;
        };
        if !answerable_v4(&quote) {
            return DROP;
        }
        let head = frag_needed_v4(&quote, mtu as u16);
        push_outer(ctx, IPV4_HLEN + 8, sender, ours)
            .and_then(|()| write_bytes(ctx, l3, head))
            .and_then(|()| cut(ctx, l3 + 2 * QUOTE_V4))
    } else if proto == ETH_P_IPV6 {
        let Some(quote) = read_bytes::<QUOTE_V6>(ctx, l3) else {
            return DROP;
        };
        let head = packet_too_big_v6(&quote, mtu);
        push_outer(ctx, IPV6_HLEN + 8, sender, ours)
            .and_then(|()| write_bytes(ctx, l3, head))
            .and_then(|()| cut(ctx, l3 + 2 * QUOTE_V6))
    } else {
        None
    };
    match done {
        Some(()) => (XDP_TX, TX_TOO_BIG),
        None => DROP,
    }
}

/// Shortens the frame to `len` bytes.
#[inline(always)]
fn cut(ctx: &XdpContext, len: usize) -> Option<()> {
    let delta = len as i32 - (ctx.data_end() - ctx.data()) as i32;
    // SAFETY: ctx.ctx is the xdp_md of this invocation; shrinking only.
    (delta <= 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } == 0).then_some(())
}
