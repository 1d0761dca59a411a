//! The flow hash and the Maglev slot choice, defined once for the XDP program and for the host
//! model (`vipd trace`, tests). Every node of a cluster uses the same seed, so every node picks
//! the same slot for the same flow.

/// Murmur3's 32-bit finaliser step: cheap, well mixing, no tables (verifier friendly).
#[inline(always)]
const fn mix(h: u32, word: u32) -> u32 {
    let mut k = word.wrapping_mul(0xcc9e_2d51);
    k = k.rotate_left(15);
    k = k.wrapping_mul(0x1b87_3593);
    let h = (h ^ k).rotate_left(13);
    h.wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline(always)]
const fn finish(mut h: u32, len: u32) -> u32 {
    h ^= len;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// An address (16 bytes, IPv4 in the first 4) as the four 32-bit words the hash consumes:
/// little-endian, which is also what a 32-bit load from the packet gives on bpfel/x86 — the
/// XDP program loads words straight from the packet.
#[inline(always)]
pub const fn addr_words(a: &[u8; 16]) -> [u32; 4] {
    [
        u32::from_le_bytes([a[0], a[1], a[2], a[3]]),
        u32::from_le_bytes([a[4], a[5], a[6], a[7]]),
        u32::from_le_bytes([a[8], a[9], a[10], a[11]]),
        u32::from_le_bytes([a[12], a[13], a[14], a[15]]),
    ]
}

/// The inverse of [`addr_words`].
#[inline(always)]
pub const fn words_addr(w: &[u32; 4]) -> [u8; 16] {
    let (a, b, c, d) = (
        w[0].to_le_bytes(),
        w[1].to_le_bytes(),
        w[2].to_le_bytes(),
        w[3].to_le_bytes(),
    );
    [
        a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2],
        d[3],
    ]
}

/// Hash of a flow. Addresses as [`addr_words`]; ports in host order. With `src_only`
/// (session affinity, e.g. Horizon) only the source address counts.
#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "a flow is these seven integers")]
pub const fn flow_hash(
    seed: u32,
    src: &[u32; 4],
    dst: &[u32; 4],
    sport: u16,
    dport: u16,
    proto: u8,
    src_only: bool,
) -> u32 {
    let mut h = seed;
    h = mix(h, src[0]);
    h = mix(h, src[1]);
    h = mix(h, src[2]);
    h = mix(h, src[3]);
    if src_only {
        return finish(h, 16);
    }
    h = mix(h, dst[0]);
    h = mix(h, dst[1]);
    h = mix(h, dst[2]);
    h = mix(h, dst[3]);
    h = mix(h, ((sport as u32) << 16) | dport as u32);
    h = mix(h, proto as u32);
    finish(h, 40)
}

/// The Maglev slot of a flow in a table of `table_size` slots (never 0).
#[inline(always)]
pub const fn maglev_slot(hash: u32, table_size: u32) -> u32 {
    hash % table_size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_seeded() {
        let a = addr_words(&[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let b = addr_words(&[192, 0, 2, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            words_addr(&a),
            [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let h = flow_hash(7, &a, &b, 40000, 80, 6, false);
        assert_eq!(h, flow_hash(7, &a, &b, 40000, 80, 6, false));
        assert_ne!(h, flow_hash(8, &a, &b, 40000, 80, 6, false));
        assert_ne!(h, flow_hash(7, &a, &b, 40001, 80, 6, false));
        // Source affinity ignores everything but the source address.
        assert_eq!(
            flow_hash(7, &a, &b, 1, 2, 6, true),
            flow_hash(7, &a, &[0; 4], 3, 4, 17, true)
        );
    }

    #[test]
    fn slots_spread_evenly() {
        let m = 251u32;
        let mut counts = [0u32; 251];
        let dst = addr_words(&[192, 0, 2, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        for i in 0..251_000u32 {
            let mut src = [0u8; 16];
            src[..4].copy_from_slice(&i.to_be_bytes());
            let src = addr_words(&src);
            counts[maglev_slot(flow_hash(1, &src, &dst, 1234, 80, 6, false), m) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 800 && *max < 1200, "min {min} max {max}");
    }
}
