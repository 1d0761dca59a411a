//! Admin state the cluster agrees on (`core::admin`): this node's operator changes (drain,
//! disable, enable, weight, promote) and failovers of a primary/backup writer go out as gossip;
//! other nodes' come in and are applied like a local change. Single node: the same books
//! only stamp the state file.
use std::time::{Duration, Instant};

use crate::{
    core::{
        admin::{Book, Stamp, Write},
        backends::{AdminChange, BackendAdmin, Input},
        drain::Drain,
    },
    shell::{
        gossip::{GossipCmd, Item, ItemBody},
        state::SavedState,
    },
};

use super::{backends::Admin, cluster::ClusterRt, unix_ms, Daemon};

/// (VIP name, backend name) -> its admin state.
pub type AdminBook = Book<(String, String), BackendAdmin>;
/// Primary/backup VIP name -> the backend name holding its slot.
pub type WriterBook = Book<String, String>;

impl ClusterRt {
    /// Gossips `body` from this node; false when the queue was full.
    pub(super) fn send(&mut self, me: &str, body: ItemBody) -> bool {
        self.item_version += 1;
        let item = Item {
            origin: me.to_string(),
            version: self.item_version,
            body,
        };
        self.gossip.try_send(GossipCmd::Broadcast(item)).is_ok()
    }
}

fn admin_body(key: &(String, String), w: &Write<BackendAdmin>) -> ItemBody {
    ItemBody::Admin {
        vip: key.0.clone(),
        backend: key.1.clone(),
        admin: w.value.admin.as_str().into(),
        weight: w.value.weight,
        drain_started_ms: w.value.drain.map(|d| d.started_ms),
        drain_timeout_ms: (w.value.drain)
            .and_then(|d| d.timeout_override)
            .map(|t| t.as_millis() as u64),
        at: w.stamp.at,
        by: w.stamp.origin.clone(),
    }
}

fn writer_body(vip: &str, w: &Write<String>) -> ItemBody {
    ItemBody::Writer {
        vip: vip.into(),
        backend: w.value.clone(),
        at: w.stamp.at,
        by: w.stamp.origin.clone(),
    }
}

impl Daemon {
    /// The backend's (VIP name, backend name) and its admin state now.
    fn admin_of(&self, index: usize) -> ((String, String), BackendAdmin) {
        (
            self.backend_names(index),
            self.backends[index].admin_value(),
        )
    }

    /// A reload's config weight replaced backend `index`'s runtime weight: a runtime weight
    /// in the cluster's register is overwritten by sharing the new one.
    pub(super) fn weight_from_config(&mut self, index: usize) {
        let key = self.backend_names(index);
        if (self.admin_book.get(&key)).is_some_and(|w| w.value.weight.is_some()) {
            self.share_admin(index);
        }
    }

    /// Records an operator change of backend `index` made here and tells the cluster.
    pub(super) fn share_admin(&mut self, index: usize) {
        let (key, value) = self.admin_of(index);
        let me = self.config.node.name.clone();
        let write = self.admin_book.set(key.clone(), value, &me, unix_ms());
        if let Some(c) = self.cluster.as_mut() {
            if !c.send(&me, admin_body(&key, &write)) {
                tracing::warn!(vip = %key.0, backend = %key.1, "gossip queue full: admin change not sent");
            }
        }
    }

    /// Records that the writer of primary/backup VIP `vip` changed here and tells the cluster:
    /// after a promote (`operator`), or a failover this node's tables made. A node without
    /// quorum keeps its failovers to itself: cut off, it sees the others' backends die, and
    /// its pick must not outrank the majority's when the partition heals (the lab's act 5
    /// once left a rebooted node with another writer for good).
    pub(super) fn share_writer(&mut self, vip: usize, operator: bool) {
        let in_quorum = self
            .cluster
            .as_ref()
            .is_none_or(|c| c.ownership.in_quorum());
        if !operator && !in_quorum {
            return;
        }
        let Some(index) = self.current_writer(vip) else {
            return;
        };
        let (v, pos) = self.locate_backend(index as usize);
        let name = self.plan.vips[v].name.clone();
        let backend = self.plan.vips[v].backends[pos].conf.name.clone();
        let me = self.config.node.name.clone();
        let write = self.writer_book.set(name.clone(), backend, &me, unix_ms());
        if let Some(c) = self.cluster.as_mut() {
            if !c.send(&me, writer_body(&name, &write)) {
                tracing::warn!(vip = %name, "gossip queue full: writer change not sent");
            }
        }
    }

