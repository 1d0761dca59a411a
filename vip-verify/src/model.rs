//! The world: nodes running the real machine, the gossip bag, membership, faults. Every
//! stateright action is one tick of real time or one fault; see the crate docs.

use std::collections::BTreeSet;

use vip_daemon::core::ownership::{Gossip, Input, OwnershipConfig, VipPolicy};

use crate::actor::{Effects, Node};
use crate::network::{self, Msg};
use crate::Setup;

pub const VIP: &str = "vip";

pub fn name(n: u8) -> String {
    format!("n{n}")
}

/// Safety facts seen on the way (properties read them; see `properties.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Seen {
    pub epoch_back: bool,
    pub claim_without_quorum: bool,
    pub claim_over_owner: bool,
    /// The owner changed after the cluster had been calm for the bound.
    pub moved_when_calm: bool,
    /// Some node claimed over an earlier epoch (a takeover or a handover happened).
    pub takeover: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct World {
    /// Real time, in ticks.
    pub t: u32,
    pub nodes: Vec<Node>,
    pub net: Vec<Msg>,
    /// Nodes cut off from the rest (a bitmask); both directions, probes included.
    pub cut: u8,
    /// Faults spent of the budget.
    pub faults: u8,
    /// Ticks since the last fault or repair, with no partition and a quorum running.
    pub calm: u8,
    /// The owner once calm reached the bound: it must not change while calm lasts.
    pub calm_owner: Option<u8>,
    /// Consecutive ticks with two owners or more.
    pub overlap: u8,
    pub seen: Seen,
}

/// One step of the model: a tick of real time, or a fault (spends the budget), or a repair.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// Real time advances one tick; `slow` names a node whose clock stands still (drift).
    Tick {
        slow: Option<u8>,
    },
    /// A node's clock jumps one tick ahead (catching up its lag).
    Jump(u8),
    Drop(u8),
    Delay(u8),
    /// Deliver a message now, before the others (reordering).
    Deliver(u8),
    /// Deliver a message now and keep it for the tick too (duplication).
    Dup(u8),
    /// Cut a node off from all others (both directions).
    Cut(u8),
    Heal,
    /// False suspicion: membership tells `at` that `whom` is dead; refuted next tick.
    Suspect {
        at: u8,
        whom: u8,
    },
    /// `at`'s failure detector is late: its membership view is not updated next tick.
    Stall(u8),
    Crash(u8),
    /// A stopped daemon starts afresh (see `actor.rs` for what survives).
    Restart(u8),
    /// `vipd leave`, then the daemon stops.
    Leave(u8),
    Move {
        via: u8,
        to: u8,
    },
    /// The hook run by `by` fails.
    FenceFail(u8),
    /// The hook run by `by` hangs until the shell's timeout (reported as a failure).
    FenceHang(u8),
}

/// Ticks a hung fencing hook takes before the shell's timeout reports it failed.
const HANG: u8 = 3;

impl Setup {
    pub fn config(&self, me: u8) -> OwnershipConfig {
        let voters = (0..self.nodes as u8).map(name).collect();
        OwnershipConfig {
            me: name(me),
            voters,
            witness: None,
            lease: crate::clocks::TICK * self.lease,
            margin: crate::clocks::TICK * self.margin,
            vips: vec![VipPolicy {
                name: VIP.into(),
                preferences: vec![],
                allowed: None,
                fencing: self.fencing,
            }],
        }
    }

    fn majority(&self) -> usize {
        self.nodes / 2 + 1
    }

    fn node(&self, me: u8, local: u32) -> Node {
        let mut node = Node::new(self.config(me), local, self.nodes);
        if self.bug {
            node.own
                .as_mut()
                .expect("running")
                .inject_bug_skip_fresh_word();
        }
        node
    }

