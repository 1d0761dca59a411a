//! From a config to the data plane's shape, and from backend states to Maglev tables. Pure:
//! every node given the same config and the same health view computes byte-identical tables
//! (primary/backup VIPs: and the same current writer, which every node reaches by following
//! the same history of cluster verdicts; `core::writer`).
use std::net::IpAddr;

use vip_common::{
    maps::{VipInfo, VipKey, NO_BACKEND, VIP_F_FLOWS, VIP_F_LEASED, VIP_F_SRC_HASH},
    wire::{FAMILY_V4, FAMILY_V6, IPPROTO_TCP, IPPROTO_UDP},
};

use crate::{
    config::{BackendConf, Config, Forward, HashMode, Limits, Protocol, Selection, Vip},
    core::{
        alloc::{Allocation, BackendId},
        layout::{Sizing, TableRegion},
        maglev::{self, MaglevBackend},
        writer,
    },
};

/// One backend of one VIP, with its index in the `BACKENDS` map.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendPlan {
    pub index: u32,
    /// Never reused for another backend identity (`core::alloc`).
    pub serial: u32,
    /// Maglev identity: a hash of the backend's name, so that table contents do not depend on
    /// the order backends are listed in.
    pub maglev_id: u32,
    pub conf: BackendConf,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VipPlan {
    pub name: String,
    pub key: VipKey,
    pub info: VipInfo,
    pub region: TableRegion,
    /// Second chance (cluster mode, a VIP with a backend on this node whose other backends
    /// all run on cluster members): where its fallback table lives, published like a VIP
    /// table under `ACTIVE` index `region.vip_index`.
    pub fallback: Option<TableRegion>,
    /// Flow-table VIPs that switched from second chance (`core::alloc` keeps their region):
    /// where the previous table lives, read by the program only while vipd sets
    /// `VIP_F_PREV_TABLE` (and `VipInfo::fallback`) during the transition after the switch.
    pub previous: Option<TableRegion>,
    pub selection: Selection,
    /// Primary/backup: the slot always goes back to the preferred backend (no stickiness).
    pub failback: bool,
    pub backends: Vec<BackendPlan>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub sizing: Sizing,
    pub seed: u32,
    pub vips: Vec<VipPlan>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("{0} has no place in the maps (internal: layout not reconciled)")]
    NotPlaced(String),
    #[error("vip {vip}: backends {a} and {b} have the same Maglev identity; rename one")]
    IdCollision { vip: String, a: String, b: String },
}

/// FNV-1a, 32 bits: a stable, dependency-free name hash.
fn fnv1a(s: &str) -> u32 {
    s.bytes()
        .fold(0x811c_9dc5, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193))
}

pub fn addr16(a: &IpAddr) -> ([u8; 16], u8) {
    match a {
        IpAddr::V4(v4) => {
            let mut x = [0u8; 16];
            x[..4].copy_from_slice(&v4.octets());
            (x, FAMILY_V4)
        }
        IpAddr::V6(v6) => (v6.octets(), FAMILY_V6),
    }
}

pub fn vip_key(vip: &Vip) -> VipKey {
    let (addr, family) = addr16(&vip.address);
    VipKey {
        addr,
        port: vip.port,
        proto: match vip.protocol {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
        },
        family,
    }
}

