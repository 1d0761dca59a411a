//! Cluster mode in the loop: gossip events feed the ownership core; its actions become
//! address claims and releases, gratuitous ARP, data-plane leases, fencing hook runs and
//! broadcasts. The unit of ownership is a VIP address (several services share one).
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use vip_common::maps::{Lease, LeaseKey};

use crate::{
    config::{Announce, Config, Membership},
    core::{
        ownership::{
            Action, Claim, Gossip, Input, NodeState, Ownership, OwnershipConfig, VipPolicy,
        },
        plan::addr16,
        swim::SwimTuning,
    },
    shell::{
        gossip::{GossipCmd, GossipEvent, Item, ItemBody, MembersView},
        hooks::Event,
        vipaddr,
    },
};

use super::Daemon;

/// Gratuitous ARP / NA sent on a claim, spaced this far apart; then refreshed periodically.
const ANNOUNCE_BURST: u32 = 3;
const ANNOUNCE_REFRESH: Duration = Duration::from_secs(10);

pub struct ClusterRt {
    pub membership: Membership,
    pub ownership: Ownership,
    pub gossip: mpsc::Sender<GossipCmd>,
    pub fence_tx: mpsc::Sender<(String, bool)>,
    /// Address string -> address.
    pub addresses: BTreeMap<String, IpAddr>,
    pub alive: BTreeSet<String>,
    pub last_heard: HashMap<String, Instant>,
    /// Membership as gossip last reported it (incarnations, addresses, local health).
    pub view: MembersView,
    pub member_down_events: u64,
    /// Services whose host reported their socket gone: (vip, backend) -> host.
    pub not_listening: HashMap<(String, String), String>,
    pub rejected: BTreeMap<&'static str, u64>,
    pub status_lines: Vec<String>,
    pub last_announce: HashMap<String, Instant>,
    /// VIP -> (owner as this node sees it, since when in Unix ms): "owner ctl2 for 3m".
    pub owner_since: HashMap<String, (Option<String>, u64)>,
    pub item_version: u64,
    /// (vip, backend) -> each observer's latest verdict (true = up).
    pub views: HashMap<(String, String), BTreeMap<String, bool>>,
    /// The fast failure detector's threads (`[cluster] heartbeat_interval`), and the members
    /// it finds silent: a member counts alive only when SWIM says so and it is not silent.
    pub heartbeats: Option<crate::shell::heartbeat::Heartbeats>,
    pub silent: BTreeSet<String>,
}

impl ClusterRt {
    /// Alive for ownership: SWIM's members that the heartbeat detector does not find silent.
    pub fn alive_now(&self) -> Vec<String> {
        self.alive.difference(&self.silent).cloned().collect()
    }

    /// Whether member `n` counts alive (see [`ClusterRt::alive_now`]): its backends too.
    pub fn is_alive(&self, n: &str) -> bool {
        self.alive.contains(n) && !self.silent.contains(n)
    }
}

/// Ownership policies: one per VIP address, merging the preferences and fencing of the
/// services that share it.
pub fn policies(config: &Config) -> (Vec<VipPolicy>, BTreeMap<String, IpAddr>) {
    let mut out: Vec<VipPolicy> = Vec::new();
    let mut addrs = BTreeMap::new();
    let fence = config
        .cluster
        .membership
        .as_ref()
        .is_some_and(|m| m.fence_command.is_some());
    // A routed VIP has no owner: every node in service announces it (`core::announce`).
    for v in config
        .vips
        .iter()
        .filter(|v| v.announce == Announce::Address)
    {
        let name = v.address.to_string();
        addrs.insert(name.clone(), v.address);
        match out.iter_mut().find(|p| p.name == name) {
            Some(p) => {
                for pref in &v.preferences {
                    if !p.preferences.contains(pref) {
                        p.preferences.push(pref.clone());
                    }
                }
                p.fencing |= fence && v.fencing;
            }
            None => out.push(VipPolicy {
                name,
                preferences: v.preferences.clone(),
                allowed: None,
                fencing: fence && v.fencing,
            }),
        }
    }
    (out, addrs)
}