    /// A formed cluster at t = 0: membership converged, everyone heard everyone.
    pub fn cold(&self) -> World {
        let n = self.nodes as u8;
        let mut w = World {
            t: 0,
            nodes: (0..n).map(|i| self.node(i, 0)).collect(),
            net: vec![],
            cut: 0,
            faults: 0,
            calm: 0,
            calm_owner: None,
            overlap: 0,
            seen: Seen::default(),
        };
        let mut fx = Effects::default();
        for a in 0..n {
            let all: BTreeSet<u8> = (0..n).collect();
            w.nodes[a as usize].view = all.clone();
            w.nodes[a as usize].contact = vec![Some(0); self.nodes];
            w.nodes[a as usize].packet = vec![Some(0); self.nodes];
            let names = all.iter().map(|b| name(*b)).collect();
            self.feed(&mut w, a, Some(Input::Alive(names)), &mut fx);
            for b in (0..n).filter(|b| *b != a) {
                self.feed(&mut w, a, Some(Input::Heard(name(b))), &mut fx);
            }
        }
        w
    }

    /// The cold start run without faults until the VIP has been served for a tick.
    pub fn warm(&self) -> World {
        let mut w = self.cold();
        let mut served = 0;
        while served < 2 {
            w = self.next(&w, &Step::Tick { slow: None }, &mut Effects::default());
            if w.nodes.iter().any(|n| n.serving(w.t)) {
                served += 1;
            }
            assert!(w.t < 50, "the warm-up never claimed");
        }
        w.calm = 0;
        w
    }

    pub fn connected(&self, w: &World, a: u8, b: u8) -> bool {
        (w.cut >> a & 1) == (w.cut >> b & 1)
    }

    /// Feeds node `a` and routes what it did.
    pub fn feed(&self, w: &mut World, a: u8, input: Option<Input>, fx: &mut Effects) {
        let t = w.t;
        let mut mine = Effects {
            verbose: fx.verbose,
            ..Effects::default()
        };
        w.nodes[a as usize].feed(a, input, t, &mut mine);
        fx.log.append(&mut mine.log);
        w.seen.epoch_back |= mine.epoch_back;
        if let Some(epoch) = mine.claimed {
            self.check_claim(w, a, epoch, fx);
        }
        for (from, g) in mine.broadcasts {
            let input = match g {
                Gossip::Claim(c) => Input::Claim(c),
                Gossip::Released(c) => Input::Released(c),
                Gossip::Move { vip, to } => Input::Move { vip, to },
                Gossip::NodeState(s) => Input::NodeState(s),
            };
            for to in (0..self.nodes as u8).filter(|b| *b != from) {
                // Lost at once when it cannot arrive: keeps the bag small.
                if w.nodes[to as usize].own.is_some() && self.connected(w, from, to) {
                    let (input, delayed) = (input.clone(), false);
                    network::push(
                        &mut w.net,
                        Msg {
                            from,
                            to,
                            input,
                            delayed,
                        },
                    );
                }
            }
        }
    }

    /// A claim (or adoption) by `a`: nobody else may still own the VIP, and `a` must have
    /// a quorum both in its own view and in fact: packets from a majority (itself included)
    /// received within `margin` on its clock, so within `margin + drift` real ticks.
    fn check_claim(&self, w: &mut World, a: u8, epoch: u64, fx: &mut Effects) {
        let t = w.t;
        let others = (w.nodes.iter().enumerate()).filter(|(i, _)| *i != a as usize);
        if others.filter(|(_, m)| m.serving(t)).count() > 0 {
            w.seen.claim_over_owner = true;
            fx.log.push(format!(
                "!! n{a} claimed epoch {epoch} while another node serves"
            ));
        }
        let node = &w.nodes[a as usize];
        let heard = node.packet.iter().enumerate().filter(|(b, c)| {
            *b == a as usize || c.is_some_and(|c| c + self.margin + u32::from(self.drift) >= t)
        });
        let in_view = node.own.as_ref().is_some_and(|o| o.in_quorum());
        if !in_view || heard.count() < self.majority() {
            w.seen.claim_without_quorum = true;
            fx.log.push(format!("!! n{a} claimed without a quorum"));
        }
        if epoch > 1 {
            w.seen.takeover = true;
        }
    }

    fn deliver(&self, w: &mut World, m: Msg, fx: &mut Effects) {
        let to = &w.nodes[m.to as usize];
        if to.own.is_none() || !self.connected(w, m.from, m.to) {
            return;
        }
        w.nodes[m.to as usize].packet[m.from as usize] = Some(w.t);
        self.feed(w, m.to, Some(Input::Heard(name(m.from))), fx);
        self.feed(w, m.to, Some(m.input), fx);
    }

