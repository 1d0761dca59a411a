//! One backend's state and the decisions made from it alone: whether it is in the table and
//! with what weight, whether it keeps its established flows, why it may not hold a
//! primary/backup slot.
use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::{
    config::{BackendConf, Forward},
    core::{
        drain::Drain,
        flap::Damping,
        health::{Health, HealthState},
        log_limit::LogLimiter,
    },
};

use super::reach::NextHop;

/// One probe's outcome (`shell::probes` runs them).
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeResult {
    pub ok: bool,
    pub latency: Duration,
    /// Short human text: "connect refused", "HTTP 503 (want 200)", "timeout after 1s", ...
    pub detail: String,
}

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

/// A backend's operator state as the cluster agrees on it (`core::admin` registers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendAdmin {
    pub admin: Admin,
    /// Set through the control socket; None: the config's weight.
    pub weight: Option<u32>,
    pub drain: Option<Drain>,
}

/// INFO verdict lines per backend: a burst of this many (a restart's down and up fit, twice),
/// then one per [`VERDICT_LOG_EVERY`]; the rest go to DEBUG and are counted in the next INFO
/// line. Damping already bounds verdicts; this bounds the log with damping off too.
pub const VERDICT_LOG_BURST: u32 = 4;
pub const VERDICT_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the config says about a backend that the core decides with (set at start and by
/// every reload).
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub index: u32,
    /// The identity's serial (`core::alloc`): same index and serial = same backend.
    pub serial: u32,
    /// Position of its VIP in the plan.
    pub vip: usize,
    pub address: IpAddr,
    /// The config's weight.
    pub weight: u32,
    pub rise: u32,
    pub fall: u32,
    pub damping: Damping,
    /// Runs on this node.
    pub local: bool,
    /// The VIP's `drain_timeout` (a drain without `--timeout` uses the current one).
    pub drain_timeout: Duration,
}

/// One backend's runtime state (the app keeps only its prober beside it).
#[derive(Clone, Debug)]
pub struct Backend {
    /// The backend identity's serial (`core::alloc`): probe results of a prober that
    /// belonged to a removed backend at the same index are recognised and dropped.
    pub serial: u32,
    /// Position of its VIP in the plan; `usize::MAX`: the index is unused.
    pub vip: usize,
    pub address: Option<IpAddr>,
    /// The config's weight (a reload changing it replaces a runtime weight).
    pub conf_weight: u32,
    pub drain_default: Duration,
    pub health: HealthState,
    /// Rate limit of this backend's INFO verdict lines.
    pub verdict_log: LogLimiter,
    pub admin: Admin,
    /// Runtime weight (the config's, or set through the control socket).
    pub weight: u32,
    pub local: bool,
    pub next_hop: Option<NextHop>,
    pub last_probe: Option<(ProbeResult, Instant)>,
    /// Cluster mode: the majority verdict of the nodes probing this backend, which the tables
    /// follow so that every node builds the same ones. None: this node's own verdict rules.
    pub cluster_health: Option<Health>,
    /// Local backends: whether the service's socket exists (sock_diag); None until known.
    pub listening: Option<bool>,
    /// Local backends: a `track` condition of this node failed (link carrier lost, a track
    /// script failing), so the node's own services are taken out with its VIPs.
    pub local_fault: bool,
    /// While drained by `vipd backend drain`: when it started and its `--timeout`.
    pub drain: Option<Drain>,
    /// The drain's timeout has passed: established flows are given up too. Kept up to date
    /// by [`super::Input::Tick`] and every admin change.
    pub drain_timed_out: bool,
    /// Since when (Unix ms) the backend has had its verdict and admin state, and which they
    /// are: "up since", as `pcs status` and HAProxy's `lastchg` show it. Kept by
    /// [`super::Backends::handle`]; a restart starts it afresh.
    pub state_since: Option<(u64, Health, Admin)>,
}

impl Backend {
    /// An index no backend uses: down, not in any VIP.
    pub fn unused() -> Self {
        Self {
            serial: 0,
            vip: usize::MAX,
            address: None,
            conf_weight: 0,
            drain_default: Duration::ZERO,
            health: HealthState::new(1, 1, Damping::OFF, Health::Down),
            verdict_log: LogLimiter::new(VERDICT_LOG_BURST, VERDICT_LOG_EVERY),
            admin: Admin::Enabled,
            weight: 0,
            local: false,
            next_hop: None,
            last_probe: None,
            cluster_health: None,
            listening: None,
            local_fault: false,
            drain: None,
            drain_timed_out: false,
            state_since: None,
        }
    }

    /// Records `now_ms` as the start of the current (verdict, admin) state when it changed.
    pub(super) fn stamp_state(&mut self, now_ms: u64) {
        let state = (self.verdict(), self.admin);
        if self.state_since.map(|(_, h, a)| (h, a)) != Some(state) {
            self.state_since = Some((now_ms, state.0, state.1));
        }
    }

