//! Runtime state of each backend and what the loop does with a probe result.
use std::time::{Duration, Instant};

use crate::{
    config::{BackendConf, Forward},
    core::{
        drain::{Drain, Phase},
        health::{Health, HealthState},
        log_limit::LogLimiter,
        plan::BackendPlan,
    },
    shell::{
        neighbours::NextHop,
        probes::{ProbeEvent, ProbeResult, ProbeSpec},
    },
};

use super::Daemon;

/// Operator's say over a backend (control socket), on top of its health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admin {
    Enabled,
    /// Out of the table for new flows, still probed. Established flows stay on it through the
    /// flow table while it is healthy (VIPs without second chance).
    Drained,
    /// Out of the table and not probed.
    Disabled,
}

impl Admin {
    pub fn parse(s: &str) -> Option<Self> {
        [Admin::Enabled, Admin::Drained, Admin::Disabled]
            .into_iter()
            .find(|a| a.as_str() == s)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Admin::Enabled => "enabled",
            Admin::Drained => "drained",
            Admin::Disabled => "disabled",
        }
    }
}

/// INFO verdict lines per backend: a burst of this many (a restart's down and up fit, twice),
/// then one per [`VERDICT_LOG_EVERY`]; the rest go to DEBUG and are counted in the next INFO
/// line. Damping already bounds verdicts; this bounds the log with damping off too.
const VERDICT_LOG_BURST: u32 = 4;
const VERDICT_LOG_EVERY: Duration = Duration::from_secs(10);

/// The verdict line limiter of a new backend.
pub fn verdict_log() -> LogLimiter {
    LogLimiter::new(VERDICT_LOG_BURST, VERDICT_LOG_EVERY)
}

pub struct BackendRt {
    /// The backend identity's serial (`core::alloc`): probe results of a prober that
    /// belonged to a removed backend at the same index are recognised and dropped.
    pub serial: u32,
    pub health: HealthState,
    /// Rate limit of this backend's INFO verdict lines.
    pub verdict_log: LogLimiter,
    pub admin: Admin,
    /// Runtime weight (the config's, or set through the control socket).
    pub weight: u32,
    pub local: bool,
    pub next_hop: Option<NextHop>,
    pub last_probe: Option<(ProbeResult, Instant)>,
    /// When the prober starts the next probe (a verdict it may bring is prepared for).
    pub next_probe: Option<Instant>,
    pub prober: Option<tokio::task::JoinHandle<()>>,
    /// Cluster mode: the majority verdict of the nodes probing this backend, which the tables
    /// follow so that every node builds the same ones. None: this node's own verdict rules.
    pub cluster_health: Option<Health>,
    /// Local backends: whether the service's socket exists (sock_diag); None until known.
    pub listening: Option<bool>,
    /// While drained by `vipd backend drain`: when it started and its `--timeout`.
    pub drain: Option<Drain>,
    /// The drain's timeout has passed: established flows are given up too. Kept up to date
    /// by [`Daemon::drain_tick`] (once a second and after every admin change).
    pub drain_timed_out: bool,
}

impl Drop for BackendRt {
    fn drop(&mut self) {
        if let Some(p) = self.prober.take() {
            p.abort();
        }
    }
}

impl BackendRt {
    /// An index no backend uses (or one about to be filled in): down, no prober.
    pub fn unused() -> Self {
        Self {
            serial: 0,
            health: HealthState::new(1, 1, crate::core::flap::Damping::OFF, Health::Down),
            verdict_log: verdict_log(),
            admin: Admin::Enabled,
            weight: 0,
            local: false,
            next_hop: None,
            last_probe: None,
            next_probe: None,
            prober: None,
            cluster_health: None,
            listening: None,
            drain: None,
            drain_timed_out: false,
        }
    }

    /// Weight in the table, or None when the backend must not get traffic: down, drained,
    /// disabled, weight 0, or (not local) no resolved next hop / an L2 backend off-link.
    pub fn effective_weight(&self, conf: &BackendConf) -> Option<u32> {
        self.weight_if(conf, self.cluster_health.unwrap_or(self.health.health()))
    }

