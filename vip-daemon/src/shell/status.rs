//! What `vipd status` and `vipd trace` show: plain serialisable snapshots built by the event
//! loop, and their text rendering (like `pcs status`: one screen, most important first).
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Version of the JSON `vipd status --json` prints: bumped when a field changes meaning or
/// goes away (fields are only ever added otherwise). 2: counters as named objects.
pub const STATUS_SCHEMA: u32 = 2;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// [`STATUS_SCHEMA`] of the vipd that wrote it.
    #[serde(default)]
    pub schema: u32,
    pub node: String,
    pub pid: u32,
    pub uptime_s: f64,
    pub config: String,
    /// Outcome of the last reload, when there was one.
    pub last_reload: Option<String>,
    pub interfaces: Vec<InterfaceStatus>,
    pub rss_bytes: u64,
    pub map_bytes: u64,
    pub publishes: u64,
    /// Publishes whose table was computed ahead (`core::precompute`), not built on a verdict.
    #[serde(default)]
    pub publishes_precomputed: u64,
    /// Heap held by those tables computed ahead.
    #[serde(default)]
    pub precomputed_bytes: u64,
    pub verdict_to_live_p99_us: Option<f64>,
    pub vips: Vec<VipStatus>,
    /// Data-plane reason counters.
    pub reasons: Vec<ReasonCount>,
    /// Cluster mode only.
    pub cluster: Option<ClusterStatus>,
    /// The `[limits]` the maps were made with and what the config uses of them.
    #[serde(default)]
    pub limits: Option<LimitsStatus>,
    /// Flow table counters (`FLOW_STATS`): (counter, packets), counters as in
    /// `vip_common::maps::flow_stat::NAMES`.
    #[serde(default)]
    pub flow_table: Vec<NamedCount>,
    /// This node's own clients of the VIPs (cgroup programs): where attached or why not, and
    /// what they did (`vip_common::maps::local_stat::NAMES`, sockets).
    #[serde(default)]
    pub local_clients: Option<LocalClientsStatus>,
    /// In or out of service (standby, track conditions) and the notify hook's runs.
    #[serde(default)]
    pub service: ServiceStatus,
    /// The last periodic self-check (None before the first).
    #[serde(default)]
    pub self_check: Option<SelfCheckStatus>,
}

/// `Status::local_clients`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LocalClientsStatus {
    pub state: String,
    pub sockets: Vec<NamedCount>,
}

/// Whether this node takes VIPs and traffic, and since when.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub in_service: bool,
    /// Why not: "standby", "track: link eth0 down", ...
    pub reason: Option<String>,
    /// Seconds in this state.
    pub for_s: f64,
    /// Tracked conditions: each interface's carrier, each script.
    pub track: Vec<String>,
    /// Runs of the `[hooks] notify` command (None: no hook).
    pub hooks: Option<HookStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HookStatus {
    pub ok: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub dropped: u64,
    pub last_failure: Option<String>,
}

/// The last self-check: what runs compared with what should (`core::selfcheck`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SelfCheckStatus {
    /// Nothing differed.
    pub ok: bool,
    /// Seconds since it ran.
    pub ago_s: f64,
    /// How long it took.
    pub took_us: u64,
    pub findings: Vec<SelfCheckFinding>,
}

/// One mismatch the self-check found, and what became of its repair.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SelfCheckFinding {
    /// `program`, `table`, `address`, `foreign_address` or `lease`.
    pub check: String,
    pub what: String,
    /// `repaired`, `repair failed: ...` or `not repaired`.
    pub repair: String,
}

/// Packets and bytes the data plane counted under one reason (`vip_common::maps::reason`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReasonCount {
    pub reason: String,
    pub packets: u64,
    pub bytes: u64,
}

/// A named counter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NamedCount {
    pub name: String,
    pub count: u64,
}

