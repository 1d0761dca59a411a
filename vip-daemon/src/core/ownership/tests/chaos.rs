//! Seeded random faults: partitions, crashes and fresh restarts (amnesia, even of a quorum),
//! graceful leaves, operator moves, failing fence hooks; in a second test also config
//! reloads of one node at a time (VIPs removed and added back, preferences and fencing
//! changed: nodes run different VIP sets meanwhile). The simulation checks safety after
//! every state-machine call; at the end, after healing (and reloading the same full config
//! everywhere), every VIP must have exactly one holder and every node the same records.
//!
//! By default only the regression seeds run: each found a bug (a per-node move target that
//! diverged, a re-settle missing after quorum loss, a claim from a vanished voter's stale
//! view, an old history outranking a live claim after a quorum restarted, a cut-off node
//! fencing and claiming from a transient "quorum" view). For a long run:
//! `OWNERSHIP_CHAOS_SEEDS=3000 cargo test --release chaos` (3000 passed when written; the
//! reload test runs `RELOAD_SEEDS` plus as many, and the reload faults are drawn only there,
//! so the regression seeds replay exactly what they found);
//! `OWNERSHIP_CHAOS_DUMP=1` prints the failing seed's log, faults marked `CHAOS`.

use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use rand::{rngs::SmallRng, Rng, SeedableRng};

use super::super::{Action, Input, VipPolicy};
use super::sim::{Logged, Sim};
use super::{six, CTL, SIX};

const REGRESSIONS: [u64; 7] = [0, 4, 10, 17, 32, 325, 1468];
/// Seeds of the reload test run by default (2000..).
const RELOAD_SEEDS: u64 = 20;

fn base() -> Vec<VipPolicy> {
    let mut vips: Vec<VipPolicy> = six(false);
    vips.iter_mut().step_by(2).for_each(|v| v.fencing = true);
    vips
}

fn run(seed: u64, reloads: bool) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut sim = Sim::new(&CTL, None, base());
    sim.fence_kills = true;
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| faults(&mut sim, &mut rng, reloads)));
    if let Err(e) = outcome {
        if std::env::var_os("OWNERSHIP_CHAOS_DUMP").is_some() {
            sim.log
                .iter()
                .for_each(|l| eprintln!("{:?} {} {:?}", l.at - sim.t0, l.node, l.action));
        }
        panic::resume_unwind(e);
    }
}

/// Records a fault in the simulation log, for `OWNERSHIP_CHAOS_DUMP`.
fn note(sim: &mut Sim, what: String) {
    let (at, node, action) = (sim.now, "CHAOS".into(), Action::Status(what));
    sim.log.push(Logged { at, node, action });
}

/// The cluster's current file: [`base`] with the preferences `prefs` set so far.
fn file(prefs: &[Vec<String>]) -> Vec<VipPolicy> {
    let mut vips = base();
    for (v, p) in vips.iter_mut().zip(prefs) {
        v.preferences = p.clone();
    }
    vips
}

/// A reload of one node: each VIP of the file kept with probability 3/4, some with fencing
/// flipped. Nodes thus run different VIP sets and fencing, but the same preferences: nodes
/// placing an unowned VIP differently may both claim it (a known limit, see the module docs).
fn reload(sim: &mut Sim, rng: &mut SmallRng, node: &str, prefs: &[Vec<String>]) {
    let mut vips = file(prefs);
    vips.retain(|_| rng.gen_range(0..4) != 0);
    for v in &mut vips {
        if rng.gen_range(0..5) == 0 {
            v.fencing = !v.fencing;
        }
    }
    note(sim, format!("reload {node}: {vips:?}"));
    sim.reconfigure(node, vips);
}

/// New preferences for one VIP, reloaded on every node at once (running or not).
fn reprefer(sim: &mut Sim, rng: &mut SmallRng, prefs: &mut [Vec<String>]) {
    let (k, first) = (rng.gen_range(0..SIX.len()), rng.gen_range(0..3));
    prefs[k] = (0..3).map(|i| CTL[(first + i) % 3].to_string()).collect();
    note(
        sim,
        format!("reload everywhere: {} prefers {:?}", SIX[k], prefs[k]),
    );
    for c in CTL {
        let mut vips = sim.vips_of(c);
        for v in vips.iter_mut().filter(|v| v.name == SIX[k]) {
            v.preferences = prefs[k].clone();
        }
        sim.reconfigure(c, vips);
    }
}

