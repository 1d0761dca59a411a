//! Per-VIP and per-node records the state machine keeps, and its per-VIP decision.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Instant;

use super::Claim;

/// The best claim known for a VIP. Ordered by [`Record::key`]; merging keeps the maximum, a
/// join-semilattice, so gossip converges in any order and survives duplicates.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Record {
    pub(super) epoch: u64,
    pub(super) owner: String,
    pub(super) released: bool,
}

impl Record {
    /// Higher epoch first; at equal epochs the smaller owner name (split-brain tie-break);
    /// for the same claim, released is newer than owned.
    pub(super) fn key(&self) -> (u64, Reverse<&str>, bool) {
        (self.epoch, Reverse(self.owner.as_str()), self.released)
    }

    pub(super) fn claim(&self, vip: &str) -> Claim {
        let (vip, owner, epoch) = (vip.to_string(), self.owner.clone(), self.epoch);
        Claim { vip, owner, epoch }
    }
}

/// A VIP this node serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Held {
    pub(super) epoch: u64,
    pub(super) until: Instant,
    pub(super) next_renew: Instant,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct VipState {
    pub(super) record: Option<Record>,
    /// Safety ledger: every node whose live claim we received recently, with the highest
    /// epoch and when we last received it. The record alone is not enough: a newer record
    /// (say, a release from a history this node's quorum forgot after restarting) can
    /// outrank a claim that is still being served. Before claiming, each claimant must be
    /// accounted for: released, left, fenced, or silent for `lease + margin` (holders
    /// gossip their claim every `lease / 3`).
    pub(super) claimants: BTreeMap<String, (u64, Instant)>,
    pub(super) held: Option<Held>,
    /// The last move this node forwarded to the owner: (target, epoch it applied to). A
    /// move is forwarded once per owner epoch, so re-delivered gossip cannot loop.
    pub(super) forwarded: Option<(String, u64)>,
    /// When [`super::Input::Reconfigure`] added the VIP here (`None`: configured from the
    /// start). It settles `lease` from then before anything is claimed, as at quorum.
    pub(super) added: Option<Instant>,
}

/// Fencing of one dead node: one attempt in flight at a time, retried with backoff.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct FenceTry {
    pub(super) failures: u32,
    pub(super) in_flight: bool,
    pub(super) retry_at: Instant,
}

/// What this node should do about one VIP right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Not ours to act on (another node's target, no quorum, left).
    Idle,
    Hold,
    /// We hold it but may not (not eligible here).
    Release,
    Settling(Instant),
    /// Serve the claim the record makes in our name, at its epoch: a move's handover (or an
    /// earlier incarnation's claim, which everyone already attributes to us).
    Adopt,
    /// Claim it; `from` names the previous owner for the operator line.
    Claim {
        from: Option<String>,
        why: &'static str,
    },
    /// We are the target but the owner is alive (yet not eligible here: configs differ).
    /// Never claim over an alive owner: wait for its release.
    WaitOwner(String),
    Fence(String),
    WaitLease(String, Instant),
}
