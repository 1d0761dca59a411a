//! `Input::Reconfigure` (a config reload adding, removing or re-policing VIPs), one rule of
//! the module docs' "Reconfiguration" per test. Every simulation checks after every call that
//! no two nodes serve a VIP.

use std::time::Instant;

use super::super::{Action, Claim, Gossip, Input, Ownership, VipPolicy};
use super::sim::{pref, Sim, DETECT, LEASE, STEP};
use super::unit::{cfg, names};
use super::{failover_vips, secs, six, CTL};

/// `vips` with `name` left out.
fn without(vips: &[VipPolicy], name: &str) -> Vec<VipPolicy> {
    vips.iter().filter(|v| v.name != name).cloned().collect()
}

fn with(mut vips: Vec<VipPolicy>, v: VipPolicy) -> Vec<VipPolicy> {
    vips.retain(|x| x.name != v.name);
    vips.push(v);
    vips
}

fn claim(vip: &str, owner: &str, epoch: u64) -> Claim {
    Claim {
        vip: vip.into(),
        owner: owner.into(),
        epoch,
    }
}

/// Actions `node` took at instant `at`.
fn acted(sim: &Sim, node: &str, at: Instant) -> Vec<Action> {
    let mine = sim.log.iter().filter(|l| l.node == node && l.at == at);
    mine.map(|l| l.action.clone()).collect()
}

/// Rolling add: ctl1 reloads first and claims after settling; ctl2 and ctl3 reload later with
/// configs that prefer themselves (the rolling reload also changed the preferences), so
/// each would claim at once if it did not first learn ctl1's claim, which it ignored while the
/// VIP was unknown there: the per-VIP settle is what keeps them off it.
#[test]
fn added_vip_settles_then_the_first_adder_claims_and_later_adders_never_claim_over_it() {
    let mut sim = Sim::new(&CTL, None, six(false));
    sim.run_for(secs(5));
    let added = sim.now;
    sim.reconfigure("ctl1", with(six(false), pref("cinder", &["ctl1"], false)));
    let line = sim.statuses().last().cloned().unwrap_or_default();
    assert!(
        line.contains("added vip cinder (settling 3s first)"),
        "{line}"
    );
    let claimed = sim.run_until(secs(10), |s| !s.holders()["cinder"].is_empty());
    assert_eq!(
        claimed,
        added + LEASE,
        "claimed as soon as settled, not before"
    );
    assert_eq!(sim.holder("cinder"), "ctl1");
    sim.run_for(secs(2));
    sim.reconfigure("ctl2", with(six(false), pref("cinder", &["ctl2"], false)));
    sim.run_for(STEP * 3);
    sim.reconfigure("ctl3", with(six(false), pref("cinder", &["ctl3"], false)));
    let view = &sim.nodes["ctl3"].own.view()[6];
    assert!(view.state.starts_with("settling"), "{view:?}");
    sim.run_for(secs(10));
    assert_eq!(sim.claims_of("cinder"), [(claimed, "ctl1".to_string(), 1)]);
    assert_eq!(sim.holder("cinder"), "ctl1");
    assert_eq!(sim.agreed()["cinder"], (Some("ctl1".into()), 1));
    // The VIPs that were there all along never moved.
    assert_eq!(sim.actions(|a| matches!(a, Action::Claim { .. })).len(), 7);
}

/// A VIP added on one node only stays unowned while placement there picks a node that does
/// not have it yet: the node that reloads first claims nothing it is not placed on.
#[test]
fn added_vip_waits_for_the_node_placement_picks() {
    let mut sim = Sim::new(&CTL, None, six(false));
    sim.run_for(secs(5));
    let cinder = pref("cinder", &["ctl3", "ctl1", "ctl2"], false);
    sim.reconfigure("ctl1", with(six(false), cinder.clone()));
    sim.run_for(secs(6));
    assert!(sim.holders()["cinder"].is_empty());
    let state = &sim.nodes["ctl1"].own.view()[6].state;
    assert_eq!(state, "placed on ctl3");
    let added = sim.now;
    sim.reconfigure("ctl3", with(six(false), cinder));
    let at = sim.run_until(secs(10), |s| !s.holders()["cinder"].is_empty());
    assert_eq!((sim.holder("cinder"), at), ("ctl3".into(), added + LEASE));
}

