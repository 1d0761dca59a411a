//! The per-node state machine: its state, its public API, and how each input changes it.
//! What to do next is decided in `decide.rs` and done in `reconcile.rs`; the protocol and
//! its reasons are in the module docs (`mod.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::placement::{eligible, placement};
use super::state::{FenceTry, Record, Step, VipState};
use super::{Action, Claim, Gossip, Input, NodeState, OwnershipConfig, VipView};
use super::{FENCE_BACKOFF_FIRST, FENCE_BACKOFF_MAX};

/// VIP ownership of one node. See the module docs for the protocol.
///
/// `PartialEq`, `Eq` and `Hash` compare the whole state: the model checker (`vip-verify`)
/// stores and deduplicates explored states of the real machine by them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ownership {
    pub(super) cfg: OwnershipConfig,
    /// Before this instant this node may have missed other nodes' renewals: its start, or
    /// when it last heard a quorum within `margin` again after a break (*Stale view* in the
    /// module docs). The lease-expiry rules count every node as seen no earlier, and
    /// nothing is claimed, adopted or fenced until `lease` after it.
    pub(super) view_since: Instant,
    /// Whether a quorum was heard within `margin` at the last input or tick; `None` until
    /// the first time (a start is not a break: `view_since` is the start then).
    pub(super) fresh_word: Option<bool>,
    /// Latest instant passed in; `next_deadline` and `view` are relative to it.
    pub(super) now: Instant,
    pub(super) alive: BTreeSet<String>,
    /// Last packet from each node (`Input::Heard`): the lease cap's evidence.
    pub(super) heard: BTreeMap<String, Instant>,
    /// Last `Input::Alive` listing each node: later evidence of life than a packet may be.
    pub(super) listed: BTreeMap<String, Instant>,
    pub(super) left: BTreeSet<String>,
    pub(super) fenced: BTreeSet<String>,
    pub(super) fences: BTreeMap<String, FenceTry>,
    pub(super) vips: Vec<VipState>,
    /// Removed VIPs whose last record names this node (released), by name: still re-gossiped
    /// so that a node that missed the release learns it (see `reconfigure.rs`).
    pub(super) retired: BTreeMap<String, Record>,
    /// Since when this node is *active*: membership quorum and a quorum heard within the
    /// lease. Claims wait `lease` (settle) after it and after `view_since`; losing it
    /// releases everything.
    pub(super) quorum_since: Option<Instant>,
    pub(super) next_gossip: Instant,
    pub(super) leaving: bool,
    /// Each node's latest service state ([`Input::NodeState`]), this node's included.
    pub(super) service: BTreeMap<String, NodeState>,
    /// Test-only fault injection, set only by [`Ownership::inject_bug_skip_fresh_word`]:
    /// re-introduces a split-owner bug so the model checker can show it finds it.
    pub(super) bug_skip_fresh_word: bool,
}

impl Ownership {
    /// `config` should have passed [`OwnershipConfig::validate`]; a node that is not a voter
    /// simply never reaches quorum and so never claims.
    pub fn new(config: OwnershipConfig, now: Instant) -> Self {
        Self {
            alive: BTreeSet::from([config.me.clone()]),
            vips: vec![VipState::default(); config.vips.len()],
            retired: BTreeMap::new(),
            cfg: config,
            view_since: now,
            fresh_word: None,
            now,
            heard: BTreeMap::new(),
            listed: BTreeMap::new(),
            left: BTreeSet::new(),
            fenced: BTreeSet::new(),
            fences: BTreeMap::new(),
            quorum_since: None,
            next_gossip: now,
            leaving: false,
            service: BTreeMap::new(),
            bug_skip_fresh_word: false,
        }
    }