fn faults(sim: &mut Sim, rng: &mut SmallRng, reloads: bool) {
    // Nodes we stopped or fencing powered off, most recent last; restarts pop from it.
    let mut down: Vec<&str> = vec![];
    let mut prefs: Vec<Vec<String>> = vec![vec![]; SIX.len()];
    for _ in 0..60 {
        let n = CTL[rng.gen_range(0..3)];
        match rng.gen_range(0..if reloads { 13 } else { 10 }) {
            0 => {
                let alone = CTL[rng.gen_range(0..3)];
                let rest: Vec<&str> = CTL.into_iter().filter(|c| *c != alone).collect();
                sim.partition(&[&[alone], &rest]);
                note(sim, format!("partition {alone} | {rest:?}"));
            }
            1 | 2 => {
                sim.heal();
                note(sim, "heal".into());
            }
            3 if sim.nodes.contains_key(n) && down.is_empty() => {
                sim.kill(n);
                note(sim, format!("crash {n}"));
                down.push(n);
            }
            4 if sim.nodes.contains_key(n) && down.is_empty() => {
                note(sim, format!("leave {n}"));
                sim.leave(n);
                down.push(n);
            }
            5 | 6 => {
                if let Some(d) = down.pop() {
                    sim.start(d);
                    note(sim, format!("start {d}"));
                }
            }
            7 if sim.nodes.contains_key(n) => {
                let (vip, to) = (SIX[rng.gen_range(0..6)], CTL[rng.gen_range(0..3)]);
                note(sim, format!("move {vip} -> {to} via {n}"));
                sim.deliver(
                    n,
                    Input::Move {
                        vip: vip.into(),
                        to: to.into(),
                    },
                );
            }
            3 | 4 | 7 => {}
            10 | 11 => reload(sim, rng, n, &prefs),
            12 => reprefer(sim, rng, &mut prefs),
            _ => sim.fail_fences = rng.gen_range(0..3),
        }
        for c in CTL {
            if !sim.nodes.contains_key(c) && !down.contains(&c) {
                down.push(c); // fenced
            }
        }
        sim.run_for(Duration::from_millis(rng.gen_range(1..60) * 100));
    }
    // Heal; fencing may still power nodes off for a while: bring them back until quiet.
    if reloads {
        for c in CTL {
            note(sim, format!("reload {c}: every vip"));
            sim.reconfigure(c, file(&prefs));
        }
    }
    sim.heal();
    sim.fail_fences = 0;
    for _ in 0..5 {
        for c in CTL {
            if !sim.nodes.contains_key(c) {
                sim.start(c);
            }
        }
        sim.run_for(Duration::from_secs(20));
    }
    assert_eq!(sim.nodes.len(), 3, "still fencing after heal");
    for vip in SIX {
        sim.holder(vip);
    }
    sim.agreed();
}

#[test]
fn chaos_keeps_one_server_per_vip_and_converges() {
    let extra: u64 = std::env::var("OWNERSHIP_CHAOS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for seed in REGRESSIONS.into_iter().chain(1000..1000 + extra) {
        let outcome = panic::catch_unwind(|| run(seed, false));
        if let Err(e) = outcome {
            let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
            panic!("chaos seed {seed}: {msg}");
        }
    }
}

#[test]
fn chaos_with_reloads_keeps_one_server_per_vip_and_converges() {
    let extra: u64 = std::env::var("OWNERSHIP_CHAOS_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for seed in 2000..2000 + RELOAD_SEEDS + extra {
        let outcome = panic::catch_unwind(|| run(seed, true));
        if let Err(e) = outcome {
            let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
            panic!("chaos seed {seed} (with reloads): {msg}");
        }
    }
}
