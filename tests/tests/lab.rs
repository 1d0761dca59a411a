//! The lab's topology as an end-to-end test: a client and three controllers running vipd in
//! cluster mode and real service processes, through the demo's scenarios, with assertions:
//! requests keep succeeding through a backend loss (errors only inside the detection window),
//! the owner's death moves the VIP within a second without resetting long-lived connections
//! to surviving backends and the client's neighbour entry follows, the dead controller
//! rejoins, and partitioning the new owner from the two others moves the VIP to the pair
//! with never two owners and no move back after the heal. And a planned vipd restart under
//! load (leave, stop, start) fails no request and moves each of its VIPs exactly once.
//! The first test goes on with a drain under load, a backend added and removed by reload
//! under load, and a primary/backup VIP whose writer's service dies and comes back.
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use vip_tests::{
    lab::{self, Bins, Lab, Names, Story, SERVICES},
    privileged, progress, vipd_bin,
};

fn bins() -> Bins {
    Bins {
        vipd: vipd_bin(),
        lab: PathBuf::from(env!("CARGO_BIN_EXE_vip-lab")),
    }
}

#[test]
fn lab_survives_backend_loss_owner_loss_rejoin_and_partition() {
    if !privileged("lab_survives_backend_loss_owner_loss_rejoin_and_partition") {
        return;
    }
    let bins = bins();
    let t0 = Instant::now();
    // Minutes of acts: one progress line after each, past libtest's capture.
    let done = |act: &str| progress!("lab: {act} done at {} s", t0.elapsed().as_secs());
    // Its own prefix: the operator's `viplab` lab may be running next to it.
    let names = Names::new(&format!("vlt{}", std::process::id() % 100_000));
    let mut lab = Lab::start(names, &bins, &|m| eprintln!("lab: {m}")).expect("lab starts");
    let story = Story::new();

    let seen = lab::balanced(&lab, Duration::from_secs(2)).expect("balanced");
    for s in SERVICES {
        let c = &seen[s.name];
        let backends = if s.primary_backup { 1 } else { 3 };
        assert_eq!(c.errors, 0, "{}: {c:?}", s.name);
        assert_eq!(c.by_backend.len(), backends, "{}: {c:?}", s.name);
    }

    let b = lab::backend_loss(&mut lab, &story).expect("backend loss");
    done("backend loss");
    eprintln!("{b:?}");
    assert!(b.detected_after < Duration::from_secs(2), "{b:?}");
    assert_eq!(b.errors_after, 0, "errors after detection: {b:?}");
    assert!(b.answered_after > 0, "{b:?}");

    let o = lab::owner_loss(&mut lab, &story).expect("owner loss");
    done("owner loss");
    eprintln!("{o:?}");
    assert!(o.takeover < Duration::from_secs(1), "{o:?}");
    assert_eq!(o.two_owner_samples, 0, "{o:?}");
    assert!(
        o.neighbour_moved.is_some(),
        "neighbour entry never moved: {o:?}"
    );
    assert!(o.streams_to_survivors > 0, "{o:?}");
    assert_eq!(o.streams_kept, o.streams_to_survivors, "{o:?}");

    // The dead controller reboots and rejoins: the cluster converges with all three.
    let i = lab.index_of(o.old_owner);
    let rejoined = lab::rejoin(&mut lab, &story, i, Duration::from_secs(15)).expect("rejoin");
    let rejoined = rejoined.unwrap_or_else(|e| panic!("rejoin: {e}"));
    done("rejoin");
    assert!(
        rejoined < Duration::from_secs(10),
        "rejoin took {rejoined:?}"
    );

    // The owner alone on one side, the pair on the other: the pair (in quorum) takes over
    // within about a second, the isolated node lets go, never two owners; after the heal
    // nothing moves back.
    let p = lab::partition(&mut lab, &story).expect("partition");
    done("partition");
    eprintln!("{p:?}");
    assert!(p.samples > 20, "{p:?}");
    assert_eq!(
        p.two_owner_samples, 0,
        "two owners during the partition: {p:?}"
    );
    let (took, new_owner) = p.takeover.clone().expect("the pair took over");
    assert_ne!(new_owner, p.node, "{p:?}");
    assert!(took < Duration::from_millis(1500), "{p:?}");
    assert!(
        p.isolated_last_held
            .is_none_or(|d| d < Duration::from_millis(800)),
        "the isolated node must let go within one lease: {p:?}"
    );
    assert_eq!(
        p.owner_after_heal.as_deref(),
        Some(new_owner.as_str()),
        "moved back after the heal: {p:?}"
    );
    assert!(p.settled_after_heal < Duration::from_secs(5), "{p:?}");

    let seen = lab::balanced(&lab, Duration::from_secs(2)).expect("after everything");
    // Every service answers after the heal. A single failed request right after the heal
    // was seen once in CI (the `stream` service, 1 of ~64): tolerated and printed here,
    // still under investigation (closing note of the cluster/lab issues).
    let errors: u64 = SERVICES.iter().map(|s| seen[s.name].errors).sum();
    eprintln!("after everything: {errors} failed requests: {seen:?}");
    assert!(errors <= 1, "after everything: {seen:?}");
    for s in SERVICES {
        assert!(
            !seen[s.name].by_backend.is_empty(),
            "{} answers after everything: {seen:?}",
            s.name
        );
    }
    // Cluster mode, every backend a member: a drain keeps the drained backend's established
    // connections (previous-table second chance) and gives it no new ones.
    let d = lab::drain_under_load(&mut lab, &story).expect("drain under load");
    done("drain under load");
    assert!(d.streams_to_drained > 0, "{d:?}");
    assert_eq!(d.kept_through_drain, d.streams_to_drained, "{d:?}");
    assert_eq!(d.others_kept, d.streams_to_others, "{d:?}");
    assert_eq!(d.errors, 0, "{d:?}");

    // A backend (a host without vipd) added to `stream` by reload on every controller under
    // load: no failed request, talking long-lived connections stay on their backends, the
    // new backend gets new connections; drained and removed the same way, nothing breaks
    // and it gets nothing more.
    let a = lab::backend_added_by_reload(&mut lab, &story).expect("backend added by reload");
    done("backend added by reload");
    eprintln!("{a:?}");
    assert!(a.in_tables_after < Duration::from_secs(2), "{a:?}");
    assert!(
        a.new_on_added > 0,
        "the added backend got no new connection: {a:?}"
    );
    assert_eq!(a.errors_add, 0, "{a:?}");
    assert_eq!(a.talking_kept, a.talking, "{a:?}");
    // Quiet connections (no segment between the reload and the new backend's first table):
    // the VIP switches from second chance to the flow table, which has no entry for them;
    // during the transition (the VIP's drain_timeout) a mid-stream miss follows the table
    // before the switch (VIP_F_PREV_TABLE), so they stay where they were too.
    assert_eq!(a.quiet_kept_add, a.quiet, "{a:?}");
    assert_eq!(a.quiet_kept_removal, a.quiet, "{a:?}");
    assert_eq!(a.on_added_through_drain, a.on_added, "{a:?}");
    assert_eq!(a.opened_while_in_kept, a.opened_while_in, "{a:?}");
    assert_eq!(a.errors_remove, 0, "{a:?}");
    assert_eq!(a.new_on_added_after_removal, 0, "{a:?}");

    // Primary/backup keeps its writer: the primary's service dies, the backup writes; the
    // primary returns and the writer stays (no connection to it reset, the controllers
    // never name two writers, new connections on one backend at a time); a promote on
    // every controller moves it back on purpose.
    let w = lab::primary_backup_keeps_writer(&mut lab, &story).expect("primary/backup");
    done("primary/backup");
    eprintln!("{w:?}");
    // Not asserted: whether the controllers agreed on the writer before the act. In 3 of the
    // first 13 runs (and 1 of 2 demos) the node isolated by the partition act, then fenced
    // and rebooted, named another writer than the two others: cut off, it took the others'
    // backends out and moved its writer, and after the reboot it restored that writer from
    // its state file. A daemon issue, reported with issue 13; the act promotes the primary
    // everywhere first.
    eprintln!(
        "writer before the act, as ctl1..3 name it: {:?} (not asserted, known daemon issue)",
        w.writers_at_start
    );
    assert!(w.failover < Duration::from_secs(1), "{w:?}");
    assert_ne!(w.backup, w.primary, "{w:?}");
    assert!(w.primary_up_after < Duration::from_secs(5), "{w:?}");
    assert_eq!(
        w.writer_after_return.as_deref(),
        Some(w.backup.as_str()),
        "{w:?}"
    );
    assert_eq!(w.to_backup_landed_on_backup, w.to_backup, "{w:?}");
    assert_eq!(
        w.to_backup_kept, w.to_backup,
        "reset by the primary's return: {w:?}"
    );
    assert!(w.samples > 50, "{w:?}");
    assert_eq!(w.disagreements, 0, "{w:?}");
    assert_eq!(w.split, 0, "{w:?}");
    assert_eq!(w.moved_back, 0, "{w:?}");
    assert_eq!(w.failed_new, 0, "{w:?}");
    // The client load's galera requests: one accepted by the primary in the instant of its
    // SIGKILL is reset with it (a sampler's was, in 4 of the first 13 runs); none elsewhere.
    assert!(w.galera_errors <= 1, "{w:?}");
    assert!(w.new_after_promote > 0, "{w:?}");
    assert_eq!(w.new_on_primary_after_promote, w.new_after_promote, "{w:?}");
}

