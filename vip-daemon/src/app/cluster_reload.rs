//! Reloading in cluster mode: the ownership core's new VIP set and the VIP addresses a
//! reload starts or stops managing (`apply_reload` calls these around the layout change).
use std::{collections::BTreeMap, net::IpAddr, time::Instant};

use vip_common::maps::Lease;

use crate::{
    config::Config,
    core::ownership::{Input, VipPolicy},
    shell::{gossip::GossipCmd, vipaddr},
};

use super::Daemon;

/// What a reload changes in cluster mode: the ownership core's new VIP set, and the VIP
/// addresses it starts or stops managing (one address may serve several VIPs).
pub(super) struct ClusterReload {
    policies: Vec<VipPolicy>,
    added: BTreeMap<String, IpAddr>,
    removed: BTreeMap<String, IpAddr>,
    settle: std::time::Duration,
}

impl ClusterReload {
    /// What the reload answer adds in cluster mode, e.g. "; cluster VIP addresses added:
    /// 192.0.2.101 (claimed by the node placement picks, 1s after that node added it)".
    pub(super) fn describe(&self) -> String {
        let list = |m: &BTreeMap<String, IpAddr>| m.keys().cloned().collect::<Vec<_>>().join(", ");
        let mut parts = Vec::new();
        if !self.added.is_empty() {
            parts.push(format!(
                "added: {} (claimed by the node placement picks, {:?} after that node added it)",
                list(&self.added),
                self.settle
            ));
        }
        if !self.removed.is_empty() {
            let removed = list(&self.removed);
            parts.push(format!("removed: {removed} (released if held here)"));
        }
        match parts.is_empty() {
            true => String::new(),
            false => format!("; cluster VIP addresses {}", parts.join("; ")),
        }
    }
}

impl Daemon {
    /// The new config's VIP ownership, checked before the reload changes anything; `None`
    /// outside cluster mode. Membership keys are refused earlier (`restart_only_changes`).
    pub(super) fn cluster_reload(&self, config: &Config) -> Result<Option<ClusterReload>, String> {
        let (Some(c), Some(m)) = (&self.cluster, &config.cluster.membership) else {
            return Ok(None);
        };
        let oc = super::cluster::ownership_config(config, m);
        oc.validate()
            .map_err(|e| format!("cluster VIP ownership: {e}"))?;
        let (_, addresses) = super::cluster::policies(config);
        let missing = |from: &BTreeMap<String, IpAddr>, to: &BTreeMap<String, IpAddr>| {
            (from.iter())
                .filter(|(k, _)| !to.contains_key(*k))
                .map(|(k, v)| (k.clone(), *v))
                .collect()
        };
        Ok(Some(ClusterReload {
            added: missing(&addresses, &c.addresses),
            removed: missing(&c.addresses, &addresses),
            policies: oc.vips,
            settle: m.lease,
        }))
    }

    /// Before the new layout is written: added addresses go on `lo` (forwarded VIP traffic is
    /// accepted there, as at start) and into LEASES with no lease held, and gossip forgets
    /// the claims about them it delivered before (the core ignored them then; the owner's
    /// re-broadcasts must reach it within the added VIP's settle time, and the gossip layer
    /// drops repeats). Then the ownership core takes the new VIP set, and its actions are
    /// applied as for any input (a removed VIP this node holds is released while its address
    /// is still known).
    pub(super) async fn reconfigure_ownership(&mut self, r: &ClusterReload) {
        for (name, addr) in &r.added {
            if let Some(c) = &self.cluster {
                let _ = c.gossip.send(GossipCmd::ForgetVip(name.clone())).await;
            }
            if let Err(e) = self.maps.lease(Self::lease_key(addr), Lease::default()) {
                tracing::error!(vip = %addr, error = %e, "LEASES write failed");
            }
            self.add_lo_vip(*addr).await;
            if let Some(c) = self.cluster.as_mut() {
                c.addresses.insert(name.clone(), *addr);
            }
        }
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let input = Input::Reconfigure(r.policies.clone());
        let actions = c.ownership.handle(input, Instant::now());
        self.apply_ownership(actions).await;
    }

    /// After the new layout is written (the removed VIPs' entries are gone): removed
    /// addresses leave LEASES, `lo` and the interfaces (idempotent: a held one was released).
    pub(super) async fn forget_addresses(&mut self, r: &ClusterReload) {
        for (name, addr) in &r.removed {
            if let Some(c) = self.cluster.as_mut() {
                c.addresses.remove(name);
                c.last_announce.remove(name);
            }
            if let Err(e) = self.maps.remove_lease(Self::lease_key(addr)) {
                tracing::warn!(vip = %addr, error = %e, "LEASES removal failed");
            }
            let ifaces =
                std::iter::once("lo".to_owned()).chain(self.config.node.interfaces.clone());
            for iface in ifaces {
                if let Err(e) = vipaddr::remove(&self.netlink, &iface, *addr).await {
                    tracing::warn!(vip = %addr, %iface, error = %e, "removing the VIP address failed");
                }
            }
        }
    }
}
