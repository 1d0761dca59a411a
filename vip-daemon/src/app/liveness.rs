//! Issue "no failed connection": facts beat probes. A backend whose host node membership
//! declares dead leaves every table at once, and a local service whose socket vanished
//! (sock_diag) leaves this node's tables at once and is announced to the cluster.
use std::{net::IpAddr, time::Duration};

use tokio::sync::mpsc;

use crate::{
    config::Protocol,
    core::{
        backends::Input,
        shared_health::{cluster_verdict, Host},
    },
    shell::{
        gossip::{GossipCmd, Item, ItemBody},
        sockwatch::{self, WatchEvent, Watched},
    },
};

use super::Daemon;

/// How often the local sockets are listed: a killed service is seen within this.
pub const WATCH_PERIOD: Duration = Duration::from_millis(5);

impl Daemon {
    /// Starts watching the sockets of every backend that runs on this node.
    pub(super) fn start_sockwatch(&mut self) -> Option<mpsc::Receiver<WatchEvent>> {
        let mut watched = Vec::new();
        for v in &self.plan.vips {
            let Some(conf) = self.config.vips.iter().find(|c| c.name == v.name) else {
                continue;
            };
            for b in &v.backends {
                if !self.backends[b.index as usize].local {
                    continue;
                }
                watched.push(Watched {
                    key: b.index,
                    udp: conf.protocol == Protocol::Udp,
                    addrs: vec![b.conf.address, conf.address],
                    port: if conf.port != 0 {
                        conf.port
                    } else {
                        b.conf.port
                    },
                });
            }
        }
        if watched.is_empty() {
            return None;
        }
        match sockwatch::spawn(watched, WATCH_PERIOD) {
            Ok(rx) => Some(rx),
            Err(e) => {
                tracing::warn!(error = %e, "sock_diag unavailable: local services are probed only");
                None
            }
        }
    }

    pub(super) fn on_service_watch(&mut self, ev: WatchEvent) {
        self.backend_input(Input::Listening {
            index: ev.key,
            listening: ev.listening,
            at: ev.at,
        });
    }

    /// Cluster mode: tells the others whether this node's local service is listening.
    pub(super) fn share_service(&mut self, index: usize, listening: bool) {
        let (vip, backend) = self.backend_names(index);
        if let Some(c) = self.cluster.as_mut() {
            c.item_version += 1;
            let item = Item {
                origin: self.config.node.name.clone(),
                version: c.item_version,
                body: ItemBody::Service {
                    vip,
                    backend,
                    listening,
                },
            };
            let _ = c.gossip.try_send(GossipCmd::Broadcast(item));
        }
    }

    /// A host's report about its own service (gossip).
    pub(super) fn on_service_item(&mut self, origin: &str, vip: &str, backend: &str, up: bool) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let key = (vip.to_owned(), backend.to_owned());
        if up {
            c.not_listening.remove(&key);
        } else {
            c.not_listening.insert(key, origin.to_owned());
        }
        self.recompute_cluster_health(vip, backend);
    }

    /// Membership changed: every backend's verdict may follow its host. The changes are
    /// applied together, so a member's death publishes each VIP once, not once per backend.
    pub(super) fn recompute_all_cluster_health(&mut self) {
        let inputs: Vec<Input> = (self.plan.vips.iter())
            .flat_map(|v| v.backends.iter().map(move |b| (&v.name, &b.conf.name)))
            .filter_map(|(vip, backend)| self.cluster_view(vip, backend))
            .collect();
        let now = super::backends::now();
        let actions = (inputs.into_iter())
            .flat_map(|input| self.backends.handle(input, now))
            .collect();
        self.apply_backend_actions(actions, super::backends::Save::Now);
    }

    /// The member a backend runs on: this node for local backends, else the member whose
    /// gossip address is the backend's address.
    fn host_of(&self, index: usize, address: IpAddr) -> (Host, Option<String>) {
        let Some(c) = self.cluster.as_ref() else {
            return (Host::NotMember, None);
        };
        if self.backends[index].local {
            return (Host::Alive, Some(self.config.node.name.clone()));
        }
        match c.view.members.iter().find(|m| m.addr.ip() == address) {
            Some(m) if c.is_alive(&m.name) => (Host::Alive, Some(m.name.clone())),
            Some(m) => (Host::Dead, Some(m.name.clone())),
            None => (Host::NotMember, None),
        }
    }

    /// The cluster's verdict on one backend (see `core::shared_health`), fed to the backend
    /// core (which republishes its VIP when it changes).
    pub(super) fn recompute_cluster_health(&mut self, vip: &str, backend: &str) {
        if let Some(input) = self.cluster_view(vip, backend) {
            self.backend_input(input);
        }
    }

    /// The cluster's verdict on one backend as the backend core's input (None: no cluster,
    /// no such backend, or nobody has an opinion yet).
    fn cluster_view(&self, vip: &str, backend: &str) -> Option<Input> {
        let (_, b) = self.backend_named(vip, backend)?;
        let (index, address) = (b.index, b.conf.address);
        let (host, host_name) = self.host_of(index as usize, address);
        let c = self.cluster.as_ref()?;
        let me = &self.config.node.name;
        let key = (vip.to_owned(), backend.to_owned());
        // Only the host's own report counts; this node's own watch acts directly.
        let not_listening = c
            .not_listening
            .get(&key)
            .is_some_and(|origin| Some(origin) == host_name.as_ref() && origin != me);
        let verdict = cluster_verdict(
            c.views.get(&key),
            |origin| origin == me || c.is_alive(origin),
            host,
            not_listening,
        )?;
        Some(Input::ClusterView { index, verdict })
    }
}