/// A kept VIP keeps its record, claimants and held lease: new preferences do not move it
/// (stickiness), and new fencing applies to the next takeover.
#[test]
fn kept_vip_keeps_owner_epoch_and_lease_and_takes_the_new_policy() {
    let mut sim = Sim::new(&CTL, None, failover_vips(false));
    sim.run_for(secs(5));
    assert_eq!(sim.holder("keystone"), "ctl2");
    // keystone now prefers ctl3 and is fenced.
    let mut vips = failover_vips(false);
    vips[0] = pref("keystone", &["ctl3", "ctl1", "ctl2"], true);
    let t = sim.now;
    for node in CTL {
        sim.reconfigure(node, vips.clone());
    }
    let changed = sim.log.iter().filter(|l| l.at == t).map(|l| &l.action);
    let moved = changed.filter(|a| {
        matches!(
            a,
            Action::Claim { .. } | Action::Release { .. } | Action::Status(_)
        )
    });
    assert_eq!(moved.count(), 0, "nothing moves, nothing to say");
    sim.run_for(secs(5));
    assert_eq!(sim.holder("keystone"), "ctl2", "sticky: no move to ctl3");
    assert_eq!(sim.agreed()["keystone"], (Some("ctl2".into()), 1));
    let renewed =
        sim.actions(|a| matches!(a, Action::RenewLease { vip, epoch: 1, .. } if vip == "keystone"));
    assert!(
        renewed.iter().any(|l| l.at > t),
        "the held lease is renewed on"
    );
    // Fencing now applies: the dead owner is fenced before the takeover, by ctl3 (first
    // preference now).
    sim.kill("ctl2");
    let at = sim.run_until(secs(10), |s| s.holders()["keystone"] == ["ctl3"]);
    assert_eq!(sim.fences.len(), 1);
    let (fenced_at, by, node, ok) = sim.fences[0].clone();
    assert_eq!((by.as_str(), node.as_str(), ok), ("ctl3", "ctl2", true));
    assert!(fenced_at <= at);
}

/// A kept VIP that is no longer eligible on its owner is released by the existing Release
/// step and claimed by the new placement; never while the old owner still holds it.
#[test]
fn kept_vip_no_longer_eligible_here_is_released_to_placement() {
    let mut sim = Sim::new(&CTL, None, failover_vips(false));
    sim.run_for(secs(5));
    assert_eq!(sim.holder("keystone"), "ctl2");
    let mut vips = failover_vips(false);
    vips[0].allowed = Some(names(&["ctl1", "ctl3"]));
    sim.reconfigure("ctl1", vips.clone());
    sim.reconfigure("ctl3", vips.clone());
    sim.run_for(secs(1));
    let state = &sim.nodes["ctl1"].own.view()[0].state;
    assert!(state.contains("waiting for ctl2 to release it"), "{state}");
    assert_eq!(sim.holder("keystone"), "ctl2");
    let t = sim.now;
    sim.reconfigure("ctl2", vips);
    let said = acted(&sim, "ctl2", t);
    let line = Action::Status("vip keystone: not eligible here: released".into());
    assert!(said.contains(&line), "{said:?}");
    assert_eq!(sim.holder("keystone"), "ctl1");
    assert_eq!(
        sim.claims_of("keystone").last(),
        Some(&(t, "ctl1".into(), 2))
    );
}

/// Removing a held VIP releases it at once (Release, Released, a status line) and forgets
/// it; a node still configured with it takes it over by the usual rules only: here ctl2,
/// where placement puts it (ctl1 held it by stickiness), at once since it was released.
#[test]
fn removed_vip_is_released_and_a_node_still_configured_takes_it_over_by_the_usual_rules() {
    let mut sim = Sim::new(&CTL, None, failover_vips(false));
    sim.run_for(secs(5));
    assert_eq!(sim.holder("glance"), "ctl1");
    let mut vips = failover_vips(false);
    vips[1] = pref("glance", &["ctl2", "ctl3", "ctl1"], false);
    for node in CTL {
        sim.reconfigure(node, vips.clone());
    }
    assert_eq!(sim.holder("glance"), "ctl1", "sticky");
    let t = sim.now;
    sim.reconfigure("ctl1", without(&vips, "glance"));
    let done = acted(&sim, "ctl1", t);
    for a in [
        Action::Release {
            vip: "glance".into(),
            epoch: 1,
        },
        Action::Broadcast(Gossip::Released(claim("glance", "ctl1", 1))),
        Action::Status("vip glance: removed from the config: released (epoch 1)".into()),
        Action::Status("RECONFIGURED: removed vip glance".into()),
    ] {
        assert!(done.contains(&a), "{a:?} missing from {done:?}");
    }
    assert!(sim.nodes["ctl1"]
        .own
        .view()
        .iter()
        .all(|v| v.vip != "glance"));
    assert_eq!(sim.holder("glance"), "ctl2");
    assert_eq!(sim.claims_of("glance").last(), Some(&(t, "ctl2".into(), 2)));
    let takeover = "ctl2: TAKEOVER vip glance from ctl1 (released), epoch 2";
    assert!(sim.statuses().iter().any(|s| s == takeover));
    sim.run_for(secs(10));
    assert_eq!(sim.holder("glance"), "ctl2");
    assert_eq!(sim.actions(|a| matches!(a, Action::Claim { .. })).len(), 4);
    // Removed everywhere. Meanwhile ctl3 still places glance on ctl2 (alive, first
    // preference in ctl3's file), so nobody claims it: a rolling removal leaves it unowned
    // from when its holder reloads.
    sim.reconfigure("ctl2", without(&vips, "glance"));
    sim.run_for(secs(5));
    assert!(sim.holders()["glance"].is_empty());
    assert_eq!(sim.nodes["ctl3"].own.view()[1].state, "placed on ctl2");
    sim.reconfigure("ctl3", without(&vips, "glance"));
    sim.run_for(secs(5));
    assert!(sim.holders()["glance"].is_empty());
    let agreed = sim.agreed();
    assert!(!agreed.contains_key("glance"), "{agreed:?}");
    assert_eq!(agreed["keystone"], (Some("ctl2".into()), 1));
}

