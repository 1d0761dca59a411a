//! The loop's side of `core::precompute`: which steps to ask the worker
//! (`shell::precompute`) for, storing what it returns, and taking a step when a verdict
//! needs it.
use crate::{
    config::Selection,
    core::precompute::{self, Step, Weights},
    shell::precompute::{Done, Job, Kind},
};

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use crate::shell::dataplane::{Prepare, RETIRE_GRACE};

use super::Daemon;

/// Tokens of steps written ahead: unique in the process, so that a token never names
/// another step's write (VIP positions change with reloads).
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

/// Steps of a predicted chain computed ahead.
const CHAIN_AHEAD: usize = 2;

/// Slots of a write ahead per turn of the loop: ~20 us.
const PREPARE_PIECE: usize = 4096;

/// Precomputing costs one Maglev build per backend and step; above this many backends a VIP
/// builds on demand instead.
const PRECOMPUTE_MAX_BACKENDS: usize = 64;

impl Daemon {
    /// The step from the live table to the table of `weights`, if one was computed (taken:
    /// the live table moves on).
    pub(super) fn take_step(&mut self, vip: usize, weights: &Weights) -> Option<Step> {
        let selection = self.plan.vips[vip].selection;
        let rt = &mut self.vips[vip];
        if selection != Selection::Maglev || rt.generation.is_none() {
            return None;
        }
        rt.steps.take(&rt.basis, weights)
    }

    /// Asks the precompute worker for the steps the VIP's next verdicts will want, unless
    /// they are computed or asked for already (Maglev VIPs up to PRECOMPUTE_MAX_BACKENDS).
    pub(super) fn precompute(&mut self, vip: usize) {
        let v = &self.plan.vips[vip];
        let rt = &self.vips[vip];
        if v.selection != Selection::Maglev
            || v.backends.len() > PRECOMPUTE_MAX_BACKENDS
            || rt.generation.is_none()
            || rt.basis.len() != v.backends.len()
        {
            return;
        }
        let expected = self.expected_verdicts(vip);
        let mut wanted = precompute::predicted_chain(&rt.basis, &expected);
        // The next steps only: a chain of ten builds for one VIP held the worker while other
        // VIPs' first steps came due (built on the loop then, a millisecond each).
        wanted.truncate(CHAIN_AHEAD);
        let shared = precompute::shared_chain(&rt.steps.chain, &wanted);
        let rt = &mut self.vips[vip];
        let stale = rt.steps.chain.split_off(shared.min(rt.steps.chain.len()));
        self.precompute.discard(stale);
        let rt = &mut self.vips[vip];
        if shared < wanted.len() {
            let from = rt.steps.chain_end(&rt.basis).clone();
            let targets = wanted[shared..].to_vec();
            let ask = Some((from.clone(), targets.clone()));
            if rt.asked_chain != ask {
                rt.asked_chain = ask;
                // Each step of the chain changes one backend's weight: the first one's
                // expected verdict is when this job is due.
                let changed = (0..from.len()).find(|&p| from[p] != targets[0][p]);
                let due = (expected.iter())
                    .find(|e| Some(e.pos) == changed)
                    .map(|e| e.at);
                self.submit(vip, Kind::Chain, due, from, targets);
            }
        }
        let rt = &mut self.vips[vip];
        if let Some(targets) = precompute::swapped_pair(&rt.basis, &expected) {
            let computed =
                (rt.steps.swaps.first()).is_some_and(|s| s.from == rt.basis && s.to == targets[0]);
            let ask = (rt.basis.clone(), targets);
            if !computed && rt.asked_swap.as_ref() != Some(&ask) {
                rt.asked_swap = Some(ask.clone());
                let due = expected.iter().map(|e| e.at).min();
                self.submit(vip, Kind::Swap, due, ask.0, ask.1);
            }
        }
        let rt = &mut self.vips[vip];
        if rt.steps.singles.is_empty() && rt.asked_singles.as_ref() != Some(&rt.basis) {
            let basis = rt.basis.clone();
            rt.asked_singles = Some(basis.clone());
            let targets = precompute::singles(&basis);
            self.submit(vip, Kind::Singles, None, basis, targets);
        }
    }

    fn submit(
        &self,
        vip: usize,
        kind: Kind,
        due: Option<Instant>,
        from: Weights,
        targets: Vec<Weights>,
    ) {
        if targets.is_empty() {
            return;
        }
        self.precompute.submit(Job {
            vip,
            kind,
            due,
            plan: self.plan.vips[vip].clone(),
            seed: self.plan.seed,
            from,
            targets,
        });
    }