    /// **Breaks safety on purpose; for the model checker's teeth test only.** Drops the
    /// *Fresh word* rule (module docs): this node then claims, adopts and fences from a
    /// quorum heard within the lease instead of within `margin`, the split-owner bug the
    /// chaos test once found. No configuration reaches this: only code can call it.
    #[doc(hidden)]
    pub fn inject_bug_skip_fresh_word(&mut self) {
        self.bug_skip_fresh_word = true;
    }

    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        self.now = now;
        let mut out = Vec::new();
        // Time alone may have ended our standing: notice it before fresh evidence (a packet
        // after a silence) hides that we were cut off and must settle again.
        self.update_quorum(now, &mut out);
        let me = self.cfg.me.clone();
        match input {
            Input::Alive(names) => self.on_alive(names, now),
            Input::Dead(n) if n != me => {
                self.alive.remove(&n);
            }
            Input::Left(n) if n != me => {
                self.alive.remove(&n);
                self.vips
                    .iter_mut()
                    .for_each(|v| _ = v.claimants.remove(&n));
                self.left.insert(n);
            }
            Input::Heard(n) if n != me => {
                let t = self.heard.entry(n).or_insert(now);
                *t = (*t).max(now);
            }
            Input::Dead(_) | Input::Left(_) | Input::Heard(_) => {}
            Input::Claim(c) => self.merge(c, false, now, &mut out),
            Input::Released(c) => self.merge(c, true, now, &mut out),
            Input::FenceResult { node, ok } => self.on_fence_result(node, ok, now, &mut out),
            Input::Leave => {
                self.leaving = true;
                let handed = self.hand_over_all(&mut out);
                let released = self.release_all(&mut out);
                out.push(Action::Status(format!(
                    "LEAVING: handed over {handed}; released {released}"
                )));
            }
            Input::Move { vip, to } => self.on_move(vip, to, &mut out),
            Input::NodeState(state) => self.on_node_state(state, &mut out),
            Input::Reconfigure(vips) => self.reconfigure(vips, now, &mut out),
        }
        self.reconcile(now, &mut out);
        out
    }

    /// Renewals, settle end, fencing retries, lease-expiry takeovers, periodic gossip.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        self.now = now;
        let mut out = Vec::new();
        self.reconcile(now, &mut out);
        out
    }

    /// When `tick` next has work (strictly after the last instant passed in).
    pub fn next_deadline(&self) -> Option<Instant> {
        let now = self.now;
        let renewals = self.vips.iter().filter_map(|s| s.held.as_ref());
        let mut due: Vec<Instant> = renewals.map(|h| h.next_renew).collect();
        if !self.leaving {
            due.push(self.next_gossip);
        }
        for i in 0..self.vips.len() {
            if let Step::Settling(t) | Step::WaitLease(_, t) = self.step(i, now) {
                due.push(t);
            }
        }
        due.extend(self.heard_until());
        for node in self.fence_wanted(now).keys() {
            due.extend(
                self.fences
                    .get(node)
                    .filter(|f| !f.in_flight)
                    .map(|f| f.retry_at),
            );
        }
        due.into_iter().filter(|t| *t > now).min()
    }

    pub fn view(&self) -> Vec<VipView> {
        let now = self.now;
        let views = self.cfg.vips.iter().zip(&self.vips).enumerate();
        let view = |(i, (pol, st)): (usize, (&super::VipPolicy, &VipState))| {
            let record = st.record.as_ref();
            VipView {
                vip: pol.name.clone(),
                owner: record.filter(|r| !r.released).map(|r| r.owner.clone()),
                epoch: record.map_or(0, |r| r.epoch),
                lease_left: st
                    .held
                    .as_ref()
                    .map(|h| h.until.saturating_duration_since(now)),
                state: self.describe(i, now),
                in_quorum: self.in_quorum(),
            }
        };
        views.map(view).collect()
    }

    /// More than half of the configured voters are in the alive set, this node included.
    pub fn in_quorum(&self) -> bool {
        let alive = self.cfg.voters.iter().filter(|v| self.alive.contains(*v));
        alive.count() * 2 > self.cfg.voters.len()
    }

    pub fn owned(&self) -> Vec<String> {
        let held = self
            .cfg
            .vips
            .iter()
            .zip(&self.vips)
            .filter(|(_, s)| s.held.is_some());
        held.map(|(p, _)| p.name.clone()).collect()
    }

    /// Why `node` is out of service, if it said it is.
    pub fn out_of_service(&self, node: &str) -> Option<&str> {
        self.service.get(node)?.reason.as_deref()
    }

    /// Every node known to be out of service, with its reason.
    pub fn nodes_out(&self) -> Vec<(String, String)> {
        let out = self.service.values();
        out.filter_map(|s| Some((s.node.clone(), s.reason.clone()?)))
            .collect()
    }

    fn on_node_state(&mut self, state: NodeState, out: &mut Vec<Action>) {
        let known = self.service.get(&state.node);
        if known.is_some_and(|k| k.version >= state.version) {
            return; // old news, or a repeat
        }
        let was = known.and_then(|k| k.reason.clone());
        let (node, reason) = (state.node.clone(), state.reason.clone());
        self.service.insert(node.clone(), state.clone());
        if node != self.cfg.me {
            if was != reason {
                let line = match &reason {
                    Some(r) => format!("{node} is OUT OF SERVICE ({r}): placed elsewhere"),
                    None => format!("{node} is in service again"),
                };
                out.push(Action::Status(line));
            }
            return;
        }
        out.push(Action::Broadcast(Gossip::NodeState(state)));
        match (was, reason) {
            (None, Some(r)) => {
                let handed = self.hand_over_all(out);
                out.push(Action::Status(format!(
                    "OUT OF SERVICE ({r}): handed over {handed}"
                )));
            }
            (Some(_), None) => out.push(Action::Status("IN SERVICE again".into())),
            _ => {}
        }
    }

    /// Alive nodes that are in service: where VIPs may be placed.
    pub(super) fn in_service(&self) -> Vec<String> {
        let alive = self.alive.iter();
        alive
            .filter(|n| self.out_of_service(n).is_none())
            .cloned()
            .collect()
    }

    fn on_alive(&mut self, names: Vec<String>, now: Instant) {
        let mut alive: BTreeSet<String> = names.into_iter().collect();
        alive.insert(self.cfg.me.clone());
        if alive.iter().any(|n| !self.alive.contains(n)) {
            // A joiner needs every record before its settle time ends: send them now.
            self.next_gossip = now;
        }
        for n in alive.iter().filter(|n| **n != self.cfg.me) {
            // Seen alive again: a past leave or fence says nothing about its next death.
            self.left.remove(n);
            self.fenced.remove(n);
            self.fences.remove(n);
            self.listed.insert(n.clone(), now);
        }
        self.alive = alive;
    }

    fn merge(&mut self, c: Claim, released: bool, now: Instant, out: &mut Vec<Action>) {
        let Some(i) = self.cfg.vips.iter().position(|v| v.name == c.vip) else {
            self.merge_unknown(c, released, out);
            return;
        };
        let (me, st) = (&self.cfg.me, &mut self.vips[i]);
        let claimed = st.claimants.get(&c.owner).map(|(e, _)| *e);
        match (released, claimed) {
            (false, Some(e)) if c.epoch < e => {} // older news of a newer claim
            (false, _) if c.owner != *me => {
                st.claimants.insert(c.owner.clone(), (c.epoch, now));
            }
            (true, Some(e)) if e <= c.epoch => {
                st.claimants.remove(&c.owner);
            }
            _ => {}
        }
        let new = Record {
            epoch: c.epoch,
            owner: c.owner,
            released,
        };
        if st.record.as_ref().is_some_and(|old| old.key() >= new.key()) {
            return;
        }
        // Our own record is the one held, so anything newer beats it.
        if let Some(h) = st.held.take() {
            let gone = Record {
                epoch: h.epoch,
                owner: me.clone(),
                released: true,
            };
            out.push(Action::Release {
                vip: c.vip.clone(),
                epoch: h.epoch,
            });
            // Tell whoever still counts us as a claimant that we stopped serving.
            out.push(Action::Broadcast(Gossip::Released(gone.claim(&c.vip))));
            out.push(Action::Status(format!(
                "vip {}: LOST to {} (epoch {} beats mine, {}): released",
                c.vip, new.owner, new.epoch, h.epoch
            )));
        }
        let mine = new.owner == *me && !new.released;
        st.record = Some(new);
        // A live claim in our name that we do not hold: a move's handover, or a previous
        // incarnation's claim. Adopted by `reconcile` once safe, if we can serve it at all.
        let settled = self.settle_end(i).is_some_and(|end| now >= end);
        if mine && !(settled && !self.leaving && self.usable(i, &self.cfg.me)) {
            self.disown(i, out);
        }
    }

    fn on_fence_result(&mut self, node: String, ok: bool, now: Instant, out: &mut Vec<Action>) {
        if self.alive.contains(&node) {
            return; // back alive: the outcome no longer matters
        }
        if ok {
            self.fences.remove(&node);
            out.push(Action::Status(format!(
                "FENCED {node}: its VIPs may be taken over"
            )));
            self.fenced.insert(node);
            return;
        }
        let waiting = self.fence_wanted(now).remove(&node).unwrap_or_default();
        let f = self.fences.entry(node.clone()).or_insert(FenceTry {
            failures: 0,
            in_flight: false,
            retry_at: now,
        });
        f.failures = f.failures.saturating_add(1);
        f.in_flight = false;
        let backoff = FENCE_BACKOFF_FIRST
            .saturating_mul(1 << (f.failures - 1).min(16))
            .min(FENCE_BACKOFF_MAX);
        f.retry_at = now + backoff;
        let waiting = match waiting.is_empty() {
            true => "no vip waits on it".to_string(),
            false => format!("vip {} stays unowned", waiting.join(", ")),
        };
        let n = f.failures;
        out.push(Action::Status(format!(
            "FENCING {node} FAILED (attempt {n}), retry in {backoff:?}: {waiting}"
        )));
    }

    /// The owner hands the VIP over: it releases, then claims the next epoch *in the target's
    /// name*, which the target adopts. Every node thus learns one record, so views cannot
    /// diverge as they could if each node pinned the target itself. Other nodes forward the
    /// move to the owner, once per owner epoch.
    fn on_move(&mut self, vip: String, to: String, out: &mut Vec<Action>) {
        let Some(i) = self.cfg.vips.iter().position(|v| v.name == vip) else {
            out.push(Action::Status(format!("MOVE refused: unknown vip {vip}")));
            return;
        };
        let refuse = |why: String| Action::Status(format!("MOVE {vip} -> {to} refused: {why}"));
        let witness = self.cfg.witness.as_deref();
        if !eligible(&self.cfg.vips[i], &to, &self.cfg.voters, witness) {
            out.push(refuse("not eligible".into()));
            return;
        }
        let me = self.cfg.me.clone();
        let Some(r) = self.vips[i].record.clone().filter(|r| !r.released) else {
            out.push(refuse("not owned: placement decides".into()));
            return;
        };
        if r.owner == to || self.vips[i].forwarded == Some((to.clone(), r.epoch)) {
            return; // done, or already forwarded: re-delivered gossip must not loop
        }
        if r.owner != me {
            if !self.alive.contains(&r.owner) {
                out.push(refuse(format!("owner {} is not alive", r.owner)));
                return;
            }
            self.vips[i].forwarded = Some((to.clone(), r.epoch));
            let line = format!("MOVE {vip} -> {to}: forwarded to its owner {}", r.owner);
            out.push(Action::Status(line));
            out.push(Action::Broadcast(Gossip::Move { vip, to }));
            return;
        }
        if let Some(why) = self.out_of_service(&to) {
            out.push(refuse(format!("{to} is out of service ({why})")));
            return;
        }
        if self.vips[i].held.is_none() || !self.alive.contains(&to) {
            out.push(refuse(format!("{to} is not alive here")));
            return;
        }
        let epoch = self.hand_over(i, &to, out);
        let line = format!("MOVE {vip} -> {to}: handed over, epoch {epoch}");
        out.push(Action::Status(line));
    }

    /// Hands a held VIP over to `to`: the next epoch's claim in its name, then our release
    /// (see [`Action::HandOver`]). Returns the new epoch; nothing happens when not held.
    pub(super) fn hand_over(&mut self, i: usize, to: &str, out: &mut Vec<Action>) -> u64 {
        let (vip, me) = (self.cfg.vips[i].name.clone(), self.cfg.me.clone());
        let Some(held) = self.vips[i].held.take() else {
            return self.vips[i].record.as_ref().map_or(0, |r| r.epoch);
        };
        let next = Record {
            epoch: held.epoch + 1,
            owner: to.to_string(),
            released: false,
        };
        let gone = Record {
            epoch: held.epoch,
            owner: me,
            released: true,
        };
        out.push(Action::HandOver {
            vip: vip.clone(),
            epoch: held.epoch,
            to: to.to_string(),
        });
        // The target's claim first: a bare "released" would let a third node claim.
        out.push(Action::Broadcast(Gossip::Claim(next.claim(&vip))));
        out.push(Action::Broadcast(Gossip::Released(gone.claim(&vip))));
        self.vips[i].record = Some(next);
        held.epoch + 1
    }

    /// Leaving or going out of service: every held VIP goes where placement puts it among
    /// the other alive, in-service nodes. VIPs with no eligible node left stay held (the
    /// caller, or the next reconcile, releases them).
    fn hand_over_all(&mut self, out: &mut Vec<Action>) -> String {
        let others: Vec<String> = (self.in_service().into_iter())
            .filter(|n| *n != self.cfg.me)
            .collect();
        let witness = self.cfg.witness.clone();
        let mut handed = Vec::new();
        for i in 0..self.vips.len() {
            if self.vips[i].held.is_none() {
                continue;
            }
            let pol = &self.cfg.vips[i];
            let name = pol.name.clone();
            let Some(to) = placement(pol, &others, &self.cfg.voters, witness.as_deref()) else {
                continue;
            };
            let epoch = self.hand_over(i, &to, out);
            handed.push(format!("{name} -> {to} (epoch {epoch})"));
        }
        match handed.is_empty() {
            true => "nothing".into(),
            false => format!("vip {}", handed.join(", ")),
        }
    }
}
