//! Simulated-time tests of the backend machine: every instant is made up, nothing sleeps.
use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use super::*;
use crate::{
    config::{BackendConf, Check, CheckKind, Forward},
    core::{flap::Damping, health::Health},
};

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn addr(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn spec(index: u32, serial: u32, damping: Damping) -> Spec {
    Spec {
        index,
        serial,
        vip: 0,
        address: addr(index as u8 + 1),
        weight: 100,
        rise: 2,
        fall: 2,
        damping,
        local: false,
        drain_timeout: 60 * S,
    }
}

fn conf(s: &Spec) -> BackendConf {
    BackendConf {
        name: format!("b{}", s.index),
        address: s.address,
        port: 80,
        weight: s.weight,
        priority: 0,
        forward: Forward::Encap,
        check: Check {
            kind: CheckKind::Tcp,
            interval: S,
            timeout: S,
            rise: s.rise,
            fall: s.fall,
            jitter: 0.0,
            damping: s.damping,
        },
    }
}

fn hop() -> NextHop {
    NextHop {
        via: addr(254),
        on_link: true,
        mac: Some([2, 0, 0, 0, 0, 1]),
        no_route: None,
        egress: 0,
    }
}

/// A simulated clock: monotonic and wall time advance together.
struct Sim {
    m: Backends,
    t0: Instant,
    elapsed: Duration,
}

impl Sim {
    fn new(specs: &[Spec]) -> Self {
        let mut m = Backends::new(8);
        m.handle(
            Input::Reload(specs.to_vec()),
            Now {
                at: Instant::now(),
                unix_ms: 0,
            },
        );
        for s in specs {
            m.set_next_hop(s.index, Some(hop()));
        }
        Self {
            m,
            t0: Instant::now(),
            elapsed: Duration::ZERO,
        }
    }

    fn now(&self) -> Now {
        Now {
            at: self.t0 + self.elapsed,
            unix_ms: 1_700_000_000_000 + self.elapsed.as_millis() as u64,
        }
    }

    fn advance(&mut self, d: Duration) {
        self.elapsed += d;
    }

    fn handle(&mut self, input: Input) -> Vec<Action> {
        let now = self.now();
        self.m.handle(input, now)
    }

    fn probe(&mut self, index: u32, serial: u32, ok: bool) -> Vec<Action> {
        let at = self.now().at;
        let result = ProbeResult {
            ok,
            latency: MS,
            detail: String::new(),
        };
        self.handle(Input::Probe {
            index,
            serial,
            result,
            at,
        })
    }

    /// Probes `index` ok until it is up.
    fn bring_up(&mut self, index: u32) {
        let serial = self.m[index as usize].serial;
        for _ in 0..3 {
            self.probe(index, serial, true);
            self.advance(S);
        }
        assert_eq!(self.m[index as usize].health.health(), Health::Up);
    }
}

fn publishes(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Publish { .. }))
        .count()
}

fn writes(actions: &[Action], index: u32) -> usize {
    actions
        .iter()
        .filter(|a| **a == Action::WriteBackend(index))
        .count()
}

