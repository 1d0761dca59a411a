//! `vip-lab --demo`: the scripted story, every step printed with its time since the start,
//! and a summary table of what was measured.
use std::{fmt::Display, time::Duration, time::Instant};

use super::{
    display::traffic_table,
    reload::{self, BackendAdded},
    restart::RestartUnderLoad,
    running::Lab,
    scenarios::{self, BackendLoss, DrainUnderLoad, OwnerLoss, Partition},
    topology::Names,
    writer::{self, WriterKept},
    Bins,
};

/// A timeline: each line prefixed with the seconds since the story began.
pub struct Story {
    t0: Instant,
}

impl Default for Story {
    fn default() -> Self {
        Self::new()
    }
}

impl Story {
    pub fn new() -> Self {
        Self { t0: Instant::now() }
    }

    pub fn say(&self, msg: impl Display) {
        println!("[{:>7.3}s] {msg}", self.t0.elapsed().as_secs_f64());
    }

    pub fn chapter(&self, title: &str) {
        println!("\n=== {title} ===");
    }
}

/// Builds the lab, plays the acts, prints the summary; the lab is gone when it returns.
pub fn demo(names: Names, bins: &Bins) -> anyhow::Result<()> {
    let story = Story::new();
    story.chapter("starting the lab");
    let mut lab = Lab::start(names, bins, &|m| story.say(m))?;
    let result = acts(&mut lab, &story);
    if result.is_err() {
        lab.keep_state = true;
    }
    let acts = result?;
    drop(lab);
    story.say("lab removed (namespaces, links, pins, processes)");
    print_summary(&acts);
    Ok(())
}

struct Acts {
    backend: BackendLoss,
    owner: OwnerLoss,
    rejoined: Duration,
    partition: Partition,
    restart: RestartUnderLoad,
    drain: DrainUnderLoad,
    added: BackendAdded,
    writer: WriterKept,
}