pub fn ownership_config(config: &Config, m: &Membership) -> OwnershipConfig {
    OwnershipConfig {
        me: config.node.name.clone(),
        voters: m.voters.clone(),
        witness: m.witness.clone(),
        lease: m.lease,
        margin: m.probe_period * 2,
        vips: policies(config).0,
    }
}

fn monotonic_ns(at: Instant) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now_ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    let now = Instant::now();
    if at >= now {
        now_ns + (at - now).as_nanos() as u64
    } else {
        now_ns.saturating_sub((now - at).as_nanos() as u64)
    }
}

impl Daemon {
    pub(super) fn lease_key(addr: &IpAddr) -> LeaseKey {
        let (a, family) = addr16(addr);
        LeaseKey {
            addr: a,
            family,
            _pad: [0; 3],
        }
    }

    /// Lists every cluster VIP address in LEASES with no lease held yet.
    pub(super) fn init_leases(&mut self) {
        let Some(c) = &self.cluster else { return };
        let addrs: Vec<IpAddr> = c.addresses.values().copied().collect();
        for a in addrs {
            let key = Self::lease_key(&a);
            if let Err(e) = self.maps.lease(key, Lease::default()) {
                tracing::error!(vip = %a, error = %e, "LEASES write failed");
            }
        }
    }

    pub(super) async fn on_gossip(&mut self, ev: GossipEvent) {
        let now = Instant::now();
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let mut recompute = false;
        let inputs = match ev {
            GossipEvent::Up(n) => {
                let joined = c.alive.insert(n);
                recompute = true;
                let inputs = vec![Input::Alive(c.alive_now())];
                if joined {
                    self.resend_own_views();
                }
                inputs
            }
            GossipEvent::Restarted(_) => {
                self.resend_own_views();
                vec![]
            }
            GossipEvent::Down(n) => {
                let removed = c.alive.remove(&n);
                if removed {
                    tracing::warn!(member = %n, "member down: SWIM declared it dead");
                }
                // Counted once per death, whichever detector found it first.
                let was = removed && !c.silent.contains(&n);
                c.member_down_events += u64::from(was);
                // Node death is backend death: its backends leave every table now.
                recompute = true;
                vec![Input::Dead(n.clone()), Input::Alive(c.alive_now())]
            }
            GossipEvent::Silent(n) => {
                let was = c.alive.contains(&n) && c.silent.insert(n.clone());
                if was {
                    c.member_down_events += 1;
                    recompute = true;
                    tracing::warn!(member = %n, "member silent on every link: taken for dead");
                    vec![Input::Dead(n.clone()), Input::Alive(c.alive_now())]
                } else {
                    vec![]
                }
            }
            GossipEvent::Back(n) => {
                if c.silent.remove(&n) {
                    recompute = true;
                    tracing::info!(member = %n, "member heard again after its silence");
                    if c.alive.contains(&n) {
                        self.resend_own_views();
                    }
                }
                let Some(c) = self.cluster.as_mut() else {
                    return;
                };
                vec![Input::Alive(c.alive_now())]
            }
            GossipEvent::Heard(n) => {
                c.last_heard.insert(n.clone(), now);
                vec![Input::Heard(n)]
            }
            GossipEvent::Members(view) => {
                recompute = c.view.members.len() != view.members.len();
                c.view = view;
                vec![]
            }
            GossipEvent::Rejected(why) => {
                *c.rejected.entry(why).or_default() += 1;
                vec![]
            }
            GossipEvent::Item(item) => match item.body {
                ItemBody::Claim { vip, owner, epoch } => {
                    vec![Input::Claim(Claim { vip, owner, epoch })]
                }
                ItemBody::Released { vip, owner, epoch } => {
                    vec![Input::Released(Claim { vip, owner, epoch })]
                }
                ItemBody::Health { vip, backend, up } => {
                    c.views
                        .entry((vip.clone(), backend.clone()))
                        .or_default()
                        .insert(item.origin, up);
                    self.recompute_cluster_health(&vip, &backend);
                    vec![]
                }
                ItemBody::Service {
                    vip,
                    backend,
                    listening,
                } => {
                    self.on_service_item(&item.origin, &vip, &backend, listening);
                    vec![]
                }
                body @ ItemBody::Admin { .. } => {
                    self.on_admin_item(body);
                    vec![]
                }
                body @ ItemBody::Writer { .. } => {
                    self.on_writer_item(body);
                    vec![]
                }
                ItemBody::NodeState { node, reason } => {
                    vec![Input::NodeState(NodeState {
                        node,
                        reason,
                        version: item.version,
                    })]
                }
            },
        };
        if recompute {
            self.recompute_all_cluster_health();
        }
        for input in inputs {
            let actions = self
                .cluster
                .as_mut()
                .map(|c| c.ownership.handle(input, now))
                .unwrap_or_default();
            self.apply_ownership(actions).await;
        }
    }

