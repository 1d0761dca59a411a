//! `vip-lab --bgp --demo`: the routed VIP under ECMP through the four events of issue 18:
//! traffic spread over the three balancers, one balancer's vipd killed, one controller's link
//! cut, a node drained and returned. Each step is measured while the client's load runs:
//! failed requests, long-lived connections broken (to backends that stayed), and how long the
//! router took to change its next hops, polled from its routing table.
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use vip_daemon::shell::status::Status;

use super::{
    bgp::{hop_names, packets_since, snapshot, Routed, ROUTED_VIP},
    config::CONTROLLERS,
    ns_cmd, pause,
    story::Story,
    topology::Names,
    traffic::{since, Snapshot},
    Bins,
};

/// What the demo measured; the end-to-end test asserts on it.
#[derive(Clone, Debug)]
pub struct BgpDemo {
    /// Packets per balancer for the routed VIP while the load ran over all three.
    pub spread: Vec<u64>,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug)]
pub struct Step {
    pub what: String,
    /// Requests of the client's load that failed during the step, and those answered.
    pub failed: u64,
    pub answered: u64,
    /// Long-lived connections that broke or moved, to backends that stayed up: how each did.
    pub broken: Vec<String>,
    /// Long-lived connections to the lost controller's own backend (not counted): its link
    /// was cut, or its vipd was down and the others took its backend out meanwhile.
    pub lost_with_backend: usize,
    /// The router's next hops changed this long after the event; None: they did not change.
    pub convergence: Option<Duration>,
    /// And changed back this long after the return, where there was one.
    pub return_convergence: Option<Duration>,
}

const STREAMS: usize = 30;

pub fn bgp_demo(names: Names, bins: &Bins) -> anyhow::Result<BgpDemo> {
    let story = Story::new();
    story.chapter("starting the lab with routed VIPs (--bgp)");
    let mut routed = Routed::start(names, bins, &|m| story.say(m))?;
    let result = bgp_acts(&mut routed, &story);
    if result.is_err() {
        routed.lab.keep_state = true;
    }
    let demo = result?;
    drop(routed);
    story.say("lab removed (namespaces, links, pins, processes, FRR instances)");
    print_summary(&demo);
    Ok(demo)
}

fn failed_and_answered(now: &Snapshot, before: &Snapshot) -> (u64, u64) {
    since(now, before)
        .values()
        .fold((0, 0), |(f, a), c| (f + c.errors, a + c.answered()))
}

