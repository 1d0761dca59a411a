//! Placement (the pure function) and config validation.

use super::super::{placement, rendezvous_weight, ConfigError, OwnershipConfig, VipPolicy};
use super::sim::{pref, vip};
use super::unit::{cfg, names};

#[test]
fn placement_is_deterministic_and_order_free() {
    let voters = names(&["ctl1", "ctl2", "ctl3"]);
    let v = vip("keystone");
    let a = placement(&v, &names(&["ctl1", "ctl2", "ctl3"]), &voters, None);
    let b = placement(
        &v,
        &names(&["ctl3", "ctl1", "ctl2"]),
        &names(&["ctl2", "ctl3", "ctl1"]),
        None,
    );
    assert_eq!(a, b);
    assert!(a.is_some());
    // The hash is part of the protocol: nodes running different versions must agree. FNV-1a
    // 64 of "keystone\xffctl1" then splitmix64's finalizer, checked independently.
    assert_eq!(rendezvous_weight("keystone", "ctl1"), 0xbe85_cefc_c1de_33f3);
    assert_ne!(
        rendezvous_weight("keystone", "ctl1"),
        rendezvous_weight("keystone", "ctl2")
    );
    // Spread, and only a dead node's VIPs move.
    let all = names(&["ctl1", "ctl2", "ctl3"]);
    let two = names(&["ctl1", "ctl3"]);
    let mut per = [0; 3];
    for i in 0..300 {
        let v = vip(&format!("vip{i}"));
        let p = placement(&v, &all, &voters, None).expect("alive");
        per[voters.iter().position(|n| *n == p).expect("voter")] += 1;
        let q = placement(&v, &two, &voters, None).expect("alive");
        assert!(p == "ctl2" || p == q, "vip{i} moved from {p} to {q}");
    }
    assert!(per.iter().all(|n| *n > 70), "{per:?}");
}

#[test]
fn placement_respects_preferences_allowed_and_witness() {
    let voters = names(&["ctl1", "ctl2", "ctl3", "wit"]);
    let all = voters.clone();
    let p = pref("keystone", &["ctl3", "ctl1"], false);
    assert_eq!(
        placement(&p, &all, &voters, Some("wit")).as_deref(),
        Some("ctl3")
    );
    assert_eq!(
        placement(&p, &names(&["ctl1", "ctl2"]), &voters, Some("wit")).as_deref(),
        Some("ctl1")
    );
    assert_eq!(
        placement(&p, &names(&["ctl2", "wit"]), &voters, Some("wit")).as_deref(),
        Some("ctl2")
    );
    let allowed = VipPolicy {
        allowed: Some(names(&["ctl2", "ctl3"])),
        ..pref("x", &["ctl1"], false)
    };
    assert_ne!(
        placement(&allowed, &all, &voters, Some("wit")).as_deref(),
        Some("ctl1")
    );
    assert_eq!(
        placement(&allowed, &names(&["ctl1", "ctl3"]), &voters, None).as_deref(),
        Some("ctl3")
    );
    assert_eq!(
        placement(&vip("x"), &names(&["wit"]), &voters, Some("wit")),
        None
    );
    assert_eq!(placement(&vip("x"), &names(&["ctl9"]), &voters, None), None);
}

#[test]
fn config_is_validated() {
    let ok = cfg("ctl1", vec![vip("a")]);
    assert_eq!(ok.validate(), Ok(()));
    let bad = OwnershipConfig {
        me: "ctl9".into(),
        ..ok.clone()
    };
    assert_eq!(bad.validate(), Err(ConfigError::MeNotVoter("ctl9".into())));
    let bad = OwnershipConfig {
        witness: Some("w".into()),
        ..ok.clone()
    };
    assert_eq!(
        bad.validate(),
        Err(ConfigError::WitnessNotVoter("w".into()))
    );
    let bad = OwnershipConfig {
        vips: vec![vip("a"), vip("a")],
        ..ok.clone()
    };
    assert_eq!(bad.validate(), Err(ConfigError::DuplicateVip("a".into())));
    let witness = OwnershipConfig {
        witness: Some("ctl3".into()),
        vips: vec![pref("a", &["ctl3"], true)],
        ..ok
    };
    let err = ConfigError::WitnessListed {
        vip: "a".into(),
        node: "ctl3".into(),
    };
    assert_eq!(witness.validate(), Err(err));
}
