//! A deterministic multi-node simulation: a fake SWIM (contact-based failure detection),
//! a lossless network with partitions, fencing hooks with scripted outcomes, and a safety
//! check after every single state-machine call.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::super::{Action, Gossip, Input, Ownership, OwnershipConfig, VipPolicy};

pub const LEASE: Duration = Duration::from_secs(3);
pub const MARGIN: Duration = Duration::from_secs(1);
pub const STEP: Duration = Duration::from_millis(100);
/// Fake SWIM declares a peer dead after this long without contact.
pub const DETECT: Duration = Duration::from_millis(1500);

pub fn vip(name: &str) -> VipPolicy {
    VipPolicy {
        name: name.into(),
        preferences: vec![],
        allowed: None,
        fencing: false,
    }
}

pub fn pref(name: &str, prefs: &[&str], fencing: bool) -> VipPolicy {
    let preferences = prefs.iter().map(|p| p.to_string()).collect();
    VipPolicy {
        name: name.into(),
        preferences,
        allowed: None,
        fencing,
    }
}

pub struct Node {
    pub own: Ownership,
    /// Last `RenewLease.until` per VIP: what the data plane would serve.
    pub until: BTreeMap<String, Instant>,
    contact: BTreeMap<String, Instant>,
    view: BTreeSet<String>,
}

#[derive(Clone, Debug)]
pub struct Logged {
    pub at: Instant,
    pub node: String,
    pub action: Action,
}

pub struct Sim {
    pub t0: Instant,
    pub now: Instant,
    pub nodes: BTreeMap<String, Node>,
    pub log: Vec<Logged>,
    /// (at, fencer, target, ok)
    pub fences: Vec<(Instant, String, String, bool)>,
    /// How many upcoming fencing attempts fail.
    pub fail_fences: u32,
    /// A successful fence powers the target off (STONITH), as the real hook does.
    pub fence_kills: bool,
    /// Per-node failure detection time overriding [`DETECT`] (a stalled or slow detector).
    pub detect: BTreeMap<String, Duration>,
    voters: Vec<String>,
    witness: Option<String>,
    vips: Vec<VipPolicy>,
    /// Per-node VIP sets given by [`Sim::reconfigure`]; a (re)start uses them.
    node_vips: BTreeMap<String, Vec<VipPolicy>>,
    /// Every VIP name configured anywhere so far: what the safety check covers.
    names: Vec<String>,
    group: BTreeMap<String, u8>,
    queue: VecDeque<(String, Input)>,
}

impl Sim {
    pub fn new(voters: &[&str], witness: Option<&str>, vips: Vec<VipPolicy>) -> Self {
        let t0 = Instant::now();
        let mut sim = Sim {
            t0,
            now: t0,
            nodes: BTreeMap::new(),
            log: vec![],
            fences: vec![],
            fail_fences: 0,
            fence_kills: false,
            detect: BTreeMap::new(),
            voters: voters.iter().map(|v| v.to_string()).collect(),
            witness: witness.map(str::to_string),
            names: vips.iter().map(|v| v.name.clone()).collect(),
            vips,
            node_vips: BTreeMap::new(),
            group: BTreeMap::new(),
            queue: VecDeque::new(),
        };
        for v in voters {
            sim.start(v);
        }
        sim
    }

    pub fn config(&self, me: &str) -> OwnershipConfig {
        let vips = self.vips_of(me);
        let (voters, witness) = (self.voters.clone(), self.witness.clone());
        let cfg = OwnershipConfig {
            me: me.into(),
            voters,
            witness,
            lease: LEASE,
            margin: MARGIN,
            vips,
        };
        cfg.validate().expect("valid test config");
        cfg
    }

    /// Starts (or restarts, with no memory) a node's daemon.
    pub fn start(&mut self, name: &str) {
        let own = Ownership::new(self.config(name), self.now);
        let view = BTreeSet::from([name.to_string()]);
        let node = Node {
            own,
            until: BTreeMap::new(),
            contact: BTreeMap::new(),
            view,
        };
        self.nodes.insert(name.to_string(), node);
    }

