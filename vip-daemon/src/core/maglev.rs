//! Weighted Maglev table builder (Eisenbud et al., "Maglev: A Fast and Reliable Software
//! Network Load Balancer", NSDI 2016, section 3.4). Pure: no IO, no clock, and the only
//! "randomness" is the caller's seed, so every process that builds a table for the same seed
//! and backend set publishes byte-identical slots (a restarted daemon or a second controller
//! must not reshuffle flows).
//!
//! Each backend walks its own permutation of the slots, `offset + j * skip (mod m)`, and
//! claims the first free slot it reaches. Weights follow Katran's MaglevV2: every round a
//! backend earns `weight / max_weight` credit (kept as exact integers) and claims one slot per
//! whole unit, so with equal weights this is exactly the paper's round robin (slot counts
//! differ by at most 1) and otherwise each share is within a slot or so of its weight.

use std::cmp::Reverse;

/// One backend as the table builder sees it. `id` is the stable backend identity (the
/// index the data plane uses); `weight` 0 means not in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevBackend {
    pub id: u32,
    pub weight: u32,
}

/// Value stored in a slot that has no backend (no healthy backend at all). Same value as
/// `vip_common::maps::NO_BACKEND`, which is why `u32::MAX` is not a valid backend id.
pub const NO_BACKEND: u32 = u32::MAX;

/// Largest accepted table size: 16M slots is 64 MiB of `u32`, far past any sane VIP.
pub const MAX_TABLE_SIZE: u32 = 1 << 24;

/// Why a table cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MaglevError {
    #[error("Maglev table size must be at least 1")]
    ZeroSize,
    #[error("Maglev table size {0} is not prime")]
    NotPrime(u32),
    #[error("Maglev table size {m} exceeds the maximum {max}")]
    TooLarge { m: u32, max: u32 },
    #[error("backend id {0} appears more than once")]
    DuplicateId(u32),
    #[error("backend id {0} is reserved as the empty-slot marker")]
    ReservedId(u32),
}

/// Builds a table of `m` slots for `seed`: `m` prime, or 1 for a single slot holding the
/// best backend (highest weight, then lowest id). The same (seed, set of backends) gives the
/// same table whatever the input order. No backend with a non-zero weight → every slot is
/// [`NO_BACKEND`]. Duplicate ids and the id [`NO_BACKEND`] are errors.
pub fn build(seed: u32, backends: &[MaglevBackend], m: u32) -> Result<Vec<u32>, MaglevError> {
    if m == 0 {
        return Err(MaglevError::ZeroSize);
    }
    if m > MAX_TABLE_SIZE {
        let max = MAX_TABLE_SIZE;
        return Err(MaglevError::TooLarge { m, max });
    }
    if m != 1 && !is_prime(m) {
        return Err(MaglevError::NotPrime(m));
    }
    // Sorting makes the round-robin order, and so the table, independent of input order.
    let mut live = backends.to_vec();
    live.sort_unstable_by_key(|b| b.id);
    if let Some(w) = live.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(MaglevError::DuplicateId(w[0].id));
    }
    if let Some(b) = live.last().filter(|b| b.id == NO_BACKEND) {
        return Err(MaglevError::ReservedId(b.id));
    }
    // Weight 0 never earns credit; dropping it up front keeps the fill loop finite and fast.
    live.retain(|b| b.weight > 0);

    let mut table = vec![NO_BACKEND; m as usize];
    if live.is_empty() {
        return Ok(table);
    }
    if m == 1 {
        // One slot cannot be shared: the heaviest backend wins, the lowest id breaks ties.
        let best = live.iter().max_by_key(|b| (b.weight, Reverse(b.id)));
        table[0] = best.map_or(NO_BACKEND, |b| b.id);
        return Ok(table);
    }
    populate(seed, &live, &mut table);
    Ok(table)
}

/// Per-backend fill state, flat and incremental: the paper's full permutation matrix would be
/// `n * m` words (260 MB for n = 1000, m = 65537); only the next position is ever needed.
struct Cursor {
    id: u32,
    weight: u64,
    credit: u64,
    /// Next slot of this backend's permutation to try.
    next: u32,
    skip: u32,
}

