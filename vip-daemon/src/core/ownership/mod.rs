//! Who owns each VIP: the replacement for keepalived's VRRP election plus Pacemaker's
//! fencing, as a pure state machine for one node.
//!
//! Pure like the other cores: the shell feeds membership facts and gossip with the time they
//! were observed and executes the returned [`Action`]s (netlink address + gratuitous ARP,
//! data-plane lease map writes, fencing hooks, broadcasts). No IO, no clock, no randomness,
//! so tests replay exact multi-node timelines with simulated instants.
//!
//! # Protocol
//! * **Placement** is a pure function of the agreed membership ([`placement`]): first alive
//!   preferred node, else rendezvous hashing. **Stickiness** overrides it: a VIP whose owner is
//!   alive and eligible stays put, so a returning preferred node does not steal it back.
//! * **Claims** carry an epoch: a new claim is the highest epoch known + 1. What a node knows
//!   about a VIP is a record ordered by (epoch, smaller owner name wins a tie, released after
//!   owned); merging gossip keeps the maximum, so every node converges on the same record
//!   whatever order gossip arrives in. A holder that learns of a record beating its own
//!   releases at once (and says so with a `Released`).
//! * **Takeover** from an owner that is not alive needs quorum and one of: the owner left
//!   gracefully or released, a successful fencing hook against it, or (VIPs without fencing)
//!   `last_seen(owner) + lease + margin <= now` (see *Stale view* below for what
//!   `last_seen` is after a break in word from a quorum). Failed fencing retries with
//!   backoff.
//! * **Leases**: the holder renews its data-plane lease every `lease / 3` while *active*
//!   (below) and releases everything the moment it is not.
//! * **Leaving** ([`Input::Leave`], `vipd leave` before a planned stop) hands each held VIP
//!   over like a move, to the node placement picks among the others, so the VIP is never
//!   unowned and the returning node finds it owned elsewhere (stickiness: no move back).
//! * **Moves** ([`Input::Move`]) are handovers by the owner: it releases, broadcasts the next
//!   epoch's claim *in the target's name*, then its own `Released`; the target adopts the
//!   claim. Every node learns one record, so no two nodes can pick different targets (a
//!   per-node "pin" of the target did diverge, and two nodes claimed one VIP). Non-owners
//!   forward the move ([`Gossip::Move`]) once per owner epoch; moving an unowned VIP, or to
//!   or from a node not alive, is refused with a status line.
//!
//! * **Out of service** ([`Input::NodeState`] with a reason: `vipd node standby`, or a
//!   failed `track` condition): the node still votes and counts for quorum, but is eligible
//!   for no VIP on any node that has heard its state (every node re-sends its own state with
//!   its records). Entering it hands each held VIP over like a leave (to placement among
//!   the in-service nodes; released when none is eligible); back in service nothing moves
//!   back (stickiness). A handover in its name is disowned. Its state only ever narrows who
//!   may claim, so safety does not depend on others hearing it: a node that has not yet
//!   heard it places a VIP on it, which stays unowned until the news arrives (within one
//!   re-broadcast, `lease / 3`). Tests: `standby_hands_over_and_nobody_places_on_it`,
//!   `back_in_service_nothing_moves_back`, `an_older_node_state_is_ignored`.
//!
//! # Safety rules beyond the brief, and why
//! Each is exercised by a test; the chaos test found the need for the three before
//! *Stale view*, which the model checker found.
//! * *Lease cap*: a lease never runs past `lease` after this node last heard from enough
//!   voters to make a quorum with itself. The majority takes over at `last_seen(me) + lease
//!   + margin`, so a cut-off holder's lease ends first *however slowly its failure detector
//!   notices*; without the cap, safety needed detection faster than `margin`.
//! * *Active* = membership quorum AND a quorum heard within the lease; losing either releases
//!   everything (`QUORUM LOST` / `LEASE LOST`). [`Ownership::in_quorum`] is the membership
//!   part only.
//! * *Settle on every entry into active*, not only at start: claim and fence nothing for
//!   `lease`, so a node that was cut off learns what was claimed meanwhile instead of
//!   re-claiming with a stale epoch (and winning the tie-break); also after a shorter break
//!   in word from a quorum, which does not end *active* (*Stale view* below).
//! * *Never claim over an alive owner*, even one not eligible here: wait for its release.
//! * *Everyone who may still serve must be accounted for* before any claim or adoption:
//!   every node whose live claim we received within `lease + margin` and that has not
//!   released, left or been fenced (a newer record does not prove an older claimant
//!   stopped: after a quorum restarted with no memory, an old history's `Released` outranked
//!   a claim still being served); and every eligible voter that vanished within
//!   `lease + margin` (cut off, it may have claimed from its stale view just before).
//! * *Claims in our own name we do not hold* (a handover, or a previous incarnation's) are
//!   adopted under the rule above when settled and eligible, else disowned (`Release` plus
//!   `Released`) so others may place the VIP.
//! * *Fresh word*: claiming, adopting and fencing need a quorum heard within `margin`.
//!   Membership declares peers dead one at a time, so a cut-off node briefly "has quorum"
//!   with a peer it cannot reach either; from that view it once fenced a healthy majority
//!   node and claimed a VIP just handed elsewhere. So `margin` must exceed the gap between
//!   packets from a quorum (about a probe interval) and stay below failure detection time.
//! * *Stale view*: a break in fresh word (no quorum heard within `margin`, e.g. cut off for
//!   less than failure detection, so still *active*) may hide renewals and claims. An owner
//!   we could not hear kept renewing with the rest of the quorum, and its lease cap follows
//!   that contact, not our `last_seen` of it: so the lease-expiry rules (the takeover above,
//!   the claimants and vanished voters below) count every node as last seen no earlier than
//!   when we hear a quorum again (the end of the break), and as seen now during it. A lease
//!   takeover then waits `lease + margin` from the end of the break: enough, because an
//!   owner still renewing after it is heard by us too, and the usual argument (`margin`
//!   covers the probe gap, delay and clock rates) applies. And, as on entry into active, we
//!   settle again for `lease` from the end of the break before claiming, adopting or
//!   fencing anything (held VIPs stay held), so re-broadcasts bring what was claimed
//!   meanwhile. A node that never lost fresh word keeps its timing exactly; a start is not a
//!   break. Tests: `a_node_cut_off_beyond_the_margin_waits_out_renewals_it_missed`, found
//!   by the model checker (`vip-verify`: `finding_1_undetected_partition_then_owner_crash`):
//!   the node cut off took over at its stale `last_seen + lease + margin`, before the
//!   crashed owner's pinned lease ended; `a_break_in_fresh_word_settles_again_before_claiming`
//!   (the checker's finding 2 traces: a joiner whose settle-time gossip a short partition
//!   ate claimed over the live owner at its settle end).
//!
//! # Liveness
//! Every node re-broadcasts every record every `lease / 3`, and at once when a node joins its
//! alive set, so restarted nodes learn claims within their settle time and lost messages
//! (a handover, a release) are repaired.
//!
//! # Reconfiguration
//! [`Input::Reconfigure`] (a config reload) replaces the VIP set; voters, witness, lease and
//! margin stay (the shell refuses to change them). Each rule's test is in
//! `tests/reconfigure.rs`; `chaos_with_reloads_keeps_one_server_per_vip_and_converges` mixes
//! reloads (nodes running different VIP sets and fencing) into the other faults.
//! * *Kept* (same name): record, claimants and held lease stay; the new policy applies from
//!   now. Stickiness keeps a live owner where it is whatever the new preferences say; a
//!   holder no longer eligible here releases by the usual `Release` step, and the new target
//!   claims only once that release is heard. Tests:
//!   `kept_vip_keeps_owner_epoch_and_lease_and_takes_the_new_policy`,
//!   `kept_vip_no_longer_eligible_here_is_released_to_placement`.
//! * *Removed*: released if held (`Release`, `Released`, a status line), a claim in our name
//!   disowned, then forgotten; nodes still configured with it place it by the usual rules.
//!   Test: `removed_vip_is_released_and_a_node_still_configured_takes_it_over_by_the_usual_rules`.
//! * *Retired*: our last record on a removed VIP, released, is still re-gossiped until another
//!   node's newer record is heard: nobody else repeats our release, and a node that missed
//!   it would keep the VIP on us (alive) forever. Re-added, the VIP starts from that record.
//!   Test: `a_release_missed_during_a_partition_is_repeated_after_removal`.
//! * *Gossip about a VIP not configured here* is ignored, except a live claim in our name (a
//!   handover from a node that still has the VIP): disowned with a `Released` and retired,
//!   else the VIP would stay on us, unserved. Tests:
//!   `a_handover_to_a_node_that_removed_the_vip_is_disowned`,
//!   `gossip_about_an_unknown_vip_is_ignored_but_claims_in_our_name_are_disowned`.
//! * *Added*: settles `lease` from when it was added here before anything is claimed or
//!   adopted, as after gaining quorum: gossip about it was ignored until now, and the
//!   re-broadcast every `lease / 3` brings any live claim within that time; claiming earlier
//!   could claim over a node that added it first. Test:
//!   `added_vip_settles_then_the_first_adder_claims_and_later_adders_never_claim_over_it`.
//! * Placement does not know which nodes have a VIP configured: a VIP placed on a node that
//!   has not added it yet stays unowned until that node does
//!   (`added_vip_waits_for_the_node_placement_picks`); a rolling removal likewise leaves it
//!   unowned from when its holder removes it, if the others place it on that node.
//! * A set that fails [`OwnershipConfig::validate`] is refused with a status line and changes
//!   nothing (`an_invalid_vip_set_is_refused_and_changes_nothing`).
//!
//! # Known limits
//! A successful fence is known only to the node that ran it (another node taking over another
//! of the dead node's VIPs fences again: hooks must be idempotent). Connected nodes whose
//! membership views disagree may both claim a VIP at the same epoch: the tie-break resolves
//! it, but both serve until the loser hears the winner (one message delay). So may nodes
//! whose configs give a VIP different preferences (e.g. midway through a rolling reload that
//! changes them) when they claim it unowned at the same time: at settle end, after a release,
//! or after its owner died. A VIP whose owner is alive is safe from this (stickiness); the
//! chaos test with reloads changes preferences on every node at once for this reason.
//!
//! The model checker (`vip-verify`, `docs/architecture.md` "Model-checked ownership") found
//! two more, both fixed by *Stale view* as far as it checks. Still open: a (re)started node
//! that loses every re-broadcast during its settle time *without* a break in fresh word
//! (every item dropped, packets still flowing) claims over a live owner until the owner's
//! next re-broadcast reaches it; and *Stale view* assumes what the lease-expiry rule
//! already does, symmetric links, where a node either hears a quorum or is cut off. A node
//! that hears a quorum but not the owner, while the owner still reaches a quorum (a partial
//! partition SWIM's indirect probes keep hidden), still has a stale `last_seen`.

