//! Status, trace and metrics: what the operator sees, built from the loop's state and the
//! live maps.
use std::net::SocketAddr;

use vip_common::{
    maps::{self, reason, NO_BACKEND},
    wire::{IPPROTO_TCP, IPPROTO_UDP},
};

use crate::{
    config::{Forward, HashMode, Protocol, Selection},
    core::{
        drain::{self, Phase},
        health::Health,
        model,
        plan::{addr16, vip_key},
    },
    shell::{
        metrics::{counter_to, AdminLabels, BackendLabels, FlowLabels, ReasonLabels, VipLabels},
        status::{
            BackendStatus, ClusterStatus, DrainStatus, InterfaceStatus, LimitsStatus,
            LocalClientsStatus, MemberStatus, NamedCount, ProbeStatus, ReasonCount, Status,
            TraceReport, Usage, VipStatus,
        },
    },
};

use super::{ip_string, resident_bytes, Admin, Daemon};

impl Daemon {
    pub(super) fn backend_labels(&self, index: usize) -> BackendLabels {
        let (vip, pos) = self.locate_backend(index);
        BackendLabels {
            vip: self.plan.vips[vip].name.clone(),
            backend: self.plan.vips[vip].backends[pos].conf.name.clone(),
        }
    }

    fn verdict_p99_us(&self) -> Option<f64> {
        if self.verdict_latencies.is_empty() {
            return None;
        }
        let mut v: Vec<_> = self.verdict_latencies.iter().copied().collect();
        v.sort();
        let i = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
        Some(v[i].as_secs_f64() * 1e6)
    }

    fn map_bytes(&self) -> u64 {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        self.plan.sizing.map_bytes(cpus)
    }

