//! A running lab: network, controllers and client load, with the questions the live view,
//! the demo and the test ask of it. Dropping it removes everything (see `topology::sweep`).
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::bail;
use vip_daemon::shell::status::Status;

use super::{
    config::{self, ctl_addr, CONTROLLERS},
    node::Node,
    ns_cmd, pause,
    topology::{self, mac, Names},
    traffic::Traffic,
    Bins,
};

pub struct Lab {
    pub names: Names,
    pub nodes: Vec<Node>,
    pub traffic: Option<Traffic>,
    pub bins: Bins,
    /// Keep `/run/<prefix>` (configs, logs, fence log) after cleanup, e.g. after a failure.
    pub keep_state: bool,
}

impl Lab {
    /// Cleans up what an earlier run left, then builds and starts everything; `progress` is
    /// told about each step.
    pub fn start(names: Names, bins: &Bins, progress: &dyn Fn(&str)) -> anyhow::Result<Self> {
        let leftovers = topology::sweep(&names, false);
        if !leftovers.is_empty() {
            progress(&format!(
                "removed leftovers of an earlier run: {}",
                leftovers.join(", ")
            ));
        }
        // From here on, Drop cleans up whatever was made.
        let mut lab = Self {
            nodes: CONTROLLERS
                .iter()
                .map(|n| Node::new(&names, bins, n))
                .collect(),
            names,
            traffic: None,
            bins: bins.clone(),
            keep_state: false,
        };
        progress("network: namespaces, bridge, veths (client 192.0.2.1, ctl1-3 192.0.2.11-13)");
        topology::build(&lab.names)?;
        config::write_all(&lab.names, bins)?;
        progress(&format!(
            "config, shared key and fencing hook written to {}",
            lab.names.state_dir().display()
        ));
        for node in &mut lab.nodes {
            let t = Instant::now();
            node.start_vipd()?;
            progress(&format!(
                "{}: vipd up in {:.0?} (XDP on eth0)",
                node.name,
                t.elapsed()
            ));
            node.start_services()?;
        }
        progress("services started: keystone :5000, nova-api :8774, stream :7000, dns :53/udp, galera :3306");
        progress("waiting for quorum, one owner per VIP and every backend up...");
        let took = lab.wait_converged(Duration::from_secs(30))?;
        progress(&format!("cluster converged in {took:.1?}"));
        lab.traffic = Some(Traffic::start(&lab.names.ns("client")));
        progress("client load started (a new flow every 25 ms per service)");
        Ok(lab)
    }

    /// Each node's status, None for those not answering within `timeout`.
    pub fn statuses(&self, timeout: Duration) -> Vec<Option<Status>> {
        self.nodes
            .iter()
            .map(|n| super::status_of(&n.control, timeout))
            .collect()
    }

    pub fn index_of(&self, node: &str) -> usize {
        CONTROLLERS.iter().position(|n| *n == node).expect("node")
    }

