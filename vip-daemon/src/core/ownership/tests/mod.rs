//! Multi-node simulations (`sim`): every test also checks, after every single state-machine
//! call, that no two nodes serve a VIP with unexpired leases at the same time.

mod chaos;
mod placement;
mod reconfigure;
mod service;
mod sim;
mod unit;

use std::time::Duration;

use super::{Action, VipPolicy};
use sim::{pref, vip, Sim, DETECT, LEASE, MARGIN, STEP};

const CTL: [&str; 3] = ["ctl1", "ctl2", "ctl3"];
/// Rendezvous hashing places these 2/2/2 (a balanced split of 6 is not guaranteed: each
/// node gets none with probability (2/3)^6; preferences give exact control).
const SIX: [&str; 6] = [
    "keystone",
    "glance",
    "nova",
    "octavia",
    "designate",
    "mysql",
];

fn six(fencing: bool) -> Vec<VipPolicy> {
    SIX.iter()
        .map(|n| VipPolicy { fencing, ..vip(n) })
        .collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn is_claim(a: &Action) -> bool {
    matches!(a, Action::Claim { .. })
}

#[test]
fn fresh_cluster_settles_then_spreads_one_owner_per_vip() {
    let mut sim = Sim::new(&CTL, None, six(false));
    // Quorum forms on the first step; nothing is claimed during the settle time after it.
    sim.run_for(LEASE);
    assert!(sim.actions(is_claim).is_empty(), "claimed while settling");
    sim.run_for(secs(2));
    let holders = sim.holders();
    for (vip, h) in &holders {
        assert_eq!(h.len(), 1, "{vip}: {h:?}");
    }
    for node in CTL {
        let n = holders.values().filter(|h| h[0] == node).count();
        assert_eq!(n, 2, "{node} holds {n} of 6: {holders:?}");
    }
    for (vip, (owner, epoch)) in sim.agreed() {
        assert_eq!(
            (owner.as_ref(), epoch),
            (Some(&holders[&vip][0]), 1),
            "{vip}"
        );
    }
    // Stable afterwards, and leases keep being renewed every lease / 3.
    sim.run_for(secs(10));
    assert_eq!(sim.holders(), holders);
    assert_eq!(
        sim.actions(is_claim).len(),
        6,
        "one claim per vip, no conflicts"
    );
    let renewals = sim.actions(|a| matches!(a, Action::RenewLease { vip, .. } if vip == "nova"));
    assert!(
        (11..=13).contains(&renewals.len()),
        "{} renewals",
        renewals.len()
    );
}

/// keystone lives on ctl2 and fails over to ctl1 (by preference); the others elsewhere.
fn failover_vips(fencing: bool) -> Vec<VipPolicy> {
    vec![
        pref("keystone", &["ctl2", "ctl1", "ctl3"], fencing),
        pref("glance", &["ctl1", "ctl2", "ctl3"], fencing),
        pref("nova", &["ctl3", "ctl1", "ctl2"], fencing),
    ]
}

#[test]
fn dead_owner_is_fenced_before_takeover_with_backoff_on_failure() {
    let mut sim = Sim::new(&CTL, None, failover_vips(true));
    sim.run_for(secs(5));
    assert_eq!(sim.holder("keystone"), "ctl2");
    sim.fail_fences = 3;
    let died = sim.now;
    sim.kill("ctl2");
    let ok_at = sim.run_until(secs(30), |s| s.fences.iter().any(|f| f.3));
    let at: Vec<Duration> = sim.fences.iter().map(|f| f.0 - died).collect();
    assert!(sim
        .fences
        .iter()
        .all(|f| (f.1.as_str(), f.2.as_str()) == ("ctl1", "ctl2")));
    assert!(
        at[0] >= DETECT && at[0] <= DETECT + STEP,
        "first fence at {:?}",
        at[0]
    );
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, [secs(1), secs(2), secs(4)]);
    let failed = sim
        .statuses()
        .into_iter()
        .filter(|s| s.contains("FENCING ctl2 FAILED"));
    let failed: Vec<String> = failed.collect();
    assert_eq!(failed.len(), 3, "{failed:?}");
    assert!(failed[2].contains("retry in 4s") && failed[2].contains("keystone stays unowned"));
    // The takeover happens at the successful fence, never before it.
    let claims = sim.claims_of("keystone");
    let after: Vec<_> = claims.iter().filter(|c| c.0 > died).collect();
    assert_eq!(after, [&(ok_at, "ctl1".to_string(), 2)]);
    let agreed = sim.agreed();
    assert_eq!(agreed["keystone"], (Some("ctl1".into()), 2));
    assert_eq!(agreed["glance"], (Some("ctl1".into()), 1));
    assert_eq!(agreed["nova"], (Some("ctl3".into()), 1));
    assert_eq!(sim.actions(|a| matches!(a, Action::Fence { .. })).len(), 4);
}

