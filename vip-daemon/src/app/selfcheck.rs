//! The periodic self-check (`core::selfcheck`): observes what runs, repairs what it safely
//! can, and keeps the last run for status and metrics. Runs on the loop every
//! [`INTERVAL`]; its cost is a netlink round trip per interface and a compare of each VIP's
//! live table with the image (memory reads of the mmapped maps).
use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use crate::core::selfcheck::{self, Finding, Repair};

use super::Daemon;

pub const INTERVAL: Duration = Duration::from_secs(10);

/// The last run.
pub struct Run {
    pub at: Instant,
    pub took: Duration,
    /// Each finding and its repair's outcome (None: no safe repair).
    pub findings: Vec<(Finding, Option<Result<(), String>>)>,
}

impl Daemon {
    pub(super) async fn self_check(&mut self) {
        // The check compares the kernel with the image: both as of now.
        self.settle_images();
        let t0 = Instant::now();
        let observed = self.observe_self().await;
        let found = selfcheck::findings(&observed);
        let mut findings = Vec::new();
        for f in found {
            self.metrics
                .selfcheck_mismatches
                .get_or_create(&crate::shell::metrics::CheckLabels {
                    check: f.check.into(),
                })
                .inc();
            let outcome = match &f.repair {
                Some(r) => Some(self.repair(r).await),
                None => None,
            };
            match &outcome {
                Some(Ok(())) => tracing::warn!(check = f.check, "self-check: {}; repaired", f.what),
                Some(Err(e)) => {
                    tracing::error!(
                        check = f.check,
                        "self-check: {}; repair FAILED: {e}",
                        f.what
                    )
                }
                None => tracing::error!(check = f.check, "self-check: {} (not repaired)", f.what),
            }
            findings.push((f, outcome));
        }
        self.metrics
            .selfcheck_ok
            .set(i64::from(findings.is_empty()));
        let took = t0.elapsed();
        tracing::debug!(took_us = took.as_micros() as u64, "self-check done");
        self.last_selfcheck = Some(Run {
            at: Instant::now(),
            took,
            findings,
        });
    }

    async fn observe_self(&mut self) -> selfcheck::Observed {
        let mut o = selfcheck::Observed {
            loaded_id: self
                .maps
                .dp_mut()
                .program()
                .ok()
                .and_then(|p| p.info().ok())
                .map(|i| i.id()),
            ..Default::default()
        };
        for iface in self.config.node.interfaces.clone() {
            let id = crate::shell::host::xdp_prog_id(&self.netlink, &iface)
                .await
                .unwrap_or(None);
            o.attached.insert(iface, id);
        }
        for (i, v) in self.plan.vips.iter().enumerate() {
            if self.vips[i].generation.is_none() {
                continue;
            }
            if !self.maps.live_matches_image(&v.region) {
                o.tables_differing.push(v.name.clone());
            }
        }
        let Some(c) = &self.cluster else { return o };
        let me = &self.config.node.name;
        let now_ns = monotonic_now_ns();
        let owners: BTreeMap<String, Option<String>> = c
            .ownership
            .view()
            .into_iter()
            .map(|v| (v.vip, v.owner))
            .collect();
        for (key, addr) in &c.addresses {
            let owned = owners.get(key).cloned().flatten().as_ref() == Some(me);
            if owned {
                let lease = self.maps.image().leases.get(&Self::lease_key(addr));
                o.owned
                    .insert(*addr, lease.is_some_and(|l| l.expiry_ns > now_ns));
            } else {
                o.not_owned.insert(*addr);
            }
        }
        for iface in &self.config.node.interfaces {
            let addrs = crate::shell::vipaddr::addresses_on(&self.netlink, iface)
                .await
                .unwrap_or_else(|_| BTreeSet::new());
            o.on_iface.insert(iface.clone(), addrs);
        }
        o
    }

    async fn repair(&mut self, r: &Repair) -> Result<(), String> {
        match r {
            Repair::Reattach { iface } => self
                .maps
                .dp_mut()
                .attach(iface)
                .map(drop)
                .map_err(|e| e.to_string()),
            Repair::RewriteTable { vip } => {
                let Some(v) = self.plan.vips.iter().find(|v| &v.name == vip) else {
                    return Err("VIP gone".into());
                };
                let region = v.region;
                let table = self.maps.image_table(&region).to_vec();
                self.maps
                    .table(&region, &table)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Repair::AddAddress { iface, address } => {
                crate::shell::vipaddr::add(&self.netlink, iface, *address)
                    .await
                    .map_err(|e| e.to_string())?;
                // Upstream caches may have moved elsewhere meanwhile.
                let _ = crate::shell::vipaddr::announce(iface, *address);
                Ok(())
            }
            Repair::RemoveAddress { iface, address } => {
                crate::shell::vipaddr::remove(&self.netlink, iface, *address)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// For status: the last run, if any.
    pub(super) fn selfcheck_status(&self) -> Option<crate::shell::status::SelfCheckStatus> {
        let run = self.last_selfcheck.as_ref()?;
        Some(crate::shell::status::SelfCheckStatus {
            ok: run.findings.is_empty(),
            ago_s: run.at.elapsed().as_secs_f64(),
            took_us: run.took.as_micros() as u64,
            findings: run
                .findings
                .iter()
                .map(|(f, outcome)| crate::shell::status::SelfCheckFinding {
                    check: f.check.into(),
                    what: f.what.clone(),
                    repair: match outcome {
                        None => "not repaired".into(),
                        Some(Ok(())) => "repaired".into(),
                        Some(Err(e)) => format!("repair failed: {e}"),
                    },
                })
                .collect(),
        })
    }
}

/// CLOCK_MONOTONIC in ns, the clock of lease expiries in the maps.
fn monotonic_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
