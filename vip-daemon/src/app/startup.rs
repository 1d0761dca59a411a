//! Starting (or adopting) the data plane, reloading the config, refreshing next hops.
use std::{collections::BTreeSet, net::IpAddr, time::Instant};

use anyhow::Context as _;
use tokio::sync::mpsc;
use vip_common::maps::{Backend, Iface, SETTINGS_F_PEERS, VIP_F_FLOWS};

use crate::{
    config::{Config, Limits, Selection},
    core::{
        alloc::{self, Allocation, BackendId},
        backends::{restart_health, Backend as BackendState, Backends, Input, Remembered},
        drain::Drain,
        health::Health,
        image,
        model::ModelState,
        plan::{self, BackendPlan, Plan, VipPlan},
    },
    shell::{
        dataplane::{Attached, Dataplane, DataplaneError, LocalClientsAttached, MapWriter, Sizing},
        metrics::Metrics,
        neighbours,
        probes::ProbeEvent,
        state::{self, SavedBackend, SavedState},
    },
};

use super::{
    backends::{spec_of, Admin},
    Daemon, Options, VipRt,
};

/// A new data plane for `sizing`, built beside the pinned one that cannot be adopted: the
/// old one keeps forwarding until the new program takes over its links (see
/// `Dataplane::load_beside`), so no packet meets an interface without a program.
fn beside(config: &Config, sizing: &Sizing, why: &str) -> anyhow::Result<Dataplane> {
    tracing::warn!(
        "{why}: building a new data plane beside the pinned one; the old one forwards until \
         the new program replaces it in each link"
    );
    Ok(Dataplane::load_beside(&config.node.pin_dir, sizing)?)
}

pub(super) fn non_local_addresses(plan: &Plan, backends: &Backends) -> Vec<IpAddr> {
    let set: BTreeSet<IpAddr> = plan
        .vips
        .iter()
        .flat_map(|v| v.backends.iter())
        .filter(|b| !backends[b.index as usize].local)
        .map(|b| b.conf.address)
        .collect();
    set.into_iter().collect()
}

/// The data plane for `config`: the pinned one adopted when its maps have the right shapes
/// and the state file says where everything in them lives, else created afresh.
struct Opened {
    dp: Dataplane,
    limits: Limits,
    layout_id: u32,
    /// Layout of the adopted maps (None: fresh maps, nothing to keep).
    adopted: Option<Allocation>,
    saved: Option<SavedState>,
}

fn open_dataplane(config: &Config) -> anyhow::Result<Opened> {
    let saved = match state::load(&state::path(config)) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the state file");
            None
        }
    };
    // The limits the pinned maps were made with, while the file fits in them.
    let limits = saved
        .as_ref()
        .map(|s| s.limits)
        .filter(|l| config.fits(l))
        .unwrap_or_else(|| config.default_limits());
    let sizing = plan::sizing(config, &limits);
    let layout_id = plan::layout_id(&sizing);
    let pin_dir = &config.node.pin_dir;
    let mut dp = match Dataplane::load_pinned(pin_dir, &sizing) {
        Err(e @ (DataplaneError::PinnedSize { .. } | DataplaneError::PinnedShape { .. })) => {
            beside(config, &sizing, &e.to_string())?
        }
        other => other?,
    };
    let pinned = dp.settings()?.layout_id;
    let described = saved
        .as_ref()
        .filter(|s| s.layout_id == layout_id)
        .map(|s| s.alloc.clone());
    let adopted = match (pinned, described) {
        (0, _) => None,
        (id, Some(alloc)) if id == layout_id => Some(alloc),
        (id, _) => {
            let why = if id == layout_id {
                "no state file describes the pinned maps"
            } else {
                "the pinned maps have other shapes or limits"
            };
            drop(dp);
            dp = beside(config, &sizing, why)?;
            None
        }
    };
    Ok(Opened {
        dp,
        limits,
        layout_id,
        adopted,
        saved,
    })
}