/// Lays the config out onto maps of `limits`, each VIP and backend where `alloc` (from
/// [`crate::core::alloc::reconcile`] for this config) put it. A VIP's fallback table has the
/// `ACTIVE` word `limits.vips + index`.
pub fn plan(config: &Config, alloc: &Allocation, limits: &Limits) -> Result<Plan, PlanError> {
    let mut vips = Vec::with_capacity(config.vips.len());
    for vip in &config.vips {
        let place = alloc
            .vip(&vip.name)
            .ok_or_else(|| PlanError::NotPlaced(vip.name.clone()))?;
        let region = TableRegion {
            vip_index: place.index,
            base: place.base,
            size: vip.table_size,
        };
        let second_region = place.fallback_base.map(|base| TableRegion {
            vip_index: limits.vips + place.index,
            base,
            size: vip.table_size,
        });
        let second_chance = second_chance_applies(config, vip);
        let flows = !second_chance && vip.selection == Selection::Maglev;
        // The one second region: second chance's fallback table, or (a flow-table VIP that
        // kept the region of its second-chance past, `core::alloc`) its previous table.
        let (fallback, previous) = if flows {
            (None, second_region)
        } else {
            (second_region, None)
        };
        let mut backends: Vec<BackendPlan> = Vec::with_capacity(vip.backends.len());
        for b in &vip.backends {
            let maglev_id = fnv1a(&b.name) & 0x7fff_ffff;
            if let Some(other) = backends.iter().find(|o| o.maglev_id == maglev_id) {
                return Err(PlanError::IdCollision {
                    vip: vip.name.clone(),
                    a: other.conf.name.clone(),
                    b: b.name.clone(),
                });
            }
            let id = BackendId {
                vip: vip.name.clone(),
                name: b.name.clone(),
                address: b.address,
            };
            let placed = alloc
                .backend(&id)
                .ok_or_else(|| PlanError::NotPlaced(format!("{}/{}", vip.name, b.name)))?;
            backends.push(BackendPlan {
                index: placed.index,
                serial: placed.serial,
                maglev_id,
                conf: b.clone(),
            });
        }
        let flags = if vip.hash == HashMode::Source {
            VIP_F_SRC_HASH
        } else {
            0
        } | if vip.selection == Selection::PrimaryBackup
            && config.cluster.membership.is_some()
        {
            // A demoted or stalled node must stop forwarding the single writer's VIP.
            VIP_F_LEASED
        } else {
            0
        } | if flows {
            // No second chance to hand a connection back: keep flows on their backend
            // through table changes with the flow table instead.
            VIP_F_FLOWS
        } else {
            0
        };
        vips.push(VipPlan {
            name: vip.name.clone(),
            key: vip_key(vip),
            info: VipInfo {
                index: place.index,
                table_size: vip.table_size,
                flags,
                fallback: fallback.map_or(0, |f| f.vip_index + 1),
            },
            region,
            fallback,
            previous,
            selection: vip.selection,
            failback: vip.failback,
            backends,
        });
    }
    Ok(Plan {
        sizing: sizing(config, limits),
        seed: config.cluster.hash_seed,
        vips,
    })
}

/// Map capacities for `limits`: fixed for the life of the maps, whatever the config holds.
pub fn sizing(config: &Config, limits: &Limits) -> Sizing {
    Sizing {
        vips: limits.vips,
        fallbacks: limits.vips,
        backends: limits.backends,
        slots: limits.table_slots,
        peers: 16,
        interfaces: config.node.interfaces.len() as u32,
        flows: limits.flows,
    }
}

/// The table of `vip` when `weight_of` gives each backend's effective weight (None or 0: not
/// in the table). Maglev VIPs spread over every eligible backend. Primary/backup VIPs give
/// their single slot to `current_writer` (a backend index) while it is eligible, else to the
/// eligible backend with the lowest priority value ([`crate::core::writer`]); Maglev VIPs
/// ignore it.
pub fn build_table(
    seed: u32,
    vip: &VipPlan,
    weight_of: impl Fn(&BackendPlan) -> Option<u32>,
    current_writer: Option<u32>,
) -> Vec<u32> {
    match vip.selection {
        Selection::PrimaryBackup => {
            let candidates: Vec<writer::Candidate> = vip
                .backends
                .iter()
                .map(|b| writer::Candidate {
                    index: b.index,
                    priority: b.conf.priority,
                    eligible: weight_of(b).unwrap_or(0) > 0,
                })
                .collect();
            let chosen = writer::choose(&candidates, current_writer, vip.failback);
            vec![chosen.unwrap_or(NO_BACKEND)]
        }
        Selection::Maglev => {
            let members: Vec<MaglevBackend> = vip
                .backends
                .iter()
                .filter_map(|b| {
                    weight_of(b).filter(|w| *w > 0).map(|weight| MaglevBackend {
                        id: b.maglev_id,
                        weight,
                    })
                })
                .collect();
            let table = maglev::build(seed, &members, vip.info.table_size)
                .expect("table sizes and ids are validated by config and plan");
            // Slots hold Maglev ids; the data plane wants BACKENDS indices.
            table
                .into_iter()
                .map(|id| {
                    vip.backends
                        .iter()
                        .find(|b| b.maglev_id == id)
                        .map_or(NO_BACKEND, |b| b.index)
                })
                .collect()
        }
    }
}