/// A release nobody else repeats: ctl3 (now glance's first preference, but ctl1 holds it by
/// stickiness) is cut off when ctl1 removes glance, and ctl2 removed it earlier. ctl1 keeps
/// gossiping its release, so ctl3 learns it once healed and claims; without that, ctl3 would
/// keep glance on ctl1 (alive) forever and nobody would serve it.
#[test]
fn a_release_missed_during_a_partition_is_repeated_after_removal() {
    let mut sim = Sim::new(&CTL, None, failover_vips(false));
    sim.run_for(secs(5));
    let mut vips = failover_vips(false);
    vips[1] = pref("glance", &["ctl3", "ctl2", "ctl1"], false);
    for node in CTL {
        sim.reconfigure(node, vips.clone());
    }
    sim.reconfigure("ctl2", without(&vips, "glance"));
    sim.partition(&[&["ctl1", "ctl2"], &["ctl3"]]);
    sim.run_for(DETECT + STEP * 2);
    assert_eq!(sim.holder("glance"), "ctl1");
    sim.reconfigure("ctl1", without(&vips, "glance"));
    assert!(sim.holders()["glance"].is_empty());
    sim.run_for(secs(2));
    sim.heal();
    let healed = sim.now;
    let at = sim.run_until(secs(10), |s| s.holders()["glance"] == ["ctl3"]);
    assert!(
        at >= healed + LEASE,
        "after settling again: {:?}",
        at - healed
    );
    assert_eq!(sim.claims_of("glance").last().map(|c| c.2), Some(2));
}

/// A handover to a node that removed the VIP (ctl2 leaves, its placement picks ctl1, which
/// removed keystone): ctl1 disowns the claim in its name, so ctl3 (whose config puts
/// keystone on itself after ctl2) claims it; else keystone would stay on ctl1, unserved.
#[test]
fn a_handover_to_a_node_that_removed_the_vip_is_disowned() {
    let mut sim = Sim::new(&CTL, None, failover_vips(false));
    sim.run_for(secs(5));
    assert_eq!(sim.holder("keystone"), "ctl2");
    let mut vips = failover_vips(false);
    vips[0] = pref("keystone", &["ctl2", "ctl3", "ctl1"], false);
    sim.reconfigure("ctl3", vips);
    sim.reconfigure("ctl1", without(&failover_vips(false), "keystone"));
    let t = sim.now;
    sim.leave("ctl2");
    let said = acted(&sim, "ctl1", t);
    let gone = Action::Broadcast(Gossip::Released(claim("keystone", "ctl1", 2)));
    assert!(said.contains(&gone), "{said:?}");
    assert!(sim.claims_of("keystone").iter().all(|c| c.1 != "ctl1"));
    // ctl3 claims once ctl2, gone from its alive set, can no longer serve anything.
    let at = sim.run_until(secs(10), |s| s.holders()["keystone"] == ["ctl3"]);
    assert_eq!(
        sim.claims_of("keystone").last(),
        Some(&(at, "ctl3".into(), 3))
    );
}

#[test]
fn an_invalid_vip_set_is_refused_and_changes_nothing() {
    let t = Instant::now();
    let mut o = Ownership::new(cfg("ctl1", vec![pref("nova", &["ctl1"], false)]), t);
    for bad in [
        vec![pref("nova", &["ctl9"], false)],
        vec![pref("nova", &[], false), pref("nova", &[], true)],
    ] {
        let out = o.handle(Input::Reconfigure(bad), t);
        assert!(
            matches!(&out[..], [Action::Status(s)] if s.starts_with("RECONFIGURE refused")),
            "{out:?}"
        );
    }
    assert_eq!(o.cfg.vips, [pref("nova", &["ctl1"], false)]);
}

/// Gossip about a VIP not configured here: a claim in our name is disowned once per epoch and
/// the release re-gossiped; another node's newer record ends that.
#[test]
fn gossip_about_an_unknown_vip_is_ignored_but_claims_in_our_name_are_disowned() {
    let t = Instant::now();
    let mut o = Ownership::new(cfg("ctl1", vec![]), t);
    assert!(o
        .handle(Input::Claim(claim("nova", "ctl2", 4)), t)
        .is_empty());
    let out = o.handle(Input::Claim(claim("nova", "ctl1", 5)), t);
    let gone = Action::Broadcast(Gossip::Released(claim("nova", "ctl1", 5)));
    assert_eq!(out, std::slice::from_ref(&gone));
    assert!(o
        .handle(Input::Claim(claim("nova", "ctl1", 5)), t)
        .is_empty());
    assert!(o.tick(t + LEASE / 3).contains(&gone), "re-gossiped");
    o.handle(Input::Claim(claim("nova", "ctl3", 6)), t);
    assert!(
        !o.tick(t + LEASE).contains(&gone),
        "moot once ctl3 claimed above it"
    );
}
