//! "Too big" answers: when encapsulation would grow a client's packet past the interface's
//! MTU, the balancer answers the client with ICMP fragmentation-needed (IPv4) or packet-too-big
//! (IPv6) from the VIP, quoting the packet's IP header and first 8 payload bytes (all a client
//! needs to find its socket and check the sequence number), and the client lowers its path MTU
//! to the VIP. Built here once, as plain byte arrays, for the XDP program and the host model.
use crate::{
    encap::ipv4_header,
    wire::{
        ICMPV6_PKT_TOOBIG, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, IPPROTO_ICMP, IPPROTO_ICMPV6,
        IPV4_DF, IPV4_HLEN, IPV6_HLEN,
    },
};

/// Bytes of the client's packet quoted: an IPv4 header without options and 8 bytes.
pub const QUOTE_V4: usize = IPV4_HLEN + 8;
/// An IPv6 fixed header and 8 bytes.
pub const QUOTE_V6: usize = IPV6_HLEN + 8;
/// TTL / hop limit of an answer.
pub const ANSWER_TTL: u8 = 64;

/// Adds the big-endian 16-bit words of `bytes` (an even number of them) to `sum`.
#[inline(always)]
const fn sum_words<const N: usize>(mut sum: u32, bytes: &[u8; N], from: usize, to: usize) -> u32 {
    let mut i = from;
    while i + 1 < to {
        sum += ((bytes[i] as u32) << 8) | bytes[i + 1] as u32;
        i += 2;
    }
    sum
}

