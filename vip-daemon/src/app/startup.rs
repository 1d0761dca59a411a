//! Starting (or adopting) the data plane, reloading the config, refreshing next hops.
use std::{collections::BTreeSet, net::IpAddr, time::Instant};

use anyhow::Context as _;
use tokio::sync::mpsc;
use vip_common::maps::{Settings, NO_BACKEND};

use crate::{
    config::Config,
    core::{
        health::{Health, HealthState},
        model::ModelState,
        plan::{self, Plan},
    },
    shell::{
        dataplane::{self, Attached, Dataplane, DataplaneError},
        metrics::Metrics,
        neighbours,
        probes::ProbeEvent,
    },
};

use super::{backends::Admin, BackendRt, Daemon, Options, Precomputed, VipRt};

fn settings(config: &Config, layout_id: u32) -> Settings {
    Settings {
        hash_seed: config.cluster.hash_seed,
        encap_src_v4: config.cluster.encap_source_v4.octets(),
        layout_id,
        flags: if config.vips.iter().any(|v| v.port == 0) {
            vip_common::maps::SETTINGS_F_ALL_PORTS
        } else {
            0
        },
        encap_src_v6: config.cluster.encap_source_v6.octets(),
    }
}

/// Removes every pin (detaching every interface) so that maps can be created afresh.
fn recreate(config: &Config, why: &str) -> anyhow::Result<()> {
    tracing::warn!(
        "{why}: re-creating the data plane (VIP traffic is interrupted until the tables are \
         published again)"
    );
    let dir = &config.node.pin_dir;
    let links: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_prefix("link_")
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    for iface in links {
        dataplane::detach(dir, &iface)?;
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

fn non_local_addresses(plan: &Plan, backends: &[BackendRt]) -> Vec<IpAddr> {
    let set: BTreeSet<IpAddr> = plan
        .vips
        .iter()
        .flat_map(|v| v.backends.iter())
        .filter(|b| !backends[b.index as usize].local)
        .map(|b| b.conf.address)
        .collect();
    set.into_iter().collect()
}

pub async fn start(
    opts: Options,
    config: Config,
    probe_tx: mpsc::Sender<ProbeEvent<u32>>,
    precomputed_tx: mpsc::Sender<(usize, Precomputed)>,
) -> anyhow::Result<Daemon> {
    let plan = plan::plan(&config)?;
    let layout_id = plan::layout_id(&plan);
    let pin_dir = config.node.pin_dir.clone();
    let mut dp = match Dataplane::load_pinned(&pin_dir, &plan.sizing) {
        Err(e @ DataplaneError::PinnedSize { .. }) => {
            recreate(&config, &e.to_string())?;
            Dataplane::load_pinned(&pin_dir, &plan.sizing)?
        }
        other => other?,
    };
    let pinned = dp.settings()?;
    let adopt = pinned.layout_id == layout_id;
    if !adopt && pinned.layout_id != 0 {
        drop(dp);
        recreate(
            &config,
            "the pinned data plane was laid out for another config",
        )?;
        dp = Dataplane::load_pinned(&pin_dir, &plan.sizing)?;
    }
    let mut tables = dp.table_publisher()?;

    let mut vip_of = vec![0usize; plan.sizing.backends as usize];
    let mut backends = Vec::with_capacity(vip_of.len());
    let mut vips = Vec::with_capacity(plan.vips.len());
    for (i, v) in plan.vips.iter().enumerate() {
        let live = if adopt {
            tables.live_table(&v.region)
        } else {
            None
        };
        for b in &v.backends {
            vip_of[b.index as usize] = i;
            // A backend the previous vipd had in the live table starts up: a restart never
            // clears a table it can rebuild. Probes confirm or take it out.
            let was_live = live.as_ref().is_some_and(|t| t.contains(&b.index));
            let c = &b.conf.check;
            backends.push(BackendRt {
                health: HealthState::new(
                    c.rise,
                    c.fall,
                    c.damping,
                    if was_live { Health::Up } else { Health::Down },
                ),
                verdict_log: super::backends::verdict_log(),
                admin: Admin::Enabled,
                weight: b.conf.weight,
                local: plan::is_local(&config, &b.conf),
                next_hop: None,
                last_probe: None,
                prober: None,
                cluster_health: None,
                listening: None,
            });
        }
        vips.push(VipRt {
            generation: live
                .as_ref()
                .and_then(|_| tables.live_generation(&v.region)),
            live: live.unwrap_or_default(),
            publishes: 0,
            precomputed: None,
            fallback: Vec::new(),
        });
    }
    let netlink = neighbours::connect()?;
    let hops = neighbours::resolve(&netlink, &non_local_addresses(&plan, &backends))
        .await
        .unwrap_or_default();
    for v in &plan.vips {
        for b in &v.backends {
            backends[b.index as usize].next_hop = hops.get(&b.conf.address).copied();
        }
    }
    let settings = settings(&config, layout_id);
    let model = ModelState {
        settings,
        backends: vec![Default::default(); plan.sizing.backends as usize],
        active: vec![0; (plan.sizing.vips + plan.sizing.fallbacks).max(1) as usize],
        slots: vec![NO_BACKEND; plan.sizing.slot_capacity() as usize],
        ..Default::default()
    };
    let mut d = Daemon {
        opts,
        config,
        plan,
        layout_id,
        dp,
        tables,
        interfaces: Vec::new(),
        backends,
        vip_of,
        vips,
        model,
        metrics: Metrics::default(),
        verdict_latencies: Vec::new(),
        started: Instant::now(),
        last_reload: None,
        probe_tx,
        precomputed_tx,
        netlink,
        cluster: None,
    };
    d.write_maps()?;
    for (i, v) in d.plan.vips.iter().enumerate() {
        if let Some(gen) = d.vips[i].generation {
            let base = v.region.base + gen * v.region.size;
            d.model.slots[base as usize..(base + v.region.size) as usize]
                .copy_from_slice(&d.vips[i].live);
            d.model.active[i] = base;
        }
    }
    for i in 0..d.plan.vips.len() {
        d.republish(i, None);
    }
    for iface in d.config.node.interfaces.clone() {
        let how =
            d.dp.attach(&iface)
                .with_context(|| format!("attach XDP to {iface}"))?;
        let mode = match how {
            Attached::Native => "native",
            Attached::Generic => "generic",
            Attached::Adopted => "adopted",
        };
        tracing::info!(%iface, mode, "data plane attached");
        // Frames for other MACs (flooded by a bridge, seen by a promiscuous NIC) must not be
        // balanced here: the program checks them against this interface's MAC.
        let listed = crate::shell::vipaddr::mac_of(&iface)
            .filter(|mac| *mac != [0; 6])
            .zip(crate::shell::dataplane::if_index(&iface).ok());
        match listed {
            Some((mac, ifindex)) => {
                d.dp.set_iface(ifindex, mac)
                    .with_context(|| format!("list {iface}'s MAC in IFACES"))?
            }
            None => {
                tracing::warn!(%iface, "no Ethernet MAC: frames for other hosts are not filtered")
            }
        }
        d.interfaces.push((iface, mode.to_owned()));
    }
    d.start_probers();
    Ok(d)
}

impl Daemon {
    /// Settings, BACKENDS and VIPS from the plan (removing VIPs the plan no longer has).
    fn write_maps(&mut self) -> anyhow::Result<()> {
        self.dp.set_settings(&self.model.settings)?;
        for index in 0..self.backends.len() {
            self.write_backend(index);
        }
        let wanted: Vec<_> = self.plan.vips.iter().map(|v| v.key).collect();
        for (key, _) in self.dp.vips()? {
            if !wanted.contains(&key) {
                self.dp.remove_vip(&key)?;
            }
        }
        self.model.vips.clear();
        for v in &self.plan.vips {
            self.dp.set_vip(&v.key, &v.info)?;
            self.model.vips.insert(v.key, v.info);
        }
        Ok(())
    }

    fn start_probers(&mut self) {
        for v in 0..self.plan.vips.len() {
            for pos in 0..self.plan.vips[v].backends.len() {
                self.start_prober(v, pos);
            }
        }
    }

    /// Applies a valid new config whose layout matches the running one.
    pub(super) fn apply_reload(&mut self, config: Config) -> Result<String, String> {
        let fixed = crate::config::restart_only_changes(&self.config, &config);
        if !fixed.is_empty() {
            return Err(format!(
                "the new config changes {}: that needs a restart of vipd",
                fixed.join(", ")
            ));
        }
        let plan = plan::plan(&config).map_err(|e| e.to_string())?;
        if plan::layout_id(&plan) != self.layout_id {
            return Err(
                "the new config changes the data-plane layout (VIPs, backends, their \
                        order, addresses or table sizes): that needs a restart of vipd"
                    .into(),
            );
        }
        for v in &plan.vips {
            for b in &v.backends {
                let rt = &mut self.backends[b.index as usize];
                rt.weight = b.conf.weight;
                rt.local = plan::is_local(&config, &b.conf);
                let c = &b.conf.check;
                rt.health.reconfigure(c.rise, c.fall, c.damping);
            }
        }
        self.model.settings = settings(&config, self.layout_id);
        self.config = config;
        self.plan = plan;
        self.write_maps().map_err(|e| e.to_string())?;
        self.start_probers();
        for i in 0..self.plan.vips.len() {
            self.republish(i, Some(Instant::now()));
        }
        Ok(format!("{} VIPs reloaded", self.plan.vips.len()))
    }

    /// Re-reads next hops; a changed MAC is written at once, and a backend that became
    /// (un)reachable changes its VIP's table.
    pub(super) async fn refresh_neighbours(&mut self) {
        self.refresh_peers().await;
        let addrs = non_local_addresses(&self.plan, &self.backends);
        if addrs.is_empty() {
            return;
        }
        let hops = match neighbours::resolve(&self.netlink, &addrs).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "neighbour refresh failed");
                return;
            }
        };
        let now = Instant::now();
        let mut changed = BTreeSet::new();
        for index in 0..self.backends.len() {
            if self.backends[index].local {
                continue;
            }
            let (vip, pos) = self.locate_backend(index);
            let addr = self.plan.vips[vip].backends[pos].conf.address;
            let hop = hops.get(&addr).copied();
            if hop != self.backends[index].next_hop {
                self.backends[index].next_hop = hop;
                self.write_backend(index);
                changed.insert(vip);
            }
        }
        for vip in changed {
            self.republish(vip, Some(now));
        }
    }
}