#[test]
fn dead_owner_without_fencing_loses_vip_only_after_lease_and_margin() {
    let mut sim = Sim::new(&CTL, None, failover_vips(false));
    sim.run_for(secs(5));
    let last_heard = sim.now;
    sim.kill("ctl2");
    sim.run_for(DETECT + STEP);
    let state = &sim.nodes["ctl1"].own.view()[0].state;
    assert!(state.contains("for ctl2's lease to expire"), "{state}");
    let at = sim.run_until(secs(20), |s| s.holders()["keystone"] == ["ctl1"]);
    assert_eq!(
        at,
        last_heard + LEASE + MARGIN,
        "takeover exactly when the lease certainly ended"
    );
    assert!(sim
        .actions(|a| matches!(a, Action::Fence { .. }))
        .is_empty());
    assert_eq!(sim.agreed()["keystone"], (Some("ctl1".into()), 2));
}

#[test]
fn graceful_leave_hands_over_at_once() {
    let mut vips = failover_vips(true);
    vips.push(pref("cinder", &["ctl2", "ctl3", "ctl1"], false));
    let mut sim = Sim::new(&CTL, None, vips);
    sim.run_for(secs(5));
    assert_eq!(sim.holder("cinder"), "ctl2");
    let t = sim.now;
    sim.leave("ctl2");
    assert_eq!(sim.holder("keystone"), "ctl1");
    assert_eq!(sim.holder("cinder"), "ctl3");
    assert_eq!(
        sim.claims_of("keystone").last(),
        Some(&(t, "ctl1".into(), 2))
    );
    assert_eq!(sim.claims_of("cinder").last(), Some(&(t, "ctl3".into(), 2)));
    sim.run_for(secs(5));
    assert!(sim
        .actions(|a| matches!(a, Action::Fence { .. }))
        .is_empty());
    assert_eq!(sim.agreed()["cinder"], (Some("ctl3".into()), 2));
}

/// Partition {ctl1} | {ctl2, ctl3}, then heal; returns ctl1's former VIPs and the holders
/// right after the takeover.
fn partition_and_heal(sim: &mut Sim) -> (Vec<String>, Vec<String>) {
    sim.run_for(secs(5));
    let lost = sim.nodes["ctl1"].own.owned();
    assert!(
        !lost.is_empty(),
        "ctl1 should hold something: {:?}",
        sim.holders()
    );
    sim.partition(&[&["ctl1"], &["ctl2", "ctl3"]]);
    sim.run_until(secs(20), |s| {
        lost.iter()
            .all(|v| s.holders()[v].len() == 1 && s.holders()[v][0] != "ctl1")
    });
    let taken = sim.now;
    if let Some(ctl1) = sim.nodes.get("ctl1") {
        assert!(!ctl1.own.in_quorum() && ctl1.own.owned().is_empty());
    }
    assert!(
        sim.statuses().iter().any(|s| s.contains("QUORUM LOST")) || !sim.nodes.contains_key("ctl1")
    );
    let epochs = sim.nodes["ctl2"].own.view();
    assert!(epochs
        .iter()
        .filter(|v| lost.contains(&v.vip))
        .all(|v| v.epoch == 2));
    let holders: Vec<String> = SIX.iter().map(|v| sim.holder(v)).collect();
    if !sim.nodes.contains_key("ctl1") {
        sim.start("ctl1"); // fenced = powered off: it comes back as a fresh daemon
    }
    sim.heal();
    sim.run_for(secs(15));
    // No flapping back: stickiness keeps every VIP where it went, ctl1 regains nothing.
    let after: Vec<String> = SIX.iter().map(|v| sim.holder(v)).collect();
    assert_eq!(after, holders);
    assert!(sim.nodes["ctl1"].own.owned().is_empty());
    assert!(
        sim.log
            .iter()
            .all(|l| l.at <= taken || !is_claim(&l.action)),
        "claims after heal"
    );
    for (vip, (owner, epoch)) in sim.agreed() {
        let want = if lost.contains(&vip) { 2 } else { 1 };
        assert_eq!((owner, epoch), (Some(sim.holder(&vip)), want), "{vip}");
    }
    (lost, holders)
}

#[test]
fn partitioned_minority_releases_and_majority_waits_out_its_lease() {
    let mut sim = Sim::new(&CTL, None, six(false));
    partition_and_heal(&mut sim);
    let takeovers = sim.actions(|a| matches!(a, Action::Status(s) if s.starts_with("TAKEOVER")));
    let cut = sim.t0 + secs(5);
    assert!(takeovers
        .iter()
        .all(|l| l.at >= cut + LEASE + MARGIN - STEP));
}