#[inline(always)]
const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Whether an IPv4 packet whose first 28 bytes are `quote` may be answered: no IP options (the
/// quote would cut the transport header) and "don't fragment" set (a packet without it asks
/// to be fragmented, which XDP cannot do; Linux sets DF on TCP, and on UDP within its path MTU).
#[inline(always)]
pub const fn answerable_v4(quote: &[u8; QUOTE_V4]) -> bool {
    quote[0] == 0x45 && ((quote[6] as u16) << 8) & IPV4_DF != 0
}

/// The IPv4 header and ICMP header of the fragmentation-needed answer to the packet quoted,
/// with next-hop MTU `mtu`: VIP -> client, followed on the wire by `quote` itself.
#[inline(always)]
pub const fn frag_needed_v4(quote: &[u8; QUOTE_V4], mtu: u16) -> [u8; IPV4_HLEN + 8] {
    let vip = [quote[16], quote[17], quote[18], quote[19]];
    let client = [quote[12], quote[13], quote[14], quote[15]];
    let ip = ipv4_header(
        (2 * QUOTE_V4) as u16,
        0,
        ANSWER_TTL,
        IPPROTO_ICMP,
        vip,
        client,
    );
    let mut h = [0u8; IPV4_HLEN + 8];
    let mut i = 0;
    while i < IPV4_HLEN {
        h[i] = ip[i];
        i += 1;
    }
    h[20] = ICMP_DEST_UNREACH;
    h[21] = ICMP_FRAG_NEEDED;
    h[26] = (mtu >> 8) as u8;
    h[27] = mtu as u8;
    let sum = sum_words(0, &h, IPV4_HLEN, IPV4_HLEN + 8);
    let csum = fold(sum_words(sum, quote, 0, QUOTE_V4));
    h[22] = (csum >> 8) as u8;
    h[23] = csum as u8;
    h
}

/// The IPv6 header and ICMPv6 header of the packet-too-big answer to the packet quoted, with
/// MTU `mtu`: VIP -> client, followed on the wire by `quote`.
#[inline(always)]
pub const fn packet_too_big_v6(quote: &[u8; QUOTE_V6], mtu: u32) -> [u8; IPV6_HLEN + 8] {
    let len = QUOTE_V6 as u32 + 8;
    let mut h = [0u8; IPV6_HLEN + 8];
    h[0] = 0x60;
    h[4] = (len >> 8) as u8;
    h[5] = len as u8;
    h[6] = IPPROTO_ICMPV6;
    h[7] = ANSWER_TTL;
    let mut i = 0;
    while i < 16 {
        h[8 + i] = quote[24 + i];
        h[24 + i] = quote[8 + i];
        i += 1;
    }
    h[40] = ICMPV6_PKT_TOOBIG;
    h[44] = (mtu >> 24) as u8;
    h[45] = (mtu >> 16) as u8;
    h[46] = (mtu >> 8) as u8;
    h[47] = mtu as u8;
    // Pseudo-header: both addresses, the upper-layer length and the next header.
    let mut sum = sum_words(0, &h, 8, IPV6_HLEN) + len + IPPROTO_ICMPV6 as u32;
    sum = sum_words(sum, &h, IPV6_HLEN, IPV6_HLEN + 8);
    let csum = fold(sum_words(sum, quote, 0, QUOTE_V6));
    h[42] = (csum >> 8) as u8;
    h[43] = csum as u8;
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encap::ipv4_header_checksum;

    fn sum(init: u32, parts: &[&[u8]]) -> u32 {
        parts
            .iter()
            .flat_map(|p| p.chunks(2))
            .fold(init, |s, w| s + ((w[0] as u32) << 8 | w[1] as u32))
    }

    fn quote4() -> [u8; QUOTE_V4] {
        let mut q = [0u8; QUOTE_V4];
        q[0] = 0x45;
        q[6] = 0x40;
        q[9] = 6;
        q[12..16].copy_from_slice(&[198, 18, 0, 7]);
        q[16..20].copy_from_slice(&[192, 0, 2, 14]);
        q[20..28].copy_from_slice(&[0x9c, 0x40, 0, 80, 1, 2, 3, 4]);
        q
    }

    #[test]
    fn frag_needed_goes_from_the_vip_to_the_client_with_valid_checksums() {
        let q = quote4();
        let h = frag_needed_v4(&q, 1480);
        assert_eq!(&h[12..16], &[192, 0, 2, 14]);
        assert_eq!(&h[16..20], &[198, 18, 0, 7]);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), 56);
        let mut ip = [0u8; IPV4_HLEN];
        ip.copy_from_slice(&h[..IPV4_HLEN]);
        assert_eq!(ipv4_header_checksum(&ip), 0);
        assert_eq!(
            (h[20], h[21], &h[26..28]),
            (3, 4, &1480u16.to_be_bytes()[..])
        );
        assert_eq!(fold(sum(0, &[&h[20..], &q])), 0);
    }

    #[test]
    fn packet_too_big_has_a_valid_pseudo_header_checksum() {
        let mut q = [0u8; QUOTE_V6];
        q[0] = 0x60;
        q[6] = 6;
        q[8..24].copy_from_slice(&[0x20, 1, 0xd, 0xb8, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
        q[24..40].copy_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x14]);
        q[40..48].copy_from_slice(&[0x9c, 0x40, 0, 80, 1, 2, 3, 4]);
        let h = packet_too_big_v6(&q, 1460);
        assert_eq!((&h[8..24], &h[24..40]), (&q[24..40], &q[8..24]));
        let pseudo = sum(0, &[&h[8..40]]) + (8 + QUOTE_V6) as u32 + IPPROTO_ICMPV6 as u32;
        assert_eq!(fold(sum(pseudo, &[&h[40..], &q])), 0);
        assert_eq!(u32::from_be_bytes([h[44], h[45], h[46], h[47]]), 1460);
    }

    #[test]
    fn only_unfragmentable_option_free_ipv4_is_answered() {
        let mut q = quote4();
        assert!(answerable_v4(&q));
        q[6] = 0;
        assert!(!answerable_v4(&q), "DF clear");
        q[6] = 0x40;
        q[0] = 0x46;
        assert!(!answerable_v4(&q), "IP options");
    }
}
