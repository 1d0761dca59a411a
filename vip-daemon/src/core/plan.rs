//! From a config to the data plane's shape, and from backend states to Maglev tables. Pure:
//! every node given the same config and the same health view computes byte-identical tables.
use std::net::IpAddr;

use vip_common::{
    maps::{
        VipInfo, VipKey, DEFAULT_MAX_FLOWS, NO_BACKEND, VIP_F_FLOWS, VIP_F_LEASED, VIP_F_SRC_HASH,
    },
    wire::{FAMILY_V4, FAMILY_V6, IPPROTO_TCP, IPPROTO_UDP},
};

use crate::{
    config::{BackendConf, Config, Forward, HashMode, Protocol, Selection, Vip},
    core::{
        layout::{Sizing, TableRegion},
        maglev::{self, MaglevBackend},
    },
};

/// One backend of one VIP, with its index in the `BACKENDS` map.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendPlan {
    pub index: u32,
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
    pub selection: Selection,
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

/// Lays the config out onto the maps: VIP and backend indices in config order, each VIP's two
/// table generations one after the other, maps sized to exactly what the config needs.
pub fn plan(config: &Config) -> Result<Plan, PlanError> {
    let (mut next_backend, mut next_slot) = (0u32, 0u32);
    let mut vips = Vec::with_capacity(config.vips.len());
    for (i, vip) in config.vips.iter().enumerate() {
        let region = TableRegion {
            vip_index: i as u32,
            base: next_slot,
            size: vip.table_size,
        };
        next_slot += region.slots();
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
            backends.push(BackendPlan {
                index: next_backend,
                maglev_id,
                conf: b.clone(),
            });
            next_backend += 1;
        }
        vips.push(VipPlan {
            name: vip.name.clone(),
            key: vip_key(vip),
            info: VipInfo {
                index: i as u32,
                table_size: vip.table_size,
                flags: if vip.hash == HashMode::Source {
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
                },
                fallback: 0,
            },
            region,
            fallback: None,
            selection: vip.selection,
            backends,
        });
    }
    // Fallback tables after every VIP's own, with ACTIVE words after every VIP's.
    let mut fallbacks = 0;
    for (i, vip) in config.vips.iter().enumerate() {
        if second_chance_applies(config, vip) {
            let region = TableRegion {
                vip_index: (config.vips.len() + fallbacks) as u32,
                base: next_slot,
                size: vip.table_size,
            };
            next_slot += region.slots();
            fallbacks += 1;
            vips[i].info.fallback = region.vip_index + 1;
            vips[i].fallback = Some(region);
        } else if vip.selection == Selection::Maglev {
            // No second chance to hand a connection back: keep flows on their backend
            // through table changes with the flow table instead.
            vips[i].info.flags |= VIP_F_FLOWS;
        }
    }
    let any_flows = vips.iter().any(|v| v.info.flags & VIP_F_FLOWS != 0);
    Ok(Plan {
        sizing: Sizing {
            vips: config.vips.len() as u32,
            fallbacks: fallbacks as u32,
            backends: next_backend,
            slots: next_slot,
            peers: 16,
            interfaces: config.node.interfaces.len() as u32,
            // No VIP uses the flow table: the kernel's minimum.
            flows: if any_flows { DEFAULT_MAX_FLOWS } else { 0 },
        },
        seed: config.cluster.hash_seed,
        vips,
    })
}

/// The table of `vip` when `weight_of` gives each backend's effective weight (None or 0: not
/// in the table). Maglev VIPs spread over every eligible backend; primary/backup VIPs give
/// their single slot to the eligible backend with the lowest priority value.
pub fn build_table(
    seed: u32,
    vip: &VipPlan,
    weight_of: impl Fn(&BackendPlan) -> Option<u32>,
) -> Vec<u32> {
    match vip.selection {
        Selection::PrimaryBackup => {
            let best = vip
                .backends
                .iter()
                .filter(|b| weight_of(b).unwrap_or(0) > 0)
                .min_by_key(|b| (b.conf.priority, b.index));
            vec![best.map_or(NO_BACKEND, |b| b.index)]
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

/// Second chance needs a local backend to stand in for, and only backends that run vipd
/// (their address is a cluster peer's), since the fallback sends packets encapsulated and the
/// receiving node's XDP program unwraps them.
fn second_chance_applies(config: &Config, vip: &Vip) -> bool {
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

/// Fingerprint of everything that fixes where things live in the maps: capacities, VIP keys,
/// table regions, backend indices and identities. Weights, checks, hash and forward modes are
/// not part of it: those change in place.
pub fn layout_id(plan: &Plan) -> u32 {
    let mut text = format!("{:?}", plan.sizing);
    for v in &plan.vips {
        text.push_str(&format!("|{:?}{:?}", v.key, v.region));
        for b in &v.backends {
            text.push_str(&format!(",{}:{}:{}", b.index, b.maglev_id, b.conf.address));
        }
    }
    // 0 means "never written", so avoid it.
    fnv1a(&text).max(1)
}