use std::time::{Duration, Instant};

mod decide;
mod machine;
mod placement;
mod reconcile;
mod reconfigure;
mod state;
#[cfg(test)]
mod tests;

pub use machine::Ownership;
pub use placement::{eligible, placement, rendezvous_weight};

/// First retry delay after a failed fencing attempt; doubles per failure up to the maximum.
pub const FENCE_BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Cap of the fencing retry delay: a broken fence device is retried at least this often.
pub const FENCE_BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OwnershipConfig {
    /// This node's name, as in `voters`.
    pub me: String,
    /// Every configured cluster node, witness included. Quorum is more than half of them.
    pub voters: Vec<String>,
    /// A voter that owns nothing (tie-breaker for two data nodes). Must be in `voters`.
    pub witness: Option<String>,
    /// Data-plane lease of a held VIP; also the settle time before claiming.
    pub lease: Duration,
    /// Extra wait before assuming a silent owner's lease expired: covers one membership probe
    /// interval, packet delay and clock-rate differences between nodes. Also how recent word
    /// from a quorum must be to claim or fence: keep it below failure detection time (e.g.
    /// 2 probe intervals).
    pub margin: Duration,
    pub vips: Vec<VipPolicy>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VipPolicy {
    pub name: String,
    /// Ordered: the first alive, eligible node is placed; empty means rendezvous hashing.
    pub preferences: Vec<String>,
    /// Restricts the eligible nodes; `None` means every non-witness voter.
    pub allowed: Option<Vec<String>>,
    /// Take over from a dead owner only after a successful fencing hook against it, instead
    /// of after its lease certainly expired.
    pub fencing: bool,
}

/// "`owner` holds `vip` since it claimed it at `epoch`", as gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Claim {
    pub vip: String,
    pub owner: String,
    pub epoch: u64,
}