/// Fills every slot of `table` (len m, prime, > 1) from `live` (sorted, weights > 0).
fn populate(seed: u32, live: &[MaglevBackend], table: &mut [u32]) {
    let m = table.len() as u32;
    let max_weight = live.iter().map(|b| b.weight as u64).max().unwrap_or(1);
    let mut cursors: Vec<Cursor> = live
        .iter()
        .map(|b| {
            let (h1, h2) = backend_hashes(seed, b.id);
            Cursor {
                id: b.id,
                weight: b.weight as u64,
                credit: 0,
                next: (h1 % m as u64) as u32,
                // In 1..m, so coprime with prime m: the walk visits every slot once.
                skip: (h2 % (m as u64 - 1)) as u32 + 1,
            }
        })
        .collect();
    let mut filled = 0u32;
    // Terminates: the heaviest backend claims every round, and a walk over all m slots
    // always reaches a free one while `filled < m`.
    loop {
        for c in cursors.iter_mut() {
            c.credit += c.weight;
            if c.credit < max_weight {
                continue;
            }
            c.credit -= max_weight;
            while table[c.next as usize] != NO_BACKEND {
                c.next = step(c.next, c.skip, m);
            }
            table[c.next as usize] = c.id;
            c.next = step(c.next, c.skip, m);
            filled += 1;
            if filled == m {
                return;
            }
        }
    }
}

/// `(pos + skip) % m` without a division; pos, skip < m <= 2^24 so the sum cannot overflow.
#[inline(always)]
fn step(pos: u32, skip: u32, m: u32) -> u32 {
    let n = pos + skip;
    if n >= m {
        n - m
    } else {
        n
    }
}

/// One splitmix64 step: a fixed, platform-independent 64-bit mix (unlike `RandomState`).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Two independent hashes of (seed, id) for offset and skip (the paper's h1 and h2).
fn backend_hashes(seed: u32, id: u32) -> (u64, u64) {
    let key = splitmix64(((seed as u64) << 32) | id as u64);
    // Two arbitrary distinct salts derive the two hashes from one mixed key.
    (
        splitmix64(key ^ 0x6F66_6673_6574_0001),
        splitmix64(key ^ 0x736B_6970_0000_0002),
    )
}

/// Slots whose value differs: (slot index, new value), in slot order, so that a published
/// table can be patched in place. Panics if the lengths differ.
pub fn diff(old: &[u32], new: &[u32]) -> Vec<(u32, u32)> {
    assert_eq!(old.len(), new.len(), "Maglev tables of different sizes");
    old.iter()
        .zip(new)
        .enumerate()
        .filter(|(_, (o, n))| o != n)
        .map(|(i, (_, &n))| (i as u32, n))
        .collect()
}

