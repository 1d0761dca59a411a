//! `announce = "bgp"` VIPs: the kernel routes kept equal to what `core::announce` wants after
//! every event of the loop, and withdrawn first on a clean stop, which then waits for the
//! routers (observed through the VIPs' packet counters, not slept).
use std::{
    collections::BTreeSet,
    net::IpAddr,
    time::{Duration, Instant},
};

use vip_common::maps;

use super::Daemon;
use crate::{
    config::Announce,
    core::announce::{self, AnnouncedVip, Converged, NodeView, Withdrawal},
    shell::routes::RouteTable,
};

/// The routes this node has installed, as far as vipd knows.
#[derive(Default)]
pub struct Routes {
    pub installed: BTreeSet<IpAddr>,
    /// The table was read once (an earlier run's routes, left by a crash, are adopted and
    /// then kept or removed like any other).
    pub adopted: bool,
    pub stopping: bool,
    /// Route adds and removes that failed (retried at the next event).
    pub failures: u64,
    /// Routed VIP addresses made local (cluster mode: every node is a backend, and a backend
    /// accepts direct-server-return traffic for a local VIP; `RouteTable::add_local`).
    pub on_lo: BTreeSet<IpAddr>,
}

impl Daemon {
    fn route_table(&self) -> RouteTable {
        RouteTable {
            table: self.config.bgp.table,
            protocol: self.config.bgp.protocol,
        }
    }

    /// Every `announce = "bgp"` address with its backends in a table, over the services on it.
    fn announced_vips(&self) -> Vec<AnnouncedVip> {
        let mut out: Vec<AnnouncedVip> = Vec::new();
        for (i, v) in self.config.vips.iter().enumerate() {
            if v.announce != Announce::Bgp {
                continue;
            }
            let live = self.weights(i).iter().flatten().filter(|&&w| w > 0).count();
            match out.iter_mut().find(|a| a.address == v.address) {
                Some(a) => a.live_backends += live,
                None => out.push(AnnouncedVip {
                    address: v.address,
                    live_backends: live,
                }),
            }
        }
        out
    }

    fn node_view(&self) -> NodeView {
        NodeView {
            in_quorum: self
                .cluster
                .as_ref()
                .is_none_or(|c| c.ownership.in_quorum()),
            without_quorum: self.config.bgp.without_quorum,
            out_of_service: self.service.reason().is_some(),
            stopping: self.routes.stopping,
        }
    }

    /// Installs and removes routes until they are what the core wants; a failed change is
    /// counted, logged and tried again at the next event.
    pub(super) async fn reconcile_routes(&mut self) {
        let any_bgp = self.config.vips.iter().any(|v| v.announce == Announce::Bgp);
        if self.routes.adopted && !any_bgp && self.routes.installed.is_empty() {
            return;
        }
        if self.cluster.is_some() {
            let routed = self
                .config
                .vips
                .iter()
                .filter(|v| v.announce == Announce::Bgp);
            let missing: Vec<IpAddr> = routed
                .map(|v| v.address)
                .filter(|a| !self.routes.on_lo.contains(a))
                .collect();
            let table = self.route_table();
            for a in missing {
                match table.add_local(&self.netlink, a).await {
                    Ok(()) => {
                        self.routes.on_lo.insert(a);
                    }
                    Err(e) => {
                        self.routes.failures += 1;
                        tracing::warn!(error = %e, "making a routed VIP local failed");
                    }
                }
            }
        }
        let table = self.route_table();
        if !self.routes.adopted {
            match table.installed(&self.netlink).await {
                Ok(found) => {
                    if !found.is_empty() {
                        tracing::info!(routes = ?found, table = table.table, "adopting VIP routes left by an earlier run");
                    }
                    self.routes.installed = found;
                    self.routes.adopted = true;
                }
                Err(e) => {
                    self.routes.failures += 1;
                    tracing::warn!(error = %e, "reading the VIP route table failed");
                    return;
                }
            }
        }
        let desired = announce::desired(&self.node_view(), &self.announced_vips());
        let (add, remove) = announce::diff(&self.routes.installed, &desired);
        for a in add {
            match table.add(&self.netlink, a).await {
                Ok(()) => {
                    tracing::info!(vip = %a, table = table.table, "VIP route announced");
                    self.routes.installed.insert(a);
                }
                Err(e) => {
                    self.routes.failures += 1;
                    tracing::warn!(error = %e, "announcing a VIP route failed");
                }
            }
        }
        for a in remove {
            match table.remove(&self.netlink, a).await {
                Ok(()) => {
                    tracing::info!(vip = %a, table = table.table, "VIP route withdrawn");
                    self.routes.installed.remove(&a);
                }
                Err(e) => {
                    self.routes.failures += 1;
                    tracing::warn!(error = %e, "withdrawing a VIP route failed");
                }
            }
        }
    }

    /// A clean stop's first step: every route withdrawn, then a wait until no packet for
    /// those VIPs arrived for `[bgp] withdraw_quiet` (the routers took this node out of their
    /// ECMP groups) or `withdraw_max` passed. The XDP program forwards what still arrives.
    pub(super) async fn withdraw_before_stop(&mut self) {
        let withdrawn = self.routes.installed.clone();
        self.routes.stopping = true;
        self.reconcile_routes().await;
        if withdrawn.is_empty() {
            return;
        }
        let (quiet, max) = (self.config.bgp.withdraw_quiet, self.config.bgp.withdraw_max);
        let started = Instant::now();
        let mut wait = Withdrawal::start(started, quiet, max);
        let mut seen = self.packets_for(&withdrawn);
        let outcome = loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now_seen = self.packets_for(&withdrawn);
            wait.on_packets(now_seen.saturating_sub(seen), Instant::now());
            seen = now_seen;
            if let Some(c) = wait.converged(Instant::now()) {
                break c;
            }
        };
        let took = started.elapsed();
        match outcome {
            Converged::Quiet => tracing::info!(
                ?took,
                "clean stop: VIP routes withdrawn, no packet for them for {quiet:?}"
            ),
            Converged::TimedOut => tracing::warn!(
                ?took,
                "clean stop: VIP routes withdrawn, packets still arriving after {max:?}; stopping anyway"
            ),
        }
    }

    /// Packets the data plane counted for the VIPs at these addresses, over their services.
    fn packets_for(&self, addresses: &BTreeSet<IpAddr>) -> u64 {
        let stats = self
            .maps
            .dp()
            .counters(maps::MAP_VIP_STATS)
            .unwrap_or_default();
        self.plan
            .vips
            .iter()
            .zip(&self.config.vips)
            .filter(|(_, c)| addresses.contains(&c.address))
            .filter_map(|(p, _)| stats.get(p.info.index as usize))
            .map(|c| c.packets)
            .sum()
    }
}
