//! Model checking of vipd's VIP ownership core with stateright.
//!
//! The nodes run the real [`vip_daemon::core::ownership::Ownership`] machine: the model is
//! only the world around it (issue 17).
//! * **Time** (`clocks.rs`): real time in ticks; each node's CLOCK_MONOTONIC lags it by up
//!   to [`Setup::drift`] ticks and may stand still or jump one tick within that bound.
//! * **Network** (`network.rs`): gossip items are lost, delayed a tick, duplicated and
//!   reordered one by one; membership probes flow every tick between connected running
//!   daemons; a partition cuts a minority off in both directions.
//! * **Membership** (`model.rs`): SWIM as a detector declaring a node dead after
//!   [`Setup::detect`] ticks without a probe, plus false suspicion (a `Dead` for a live peer,
//!   refuted at the next tick) and late delivery (a detector skipping a tick).
//! * **Fencing**: a hook answers after a tick; a success powers the target off (STONITH,
//!   data plane included); faults make it fail or hang until the shell's timeout.
//! * **Crashes and restarts** (`actor.rs`): a crash stops the daemon but the kernel keeps
//!   the address and the pinned lease, which keeps serving until it runs out; a restart
//!   builds a fresh machine (vipd keeps no ownership state on disk) and clears the lease
//!   (`init_leases`).
//!
//! Every stateright action is a tick or a fault; faults are bounded by [`Setup::faults`],
//! the depth by the checker. Properties are in `properties.rs`; `docs/architecture.md`
//! ("Model-checked ownership") states what is proven and what is not.

pub mod actor;
pub mod clocks;
pub mod model;
pub mod network;
pub mod properties;
pub mod trace;

use std::time::{Duration, Instant};

use stateright::{Checker, Model, Property};

use model::{Step, World};

/// One configuration of the world. Times are in ticks ([`clocks::TICK`]).
#[derive(Clone, Debug)]
pub struct Setup {
    pub nodes: usize,
    /// The one VIP needs a successful fence before a takeover from a dead owner.
    pub fencing: bool,
    /// Faults per behaviour (drift events included).
    pub faults: u8,
    /// Bound on a clock's lag behind real time.
    pub drift: u8,
    /// False suspicion in the fault menu.
    pub suspicion: bool,
    /// Operator moves and graceful leaves in the fault menu.
    pub moves: bool,
    /// Run every node with the "Fresh word" rule removed (the teeth test).
    pub bug: bool,
    pub lease: u32,
    pub margin: u32,
    pub detect: u32,
    /// Ticks of calm (no fault or repair, no partition, a quorum running) after which the
    /// VIP must have exactly one owner, and keep it while calm lasts.
    pub calm: u8,
}

impl Setup {
    /// 3 nodes, 1 VIP, no fencing. A tick is the default probe period (150 ms); lease
    /// 6 ticks (900 ms, default 1 s), margin 2 (= 2 probe periods, as vipd sets it),
    /// failure detection 3 ticks (probe period + the default 300 ms suspect timeout), clock
    /// lag bound 1 tick. Up to 2 faults, false suspicion included; no moves or leaves.
    pub fn three() -> Self {
        Setup {
            nodes: 3,
            fencing: false,
            faults: 2,
            drift: 1,
            suspicion: true,
            moves: false,
            bug: false,
            lease: 6,
            margin: 2,
            detect: 3,
            calm: 12,
        }
    }

    pub fn five() -> Self {
        Setup {
            nodes: 5,
            ..Self::three()
        }
    }
}

pub struct OwnershipModel {
    pub setup: Setup,
}

impl Model for OwnershipModel {
    type State = World;
    type Action = Step;

    fn init_states(&self) -> Vec<World> {
        vec![self.setup.cold(), self.setup.warm()]
    }

    fn actions(&self, w: &World, out: &mut Vec<Step>) {
        self.setup.steps(w, out);
    }

    fn next_state(&self, w: &World, step: Step) -> Option<World> {
        Some(self.setup.next(w, &step, &mut actor::Effects::default()))
    }

    fn properties(&self) -> Vec<Property<Self>> {
        properties::all()
    }
}

/// What one exhaustive run found.
pub struct Report {
    pub states: usize,
    pub unique: usize,
    pub depth: usize,
    pub took: Duration,
    /// Property name -> readable trace, for every violated `always` property.
    pub violations: Vec<(&'static str, String)>,
    /// `sometimes` properties never reached (the model would be vacuous).
    pub unreached: Vec<&'static str>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} states ({} unique), depth {}, {:.1?}",
            self.states, self.unique, self.depth, self.took
        )?;
        for (name, trace) in &self.violations {
            write!(f, "\nVIOLATED: {name}\n{trace}")?;
        }
        for name in &self.unreached {
            write!(f, "\nNEVER REACHED: {name}")?;
        }
        Ok(())
    }
}

/// Breadth-first search of every behaviour up to `depth` steps.
pub fn check(setup: Setup, depth: usize, threads: usize) -> Report {
    let started = Instant::now();
    let model = OwnershipModel {
        setup: setup.clone(),
    };
    let checker = model
        .checker()
        .threads(threads)
        .target_max_depth(depth)
        .spawn_bfs()
        .join();
    let mut violations = vec![];
    let mut unreached = vec![];
    for p in properties::all() {
        let found = checker.discovery(p.name);
        match (p.expectation.discovery_is_failure(), found) {
            (true, Some(path)) => {
                let states = path.clone().into_states();
                let steps = path.into_actions();
                let trace = trace::explain(&setup, &states[0], &steps);
                violations.push((p.name, trace));
            }
            (false, None) => unreached.push(p.name),
            _ => {}
        }
    }
    Report {
        states: checker.state_count(),
        unique: checker.unique_state_count(),
        depth: checker.max_depth(),
        took: started.elapsed(),
        violations,
        unreached,
    }
}

/// Replays `steps` from the cold (or warm) start: the trace and every state on the way.
pub fn replay(setup: &Setup, warm: bool, steps: &[Step]) -> (String, Vec<World>) {
    let start = if warm { setup.warm() } else { setup.cold() };
    let trace = trace::explain(setup, &start, steps);
    let mut states = vec![start];
    for step in steps {
        let next = setup.next(
            states.last().expect("start"),
            step,
            &mut actor::Effects::default(),
        );
        states.push(next);
    }
    (trace, states)
}