    /// A config reload on `name` (running or not: a later start uses `vips` too).
    pub fn reconfigure(&mut self, name: &str, vips: Vec<VipPolicy>) {
        for v in &vips {
            if !self.names.contains(&v.name) {
                self.names.push(v.name.clone());
            }
        }
        self.node_vips.insert(name.to_string(), vips.clone());
        self.deliver(name, Input::Reconfigure(vips));
    }

    /// The VIP set `name` runs (or starts with).
    pub fn vips_of(&self, name: &str) -> Vec<VipPolicy> {
        self.node_vips.get(name).unwrap_or(&self.vips).clone()
    }

    /// Crash: the daemon and its data-plane state vanish.
    pub fn kill(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    /// Graceful shutdown: Leave, then membership tells the others at once (as SWIM does after
    /// a leave: the member is down, like a dead one).
    pub fn leave(&mut self, name: &str) {
        self.deliver(name, Input::Leave);
        self.kill(name);
        let others: Vec<String> = self.nodes.keys().cloned().collect();
        for o in others {
            let node = self.nodes.get_mut(&o).expect("running");
            node.contact.remove(name);
            node.view.remove(name);
            let view = node.view.iter().cloned().collect();
            self.deliver(&o, Input::Dead(name.into()));
            self.deliver(&o, Input::Alive(view));
        }
    }

    pub fn partition(&mut self, groups: &[&[&str]]) {
        self.group.clear();
        for (g, names) in groups.iter().enumerate() {
            for n in names.iter() {
                self.group.insert(n.to_string(), g as u8);
            }
        }
    }

    pub fn heal(&mut self) {
        self.group.clear();
    }

    fn connected(&self, a: &str, b: &str) -> bool {
        self.group.get(a) == self.group.get(b)
    }

    /// Feeds one input, then everything it causes, checking safety after each call.
    pub fn deliver(&mut self, to: &str, input: Input) {
        self.queue.push_back((to.to_string(), input));
        self.drain();
    }

    fn drain(&mut self) {
        let mut budget = 100_000; // a gossip storm between state machines is a bug
        while let Some((to, input)) = self.queue.pop_front() {
            budget -= 1;
            assert!(budget > 0, "message storm, last input to {to}: {input:?}");
            let Some(node) = self.nodes.get_mut(&to) else {
                continue;
            };
            let actions = node.own.handle(input, self.now);
            self.apply(&to, actions);
        }
    }

    fn apply(&mut self, from: &str, actions: Vec<Action>) {
        for action in actions {
            self.log.push(Logged {
                at: self.now,
                node: from.into(),
                action: action.clone(),
            });
            match action {
                Action::RenewLease { vip, until, .. } => {
                    self.nodes
                        .get_mut(from)
                        .expect("running")
                        .until
                        .insert(vip, until);
                }
                Action::Broadcast(g) => {
                    let input = match g {
                        Gossip::Claim(c) => Input::Claim(c),
                        Gossip::Released(c) => Input::Released(c),
                        Gossip::Move { vip, to } => Input::Move { vip, to },
                        Gossip::NodeState(s) => Input::NodeState(s),
                    };
                    let peers = self
                        .nodes
                        .keys()
                        .filter(|p| *p != from && self.connected(from, p));
                    let peers: Vec<String> = peers.cloned().collect();
                    for p in peers {
                        self.queue.push_back((p, input.clone()));
                    }
                }
                Action::Fence { node, .. } => {
                    let ok = self.fail_fences == 0;
                    self.fail_fences = self.fail_fences.saturating_sub(1);
                    if ok && self.fence_kills {
                        self.kill(&node);
                    }
                    self.fences.push((self.now, from.into(), node.clone(), ok));
                    self.queue
                        .push_back((from.into(), Input::FenceResult { node, ok }));
                }
                _ => {}
            }
        }
        self.check_safety();
    }

    /// At most one node serves each VIP with an unexpired lease.
    fn check_safety(&self) {
        for vip in &self.names {
            let serving: Vec<&String> = (self.nodes.iter())
                .filter(|(_, n)| n.own.owned().contains(vip))
                .filter(|(_, n)| n.until.get(vip).is_some_and(|u| *u > self.now))
                .map(|(name, _)| name)
                .collect();
            let t = self.now - self.t0;
            assert!(
                serving.len() <= 1,
                "at {t:?} vip {vip} served by {serving:?}"
            );
        }
    }

    /// One simulated step: packets between connected nodes, fake SWIM, ticks.
    pub fn step(&mut self) {
        self.now += STEP;
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for a in &names {
            let peers = names.iter().filter(|b| *b != a && self.connected(a, b));
            for b in peers.cloned().collect::<Vec<_>>() {
                // Any delivery may fence (power off) a node, either of these included.
                if !self.nodes.contains_key(&b) {
                    continue;
                }
                let Some(node) = self.nodes.get_mut(a) else {
                    break;
                };
                node.contact.insert(b.clone(), self.now);
                self.deliver(a, Input::Heard(b));
            }
        }
        for a in &names {
            let Some(node) = self.nodes.get(a) else {
                continue;
            };
            let detect = self.detect.get(a).copied().unwrap_or(DETECT);
            let fresh = |(p, t): (&String, &Instant)| (self.now - *t <= detect).then(|| p.clone());
            let mut view: BTreeSet<String> = node.contact.iter().filter_map(fresh).collect();
            view.insert(a.clone());
            if view == node.view {
                continue;
            }
            let dead: Vec<String> = node.view.difference(&view).cloned().collect();
            self.nodes.get_mut(a).expect("running").view = view.clone();
            for d in dead {
                self.deliver(a, Input::Dead(d));
            }
            self.deliver(a, Input::Alive(view.into_iter().collect()));
        }
        for a in &names {
            if let Some(node) = self.nodes.get_mut(a) {
                let actions = node.own.tick(self.now);
                self.apply(a, actions);
                self.drain();
            }
        }
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    /// Runs until `f` holds (checked after each step), at most `limit`; returns the time.
    pub fn run_until(&mut self, limit: Duration, mut f: impl FnMut(&Sim) -> bool) -> Instant {
        let end = self.now + limit;
        while !f(self) {
            assert!(self.now < end, "condition not reached within {limit:?}");
            self.step();
        }
        self.now
    }

    /// Owners of each VIP according to the nodes actually holding it.
    pub fn holders(&self) -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> =
            self.names.iter().map(|v| (v.clone(), vec![])).collect();
        for (name, node) in &self.nodes {
            for v in node.own.owned() {
                m.get_mut(&v).expect("configured").push(name.clone());
            }
        }
        m
    }

    /// The one holder of `vip`; panics unless exactly one.
    pub fn holder(&self, vip: &str) -> String {
        let h = &self.holders()[vip];
        assert_eq!(h.len(), 1, "vip {vip} holders {h:?}");
        h[0].clone()
    }

    /// (owner, epoch) per VIP, asserting every running node agrees.
    pub fn agreed(&self) -> BTreeMap<String, (Option<String>, u64)> {
        let mut views = self.nodes.iter().map(|(name, n)| {
            let v = n
                .own
                .view()
                .into_iter()
                .map(|v| (v.vip, (v.owner, v.epoch)))
                .collect();
            (name.clone(), v)
        });
        let (first, agreed): (String, BTreeMap<_, _>) = views.next().expect("a node runs");
        for (name, v) in views {
            assert_eq!(v, agreed, "{name} disagrees with {first}");
        }
        agreed
    }

    /// Logged actions of one kind, e.g. `sim.actions(|a| matches!(a, Action::Claim { .. }))`.
    pub fn actions(&self, f: impl Fn(&Action) -> bool) -> Vec<&Logged> {
        self.log.iter().filter(|l| f(&l.action)).collect()
    }

    pub fn claims_of(&self, vip: &str) -> Vec<(Instant, String, u64)> {
        let of = |l: &&Logged| match &l.action {
            Action::Claim { vip: v, epoch } if v == vip => Some((l.at, l.node.clone(), *epoch)),
            _ => None,
        };
        self.log.iter().filter_map(|l| of(&l)).collect()
    }

    pub fn statuses(&self) -> Vec<String> {
        let text = |l: &Logged| match &l.action {
            Action::Status(s) => Some(format!("{}: {s}", l.node)),
            _ => None,
        };
        self.log.iter().filter_map(text).collect()
    }
}
