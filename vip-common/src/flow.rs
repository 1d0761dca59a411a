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

#[inline(always)]
const fn word(b: &[u8; 16], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Hash of a flow. Addresses are 16 bytes (IPv4 in the first 4, rest zero); ports in host
/// order. With `src_only` (session affinity, e.g. Horizon) only the source address counts.
#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "a flow is these seven integers")]
pub const fn flow_hash(
    seed: u32,
    src: &[u8; 16],
    dst: &[u8; 16],
    sport: u16,
    dport: u16,
    proto: u8,
    src_only: bool,
) -> u32 {
    let mut h = seed;
    h = mix(h, word(src, 0));
    h = mix(h, word(src, 4));
    h = mix(h, word(src, 8));
    h = mix(h, word(src, 12));
    if src_only {
        return finish(h, 16);
    }
    h = mix(h, word(dst, 0));
    h = mix(h, word(dst, 4));
    h = mix(h, word(dst, 8));
    h = mix(h, word(dst, 12));
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
        let a = [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let b = [192, 0, 2, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let h = flow_hash(7, &a, &b, 40000, 80, 6, false);
        assert_eq!(h, flow_hash(7, &a, &b, 40000, 80, 6, false));
        assert_ne!(h, flow_hash(8, &a, &b, 40000, 80, 6, false));
        assert_ne!(h, flow_hash(7, &a, &b, 40001, 80, 6, false));
        // Source affinity ignores everything but the source address.
        assert_eq!(
            flow_hash(7, &a, &b, 1, 2, 6, true),
            flow_hash(7, &a, &[0; 16], 3, 4, 17, true)
        );
    }

    #[test]
    fn slots_spread_evenly() {
        let m = 251u32;
        let mut counts = [0u32; 251];
        let dst = [192, 0, 2, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        for i in 0..251_000u32 {
            let mut src = [0u8; 16];
            src[..4].copy_from_slice(&i.to_be_bytes());
            counts[maglev_slot(flow_hash(1, &src, &dst, 1234, 80, 6, false), m) as usize] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 800 && *max < 1200, "min {min} max {max}");
    }
}