/// What nodes tell each other. The shell maps each received gossip to the matching
/// [`Input`] (`Claim`, `Released`, `Move`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Gossip {
    Claim(Claim),
    /// The owner gave the claim up; the placement's node may claim at once, without fencing.
    Released(Claim),
    /// An operator asked to move `vip` to `to`.
    Move {
        vip: String,
        to: String,
    },
    /// A node's service state (see [`Input::NodeState`]); each node re-sends its own.
    NodeState(NodeState),
}

/// "`node` is in service (`reason` None) or out of service for `reason`", as of `version`
/// (the node's own wall-clock ms of the change: only the node itself sets it, and a
/// restarted node announces again from its state file, so it grows across restarts).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeState {
    pub node: String,
    /// E.g. "standby" or "track: link eth0 down".
    pub reason: Option<String>,
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// The full alive set from membership; replaces the previous one (self is always alive).
    Alive(Vec<String>),
    /// Membership declared the node dead.
    Dead(String),
    /// The node left gracefully: it released all its VIPs.
    Left(String),
    /// Any valid packet from that node. The shell must feed every one: lease takeover and the
    /// lease cap are computed from these times.
    Heard(String),
    Claim(Claim),
    Released(Claim),
    /// Outcome of a [`Action::Fence`]; the shell reports a hook timeout as `ok: false`.
    FenceResult {
        node: String,
        ok: bool,
    },
    /// This node is shutting down: hand each held VIP over to where placement puts it
    /// without this node (released when no other node is eligible); the instance never
    /// claims again.
    Leave,
    /// Operator move, from the admin command or from [`Gossip::Move`].
    Move {
        vip: String,
        to: String,
    },
    /// A node's service state, this node's from the shell (standby, track conditions),
    /// others' from gossip; the highest `version` per node wins. An out-of-service node is
    /// alive and votes but is eligible for nothing (see *Out of service* in the module docs).
    NodeState(NodeState),
    /// The new VIP set of a config reload, replacing [`OwnershipConfig::vips`] (voters,
    /// witness, lease and margin stay; the shell refuses changing them). See
    /// "Reconfiguration" in the module docs. Refused with a status line, changing nothing,
    /// when the new set fails [`OwnershipConfig::validate`]. The shell must deliver gossip
    /// about an added VIP again even when its transport already delivered the same item
    /// (ignored then): an added VIP learns its owner from the next re-broadcasts.
    Reconfigure(Vec<VipPolicy>),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Add the address and send gratuitous ARP. Always followed by the claim's
    /// [`Action::RenewLease`] and [`Action::Broadcast`], so the shell does neither itself.
    Claim {
        vip: String,
        epoch: u64,
    },
    /// Remove the address and the data-plane lease. Idempotent: also emitted to disown a
    /// claim the shell may not hold (a previous incarnation's).
    Release {
        vip: String,
        epoch: u64,
    },
    /// A graceful handover to `to` (a leave or a move): remove the address but leave the
    /// data-plane lease to run out by itself, never renewed. Packets the network still sends
    /// here before the new owner's gratuitous ARP lands are forwarded (every node has the
    /// same tables) instead of dropped; ARP is not answered here any more (the address is
    /// gone), so no neighbour entry is pulled back.
    HandOver {
        vip: String,
        epoch: u64,
        to: String,
    },
    /// Write the data-plane lease: serve the VIP until `until`, no longer.
    RenewLease {
        vip: String,
        epoch: u64,
        until: Instant,
    },
    Broadcast(Gossip),
    /// Run the fencing hook against `node`; answer with [`Input::FenceResult`].
    Fence {
        node: String,
        reason: String,
    },
    /// A loud operator line.
    Status(String),
}

