//! Where a VIP should live given who is alive: a pure function, so every node that agrees on
//! membership agrees on placement without exchanging a message.

use std::cmp::Reverse;

use super::VipPolicy;

/// Whether `node` may own `vip` at all: a non-witness voter inside the VIP's `allowed` list.
pub fn eligible(vip: &VipPolicy, node: &str, voters: &[String], witness: Option<&str>) -> bool {
    voters.iter().any(|v| v == node)
        && witness != Some(node)
        && vip
            .allowed
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|a| a == node))
}

/// The node `vip` belongs on when nobody holds it: the first alive eligible node of its
/// `preferences`, else the eligible alive node with the highest rendezvous weight. `None` when
/// no eligible node is alive. Stickiness (an alive owner keeps its VIP) is applied by
/// [`super::Ownership`], not here.
///
/// Rendezvous hashing moves only the VIPs of a node that dies or joins, and needs no shared
/// ring; the order of `alive` and `voters` does not matter.
pub fn placement(
    vip: &VipPolicy,
    alive: &[String],
    voters: &[String],
    witness: Option<&str>,
) -> Option<String> {
    let ok = |n: &str| alive.iter().any(|a| a == n) && eligible(vip, n, voters, witness);
    if let Some(p) = vip.preferences.iter().find(|p| ok(p)) {
        return Some(p.clone());
    }
    voters
        .iter()
        .filter(|v| ok(v))
        .max_by_key(|v| (rendezvous_weight(&vip.name, v), Reverse(v.as_str())))
        .cloned()
}

/// Highest-random-weight score of (vip, node): FNV-1a 64 over both names with a separator no
/// UTF-8 text contains, then the splitmix64 finalizer so that names differing only in their
/// last byte (`ctl1`, `ctl2`) still get unrelated weights. Stable across processes, versions
/// and architectures, unlike std's `RandomState`.
pub fn rendezvous_weight(vip: &str, node: &str) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = vip.bytes().chain([0xff]).chain(node.bytes());
    let h = bytes.fold(FNV_OFFSET, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    });
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