    /// Until every node answers, is in quorum with all three alive, agrees on one owner per
    /// VIP that holds a lease, and sees every backend up.
    pub fn wait_converged(&self, timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let all = self.statuses(Duration::from_millis(300));
            if converged(&all) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                let shown: Vec<String> = all
                    .iter()
                    .map(|s| s.as_ref().map_or("no answer".into(), Status::render))
                    .collect();
                bail!("no convergence in {timeout:?}:\n{}", shown.join("\n"));
            }
            pause(Duration::from_millis(20))?;
        }
    }

    /// `vipd reload` on every controller, in order: each one's answer, or the first refusal.
    pub fn reload_all(&self) -> anyhow::Result<Vec<String>> {
        use vip_daemon::shell::control::{Request, Response};
        self.nodes
            .iter()
            .map(
                |n| match super::ask(&n.control, &Request::Reload, Duration::from_secs(5)) {
                    Some(Response::Ok { message }) => Ok(message),
                    other => bail!("vipd reload on {}: {other:?}", n.name),
                },
            )
            .collect()
    }

    /// `vipd reload` on every controller one at a time as an operator goes, `first` first,
    /// `gap` between two: the nodes run different configs meanwhile. The first node's
    /// message.
    pub fn reload_one_by_one(&self, first: &str, gap: Duration) -> anyhow::Result<String> {
        use vip_daemon::shell::control::{Request, Response};
        let mut order: Vec<_> = self.nodes.iter().collect();
        order.sort_by_key(|n| n.name != first);
        let mut messages = Vec::new();
        for (i, n) in order.into_iter().enumerate() {
            if i > 0 {
                std::thread::sleep(gap);
            }
            match super::ask(&n.control, &Request::Reload, Duration::from_secs(5)) {
                Some(Response::Ok { message }) => messages.push(message),
                other => bail!("vipd reload on {}: {other:?}", n.name),
            }
        }
        Ok(messages.swap_remove(0))
    }

    /// `vipd backend ACTION VIP BACKEND` on every controller, in order (admin state is per
    /// node).
    pub fn admin_all(
        &self,
        action: vip_daemon::shell::control::AdminAction,
        vip: &str,
        backend: &str,
    ) -> anyhow::Result<()> {
        use vip_daemon::shell::control::{Request, Response};
        for n in &self.nodes {
            let req = Request::Backend {
                action,
                vip: vip.into(),
                backend: backend.into(),
                weight: None,
                timeout_ms: None,
            };
            match super::ask(&n.control, &req, Duration::from_secs(2)) {
                Some(Response::Ok { .. }) => {}
                other => bail!("{}: backend {action:?} {vip}/{backend}: {other:?}", n.name),
            }
        }
        Ok(())
    }

    /// Powers controller `i` back on after a crash or fencing: a reboot (fresh namespace and
    /// pins), then vipd and the services start as at first boot.
    pub fn power_on(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        node.vipd = None;
        node.services.clear();
        topology::reboot_host(&self.names, node.name, config::ctl_host(i))?;
        node.start_vipd()?;
        node.start_services()
    }

    /// The controller the client's neighbour entry for `vip` points at.
    pub fn client_neighbour(&self, vip: Ipv4Addr) -> Option<&'static str> {
        let out = ns_cmd(
            &self.names.ns("client"),
            &["ip", "neigh", "show", &vip.to_string()],
        )
        .ok()?;
        (0..3)
            .find(|&i| out.contains(&mac(config::ctl_host(i))))
            .map(|i| CONTROLLERS[i])
    }

    /// Drops controller-to-controller traffic of node `i` (gossip and probes); the client still
    /// reaches it.
    pub fn partition(&self, i: usize) -> anyhow::Result<()> {
        let others: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| ctl_addr(j).to_string())
            .collect();
        let set = others.join(", ");
        let ns = &self.nodes[i].ns;
        ns_cmd(ns, &["nft", "add table inet viplab_partition"])?;
        for (chain, hook, dir) in [("in", "input", "saddr"), ("out", "output", "daddr")] {
            ns_cmd(
                ns,
                &[
                    "nft",
                    &format!("add chain inet viplab_partition {chain} {{ type filter hook {hook} priority 0 ; }}"),
                ],
            )?;
            ns_cmd(
                ns,
                &[
                    "nft",
                    &format!("add rule inet viplab_partition {chain} ip {dir} {{ {set} }} drop"),
                ],
            )?;
        }
        Ok(())
    }

    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        ns_cmd(
            &self.nodes[i].ns,
            &["nft", "delete table inet viplab_partition"],
        )?;
        Ok(())
    }

    /// Lines of the fencing hook's log.
    pub fn fence_events(&self) -> Vec<String> {
        std::fs::read_to_string(self.names.fence_log())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.traffic = None;
        self.nodes.clear();
        let keep = self.keep_state || std::thread::panicking();
        topology::sweep(&self.names, keep);
        if keep {
            eprintln!(
                "vip-lab: configs and logs kept in {}",
                self.names.state_dir().display()
            );
        }
    }
}

/// Nodes holding a lease on `vip` by their own status.
pub fn holders(all: &[Option<Status>], vip: Ipv4Addr) -> Vec<String> {
    let vip = vip.to_string();
    all.iter()
        .flatten()
        .filter(|s| {
            s.cluster.as_ref().is_some_and(|c| {
                c.owners
                    .iter()
                    .any(|o| o.vip == vip && o.lease_left_ms.is_some())
            })
        })
        .map(|s| s.node.clone())
        .collect()
}

pub fn converged(all: &[Option<Status>]) -> bool {
    let ok = |s: &Status| {
        s.cluster.as_ref().is_some_and(|c| {
            c.in_quorum
                && c.members
                    .iter()
                    .filter(|m| m.state == "alive" || m.state == "self")
                    .count()
                    == 3
        }) && s
            .vips
            .iter()
            .all(|v| v.backends.iter().all(|b| b.health == "up"))
    };
    all.iter().all(|s| s.as_ref().is_some_and(ok))
        && [config::API_VIP, config::DB_VIP]
            .iter()
            .all(|&vip| holders(all, vip).len() == 1 && agreed_owner(all, vip).is_some())
}

/// The owner every answering node names for `vip`, when they all name the same one.
pub fn agreed_owner(all: &[Option<Status>], vip: Ipv4Addr) -> Option<String> {
    let vip = vip.to_string();
    let named: Vec<Option<String>> = all
        .iter()
        .flatten()
        .map(|s| {
            s.cluster
                .as_ref()?
                .owners
                .iter()
                .find(|o| o.vip == vip)?
                .owner
                .clone()
        })
        .collect();
    match named.first() {
        Some(Some(first)) if named.iter().all(|n| n.as_ref() == Some(first)) => Some(first.clone()),
        _ => None,
    }
}
