//! Read-only decisions: what this node should do about each VIP, where a VIP belongs, and
//! how long a lease this node may grant itself.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::placement::{eligible, placement};
use super::state::{Record, Step};
use super::Ownership;

impl Ownership {
    /// [`Self::decide`], but a claim also waits until every other recent claimant is
    /// accounted for (see `VipState::claimants`).
    pub(super) fn step(&self, i: usize, now: Instant) -> Step {
        match self.decide(i, now) {
            claim @ (Step::Claim { .. } | Step::Adopt) => {
                self.claimant_blocking(i, now).unwrap_or(claim)
            }
            step => step,
        }
    }

    /// Whoever may be serving this VIP without our knowing, as the step to wait for it.
    fn claimant_blocking(&self, i: usize, now: Instant) -> Option<Step> {
        let (st, pol) = (&self.vips[i], &self.cfg.vips[i]);
        let owner = st.record.as_ref().filter(|r| !r.released).map(|r| &r.owner);
        let cleared = |x: &String| {
            // The owner's takeover rules already applied.
            Some(x) == owner
                || *x == self.cfg.me
                || self.left.contains(x)
                || self.fenced.contains(x)
        };
        let wait = self.cfg.lease + self.cfg.margin;
        // Claims we heard of and were not told were given up.
        let floor = self.seen_floor(now);
        for (x, (_, seen)) in st.claimants.iter().filter(|(x, _)| !cleared(x)) {
            let until = (*seen).max(floor) + wait;
            if now < until {
                return Some(match pol.fencing && !self.alive.contains(x) {
                    true => Step::Fence(x.clone()),
                    false => Step::WaitLease(x.clone(), until),
                });
            }
        }
        // Claims we may never have heard of: a voter that vanished may have claimed from its
        // stale view just before; its lease cap ends that by its last word + lease.
        let witness = self.cfg.witness.as_deref();
        let voters = &self.cfg.voters;
        let vanished = voters
            .iter()
            .filter(|x| !self.alive.contains(*x) && !cleared(x));
        for x in vanished.filter(|x| eligible(pol, x, voters, witness)) {
            let at = self.last_seen(x, now) + wait;
            if now < at {
                return Some(Step::WaitLease(x.clone(), at));
            }
        }
        None
    }

    /// The latest evidence that `node` was alive: a packet, the alive set, or
    /// [`Self::seen_floor`].
    fn last_seen(&self, node: &str, now: Instant) -> Instant {
        let seen = [self.heard.get(node), self.listed.get(node)];
        seen.into_iter()
            .flatten()
            .fold(self.seen_floor(now), |a, b| a.max(*b))
    }

    /// The earliest any node counts as last seen by the lease-expiry rules (*Stale view* in
    /// the module docs): our start or the end of our last break in fresh word (before it we
    /// know nothing, or may have missed renewals), and `now` during a break (we cannot tell
    /// who still renews with the rest of the quorum).
    pub(super) fn seen_floor(&self, now: Instant) -> Instant {
        match self.fresh_word {
            Some(false) => now,
            _ => self.view_since,
        }
    }

    fn decide(&self, i: usize, now: Instant) -> Step {
        if self.leaving || self.quorum_since.is_none() {
            return Step::Idle;
        }
        let (me, st, pol) = (&self.cfg.me, &self.vips[i], &self.cfg.vips[i]);
        let mine = self.target(i).as_ref() == Some(me);
        match (st.held.is_some(), mine) {
            (true, true) => return Step::Hold,
            (true, false) => return Step::Release,
            (false, false) => return Step::Idle,
            (false, true) => {}
        }
        if let Some(end) = self.settle_end(i).filter(|e| now < *e) {
            return Step::Settling(end);
        }
        let unowned = Step::Claim {
            from: None,
            why: "unowned",
        };
        let Some(r) = st.record.as_ref() else {
            return unowned;
        };
        if r.owner == *me {
            return if r.released { unowned } else { Step::Adopt };
        }
        let (from, o) = (Some(r.owner.clone()), &r.owner);
        if r.released {
            Step::Claim {
                from,
                why: "released",
            }
        } else if self.alive.contains(o) {
            Step::WaitOwner(o.clone())
        } else if self.left.contains(o) {
            Step::Claim {
                from,
                why: "it left",
            }
        } else if pol.fencing && self.fenced.contains(o) {
            Step::Claim {
                from,
                why: "fenced",
            }
        } else if pol.fencing {
            Step::Fence(o.clone())
        } else {
            let expired = self.last_seen(o, now) + self.cfg.lease + self.cfg.margin;
            match now >= expired {
                true => Step::Claim {
                    from,
                    why: "its lease expired",
                },
                false => Step::WaitLease(o.clone(), expired),
            }
        }
    }

    /// When VIP `i` may first be claimed or adopted: `lease` after this node became active,
    /// after it last heard a quorum again after a break (*Stale view*), or after the VIP was
    /// added here, whichever was last. `None` while not active.
    pub(super) fn settle_end(&self, i: usize) -> Option<Instant> {
        let active = self.quorum_since?.max(self.view_since);
        let since = self.vips[i].added.map_or(active, |added| added.max(active));
        Some(since + self.cfg.lease)
    }