#[test]
fn drain_then_timeout_gives_up_flows_once() {
    let s0 = spec(0, 1, Damping::OFF);
    let c = conf(&s0);
    let mut sim = Sim::new(&[s0]);
    sim.bring_up(0);
    assert_eq!(sim.m[0].effective_weight(&c), Some(100));

    let out = sim.handle(Input::Admin {
        index: 0,
        change: AdminChange::Drain {
            timeout: Some(30 * S),
        },
    });
    assert!(out.contains(&Action::Broadcast(Share::Admin { index: 0 })));
    assert!(out.contains(&Action::SaveState));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Publish { admin: true, .. })));
    assert_eq!(sim.m[0].effective_weight(&c), None, "no new flows");
    assert!(sim.m[0].keeps_flows(&c), "established flows stay");
    let deadline = sim.m.next_deadline(sim.now()).unwrap();
    assert_eq!(deadline, sim.now().at + 30 * S);

    // Ticks until the timeout: one write in all, when it passes.
    let mut all = Vec::new();
    for _ in 0..40 {
        sim.advance(S);
        all.extend(sim.handle(Input::Tick));
    }
    assert_eq!(writes(&all, 0), 1);
    assert!(all.contains(&Action::Log(Level::Info, Note::DrainTimedOut { index: 0 })));
    assert!(!sim.m[0].keeps_flows(&c), "the timeout gave them up");
    assert_eq!(sim.m.next_deadline(sim.now()), None);

    // Draining again with a longer timeout keeps the start and keeps flows again.
    let out = sim.handle(Input::Admin {
        index: 0,
        change: AdminChange::Drain {
            timeout: Some(3600 * S),
        },
    });
    assert_eq!(writes(&out, 0), 1);
    assert!(sim.m[0].keeps_flows(&c));
    // Enable ends the drain: back in the table.
    sim.handle(Input::Admin {
        index: 0,
        change: AdminChange::Enable,
    });
    assert_eq!(sim.m[0].drain, None);
    assert_eq!(sim.m[0].effective_weight(&c), Some(100));
}

#[test]
fn flap_damping_holds_a_flapping_backend_down_and_bounds_publishes() {
    let damping = Damping {
        suppress: 4,
        reuse: 2,
        half_life: 30 * S,
        max_hold: 300 * S,
    };
    let s0 = Spec {
        rise: 1,
        fall: 1,
        ..spec(0, 1, damping)
    };
    let c = conf(&s0);
    let mut sim = Sim::new(&[s0]);
    sim.bring_up(0);
    // Up/down every 200 ms for two minutes.
    let mut all = Vec::new();
    let mut ok = false;
    for _ in 0..600 {
        all.extend(sim.probe(0, 1, ok));
        ok = !ok;
        sim.advance(200 * MS);
    }
    assert!(sim.m[0].health.flapping());
    assert_eq!(sim.m[0].effective_weight(&c), None, "held down");
    assert!(publishes(&all) <= 6, "{} publishes", publishes(&all));
    assert_eq!(
        all.iter()
            .filter(|a| matches!(a, Action::Log(Level::Warn, Note::FlappingHeld { .. })))
            .count(),
        1
    );
    let info_verdicts = all
        .iter()
        .filter(|a| matches!(a, Action::Log(Level::Info, Note::Verdict { .. })))
        .count();
    assert!(info_verdicts <= 4, "verdict lines rate limited");
    // Stable and passing for long enough: released, back in the table.
    for _ in 0..400 {
        sim.probe(0, 1, true);
        sim.advance(S);
    }
    assert!(!sim.m[0].health.flapping());
    assert_eq!(sim.m[0].effective_weight(&c), Some(100));
}

#[test]
fn stale_prober_results_are_dropped() {
    let mut sim = Sim::new(&[spec(0, 1, Damping::OFF)]);
    for _ in 0..5 {
        assert!(sim.probe(0, 7, true).is_empty());
    }
    assert_eq!(sim.m[0].health.health(), Health::Down);
    assert!(sim.probe(3, 0, true).is_empty(), "unused index");
}

#[test]
fn reload_keeps_a_verdict_for_an_unchanged_identity_only() {
    let (a, b) = (spec(0, 1, Damping::OFF), spec(1, 1, Damping::OFF));
    let mut sim = Sim::new(&[a.clone(), b.clone()]);
    sim.bring_up(0);
    sim.bring_up(1);
    sim.handle(Input::Admin {
        index: 0,
        change: AdminChange::Weight(7),
    });
    // Index 0 unchanged (new thresholds); index 1 now another backend (new serial).
    let a2 = Spec { rise: 5, ..a };
    let b2 = Spec {
        serial: 2,
        address: addr(99),
        ..b
    };
    let out = sim.handle(Input::Reload(vec![a2, b2.clone()]));
    assert!(out.is_empty(), "the file's weight did not change");
    assert_eq!(sim.m[0].health.health(), Health::Up, "verdict kept");
    assert_eq!(sim.m[0].weight, 7, "runtime weight kept");
    assert_eq!(
        sim.m[1].health.health(),
        Health::Down,
        "a new identity starts down"
    );
    assert_eq!(sim.m[1].serial, 2);
    assert_eq!(sim.m[1].next_hop, None, "no backend had its address");
    // The old prober's results no longer count.
    assert!(sim.probe(1, 1, true).is_empty());
    // A weight change in the file replaces the runtime weight and says so.
    let a3 = Spec {
        weight: 50,
        ..spec(0, 1, Damping::OFF)
    };
    let out = sim.handle(Input::Reload(vec![a3, b2]));
    assert_eq!(out, vec![Action::WeightFromConfig(0)]);
    assert_eq!(sim.m[0].weight, 50);
    assert_eq!(sim.m[0].health.health(), Health::Up);
    // Removed from the file: unused.
    sim.handle(Input::Reload(vec![]));
    assert!(!sim.m[0].in_use());
}