    fn tick(&self, w: &mut World, slow: Option<u8>, fx: &mut Effects) {
        w.t += 1;
        let (t, n) = (w.t, self.nodes as u8);
        // What was sent before this tick arrives in it; what it causes, at the next.
        let due = network::due(&mut w.net);
        if let Some(s) = slow {
            w.nodes[s as usize].lag += 1;
        }
        // Fencing hooks finish.
        for a in 0..n {
            let node = &mut w.nodes[a as usize];
            node.hooks
                .iter_mut()
                .for_each(|h| h.left = h.left.saturating_sub(1));
            let (done, pending) = node.hooks.drain(..).partition(|h| h.left == 0);
            node.hooks = pending;
            for h in done {
                if h.ok {
                    // STONITH: the target is powered off, data plane included.
                    let m = &mut w.nodes[h.target as usize];
                    (m.own, m.off, m.addr, m.lease) = (None, true, false, None);
                    m.hooks.clear();
                    fx.log.push(format!("   fencing powers n{} off", h.target));
                }
                let input = Input::FenceResult {
                    node: name(h.target),
                    ok: h.ok,
                };
                self.feed(w, a, Some(input), fx);
            }
        }
        // Membership probes between connected running daemons.
        for a in 0..n {
            for b in (0..n).filter(|b| *b != a) {
                let up = |i: u8| w.nodes[i as usize].own.is_some();
                if up(a) && up(b) && self.connected(w, a, b) {
                    let node = &mut w.nodes[a as usize];
                    (node.contact[b as usize], node.packet[b as usize]) = (Some(t), Some(t));
                    self.feed(w, a, Some(Input::Heard(name(b))), fx);
                }
            }
        }
        for m in due {
            self.deliver(w, m, fx);
        }
        // Failure detection: dead after `detect` ticks without a probe.
        for a in 0..n {
            let node = &mut w.nodes[a as usize];
            if node.own.is_none() {
                continue;
            }
            if std::mem::take(&mut node.stall) {
                continue;
            }
            let recent = |b: usize| node.contact[b].is_some_and(|c| c + self.detect > t);
            let view: BTreeSet<u8> = (0..n).filter(|b| *b == a || recent(*b as usize)).collect();
            self.set_view(w, a, view, fx);
        }
        for a in 0..n {
            self.feed(w, a, None, fx);
        }
    }

    fn set_view(&self, w: &mut World, a: u8, view: BTreeSet<u8>, fx: &mut Effects) {
        let old = std::mem::replace(&mut w.nodes[a as usize].view, view.clone());
        if old == view {
            return;
        }
        for d in old.difference(&view) {
            self.feed(w, a, Some(Input::Dead(name(*d))), fx);
        }
        let names = view.iter().map(|b| name(*b)).collect();
        self.feed(w, a, Some(Input::Alive(names)), fx);
    }

    pub fn is_fault(step: &Step) -> bool {
        !matches!(
            step,
            Step::Tick { slow: None } | Step::Heal | Step::Restart(_)
        )
    }

