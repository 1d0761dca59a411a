//! `vip-lab` without `--demo`: the lab stays up and one screen, redrawn every second, shows
//! each node's view of the cluster and the client's traffic per VIP and backend.
use std::{fmt::Write as _, time::Duration};

use vip_daemon::shell::status::Status;

use super::{
    config::{CONTROLLERS, SERVICES},
    pause,
    running::Lab,
    stop_requested,
    topology::Names,
    traffic::{since, Snapshot},
    Bins,
};

pub fn live(names: Names, bins: &Bins) -> anyhow::Result<()> {
    let mut lab = Lab::start(names, bins, &|m| println!("vip-lab: {m}"))?;
    let help = commands(&lab, bins);
    let mut before = lab
        .traffic
        .as_ref()
        .map(|t| t.snapshot())
        .unwrap_or_default();
    while !stop_requested() {
        if pause(Duration::from_secs(1)).is_err() {
            break;
        }
        let now = lab
            .traffic
            .as_ref()
            .map(|t| t.snapshot())
            .unwrap_or_default();
        let all = lab.statuses(Duration::from_millis(300));
        // Clear the screen, cursor home.
        print!(
            "\x1b[2J\x1b[H{}",
            screen(&lab, &all, &since(&now, &before), &help)
        );
        before = now;
    }
    println!("\nvip-lab: stopping, cleaning up...");
    lab.keep_state = false;
    drop(lab);
    println!("vip-lab: done, nothing left behind");
    Ok(())
}

fn screen(lab: &Lab, all: &[Option<Status>], last_second: &Snapshot, help: &str) -> String {
    let mut s = String::from(
        "vip-lab: 3 controllers, 1 client (refreshed every second; Ctrl-C stops and cleans up)\n\n",
    );
    let _ = writeln!(
        s,
        "{:<6} {:<8} {:<26} owners (vip: owner epoch lease)",
        "node", "quorum", "members"
    );
    for (name, st) in CONTROLLERS.iter().zip(all) {
        let Some(st) = st else {
            let _ = writeln!(s, "{name:<6} (no answer: vipd down or frozen)");
            continue;
        };
        let Some(c) = &st.cluster else { continue };
        let members: Vec<String> = c
            .members
            .iter()
            .map(|m| match m.state.as_str() {
                "alive" | "self" => m.name.clone(),
                other => format!("{}({other})", m.name),
            })
            .collect();
        let owners: Vec<String> = c
            .owners
            .iter()
            .map(|o| {
                let lease = o.lease_left_ms.map_or("-".into(), |l| format!("{l:.0}ms"));
                let owner = o.owner.as_deref().unwrap_or("none");
                format!("{}: {owner} e{} {lease}", o.vip, o.epoch)
            })
            .collect();
        let q = if c.in_quorum { "yes" } else { "NO" };
        let _ = writeln!(
            s,
            "{name:<6} {q:<8} {:<26} {}",
            members.join(" "),
            owners.join("  ")
        );
        for alert in c.alerts.iter().rev().take(2) {
            let _ = writeln!(s, "       ! {alert}");
        }
    }
    s.push('\n');
    let health = all.iter().flatten().next();
    s.push_str(&traffic_table(last_second, health));
    let fences = lab.fence_events();
    if !fences.is_empty() {
        s.push_str("\nfence events:\n");
        for f in fences.iter().rev().take(5) {
            let _ = writeln!(s, "  {f}");
        }
    }
    s.push('\n');
    s.push_str(help);
    s
}

/// Answers per backend and errors of each service; with a status, each backend's health and
/// slots in that node's view.
pub fn traffic_table(counts: &Snapshot, view: Option<&Status>) -> String {
    let mut s = format!("{:<9} {:<22}", "service", "vip");
    for c in CONTROLLERS {
        let _ = write!(s, " {c:>16}");
    }
    s.push_str("  errors\n");
    for svc in SERVICES {
        let c = counts.get(svc.name).cloned().unwrap_or_default();
        let proto = if svc.kind == super::ServiceKind::Udp {
            "udp"
        } else {
            "tcp"
        };
        let _ = write!(
            s,
            "{:<9} {:<22}",
            svc.name,
            format!("{}:{} {proto}", svc.vip, svc.port)
        );
        for backend in CONTROLLERS {
            let n = c.by_backend.get(backend).copied().unwrap_or(0);
            let state = view
                .and_then(|v| v.vips.iter().find(|v| v.name == svc.name))
                .and_then(|v| v.backends.iter().find(|b| b.name == backend))
                .map_or(String::new(), |b| format!(" {}/{}", b.health, b.slots));
            let _ = write!(s, " {:>16}", format!("{n}{state}"));
        }
        let _ = writeln!(s, "  {}", c.errors);
    }
    if view.is_some() {
        s.push_str(
            "(answers in the last second; health/slots as the first answering node sees them)\n",
        );
    }
    s
}

fn commands(lab: &Lab, bins: &Bins) -> String {
    let mut s = String::from("poke around:\n");
    for n in &lab.nodes {
        let _ = writeln!(
            s,
            "  {} --control {} status",
            bins.vipd.display(),
            n.control.display()
        );
    }
    let client = lab.names.ns("client");
    let _ = writeln!(
        s,
        "  nsenter --net=/run/netns/{client} curl -s http://192.0.2.100:5000/"
    );
    let _ = writeln!(
        s,
        "  ip netns pids {}-ctl1 | xargs kill -9     # or freeze with -STOP",
        lab.names.prefix
    );
    let _ = writeln!(s, "  configs and logs: {}", lab.names.state_dir().display());
    s
}
