//! Outer headers for encapsulated DSR (IPv4-in-IPv4, IPv6-in-IPv6). Built here once, as plain
//! byte arrays, for the XDP program and the host model alike.
use crate::{
    maps::EncapSourceKey,
    wire::{FAMILY_V4, IPPROTO_IPIP, IPPROTO_IPV6, IPV4_HLEN, IPV6_HLEN},
};

/// Hop limit / TTL of the outer header of a packet sent to its backend.
pub const OUTER_TTL: u8 = 64;

/// How many second chances one packet may be given (a node without a socket for it sends it
/// on to the backend of its fallback table). Two, because when a backend returns, Maglev also
/// moves a few slots between the others: such a segment first reaches a node that never had
/// its connection, whose fallback table may pick the returned backend, whose fallback table
/// (the table from before its return) picks the one that has it.
pub const SECOND_CHANCES: u8 = 2;

/// Second chances already given to a packet with this outer TTL: each one lowers it by one.
/// A router on the way lowers it too, so a routed path means fewer second chances, never a
/// loop.
#[inline(always)]
pub const fn second_chances_taken(outer_ttl: u8) -> u8 {
    OUTER_TTL.saturating_sub(outer_ttl)
}

/// The outer TTL of a packet given its next second chance after `taken` of them (fewer than
/// [`SECOND_CHANCES`]): the inverse of [`second_chances_taken`].
#[inline(always)]
pub const fn second_chance_ttl(taken: u8) -> u8 {
    OUTER_TTL - taken - 1
}