    /// The state after `step`; `fx.verbose` collects a readable account.
    pub fn next(&self, w: &World, step: &Step, fx: &mut Effects) -> World {
        let mut w = w.clone();
        let fault = Self::is_fault(step);
        if fault {
            w.faults += 1;
            w.calm = 0; // what a fault causes is not a calm cluster's doing
        }
        match *step {
            Step::Tick { slow } => self.tick(&mut w, slow, fx),
            Step::Jump(a) => {
                w.nodes[a as usize].lag -= 1;
                self.feed(&mut w, a, None, fx);
            }
            Step::Drop(i) => _ = w.net.remove(i as usize),
            Step::Delay(i) => w.net[i as usize].delayed = true,
            Step::Deliver(i) => {
                let m = w.net.remove(i as usize);
                self.deliver(&mut w, m, fx);
            }
            Step::Dup(i) => {
                let m = w.net[i as usize].clone();
                self.deliver(&mut w, m, fx);
            }
            Step::Cut(a) => {
                w.cut |= 1 << a;
                let cut = w.cut;
                w.net.retain(|m| (cut >> m.from & 1) == (cut >> m.to & 1));
            }
            Step::Heal => w.cut = 0,
            Step::Suspect { at, whom } => {
                let mut view = w.nodes[at as usize].view.clone();
                view.remove(&whom);
                self.set_view(&mut w, at, view, fx);
            }
            Step::Stall(a) => w.nodes[a as usize].stall = true,
            Step::Crash(a) => self.stop(&mut w, a),
            Step::Restart(a) => {
                let old = &w.nodes[a as usize];
                let (lag, addr, local) = (old.lag, old.addr && !old.off, old.local(w.t));
                let mut node = self.node(a, local);
                (node.lag, node.addr) = (lag, addr);
                w.nodes[a as usize] = node;
            }
            Step::Leave(a) => {
                self.feed(&mut w, a, Some(Input::Leave), fx);
                self.stop(&mut w, a);
            }
            Step::Move { via, to } => {
                let input = Input::Move {
                    vip: VIP.into(),
                    to: name(to),
                };
                self.feed(&mut w, via, Some(input), fx);
            }
            Step::FenceFail(a) => w.nodes[a as usize].hooks[0].ok = false,
            Step::FenceHang(a) => {
                let h = &mut w.nodes[a as usize].hooks[0];
                (h.ok, h.left) = (false, HANG);
            }
        }
        let up = w.nodes.iter().filter(|n| n.own.is_some()).count();
        let change = !matches!(step, Step::Tick { slow: None });
        let calm = !change && w.cut == 0 && up >= self.majority();
        w.calm = if calm { w.calm.saturating_add(1) } else { 0 };
        let owners: Vec<u8> = (0..self.nodes as u8)
            .filter(|i| w.nodes[*i as usize].serving(w.t))
            .collect();
        if w.calm < self.calm {
            w.calm_owner = None;
        } else if let [owner] = owners[..] {
            if w.calm_owner.is_some_and(|o| o != owner) {
                w.seen.moved_when_calm = true;
            }
            w.calm_owner = Some(owner);
        }
        w.overlap = match (owners.len() > 1, matches!(step, Step::Tick { .. })) {
            (false, _) => 0,
            (true, true) => w.overlap.saturating_add(1),
            (true, false) => w.overlap.max(1),
        };
        w
    }

    /// The daemon stops (crash or after a leave); address and lease stay with the kernel.
    fn stop(&self, w: &mut World, a: u8) {
        let node = &mut w.nodes[a as usize];
        node.own = None;
        node.hooks.clear();
        node.view.clear();
        node.stall = false;
        w.net.retain(|m| m.to != a);
    }

    /// Every step possible from `w`, in a fixed order.
    pub fn steps(&self, w: &World, out: &mut Vec<Step>) {
        let n = self.nodes as u8;
        let up = |a: u8| w.nodes[a as usize].own.is_some();
        out.push(Step::Tick { slow: None });
        if w.cut != 0 {
            out.push(Step::Heal);
        }
        for a in (0..n).filter(|a| !up(*a)) {
            out.push(Step::Restart(a));
        }
        if w.faults >= self.faults {
            return;
        }
        for a in 0..n {
            let node = &w.nodes[a as usize];
            if node.lag < self.drift {
                out.push(Step::Tick { slow: Some(a) });
            }
            if node.lag > 0 {
                out.push(Step::Jump(a));
            }
        }
        for i in 0..w.net.len() as u8 {
            out.extend([Step::Drop(i), Step::Deliver(i), Step::Dup(i)]);
            if !w.net[i as usize].delayed {
                out.push(Step::Delay(i));
            }
        }
        for a in (0..n).filter(|a| up(*a)) {
            if w.cut >> a & 1 == 0 && (w.cut | 1 << a).count_ones() as usize * 2 < self.nodes {
                out.push(Step::Cut(a));
            }
            out.push(Step::Crash(a));
            out.push(Step::Stall(a));
            if self.suspicion {
                let view = &w.nodes[a as usize].view;
                for whom in view.iter().filter(|b| **b != a) {
                    out.push(Step::Suspect { at: a, whom: *whom });
                }
            }
            if self.moves {
                out.push(Step::Leave(a));
                for to in (0..n).filter(|to| *to != a) {
                    out.push(Step::Move { via: a, to });
                }
            }
            if w.nodes[a as usize].hooks.first().is_some_and(|h| h.ok) {
                out.extend([Step::FenceFail(a), Step::FenceHang(a)]);
            }
        }
    }
}