    pub(super) async fn ownership_tick(&mut self) {
        let now = Instant::now();
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let actions = c.ownership.tick(now);
        self.apply_ownership(actions).await;
        self.note_owner_changes();
        // Periodic gratuitous ARP refresh for what we own (fixes stale caches upstream).
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let due: Vec<String> = c
            .ownership
            .owned()
            .into_iter()
            .filter(|v| {
                c.last_announce
                    .get(v)
                    .is_none_or(|t| t.elapsed() >= ANNOUNCE_REFRESH)
            })
            .collect();
        for v in due {
            self.announce(&v, 1);
        }
    }

    /// Keeps when each VIP got its current owner (as seen here), for status.
    fn note_owner_changes(&mut self) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let now_ms = super::unix_ms();
        for v in c.ownership.view() {
            let known = c.owner_since.get(&v.vip).map(|(o, _)| o);
            if known != Some(&v.owner) {
                c.owner_since.insert(v.vip, (v.owner, now_ms));
            }
        }
    }

    pub(super) async fn on_fence_result(&mut self, node: String, ok: bool) {
        let now = Instant::now();
        if !ok {
            self.metrics.fencing_failures.inc();
        }
        let actions = self
            .cluster
            .as_mut()
            .map(|c| c.ownership.handle(Input::FenceResult { node, ok }, now))
            .unwrap_or_default();
        self.apply_ownership(actions).await;
    }

    fn announce(&mut self, vip: &str, times: u32) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let Some(&addr) = c.addresses.get(vip) else {
            return;
        };
        c.last_announce.insert(vip.to_owned(), Instant::now());
        for iface in self.config.node.interfaces.clone() {
            for _ in 0..times {
                if let Err(e) = vipaddr::announce(&iface, addr) {
                    tracing::warn!(error = %e, "gratuitous announcement failed");
                }
            }
        }
    }

    pub(super) async fn apply_ownership(&mut self, actions: Vec<Action>) {
        for action in actions {
            let Some(c) = self.cluster.as_mut() else {
                return;
            };
            match action {
                Action::Claim { vip, epoch } => {
                    tracing::info!(%vip, epoch, "claiming VIP");
                    self.notifier.notify(vip_event("claim", &vip, epoch, None));
                    if let Some(&addr) = c.addresses.get(&vip) {
                        for iface in self.config.node.interfaces.clone() {
                            if let Err(e) = vipaddr::add(&self.netlink, &iface, addr).await {
                                tracing::error!(%vip, %iface, error = %e, "adding the VIP address failed");
                            }
                        }
                        self.announce(&vip, ANNOUNCE_BURST);
                    }
                }
                Action::Release { vip, epoch } => {
                    tracing::info!(%vip, epoch, "releasing VIP");
                    self.notifier
                        .notify(vip_event("release", &vip, epoch, None));
                    if let Some(&addr) = c.addresses.get(&vip) {
                        let key = Self::lease_key(&addr);
                        let _ = self.maps.lease(key, Lease::default());
                        for iface in self.config.node.interfaces.clone() {
                            if let Err(e) = vipaddr::remove(&self.netlink, &iface, addr).await {
                                tracing::error!(%vip, %iface, error = %e, "removing the VIP address failed");
                            }
                        }
                    }
                }
                Action::HandOver { vip, epoch, to } => {
                    // The lease is left to run out: see `Action::HandOver`.
                    tracing::info!(%vip, epoch, %to, "handing VIP over");
                    self.notifier
                        .notify(vip_event("release", &vip, epoch, Some(&to)));
                    if let Some(&addr) = c.addresses.get(&vip) {
                        for iface in self.config.node.interfaces.clone() {
                            if let Err(e) = vipaddr::remove(&self.netlink, &iface, addr).await {
                                tracing::error!(%vip, %iface, error = %e, "removing the VIP address failed");
                            }
                        }
                    }
                }
                Action::RenewLease { vip, epoch, until } => {
                    if let Some(&addr) = c.addresses.get(&vip) {
                        let lease = Lease {
                            expiry_ns: monotonic_ns(until),
                            epoch: epoch as u32,
                            _pad: 0,
                        };
                        if let Err(e) = self.maps.lease(Self::lease_key(&addr), lease) {
                            tracing::error!(%vip, error = %e, "lease write failed");
                        }
                    }
                }
                Action::Broadcast(g) => {
                    c.item_version += 1;
                    let (body, version) = match g {
                        Gossip::Claim(cl) => (
                            ItemBody::Claim {
                                vip: cl.vip,
                                owner: cl.owner,
                                epoch: cl.epoch,
                            },
                            Item::ownership_version(cl.epoch, false),
                        ),
                        Gossip::Released(cl) => (
                            ItemBody::Released {
                                vip: cl.vip,
                                owner: cl.owner,
                                epoch: cl.epoch,
                            },
                            Item::ownership_version(cl.epoch, true),
                        ),
                        Gossip::NodeState(NodeState {
                            node,
                            reason,
                            version,
                        }) => (ItemBody::NodeState { node, reason }, version),
                        Gossip::Move { .. } => continue,
                    };
                    let item = Item {
                        origin: self.config.node.name.clone(),
                        version,
                        body,
                    };
                    let _ = c.gossip.send(GossipCmd::Broadcast(item)).await;
                }
                Action::Fence { node, reason } => {
                    let Some(cmd) = c.membership.fence_command.clone() else {
                        let _ = c.fence_tx.send((node, false)).await;
                        continue;
                    };
                    tracing::warn!(%node, %reason, "fencing");
                    let (tx, timeout) = (c.fence_tx.clone(), c.membership.fence_timeout);
                    tokio::spawn(async move {
                        let run = tokio::process::Command::new(&cmd[0])
                            .args(&cmd[1..])
                            .env("VIPD_FENCE_NODE", &node)
                            .env("VIPD_FENCE_REASON", &reason)
                            .kill_on_drop(true)
                            .status();
                        let ok = matches!(tokio::time::timeout(timeout, run).await, Ok(Ok(s)) if s.success());
                        if !ok {
                            tracing::error!(%node, "FENCING FAILED: no takeover until it succeeds");
                        }
                        let _ = tx.send((node, ok)).await;
                    });
                }
                Action::Status(line) => {
                    tracing::warn!("{line}");
                    c.status_lines.push(line);
                    if c.status_lines.len() > 20 {
                        c.status_lines.remove(0);
                    }
                }
            }
        }
    }
}

