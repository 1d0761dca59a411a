//! `bench failover`: one backend service SIGKILLed, then the VIP owner lost again and again
//! (`--trials`, 20 by default: a link cut and a SIGKILL with the link up, alternately), each
//! seen at once by three stacks under the same probe load (a new connection every 15 ms per
//! stack): vip-fabric, and HAProxy + keepalived in the guide's and in tuned settings. Before
//! each trial keepalived's master is moved to vipd's VIP owner, so one loss takes every
//! stack's owner down. Last, vipd alone in clusters of 3, 5 and 7 (`detection`): how long
//! until the others take a lost member for dead and one of them claims its VIP.
use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    competitor::{server_states, FLAVOURS, PORT_OFFSET},
    probe::{self, seen_after, Prober, Seen},
    start, Arena, Options,
};
use crate::{
    lab::{
        borrowed_ns, config::API_VIP, pause, running::holders, story::Story, topology::Names, Bins,
    },
    servers::LineClient,
};

mod detection;
mod report;

/// A stack under test: where its HTTP service and its long-lived stream service answer.
pub struct Stack {
    pub label: &'static str,
    http: SocketAddr,
    stream: SocketAddr,
}

fn stacks() -> Vec<Stack> {
    let at = |ip, port| SocketAddr::new(IpAddr::V4(ip), port);
    let mut all = vec![Stack {
        label: "vip-fabric",
        http: at(API_VIP, 5000),
        stream: at(API_VIP, 7000),
    }];
    all.extend(FLAVOURS.iter().map(|f| Stack {
        label: f.label,
        http: at(f.vip, 5000 + PORT_OFFSET),
        stream: at(f.vip, 7000 + PORT_OFFSET),
    }));
    all
}

const EVERY: Duration = Duration::from_millis(15);
const LONG_LIVED: usize = 20;

/// What one stack did when a backend service was killed.
pub struct BackendKill {
    pub detected: Option<Duration>,
    pub seen: Seen,
}

/// How a trial takes the owner down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// eth0 down, vipd SIGKILLed: the controller is gone (HAProxy and keepalived keep running
    /// behind the dead link).
    LinkCut,
    /// The balancer's processes SIGKILLed, the link up: vipd (its pinned data plane keeps
    /// forwarding until its lease ends), HAProxy and keepalived (which leaves its VIP behind).
    Kill,
}

impl Loss {
    /// Trials alternate, starting with a link cut.
    fn of_trial(t: usize) -> Self {
        if t.is_multiple_of(2) {
            Self::LinkCut
        } else {
            Self::Kill
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::LinkCut => "link cut",
            Self::Kill => "SIGKILL, link up",
        }
    }
}

/// What one stack did when its owner was lost.
pub struct Outage {
    pub seen: Seen,
    /// Long-lived connections to backends on surviving nodes: (open, broken).
    pub to_survivors: (usize, usize),
    /// Long-lived connections to the lost node's backend: (open, broken).
    pub to_dead: (usize, usize),
}

/// One owner loss, seen by every stack (in [`stacks`] order).
pub struct Trial {
    pub loss: Loss,
    pub owner: &'static str,
    pub stacks: Vec<Outage>,
    /// Nodes other than the lost owner that vipd's fencing hook fenced during the trial:
    /// a false detection (none expected).
    pub wrongly_fenced: Vec<String>,
}

pub fn failover(names: Names, bins: &Bins, opts: &Options) -> anyhow::Result<()> {
    let story = Story::new();
    story.chapter("failover: starting the lab and HAProxy + keepalived");
    let mut arena = start(names, bins, &story)?;
    let stacks = stacks();
    story.chapter("1. a backend service is SIGKILLed (a new connection every 15 ms per stack)");
    let kills = backend_kill(&mut arena, &stacks, &story)?;
    let victim = arena.lab.nodes[(arena.owner + 1) % 3].name;
    story.chapter(&format!(
        "2. the owner is lost {} times, by link cut and by SIGKILL with the link up \
         ({LONG_LIVED} long-lived connections per stack; probes for {} s after)",
        opts.trials, opts.tail_s
    ));
    let tail = Duration::from_secs(opts.tail_s);
    let mut trials = Vec::new();
    if let Err(e) = owner_losses(&mut arena, &stacks, opts, tail, &story, &mut trials) {
        // The configs, logs and fencing log of the lab stay for a look.
        arena.lab.keep_state = true;
        return Err(e);
    }
    drop(arena);
    story.chapter(&format!(
        "3. detection: vipd alone in clusters of {:?}, the owner lost {} times each",
        detection::SIZES,
        opts.detect_trials
    ));
    let detections = detection::measure(&bins.vipd, opts.detect_trials, &story)?;
    report::print_and_write(&stacks, &kills, &trials, &detections, victim, opts)
}