pub async fn start(
    opts: Options,
    config: Config,
    probe_tx: mpsc::Sender<ProbeEvent<(u32, u32)>>,
    precompute: crate::shell::precompute::Worker,
) -> anyhow::Result<Daemon> {
    let Opened {
        mut dp,
        limits,
        layout_id,
        mut adopted,
        saved,
    } = open_dataplane(&config)?;
    let alloc = match alloc::reconcile(
        adopted.as_ref().unwrap_or(&Allocation::default()),
        &config,
        &limits,
    ) {
        Ok(a) => a,
        Err(e) if adopted.is_some() => {
            // Fragmented by earlier changes: lay the file out afresh in new maps.
            drop(dp);
            dp = beside(&config, &plan::sizing(&config, &limits), &e.to_string())?;
            adopted = None;
            alloc::reconcile(&Allocation::default(), &config, &limits)?
        }
        Err(e) => return Err(e.into()),
    };
    let plan = plan::plan(&config, &alloc, &limits)?;
    // Replacing a live data plane: its verdicts (state file) are as fresh as its tables.
    let replacing = dp.is_replacing();
    let mut tables = dp.table_publisher()?;

    let mut vip_of = vec![usize::MAX; limits.backends as usize];
    let mut backends = Backends::new(limits.backends as usize);
    let mut vips = Vec::with_capacity(plan.vips.len());
    // Tables adopted from the pinned maps, recorded in the image once it exists.
    let mut adopted_tables: Vec<Option<Vec<u32>>> = Vec::with_capacity(plan.vips.len());
    for (i, v) in plan.vips.iter().enumerate() {
        // Tables are read back only where this layout keeps the adopted one's place.
        let kept = adopted
            .as_ref()
            .and_then(|a| a.vip(&v.name))
            .is_some_and(|p| p.index == v.region.vip_index && p.base == v.region.base);
        let live = if kept {
            tables.live_table(&v.region)
        } else {
            None
        };
        let (mut saved_writer, mut writer_due) = (None, None);
        for b in &v.backends {
            vip_of[b.index as usize] = i;
            let id = backend_id(v, b);
            let remembered = saved.as_ref().and_then(|s| s.backend(&id));
            // A verdict survives a restart (`core::backends::restart_health`); replacing
            // maps, the state file is saved at every verdict.
            let initial = restart_health(
                remembered.map(|r| Remembered {
                    up: r.up,
                    admin: Admin::parse(&r.admin),
                }),
                live.as_ref().map(|t| t.contains(&b.index)),
                adopted.is_some() || replacing,
            );
            let c = &b.conf.check;
            let mut rt = BackendState::new(&spec_of(&config, i, b), initial);
            if let Some(r) = remembered {
                rt.admin = Admin::parse(&r.admin).unwrap_or(Admin::Enabled);
                rt.weight = r.weight.unwrap_or(b.conf.weight);
                // A drain's timeout runs on from its start (one saved before drains had a
                // start begins now).
                rt.drain = (rt.admin == Admin::Drained).then(|| Drain {
                    started_ms: r.drain_started_ms.unwrap_or_else(super::unix_ms),
                    timeout_override: r.drain_timeout_ms.map(std::time::Duration::from_millis),
                });
                if r.writer {
                    saved_writer = Some((b.index, b.serial));
                    // Time for its first `rise` probes (every backend starts down); not worth
                    // waiting for while the operator keeps it out.
                    writer_due = (rt.admin == Admin::Enabled)
                        .then(|| Instant::now() + c.interval * (c.rise + 1) + c.timeout);
                }
            }
            backends.restore(b.index, rt);
        }
        // Primary/backup: the writer is the adopted live table's slot; maps created afresh
        // have none, so the state file's writer (it keeps the slot while eligible).
        let writer = match &live {
            Some(t) if v.selection == Selection::PrimaryBackup => v
                .backends
                .iter()
                .find(|b| t.first() == Some(&b.index))
                .map(|b| (b.index, b.serial)),
            Some(_) => None,
            None => saved_writer,
        };
        // First start (fresh maps, no state file's writer): the preferred backend is waited
        // for like a remembered writer, so that whichever backend rises first does not become
        // the writer for good and the primary one stays a backup.
        let (writer, writer_due) = match (writer, &live) {
            (None, None) if v.selection == Selection::PrimaryBackup => {
                let preferred = v
                    .backends
                    .iter()
                    .filter(|b| backends[b.index as usize].admin == Admin::Enabled)
                    .min_by_key(|b| (b.conf.priority, b.index));
                match preferred {
                    Some(b) => {
                        let c = &b.conf.check;
                        let due = Instant::now() + c.interval * (c.rise + 1) + c.timeout;
                        (Some((b.index, b.serial)), Some(due))
                    }
                    None => (None, writer_due),
                }
            }
            other => (other.0, writer_due),
        };
        vips.push(VipRt {
            writer,
            awaiting_writer: writer_due.filter(|_| live.is_none() && !v.failback),
            generation: live
                .as_ref()
                .and_then(|_| tables.live_generation(&v.region)),
            publishes: 0,
            fallback: Vec::new(),
            previous: Vec::new(),
            // A restart ends a transition: the flow table (kept, or carried into new maps)
            // has entries for every connection that sent a segment since the switch.
            transition: None,
            ..VipRt::default()
        });
        adopted_tables.push(live);
    }
    let egress_ports = list_egress_ports(&config.node.interfaces, &mut dp)?;
    let netlink = neighbours::connect()?;
    let hops = neighbours::resolve(
        &netlink,
        &non_local_addresses(&plan, &backends),
        &egress_ports,
    )
    .await
    .unwrap_or_default();
    for v in &plan.vips {
        for b in &v.backends {
            backends.set_next_hop(b.index, hops.get(&b.conf.address).copied());
        }
    }
    // The image starts as what the maps hold where it matters for skipping writes: backend
    // entries (a previous vipd's stale ones are zeroed by `apply_layout`) and live tables.
    let mut image = ModelState {
        settings: image::settings(&config, layout_id, false, None),
        backends: vec![Default::default(); plan.sizing.backends as usize],
        active: vec![0; (plan.sizing.vips + plan.sizing.fallbacks).max(1) as usize],
        // Zeros, as in fresh maps, from calloc: only the regions written become resident.
        slots: vec![0; plan.sizing.slot_capacity() as usize],
        ..Default::default()
    };
    for (i, entry) in image.backends.iter_mut().enumerate() {
        *entry = dp.backend(i as u32).unwrap_or_default();
    }
    let mut maps = MapWriter::new(dp, tables, image);
    for ((v, rt), live) in plan.vips.iter().zip(&vips).zip(adopted_tables) {
        if let (Some(gen), Some(live)) = (rt.generation, live) {
            maps.record_table(&v.region, gen, &live);
        }
    }
    let notifier =
        crate::shell::hooks::Notifier::spawn(config.hooks.clone(), config.node.name.clone());
    let mut d = Daemon {
        opts,
        state_path: state::path(&config),
        state_dirty: true,
        save_at: None,
        saver: state::Saver::spawn(),
        neighbours_due: false,
        neighbours_in_flight: false,
        admin_publish: false,
        admin_book: Default::default(),
        writer_book: Default::default(),
        config,
        plan,
        alloc,
        limits,
        layout_id,
        maps,
        interfaces: Vec::new(),
        egress_ports,
        links: Vec::new(),
        probers: (0..backends.len()).map(|_| None).collect(),
        backends,
        vip_of,
        vips,
        metrics: Metrics::default(),
        verdict_latencies: std::collections::VecDeque::with_capacity(4096),
        pending_images: Default::default(),
        after_verdict: Default::default(),
        started: Instant::now(),
        last_reload: None,
        probe_tx,
        precompute,
        netlink,
        cluster: None,
        service: Default::default(),
        track_watchers: None,
        notifier,
        last_selfcheck: None,
        routes: Default::default(),
        packet_debug: None,
        prepare_at: None,
        local_clients: String::new(),
    };
    d.service.standby_since_ms = saved.as_ref().and_then(|s| s.standby_since_ms);
    if let Some(s) = &saved {
        d.seed_admin(s);
    }
    d.apply_layout(None)?;
    match d.maps.dp_mut().carry_flows() {
        Ok(0) => {}
        Ok(n) => tracing::info!(entries = n, "flow table carried into the new data plane"),
        Err(e) => {
            tracing::warn!(error = %e, "could not carry the flow table over: established flows re-hash")
        }
    }
    d.save_state();
    for (i, iface) in d.config.node.interfaces.clone().into_iter().enumerate() {
        let how = d
            .maps
            .dp_mut()
            .attach(&iface)
            .with_context(|| format!("attach XDP to {iface}"))?;
        let mode = match how {
            Attached::Native => "native",
            Attached::Generic => "generic",
            Attached::Adopted => "adopted",
        };
        tracing::info!(%iface, mode, "data plane attached");
        // Frames for other MACs (flooded by a bridge, seen by a promiscuous NIC) must not be
        // balanced here: the program checks them against this interface's MAC. Its MTU
        // bounds what encapsulation may send (larger packets are answered "too big").
        let listed = crate::shell::vipaddr::mac_of(&iface)
            .filter(|mac| *mac != [0; 6])
            .zip(crate::shell::dataplane::if_index(&iface).ok());
        match listed {
            Some((mac, ifindex)) => {
                let mtu = crate::shell::vipaddr::mtu_of(&iface).unwrap_or(0);
                if mtu == 0 {
                    tracing::warn!(%iface, "MTU unknown: encapsulated packets are not checked against it");
                }
                d.maps
                    .iface(ifindex, mac, mtu)
                    .with_context(|| format!("list {iface}'s MAC and MTU in IFACES"))?;
                let port = if d.egress_ports.is_empty() {
                    0
                } else {
                    i as u32 + 1
                };
                d.links.push(super::Link {
                    name: iface.clone(),
                    ifindex,
                    iface: Iface { mac, mtu },
                    port,
                });
            }
            None => {
                tracing::warn!(%iface, "no Ethernet MAC: frames for other hosts are not filtered")
            }
        }
        d.interfaces.push((iface, mode.to_owned()));
    }
    d.local_clients = local_clients(&d.config.node, d.maps.dp_mut());
    if d.maps.dp().is_replacing() {
        d.maps
            .dp_mut()
            .finish_replacement()
            .context("removing the replaced data plane")?;
        tracing::info!("the new data plane took over every link; the old maps are gone");
    }
    d.start_probers();
    Ok(d)
}

