//! This node in or out of service: `vipd node standby|unstandby` (kept in the state file)
//! and the `[track]` conditions. Out of service, the ownership core hands the node's VIPs
//! over and every node stops placing VIPs here; a failed track condition also takes this
//! node's local backends out of every table (`core::backends`, *Track faults*). Each change
//! runs the notify hook.
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use crate::{
    core::{
        backends::Input as BackendInput,
        health::{Damping, Health, HealthState},
        ownership::{Input, NodeState},
    },
    shell::{
        hooks::Event,
        metrics::{counter_to, OutcomeLabels},
        status::{HookStatus, ServiceStatus},
        track::TrackEvent,
    },
};

use super::Daemon;

/// What takes this node out of service, and what it last told the others.
#[derive(Default)]
pub struct NodeService {
    /// `vipd node standby`: since when (Unix ms); None in service.
    pub standby_since_ms: Option<u64>,
    /// Failing track conditions: name ("link eth0", "script galera") -> why.
    pub faults: BTreeMap<String, String>,
    /// Rise/fall of each track script.
    pub scripts: BTreeMap<String, HealthState>,
    /// The reason last applied (None: in service), its version and since when (Unix ms).
    pub applied: Option<String>,
    pub version: u64,
    pub since_ms: u64,
    /// Whether the local backends are out for a fault now.
    pub local_fault: bool,
}

impl NodeService {
    /// Why this node is out of service now (None: in service).
    pub fn reason(&self) -> Option<String> {
        let faults: Vec<String> = (self.faults.iter())
            .map(|(what, why)| format!("{what} {why}"))
            .collect();
        match (self.standby_since_ms.is_some(), faults.is_empty()) {
            (false, true) => None,
            (true, true) => Some("standby".into()),
            (standby, false) => Some(format!(
                "{}track: {}",
                if standby { "standby; " } else { "" },
                faults.join("; ")
            )),
        }
    }
}

impl Daemon {
    /// One raw track result: carriers count at once, scripts after `fall`/`rise` runs.
    pub(super) async fn on_track(&mut self, ev: TrackEvent) {
        let now = Instant::now();
        match ev {
            TrackEvent::Carrier { iface, up } => {
                let what = format!("link {iface}");
                match up {
                    true => self.service.faults.remove(&what),
                    false => self.service.faults.insert(what, "down".into()),
                };
            }
            TrackEvent::Script { name, ok, detail } => {
                let Some(conf) = self.config.track.scripts.iter().find(|s| s.name == name) else {
                    return; // from watchers a reload replaced
                };
                let state = (self.service.scripts)
                    .entry(name.clone())
                    .or_insert_with(|| {
                        HealthState::new(conf.rise, conf.fall, Damping::OFF, Health::Up)
                    });
                state.on_result(now, ok);
                let what = format!("script {name}");
                match state.health() {
                    Health::Up => self.service.faults.remove(&what),
                    Health::Down => self
                        .service
                        .faults
                        .insert(what, format!("failed ({detail})")),
                };
            }
        }
        self.apply_service().await;
    }

    /// `vipd node standby|unstandby`.
    pub(super) async fn set_standby(
        &mut self,
        standby: bool,
        node: Option<String>,
    ) -> Result<String, String> {
        let me = self.config.node.name.clone();
        if let Some(n) = node.filter(|n| *n != me) {
            return Err(format!(
                "this is {me}: `vipd node standby` acts on the node it runs on; run it on {n}"
            ));
        }
        // Single node, standby means something only for routed VIPs: their routes are
        // withdrawn and the routers send their traffic to the other balancers.
        let routed = (self.config.vips.iter()).any(|v| v.announce == crate::config::Announce::Bgp);
        if self.cluster.is_none() && !routed {
            return Err(
                "single-node mode: there is no other node to hand the VIPs to; take \
                        backends out with `vipd backend drain` instead"
                    .into(),
            );
        }
        let was = self.service.standby_since_ms.is_some();
        self.service.standby_since_ms = match standby {
            true => self.service.standby_since_ms.or(Some(super::unix_ms())),
            false => None,
        };
        self.apply_service().await;
        self.save_state();
        let state = self.service.reason().unwrap_or_else(|| "in service".into());
        Ok(match (was, standby) {
            (true, true) | (false, false) => format!("{me}: already so ({state})"),
            _ => format!("{me}: {state}"),
        })
    }