#[test]
fn cluster_view_overrides_the_local_verdict() {
    let s0 = spec(0, 1, Damping::OFF);
    let c = conf(&s0);
    let mut sim = Sim::new(&[s0]);
    sim.bring_up(0);
    let out = sim.handle(Input::ClusterView {
        index: 0,
        verdict: Health::Down,
    });
    assert_eq!(publishes(&out), 1);
    assert_eq!(
        sim.m[0].effective_weight(&c),
        None,
        "the majority says down"
    );
    assert!(!sim.m[0].keeps_flows(&c));
    assert_eq!(
        sim.m[0].ineligible_reason(&c).as_deref(),
        Some("it is down")
    );
    // Repeating the same view changes nothing.
    assert!(sim
        .handle(Input::ClusterView {
            index: 0,
            verdict: Health::Down
        })
        .is_empty());
    // Our own probes passing do not bring it back; the cluster's view does.
    sim.probe(0, 1, true);
    assert_eq!(sim.m[0].effective_weight(&c), None);
    sim.handle(Input::ClusterView {
        index: 0,
        verdict: Health::Up,
    });
    assert_eq!(sim.m[0].effective_weight(&c), Some(100));
}

#[test]
fn listening_false_takes_a_local_backend_out_and_is_shared() {
    let s0 = Spec {
        local: true,
        ..spec(0, 1, Damping::OFF)
    };
    let c = conf(&s0);
    let mut sim = Sim::new(&[s0]);
    sim.bring_up(0);
    // The first fact, listening, is news to nobody: shared, not logged.
    let out = sim.handle(Input::Listening {
        index: 0,
        listening: true,
        at: sim.now().at,
    });
    assert!(!out.iter().any(|a| matches!(a, Action::Log(..))));
    assert_eq!(sim.m[0].effective_weight(&c), Some(100));
    let out = sim.handle(Input::Listening {
        index: 0,
        listening: false,
        at: sim.now().at,
    });
    assert!(out.contains(&Action::ServiceGone));
    assert!(out.contains(&Action::Broadcast(Share::Service {
        index: 0,
        listening: false
    })));
    assert!(out.contains(&Action::Log(
        Level::Warn,
        Note::ServiceSocket {
            index: 0,
            listening: false
        }
    )));
    assert_eq!(publishes(&out), 1);
    assert_eq!(sim.m[0].effective_weight(&c), None);
    assert_eq!(
        sim.m[0].ineligible_reason(&c).as_deref(),
        Some("its service socket is gone")
    );
    assert!(sim
        .handle(Input::Listening {
            index: 0,
            listening: false,
            at: sim.now().at,
        })
        .is_empty());
}

#[test]
fn next_hop_changes_write_the_entry_and_publish() {
    let s0 = spec(0, 1, Damping::OFF);
    let c = conf(&s0);
    let mut sim = Sim::new(&[s0]);
    sim.bring_up(0);
    let out = sim.handle(Input::NextHop {
        index: 0,
        hop: None,
    });
    assert_eq!(writes(&out, 0), 1);
    assert_eq!(publishes(&out), 1);
    assert_eq!(sim.m[0].effective_weight(&c), None);
    assert!(sim
        .handle(Input::NextHop {
            index: 0,
            hop: None
        })
        .is_empty());
}

