//! The failure scenarios, each returning what it measured (printed by the demo, asserted by
//! the test): a backend service killed, the VIP owner killed, the owner partitioned.
use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::bail;

use super::{
    borrowed_ns,
    config::{API_VIP, CONTROLLERS, DB_VIP},
    pause,
    running::{agreed_owner, holders, Lab},
    story::Story,
    traffic::{since, Snapshot},
};
use crate::servers::LineClient;

pub(super) fn traffic(lab: &Lab) -> Snapshot {
    lab.traffic
        .as_ref()
        .map(|t| t.snapshot())
        .unwrap_or_default()
}

pub(super) fn errors(s: &Snapshot) -> u64 {
    s.values().map(|c| c.errors).sum()
}

fn api_owner(lab: &Lab) -> anyhow::Result<&'static str> {
    let all = lab.statuses(Duration::from_millis(300));
    let h = holders(&all, API_VIP);
    let [one] = h.as_slice() else {
        bail!("expected one owner of {API_VIP}, got {h:?}")
    };
    Ok(CONTROLLERS[lab.index_of(one)])
}

/// Client traffic over `window`.
pub fn balanced(lab: &Lab, window: Duration) -> anyhow::Result<Snapshot> {
    let before = traffic(lab);
    pause(window)?;
    Ok(since(&traffic(lab), &before))
}

#[derive(Debug)]
pub struct BackendLoss {
    pub service: &'static str,
    pub node: &'static str,
    /// From SIGKILL until every node shows it down with no slots.
    pub detected_after: Duration,
    pub errors_in_window: u64,
    /// Failed requests in the 2 s after detection (0: no new flows went to it).
    pub errors_after: u64,
    pub answered_after: u64,
    /// From restart until it is back in every table.
    pub back_after: Duration,
}

pub fn backend_loss(lab: &mut Lab, story: &Story) -> anyhow::Result<BackendLoss> {
    let service = "keystone";
    // A controller that owns no VIP, so that only its service goes.
    let all = lab.statuses(Duration::from_millis(300));
    let busy = [holders(&all, API_VIP), holders(&all, DB_VIP)].concat();
    let i = (0..3)
        .find(|&i| !busy.iter().any(|b| b == CONTROLLERS[i]))
        .unwrap_or(2);
    let node = CONTROLLERS[i];
    let before = traffic(lab);
    let killed = Instant::now();
    lab.nodes[i].kill_service(service);
    story.say(format!("SIGKILL {service} on {node}"));
    let detected_after = wait_backend(lab, service, node, false, killed)?;
    let at_detection = traffic(lab);
    story.say(format!(
        "every vipd shows {service}/{node} down, no slots: {:.0?} after the kill",
        detected_after
    ));
    pause(Duration::from_secs(2))?;
    let after = since(&traffic(lab), &at_detection);
    let in_window = since(&at_detection, &before);
    let restarted = Instant::now();
    lab.nodes[i].start_services()?;
    let back_after = wait_backend(lab, service, node, true, restarted)?;
    story.say(format!(
        "{service} restarted on {node}: back in every table after {back_after:.0?}"
    ));
    Ok(BackendLoss {
        service,
        node,
        detected_after,
        errors_in_window: in_window.get(service).map_or(0, |c| c.errors),
        errors_after: after.get(service).map_or(0, |c| c.errors),
        answered_after: after.get(service).map_or(0, |c| c.answered()),
        back_after,
    })
}

/// Until every node sees `service`/`node` up with slots (`up`), or down without; time since
/// `from`.
pub(super) fn wait_backend(
    lab: &Lab,
    service: &str,
    node: &str,
    up: bool,
    from: Instant,
) -> anyhow::Result<Duration> {
    loop {
        let all = lab.statuses(Duration::from_millis(300));
        let done = all.iter().all(|s| {
            s.as_ref().is_some_and(|s| {
                s.vips.iter().filter(|v| v.name == service).all(|v| {
                    v.backends
                        .iter()
                        .filter(|b| b.name == node)
                        .all(|b| (b.health == "up") == up && (b.slots > 0) == up)
                })
            })
        });
        if done {
            return Ok(from.elapsed());
        }
        if from.elapsed() > Duration::from_secs(15) {
            bail!(
                "{service}/{node} not {} after 15 s",
                if up { "up" } else { "down" }
            );
        }
        pause(Duration::from_millis(10))?;
    }
}