    /// Tells the ownership core, the backend core and the notify hook when the reason this
    /// node is out of service changed.
    pub(super) async fn apply_service(&mut self) {
        let reason = self.service.reason();
        let fault = !self.service.faults.is_empty();
        if fault != self.service.local_fault {
            self.service.local_fault = fault;
            let at = Instant::now();
            self.backend_input(BackendInput::LocalFault { fault, at });
        }
        if reason == self.service.applied && self.service.version != 0 {
            return;
        }
        let now_ms = super::unix_ms();
        let s = &mut self.service;
        s.version = now_ms.max(s.version + 1);
        s.since_ms = now_ms;
        let was = std::mem::replace(&mut s.applied, reason.clone());
        let version = s.version;
        match &reason {
            Some(r) => tracing::warn!(reason = %r, "this node is OUT OF SERVICE"),
            None if was.is_some() => tracing::info!("this node is in service again"),
            None => {}
        }
        if was.is_some() || reason.is_some() {
            let kind = match (&reason, fault) {
                (None, _) => "in_service",
                (Some(_), true) => "fault",
                (Some(_), false) => "standby",
            };
            let env = vec![("VIPD_REASON", reason.clone().unwrap_or_default())];
            self.notifier.notify(Event { kind, env });
        }
        let node = self.config.node.name.clone();
        let input = Input::NodeState(NodeState {
            node,
            reason,
            version,
        });
        let now = Instant::now();
        if let Some(c) = self.cluster.as_mut() {
            let actions = c.ownership.handle(input, now);
            self.apply_ownership(actions).await;
        }
    }

    /// Restarts the track watchers for the current `[track]` (start and reloads).
    pub(super) async fn start_track(&mut self, tx: &tokio::sync::mpsc::Sender<TrackEvent>) {
        self.track_watchers = None; // stops the old ones first
        self.service.faults.clear();
        self.service.scripts.clear();
        let track = self.config.track.clone();
        if track.interfaces.is_empty() && track.scripts.is_empty() {
            self.apply_service().await;
            return;
        }
        // A carrier already down is known before the first tick reports it.
        for iface in &track.interfaces {
            if !crate::shell::track::carrier(iface) {
                self.service
                    .faults
                    .insert(format!("link {iface}"), "down".into());
            }
        }
        self.track_watchers = Some(crate::shell::track::spawn(
            &track,
            &self.config.node.name,
            tx.clone(),
        ));
        self.apply_service().await;
    }

    pub(super) fn service_status(&self) -> ServiceStatus {
        use std::sync::atomic::Ordering::Relaxed;
        let since = super::unix_ms().saturating_sub(self.service.since_ms);
        let track = self
            .config
            .track
            .interfaces
            .iter()
            .map(|i| format!("link {i}"));
        let scripts = self.config.track.scripts.iter();
        let track = track.chain(scripts.map(|s| format!("script {}", s.name)));
        let stats = &self.notifier.stats;
        let hooks = self.config.hooks.notify.as_ref().map(|_| HookStatus {
            ok: stats.ok.load(Relaxed),
            failed: stats.failed.load(Relaxed),
            timed_out: stats.timed_out.load(Relaxed),
            dropped: stats.dropped.load(Relaxed),
            last_failure: stats.last_failure.lock().map_or(None, |f| f.clone()),
        });
        ServiceStatus {
            in_service: self.service.applied.is_none(),
            reason: self.service.applied.clone(),
            for_s: Duration::from_millis(since).as_secs_f64(),
            track: track.collect(),
            hooks,
        }
    }
}

impl Daemon {
    pub(super) fn refresh_service_metrics(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let m = &self.metrics;
        m.node_in_service
            .set(i64::from(self.service.applied.is_none()));
        if self.config.hooks.notify.is_none() {
            return;
        }
        let stats = &self.notifier.stats;
        for (outcome, n) in [
            ("ok", &stats.ok),
            ("failed", &stats.failed),
            ("timed_out", &stats.timed_out),
            ("dropped", &stats.dropped),
        ] {
            let l = OutcomeLabels {
                outcome: outcome.into(),
            };
            counter_to(&m.notify_runs.get_or_create(&l), n.load(Relaxed));
        }
    }
}