impl Daemon {
    /// Cluster peers' MACs into PEERS: frames they forwarded are delivered locally, never
    /// balanced again (loop freedom while two nodes briefly hold different tables).
    async fn refresh_peers(&mut self) {
        let Some(m) = self.config.cluster.membership.as_ref() else {
            return;
        };
        let me = m.listen.ip();
        let ips: Vec<IpAddr> = m
            .peers
            .iter()
            .map(|p| p.ip())
            .filter(|ip| *ip != me)
            .collect();
        let Ok(table) = neighbours::neighbour_table(&self.netlink).await else {
            return;
        };
        let mut any = false;
        for (i, ip) in ips.iter().enumerate() {
            if let Some(mac) = table.get(ip) {
                any = true;
                if !self.model.peers.contains(mac) {
                    match self.dp.set_peer(*mac, i as u32 + 1) {
                        Ok(()) => {
                            self.model.peers.insert(*mac);
                        }
                        Err(e) => tracing::warn!(peer = %ip, error = %e, "PEERS write failed"),
                    }
                }
            }
        }
        if any && self.model.settings.flags & vip_common::maps::SETTINGS_F_PEERS == 0 {
            self.model.settings.flags |= vip_common::maps::SETTINGS_F_PEERS;
            if let Err(e) = self.dp.set_settings(&self.model.settings) {
                tracing::error!(error = %e, "SETTINGS write failed");
            }
        }
    }
}