/// The notify hook's event for a VIP address claimed or given up (`to`: handed over to).
fn vip_event(kind: &'static str, vip: &str, epoch: u64, to: Option<&str>) -> Event {
    let mut env = vec![
        ("VIPD_VIP", vip.to_owned()),
        ("VIPD_EPOCH", epoch.to_string()),
    ];
    env.extend(to.map(|to| ("VIPD_TO", to.to_owned())));
    Event { kind, env }
}

impl Daemon {
    /// Joins the cluster: key, gossip, ownership, leases, VIPs on `lo`.
    pub(super) async fn start_cluster(
        &mut self,
        m: Membership,
        fence_tx: mpsc::Sender<(String, bool)>,
    ) -> anyhow::Result<mpsc::Receiver<GossipEvent>> {
        let keys = crate::shell::keyfile::load_keys(&m.key_file)?;
        let (gossip, events) = crate::shell::gossip::spawn(crate::shell::gossip::GossipConfig {
            me: self.config.node.name.clone(),
            listen: m.listen,
            peers: m.peers.clone(),
            keys,
            tuning: SwimTuning::new(m.probe_period, m.suspect_timeout),
            // Was 3 whatever the cluster: a 5- or 7-node cluster re-sent news too few times.
            cluster_size: m.voters.len().max(m.peers.len()) as u32,
            secondary: m.secondary.clone(),
        })
        .await?;
        // The heartbeat detector's verdicts join gossip's events (one stream for the loop).
        let (events, heartbeats) = match m.heartbeat {
            None => (events, None),
            Some(hb) => {
                let (tx, merged) = mpsc::channel(1024);
                let mut links = vec![(m.listen, m.peers.clone())];
                if let Some(s) = &m.secondary {
                    links.push((s.listen, s.peers.clone()));
                }
                let threads = crate::shell::heartbeat::spawn(
                    crate::shell::heartbeat::HeartbeatConfig {
                        me: self.config.node.name.clone(),
                        links,
                        interval: hb.interval,
                        timeout: hb.timeout,
                        keys,
                    },
                    tx.clone(),
                )?;
                let mut events = events;
                tokio::spawn(async move {
                    while let Some(ev) = events.recv().await {
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                });
                (merged, Some(threads))
            }
        };
        let oc = ownership_config(&self.config, &m);
        oc.validate()?;
        let (_, addresses) = policies(&self.config);
        // Recorded for `vipd host undo` (`own_host`).
        self.cluster_sysctls();
        for addr in addresses.values() {
            self.add_lo_vip(*addr).await;
        }
        self.cluster = Some(ClusterRt {
            ownership: Ownership::new(oc, Instant::now()),
            membership: m,
            gossip,
            fence_tx,
            addresses,
            alive: BTreeSet::new(),
            last_heard: HashMap::new(),
            view: MembersView::default(),
            member_down_events: 0,
            not_listening: HashMap::new(),
            rejected: BTreeMap::new(),
            status_lines: Vec::new(),
            last_announce: HashMap::new(),
            owner_since: HashMap::new(),
            // Versions must grow across restarts of this node: start from the wall clock.
            item_version: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            views: HashMap::new(),
            heartbeats,
            silent: BTreeSet::new(),
        });
        self.init_leases();
        Ok(events)
    }

    /// `vipd leave`: hand every VIP over (the successors adopt at once, no fencing), then
    /// leave the membership. Returns once the leave is on the wire, so the caller may stop
    /// the daemon right away.
    pub(super) async fn leave(&mut self) -> Result<String, String> {
        let now = Instant::now();
        let Some(c) = self.cluster.as_mut() else {
            return Err("not in cluster mode".into());
        };
        let actions = c.ownership.handle(Input::Leave, now);
        let summary = actions
            .iter()
            .find_map(|a| match a {
                Action::Status(line) if line.starts_with("LEAVING") => Some(line.clone()),
                _ => None,
            })
            .unwrap_or_default();
        self.apply_ownership(actions).await;
        if let Some(hb) = self.cluster.as_ref().and_then(|c| c.heartbeats.as_ref()) {
            hb.bye();
        }
        if let Some(c) = &self.cluster {
            // Give the handovers a moment to spread before leaving the membership.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (ack, sent) = tokio::sync::oneshot::channel();
            if c.gossip.send(GossipCmd::Leave(ack)).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(1), sent).await;
            }
        }
        Ok(format!("{summary}; left the cluster"))
    }
}