    pub(super) fn status(&self) -> Status {
        let vip_stats = self
            .maps
            .dp()
            .counters(maps::MAP_VIP_STATS)
            .unwrap_or_default();
        let be_stats = self
            .maps
            .dp()
            .counters(maps::MAP_BACKEND_STATS)
            .unwrap_or_default();
        let reasons = self.maps.dp().stats().unwrap_or_default();
        // A full walk of the flow table: only when some drain wants its progress, once.
        let flows = self.drain_flows();
        let now_ms = super::unix_ms();
        let vips = self
            .plan
            .vips
            .iter()
            .zip(&self.config.vips)
            .enumerate()
            .map(|(i, (v, conf))| {
                let backends = v
                    .backends
                    .iter()
                    .map(|b| {
                        let rt = &self.backends[b.index as usize];
                        let c = be_stats.get(b.index as usize).copied().unwrap_or_default();
                        BackendStatus {
                            name: b.conf.name.clone(),
                            address: ip_string(&b.conf.address),
                            port: b.conf.port,
                            forward: if rt.local {
                                "local"
                            } else if b.conf.forward == Forward::Encap {
                                "encap"
                            } else {
                                "l2"
                            }
                            .into(),
                            health: match (rt.verdict(), self.disagrees(b.index as usize)) {
                                (Health::Up, false) => "up",
                                (Health::Down, false) => "down",
                                (Health::Up, true) => "up (cluster; LOCAL PROBES SAY DOWN)",
                                (Health::Down, true) => "down (cluster; LOCAL PROBES SAY UP)",
                            }
                            .into(),
                            admin: rt.admin.as_str().into(),
                            socket: rt
                                .listening
                                .map(|l| if l { "listening" } else { "GONE" }.to_owned()),
                            weight: rt.weight,
                            slots: self.slots_of(i, b.index),
                            neighbour: rt.neighbour_text(&b.conf),
                            last_probe: rt.last_probe.as_ref().map(|(r, at)| ProbeStatus {
                                ok: r.ok,
                                latency_ms: r.latency.as_secs_f64() * 1e3,
                                detail: r.detail.clone(),
                                age_s: at.elapsed().as_secs_f64(),
                            }),
                            flapping: rt.health.flapping(),
                            writer: self.current_writer(i) == Some(b.index),
                            held_s: rt
                                .health
                                .held_for(std::time::Instant::now())
                                .map(|d| d.as_secs_f64()),
                            transitions: rt.health.transitions(),
                            since_unix_s: rt.since_ms().map(|ms| ms as f64 / 1000.0),
                            for_s: rt
                                .since_ms()
                                .map(|ms| now_ms.saturating_sub(ms) as f64 / 1000.0),
                            drain: rt.drain.filter(|_| rt.admin == Admin::Drained).map(|d| {
                                let timeout = d.timeout(conf.drain_timeout);
                                let phase = d.phase(conf.drain_timeout, now_ms);
                                let remaining = flows
                                    .as_ref()
                                    .and_then(|f| f.get(b.index as usize).copied());
                                DrainStatus {
                                    since_unix_s: d.started_ms as f64 / 1e3,
                                    age_s: now_ms.saturating_sub(d.started_ms) as f64 / 1e3,
                                    timeout_s: timeout.as_secs_f64(),
                                    left_s: match phase {
                                        Phase::Keeping { left } => left.as_secs_f64(),
                                        Phase::TimedOut => 0.0,
                                    },
                                    flows: remaining,
                                    complete: drain::complete(phase, remaining),
                                }
                            }),
                            packets: c.packets,
                            bytes: c.bytes,
                        }
                    })
                    .collect();
                let c = vip_stats
                    .get(v.info.index as usize)
                    .copied()
                    .unwrap_or_default();
                VipStatus {
                    name: v.name.clone(),
                    address: ip_string(&conf.address),
                    port: conf.port,
                    protocol: match conf.protocol {
                        Protocol::Tcp => "tcp",
                        Protocol::Udp => "udp",
                    }
                    .into(),
                    selection: match conf.selection {
                        Selection::Maglev => "maglev",
                        Selection::PrimaryBackup => "primary-backup",
                    }
                    .into(),
                    hash: match conf.hash {
                        HashMode::Flow => "flow",
                        HashMode::Source => "source",
                    }
                    .into(),
                    table_size: v.info.table_size,
                    generation: self.vips[i].generation,
                    publishes: self.vips[i].publishes,
                    packets: c.packets,
                    bytes: c.bytes,
                    backends,
                }
            })
            .collect();
        Status {
            schema: crate::shell::status::STATUS_SCHEMA,
            node: self.config.node.name.clone(),
            pid: std::process::id(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            config: self.opts.config_path.display().to_string(),
            last_reload: self.last_reload.clone(),
            interfaces: self
                .interfaces
                .iter()
                .map(|(name, mode)| InterfaceStatus {
                    name: name.clone(),
                    mode: mode.clone(),
                })
                .collect(),
            rss_bytes: resident_bytes(),
            map_bytes: self.map_bytes(),
            publishes: self.vips.iter().map(|v| v.publishes).sum(),
            publishes_precomputed: self.vips.iter().map(|v| v.publishes_precomputed).sum(),
            precomputed_bytes: self.vips.iter().map(|v| v.steps.bytes() as u64).sum(),
            verdict_to_live_p99_us: self.verdict_p99_us(),
            vips,
            reasons: reason::NAMES
                .iter()
                .zip(reasons.iter())
                .map(|(n, c)| ReasonCount {
                    reason: n.to_string(),
                    packets: c.packets,
                    bytes: c.bytes,
                })
                .collect(),
            cluster: self.cluster.as_ref().map(|c| {
                let mut names: Vec<String> = c.membership.voters.clone();
                names.retain(|n| *n != self.config.node.name);
                ClusterStatus {
                    in_quorum: c.ownership.in_quorum(),
                    members: std::iter::once(MemberStatus {
                        name: self.config.node.name.clone(),
                        state: "self".to_owned(),
                        ..Default::default()
                    })
                    .chain(names.into_iter().map(|n| {
                        let seen = c.view.members.iter().find(|m| m.name == n);
                        let state = match seen.map(|m| m.state) {
                            _ if !c.alive.contains(&n) => "dead",
                            _ if c.silent.contains(&n) => "silent",
                            Some("suspect") => "suspect",
                            _ => "alive",
                        };
                        MemberStatus {
                            out_of_service: c.ownership.out_of_service(&n).map(str::to_owned),
                            heard_s_ago: c.last_heard.get(&n).map(|t| t.elapsed().as_secs_f64()),
                            incarnation: seen.map(|m| m.incarnation),
                            address: seen.map(|m| m.addr.to_string()),
                            silent_links: seen
                                .map(|m| m.silent_links.iter().map(|l| l.to_string()).collect())
                                .unwrap_or_default(),
                            state: state.to_owned(),
                            name: n,
                        }
                    }))
                    .collect(),
                    member_down_events: c.member_down_events,
                    local_health: c.view.local_health,
                    max_timer_lag_ms: c.view.max_timer_lag_ms,
                    owners: c
                        .ownership
                        .view()
                        .into_iter()
                        .map(|v| {
                            let since = (c.owner_since.get(&v.vip))
                                .filter(|(o, _)| *o == v.owner)
                                .map(|(_, ms)| *ms);
                            crate::shell::status::OwnerStatus {
                                since_unix_s: since.map(|ms| ms as f64 / 1e3),
                                for_s: since.map(|ms| now_ms.saturating_sub(ms) as f64 / 1e3),
                                vip: v.vip,
                                owner: v.owner,
                                epoch: v.epoch,
                                lease_left_ms: v.lease_left.map(|d| d.as_secs_f64() * 1e3),
                                state: v.state,
                            }
                        })
                        .collect(),
                    rejected: c
                        .rejected
                        .iter()
                        .map(|(k, v)| NamedCount::new(k.to_string(), *v))
                        .collect(),
                    alerts: c.status_lines.clone(),
                }
            }),
            limits: Some(self.limits_status()),
            flow_table: maps::flow_stat::NAMES
                .iter()
                .zip(self.maps.dp().flow_stats().unwrap_or_default())
                .map(|(n, c)| NamedCount::new(*n, c.packets))
                .collect(),
            local_clients: Some(LocalClientsStatus {
                state: self.local_clients.clone(),
                sockets: maps::local_stat::NAMES
                    .iter()
                    .zip(self.maps.dp().local_stats().unwrap_or_default())
                    .map(|(n, c)| NamedCount::new(*n, c.packets))
                    .collect(),
            }),
            service: self.service_status(),
            self_check: self.selfcheck_status(),
        }
    }

    fn limits_status(&self) -> LimitsStatus {
        let (vips, backends, slots) = self.config.needs();
        LimitsStatus {
            vips: Usage {
                used: vips,
                limit: self.limits.vips,
            },
            backends: Usage {
                used: backends,
                limit: self.limits.backends,
            },
            table_slots: Usage {
                used: slots,
                limit: self.limits.table_slots,
            },
            flows: self.limits.flows,
        }
    }

    /// Flow table entries per backend index when some backend is drained (None otherwise,
    /// or when the map cannot be read): a walk of the whole map, so at most once per status
    /// request or scrape, and not at all without a drain.
    fn drain_flows(&self) -> Option<Vec<u64>> {
        let draining = self.plan.vips.iter().flat_map(|v| &v.backends).any(|b| {
            let rt = &self.backends[b.index as usize];
            rt.admin == Admin::Drained && rt.drain.is_some()
        });
        if !draining {
            return None;
        }
        self.maps
            .dp()
            .flows_per_backend()
            .inspect_err(|e| tracing::warn!(error = %e, "counting flow table entries failed"))
            .ok()
    }

    /// Which backend a flow goes to, by the model over the published table, checked against
    /// the live map slot.
    pub(super) fn trace(
        &mut self,
        src: SocketAddr,
        vip: SocketAddr,
        proto: &str,
    ) -> Result<TraceReport, String> {
        let proto = match proto {
            "tcp" => IPPROTO_TCP,
            "udp" => IPPROTO_UDP,
            other => return Err(format!("protocol {other:?}: use tcp or udp")),
        };
        if src.is_ipv4() != vip.is_ipv4() {
            return Err("source and VIP must be the same address family".into());
        }
        let (src_a, family) = addr16(&src.ip());
        let (dst_a, _) = addr16(&vip.ip());
        let flow = model::Flow {
            src: src_a,
            dst: dst_a,
            sport: src.port(),
            dport: vip.port(),
            proto,
            family,
        };
        let Some(choice) = self.maps.image().choose(&flow) else {
            return Ok(TraceReport {
                agree: true,
                explanation: "not a VIP: the data plane passes it to the local stack".into(),
                ..Default::default()
            });
        };
        let index = choice.vip.index as usize;
        let v = &self.plan.vips[index];
        debug_assert_eq!(vip_key(&self.config.vips[index]).family, family);
        let name_of = |b: u32| {
            v.backends
                .iter()
                .find(|x| x.index == b)
                .map(|x| format!("{} ({}:{})", x.conf.name, x.conf.address, x.conf.port))
                .unwrap_or_else(|| format!("index {b}"))
        };
        let live_slot = self.maps.live_table(&v.region).and_then(|t| {
            t.get((choice.slot - self.maps.image().active[index]) as usize)
                .copied()
        });
        let model_backend = choice.backend.map(name_of);
        let live_backend = live_slot.filter(|&b| b != NO_BACKEND).map(name_of);
        let agree = model_backend == live_backend;
        let why = match (&model_backend, agree) {
            (None, true) => "the VIP has no live backend: packets are dropped".to_owned(),
            (Some(_), true) => format!(
                "hash {:#010x} of the {} picks slot {} of the live table",
                choice.hash,
                if v.info.flags & maps::VIP_F_SRC_HASH != 0 { "source address" } else { "5-tuple" },
                choice.slot - self.maps.image().active[index]
            ),
            (_, false) => "the live map differs from the table vipd published: another writer, or a publish in flight".into(),
        };
        Ok(TraceReport {
            vip: Some(v.name.clone()),
            slot: Some(choice.slot - self.maps.image().active[index]),
            generation: self.vips[index].generation,
            model_backend,
            live_backend,
            agree,
            explanation: why,
        })
    }

    pub(super) fn refresh_metrics(&mut self) {
        self.refresh_service_metrics();
        let vip_stats = self
            .maps
            .dp()
            .counters(maps::MAP_VIP_STATS)
            .unwrap_or_default();
        let be_stats = self
            .maps
            .dp()
            .counters(maps::MAP_BACKEND_STATS)
            .unwrap_or_default();
        for (i, v) in self.plan.vips.iter().enumerate() {
            let l = VipLabels {
                vip: v.name.clone(),
            };
            let c = vip_stats
                .get(v.info.index as usize)
                .copied()
                .unwrap_or_default();
            counter_to(&self.metrics.vip_packets.get_or_create(&l), c.packets);
            counter_to(&self.metrics.vip_bytes.get_or_create(&l), c.bytes);
            for b in &v.backends {
                let l = self.backend_labels(b.index as usize);
                let rt = &self.backends[b.index as usize];
                let c = be_stats.get(b.index as usize).copied().unwrap_or_default();
                counter_to(&self.metrics.backend_packets.get_or_create(&l), c.packets);
                counter_to(&self.metrics.backend_bytes.get_or_create(&l), c.bytes);
                self.metrics
                    .backend_up
                    .get_or_create(&l)
                    .set(i64::from(rt.health.health() == Health::Up));
                self.metrics
                    .backend_live
                    .get_or_create(&l)
                    .set(i64::from(self.live(i).contains(&b.index)));
                self.metrics
                    .backend_flapping
                    .get_or_create(&l)
                    .set(i64::from(rt.health.flapping()));
                counter_to(
                    &self.metrics.backend_transitions.get_or_create(&l),
                    rt.health.transitions(),
                );
                self.metrics
                    .backend_weight
                    .get_or_create(&l)
                    .set(i64::from(rt.weight));
                if let Some(ms) = rt.since_ms() {
                    self.metrics
                        .backend_state_since
                        .get_or_create(&l)
                        .set(ms as f64 / 1000.0);
                }
                for state in [Admin::Enabled, Admin::Drained, Admin::Disabled] {
                    let l = AdminLabels {
                        vip: l.vip.clone(),
                        backend: l.backend.clone(),
                        state: state.as_str().into(),
                    };
                    self.metrics
                        .backend_admin
                        .get_or_create(&l)
                        .set(i64::from(rt.admin == state));
                }
            }
        }
        let flows = self.drain_flows();
        for v in &self.plan.vips {
            for b in &v.backends {
                let l = self.backend_labels(b.index as usize);
                let rt = &self.backends[b.index as usize];
                let remaining = flows.as_ref().and_then(|f| f.get(b.index as usize));
                match remaining.filter(|_| rt.admin == Admin::Drained) {
                    Some(&n) => {
                        self.metrics
                            .backend_drain_flows
                            .get_or_create(&l)
                            .set(n as i64);
                    }
                    // Only drained backends have the series: an ended drain's goes away.
                    None => _ = self.metrics.backend_drain_flows.remove(&l),
                }
            }
        }
        for (name, c) in maps::flow_stat::NAMES
            .iter()
            .zip(self.maps.dp().flow_stats().unwrap_or_default())
        {
            let l = FlowLabels {
                result: name.to_string(),
            };
            counter_to(&self.metrics.flow_table.get_or_create(&l), c.packets);
        }
        for (name, c) in maps::local_stat::NAMES
            .iter()
            .zip(self.maps.dp().local_stats().unwrap_or_default())
        {
            let l = FlowLabels {
                result: name.to_string(),
            };
            counter_to(&self.metrics.local_clients.get_or_create(&l), c.packets);
        }
        for (name, c) in reason::NAMES
            .iter()
            .zip(self.maps.dp().stats().unwrap_or_default())
        {
            let l = ReasonLabels {
                reason: name.to_string(),
            };
            counter_to(&self.metrics.reasons_packets.get_or_create(&l), c.packets);
        }
        if let Some(c) = &self.cluster {
            self.metrics.set_cluster_mode();
            self.metrics
                .in_quorum
                .set(i64::from(c.ownership.in_quorum()));
            self.metrics
                .members_alive
                .set(c.alive_now().len() as i64 + 1);
            counter_to(&self.metrics.member_down_events, c.member_down_events);
            self.metrics
                .local_health
                .set(i64::from(c.view.local_health));
            for v in c.ownership.view() {
                let l = VipLabels { vip: v.vip.clone() };
                self.metrics
                    .vip_owned
                    .get_or_create(&l)
                    .set(i64::from(v.lease_left.is_some()));
                self.metrics.vip_epoch.get_or_create(&l).set(v.epoch as i64);
            }
            for (why, n) in &c.rejected {
                let l = ReasonLabels {
                    reason: why.to_string(),
                };
                counter_to(&self.metrics.gossip_rejected.get_or_create(&l), *n);
            }
        }
        self.metrics.resident_bytes.set(resident_bytes() as i64);
        self.metrics.refresh_process();
        self.metrics.map_bytes.set(self.map_bytes() as i64);
    }
}