/// The lease cap at work: ctl1's membership takes 10s to notice the partition, far beyond
/// `lease + margin`, yet its lease ends before the majority takes over.
#[test]
fn minority_with_a_slow_failure_detector_gives_up_before_takeover() {
    let mut sim = Sim::new(&CTL, None, six(false));
    sim.detect.insert("ctl1".into(), secs(10));
    sim.run_for(secs(5));
    let lost = sim.nodes["ctl1"].own.owned();
    assert!(!lost.is_empty());
    let cut = sim.now;
    sim.partition(&[&["ctl1"], &["ctl2", "ctl3"]]);
    sim.run_until(secs(20), |s| {
        lost.iter()
            .all(|v| s.holders()[v].len() == 1 && s.holders()[v][0] != "ctl1")
    });
    assert_eq!(sim.now, cut + LEASE + MARGIN);
    assert!(
        sim.nodes["ctl1"].own.in_quorum(),
        "its membership has not noticed yet"
    );
    let gave_up = sim.actions(|a| matches!(a, Action::Status(s) if s.contains("LEASE LOST")));
    assert!(gave_up
        .iter()
        .all(|l| l.node == "ctl1" && l.at == cut + LEASE));
    assert_eq!(gave_up.len(), 1);
    // Heal before its membership ever noticed: it must settle again, not re-claim with a
    // stale epoch (which would win the tie-break against the majority's claims).
    let holders: Vec<String> = SIX.iter().map(|v| sim.holder(v)).collect();
    sim.heal();
    sim.run_for(secs(15));
    assert_eq!(
        SIX.iter().map(|v| sim.holder(v)).collect::<Vec<_>>(),
        holders
    );
    assert!(sim.nodes["ctl1"].own.owned().is_empty());
    sim.agreed();
}

/// *Stale view* (model checker, finding 1): ctl1 is cut off longer than `margin` but shorter
/// than its failure detection, so it stays active while ctl2 keeps renewing keystone with
/// ctl3. ctl2 crashes as the partition heals; its pinned data-plane lease keeps serving.
/// ctl1 used to take over at its stale `last_seen(ctl2) + lease + margin` (the cut + 4s)
/// while ctl2's lease ran to at least the cut + 4.5s; now it counts ctl2 as seen when it
/// heard a quorum again, and takes over after ctl2's lease ended. ctl3, never cut off,
/// keeps its usual timing.
#[test]
fn a_node_cut_off_beyond_the_margin_waits_out_renewals_it_missed() {
    let mut sim = Sim::new(&CTL, None, failover_vips(false));
    sim.detect.insert("ctl1".into(), secs(3));
    sim.run_for(secs(5));
    assert_eq!(sim.holder("keystone"), "ctl2");
    let cut = sim.now;
    sim.partition(&[&["ctl1"], &["ctl2", "ctl3"]]);
    sim.run_for(secs(2) + STEP * 5);
    assert!(
        sim.nodes["ctl1"].own.in_quorum(),
        "its membership has not noticed"
    );
    assert!(sim.nodes["ctl1"]
        .own
        .owned()
        .contains(&"glance".to_string()));
    // ctl2 crashes as the partition heals: the kernel keeps serving its last lease.
    let served_until = sim.nodes["ctl2"].until["keystone"];
    assert!(served_until > cut + LEASE + MARGIN, "the finding's window");
    let healed = sim.now;
    sim.kill("ctl2");
    sim.heal();
    let at = sim.run_until(secs(20), |s| s.holders()["keystone"] == ["ctl1"]);
    assert!(
        at >= served_until,
        "took over at {at:?}, ctl2 served until {served_until:?}"
    );
    // A quorum (ctl3) is heard again at the first step after the heal.
    assert_eq!(at, healed + STEP + LEASE + MARGIN);
    let stale = |node: &str| {
        sim.log.iter().any(|l| {
            l.node == node && matches!(&l.action, Action::Status(s) if s.starts_with("STALE VIEW"))
        })
    };
    assert!(stale("ctl1") && !stale("ctl3"));
    assert_eq!(sim.agreed()["keystone"], (Some("ctl1".into()), 2));
}

#[test]
fn partitioned_minority_is_fenced_and_rejoins_without_stealing() {
    let mut sim = Sim::new(&CTL, None, six(true));
    sim.fence_kills = true;
    partition_and_heal(&mut sim);
    let fences = sim.actions(|a| matches!(a, Action::Fence { node, .. } if node == "ctl1"));
    assert!(!fences.is_empty());
    let takeovers = sim.actions(|a| matches!(a, Action::Status(s) if s.starts_with("TAKEOVER")));
    let cut = sim.t0 + secs(5);
    assert!(
        takeovers.iter().all(|l| l.at < cut + LEASE),
        "fencing beats lease expiry"
    );
}