/// `opts.trials` owner losses, each one's outcome pushed to `trials`.
fn owner_losses(
    arena: &mut Arena,
    stacks: &[Stack],
    opts: &Options,
    tail: Duration,
    story: &Story,
    trials: &mut Vec<Trial>,
) -> anyhow::Result<()> {
    for t in 0..opts.trials {
        align_competitors(arena, story)?;
        let loss = Loss::of_trial(t);
        let fences_before = arena.lab.fence_events().len();
        let mut trial = outage(arena, stacks, loss, tail)?;
        trial.wrongly_fenced = fenced_since(arena, fences_before)
            .into_iter()
            .filter(|n| n != trial.owner)
            .collect();
        story.say(format!(
            "trial {}/{} ({}, {}): {}{}",
            t + 1,
            opts.trials,
            loss.label(),
            trial.owner,
            report::trial_summary(stacks, &trial, opts.tail_s),
            if trial.wrongly_fenced.is_empty() {
                String::new()
            } else {
                format!("; !! vipd also fenced {:?}", trial.wrongly_fenced)
            }
        ));
        let lost: Vec<usize> = std::iter::once(arena.owner)
            .chain(trial.wrongly_fenced.iter().map(|n| arena.lab.index_of(n)))
            .collect();
        trials.push(trial);
        revive(arena, &lost, story)?;
    }
    Ok(())
}

/// Restarts HAProxy + keepalived with their master on vipd's current owner of the API VIP.
fn align_competitors(arena: &mut Arena, story: &Story) -> anyhow::Result<()> {
    let all = arena.lab.statuses(Duration::from_millis(300));
    let owner = holders(&all, API_VIP)
        .first()
        .map(|n| arena.lab.index_of(n))
        .context("no owner of the API VIP")?;
    arena.owner = owner;
    arena.competitors.restart(&arena.lab, owner)?;
    let took = arena
        .competitors
        .wait_ready(&arena.lab, owner, Duration::from_secs(30))?;
    story.say(format!(
        "HAProxy + keepalived restarted with their master on {} (vipd's owner): ready after {took:.1?}",
        arena.lab.nodes[owner].name
    ));
    Ok(())
}

/// The nodes the fencing hook fenced since its log had `from` lines (deduplicated).
fn fenced_since(arena: &Arena, from: usize) -> Vec<String> {
    let mut fenced: Vec<String> = arena.lab.fence_events()[from..]
        .iter()
        .filter_map(|l| {
            // "<time> <by> fenced <node> (froze pids ...): <reason>"
            let words: Vec<&str> = l.split_whitespace().collect();
            (words.get(2) == Some(&"fenced")).then(|| words.get(3).map(|n| (*n).to_owned()))?
        })
        .collect();
    fenced.sort();
    fenced.dedup();
    fenced
}

/// Powers the lost controllers back on (the fencing hook froze them and took their links
/// down) and waits for every vipd to agree again.
fn revive(arena: &mut Arena, lost: &[usize], story: &Story) -> anyhow::Result<()> {
    for &i in lost {
        arena.lab.power_on(i)?;
    }
    let took = arena.lab.wait_converged(Duration::from_secs(30))?;
    let names: Vec<&str> = lost.iter().map(|&i| arena.lab.nodes[i].name).collect();
    story.say(format!(
        "{} powered back on: converged after {took:.1?}",
        names.join(", ")
    ));
    Ok(())
}

/// Until every stack answers ten requests in a row through its VIP (a client's neighbour
/// entry may still point at a node that just came back, until the master's next
/// gratuitous ARP).
fn wait_serving(client: &crate::NetNs, stacks: &[Stack]) -> anyhow::Result<()> {
    for s in stacks {
        let (label, to) = (s.label, s.http);
        let started = Instant::now();
        let mut in_a_row = 0;
        while in_a_row < 10 {
            let ok = client.run(move || probe::http_get(to).is_ok());
            in_a_row = if ok { in_a_row + 1 } else { 0 };
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(20),
                "{label} at {to} not answering 20 s before the trial"
            );
            pause(Duration::from_millis(if ok { 10 } else { 100 }))?;
        }
    }
    Ok(())
}

fn probe_all(arena: &Arena, stacks: &[Stack]) -> Vec<Prober> {
    let client = arena.lab.names.ns("client");
    stacks
        .iter()
        .map(|s| Prober::start(&client, s.http, EVERY))
        .collect()
}