#[derive(Debug)]
pub struct OwnerLoss {
    pub old_owner: &'static str,
    pub new_owner: String,
    /// From SIGKILL of its vipd and link cut until a survivor holds the VIP.
    pub takeover: Duration,
    /// Until the client's neighbour entry for the VIP points at the new owner.
    pub neighbour_moved: Option<Duration>,
    pub errors: u64,
    pub streams_to_survivors: usize,
    pub streams_kept: usize,
    pub streams_to_dead: usize,
    pub two_owner_samples: u64,
}

/// Powers controller `i` back on (a reboot) and waits until the cluster converged with it:
/// the time it took, or what was wrong after `timeout`.
pub fn rejoin(
    lab: &mut Lab,
    story: &Story,
    i: usize,
    timeout: Duration,
) -> anyhow::Result<Result<Duration, String>> {
    let node = CONTROLLERS[i];
    story.say(format!(
        "{node} powers back on (a reboot: fresh namespace and pins, vipd and services start)"
    ));
    let on = Instant::now();
    lab.power_on(i)?;
    let outcome = lab.wait_converged(timeout).map(|_| on.elapsed());
    let owners = |v| holders(&lab.statuses(Duration::from_millis(300)), v);
    let outcome = outcome.map_err(|_| {
        format!(
            "not converged after {timeout:?}: holders of {API_VIP}: {:?}, of {DB_VIP}: {:?}",
            owners(API_VIP),
            owners(DB_VIP)
        )
    });
    match &outcome {
        Ok(d) => story.say(format!("{node} rejoined, cluster converged after {d:.1?}")),
        Err(e) => story.say(format!("!! {node} rejoined but the cluster is wrong: {e}")),
    }
    Ok(outcome)
}

/// Twelve long-lived connections from the client to `stream`, each with the backend that
/// answered its first line.
pub(super) fn open_streams(
    lab: &Lab,
    stream: SocketAddr,
) -> std::io::Result<Vec<(LineClient, String)>> {
    borrowed_ns(&lab.names.ns("client")).run(move || {
        (0..12)
            .map(|_| {
                let mut c = LineClient::connect(stream)?;
                let who = c.ask()?;
                Ok((c, who))
            })
            .collect()
    })
}