    /// Unix ms since which the backend has had its verdict and admin state.
    pub fn since_ms(&self) -> Option<u64> {
        self.state_since.map(|(ms, _, _)| ms)
    }

    /// A new backend of `spec`, enabled with the config's weight, starting at `initial`.
    pub fn new(spec: &Spec, initial: Health) -> Self {
        let mut b = Self::unused();
        b.serial = spec.serial;
        b.health = HealthState::new(spec.rise, spec.fall, spec.damping, initial);
        b.weight = spec.weight;
        b.apply_spec(spec);
        b
    }

    /// Takes the config facts of `spec` (identity unchanged).
    pub(super) fn apply_spec(&mut self, spec: &Spec) {
        self.vip = spec.vip;
        self.address = Some(spec.address);
        self.conf_weight = spec.weight;
        self.local = spec.local;
        self.drain_default = spec.drain_timeout;
    }

    pub fn in_use(&self) -> bool {
        self.vip != usize::MAX
    }

    /// The health the tables follow: the cluster's verdict where there is one, else ours.
    pub fn verdict(&self) -> Health {
        self.cluster_health.unwrap_or(self.health.health())
    }

    /// Whether this node's own probes disagree with the cluster's verdict (bad NIC, local
    /// firewall): shown in status.
    pub fn disagrees(&self) -> bool {
        self.cluster_health
            .is_some_and(|h| h != self.health.health())
    }

    /// Weight in the table, or None when the backend must not get traffic: down, drained,
    /// disabled, weight 0, or (not local) no resolved next hop / an L2 backend off-link.
    pub fn effective_weight(&self, conf: &BackendConf) -> Option<u32> {
        (self.admin == Admin::Enabled && self.weight > 0 && self.serviceable(conf))
            .then_some(self.weight)
    }

    /// Up, its service listening (as far as known) and reachable: what a backend needs to
    /// take traffic apart from the operator's say.
    fn serviceable(&self, conf: &BackendConf) -> bool {
        let reachable = self.local
            || self
                .next_hop
                .is_some_and(|h| h.mac.is_some() && (h.on_link || conf.forward == Forward::Encap));
        self.verdict() == Health::Up && self.service_up() && reachable
    }

    /// The service fact this node shares about a local backend: its socket not known gone
    /// and no track fault here.
    pub fn service_up(&self) -> bool {
        self.listening != Some(false) && !self.local_fault
    }

    /// Whether established flows may stay on this backend (`BACKEND_F_KEEP_FLOWS`): in the
    /// table, or out of it only for new flows (drained within its drain timeout, weight 0)
    /// while still healthy.
    pub fn keeps_flows(&self, conf: &BackendConf) -> bool {
        if self.effective_weight(conf).is_some() {
            return true;
        }
        match self.admin {
            Admin::Disabled => false,
            Admin::Drained if self.drain_timed_out => false,
            Admin::Drained | Admin::Enabled => self.serviceable(conf),
        }
    }

    /// Why the backend may not take a primary/backup VIP's slot now (None: it may).
    pub fn ineligible_reason(&self, conf: &BackendConf) -> Option<String> {
        if self.effective_weight(conf).is_some() {
            return None;
        }
        Some(match self.admin {
            Admin::Disabled => "it is disabled".to_owned(),
            Admin::Drained => "it is drained".to_owned(),
            Admin::Enabled if self.verdict() != Health::Up => "it is down".to_owned(),
            Admin::Enabled if self.listening == Some(false) => {
                "its service socket is gone".to_owned()
            }
            Admin::Enabled if self.local_fault => {
                "a track condition of this node failed".to_owned()
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

    /// Its admin state as the cluster registers it.
    pub fn admin_value(&self) -> BackendAdmin {
        BackendAdmin {
            admin: self.admin,
            weight: (self.weight != self.conf_weight).then_some(self.weight),
            drain: self.drain.filter(|_| self.admin == Admin::Drained),
        }
    }
}

/// What a restarted vipd knows of a backend it ran before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remembered {
    /// The state file's verdict.
    pub up: bool,
    /// The state file's admin state (None: unknown to this version).
    pub admin: Option<Admin>,
}

/// A backend's health when vipd starts: a verdict survives a restart. `live`: whether the
/// backend is in its VIP's live table read back from adopted maps (None: not read back);
/// `file_is_fresh`: the maps were adopted or are being replaced, so the state file is as
/// fresh as they are. With the live table read back the kernel is the truth: in it means
/// up (the state file may be a moment older); out of it, up only when the state file says
/// so and an admin state explains the absence. Without it, the state file's verdict when
/// fresh; fresh maps with a file left beside them may be from anything, so down.
pub fn restart_health(
    remembered: Option<Remembered>,
    live: Option<bool>,
    file_is_fresh: bool,
) -> Health {
    let up = match (remembered, live) {
        (Some(r), Some(in_table)) => in_table || (r.up && r.admin != Some(Admin::Enabled)),
        (Some(r), None) if file_is_fresh => r.up,
        (_, live) => live == Some(true),
    };
    if up {
        Health::Up
    } else {
        Health::Down
    }
}