/// Balances this node's own clients of the VIPs (`node.local_clients`): attaches the cgroup
/// programs, or removes links a previous run left when it is off. A failure is a warning:
/// the VIPs still serve everyone else. Returns the status line.
fn local_clients(node: &crate::config::Node, dp: &mut Dataplane) -> String {
    if !node.local_clients {
        if let Err(e) = dp.detach_local_clients() {
            tracing::warn!(error = %e, "could not remove the local-client programs");
        }
        return "off (node.local_clients = false)".to_owned();
    }
    let Some(cgroup) =
        (node.local_clients_cgroup.clone()).or_else(crate::shell::dataplane::cgroup2_root)
    else {
        tracing::warn!(
            "no cgroup v2 hierarchy mounted: local clients of the VIPs are not balanced"
        );
        return "off: no cgroup v2 hierarchy".to_owned();
    };
    match dp.attach_local_clients(&cgroup) {
        Ok(how) => {
            let how = match how {
                LocalClientsAttached::New => "attached",
                LocalClientsAttached::Adopted => "adopted",
            };
            tracing::info!(cgroup = %cgroup.display(), how, "local clients of the VIPs balanced");
            format!("{how} at {}", cgroup.display())
        }
        Err(e) => {
            tracing::warn!(cgroup = %cgroup.display(), error = %e, "local clients of the VIPs are not balanced");
            format!("off: {e}")
        }
    }
}