/// Trial division by 6k ± 1: at most ~11k iterations for a u32, and it runs once per build.
pub fn is_prime(m: u32) -> bool {
    if m < 4 {
        return m >= 2;
    }
    if m.is_multiple_of(2) || m.is_multiple_of(3) {
        return false;
    }
    let m = m as u64;
    let mut d = 5u64;
    while d * d <= m {
        if m.is_multiple_of(d) || m.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u32 = 65537;

    fn b(id: u32, weight: u32) -> MaglevBackend {
        MaglevBackend { id, weight }
    }

    fn equal(n: u32) -> Vec<MaglevBackend> {
        (0..n).map(|id| b(id, 1)).collect()
    }

    /// Slots per id, indexed by id (ids in these tests are small).
    fn counts(table: &[u32], max_id: u32) -> Vec<usize> {
        let mut c = vec![0; max_id as usize + 1];
        table.iter().for_each(|&s| c[s as usize] += 1);
        c
    }

    /// xorshift64: a deterministic stand-in for a rand crate.
    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    fn fnv1a(table: &[u32]) -> u64 {
        let mut h = 0xCBF2_9CE4_8422_2325u64;
        for b in table.iter().flat_map(|v| v.to_le_bytes()) {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01B3);
        }
        h
    }

    #[test]
    fn every_slot_filled() {
        for m in [251, 4099, 16381, M] {
            for n in [1, 2, 3, 7, 10, 100, 1000] {
                let t = build(7, &equal(n), m).unwrap();
                assert_eq!(t.len(), m as usize);
                assert!(t.iter().all(|&s| s < n), "m={m} n={n}");
            }
        }
    }

    #[test]
    fn equal_weights_balance_within_one_slot() {
        for m in [251, 4099, M] {
            for n in [2, 3, 7, 10, 100, 1000] {
                let t = build(3, &equal(n), m).unwrap();
                // Only weight ratios matter: scaled equal weights are the classic table.
                let scaled: Vec<_> = (0..n).map(|id| b(id, 40_000)).collect();
                assert_eq!(build(3, &scaled, m).unwrap(), t);
                let c = counts(&t, n - 1);
                let (lo, hi) = (c.iter().min().unwrap(), c.iter().max().unwrap());
                assert!(hi - lo <= 1, "m={m} n={n} min={lo} max={hi}");
            }
        }
    }

    #[test]
    fn weights_honoured_within_one_percent() {
        for weights in [&[1u32, 2, 3, 4][..], &[100, 50, 25], &[1, 1000], &[5, 0, 5]] {
            for m in [251, M] {
                let bs: Vec<_> = (0..).zip(weights).map(|(i, &w)| b(i * 10, w)).collect();
                let c = counts(&build(11, &bs, m).unwrap(), 10 * weights.len() as u32);
                let sum: u32 = weights.iter().sum();
                for (w, got) in weights.iter().zip(c.into_iter().step_by(10)) {
                    let want = *w as f64 / sum as f64;
                    let err = (got as f64 / m as f64 - want).abs();
                    assert!(err <= 0.01, "m={m} weights={weights:?} w={w} got {got}");
                }
            }
        }
    }

    #[test]
    fn removing_one_backend_moves_little() {
        for n in [3u32, 10, 100] {
            let all = equal(n);
            let old = build(5, &all, M).unwrap();
            for gone in [0, n / 2, n - 1] {
                let rest: Vec<_> = all.iter().copied().filter(|b| b.id != gone).collect();
                let changes = diff(&old, &build(5, &rest, M).unwrap());
                // Slots that moved between surviving backends (measured worst: ~0.65% of M).
                let collateral = changes.iter().filter(|c| old[c.0 as usize] != gone);
                assert!(collateral.count() <= M as usize / 100, "n={n} gone={gone}");
                assert!(
                    changes.len() <= (M / n + M / 100) as usize,
                    "n={n} gone={gone}"
                );
            }
        }
    }

    #[test]
    fn input_order_does_not_matter() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut bs: Vec<_> = (0..50).map(|i| b(i * 7 + 3, i % 5 + 1)).collect();
        let want = build(9, &bs, 4099).unwrap();
        for _ in 0..20 {
            for i in (1..bs.len()).rev() {
                bs.swap(i, (xorshift(&mut rng) % (i as u64 + 1)) as usize);
            }
            assert_eq!(build(9, &bs, 4099).unwrap(), want);
        }
    }

    #[test]
    fn golden_table_is_stable_across_processes() {
        let t = build(42, &equal(5), 251).unwrap();
        assert_eq!(fnv1a(&t), 18_399_097_325_821_540_709);
        assert_ne!(build(43, &equal(5), 251).unwrap(), t);
        // The mix is the published splitmix64 (its first output from state 0).
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn single_slot_and_validation() {
        assert_eq!(build(1, &[b(5, 3), b(9, 7), b(2, 7)], 1), Ok(vec![2]));
        assert_eq!(build(1, &[b(5, 0)], 1), Ok(vec![NO_BACKEND]));
        assert_eq!(build(1, &[], 251), Ok(vec![NO_BACKEND; 251]));
        let none = Ok(vec![NO_BACKEND; 251]);
        assert_eq!(build(1, &[b(1, 0), b(2, 0)], 251), none);
        let err = |bs: &[MaglevBackend], m| build(1, bs, m).unwrap_err();
        assert_eq!(err(&[b(1, 1)], 0), MaglevError::ZeroSize);
        assert_eq!(err(&[b(1, 1)], 250), MaglevError::NotPrime(250));
        assert_eq!(err(&[b(1, 1), b(1, 2)], 251), MaglevError::DuplicateId(1));
        let reserved = MaglevError::ReservedId(NO_BACKEND);
        assert_eq!(err(&[b(NO_BACKEND, 1)], 251), reserved);
        let (m, max) = (16_777_259, MAX_TABLE_SIZE); // m: the smallest prime above 1 << 24
        assert_eq!(err(&[b(1, 1)], m), MaglevError::TooLarge { m, max });
        let primes: Vec<u32> = (0..30).filter(|&m| is_prime(m)).collect();
        assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65537) && is_prime(4_294_967_291));
        assert!(!is_prime(65535) && !is_prime(u32::MAX));
    }

    #[test]
    fn diff_round_trips() {
        let old = build(1, &equal(10), 4099).unwrap();
        let new = build(1, &equal(9), 4099).unwrap();
        let mut patched = old.clone();
        for (slot, v) in diff(&old, &new) {
            patched[slot as usize] = v;
        }
        assert_eq!(patched, new);
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    #[should_panic]
    fn diff_rejects_different_sizes() {
        diff(&[0; 251], &[0; 257]);
    }
}
