//! Out of service (`vipd node standby`, failed `track` conditions): the node keeps voting
//! but owns nothing, on every node that heard its state.

use std::time::Instant;

use super::super::{Input, NodeState, Ownership};
use super::sim::{pref, Sim, DETECT, LEASE};
use super::unit::{cfg, names};
use super::{secs, CTL};

fn state(node: &str, reason: Option<&str>, version: u64) -> Input {
    Input::NodeState(NodeState {
        node: node.into(),
        reason: reason.map(str::to_string),
        version,
    })
}

/// keystone prefers ctl1 then ctl2: settled on ctl1.
fn keystone_on_ctl1() -> Sim {
    let mut sim = Sim::new(&CTL, None, vec![pref("keystone", &["ctl1", "ctl2"], false)]);
    sim.run_for(LEASE + secs(1));
    assert_eq!(sim.holder("keystone"), "ctl1");
    sim
}

#[test]
fn standby_hands_over_and_nobody_places_on_it() {
    let mut sim = keystone_on_ctl1();
    sim.deliver("ctl1", state("ctl1", Some("standby"), 10));
    // A handover, like a leave: the next preference holds it at once, no lease wait.
    assert_eq!(sim.holder("keystone"), "ctl2");
    sim.run_for(secs(2));
    assert_eq!(sim.holder("keystone"), "ctl2");
    // ctl2 dies: ctl1 is alive and preferred, but out of service: ctl3 takes it.
    sim.kill("ctl2");
    sim.run_until(DETECT + LEASE * 3, |s| s.holders()["keystone"] == ["ctl3"]);
    sim.run_for(secs(3));
    assert_eq!(sim.holder("keystone"), "ctl3");
    let by_ctl1_after = sim
        .claims_of("keystone")
        .into_iter()
        .filter(|(_, n, e)| n == "ctl1" && *e > 1)
        .count();
    assert_eq!(by_ctl1_after, 0, "ctl1 claimed while out of service");
    let view = sim.nodes["ctl3"].own.out_of_service("ctl1");
    assert_eq!(view, Some("standby"));
}

#[test]
fn back_in_service_nothing_moves_back() {
    let mut sim = keystone_on_ctl1();
    sim.deliver("ctl1", state("ctl1", Some("standby"), 10));
    sim.run_for(secs(1));
    sim.deliver("ctl1", state("ctl1", None, 11));
    sim.run_for(secs(5));
    assert_eq!(sim.holder("keystone"), "ctl2", "stickiness: no move back");
    assert!(sim.nodes.values().all(|n| n.own.nodes_out().is_empty()));
    // In service again, ctl1 is placed first when the owner goes.
    sim.kill("ctl2");
    sim.run_until(DETECT + LEASE * 3, |s| s.holders()["keystone"] == ["ctl1"]);
}

#[test]
fn standby_of_the_only_eligible_node_releases() {
    let mut vips = vec![pref("galera", &[], false)];
    vips[0].allowed = Some(names(&["ctl1"]));
    let mut sim = Sim::new(&CTL, None, vips);
    sim.run_for(LEASE + secs(1));
    assert_eq!(sim.holder("galera"), "ctl1");
    sim.deliver("ctl1", state("ctl1", Some("track: link eth0 down"), 5));
    sim.run_for(secs(1));
    assert!(sim.holders()["galera"].is_empty());
    sim.deliver("ctl1", state("ctl1", None, 6));
    sim.run_until(LEASE, |s| s.holders()["galera"] == ["ctl1"]);
}

#[test]
fn an_older_node_state_is_ignored() {
    let t = Instant::now();
    let mut o = Ownership::new(cfg("ctl1", vec![pref("nova", &[], false)]), t);
    o.handle(state("ctl2", Some("standby"), 5), t);
    o.handle(state("ctl2", None, 3), t);
    assert_eq!(o.out_of_service("ctl2"), Some("standby"));
    assert_eq!(o.nodes_out(), [("ctl2".to_string(), "standby".to_string())]);
    o.handle(state("ctl2", None, 6), t);
    assert_eq!(o.out_of_service("ctl2"), None);
}