/// Second chance's table on one node: where a segment that one of this node's backends has
/// no socket for goes next. `without_local` is the live table without this node's backends
/// (what every table becomes once a dead local service is known: right for new connections
/// and for a dead service). `previous` is the live table before the last change, given only
/// while this node's own backend is healthy: then a segment without a socket here belongs to
/// a connection made before the change (a drain, a weight change, a backend added), and its
/// home is the backend the previous table picked, when that one still keeps its flows
/// (`usable`: another node's backend, healthy, not disabled). GLB's second chance, folded
/// into the one fallback table the data plane already has.
pub fn fallback_table(
    without_local: Vec<u32>,
    previous: &[u32],
    usable: impl Fn(u32) -> bool,
) -> Vec<u32> {
    if previous.len() != without_local.len() {
        return without_local;
    }
    without_local
        .into_iter()
        .zip(previous)
        .map(|(w, &p)| if p != NO_BACKEND && usable(p) { p } else { w })
        .collect()
}

/// Second chance needs a local backend to stand in for, and only backends that run vipd
/// (their address is a cluster peer's), since the fallback sends packets encapsulated and the
/// receiving node's XDP program unwraps them.
pub fn second_chance_applies(config: &Config, vip: &Vip) -> bool {
    let Some(m) = &config.cluster.membership else {
        return false;
    };
    let member = |b: &BackendConf| m.peers.iter().any(|p| p.ip() == b.address);
    vip.backends.iter().any(|b| is_local(config, b))
        && vip
            .backends
            .iter()
            .all(|b| is_local(config, b) || member(b))
}

/// Whether a backend forwards to the local stack.
pub fn is_local(config: &Config, b: &BackendConf) -> bool {
    b.forward == Forward::Local || config.node.addresses.contains(&b.address)
}

/// Fingerprint of the maps' shapes: the contract version, every map's entries and the sizes
/// of the types stored in them. Where things live inside the maps is not part of it (the
/// state file and `core::alloc` keep that): a reload changes contents, never shapes.
pub fn layout_id(sizing: &Sizing) -> u32 {
    use vip_common::maps::{Backend, Counter, FlowEntry, FlowKey, Lease, LeaseKey, Settings};
    let mut words: Vec<u32> = vec![vip_common::maps::CONTRACT_VERSION];
    for (_, entries) in sizing.entries(1) {
        words.push(entries);
    }
    words.extend(
        [
            std::mem::size_of::<VipKey>(),
            std::mem::size_of::<VipInfo>(),
            std::mem::size_of::<Backend>(),
            std::mem::size_of::<Settings>(),
            std::mem::size_of::<LeaseKey>(),
            std::mem::size_of::<Lease>(),
            std::mem::size_of::<Counter>(),
            std::mem::size_of::<FlowKey>(),
            std::mem::size_of::<FlowEntry>(),
        ]
        .map(|n| n as u32),
    );
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    // FNV-1a over the little-endian words; 0 means "never written", so avoid it.
    bytes
        .iter()
        .fold(0x811c_9dc5u32, |h, b| {
            (h ^ *b as u32).wrapping_mul(0x0100_0193)
        })
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_prefers_the_previous_pick_while_it_keeps_its_flows() {
        let without_local = vec![1, 2, 1, 2];
        // Before the change slot 0 was backend 3 (now drained, still healthy), slot 1 was
        // this node's own (0), slot 2 a dead backend (4), slot 3 empty.
        let previous = [3, 0, 4, NO_BACKEND];
        let usable = |i: u32| i == 1 || i == 2 || i == 3;
        assert_eq!(
            fallback_table(without_local.clone(), &previous, usable),
            [3, 2, 1, 2]
        );
        assert_eq!(
            fallback_table(without_local.clone(), &[], usable),
            without_local,
            "no previous table (or the local backend is down): the table without this node"
        );
    }
}