    /// [`BackendRt::effective_weight`] were its health `health`.
    pub fn weight_if(&self, conf: &BackendConf, health: Health) -> Option<u32> {
        let reachable = self.local
            || self
                .next_hop
                .is_some_and(|h| h.mac.is_some() && (h.on_link || conf.forward == Forward::Encap));
        (health == Health::Up
            && self.listening != Some(false)
            && self.admin == Admin::Enabled
            && self.weight > 0
            && reachable)
            .then_some(self.weight)
    }

    /// Whether established flows may stay on this backend (`BACKEND_F_KEEP_FLOWS`): in the
    /// table, or out of it only for new flows (drained within its drain timeout, weight 0)
    /// while still healthy.
    pub fn keeps_flows(&self, conf: &BackendConf) -> bool {
        if self.effective_weight(conf).is_some() {
            return true;
        }
        if self.admin == Admin::Drained && self.drain_timed_out {
            return false;
        }
        let mut as_if_enabled = BackendRt::unused();
        as_if_enabled.health = self.health.clone();
        as_if_enabled.cluster_health = self.cluster_health;
        as_if_enabled.listening = self.listening;
        as_if_enabled.local = self.local;
        as_if_enabled.next_hop = self.next_hop;
        as_if_enabled.weight = 1;
        self.admin != Admin::Disabled && as_if_enabled.effective_weight(conf).is_some()
    }

    /// Why the backend may not take a primary/backup VIP's slot now (None: it may).
    pub fn ineligible_reason(&self, conf: &BackendConf) -> Option<String> {
        if self.effective_weight(conf).is_some() {
            return None;
        }
        Some(match self.admin {
            Admin::Disabled => "it is disabled".to_owned(),
            Admin::Drained => "it is drained".to_owned(),
            Admin::Enabled if self.cluster_health.unwrap_or(self.health.health()) != Health::Up => {
                "it is down".to_owned()
            }
            Admin::Enabled if self.listening == Some(false) => {
                "its service socket is gone".to_owned()
            }
            Admin::Enabled if self.weight == 0 => "its weight is 0".to_owned(),
            Admin::Enabled => format!("it is unreachable ({})", self.neighbour_text(conf)),
        })
    }

    /// Why a backend without a usable next hop is not used (status line).
    pub fn neighbour_text(&self, conf: &BackendConf) -> String {
        if self.local {
            return "local".into();
        }
        match self.next_hop {
            None => "next hop not resolved yet".into(),
            Some(h) => h.describe(conf.address, conf.forward),
        }
    }
}

/// The probe a backend's check asks for.
pub fn probe_spec(b: &BackendPlan) -> ProbeSpec {
    let c = &b.conf.check;
    ProbeSpec {
        kind: c.kind.clone(),
        target: std::net::SocketAddr::new(b.conf.address, b.conf.port),
        timeout: c.timeout,
    }
}

impl Daemon {
    /// Drains whose timeout passed give up their established flows (`core::drain`); a drain
    /// given a longer `--timeout` again keeps them again. Rewrites only changed entries.
    pub(super) fn drain_tick(&mut self) {
        let now_ms = super::unix_ms();
        for vip in 0..self.plan.vips.len() {
            let default = self.config.vips[vip].drain_timeout;
            for pos in 0..self.plan.vips[vip].backends.len() {
                let index = self.plan.vips[vip].backends[pos].index as usize;
                let rt = &mut self.backends[index];
                let timed_out = match (rt.admin, rt.drain) {
                    (Admin::Drained, Some(d)) => d.phase(default, now_ms) == Phase::TimedOut,
                    _ => false,
                };
                if rt.drain_timed_out == timed_out {
                    continue;
                }
                rt.drain_timed_out = timed_out;
                if timed_out {
                    tracing::info!(
                        vip = %self.plan.vips[vip].name,
                        backend = %self.plan.vips[vip].backends[pos].conf.name,
                        "drain timeout passed: the backend gives up its established flows"
                    );
                }
                self.write_backend(index);
            }
        }
    }

