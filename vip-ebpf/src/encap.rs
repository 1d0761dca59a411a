//! Encapsulated DSR: grow the frame by one outer IPv4/IPv6 header, or strip it on the receiving
//! side. The L2 header (MACs, up to two VLAN tags, EtherType) moves with the frame start.
use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_TX},
    helpers::bpf_xdp_adjust_head,
    programs::XdpContext,
};
use vip_common::{
    encap::{ipv4_outer, ipv6_outer, outer_source_v4, outer_source_v6},
    maps::{reason::*, Backend, Settings},
    wire::{FAMILY_V4, IPV4_HLEN, IPV6_HLEN},
};

use crate::{
    maps::{EGRESS, EGRESS_DEVS},
    pkt::{read, read_bytes, write, write_bytes},
    prog::Verdict,
    too_big,
};

/// How a packet of `family` is sent on: its flow hash (the outer source), the outer TTL, the
/// receiving interface's MTU (`Iface::mtu`, 0: unknown), whether it is an ICMP error about a
/// flow, and the reason counted when it is sent.
pub struct Send {
    pub hash: u32,
    pub family: u8,
    pub ttl: u8,
    pub rx_mtu: u16,
    pub icmp: bool,
    pub sent: u32,
}

/// The way out to a backend behind another attached interface: that interface's MAC (the
/// source to write) and MTU (0: unknown), and the action that sends the frame there.
pub struct Egress {
    pub mac: [u8; 6],
    pub mtu: u16,
    pub action: u32,
}

/// The way out by `backend.egress` (a port other than 0): `EGRESS`'s entry, and
/// `XDP_REDIRECT` set up through `EGRESS_DEVS`; None when the port has no device. Asked
/// before the frame is rewritten, so that a packet with no way out is dropped untouched.
/// Port 0, the receiving interface, is the callers' own path (one path for both measured a
/// few ns more per hit in `bench xdp`).
#[inline(always)]
pub fn egress(backend: &Backend) -> Option<Egress> {
    let port = backend.egress as u32;
    let iface = EGRESS.get(port)?;
    let action = EGRESS_DEVS.redirect(port, 0).ok()?;
    Some(Egress {
        mac: iface.mac,
        mtu: iface.mtu,
        action,
    })
}

/// Encapsulates the packet at `l3` to `backend` and sends it out of the receiving interface
/// (`XDP_TX`) or, for a backend behind another egress port, redirects it there; unless the
/// grown frame would not fit that interface's MTU (then `too_big::verdict`, answered back
/// out of the receiving interface).
#[inline(always)]
pub fn encapsulate(
    ctx: &XdpContext,
    l3: usize,
    backend: &Backend,
    settings: &Settings,
    how: &Send,
) -> Verdict {
    let outer_len = if how.family == FAMILY_V4 {
        IPV4_HLEN
    } else {
        IPV6_HLEN
    };
    let (src_mac, mtu, action) = if backend.egress == 0 {
        // The frame's destination is this interface's MAC.
        let Some(ours) = read_bytes::<6>(ctx, 0) else {
            return (XDP_DROP, DROP_ENCAP_FAILED);
        };
        (ours, how.rx_mtu, XDP_TX)
    } else {
        match egress(backend) {
            Some(out) => (out.mac, out.mtu, out.action),
            None => return (XDP_DROP, DROP_NO_BACKEND),
        }
    };
    if !too_big::fits(ctx, l3, outer_len, mtu) {
        return too_big::verdict(mtu, outer_len, how.icmp);
    }
    let ok = if how.family == FAMILY_V4 {
        encap_v4(ctx, l3, backend, how.hash, settings, how.ttl, src_mac)
    } else {
        encap_v6(ctx, l3, backend, how.hash, settings, how.ttl, src_mac)
    };
    match ok {
        Some(()) => (action, how.sent),
        None => (XDP_DROP, DROP_ENCAP_FAILED),
    }
}