pub fn bgp_acts(r: &mut Routed, story: &Story) -> anyhow::Result<BgpDemo> {
    r.start_traffic();
    let all = [0, 1, 2];

    story.chapter("1. the router spreads the client's flows over the three balancers");
    let before = r.routed_packets();
    pause(Duration::from_secs(3))?;
    let spread = packets_since(&r.routed_packets(), &before);
    for (name, p) in CONTROLLERS.iter().zip(&spread) {
        story.say(format!("{name}: {p} packets for {ROUTED_VIP} in 3 s"));
    }
    let mut steps = Vec::new();

    let victim = r.non_owner()?;
    let v = CONTROLLERS[victim];
    story.chapter(&format!(
        "2. vipd on {v} is killed (SIGKILL), then restarted"
    ));
    let (conns, t0) = (r.open_streams(STREAMS)?, snapshot(r));
    r.lab.nodes[victim].vipd = None;
    let hops_before = r.next_hops();
    story.say(format!(
        "vipd on {v} killed; its pinned XDP program keeps forwarding and its route stays"
    ));
    // Watch the router for 2 s: a crashed vipd must not take the balancer out.
    let watch = Instant::now();
    let mut changed = None;
    while watch.elapsed() < Duration::from_secs(2) {
        if changed.is_none() && r.next_hops() != hops_before {
            changed = Some(watch.elapsed());
        }
        pause(Duration::from_millis(5))?;
    }
    // The others take a node whose vipd is silent for dead and its own backend out of their
    // tables until it is back (README, "Routed VIPs"): connections to that backend that send
    // meanwhile are reset, as after a lost link; the others must all be kept.
    let (conns, broken_crash, lost) = r.check_streams(conns, &[victim], true);
    r.lab.nodes[victim].start_vipd()?;
    r.wait_hops(&all, Duration::from_secs(10))?;
    let (_, broken_restart, _) = r.check_streams(conns, &[], false);
    settle()?;
    let (failed, answered) = failed_and_answered(&snapshot(r), &t0);
    story.say(format!(
        "router next hops {}; vipd restarted (adopted its routes)",
        changed.map_or("unchanged".into(), |d| format!("changed after {d:?}!"))
    ));
    steps.push(Step {
        what: format!("vipd killed on {v}, restarted"),
        failed,
        answered,
        broken: [
            during("crash", broken_crash),
            during("restart", broken_restart),
        ]
        .concat(),
        lost_with_backend: lost,
        convergence: changed,
        return_convergence: None,
    });
    say_step(story, steps.last().expect("step"));

    let victim = r.non_owner()?;
    let v = CONTROLLERS[victim];
    story.chapter(&format!("3. {v}'s link is cut (BFD), then restored"));
    let (conns, t0) = (r.open_streams(STREAMS)?, snapshot(r));
    let ns = r.lab.nodes[victim].ns.clone();
    let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
    let cut = Instant::now();
    ns_cmd(&ns, &["ip", "link", "set", "eth0", "down"])?;
    r.wait_hops(&survivors, Duration::from_secs(10))?;
    let convergence = cut.elapsed();
    story.say(format!(
        "router next hops {} after {convergence:?} (BFD)",
        hop_names(&survivors)
    ));
    let (conns, broken_cut, lost) = r.check_streams(conns, &[victim], false);
    let back = Instant::now();
    r.link_up(victim)?;
    r.wait_hops(&all, Duration::from_secs(30))?;
    let return_convergence = back.elapsed();
    story.say(format!(
        "link restored: {v} back in quorum and announcing, router over all three after {return_convergence:.1?}"
    ));
    let (_, broken_back, _) = r.check_streams(conns, &[], false);
    settle()?;
    let (failed, answered) = failed_and_answered(&snapshot(r), &t0);
    steps.push(Step {
        what: format!("{v}'s link cut, restored"),
        failed,
        answered,
        broken: [during("cut", broken_cut), during("return", broken_back)].concat(),
        lost_with_backend: lost,
        convergence: Some(convergence),
        return_convergence: Some(return_convergence),
    });
    say_step(story, steps.last().expect("step"));
    // Its backend must be up everywhere again before the next step measures. Not SWIM's
    // full view: in one CI run SWIM on the survivors kept the returned node `suspect` (never
    // refuted, never declared down) for over 20 s while heartbeats, quorum, health and the
    // router were all back; that is SWIM's to fix, not this step's to wait for (said below).
    let back = Instant::now();
    loop {
        let all = r.lab.statuses(Duration::from_millis(300));
        let ready = |s: &Status| {
            s.cluster.as_ref().is_some_and(|c| c.in_quorum)
                && (s.vips.iter()).all(|v| v.backends.iter().all(|b| b.health == "up"))
        };
        if all.iter().all(|s| s.as_ref().is_some_and(ready)) {
            if !super::running::converged(&all) {
                story.say("note: SWIM does not count every member alive yet (heartbeats do)");
            }
            break;
        }
        anyhow::ensure!(
            back.elapsed() < Duration::from_secs(20),
            "quorum and every backend not back 20 s after the link"
        );
        pause(Duration::from_millis(20))?;
    }

    let drained = (victim + 1) % 3;
    let d = CONTROLLERS[drained];
    story.chapter(&format!(
        "4. {d} is drained (vipd node drain), then undrained"
    ));
    let (conns, t0) = (r.open_streams(STREAMS)?, snapshot(r));
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != drained).collect();
    let control = r.lab.nodes[drained].control.display().to_string();
    let start = Instant::now();
    let child = Command::new(&r.lab.bins.vipd)
        .args(["--control", &control, "node", "drain"])
        .args(["--quiet", "500ms", "--timeout", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("vipd node drain")?;
    r.wait_hops(&rest, Duration::from_secs(10))?;
    let convergence = start.elapsed();
    let out = child.wait_with_output().context("vipd node drain")?;
    let said = String::from_utf8_lossy(&out.stdout)
        .trim()
        .replace('\n', "; ");
    story.say(format!(
        "router next hops {} after {convergence:?}; `vipd node drain`: {said} (exit {})",
        hop_names(&rest),
        out.status.code().unwrap_or(-1)
    ));
    let (conns, broken_drain, _) = r.check_streams(conns, &[], false);
    let back = Instant::now();
    r.vipd_cli(drained, &["node", "undrain"])?;
    r.wait_hops(&all, Duration::from_secs(10))?;
    let return_convergence = back.elapsed();
    let (_, broken_back, _) = r.check_streams(conns, &[], false);
    settle()?;
    let (failed, answered) = failed_and_answered(&snapshot(r), &t0);
    steps.push(Step {
        what: format!("{d} drained, undrained"),
        failed,
        answered,
        broken: [
            during("drain", broken_drain),
            during("undrain", broken_back),
        ]
        .concat(),
        lost_with_backend: 0,
        convergence: Some(convergence),
        return_convergence: Some(return_convergence),
    });
    say_step(story, steps.last().expect("step"));
    Ok(BgpDemo { spread, steps })
}

/// Each breakage labelled with the event it was seen after.
fn during(event: &str, how: Vec<String>) -> Vec<String> {
    how.into_iter()
        .map(|h| format!("after the {event}: {h}"))
        .collect()
}

fn say_step(story: &Story, s: &Step) {
    story.say(format!(
        "failed requests {} of {}; long-lived connections broken {} of {STREAMS} ({} lost with their backend)",
        s.failed,
        s.failed + s.answered,
        s.broken.len(),
        s.lost_with_backend
    ));
    for how in &s.broken {
        story.say(format!("  broken: {how}"));
    }
}

/// Requests still waiting on a path that just changed (a SYN to a dead balancer is resent
/// after 1 s, a request gives up after 2 s) end before the step's count is taken.
fn settle() -> anyhow::Result<()> {
    pause(Duration::from_millis(2500))
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("unchanged".into(), |d| format!("{} ms", d.as_millis()))
}

fn print_summary(demo: &BgpDemo) {
    println!("\n=== summary (routed VIP {ROUTED_VIP}, ECMP over 3 balancers) ===");
    let spread: Vec<String> = CONTROLLERS
        .iter()
        .zip(&demo.spread)
        .map(|(n, p)| format!("{n} {p}"))
        .collect();
    println!("packets per balancer in 3 s: {}", spread.join(", "));
    println!(
        "{:<28} {:>14} {:>8} {:>10} {:>12} {:>10}",
        "step", "failed/total", "broken", "lost w/ be", "next hops", "return"
    );
    for s in &demo.steps {
        println!(
            "{:<28} {:>14} {:>8} {:>10} {:>12} {:>10}",
            s.what,
            format!("{}/{}", s.failed, s.failed + s.answered),
            s.broken.len(),
            s.lost_with_backend,
            ms(s.convergence),
            s.return_convergence.map_or("-".into(), |d| ms(Some(d)))
        );
    }
}