#[test]
fn a_restart_keeps_verdicts_from_the_kernel_or_a_fresh_state_file() {
    let up_enabled = Some(Remembered {
        up: true,
        admin: Some(Admin::Enabled),
    });
    let up_drained = Some(Remembered {
        up: true,
        admin: Some(Admin::Drained),
    });
    // The live table read back rules: in it is up; out of it only an admin state explains.
    assert_eq!(restart_health(None, Some(true), false), Health::Up);
    assert_eq!(restart_health(up_enabled, Some(false), true), Health::Down);
    assert_eq!(restart_health(up_drained, Some(false), true), Health::Up);
    // No table read back: the state file when it is as fresh as the maps.
    assert_eq!(restart_health(up_enabled, None, true), Health::Up);
    assert_eq!(restart_health(up_enabled, None, false), Health::Down);
    assert_eq!(restart_health(None, None, true), Health::Down);
}

#[test]
fn since_moves_only_when_the_verdict_or_the_admin_state_changes() {
    let s0 = spec(0, 1, Damping::OFF);
    let mut sim = Sim::new(&[s0]);
    sim.bring_up(0);
    let up_since = sim.m[0].since_ms().expect("stamped");
    // More good probes: still up since the same moment.
    sim.advance(5 * S);
    sim.probe(0, 1, true);
    assert_eq!(sim.m[0].since_ms(), Some(up_since));
    // One failure of fall = 2: no verdict yet, no new state.
    sim.probe(0, 1, false);
    assert_eq!(sim.m[0].since_ms(), Some(up_since));
    // A drain is a new state.
    sim.advance(S);
    let at = sim.now().unix_ms;
    sim.handle(Input::Admin {
        index: 0,
        change: AdminChange::Drain { timeout: None },
    });
    assert_eq!(sim.m[0].since_ms(), Some(at));
    // The second failure: down, a new state too.
    sim.advance(S);
    sim.probe(0, 1, false);
    assert_eq!(sim.m[0].since_ms(), Some(sim.now().unix_ms));
}

#[test]
fn a_track_fault_takes_local_backends_out_and_back() {
    let s0 = Spec {
        local: true,
        ..spec(0, 1, Damping::OFF)
    };
    let s1 = spec(1, 1, Damping::OFF);
    let (c0, c1) = (conf(&s0), conf(&s1));
    let mut sim = Sim::new(&[s0, s1]);
    sim.bring_up(0);
    sim.bring_up(1);
    let at = sim.now().at;
    let out = sim.handle(Input::LocalFault { fault: true, at });
    // Only the local backend: out of the table, no flows kept, shared as "not serving".
    assert_eq!(
        out.iter()
            .filter(|a| matches!(a, Action::Broadcast(_)))
            .collect::<Vec<_>>(),
        [&Action::Broadcast(Share::Service {
            index: 0,
            listening: false
        })]
    );
    assert_eq!(publishes(&out), 1);
    assert_eq!(sim.m[0].effective_weight(&c0), None);
    assert!(!sim.m[0].keeps_flows(&c0));
    assert_eq!(
        sim.m[0].ineligible_reason(&c0).as_deref(),
        Some("a track condition of this node failed")
    );
    assert_eq!(sim.m[1].effective_weight(&c1), Some(100));
    // A repeat changes nothing; a socket fact meanwhile is shared as still not serving.
    assert!(sim.handle(Input::LocalFault { fault: true, at }).is_empty());
    let out = sim.handle(Input::Listening {
        index: 0,
        listening: true,
        at,
    });
    assert!(out.contains(&Action::Broadcast(Share::Service {
        index: 0,
        listening: false
    })));
    let out = sim.handle(Input::LocalFault { fault: false, at });
    assert!(out.contains(&Action::Broadcast(Share::Service {
        index: 0,
        listening: true
    })));
    assert_eq!(sim.m[0].effective_weight(&c0), Some(100));
}