#[test]
fn witness_gives_two_data_nodes_quorum_and_owns_nothing() {
    let mut sim = Sim::new(&["ctl1", "ctl2", "wit"], Some("wit"), six(false));
    sim.run_for(secs(5));
    let holders = sim.holders();
    assert!(
        holders.values().all(|h| h.len() == 1 && h[0] != "wit"),
        "{holders:?}"
    );
    sim.kill("ctl2");
    sim.run_until(secs(20), |s| s.holders().values().all(|h| h == &["ctl1"]));
    assert!(sim.nodes["ctl1"].own.in_quorum());
    assert!(sim
        .log
        .iter()
        .all(|l| l.node != "wit" || !is_claim(&l.action)));
    // Without the witness too, ctl1 is alone (1/3): it releases everything.
    sim.kill("wit");
    sim.run_for(DETECT + STEP);
    assert!(sim.nodes["ctl1"].own.owned().is_empty());
}

#[test]
fn move_hands_over_without_fencing_and_sticks() {
    let mut sim = Sim::new(&CTL, None, failover_vips(true));
    sim.run_for(secs(5));
    assert_eq!(sim.holder("glance"), "ctl1");
    let t = sim.now;
    let mv = super::Input::Move {
        vip: "glance".into(),
        to: "ctl2".into(),
    };
    sim.deliver("ctl3", mv);
    assert_eq!(sim.holder("glance"), "ctl2");
    assert_eq!(sim.claims_of("glance").last(), Some(&(t, "ctl2".into(), 2)));
    sim.run_for(secs(10));
    assert_eq!(
        sim.holder("glance"),
        "ctl2",
        "the preferred ctl1 does not take it back"
    );
    assert_eq!(sim.agreed()["glance"], (Some("ctl2".into()), 2));
    assert!(sim
        .actions(|a| matches!(a, Action::Fence { .. }))
        .is_empty());
    let bad = super::Input::Move {
        vip: "glance".into(),
        to: "ctl9".into(),
    };
    sim.deliver("ctl1", bad);
    assert!(sim.statuses().last().is_some_and(|s| s.contains("refused")));
    // A move to a dead node is refused by the owner (it used to bounce between nodes).
    sim.kill("ctl3");
    sim.run_for(DETECT + STEP);
    let dead = super::Input::Move {
        vip: "glance".into(),
        to: "ctl3".into(),
    };
    sim.deliver("ctl1", dead);
    assert!(sim
        .statuses()
        .last()
        .is_some_and(|s| s.contains("refused: ctl3 is not alive here")));
    assert_eq!(sim.holder("glance"), "ctl2");
}

#[test]
fn returning_preferred_node_does_not_steal_back() {
    let mut sim = Sim::new(&CTL, None, failover_vips(false));
    sim.run_for(secs(5));
    sim.leave("ctl2");
    assert_eq!(sim.holder("keystone"), "ctl1");
    sim.start("ctl2");
    sim.step();
    sim.step();
    // Members re-gossip everything when someone joins: the newcomer knows at once.
    assert_eq!(sim.agreed()["keystone"], (Some("ctl1".into()), 2));
    sim.run_for(secs(15));
    assert_eq!(sim.holder("keystone"), "ctl1");
    assert!(sim.nodes["ctl2"].own.owned().is_empty());
    assert_eq!(sim.agreed()["keystone"], (Some("ctl1".into()), 2));
}

#[test]
fn owner_restarting_before_detection_disowns_its_old_claim() {
    let mut sim = Sim::new(&CTL, None, failover_vips(true));
    sim.run_for(secs(5));
    sim.kill("ctl2");
    sim.start("ctl2"); // same instant: membership never saw it die
    sim.run_for(STEP * 2);
    let disown = |a: &Action| matches!(a, Action::Release { vip, epoch: 1 } if vip == "keystone");
    let disowned: Vec<_> = sim
        .actions(disown)
        .into_iter()
        .filter(|l| l.node == "ctl2")
        .collect();
    assert_eq!(disowned.len(), 1, "fresh ctl2 gives its old claim up");
    assert_eq!(sim.agreed()["keystone"], (None, 1));
    // It is still keystone's preferred node and alive: it claims anew after settling.
    let at = sim.run_until(secs(10), |s| s.holders()["keystone"] == ["ctl2"]);
    assert!(at >= sim.t0 + secs(5) + LEASE);
    assert_eq!(sim.agreed()["keystone"], (Some("ctl2".into()), 2));
    assert!(sim
        .actions(|a| matches!(a, Action::Fence { .. }))
        .is_empty());
}