#[test]
fn vipd_restart_under_load_fails_no_request_and_moves_each_vip_once() {
    if !privileged("vipd_restart_under_load_fails_no_request_and_moves_each_vip_once") {
        return;
    }
    let names = Names::new(&format!("vlr{}", std::process::id() % 100_000));
    let mut lab = Lab::start(names, &bins(), &|m| eprintln!("lab: {m}")).expect("lab starts");
    let story = Story::new();
    lab::balanced(&lab, Duration::from_secs(1)).expect("warm up");
    let r = lab::restart_under_load(&mut lab, &story).expect("restart");
    eprintln!("{r:?}");
    assert!(r.answered > 0, "{r:?}");
    assert_eq!(r.errors, 0, "failed requests across a vipd restart: {r:?}");
    // The leave handed each VIP to another node (one epoch), and it stayed there: the
    // returning node does not take it back.
    assert!(!r.owned.is_empty(), "{r:?}");
    for ((vip, before), (_, after)) in r.before.iter().zip(&r.after) {
        let (old, epoch) = before.clone().unwrap_or_else(|| panic!("{vip}: {r:?}"));
        let (new, after) = after.clone().unwrap_or_else(|| panic!("{vip}: {r:?}"));
        assert_eq!(old, r.node, "{vip}: {r:?}");
        assert_ne!(new, r.node, "{vip} moved back to the restarted node: {r:?}");
        assert_eq!(after, epoch + 1, "{vip}: one handover, no more: {r:?}");
    }
}
