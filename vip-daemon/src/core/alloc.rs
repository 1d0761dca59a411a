//! Where each VIP and backend lives in the maps, kept stable across reloads and restarts.
//!
//! The maps are sized once, from [`Limits`], when vipd first creates them. Every later config
//! (a reload, or a restart with an edited file) is laid into the same maps by [`reconcile`]:
//!
//! - A VIP keeps its index and table region while its name and table size are unchanged and
//!   it needs no second-chance region it lacks (a VIP losing second chance keeps its region
//!   for its previous table: `second_chance_lost_keeps_the_place`); anything else gets a
//!   fresh index and region, so the XDP program
//!   switches with one `VIPS` value update from a complete old shape to a complete new one
//!   (`shape_change_gets_a_fresh_place`).
//! - A backend keeps its index and serial while its identity (VIP name, backend name,
//!   address) is unchanged; a new identity gets a fresh index and a serial never used
//!   before, so a flow-table entry of a removed backend can never steer to its successor
//!   (`serials_are_never_reused`).
//! - Nothing freed by a change is handed out by the same change: packets in flight and the
//!   old tables may still use it while the new shape is being published
//!   (`freed_places_are_not_reused_by_the_same_change`).
//! - A config that does not fit is refused whole, naming the limit, what it allows and what
//!   the config needs (`beyond_a_limit_is_refused_naming_it`).
//!
//! Pure: no IO. The state file (`shell/state.rs`) stores an [`Allocation`] so that a restart
//! lays the config out exactly as the running data plane has it.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{Config, Limits};

/// Place of one VIP: its index (`VIPS` value, `ACTIVE` word, `VIP_STATS` slot) and the slot
/// offsets of its two table generations and, for second chance, of its fallback table's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipPlace {
    pub index: u32,
    pub table_size: u32,
    pub base: u32,
    pub fallback_base: Option<u32>,
}

impl VipPlace {
    fn regions(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        std::iter::once(self.base)
            .chain(self.fallback_base)
            .map(|b| (b, 2 * self.table_size))
    }
}

/// What makes a backend the same backend: a new address is a new server.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BackendId {
    pub vip: String,
    pub name: String,
    pub address: std::net::IpAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendPlace {
    /// Index in `BACKENDS` and `BACKEND_STATS`.
    pub index: u32,
    /// Never reused for another identity (see the module doc).
    pub serial: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub vips: BTreeMap<String, VipPlace>,
    pub backends: Vec<(BackendId, BackendPlace)>,
    /// Next serial to hand out (serials start at 1; 0 never names a backend).
    pub next_serial: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    #[error(
        "limits.vips = {limit} but the change needs {needed} VIP places at once (VIPs whose \
         table size or second chance changed count twice while they move); raise \
         limits.vips (takes effect at the next start of vipd)"
    )]
    Vips { limit: u32, needed: u32 },
    #[error(
        "limits.backends = {limit} but the change needs {needed} backend places at once \
         (a replaced backend counts twice while it moves); raise limits.backends (takes \
         effect at the next start of vipd)"
    )]
    Backends { limit: u32, needed: u32 },
    #[error(
        "limits.table_slots = {limit}: no free run of {wanted} slots for the tables of VIP \
         {vip} ({used} slots in use); raise limits.table_slots (takes effect at the next \
         start of vipd) or use a smaller table_size"
    )]
    Slots {
        vip: String,
        limit: u32,
        wanted: u32,
        used: u32,
    },
}

impl Allocation {
    pub fn vip(&self, name: &str) -> Option<&VipPlace> {
        self.vips.get(name)
    }

    pub fn backend(&self, id: &BackendId) -> Option<&BackendPlace> {
        self.backends.iter().find(|(b, _)| b == id).map(|(_, p)| p)
    }

    fn used_regions(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.vips.values().flat_map(|v| v.regions())
    }
}

/// Slots a config's tables take: two generations per VIP, two more for a fallback table.
pub fn slots_needed(config: &Config) -> u32 {
    config
        .vips
        .iter()
        .map(|v| {
            let tables = if crate::core::plan::second_chance_applies(config, v) {
                2
            } else {
                1
            };
            tables * 2 * v.table_size
        })
        .sum()
}