    /// (Re)starts the prober of backend `b` (none while disabled).
    pub(super) fn start_prober(&mut self, vip: usize, pos: usize) {
        let plan = &self.plan.vips[vip].backends[pos];
        let index = plan.index as usize;
        if let Some(old) = self.backends[index].prober.take() {
            old.abort();
        }
        if self.backends[index].admin == Admin::Disabled {
            return;
        }
        let c = &plan.conf.check;
        let seed = u64::from(plan.maglev_id) ^ (self.started.elapsed().as_nanos() as u64);
        self.backends[index].prober = Some(crate::shell::probes::spawn_prober(
            (plan.index, plan.serial),
            probe_spec(plan),
            c.interval,
            c.jitter,
            seed,
            self.probe_tx.clone(),
        ));
    }

    pub(super) fn on_probe(&mut self, ev: ProbeEvent<(u32, u32)>) {
        let (index, serial) = (ev.key.0 as usize, ev.key.1);
        let vip = self.vip_of.get(index).copied().unwrap_or(usize::MAX);
        if vip == usize::MAX || self.backends[index].serial != serial {
            return; // a prober of a backend that a reload removed
        }
        let labels = self.backend_labels(index);
        self.metrics
            .probe_latency
            .get_or_create(&labels)
            .observe(ev.result.latency.as_secs_f64());
        if !ev.result.ok {
            self.metrics.probe_failures.get_or_create(&labels).inc();
        }
        let rt = &mut self.backends[index];
        let was_flapping = rt.health.flapping();
        let verdict = if rt.admin == Admin::Disabled {
            None
        } else {
            rt.health.on_result(ev.at, ev.result.ok)
        };
        rt.last_probe = Some((ev.result, ev.at));
        rt.next_probe = Some(ev.next_at);
        let vip_name = &self.plan.vips[vip].name;
        let (flapping, transitions) = (rt.health.flapping(), rt.health.transitions());
        if flapping && !was_flapping {
            let held_s = rt.health.held_for(ev.at).unwrap_or_default().as_secs();
            tracing::warn!(
                vip = %vip_name,
                backend = %labels.backend,
                transitions,
                held_s,
                "backend flapping: held down (flap damping) until it has been stable"
            );
        } else if was_flapping && !flapping {
            tracing::info!(
                vip = %vip_name,
                backend = %labels.backend,
                transitions,
                "backend no longer flapping: its health follows its probes again"
            );
        }
        let Some(v) = verdict else {
            // The next probe may now be one short of a verdict: prepare its table.
            self.precompute(vip);
            return;
        };
        match rt.verdict_log.admit(v.at) {
            Some(0) => tracing::info!(
                vip = %vip_name,
                backend = %labels.backend,
                health = ?v.health,
                "health verdict"
            ),
            Some(left_out) => tracing::info!(
                vip = %vip_name,
                backend = %labels.backend,
                health = ?v.health,
                left_out,
                "health verdict ({left_out} verdict lines of this backend logged at DEBUG \
                 since the last one: rate limited)"
            ),
            None => tracing::debug!(
                vip = %vip_name,
                backend = %labels.backend,
                health = ?v.health,
                "health verdict (INFO line rate limited)"
            ),
        }
        self.share_verdict(index, v.health);
        // Soon, not at the next tick: a restart that replaces the maps has only the state
        // file to know which backends were up. Within SAVE_DELAY, so that a burst of
        // verdicts writes the file once (on its own thread).
        self.state_dirty = true;
        self.save_at.get_or_insert(ev.at + super::SAVE_DELAY);
        let rt = &self.backends[index];
        if v.health == Health::Up && !rt.local && rt.next_hop.and_then(|h| h.mac).is_none() {
            self.neighbours_due = true;
        }
        self.republish(vip, Some(v.at));
    }
}
