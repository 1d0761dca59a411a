//! vipd's own changes to its host, recorded as `vipd host setup` records them (same format,
//! `<state_dir>/vipd-host.json`), so that `vipd host undo --state-file ...` reverts exactly
//! those when the node is taken out of service. What a clean stop reverts and what it keeps
//! is [`Daemon::on_clean_stop`]'s.
use std::{net::IpAddr, path::PathBuf};

use crate::{core::host::Change, shell::host as io};

use super::Daemon;

impl Daemon {
    /// Where vipd records its host changes.
    pub(super) fn own_host_record(&self) -> PathBuf {
        self.config.node.state_dir.join("vipd-host.json")
    }

    /// Appends `c` to the record (once: a restart finds it there).
    fn record_host_change(&self, c: Change) {
        let path = self.own_host_record();
        let mut r = io::load_record(&path).unwrap_or_default();
        let seen = r.changes.iter().any(|old| match (old, &c) {
            (Change::Sysctl { path: a, .. }, Change::Sysctl { path: b, .. }) => a == b,
            (a, b) => a == b,
        });
        if !seen {
            r.changes.push(c);
            if let Err(e) = io::save_record(&path, &r) {
                tracing::warn!(error = %e, "recording a host change failed");
            }
        }
    }

    /// Cluster mode: every node accepts DSR-forwarded VIP traffic on `lo` and answers ARP only
    /// for addresses on the asking interface (the owner adds the VIP to its NIC).
    pub(super) fn cluster_sysctls(&self) {
        for (k, v) in [("arp_ignore", "1"), ("arp_announce", "2")] {
            let path = format!("net/ipv4/conf/all/{k}");
            let before = io::read_sysctl(&path);
            if before.as_deref() == Some(v) {
                continue;
            }
            match std::fs::write(format!("/proc/sys/{path}"), v) {
                Ok(()) => self.record_host_change(Change::Sysctl {
                    path,
                    from: before,
                    to: v.into(),
                }),
                Err(e) => tracing::warn!(error = %e, "setting {k}={v} failed"),
            }
        }
    }

    /// Adds a cluster VIP to `lo`, recording it when it was not there yet.
    pub(super) async fn add_lo_vip(&self, addr: IpAddr) {
        let there = crate::shell::vipaddr::addresses_on(&self.netlink, "lo")
            .await
            .is_ok_and(|a| a.contains(&addr));
        if there {
            return;
        }
        match crate::shell::vipaddr::add(&self.netlink, "lo", addr).await {
            Ok(()) => self.record_host_change(Change::LoAddress { address: addr }),
            Err(e) => tracing::warn!(vip = %addr, error = %e, "adding the VIP to lo failed"),
        }
    }

    /// SIGTERM/SIGINT: removes the VIP addresses this node holds on its interfaces (as
    /// `vipd leave` does: the pinned program keeps forwarding what still reaches it until
    /// the lease runs out, and no address is left answering ARP after another node took
    /// over), then says what it leaves on purpose.
    pub(super) async fn on_clean_stop(&mut self) {
        let mut kept = vec![format!(
            "the XDP program, its links and maps pinned under {} (a restarted vipd adopts them \
             without a gap; `vipd detach` removes them)",
            self.config.node.pin_dir.display()
        )];
        if let Some(c) = &self.cluster {
            let addrs: Vec<IpAddr> = c.addresses.values().copied().collect();
            for iface in self.config.node.interfaces.clone() {
                let on = crate::shell::vipaddr::addresses_on(&self.netlink, &iface)
                    .await
                    .unwrap_or_default();
                for a in addrs.iter().filter(|a| on.contains(a)) {
                    match crate::shell::vipaddr::remove(&self.netlink, &iface, *a).await {
                        Ok(()) => {
                            tracing::info!(vip = %a, %iface, "clean stop: VIP address removed")
                        }
                        Err(e) => {
                            tracing::warn!(vip = %a, %iface, error = %e, "clean stop: removing the VIP address failed")
                        }
                    }
                }
            }
            kept.push(format!(
                "the VIPs on lo and arp_ignore/arp_announce (the pinned program still delivers \
                 local and decapsulated VIP traffic through them; `vipd host undo --state-file \
                 {}` reverts exactly what vipd changed)",
                self.own_host_record().display()
            ));
        }
        kept.push(format!(
            "receive VLAN offload off on {} (the attached program needs the tags)",
            self.config.node.interfaces.join(", ")
        ));
        tracing::info!(
            "vipd stopping; left on this host on purpose: {}",
            kept.join("; ")
        );
    }
}