impl NamedCount {
    pub fn new(name: impl Into<String>, count: u64) -> Self {
        Self {
            name: name.into(),
            count,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LimitsStatus {
    pub vips: Usage,
    pub backends: Usage,
    /// Slots of every VIP's two table generations (and fallback tables).
    pub table_slots: Usage,
    /// Flow table entries (per CPU); entries in use are not counted (a full map walk).
    pub flows: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// What the config needs now.
    pub used: u32,
    /// What the maps were made for (`[limits]`; changing it needs a restart).
    pub limit: u32,
}

/// A backend drained by `vipd backend drain`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DrainStatus {
    /// When the drain started, Unix seconds, and how long ago.
    pub since_unix_s: f64,
    pub age_s: f64,
    pub timeout_s: f64,
    /// Until its established flows are given up (0 once the timeout passed).
    pub left_s: f64,
    /// Flow table entries still made for this backend (None: the map could not be read).
    /// Entries outlive their connections until the LRU evicts them, so this is an upper bound.
    pub flows: Option<u64>,
    /// No entry left, or the timeout passed.
    pub complete: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub in_quorum: bool,
    pub members: Vec<MemberStatus>,
    /// Members declared down since start (each one a takeover trigger; false ones are bugs).
    pub member_down_events: u64,
    /// Lifeguard's local health score (0 = healthy; more = this node's own timers run late,
    /// so it waits longer before declaring others down) and the worst timer lag seen.
    pub local_health: u32,
    pub max_timer_lag_ms: u64,
    pub owners: Vec<OwnerStatus>,
    /// Gossip datagrams rejected and items skipped, by reason (forged, replayed, unknown_item, ...).
    pub rejected: Vec<NamedCount>,
    /// Loud lines from the ownership core (fencing failures, lost quorum).
    pub alerts: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub name: String,
    /// Why the member is out of service, as it told the cluster (None: in service).
    #[serde(default)]
    pub out_of_service: Option<String>,
    /// "self", "alive", "suspect", "silent" (the heartbeat detector's: taken for dead while
    /// SWIM has not decided yet) or "dead".
    pub state: String,
    pub incarnation: Option<u16>,
    pub address: Option<String>,
    pub heard_s_ago: Option<f64>,
    /// With a second gossip link: the links this member was not heard on lately (it stays
    /// alive while one link carries it; a silent link is a fault to repair).
    #[serde(default)]
    pub silent_links: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OwnerStatus {
    pub vip: String,
    pub owner: Option<String>,
    pub epoch: u64,
    pub lease_left_ms: Option<f64>,
    pub state: String,
    /// Since when (Unix s) this node has seen the VIP with this owner (or none); None for a
    /// vipd that does not say.
    #[serde(default)]
    pub since_unix_s: Option<f64>,
    /// Seconds with this owner, as seen here.
    #[serde(default)]
    pub for_s: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    /// "native", "generic" or "adopted" (attached by an earlier vipd, kept as it was).
    pub mode: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VipStatus {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub protocol: String,
    pub selection: String,
    pub hash: String,
    pub table_size: u32,
    /// Live generation of the table (0/1) and how many times it was published.
    pub generation: Option<u32>,
    pub publishes: u64,
    pub packets: u64,
    pub bytes: u64,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub forward: String,
    /// "up" or "down" (health verdict).
    pub health: String,
    /// "enabled", "drained" or "disabled".
    pub admin: String,
    pub weight: u32,
    /// Slots of the live table pointing at this backend.
    pub slots: u32,
    /// MAC used for forwarding, or why there is none.
    pub neighbour: String,
    pub last_probe: Option<ProbeStatus>,
    /// Local backends: "listening" or "GONE" from the socket watch (sock_diag).
    pub socket: Option<String>,
    /// Held down by flap damping (its health says "down" even if probes pass).
    #[serde(default)]
    pub flapping: bool,
    /// Primary-backup VIPs: this backend holds the single slot (the writer).
    #[serde(default)]
    pub writer: bool,
    /// While flapping: the least time the hold lasts if the backend stays stable (it ends on
    /// the first passing probe after that).
    #[serde(default)]
    pub held_s: Option<f64>,
    /// Up<->Down transitions of its probe health since vipd started.
    #[serde(default)]
    pub transitions: u64,
    /// While drained.
    #[serde(default)]
    pub drain: Option<DrainStatus>,
    /// Since when (Unix seconds) it has had this health and admin state, and for how long
    /// (counted from vipd's start at the earliest).
    #[serde(default)]
    pub since_unix_s: Option<f64>,
    #[serde(default)]
    pub for_s: Option<f64>,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeStatus {
    pub ok: bool,
    pub latency_ms: f64,
    pub detail: String,
    pub age_s: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceReport {
    pub vip: Option<String>,
    pub slot: Option<u32>,
    pub generation: Option<u32>,
    /// Backend the host model picks from the table vipd published.
    pub model_backend: Option<String>,
    /// Backend the live map slot holds right now.
    pub live_backend: Option<String>,
    pub agree: bool,
    pub explanation: String,
}

fn human_bytes(b: u64) -> String {
    match b {
        0..1024 => format!("{b} B"),
        1024..1_048_576 => format!("{:.1} KiB", b as f64 / 1024.0),
        _ => format!("{:.1} MiB", b as f64 / 1_048_576.0),
    }
}

impl Status {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "node {} (vipd pid {}, up {:.0}s, config {})",
            self.node, self.pid, self.uptime_s, self.config
        );
        let ifs: Vec<String> = self
            .interfaces
            .iter()
            .map(|i| format!("{} ({})", i.name, i.mode))
            .collect();
        let _ = writeln!(
            s,
            "data plane: {}; memory: vipd {} resident, maps {}",
            if ifs.is_empty() {
                "not attached".to_owned()
            } else {
                format!("XDP on {}", ifs.join(", "))
            },
            human_bytes(self.rss_bytes),
            human_bytes(self.map_bytes)
        );
        let p99 = self
            .verdict_to_live_p99_us
            .map_or("-".to_owned(), |v| format!("{v:.1} us"));
        let _ = writeln!(
            s,
            "tables: {} publishes ({} computed ahead, {} held), verdict to live p99 {p99}",
            self.publishes,
            self.publishes_precomputed,
            human_bytes(self.precomputed_bytes)
        );
        self.render_limits(&mut s);
        self.render_service(&mut s);
        if let Some(c) = self.self_check.as_ref().filter(|c| !c.ok) {
            let _ = writeln!(
                s,
                "ALERT self-check ({:.0}s ago) found {} mismatches:",
                c.ago_s,
                c.findings.len()
            );
            for f in &c.findings {
                let _ = writeln!(s, "  {}: {} ({})", f.check, f.what, f.repair);
            }
        }
        if let Some(r) = &self.last_reload {
            let _ = writeln!(s, "last reload: {r}");
        }
        for v in &self.vips {
            let up = v.backends.iter().filter(|b| b.slots > 0).count();
            let port = if v.port == 0 {
                "*".to_owned()
            } else {
                v.port.to_string()
            };
            let _ = writeln!(
                s,
                "\nVIP {} {}:{}/{} {} hash={} M={} gen={} ({} of {} backends live) {} pkts {}",
                v.name,
                v.address,
                port,
                v.protocol,
                v.selection,
                v.hash,
                v.table_size,
                v.generation.map_or("-".into(), |g| g.to_string()),
                up,
                v.backends.len(),
                v.packets,
                human_bytes(v.bytes)
            );
            for b in &v.backends {
                let probe = b
                    .last_probe
                    .as_ref()
                    .map_or("no probe yet".to_owned(), |p| {
                        format!(
                            "{} {:.1}ms {:.1}s ago{}",
                            if p.ok { "ok" } else { "FAIL" },
                            p.latency_ms,
                            p.age_s,
                            if p.detail.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", p.detail)
                            }
                        )
                    });
                let probe = match &b.socket {
                    Some(sock) => format!("socket {sock}, {probe}"),
                    None => probe,
                };
                let health = match (b.flapping, b.held_s) {
                    (true, Some(held)) => format!("{} FLAPPING (held >= {held:.0}s)", b.health),
                    (true, None) => format!("{} FLAPPING", b.health),
                    (false, _) => b.health.clone(),
                };
                let _ = writeln!(
                    s,
                    "  {:<12} {:>20}:{:<5} {:<5} {:<4} {:<8} w={:<3} slots={:<6} transitions={:<4} {} | {} | {} pkts {}",
                    b.name,
                    b.address,
                    b.port,
                    b.forward,
                    match b.for_s {
                        Some(t) => format!("{health} for {}", human_age(t)),
                        None => health,
                    },
                    if b.writer { "writer" } else { &b.admin },
                    b.weight,
                    b.slots,
                    b.transitions,
                    b.neighbour,
                    probe,
                    b.packets,
                    human_bytes(b.bytes)
                );
                if let Some(d) = &b.drain {
                    let _ = writeln!(s, "    {}", d.render());
                }
            }
        }
        if let Some(c) = &self.cluster {
            let members: Vec<String> = c
                .members
                .iter()
                .map(|m| {
                    let mut line = format!("{} {}", m.name, m.state);
                    if let Some(i) = m.incarnation {
                        line.push_str(&format!(" inc {i}"));
                    }
                    if let Some(a) = &m.address {
                        line.push_str(&format!(" {a}"));
                    }
                    if let Some(h) = m.heard_s_ago {
                        line.push_str(&format!(" ({h:.1}s ago)"));
                    }
                    if let Some(why) = &m.out_of_service {
                        line.push_str(&format!(" OUT OF SERVICE ({why})"));
                    }
                    if !m.silent_links.is_empty() {
                        line.push_str(&format!(" LINK SILENT: {}", m.silent_links.join(", ")));
                    }
                    line
                })
                .collect();
            let _ = writeln!(
                s,
                "\ncluster: {}; members: {}",
                if c.in_quorum {
                    "IN QUORUM"
                } else {
                    "NO QUORUM (owns nothing)"
                },
                members.join(", ")
            );
            let _ = writeln!(
                s,
                "  members declared down: {}; local health {} (worst timer lag {} ms)",
                c.member_down_events, c.local_health, c.max_timer_lag_ms
            );
            for o in &c.owners {
                let lease = o
                    .lease_left_ms
                    .map_or(String::new(), |l| format!(", lease {l:.0} ms left"));
                let since = o
                    .for_s
                    .map_or(String::new(), |t| format!(" for {}", human_age(t)));
                let _ = writeln!(
                    s,
                    "  VIP {} owner {}{since} epoch {}{lease}: {}",
                    o.vip,
                    o.owner.as_deref().unwrap_or("(none)"),
                    o.epoch,
                    o.state
                );
            }
            for a in &c.alerts {
                let _ = writeln!(s, "  !! {a}");
            }
            if !c.rejected.is_empty() {
                let r: Vec<String> = (c.rejected.iter())
                    .map(|c| format!("{}={}", c.name, c.count))
                    .collect();
                let _ = writeln!(s, "  gossip rejected: {}", r.join(" "));
            }
        }
        let busy: Vec<String> = self
            .reasons
            .iter()
            .filter(|r| r.packets > 0)
            .map(|r| format!("{}={}", r.reason, r.packets))
            .collect();
        let _ = writeln!(s, "\ndata plane counters: {}", busy.join(" "));
        if !self.flow_table.is_empty() {
            let f: Vec<String> = self
                .flow_table
                .iter()
                .map(|c| format!("{}={}", c.name, c.count))
                .collect();
            let _ = writeln!(s, "flow table: {}", f.join(" "));
        }
        if let Some(l) = &self.local_clients {
            let f: Vec<String> = (l.sockets.iter())
                .map(|c| format!("{}={}", c.name, c.count))
                .collect();
            let _ = writeln!(s, "local clients: {}; sockets {}", l.state, f.join(" "));
        }
        s
    }

    fn render_service(&self, s: &mut String) {
        let sv = &self.service;
        let state = match &sv.reason {
            None => "in service".to_owned(),
            Some(why) => format!("OUT OF SERVICE ({why})"),
        };
        let mut line = format!("service: {state} for {}", human_age(sv.for_s));
        if !sv.track.is_empty() {
            line.push_str(&format!("; tracking {}", sv.track.join(", ")));
        }
        let _ = writeln!(s, "{line}");
        if let Some(h) = &sv.hooks {
            let last = (h.last_failure.as_deref())
                .map_or(String::new(), |f| format!("; last failure: {f}"));
            let _ = writeln!(
                s,
                "notify hook: {} ok, {} failed, {} timed out, {} dropped{last}",
                h.ok, h.failed, h.timed_out, h.dropped
            );
        }
    }

    fn render_limits(&self, s: &mut String) {
        let Some(l) = &self.limits else { return };
        let use_of = |u: &Usage| format!("{} of {}", u.used, u.limit);
        let _ = writeln!(
            s,
            "limits: VIPs {}, backends {}, table slots {}, flow table {} entries; maps {}",
            use_of(&l.vips),
            use_of(&l.backends),
            use_of(&l.table_slots),
            l.flows,
            human_bytes(self.map_bytes)
        );
    }
}

fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

impl DrainStatus {
    pub fn render(&self) -> String {
        let flows = self.flows.map_or("flow entries unknown".to_owned(), |n| {
            format!("{n} flow entries left")
        });
        let state = if self.complete {
            if self.left_s <= 0.0 {
                "drain complete (timeout passed: established flows given up)".to_owned()
            } else {
                "drain complete".to_owned()
            }
        } else {
            format!(
                "draining, {} left of {}",
                human_duration(self.left_s),
                human_duration(self.timeout_s)
            )
        };
        format!(
            "{state}; drained {} ago; {flows}",
            human_duration(self.age_s)
        )
    }
}

impl TraceReport {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let name = |b: &Option<String>| b.clone().unwrap_or_else(|| "(none)".into());
        let _ = writeln!(
            s,
            "vip {} slot {} generation {}",
            name(&self.vip),
            self.slot.map_or("-".into(), |v| v.to_string()),
            self.generation.map_or("-".into(), |v| v.to_string())
        );
        let _ = writeln!(s, "backend: {}", name(&self.model_backend));
        let _ = writeln!(
            s,
            "{}: {}",
            if self.agree {
                "model and live maps agree"
            } else {
                "MODEL AND LIVE MAPS DIFFER"
            },
            self.explanation
        );
        s
    }
}

/// A duration as operators read it in a status line: 42s, 3m12s, 5h03m, 2d04h.
pub fn human_age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_backend(b: BackendStatus) -> Status {
        Status {
            vips: vec![VipStatus {
                name: "api".into(),
                backends: vec![b],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_flapping_backend_says_so_with_its_hold_and_transitions() {
        let b = BackendStatus {
            name: "ctl1".into(),
            health: "down".into(),
            flapping: true,
            held_s: Some(41.6),
            transitions: 37,
            ..Default::default()
        };
        let text = one_backend(b.clone()).render();
        assert!(text.contains("down FLAPPING (held >= 42s)"), "{text}");
        assert!(text.contains("transitions=37"), "{text}");
        let calm = BackendStatus {
            flapping: false,
            held_s: None,
            ..b
        };
        assert!(!one_backend(calm).render().contains("FLAPPING"));
    }

    #[test]
    fn a_drained_backend_shows_time_left_flows_and_completion() {
        let draining = DrainStatus {
            since_unix_s: 1.7e9,
            age_s: 12.0,
            timeout_s: 300.0,
            left_s: 288.0,
            flows: Some(37),
            complete: false,
        };
        let b = BackendStatus {
            name: "ctl2".into(),
            admin: "drained".into(),
            drain: Some(draining.clone()),
            ..Default::default()
        };
        let text = one_backend(b).render();
        assert!(
            text.contains("draining, 4m48s left of 5m00s; drained 12s ago; 37 flow entries left"),
            "{text}"
        );
        let emptied = DrainStatus {
            flows: Some(0),
            complete: true,
            ..draining.clone()
        };
        assert!(
            emptied.render().starts_with("drain complete; "),
            "{}",
            emptied.render()
        );
        let timed_out = DrainStatus {
            left_s: 0.0,
            complete: true,
            ..draining
        };
        assert!(timed_out.render().contains("timeout passed"));
    }

    #[test]
    fn limits_and_flow_table_counters_are_shown() {
        let status = Status {
            map_bytes: 3 * 1_048_576,
            limits: Some(LimitsStatus {
                vips: Usage { used: 2, limit: 16 },
                backends: Usage { used: 6, limit: 64 },
                table_slots: Usage {
                    used: 1004,
                    limit: 2008,
                },
                flows: 65536,
            }),
            flow_table: vec![NamedCount::new("hit", 5), NamedCount::new("stale", 1)],
            local_clients: Some(LocalClientsStatus {
                state: "attached at /sys/fs/cgroup".into(),
                sockets: vec![NamedCount::new("backend", 7), NamedCount::new("local", 2)],
            }),
            ..Default::default()
        };
        let text = status.render();
        assert!(
            text.contains(
                "limits: VIPs 2 of 16, backends 6 of 64, table slots 1004 of 2008, flow table \
                 65536 entries; maps 3.0 MiB"
            ),
            "{text}"
        );
        assert!(text.contains("flow table: hit=5 stale=1"), "{text}");
        assert!(
            text.contains("local clients: attached at /sys/fs/cgroup; sockets backend=7 local=2"),
            "{text}"
        );
    }

    #[test]
    fn status_json_from_a_vipd_without_newer_fields_still_reads() {
        let json = serde_json::to_value(one_backend(BackendStatus::default())).unwrap();
        let mut json = json.to_string();
        for field in [
            ",\"flapping\":false",
            ",\"held_s\":null",
            ",\"transitions\":0",
            ",\"drain\":null",
            ",\"limits\":null",
            ",\"flow_table\":[]",
            ",\"local_clients\":null",
        ] {
            assert!(json.contains(field), "{json}");
            json = json.replace(field, "");
        }
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back, one_backend(BackendStatus::default()));
    }
}