/// Lays `config` out into maps of `limits`, keeping every place `prev` gave to something
/// that did not change.
pub fn reconcile(
    prev: &Allocation,
    config: &Config,
    limits: &Limits,
) -> Result<Allocation, LimitError> {
    let mut next = Allocation {
        next_serial: prev.next_serial.max(1),
        ..Default::default()
    };
    // Places of the previous layout stay taken for the whole change.
    let mut vip_indices: BTreeSet<u32> = prev.vips.values().map(|v| v.index).collect();
    let mut regions: Vec<(u32, u32)> = prev.used_regions().collect();
    for vip in &config.vips {
        let fallback = crate::core::plan::second_chance_applies(config, vip);
        // A VIP that loses second chance keeps its place, fallback region included: the
        // region then holds its previous table while its new flow table fills (see
        // `VIP_F_PREV_TABLE`), and the VIP keeps its index and live table through the switch.
        let kept = prev
            .vips
            .get(&vip.name)
            .filter(|p| p.table_size == vip.table_size && (p.fallback_base.is_some() || !fallback));
        let place = match kept {
            Some(p) => *p,
            None => {
                let index = lowest_free(&vip_indices);
                if index >= limits.vips {
                    return Err(LimitError::Vips {
                        limit: limits.vips,
                        needed: vip_indices.len() as u32 + 1,
                    });
                }
                vip_indices.insert(index);
                let take = |regions: &mut Vec<(u32, u32)>| {
                    let wanted = 2 * vip.table_size;
                    let base = first_fit(regions, wanted, limits.table_slots).ok_or_else(|| {
                        LimitError::Slots {
                            vip: vip.name.clone(),
                            limit: limits.table_slots,
                            wanted,
                            used: regions.iter().map(|r| r.1).sum(),
                        }
                    })?;
                    regions.push((base, wanted));
                    Ok(base)
                };
                let base = take(&mut regions)?;
                let fallback_base = if fallback {
                    Some(take(&mut regions)?)
                } else {
                    None
                };
                VipPlace {
                    index,
                    table_size: vip.table_size,
                    base,
                    fallback_base,
                }
            }
        };
        next.vips.insert(vip.name.clone(), place);
    }
    let mut backend_indices: BTreeSet<u32> = prev.backends.iter().map(|(_, p)| p.index).collect();
    for vip in &config.vips {
        for b in &vip.backends {
            let id = BackendId {
                vip: vip.name.clone(),
                name: b.name.clone(),
                address: b.address,
            };
            let place = match prev.backend(&id) {
                Some(p) => *p,
                None => {
                    let index = lowest_free(&backend_indices);
                    if index >= limits.backends {
                        return Err(LimitError::Backends {
                            limit: limits.backends,
                            needed: backend_indices.len() as u32 + 1,
                        });
                    }
                    backend_indices.insert(index);
                    let serial = next.next_serial;
                    next.next_serial += 1;
                    BackendPlace { index, serial }
                }
            };
            next.backends.push((id, place));
        }
    }
    Ok(next)
}

fn lowest_free(used: &BTreeSet<u32>) -> u32 {
    (0..).find(|i| !used.contains(i)).expect("u32 indices")
}

