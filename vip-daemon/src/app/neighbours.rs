//! Next hops and peers' MACs from the kernel's neighbour table, read off the event loop.
use std::{collections::HashMap, net::IpAddr};

use tokio::sync::mpsc;
use vip_common::maps::{Iface, SETTINGS_F_PEERS};

use crate::{
    core::{backends::Input, image},
    shell::neighbours,
};

use super::{startup::non_local_addresses, Daemon};

type NeighbourTable = HashMap<IpAddr, [u8; 6]>;

impl Daemon {
    /// Re-reads next hops; a changed MAC is written at once, and a backend that became
    /// (un)reachable changes its VIP's table.
    pub(super) async fn refresh_neighbours(&mut self) {
        let facts = self.neighbour_query().run().await;
        self.on_neighbours(facts);
    }

    /// Starts a refresh off the loop (the tick, a backend up without a MAC): with hundreds of
    /// backends the netlink dumps took tens of milliseconds, and verdicts waited for them.
    /// One at a time; the answer arrives through `tx`.
    pub(super) fn refresh_neighbours_soon(&mut self, tx: &mpsc::Sender<NeighbourFacts>) {
        if std::mem::replace(&mut self.neighbours_in_flight, true) {
            return;
        }
        let (query, tx) = (self.neighbour_query(), tx.clone());
        tokio::spawn(async move {
            let _ = tx.send(query.run().await).await;
        });
    }

    fn neighbour_query(&self) -> NeighbourQuery {
        let peers = self.config.cluster.membership.as_ref().map(|m| {
            let me = m.listen.ip();
            let ips = m.peers.iter().map(|p| p.ip()).filter(|ip| *ip != me);
            ips.collect()
        });
        NeighbourQuery {
            netlink: self.netlink.clone(),
            peers,
            backends: non_local_addresses(&self.plan, &self.backends),
            ports: self.egress_ports.clone(),
            links: self.links.iter().map(|l| l.name.clone()).collect(),
        }
    }

    /// Applies what a neighbour query found: peers' MACs into PEERS, next hops into the
    /// backend core (which rewrites the entries and tables that change).
    pub(super) fn on_neighbours(&mut self, facts: NeighbourFacts) {
        self.neighbours_in_flight = false;
        self.follow_mtus(&facts.mtus);
        if let Some((ips, table)) = &facts.peers {
            self.apply_peers(ips, table);
        }
        let hops = match facts.hops {
            Some(Ok(h)) => h,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "neighbour refresh failed");
                return;
            }
            None => return,
        };
        let mut actions = Vec::new();
        let now = super::backends::now();
        for v in &self.plan.vips {
            for b in &v.backends {
                let hop = hops.get(&b.conf.address).copied();
                let input = Input::NextHop {
                    index: b.index,
                    hop,
                };
                actions.extend(self.backends.handle(input, now));
            }
        }
        self.apply_backend_actions(actions, super::backends::Save::Soon(now.at));
    }

    /// An attached interface whose MTU changed (`ip link set IF mtu N`): its `IFACES` (and
    /// `EGRESS`) entry follows, so that encapsulated packets are checked against the MTU the
    /// link has now.
    fn follow_mtus(&mut self, mtus: &[Option<u16>]) {
        for (i, mtu) in mtus.iter().enumerate() {
            let Some(link) = self.links.get(i).cloned() else {
                break;
            };
            let Some(mtu) = mtu.filter(|m| *m != link.iface.mtu) else {
                continue;
            };
            let iface = Iface { mtu, ..link.iface };
            let written = self
                .maps
                .iface(link.ifindex, iface.mac, mtu)
                .and_then(|()| match link.port {
                    0 => Ok(()),
                    port => self.maps.egress(port, link.ifindex, iface),
                });
            match written {
                Ok(()) => {
                    tracing::info!(iface = %link.name, from = link.iface.mtu, to = mtu, "MTU changed: IFACES follows");
                    self.links[i].iface = iface;
                }
                Err(e) => tracing::warn!(iface = %link.name, error = %e, "IFACES write failed"),
            }
        }
    }

    /// Cluster peers' MACs into PEERS: frames they forwarded are delivered locally, never
    /// balanced again (loop freedom while two nodes briefly hold different tables).
    fn apply_peers(&mut self, ips: &[IpAddr], table: &HashMap<IpAddr, [u8; 6]>) {
        let mut any = false;
        for (i, ip) in ips.iter().enumerate() {
            if let Some(mac) = table.get(ip) {
                any = true;
                if !self.maps.image().peers.contains(mac) {
                    if let Err(e) = self.maps.peer(*mac, i as u32 + 1) {
                        tracing::warn!(peer = %ip, error = %e, "PEERS write failed");
                    }
                }
            }
        }
        if any && self.maps.image().settings.flags & SETTINGS_F_PEERS == 0 {
            let debug = self.packet_debug.map(|(d, _)| d);
            let settings = image::settings(&self.config, self.layout_id, true, debug);
            if let Err(e) = self.maps.settings(settings) {
                tracing::error!(error = %e, "SETTINGS write failed");
            }
        }
    }
}

/// A neighbour refresh's questions, answerable off the loop.
pub(super) struct NeighbourQuery {
    netlink: rtnetlink::Handle,
    /// Cluster mode: the other members' addresses.
    peers: Option<Vec<IpAddr>>,
    backends: Vec<IpAddr>,
    /// `Daemon::egress_ports`.
    ports: Vec<u32>,
    /// `Daemon::links`' names: their MTUs are read too.
    links: Vec<String>,
}

/// Its answers: (peer addresses, the neighbour table) and the backends' next hops.
pub(super) struct NeighbourFacts {
    peers: Option<(Vec<IpAddr>, NeighbourTable)>,
    hops: Option<Result<HashMap<IpAddr, neighbours::NextHop>, neighbours::NeighbourError>>,
    /// The MTU of each of `links`, in order (None: unreadable).
    mtus: Vec<Option<u16>>,
}

impl NeighbourQuery {
    async fn run(self) -> NeighbourFacts {
        let peers = match self.peers {
            Some(ips) => neighbours::neighbour_table(&self.netlink)
                .await
                .ok()
                .map(|table| (ips, table)),
            None => None,
        };
        let hops = if self.backends.is_empty() {
            None
        } else {
            // The netlink socket is shared: a dump of another task's in flight makes this one
            // fail with EBUSY ("neighbour refresh failed ... os error 16" once a minute in the
            // cluster tests' logs). Off the loop, so a short wait and a retry cost nothing.
            let mut tries = 0;
            loop {
                match neighbours::resolve(&self.netlink, &self.backends, &self.ports).await {
                    Err(e) if e.is_busy() && tries < 3 => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    r => break Some(r),
                }
            }
        };
        let mtus = self
            .links
            .iter()
            .map(|l| crate::shell::vipaddr::mtu_of(l))
            .collect();
        NeighbourFacts { peers, hops, mtus }
    }
}