    /// Another node's admin write: applied when it is the newest for a backend we have.
    pub(super) fn on_admin_item(&mut self, body: ItemBody) {
        let ItemBody::Admin {
            vip,
            backend,
            admin,
            weight,
            drain_started_ms,
            drain_timeout_ms,
            at,
            by,
        } = body
        else {
            return;
        };
        let Some((_, b)) = self.backend_named(&vip, &backend) else {
            return; // not configured here (yet): a reload adding it starts enabled
        };
        let index = b.index;
        let Some(admin) = Admin::parse(&admin) else {
            tracing::warn!(%vip, %backend, %by, %admin, "admin item with an unknown state ignored");
            return;
        };
        let value = BackendAdmin {
            admin,
            weight,
            drain: drain_started_ms.map(|started_ms| Drain {
                started_ms,
                timeout_override: drain_timeout_ms.map(Duration::from_millis),
            }),
        };
        let stamp = Stamp { at, origin: by };
        let by = stamp.origin.clone();
        let Some(value) = self
            .admin_book
            .merge((vip.clone(), backend.clone()), Write { stamp, value })
        else {
            return;
        };
        self.backend_input(Input::Admin {
            index,
            change: AdminChange::Set(value),
        });
        let rt = &self.backends[index as usize];
        let summary = format!(
            "{vip}/{backend}: {} weight {}",
            rt.admin.as_str(),
            rt.weight
        );
        tracing::info!("admin from {by}: {summary}");
    }

    /// Another node's writer of a primary/backup VIP: the newest write is the writer, also
    /// when this node's differs for reasons of its own (a failover made without quorum, a
    /// state file's writer after a reboot); it keeps the slot while eligible here
    /// (`core::writer`).
    pub(super) fn on_writer_item(&mut self, body: ItemBody) {
        let ItemBody::Writer {
            vip,
            backend,
            at,
            by,
        } = body
        else {
            return;
        };
        if self.backend_named(&vip, &backend).is_none() {
            return;
        }
        let stamp = Stamp { at, origin: by };
        let by = stamp.origin.clone();
        self.writer_book.merge(
            vip.clone(),
            Write {
                stamp,
                value: backend,
            },
        );
        let Some(newest) = self.writer_book.get(&vip).map(|w| w.value.clone()) else {
            return;
        };
        let Some((v, b)) = self.backend_named(&vip, &newest) else {
            return;
        };
        let (index, serial, backend) = (b.index, b.serial, newest);
        if self.current_writer(v) == Some(index) {
            return;
        }
        self.vips[v].writer = Some((index, serial));
        self.vips[v].awaiting_writer = None;
        self.republish(v, Some(Instant::now()));
        self.save_state();
        tracing::info!(%vip, %backend, "primary/backup writer from {by}");
    }

    /// Every admin and writer register this node knows, for a node that (re)joined.
    pub(super) fn admin_items(&self) -> Vec<ItemBody> {
        let admins = self.admin_book.iter().map(|(k, w)| admin_body(k, w));
        let writers = self.writer_book.iter().map(|(k, w)| writer_body(k, w));
        admins.chain(writers).collect()
    }

    /// After a reload: forget registers of backends and VIPs no longer configured.
    pub(super) fn prune_admin(&mut self) {
        let plan = &self.plan;
        let has = |vip: &str, backend: &str| {
            plan.vips
                .iter()
                .any(|v| v.name == vip && v.backends.iter().any(|b| b.conf.name == backend))
        };
        self.admin_book.retain(|(vip, backend)| has(vip, backend));
        self.writer_book
            .retain(|vip| plan.vips.iter().any(|v| &v.name == vip));
    }

    /// At start: the stamps of the state file's admin states and writers, so that the
    /// cluster's newer writes win over them and ours keep their order.
    pub(super) fn seed_admin(&mut self, saved: &SavedState) {
        for s in &saved.backends {
            let (vip, backend) = (s.id.vip.clone(), s.id.name.clone());
            if let (Some(stamp), Some(admin)) = (s.admin_stamp.clone(), Admin::parse(&s.admin)) {
                let value = BackendAdmin {
                    admin,
                    weight: s.weight,
                    drain: s.drain_started_ms.filter(|_| admin == Admin::Drained).map(
                        |started_ms| Drain {
                            started_ms,
                            timeout_override: s.drain_timeout_ms.map(Duration::from_millis),
                        },
                    ),
                };
                self.admin_book
                    .merge((vip.clone(), backend.clone()), Write { stamp, value });
            }
            if let Some(stamp) = s.writer_stamp.clone().filter(|_| s.writer) {
                self.writer_book.merge(
                    vip,
                    Write {
                        stamp,
                        value: backend,
                    },
                );
            }
        }
    }
}