/// Lowest offset where `len` slots fit between the `used` (offset, len) runs, within `cap`.
fn first_fit(used: &[(u32, u32)], len: u32, cap: u32) -> Option<u32> {
    let mut runs = used.to_vec();
    runs.sort_unstable();
    let mut at = 0u32;
    for (start, run) in runs {
        if start >= at && start - at >= len {
            return Some(at);
        }
        at = at.max(start + run);
    }
    (cap.checked_sub(at)? >= len).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (VIP name, table size, [(backend name, address)]).
    type VipSpec<'a> = (&'a str, u32, &'a [(&'a str, &'a str)]);

    fn config(vips: &[VipSpec]) -> Config {
        let mut text = String::from(
            "[node]\nname = \"ctl1\"\ninterfaces = [\"eth0\"]\naddresses = [\"192.0.2.1\"]\n",
        );
        for (i, (name, table_size, backends)) in vips.iter().enumerate() {
            text.push_str(&format!(
                "[[vip]]\nname = \"{name}\"\naddress = \"192.0.2.{}\"\nport = 80\n\
                 table_size = {table_size}\n",
                100 + i
            ));
            for (b, addr) in *backends {
                text.push_str(&format!(
                    "[[vip.backend]]\nname = \"{b}\"\naddress = \"{addr}\"\n"
                ));
            }
        }
        crate::config::parse(&text, "t.toml").expect("valid")
    }

    const LIMITS: Limits = Limits {
        vips: 4,
        backends: 8,
        table_slots: 4 * 2 * 251,
        flows: 1024,
    };

    fn index_of(a: &Allocation, vip: &str, name: &str) -> u32 {
        a.backends
            .iter()
            .find(|(id, _)| id.vip == vip && id.name == name)
            .map(|(_, p)| p.index)
            .expect("placed")
    }

    #[test]
    fn unchanged_things_keep_their_places() {
        let c1 = config(&[("web", 251, &[("a", "192.0.2.11"), ("b", "192.0.2.12")])]);
        let a1 = reconcile(&Allocation::default(), &c1, &LIMITS).unwrap();
        let c2 = config(&[
            ("api", 251, &[("x", "192.0.2.21")]),
            (
                "web",
                251,
                &[
                    ("c", "192.0.2.13"),
                    ("b", "192.0.2.12"),
                    ("a", "192.0.2.11"),
                ],
            ),
        ]);
        let a2 = reconcile(&a1, &c2, &LIMITS).unwrap();
        assert_eq!(a2.vip("web"), a1.vip("web"), "web moved");
        assert_eq!(index_of(&a2, "web", "a"), index_of(&a1, "web", "a"));
        assert_eq!(index_of(&a2, "web", "b"), index_of(&a1, "web", "b"));
        assert_ne!(a2.vip("api").unwrap().index, a2.vip("web").unwrap().index);
        assert_ne!(a2.vip("api").unwrap().base, a2.vip("web").unwrap().base);
    }

    #[test]
    fn shape_change_gets_a_fresh_place() {
        let c1 = config(&[("web", 251, &[("a", "192.0.2.11")])]);
        let a1 = reconcile(&Allocation::default(), &c1, &LIMITS).unwrap();
        let c2 = config(&[("web", 257, &[("a", "192.0.2.11")])]);
        let a2 = reconcile(&a1, &c2, &LIMITS).unwrap();
        let (old, new) = (a1.vip("web").unwrap(), a2.vip("web").unwrap());
        assert_ne!(old.index, new.index);
        // Both shapes exist at once while the change is published: no overlap.
        assert!(new.base >= old.base + 2 * 251 || new.base + 2 * 257 <= old.base);
    }

    /// A cluster config whose VIP `stream` has a local backend and one on the peer (second
    /// chance), plus `extra` backends (addresses that run no vipd).
    fn cluster_config(extra: &[(&str, &str)]) -> Config {
        let mut text = String::from(
            "[node]\nname = \"ctl1\"\ninterfaces = [\"eth0\"]\naddresses = [\"192.0.2.11\"]\n\
             [cluster]\nlisten = \"192.0.2.11:7946\"\npeers = [\"192.0.2.12:7946\"]\n\
             key_file = \"/etc/vip-fabric/cluster.key\"\nvoters = [\"ctl1\", \"ctl2\"]\n\
             [[vip]]\nname = \"stream\"\naddress = \"192.0.2.100\"\nport = 7000\n\
             table_size = 251\n\
             [[vip.backend]]\nname = \"ctl1\"\naddress = \"192.0.2.11\"\n\
             [[vip.backend]]\nname = \"ctl2\"\naddress = \"192.0.2.12\"\n",
        );
        for (b, addr) in extra {
            text.push_str(&format!(
                "[[vip.backend]]\nname = \"{b}\"\naddress = \"{addr}\"\n"
            ));
        }
        crate::config::parse(&text, "t.toml").expect("valid")
    }

    #[test]
    fn second_chance_lost_keeps_the_place() {
        let c1 = cluster_config(&[]);
        assert!(crate::core::plan::second_chance_applies(&c1, &c1.vips[0]));
        let a1 = reconcile(&Allocation::default(), &c1, &LIMITS).unwrap();
        let old = *a1.vip("stream").unwrap();
        assert!(old.fallback_base.is_some());
        // app1 runs no vipd: the VIP switches to the flow table and keeps index, table and
        // the second region (now for its previous table), through later reloads too.
        let c2 = cluster_config(&[("app1", "192.0.2.21")]);
        assert!(!crate::core::plan::second_chance_applies(&c2, &c2.vips[0]));
        let a2 = reconcile(&a1, &c2, &LIMITS).unwrap();
        assert_eq!(a2.vip("stream"), Some(&old));
        let a3 = reconcile(&a2, &c2, &LIMITS).unwrap();
        assert_eq!(a3.vip("stream"), Some(&old));
        let p = crate::core::plan::plan(&c2, &a3, &LIMITS).unwrap();
        let v = &p.vips[0];
        assert!(v.fallback.is_none() && v.previous.is_some(), "{v:?}");
        assert_eq!(
            v.info.flags & vip_common::maps::VIP_F_FLOWS,
            vip_common::maps::VIP_F_FLOWS
        );
        assert_eq!(v.info.fallback, 0, "set by vipd only during a transition");
        // Back to second chance: the same place again, the region a fallback table again.
        let a4 = reconcile(&a3, &c1, &LIMITS).unwrap();
        assert_eq!(a4.vip("stream"), Some(&old));
        // A flow-table VIP from the start has no second region and gets none.
        let plain = config(&[("web", 251, &[("a", "192.0.2.11")])]);
        let a5 = reconcile(&Allocation::default(), &plain, &LIMITS).unwrap();
        assert_eq!(a5.vip("web").unwrap().fallback_base, None);
    }

    #[test]
    fn serials_are_never_reused() {
        let c1 = config(&[("web", 251, &[("a", "192.0.2.11")])]);
        let a1 = reconcile(&Allocation::default(), &c1, &LIMITS).unwrap();
        // a's address changes: a new server, a new serial; the old index is free afterwards.
        let c2 = config(&[("web", 251, &[("a", "192.0.2.99")])]);
        let a2 = reconcile(&a1, &c2, &LIMITS).unwrap();
        let c3 = config(&[("web", 251, &[("a", "192.0.2.11")])]);
        let a3 = reconcile(&a2, &c3, &LIMITS).unwrap();
        let serials: Vec<u32> = [&a1, &a2, &a3]
            .iter()
            .map(|a| a.backends[0].1.serial)
            .collect();
        assert_eq!(serials, [1, 2, 3]);
        assert_eq!(
            a3.backends[0].1.index, a1.backends[0].1.index,
            "index reused later"
        );
    }

    #[test]
    fn freed_places_are_not_reused_by_the_same_change() {
        let c1 = config(&[("web", 251, &[("a", "192.0.2.11")])]);
        let a1 = reconcile(&Allocation::default(), &c1, &LIMITS).unwrap();
        let c2 = config(&[("api", 251, &[("b", "192.0.2.12")])]);
        let a2 = reconcile(&a1, &c2, &LIMITS).unwrap();
        assert_ne!(a2.vip("api").unwrap().index, a1.vip("web").unwrap().index);
        assert_ne!(a2.vip("api").unwrap().base, a1.vip("web").unwrap().base);
        assert_ne!(a2.backends[0].1.index, a1.backends[0].1.index);
    }

    #[test]
    fn beyond_a_limit_is_refused_naming_it() {
        let names: Vec<String> = (0..5).map(|i| format!("v{i}")).collect();
        let one: &[(&str, &str)] = &[("a", "192.0.2.11")];
        let refs: Vec<VipSpec> = names.iter().map(|n| (n.as_str(), 251, one)).collect();
        let err = reconcile(&Allocation::default(), &config(&refs), &LIMITS).unwrap_err();
        assert_eq!(
            err,
            LimitError::Vips {
                limit: 4,
                needed: 5
            }
        );
        assert!(err.to_string().contains("limits.vips = 4"));
        let big = config(&[("web", 65537, &[("a", "192.0.2.11")])]);
        let err = reconcile(&Allocation::default(), &big, &LIMITS).unwrap_err();
        assert!(
            matches!(err, LimitError::Slots { wanted: 131074, .. }),
            "{err}"
        );
    }

    #[test]
    fn first_fit_fills_holes() {
        assert_eq!(first_fit(&[], 10, 100), Some(0));
        assert_eq!(first_fit(&[(0, 10), (30, 10)], 20, 100), Some(10));
        assert_eq!(first_fit(&[(0, 10), (30, 10)], 21, 100), Some(40));
        assert_eq!(first_fit(&[(0, 90)], 11, 100), None);
    }
}