impl Daemon {
    /// `vipd vip move VIP NODE`: the owner hands the VIP address (named by a VIP's name or
    /// its address) to `to` with the ownership core's move; established connections
    /// survive as in any move (same tables everywhere). Only the owner can do it: moves are
    /// not forwarded over gossip (a new gossip item would be dropped by older vipds during a
    /// rolling upgrade), so another node answers with the owner's name.
    pub(super) async fn move_vip(&mut self, vip: &str, to: &str) -> Result<String, String> {
        let address = self
            .config
            .vips
            .iter()
            .find(|v| v.name == vip || v.address.to_string() == vip)
            .map(|v| v.address.to_string())
            .ok_or_else(|| format!("no VIP named or addressed {vip:?}"))?;
        let now = Instant::now();
        let Some(c) = self.cluster.as_mut() else {
            return Err("not in cluster mode: a single node owns every VIP".into());
        };
        let owner = c
            .ownership
            .view()
            .into_iter()
            .find(|v| v.vip == address)
            .and_then(|v| v.owner);
        match owner {
            Some(o) if o == self.config.node.name => {}
            Some(o) => return Err(format!("{address} is owned by {o}: run the move there")),
            None => return Err(format!("{address} has no owner now: placement decides")),
        }
        let actions = c.ownership.handle(
            Input::Move {
                vip: address.clone(),
                to: to.to_owned(),
            },
            now,
        );
        let lines: Vec<String> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Status(line) => Some(line.clone()),
                _ => None,
            })
            .collect();
        self.apply_ownership(actions).await;
        match lines.iter().find(|l| l.contains("handed over")) {
            Some(done) => Ok(done.clone()),
            None if lines.is_empty() => Ok(format!("{address} is already on {to}")),
            None => Err(lines.join("; ")),
        }
    }

    /// A member joined or restarted (started, rebooted, back from a partition): it knows no
    /// one's views, and verdicts are only gossiped when they change. Without them its
    /// tables, fallback tables included, follow its own probes alone until they rise, while
    /// the others may already send it traffic: a second chance from it could pick another
    /// backend than the one a connection lives on. So every node sends it its views (and its
    /// own services' socket facts) again; the others drop them as repeats.
    pub(super) fn resend_own_views(&mut self) {
        let me = self.config.node.name.clone();
        let gone: Vec<(String, String)> = (0..self.backends.len())
            .filter(|&i| self.backends[i].listening == Some(false))
            .map(|i| {
                let (vip, pos) = self.locate_backend(i);
                let v = &self.plan.vips[vip];
                (v.name.clone(), v.backends[pos].conf.name.clone())
            })
            .collect();
        let admin = self.admin_items();
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let views: Vec<ItemBody> = (c.views.iter())
            .filter_map(|((vip, backend), seen)| {
                let up = *seen.get(&me)?;
                let (vip, backend) = (vip.clone(), backend.clone());
                Some(ItemBody::Health { vip, backend, up })
            })
            .chain(gone.into_iter().map(|(vip, backend)| ItemBody::Service {
                vip,
                backend,
                listening: false,
            }))
            .chain(admin)
            .collect();
        let mut dropped = 0;
        for body in views {
            c.item_version += 1;
            let item = Item {
                origin: me.clone(),
                version: c.item_version,
                body,
            };
            dropped += usize::from(c.gossip.try_send(GossipCmd::Broadcast(item)).is_err());
        }
        if dropped > 0 {
            // The joiner's own probes still bring these backends up after `rise`.
            tracing::warn!(
                dropped,
                "gossip queue full: some views not re-sent to a joiner"
            );
        }
    }

    /// Cluster mode: tells the others this node's verdict on a backend.
    pub(super) fn share_verdict(&mut self, index: usize, health: crate::core::health::Health) {
        let (vip, pos) = self.locate_backend(index);
        let (vip_name, backend) = (
            self.plan.vips[vip].name.clone(),
            self.plan.vips[vip].backends[pos].conf.name.clone(),
        );
        let me = self.config.node.name.clone();
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let up = health == crate::core::health::Health::Up;
        c.views
            .entry((vip_name.clone(), backend.clone()))
            .or_default()
            .insert(me.clone(), up);
        c.item_version += 1;
        let item = Item {
            origin: me,
            version: c.item_version,
            body: ItemBody::Health {
                vip: vip_name.clone(),
                backend: backend.clone(),
                up,
            },
        };
        let _ = c.gossip.try_send(GossipCmd::Broadcast(item));
        self.recompute_cluster_health(&vip_name, &backend);
    }

    /// Whether this node's own probes disagree with the cluster's verdict (bad NIC, local
    /// firewall): shown in status.
    pub(super) fn disagrees(&self, index: usize) -> bool {
        self.backends[index].disagrees()
    }
}