fn backend_kill(
    arena: &mut Arena,
    stacks: &[Stack],
    story: &Story,
) -> anyhow::Result<Vec<BackendKill>> {
    let victim = (arena.owner + 1) % 3;
    let node = arena.lab.nodes[victim].name;
    let probers = probe_all(arena, stacks);
    pause(Duration::from_secs(1))?;
    let killed = Instant::now();
    arena.lab.nodes[victim].kill_service("keystone");
    story.say(format!("SIGKILL keystone on {node} (not an owner)"));
    let mut detected: Vec<Option<Duration>> = vec![None; stacks.len()];
    while detected.iter().any(Option::is_none) && killed.elapsed() < Duration::from_secs(20) {
        for (k, d) in detected.iter_mut().enumerate().filter(|(_, d)| d.is_none()) {
            let down = if k == 0 {
                vipd_sees_down(arena, node)
            } else {
                server_states(&arena.lab, arena.owner, &FLAVOURS[k - 1]).is_ok_and(|s| {
                    s.iter().any(|(px, sv, st)| {
                        px == "keystone" && sv == node && st.starts_with("DOWN")
                    })
                })
            };
            if down {
                *d = Some(killed.elapsed());
                story.say(format!(
                    "{}: keystone/{node} out after {:.0?}",
                    stacks[k].label,
                    killed.elapsed()
                ));
            }
        }
        pause(Duration::from_millis(10))?;
    }
    pause(Duration::from_secs(1))?;
    let outcomes: Vec<_> = probers.into_iter().map(Prober::finish).collect();
    arena.lab.nodes[victim].start_services()?;
    let back = arena
        .competitors
        .wait_ready(&arena.lab, arena.owner, Duration::from_secs(30))?;
    arena.lab.wait_converged(Duration::from_secs(10))?;
    story.say(format!(
        "keystone restarted on {node}: up again everywhere after {back:.1?}"
    ));
    Ok(detected
        .into_iter()
        .zip(outcomes)
        .map(|(detected, o)| BackendKill {
            detected,
            seen: seen_after(&o, killed),
        })
        .collect())
}

/// Every vipd shows keystone on `node` down with no slots.
fn vipd_sees_down(arena: &Arena, node: &str) -> bool {
    arena
        .lab
        .statuses(Duration::from_millis(200))
        .iter()
        .all(|s| {
            s.as_ref().is_some_and(|s| {
                s.vips.iter().filter(|v| v.name == "keystone").all(|v| {
                    v.backends
                        .iter()
                        .filter(|b| b.name == node)
                        .all(|b| b.health != "up" && b.slots == 0)
                })
            })
        })
}

fn outage(
    arena: &mut Arena,
    stacks: &[Stack],
    loss: Loss,
    tail: Duration,
) -> anyhow::Result<Trial> {
    let owner = arena.lab.nodes[arena.owner].name;
    let client = borrowed_ns(&arena.lab.names.ns("client"));
    wait_serving(&client, stacks)?;
    let targets: Vec<(&'static str, SocketAddr)> =
        stacks.iter().map(|s| (s.label, s.stream)).collect();
    let streams = client.run(move || {
        targets
            .iter()
            .map(|&(label, t)| {
                (0..LONG_LIVED)
                    .map(|_| {
                        let mut c = LineClient::connect(t)?;
                        let who = c.ask()?;
                        Ok((c, who))
                    })
                    .collect::<std::io::Result<Vec<_>>>()
                    .with_context(|| format!("a long-lived connection to {label} at {t}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let probers = probe_all(arena, stacks);
    pause(Duration::from_secs(1))?;
    let lost = Instant::now();
    match loss {
        Loss::LinkCut => arena.lab.nodes[arena.owner].crash()?,
        Loss::Kill => {
            arena.lab.nodes[arena.owner].vipd = None;
            arena.competitors.kill_on(&arena.lab, arena.owner);
        }
    }
    pause(tail)?;
    let outcomes: Vec<_> = probers.into_iter().map(Prober::finish).collect();
    let owner_name = owner.to_owned();
    let conns = client.run(move || {
        streams
            .into_iter()
            .map(|conns| {
                let (mut survivors, mut dead) = ((0, 0), (0, 0));
                for (mut c, who) in conns {
                    let broken = !c.ask().is_ok_and(|again| again == who);
                    let tally = if who == owner_name {
                        &mut dead
                    } else {
                        &mut survivors
                    };
                    tally.0 += 1;
                    tally.1 += usize::from(broken);
                }
                (survivors, dead)
            })
            .collect::<Vec<_>>()
    });
    Ok(Trial {
        loss,
        owner,
        wrongly_fenced: Vec::new(),
        stacks: outcomes
            .into_iter()
            .zip(conns)
            .map(|(o, (to_survivors, to_dead))| Outage {
                seen: seen_after(&o, lost),
                to_survivors,
                to_dead,
            })
            .collect(),
    })
}