/// With several attached interfaces, each is an egress port (`EGRESS`, `EGRESS_DEVS`): a
/// backend whose route leaves by another one than a packet came in on is redirected there.
/// Listed before any backend entry names a port. Returns each port's interface index.
fn list_egress_ports(interfaces: &[String], dp: &mut Dataplane) -> anyhow::Result<Vec<u32>> {
    if interfaces.len() < 2 {
        return Ok(Vec::new());
    }
    let mut ports = Vec::new();
    for (i, iface) in interfaces.iter().enumerate() {
        let ifindex = crate::shell::dataplane::if_index(iface)
            .with_context(|| format!("interface index of {iface}"))?;
        let mac = crate::shell::vipaddr::mac_of(iface).unwrap_or_default();
        let mtu = crate::shell::vipaddr::mtu_of(iface).unwrap_or(0);
        dp.set_egress(i as u32 + 1, ifindex, Iface { mac, mtu })
            .with_context(|| format!("list {iface} as egress port {}", i + 1))?;
        ports.push(ifindex);
    }
    Ok(ports)
}

pub(super) fn backend_id(v: &VipPlan, b: &BackendPlan) -> BackendId {
    BackendId {
        vip: v.name.clone(),
        name: b.conf.name.clone(),
        address: b.conf.address,
    }
}

