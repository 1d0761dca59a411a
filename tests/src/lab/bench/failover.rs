//! `bench failover`: one backend service SIGKILLed, then the VIP owner's link cut, each seen
//! at once by three stacks under the same probe load (a new connection every 15 ms per
//! stack): vip-fabric, and HAProxy + keepalived in the guide's and in tuned settings. The
//! keepalived master is vipd's VIP owner, so one cut takes every stack's owner down.
use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use super::{
    competitor::{server_states, FLAVOURS, PORT_OFFSET},
    probe::{seen_after, Prober, Seen},
    start, Arena, Options,
};
use crate::{
    lab::{borrowed_ns, config::API_VIP, pause, story::Story, topology::Names, Bins},
    servers::LineClient,
};

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

/// What one stack did when its owner's link was cut.
pub struct LinkCut {
    pub seen: Seen,
    /// Long-lived connections to backends on surviving nodes: (open, broken).
    pub to_survivors: (usize, usize),
    /// Long-lived connections to the dead node's backend: (open, broken).
    pub to_dead: (usize, usize),
}

pub fn failover(names: Names, bins: &Bins, opts: &Options) -> anyhow::Result<()> {
    let story = Story::new();
    story.chapter("failover: starting the lab and HAProxy + keepalived");
    let mut arena = start(names, bins, &story)?;
    let stacks = stacks();
    story.chapter("1. a backend service is SIGKILLed (a new connection every 15 ms per stack)");
    let kills = backend_kill(&mut arena, &stacks, &story)?;
    story.chapter(&format!(
        "2. the owner's link is cut ({LONG_LIVED} long-lived connections per stack; probes for {} s after)",
        opts.tail_s
    ));
    let cuts = link_cut(
        &mut arena,
        &stacks,
        &story,
        Duration::from_secs(opts.tail_s),
    )?;
    let (victim, owner) = (
        arena.lab.nodes[(arena.owner + 1) % 3].name,
        arena.lab.nodes[arena.owner].name,
    );
    drop(arena);
    report::print_and_write(&stacks, &kills, &cuts, victim, owner, opts)
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

fn link_cut(
    arena: &mut Arena,
    stacks: &[Stack],
    story: &Story,
    tail: Duration,
) -> anyhow::Result<Vec<LinkCut>> {
    let owner = arena.lab.nodes[arena.owner].name;
    let client = borrowed_ns(&arena.lab.names.ns("client"));
    let targets: Vec<SocketAddr> = stacks.iter().map(|s| s.stream).collect();
    let streams = client.run(move || {
        targets
            .iter()
            .map(|&t| {
                (0..LONG_LIVED)
                    .map(|_| {
                        let mut c = LineClient::connect(t)?;
                        let who = c.ask()?;
                        Ok((c, who))
                    })
                    .collect::<std::io::Result<Vec<_>>>()
            })
            .collect::<std::io::Result<Vec<_>>>()
    })?;
    let probers = probe_all(arena, stacks);
    pause(Duration::from_secs(1))?;
    let cut = Instant::now();
    arena.lab.nodes[arena.owner].crash()?;
    story.say(format!(
        "{owner} (owner of every VIP) dies: eth0 down, vipd SIGKILLed"
    ));
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
    Ok(outcomes
        .into_iter()
        .zip(conns)
        .map(|(o, (to_survivors, to_dead))| LinkCut {
            seen: seen_after(&o, cut),
            to_survivors,
            to_dead,
        })
        .collect())
}