#[inline(always)]
fn adjust_head(ctx: &XdpContext, delta: i32) -> Option<()> {
    // SAFETY: ctx.ctx is the xdp_md of this invocation.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } == 0 {
        Some(())
    } else {
        None
    }
}

/// Bytes 12..22 of the frame: EtherType, or VLAN tags then EtherType, then L3 bytes that the
/// caller overwrites afterwards. Always 10 bytes so the verifier sees one fixed-size copy.
type L2Tail = [u8; 10];

/// Grows the frame by `outer_len` bytes in front of L3, the L2 header moved to the new start
/// with destination `mac` and source `src`.
#[inline(always)]
pub(crate) fn push_outer(
    ctx: &XdpContext,
    outer_len: usize,
    mac: [u8; 6],
    src: [u8; 6],
) -> Option<()> {
    let tail = read_bytes::<10>(ctx, 12)?;
    adjust_head(ctx, -(outer_len as i32))?;
    write_bytes(ctx, 0, mac)?;
    write_bytes(ctx, 6, src)?;
    // Copies the tags and EtherType; the bytes past `l3` are overwritten by the outer header.
    write_bytes::<10>(ctx, 12, tail)
}

/// IPv4-in-IPv4 to `backend.addr`, next hop `backend.mac`, outer source varying per flow.
#[inline(always)]
fn encap_v4(
    ctx: &XdpContext,
    l3: usize,
    backend: &Backend,
    hash: u32,
    settings: &Settings,
    ttl: u8,
    src_mac: [u8; 6],
) -> Option<()> {
    let inner = read_bytes::<4>(ctx, l3)?;
    let inner_len = u16::from_be_bytes([inner[2], inner[3]]);
    let dst = [
        backend.addr[0],
        backend.addr[1],
        backend.addr[2],
        backend.addr[3],
    ];
    let src = outer_source_v4(settings.encap_src_v4, hash);
    push_outer(ctx, IPV4_HLEN, backend.mac, src_mac)?;
    write_bytes(ctx, l3, ipv4_outer(inner_len, inner[1], ttl, src, dst))
}

/// IPv6-in-IPv6, likewise.
#[inline(always)]
fn encap_v6(
    ctx: &XdpContext,
    l3: usize,
    backend: &Backend,
    hash: u32,
    settings: &Settings,
    hop_limit: u8,
    src_mac: [u8; 6],
) -> Option<()> {
    let inner = read_bytes::<6>(ctx, l3)?;
    let inner_len = u16::from_be_bytes([inner[4], inner[5]]).wrapping_add(IPV6_HLEN as u16);
    let src = outer_source_v6(settings.encap_src_v6, hash);
    push_outer(ctx, IPV6_HLEN, backend.mac, src_mac)?;
    write_bytes(
        ctx,
        l3,
        ipv6_outer(
            inner_len,
            [inner[0], inner[1], inner[2], inner[3]],
            hop_limit,
            src,
            backend.addr,
        ),
    )
}

/// Strips the `outer_len`-byte outer header at `l3` (14, 18 or 22); returns the reason.
#[inline(always)]
pub fn decap(ctx: &XdpContext, l3: usize, outer_len: usize) -> u32 {
    let Some(macs) = read::<[u8; 12]>(ctx, 0) else {
        return PASS_MALFORMED;
    };
    let Some(tail) = read::<L2Tail>(ctx, 12) else {
        return PASS_MALFORMED;
    };
    // Rebuild the L2 header right in front of the inner header, then drop the front.
    let at = outer_len;
    let ok = write(ctx, at, macs).is_some()
        && match l3 {
            14 => write(ctx, at + 12, [tail[0], tail[1]]).is_some(),
            18 => write(
                ctx,
                at + 12,
                [tail[0], tail[1], tail[2], tail[3], tail[4], tail[5]],
            )
            .is_some(),
            _ => write(ctx, at + 12, tail).is_some(),
        };
    if !ok || adjust_head(ctx, outer_len as i32).is_none() {
        return PASS_MALFORMED;
    }
    PASS_DECAP
}