pub fn owner_loss(lab: &mut Lab, story: &Story) -> anyhow::Result<OwnerLoss> {
    let old_owner = api_owner(lab)?;
    let o = lab.index_of(old_owner);
    let stream = SocketAddr::new(IpAddr::V4(API_VIP), 7000);
    let streams = open_streams(lab, stream)?;
    story.say(format!(
        "{} long-lived connections open through {API_VIP}:7000 (to {})",
        streams.len(),
        streams
            .iter()
            .map(|s| s.1.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let before = traffic(lab);
    let cut = Instant::now();
    lab.nodes[o].crash()?;
    story.say(format!(
        "{old_owner} (owner of {API_VIP}) dies: vipd SIGKILLed, eth0 down"
    ));
    let mut two_owner_samples = 0;
    let new_owner = loop {
        let h = holders(&lab.statuses(Duration::from_millis(100)), API_VIP);
        two_owner_samples += u64::from(h.len() > 1);
        if let [one] = h.as_slice() {
            break one.clone();
        }
        if cut.elapsed() > Duration::from_secs(10) {
            bail!("no takeover of {API_VIP} within 10 s");
        }
        pause(Duration::from_millis(10))?;
    };
    let takeover = cut.elapsed();
    story.say(format!(
        "{new_owner} holds {API_VIP}: takeover {takeover:.0?} after the cut"
    ));
    let neighbour_moved = loop {
        if lab.client_neighbour(API_VIP) == Some(CONTROLLERS[lab.index_of(&new_owner)]) {
            break Some(cut.elapsed());
        }
        if cut.elapsed() > takeover + Duration::from_secs(3) {
            break None;
        }
        pause(Duration::from_millis(10))?;
    };
    let survivors: Vec<_> = streams.into_iter().filter(|s| s.1 != old_owner).collect();
    let to_survivors = survivors.len();
    let kept = borrowed_ns(&lab.names.ns("client")).run(move || {
        survivors
            .into_iter()
            .map(|(mut c, who)| c.ask().is_ok_and(|again| again == who))
            .filter(|kept| *kept)
            .count()
    });
    story.say(format!(
        "client's neighbour entry moved after {neighbour_moved:.0?}; long-lived connections to survivors: {kept}/{to_survivors} kept"
    ));
    pause(Duration::from_secs(1))?;
    let errors = errors(&since(&traffic(lab), &before));
    for line in lab.fence_events() {
        story.say(format!("fence log: {line}"));
    }
    Ok(OwnerLoss {
        old_owner,
        new_owner,
        takeover,
        neighbour_moved,
        errors,
        streams_to_survivors: to_survivors,
        streams_kept: kept,
        streams_to_dead: 12 - to_survivors,
        two_owner_samples,
    })
}

#[derive(Debug)]
pub struct Partition {
    /// The VIP owner, cut off from the two others.
    pub node: &'static str,
    pub samples: u64,
    pub two_owner_samples: u64,
    /// Until the other side holds the API VIP, and which node.
    pub takeover: Option<(Duration, String)>,
    /// Last sample in which the isolated node still held a VIP (None: never seen again).
    pub isolated_last_held: Option<Duration>,
    pub fenced: bool,
    /// From heal (and power-on, when fenced) until one owner per VIP, agreed by all.
    pub settled_after_heal: Duration,
    /// Who owns the API VIP once settled (the pair's node: nothing moves back).
    pub owner_after_heal: Option<String>,
}

/// Cuts the API VIP's owner off from the two other controllers (gossip and probes; the
/// client still reaches every node) for 3 s, sampling who holds each VIP every ~10 ms, then
/// heals and waits until one owner per VIP again.
pub fn partition(lab: &mut Lab, story: &Story) -> anyhow::Result<Partition> {
    let node = api_owner(lab)?;
    let p = lab.index_of(node);
    let alive = lab.nodes.iter().filter(|n| n.vipd.is_some()).count();
    story.say(format!("{alive} controllers up; {node} owns {API_VIP}"));
    let fences_before = lab.fence_events().len();
    let (mut samples, mut two) = (0, 0);
    let mut sample = |lab: &Lab| {
        let all = lab.statuses(Duration::from_millis(50));
        samples += 1;
        let worst = [API_VIP, DB_VIP]
            .map(|v| holders(&all, v).len())
            .into_iter()
            .max();
        two += u64::from(worst.unwrap_or(0) > 1);
        all
    };
    lab.partition(p)?;
    let cut = Instant::now();
    story.say(format!(
        "{node} (owner of {API_VIP}) cut off from the other controllers (nftables)"
    ));
    let (mut takeover, mut isolated_last_held) = (None, None);
    while cut.elapsed() < Duration::from_secs(3) {
        let all = sample(lab);
        let api = holders(&all, API_VIP);
        if [API_VIP, DB_VIP]
            .iter()
            .any(|&v| holders(&all, v).iter().any(|n| n == node))
        {
            isolated_last_held = Some(cut.elapsed());
        }
        if let (None, Some(other)) = (&takeover, api.iter().find(|n| *n != node)) {
            takeover = Some((cut.elapsed(), other.clone()));
            story.say(format!(
                "{other} holds {API_VIP} after {:.0?}",
                cut.elapsed()
            ));
        }
        pause(Duration::from_millis(10))?;
    }
    story.say(format!(
        "{node} last seen holding a VIP {}",
        isolated_last_held.map_or("never after the cut".into(), |d| format!(
            "{d:.0?} after the cut"
        ))
    ));
    lab.heal(p)?;
    let fenced = lab.fence_events().len() > fences_before;
    story.say(format!(
        "partition healed{}",
        if fenced {
            format!("; {node} was fenced, powering it back on")
        } else {
            String::new()
        }
    ));
    let healed = Instant::now();
    if fenced {
        lab.power_on(p)?;
    }
    let settled = loop {
        let all = sample(lab);
        if one_owner_each(&all) {
            break all;
        }
        if healed.elapsed() > Duration::from_secs(30) {
            bail!("no single owner per VIP 30 s after the heal");
        }
        pause(Duration::from_millis(10))?;
    };
    let settled_after_heal = healed.elapsed();
    let owner_after_heal = agreed_owner(&settled, API_VIP);
    story.say(format!(
        "settled {settled_after_heal:.1?} after the heal, {API_VIP} on {}; {two} of {samples} samples had two owners",
        owner_after_heal.as_deref().unwrap_or("?")
    ));
    Ok(Partition {
        node,
        samples,
        two_owner_samples: two,
        takeover,
        isolated_last_held,
        fenced,
        settled_after_heal,
        owner_after_heal,
    })
}

/// Every answering node agrees on the owner of each VIP, and that owner holds a lease.
fn one_owner_each(all: &[Option<vip_daemon::shell::status::Status>]) -> bool {
    [API_VIP, DB_VIP].iter().all(|&v| {
        let h = holders(all, v);
        h.len() == 1 && agreed_owner(all, v).as_ref() == h.first()
    })
}

#[derive(Debug)]
pub struct DrainUnderLoad {
    pub node: &'static str,
    /// Long-lived connections to the drained backend, and how many answered through the
    /// drain and after the enable (its flows stay with it: previous-table second chance).
    pub streams_to_drained: usize,
    pub kept_through_drain: usize,
    /// Long-lived connections to the other backends, and how many answered throughout.
    pub streams_to_others: usize,
    pub others_kept: usize,
    /// Failed new requests (every service) while drained and after the enable.
    pub errors: u64,
}

/// `vipd backend drain stream NODE` on every controller under load, long-lived connections
/// open: the drained backend gets no new connections but keeps its established ones (every
/// backend of the stream VIP runs vipd, so the previous-table second chance carries them),
/// then `enable` brings it back with nothing broken.
pub fn drain_under_load(lab: &mut Lab, story: &Story) -> anyhow::Result<DrainUnderLoad> {
    use vip_daemon::shell::control::AdminAction;
    let stream = SocketAddr::new(IpAddr::V4(API_VIP), 7000);
    let streams = open_streams(lab, stream)?;
    let mut counts = std::collections::BTreeMap::<&'static str, usize>::new();
    for (_, who) in &streams {
        if let Some(n) = CONTROLLERS.iter().find(|n| *n == who) {
            *counts.entry(n).or_default() += 1;
        }
    }
    let Some((&node, _)) = counts.iter().max_by_key(|(_, c)| **c) else {
        bail!("no long-lived connection answered");
    };
    let before = traffic(lab);
    lab.admin_all(AdminAction::Drain, "stream", node)?;
    story.say(format!(
        "stream/{node} drained on every controller ({} of 12 long-lived connections on it)",
        counts[node]
    ));
    // Every connection asks a few times while drained, then once more after the enable.
    let client = lab.names.ns("client");
    let drained = borrowed_ns(&client).run(move || {
        streams
            .into_iter()
            .map(|(mut c, who)| {
                let ok = (0..3).all(|_| {
                    std::thread::sleep(Duration::from_millis(100));
                    c.ask().is_ok_and(|again| again == who)
                });
                (c, who, ok)
            })
            .collect::<Vec<_>>()
    });
    let new_on_drained = borrowed_ns(&client).run(move || {
        (0..20)
            .filter_map(|_| LineClient::connect(stream).and_then(|mut c| c.ask()).ok())
            .filter(|who| who == node)
            .count()
    });
    story.say(format!(
        "new connections while drained: {new_on_drained} of 20 on {node}"
    ));
    lab.admin_all(AdminAction::Enable, "stream", node)?;
    story.say(format!("stream/{node} enabled again on every controller"));
    pause(Duration::from_millis(500))?;
    let results = borrowed_ns(&client).run(move || {
        drained
            .into_iter()
            .map(|(mut c, who, ok)| {
                let again = c.ask().is_ok_and(|a| a == who);
                (who, ok && again)
            })
            .collect::<Vec<_>>()
    });
    let on = |drained: bool| results.iter().filter(move |(w, _)| (w == node) == drained);
    let streams_to_drained = on(true).count();
    let kept_through_drain = on(true).filter(|r| r.1).count();
    let streams_to_others = on(false).count();
    let others_kept = on(false).filter(|r| r.1).count();
    let errors = errors(&since(&traffic(lab), &before));
    story.say(format!(
        "long-lived connections kept through drain and enable: on {node} {kept_through_drain}/{streams_to_drained}, elsewhere {others_kept}/{streams_to_others}; failed new requests: {errors}"
    ));
    if new_on_drained > 0 {
        bail!("{new_on_drained} new connections landed on the drained {node}");
    }
    Ok(DrainUnderLoad {
        node,
        streams_to_drained,
        kept_through_drain,
        streams_to_others,
        others_kept,
        errors,
    })
}