/// Ones'-complement checksum of an IPv4 header whose checksum field (bytes 10-11) is zero.
#[inline(always)]
pub const fn ipv4_header_checksum(h: &[u8; IPV4_HLEN]) -> u16 {
    let mut sum = 0u32;
    let mut i = 0;
    while i < IPV4_HLEN {
        sum += ((h[i] as u32) << 8) | h[i + 1] as u32;
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// The outer source varies per flow (low 16 bits from the flow hash) so that receivers spread
/// encapsulated flows over their RSS queues.
#[inline(always)]
pub const fn outer_source_v4(base: [u8; 4], hash: u32) -> [u8; 4] {
    [base[0], base[1], (hash >> 8) as u8, hash as u8]
}

#[inline(always)]
pub const fn outer_source_v6(base: [u8; 16], hash: u32) -> [u8; 16] {
    let mut a = base;
    a[12] = (hash >> 24) as u8;
    a[13] = (hash >> 16) as u8;
    a[14] = (hash >> 8) as u8;
    a[15] = hash as u8;
    a
}

/// The [`MAP_ENCAP_SOURCES`](crate::maps::MAP_ENCAP_SOURCES) key of an outer source `addr`
/// (IPv4 in the first 4 bytes) of `family`: the bytes [`outer_source_v4`] / [`outer_source_v6`]
/// take from the flow hash zeroed, so that every source a balancer sends from (its
/// `encap_src_v4/v6` base with any hash) gives the key of that base.
#[inline(always)]
pub const fn encap_source_key(addr: [u8; 16], family: u8) -> EncapSourceKey {
    let mut a = addr;
    if family == FAMILY_V4 {
        a[2] = 0;
        a[3] = 0;
        let mut i = 4;
        while i < 16 {
            a[i] = 0;
            i += 1;
        }
    } else {
        a[12] = 0;
        a[13] = 0;
        a[14] = 0;
        a[15] = 0;
    }
    EncapSourceKey {
        addr: a,
        family,
        _pad: [0; 3],
    }
}

/// IPv4 outer header for an inner IPv4 packet of `inner_len` bytes with TOS `tos`.
/// Identification 0, DF clear, so that outputs are byte-exact and reproducible.
#[inline(always)]
pub const fn ipv4_outer(
    inner_len: u16,
    tos: u8,
    ttl: u8,
    src: [u8; 4],
    dst: [u8; 4],
) -> [u8; IPV4_HLEN] {
    let total = inner_len.wrapping_add(IPV4_HLEN as u16);
    ipv4_header(total, tos, ttl, IPPROTO_IPIP, src, dst)
}

/// An IPv4 header without options, `total` bytes long with its payload: identification 0,
/// DF clear, checksum filled in.
#[inline(always)]
pub const fn ipv4_header(
    total: u16,
    tos: u8,
    ttl: u8,
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
) -> [u8; IPV4_HLEN] {
    let mut h = [
        0x45,
        tos,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0,
        0,
        ttl,
        proto,
        0,
        0,
        src[0],
        src[1],
        src[2],
        src[3],
        dst[0],
        dst[1],
        dst[2],
        dst[3],
    ];
    let csum = ipv4_header_checksum(&h);
    h[10] = (csum >> 8) as u8;
    h[11] = csum as u8;
    h
}

/// IPv6 outer header for an inner IPv6 packet of `inner_len` bytes (its fixed header
/// included); traffic class and flow label copied from the first inner word.
#[inline(always)]
pub const fn ipv6_outer(
    inner_len: u16,
    inner_first_word: [u8; 4],
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
) -> [u8; IPV6_HLEN] {
    let mut h = [0u8; IPV6_HLEN];
    h[0] = inner_first_word[0];
    h[1] = inner_first_word[1];
    h[2] = inner_first_word[2];
    h[3] = inner_first_word[3];
    h[4] = (inner_len >> 8) as u8;
    h[5] = inner_len as u8;
    h[6] = IPPROTO_IPV6;
    h[7] = hop_limit;
    let mut i = 0;
    while i < 16 {
        h[8 + i] = src[i];
        h[24 + i] = dst[i];
        i += 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_the_textbook_example() {
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00,
            0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_header_checksum(&h), 0xb861);
        h[10] = 0xb8;
        h[11] = 0x61;
        // A header with its checksum in place sums to 0xffff, i.e. checksums to 0.
        assert_eq!(ipv4_header_checksum(&h), 0);
    }

    #[test]
    fn outer_v4_is_valid() {
        let h = ipv4_outer(60, 0x10, OUTER_TTL, [10, 255, 1, 2], [192, 0, 2, 20]);
        assert_eq!(ipv4_header_checksum(&h), 0);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), 80);
        assert_eq!(h[9], IPPROTO_IPIP);
        let again = ipv4_outer(60, 0x10, OUTER_TTL - 1, [10, 255, 1, 2], [192, 0, 2, 20]);
        assert_eq!((again[8], ipv4_header_checksum(&again)), (OUTER_TTL - 1, 0));
    }

    #[test]
    fn every_source_a_balancer_sends_from_has_its_base_key() {
        use crate::wire::FAMILY_V6;
        let base4 = [10, 255, 0, 0];
        let base6 = [0xfd, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let key4 = encap_source_key(words16(&base4), FAMILY_V4);
        let key6 = encap_source_key(base6, FAMILY_V6);
        for hash in [0, 1, 0xffff, 0xdead_beef, u32::MAX] {
            let s4 = outer_source_v4(base4, hash);
            assert_eq!(encap_source_key(words16(&s4), FAMILY_V4), key4);
            assert_eq!(
                encap_source_key(outer_source_v6(base6, hash), FAMILY_V6),
                key6
            );
        }
        // Another /16 (v4) or /96 (v6) is another key.
        assert_ne!(encap_source_key(words16(&[10, 254, 0, 0]), FAMILY_V4), key4);
        let mut other6 = base6;
        other6[11] = 1;
        assert_ne!(encap_source_key(other6, FAMILY_V6), key6);
    }

    fn words16(a: &[u8; 4]) -> [u8; 16] {
        let mut out = [0; 16];
        out[..4].copy_from_slice(a);
        out
    }

    #[test]
    fn second_chances_are_counted_down_in_the_ttl() {
        assert_eq!(second_chances_taken(OUTER_TTL), 0);
        assert_eq!(
            second_chances_taken(OUTER_TTL - SECOND_CHANCES),
            SECOND_CHANCES
        );
        // An outer header from elsewhere with a higher TTL counts as none given.
        assert_eq!(second_chances_taken(255), 0);
        for taken in 0..SECOND_CHANCES {
            assert_eq!(second_chances_taken(second_chance_ttl(taken)), taken + 1);
        }
        assert_eq!(ipv6_outer(40, [0x60, 0, 0, 0], 63, [0; 16], [0; 16])[7], 63);
    }
}