    /// The verdicts this VIP's backends will most likely reach at their next probe: those
    /// one result short of flipping whose last result points that way. Cluster mode's
    /// majority verdicts are not predicted (they come from other nodes too).
    fn expected_verdicts(&self, vip: usize) -> Vec<precompute::Expected> {
        let v = &self.plan.vips[vip];
        v.backends
            .iter()
            .enumerate()
            .filter_map(|(pos, b)| {
                let rt = &self.backends[b.index as usize];
                let (last, _) = rt.last_probe.as_ref()?;
                let at = self.probers.get(b.index as usize)?.as_ref()?.next_at?;
                if rt.cluster_health.is_some() {
                    return None;
                }
                // The backend as it will be if its next probe says what its last one did.
                let mut then = rt.clone();
                then.health.on_result(at, last.ok)?;
                let weight = then.effective_weight(&b.conf);
                Some(precompute::Expected { pos, at, weight })
            })
            .collect()
    }

    pub(super) fn on_precomputed(&mut self, done: Done) {
        let Some(v) = self.plan.vips.get(done.vip) else {
            return;
        };
        if !done.still_for(v) {
            return;
        }
        let rt = &mut self.vips[done.vip];
        match done.kind {
            // Continues the chain where it ends now, or replaces it from the live table.
            Kind::Chain if done.from == rt.basis => {
                let old = std::mem::replace(&mut rt.steps.chain, done.steps);
                self.precompute.discard(old);
            }
            Kind::Chain if &done.from == rt.steps.chain_end(&rt.basis) => {
                rt.steps.chain.extend(done.steps)
            }
            Kind::Singles if done.from == rt.basis => rt.steps.singles = done.steps,
            Kind::Swap if done.from == rt.basis => {
                let old = std::mem::replace(&mut rt.steps.swaps, done.steps);
                self.precompute.discard(old);
            }
            _ => {}
        }
        if done.kind == Kind::Chain {
            self.want_prepare(done.vip);
        }
    }

    /// Asks for the VIP's next predicted step to be written ahead once the generation it
    /// goes to is out of its grace (`prepare_due`).
    pub(super) fn want_prepare(&mut self, vip: usize) {
        self.vips[vip].prepare_wanted = true;
        let at = Instant::now() + RETIRE_GRACE;
        self.prepare_at = Some(self.prepare_at.map_or(at, |a| a.min(at)));
    }

    /// Writes the next predicted step of one VIP that wants it into its inactive table
    /// generation, so that its verdict only flips the live one (a patch of tens of thousands
    /// of slots held the loop, and the verdicts behind it, for hundreds of microseconds).
    /// One piece of one VIP's write per turn of the loop (`PREPARE_PIECE` slots): a verdict
    /// waits for a piece at most.
    pub(super) fn prepare_due(&mut self) {
        self.prepare_at = None;
        let mut retry: Option<Instant> = None;
        let mut wrote = false;
        for vip in 0..self.vips.len() {
            if !self.vips[vip].prepare_wanted {
                continue;
            }
            if wrote {
                self.prepare_at = Some(Instant::now());
                break;
            }
            let region = self.plan.vips[vip].region;
            let rt = &mut self.vips[vip];
            let next =
                (rt.steps.chain.first()).filter(|s| s.from == rt.basis && !s.diff.is_empty());
            let Some(step) = next else {
                rt.prepare_wanted = false;
                continue;
            };
            if rt.prepared.as_ref().is_some_and(|(_, to)| *to == step.to) {
                rt.prepare_wanted = false;
                continue;
            }
            // The write under way goes on; another step starts a new one.
            let token = match &rt.preparing {
                Some((token, to)) if *to == step.to => *token,
                _ => NEXT_TOKEN.fetch_add(1, Ordering::Relaxed),
            };
            // A new write overwrites what the inactive generation held ahead.
            if rt.preparing.as_ref().map(|(t, _)| *t) != Some(token) {
                rt.prepared = None;
            }
            rt.preparing = Some((token, step.to.clone()));
            match (self.maps).prepare_table(&region, &step.diff, token, PREPARE_PIECE) {
                Ok(Prepare::Done) => {
                    rt.prepared = rt.preparing.take();
                    rt.prepare_wanted = false;
                    wrote = true;
                }
                Ok(Prepare::More) => {
                    self.prepare_at = Some(Instant::now());
                    break;
                }
                // In its grace: again when it is over.
                Ok(Prepare::NotNow) => retry = Some(Instant::now() + RETIRE_GRACE),
                Err(e) => {
                    rt.preparing = None;
                    rt.prepare_wanted = false;
                    tracing::debug!(vip = %self.plan.vips[vip].name, error = %e, "writing a step ahead failed");
                }
            }
        }
        if let Some(at) = retry {
            self.prepare_at = Some(self.prepare_at.map_or(at, |a| a.min(at)));
        }
    }
}