fn acts(lab: &mut Lab, story: &Story) -> anyhow::Result<Acts> {
    story.chapter("1. balanced traffic");
    let window = Duration::from_secs(3);
    let seen = scenarios::balanced(lab, window)?;
    story.say(format!(
        "client traffic over {window:?}, by service and backend:"
    ));
    print!("{}", traffic_table(&seen, None));

    story.chapter("2. a backend service dies");
    let backend = scenarios::backend_loss(lab, story)?;
    story.say(format!(
        "failed requests: {} inside the detection window, {} after it ({} answered)",
        backend.errors_in_window, backend.errors_after, backend.answered_after
    ));

    story.chapter("3. the VIP owner dies");
    let owner = scenarios::owner_loss(lab, story)?;

    // Back to three before the partition: with one node down, neither side of a 1 | 1 split
    // would have quorum.
    story.chapter("4. the dead controller comes back");
    let i = lab.index_of(owner.old_owner);
    let rejoined = scenarios::rejoin(lab, story, i, Duration::from_secs(15))?
        .map_err(|e| anyhow::anyhow!("the crashed controller's rejoin went wrong: {e}"))?;

    story.chapter("5. the owner is partitioned from the two others, then healed");
    let partition = scenarios::partition(lab, story)?;
    let seen = scenarios::balanced(lab, Duration::from_secs(2))?;
    story.say("traffic after the heal, over 2 s:");
    print!("{}", traffic_table(&seen, None));

    story.chapter("6. a planned vipd restart (an upgrade) of the VIP owner");
    let restart = super::restart_under_load(lab, story)?;
    for ((vip, before), (_, after)) in restart.before.iter().zip(&restart.after) {
        let show = |o: &Option<(String, u64)>| {
            o.as_ref()
                .map_or("no agreement".into(), |(n, e)| format!("{n} (epoch {e})"))
        };
        story.say(format!("{vip}: {} -> {}", show(before), show(after)));
    }
    story.chapter("7. a backend drained under load, then enabled");
    let drain = scenarios::drain_under_load(lab, story)?;
    story.chapter("8. a backend added by reload under load, then drained and removed");
    let added = reload::backend_added_by_reload(lab, story)?;
    story.chapter("9. primary/backup: the writer's service dies and comes back");
    let writer = writer::primary_backup_keeps_writer(lab, story)?;
    Ok(Acts {
        backend,
        owner,
        rejoined,
        partition,
        restart,
        drain,
        added,
        writer,
    })
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn print_summary(acts: &Acts) {
    let Acts {
        backend: b,
        owner: o,
        rejoined,
        partition: p,
        restart: r,
        drain: d,
        added: a,
        writer: w,
    } = acts;
    let rows = [
        (
            format!("backend {}/{} killed: detected", b.service, b.node),
            ms(b.detected_after),
        ),
        (
            "  failed requests inside / after the window".into(),
            format!("{} / {}", b.errors_in_window, b.errors_after),
        ),
        ("  restarted: back in every table".into(), ms(b.back_after)),
        (
            format!("owner {} killed: {} took over", o.old_owner, o.new_owner),
            ms(o.takeover),
        ),
        (
            "  client neighbour entry moved".into(),
            o.neighbour_moved.map_or("never".into(), ms),
        ),
        (
            "  long-lived connections to survivors kept".into(),
            format!(
                "{}/{} ({} to the dead node)",
                o.streams_kept, o.streams_to_survivors, o.streams_to_dead
            ),
        ),
        (
            "  failed requests (all services)".into(),
            o.errors.to_string(),
        ),
        (
            format!("{} powered on: rejoined, converged", o.old_owner),
            ms(*rejoined),
        ),
        (
            format!("partition of {}: the pair took over", p.node),
            p.takeover
                .as_ref()
                .map_or("no".into(), |(d, n)| format!("{} ({n})", ms(*d))),
        ),
        (
            format!("  {} last held a VIP after the cut", p.node),
            p.isolated_last_held.map_or("never".into(), ms),
        ),
        (
            "  samples with two owners".into(),
            format!(
                "{} of {} (+{} in act 3)",
                p.two_owner_samples, p.samples, o.two_owner_samples
            ),
        ),
        (
            "  fenced".into(),
            if p.fenced { "yes" } else { "no" }.into(),
        ),
        (
            format!(
                "  settled after heal, owner {}",
                p.owner_after_heal.as_deref().unwrap_or("?")
            ),
            ms(p.settled_after_heal),
        ),
        (
            format!("vipd on {} restarted (leave, stop, start)", r.node),
            format!("converged in {}", ms(r.back_after)),
        ),
        (
            "  failed requests across the restart".into(),
            format!("{} of {}", r.errors, r.errors + r.answered),
        ),
        (
            format!(
                "stream/{} drained, then enabled: its connections kept",
                d.node
            ),
            format!("{} of {}", d.kept_through_drain, d.streams_to_drained),
        ),
        (
            "  other long-lived connections kept / failed new requests".into(),
            format!(
                "{} of {} / {}",
                d.others_kept, d.streams_to_others, d.errors
            ),
        ),
        (
            format!(
                "{}/{} added by reload: in every table",
                a.service, a.backend
            ),
            ms(a.in_tables_after),
        ),
        (
            "  its share of new requests / failed new requests".into(),
            format!(
                "{} of {} / {}",
                a.new_on_added, a.new_answered, a.errors_add
            ),
        ),
        (
            "  drained, removed: failed new / new to it after".into(),
            format!("{} / {}", a.errors_remove, a.new_on_added_after_removal),
        ),
        (
            "  opened before the add, kept: talking / quiet".into(),
            format!(
                "{} of {} / {} of {}",
                a.talking_kept, a.talking, a.quiet_kept_removal, a.quiet
            ),
        ),
        (
            "  opened while it was in, kept through the removal".into(),
            format!("{} of {}", a.opened_while_in_kept, a.opened_while_in),
        ),
        (
            "galera writer before act 9 (ctl1, ctl2, ctl3)".into(),
            w.writers_at_start.join(", "),
        ),
        (
            format!("galera/{} killed: {} writes", w.primary, w.backup),
            ms(w.failover),
        ),
        (
            format!("  {} back: writer after its return", w.primary),
            w.writer_after_return
                .clone()
                .unwrap_or("no agreement".into()),
        ),
        (
            format!("  connections to {} kept through the return", w.backup),
            format!("{} of {}", w.to_backup_kept, w.to_backup),
        ),
        (
            "  rounds disagreeing / split / moved back".into(),
            format!(
                "{} / {} / {} of {} (+{} in the failover)",
                w.disagreements, w.split, w.moved_back, w.samples, w.failover_disagreements
            ),
        ),
        (
            format!("  promoted {}: its share of new connections", w.primary),
            format!(
                "{} of {}",
                w.new_on_primary_after_promote, w.new_after_promote
            ),
        ),
        (
            format!("  connections to {} still on it after", w.backup),
            format!("{} of {}", w.to_backup_after_promote, w.to_backup),
        ),
    ];
    println!("\n=== summary ===");
    for (what, value) in rows {
        println!("{what:<50} {value}");
    }
}