/// One VIP as this node sees it, for `vipd status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipView {
    pub vip: String,
    /// `None` when never claimed or released.
    pub owner: Option<String>,
    pub epoch: u64,
    /// Time left on this node's lease, when it holds the VIP.
    pub lease_left: Option<Duration>,
    /// What this node is doing about the VIP, fencing state included (e.g. "fencing ctl2
    /// FAILED 3x, retry in 4s").
    pub state: String,
    pub in_quorum: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("no voters configured")]
    NoVoters,
    #[error("voter {0} is listed twice")]
    DuplicateVoter(String),
    #[error("this node ({0}) is not among the voters")]
    MeNotVoter(String),
    #[error("witness {0} is not among the voters")]
    WitnessNotVoter(String),
    #[error("the lease must be at least 3ms (it is renewed every lease / 3)")]
    LeaseTooShort,
    #[error("vip {0} is configured twice")]
    DuplicateVip(String),
    #[error("vip {vip}: {node} is not a voter")]
    UnknownNode { vip: String, node: String },
    #[error("vip {vip}: {node} is the witness, which owns nothing")]
    WitnessListed { vip: String, node: String },
}

impl OwnershipConfig {
    /// Checks what [`Ownership`] assumes; the daemon refuses to start otherwise.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.voters.is_empty() {
            return Err(ConfigError::NoVoters);
        }
        for (i, v) in self.voters.iter().enumerate() {
            if self.voters[..i].contains(v) {
                return Err(ConfigError::DuplicateVoter(v.clone()));
            }
        }
        if !self.voters.contains(&self.me) {
            return Err(ConfigError::MeNotVoter(self.me.clone()));
        }
        if let Some(w) = self.witness.as_ref().filter(|w| !self.voters.contains(w)) {
            return Err(ConfigError::WitnessNotVoter(w.clone()));
        }
        if self.lease < Duration::from_millis(3) {
            return Err(ConfigError::LeaseTooShort);
        }
        for (i, vip) in self.vips.iter().enumerate() {
            if self.vips[..i].iter().any(|v| v.name == vip.name) {
                return Err(ConfigError::DuplicateVip(vip.name.clone()));
            }
            let listed = vip.preferences.iter().chain(vip.allowed.iter().flatten());
            for node in listed {
                let err = |node: &String| (vip.name.clone(), node.clone());
                if !self.voters.contains(node) {
                    let (vip, node) = err(node);
                    return Err(ConfigError::UnknownNode { vip, node });
                }
                if self.witness.as_ref() == Some(node) {
                    let (vip, node) = err(node);
                    return Err(ConfigError::WitnessListed { vip, node });
                }
            }
        }
        Ok(())
    }
}