impl Daemon {
    /// Brings the maps from `old` (the plan they hold now; None: whatever a previous vipd
    /// left) to `self.plan` in an order that never lets a packet see half a change: new
    /// backend entries first, then every table, then the VIPS entries that point at them,
    /// and only then removals (VIPs first, then the backend entries no table uses any more).
    fn apply_layout(&mut self, old: Option<&Plan>) -> anyhow::Result<()> {
        let peers = self.maps.image().settings.flags & SETTINGS_F_PEERS != 0;
        self.maps.settings(image::settings(
            &self.config,
            self.layout_id,
            peers,
            self.packet_debug.map(|(d, _)| d),
        ))?;
        self.maps
            .encap_sources(&image::encap_sources(&self.config))?;
        for v in 0..self.plan.vips.len() {
            for pos in 0..self.plan.vips[v].backends.len() {
                let index = self.plan.vips[v].backends[pos].index as usize;
                self.write_backend(index);
            }
        }
        for i in 0..self.plan.vips.len() {
            self.republish(i, None);
        }
        let wanted: Vec<_> = (0..self.plan.vips.len())
            .map(|i| (self.plan.vips[i].key, self.vip_info(i)))
            .collect();
        self.maps.vips(&wanted)?;
        let in_use: BTreeSet<u32> = self
            .plan
            .vips
            .iter()
            .flat_map(|v| v.backends.iter().map(|b| b.index))
            .collect();
        let retired: Vec<u32> = match old {
            Some(p) => p
                .vips
                .iter()
                .flat_map(|v| v.backends.iter().map(|b| b.index))
                .collect(),
            None => (0..self.limits.backends).collect(),
        };
        for index in retired.into_iter().filter(|i| !in_use.contains(i)) {
            // Mode 0: a stale reference (none should remain) drops instead of forwarding.
            self.maps.backend(index, Backend::default())?;
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

    /// Applies a valid new config within the limits the maps were made with: VIPs and
    /// backends added, removed, re-addressed, re-weighted, re-checked, table sizes and modes
    /// changed, all without a moment without a table. A backend that stays the same backend
    /// keeps its verdict, admin state and prober. In cluster mode the ownership core takes
    /// the new VIP set too (see [`ClusterReload`]).
    pub(super) async fn apply_reload(&mut self, config: Config) -> Result<String, String> {
        let fixed = crate::config::restart_only_changes(&self.config, &config);
        if !fixed.is_empty() {
            return Err(format!(
                "the new config changes {}: that needs a restart of vipd",
                fixed.join(", ")
            ));
        }
        if !config.fits(&self.limits) {
            let (vips, backends, slots) = config.needs();
            return Err(format!(
                "the new config needs {vips} VIPs, {backends} backends and {slots} table slots \
                 (or sets [limits] differently), but the data plane was made with limits.vips = \
                 {}, limits.backends = {}, limits.table_slots = {}, limits.flows = {}: raise \
                 them in [limits] and restart vipd",
                self.limits.vips, self.limits.backends, self.limits.table_slots, self.limits.flows
            ));
        }
        let alloc =
            alloc::reconcile(&self.alloc, &config, &self.limits).map_err(|e| e.to_string())?;
        let plan = plan::plan(&config, &alloc, &self.limits).map_err(|e| e.to_string())?;
        let cluster = self.cluster_reload(&config)?;
        let mut summary = describe_change(&self.plan, &plan);

        // Backends: the same identity keeps its runtime state (same index and serial); its
        // prober restarts when its check changed.
        let mut vip_of = vec![usize::MAX; self.limits.backends as usize];
        let mut specs = Vec::new();
        let mut restart_probe = Vec::new();
        for (vi, v) in plan.vips.iter().enumerate() {
            for (pos, b) in v.backends.iter().enumerate() {
                vip_of[b.index as usize] = vi;
                specs.push(spec_of(&config, vi, b));
                let old_conf = self
                    .plan
                    .vips
                    .iter()
                    .flat_map(|v| v.backends.iter())
                    .find(|o| o.index == b.index && o.serial == b.serial)
                    .map(|o| &o.conf);
                if old_conf.is_none_or(|old| old.check != b.conf.check || old.port != b.conf.port) {
                    restart_probe.push((vi, pos));
                }
            }
        }
        // VIPs: a VIP keeping its place keeps its live table (the next publish flips from it).
        let old_vips: Vec<(String, crate::core::layout::TableRegion, VipRt)> = self
            .plan
            .vips
            .iter()
            .map(|v| v.name.clone())
            .zip(self.plan.vips.iter().map(|v| v.region))
            .zip(std::mem::take(&mut self.vips))
            .map(|((n, r), rt)| (n, r, rt))
            .collect();
        let mut old_vips = old_vips;
        let vips: Vec<VipRt> = plan
            .vips
            .iter()
            .map(|v| {
                match old_vips
                    .iter()
                    .position(|(n, r, _)| *n == v.name && *r == v.region)
                {
                    Some(at) => {
                        let mut rt = old_vips.swap_remove(at).2;
                        // Steps and their basis were for the old plan's backends.
                        rt.steps = Default::default();
                        rt.basis = Vec::new();
                        (rt.asked_chain, rt.asked_singles, rt.asked_swap) = (None, None, None);
                        if v.fallback.is_none() {
                            rt.fallback.clear();
                        }
                        if v.previous.is_none() {
                            rt.transition = None;
                        }
                        // Switching from second chance to the flow table: the flow table has
                        // never seen the established connections; the table they were made
                        // with becomes the previous table for the transition.
                        let was_flows = self
                            .plan
                            .vips
                            .iter()
                            .find(|o| o.name == v.name)
                            .is_none_or(|o| o.info.flags & VIP_F_FLOWS != 0);
                        // Same place in the maps: the image's table there is the live one.
                        let live = match rt.generation {
                            Some(_) => self.maps.image_table(&v.region).to_vec(),
                            None => Vec::new(),
                        };
                        // Switching back to second chance: the owner's flow entries keep
                        // steering their connections for the VIP's drain_timeout, whatever
                        // mode the other nodes are in yet (`VIP_F_FLOWS_EXIT`).
                        let left_flows = v.info.flags & VIP_F_FLOWS == 0
                            && self.plan.vips.iter().any(|o| {
                                o.name == v.name && o.info.flags & VIP_F_FLOWS != 0
                            });
                        let timeout = config
                            .vips
                            .iter()
                            .find(|c| c.name == v.name)
                            .map_or(std::time::Duration::ZERO, |c| c.drain_timeout);
                        if left_flows {
                            tracing::info!(
                                vip = %v.name,
                                transition = ?timeout,
                                "switched from the flow table back to second chance: \
                                 connections with flow entries keep them for the VIP's drain_timeout"
                            );
                            rt.flows_exit_until = Some(until_after(timeout));
                        } else if v.info.flags & VIP_F_FLOWS != 0 {
                            rt.flows_exit_until = None;
                        }
                        if v.previous.is_some() && !was_flows && !live.is_empty() {
                            let old = self.plan.vips.iter().find(|o| o.name == v.name);
                            tracing::info!(
                                vip = %v.name,
                                transition = ?timeout,
                                "switched from second chance to the flow table: connections \
                                 made before follow the previous table for the VIP's drain_timeout"
                            );
                            rt.transition = Some(super::Transition {
                                table: live,
                                serials: old
                                    .map(|o| {
                                        o.backends.iter().map(|b| (b.index, b.serial)).collect()
                                    })
                                    .unwrap_or_default(),
                                until: until_after(timeout),
                                published: Vec::new(),
                            });
                        }
                        rt
                    }
                    // Moved in the maps: a new table, but the same writer.
                    None => VipRt {
                        writer: old_vips
                            .iter()
                            .find(|(n, _, _)| *n == v.name)
                            .and_then(|(_, _, rt)| rt.writer),
                        ..VipRt::default()
                    },
                }
            })
            .collect();
        let old_plan = std::mem::replace(&mut self.plan, plan);
        // Next hops of new backends come with this, before their entries are written; the
        // file's weight replacing a shared runtime one is gossiped after `prune_admin`.
        let weight_reset = self
            .backends
            .handle(Input::Reload(specs), super::backends::now());
        for (i, prober) in self.probers.iter_mut().enumerate() {
            if vip_of[i] == usize::MAX {
                *prober = None; // stops the probers of removed backends
            }
        }
        self.vip_of = vip_of;
        self.vips = vips;
        self.alloc = alloc;
        self.config = config;
        if let Some(c) = &cluster {
            self.reconfigure_ownership(c).await;
            summary.push_str(&c.describe());
        }
        let laid = self.apply_layout(Some(&old_plan));
        if let Some(c) = &cluster {
            self.forget_addresses(c).await;
        }
        laid.map_err(|e| e.to_string())?;
        for (vi, pos) in restart_probe {
            self.start_prober(vi, pos);
        }
        self.prune_admin();
        self.apply_backend_actions(weight_reset, super::backends::Save::Now);
        self.save_state();
        Ok(summary)
    }

    /// Writes the state file (layout, verdicts, admin) now: on disk when it returns.
    pub(super) fn save_state(&mut self) {
        let saved = self.saved_state();
        match self.saver.save_now(&self.state_path, &saved) {
            Ok(()) => self.state_dirty = false,
            Err(e) => tracing::warn!(error = %e, "could not save the state file"),
        }
    }

    /// The state file's write as of now, to run off the loop (`Saver::save_ordered`).
    pub(super) fn save_state_ordered(
        &mut self,
    ) -> impl FnOnce() -> Result<(), crate::shell::state::StateError> + Send + 'static {
        let write = self
            .saver
            .save_ordered(&self.state_path, self.saved_state());
        self.state_dirty = false;
        write
    }

    /// Queues the state file's write on its own thread (verdicts: the loop goes on).
    pub(super) fn save_state_soon(&mut self) {
        let saved = self.saved_state();
        self.saver.save(&self.state_path, saved);
        self.state_dirty = false;
    }

    fn saved_state(&self) -> SavedState {
        let mut saved = SavedState::new(self.layout_id, self.limits, self.alloc.clone());
        saved.standby_since_ms = self.service.standby_since_ms;
        for (vi, v) in self.plan.vips.iter().enumerate() {
            for b in &v.backends {
                let rt = &self.backends[b.index as usize];
                saved.backends.push(SavedBackend {
                    id: backend_id(v, b),
                    up: rt.health.health() == Health::Up,
                    admin: rt.admin.as_str().to_owned(),
                    weight: (rt.weight != b.conf.weight).then_some(rt.weight),
                    writer: self.vips[vi].writer == Some((b.index, b.serial)),
                    drain_started_ms: rt.drain.map(|d| d.started_ms),
                    drain_timeout_ms: rt
                        .drain
                        .and_then(|d| d.timeout_override)
                        .map(|t| t.as_millis() as u64),
                    // Looked up only when written at all: the keys are built to look
                    // them up, and a snapshot of a ramp-up's 500 backends is taken on the
                    // loop every `SAVE_DELAY`.
                    admin_stamp: (!self.admin_book.is_empty())
                        .then(|| self.admin_book.get(&(v.name.clone(), b.conf.name.clone())))
                        .flatten()
                        .map(|w| w.stamp.clone()),
                    writer_stamp: (self.writer_book.get(&v.name))
                        .filter(|w| w.value == b.conf.name)
                        .map(|w| w.stamp.clone()),
                });
            }
        }
        saved
    }
}

/// One line saying what a reload changed: VIPs and backends added, removed, moved.
fn describe_change(old: &Plan, new: &Plan) -> String {
    let names = |p: &Plan| -> BTreeSet<String> { p.vips.iter().map(|v| v.name.clone()).collect() };
    let backends = |p: &Plan| -> BTreeSet<(String, String, IpAddr)> {
        p.vips
            .iter()
            .flat_map(|v| {
                v.backends
                    .iter()
                    .map(move |b| (v.name.clone(), b.conf.name.clone(), b.conf.address))
            })
            .collect()
    };
    let (ov, nv) = (names(old), names(new));
    let (ob, nb) = (backends(old), backends(new));
    let moved = new
        .vips
        .iter()
        .filter(|v| {
            old.vips
                .iter()
                .any(|o| o.name == v.name && o.region != v.region)
        })
        .count();
    format!(
        "reloaded: {} VIPs ({} added, {} removed, {} re-laid out), {} backends ({} added, {} removed); \
         unchanged backends kept their verdicts",
        nv.len(),
        nv.difference(&ov).count(),
        ov.difference(&nv).count(),
        moved,
        nb.len(),
        nb.difference(&ob).count(),
        ob.difference(&nb).count(),
    )
}

/// Now plus `timeout`; a drain_timeout beyond what Instant holds: a year.
fn until_after(timeout: std::time::Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + std::time::Duration::from_secs(365 * 86_400))
}