    /// Sticky placement: the alive eligible owner, else [`placement`].
    pub(super) fn target(&self, i: usize) -> Option<String> {
        let st = &self.vips[i];
        let sticky = |r: &&Record| !r.released && self.usable(i, &r.owner);
        if let Some(r) = st.record.as_ref().filter(sticky) {
            return Some(r.owner.clone());
        }
        placement(
            &self.cfg.vips[i],
            &self.in_service(),
            &self.cfg.voters,
            self.cfg.witness.as_deref(),
        )
    }

    pub(super) fn usable(&self, i: usize, node: &str) -> bool {
        let (pol, voters, witness) = (
            &self.cfg.vips[i],
            &self.cfg.voters,
            self.cfg.witness.as_deref(),
        );
        self.alive.contains(node)
            && eligible(pol, node, voters, witness)
            && self.out_of_service(node).is_none()
    }

    /// Dead nodes this node must fence before a takeover, with the VIPs waiting on each.
    pub(super) fn fence_wanted(&self, now: Instant) -> BTreeMap<String, Vec<String>> {
        let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for i in 0..self.vips.len() {
            if let Step::Fence(node) = self.step(i, now) {
                wanted
                    .entry(node)
                    .or_default()
                    .push(self.cfg.vips[i].name.clone());
            }
        }
        wanted
    }

    /// The lease we may grant ourselves: `lease` from now, but never more than `lease` past the
    /// moment we last heard from enough voters to make a quorum with us (see module docs).
    pub(super) fn lease_until(&self, now: Instant) -> Option<Instant> {
        let own = now + self.cfg.lease;
        let until = match self.votes_needed() {
            0 => own,
            _ => own.min(self.heard_until()?),
        };
        (until > now).then_some(until)
    }

    /// `lease` after we last heard from enough voters to make a quorum with us; `None` when
    /// we never did, or need nobody (a one-voter cluster).
    pub(super) fn heard_until(&self) -> Option<Instant> {
        let need = self.votes_needed().checked_sub(1)?;
        let (voters, me) = (&self.cfg.voters, &self.cfg.me);
        let heard = voters
            .iter()
            .filter(|v| *v != me)
            .filter_map(|v| self.heard.get(v));
        let mut heard: Vec<Instant> = heard.copied().collect();
        heard.sort_unstable_by(|a, b| b.cmp(a));
        heard.get(need).map(|t| *t + self.cfg.lease)
    }

    /// Whether a quorum spoke to us within `margin`: required to claim, adopt or fence. A
    /// node cut off from the others keeps a stale view until its failure detector notices,
    /// and membership declares peers dead one at a time: a cut-off node briefly "has quorum"
    /// with a peer it cannot reach either, and must not fence or claim from that view (the
    /// chaos test caught one fencing a healthy majority node). Safe while `margin` is
    /// shorter than failure detection.
    pub(super) fn fresh(&self, now: Instant) -> bool {
        let (lease, margin) = (self.cfg.lease, self.cfg.margin);
        if self.bug_skip_fresh_word {
            return true; // see `Ownership::inject_bug_skip_fresh_word`
        }
        self.votes_needed() == 0
            || self
                .heard_until()
                .is_some_and(|u| u + margin >= now + lease)
    }

    /// Other voters that must vouch for us to make a quorum.
    pub(super) fn votes_needed(&self) -> usize {
        let (voters, me) = (&self.cfg.voters, &self.cfg.me);
        (voters.len() / 2 + 1).saturating_sub(usize::from(voters.contains(me)))
    }

    pub(super) fn renew_every(&self) -> Duration {
        (self.cfg.lease / 3).max(Duration::from_millis(1))
    }

    pub(super) fn describe(&self, i: usize, now: Instant) -> String {
        let left = |t: Instant| t.saturating_duration_since(now);
        match self.step(i, now) {
            Step::Idle if self.leaving => "left the cluster".into(),
            Step::Idle if !self.in_quorum() => "no quorum: claiming nothing".into(),
            Step::Idle if self.quorum_since.is_none() => {
                "no quorum heard within the lease: claiming nothing".into()
            }
            Step::Idle if self.out_of_service(&self.cfg.me).is_some() => {
                let why = self.out_of_service(&self.cfg.me).unwrap_or_default();
                format!("out of service here ({why})")
            }
            Step::Idle => match self.target(i) {
                Some(t) => format!("placed on {t}"),
                None => "no eligible node alive".into(),
            },
            Step::Hold => "held here".into(),
            Step::Release => "handing over".into(),
            Step::Settling(t) => format!("settling, {:?} before claiming", left(t)),
            Step::Claim { .. } | Step::Adopt | Step::Fence(_) if !self.fresh(now) => {
                "waiting to hear from a quorum within the margin".into()
            }
            Step::Adopt => "moved here: adopting".into(),
            Step::Claim { .. } => "claiming".into(),
            Step::WaitOwner(o) => match self.out_of_service(&o) {
                Some(why) => format!("waiting for {o} to hand it over (out of service: {why})"),
                None => format!("waiting for {o} to release it (not eligible there)"),
            },
            Step::WaitLease(o, t) if self.alive.contains(&o) => {
                format!("waiting {:?} for {o} to give up its older claim", left(t))
            }
            Step::WaitLease(o, t) => format!("waiting {:?} for {o}'s lease to expire", left(t)),
            Step::Fence(o) => match self.fences.get(&o) {
                Some(f) if f.in_flight => format!("fencing {o}: in flight"),
                Some(f) => format!(
                    "fencing {o} FAILED {}x, retry in {:?}",
                    f.failures,
                    left(f.retry_at)
                ),
                None => format!("fencing {o}: pending"),
            },
        }
    }
}
