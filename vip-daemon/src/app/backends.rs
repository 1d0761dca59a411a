//! Routes backend inputs to the pure backend core (`core::backends`) and applies its
//! actions; keeps what is IO beside it (each index's prober task).
use std::time::Instant;

use crate::{
    core::{
        backends::{Action, Input, Level, Note, Now, Share, Spec},
        plan::BackendPlan,
    },
    shell::probes::{ProbeEvent, ProbeSpec},
};

pub use crate::core::backends::Admin;

use super::Daemon;

/// A backend's prober task; dropping it stops the prober.
pub struct Prober {
    task: tokio::task::JoinHandle<()>,
    /// When it starts its next probe (a verdict that probe may bring is prepared for:
    /// `core::precompute`).
    pub next_at: Option<Instant>,
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
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

/// How to write the state file after a backend input.
#[derive(Clone, Copy, Debug)]
pub(super) enum Save {
    /// Before the command that caused it answers.
    Now,
    /// Within `SAVE_DELAY` of the probe result at this time, off the loop.
    Soon(Instant),
}

/// The core's idea of now: the monotonic clock and the wall clock (drains).
pub(super) fn now() -> Now {
    Now {
        at: Instant::now(),
        unix_ms: super::unix_ms(),
    }
}

impl Daemon {
    /// Position of VIP `vip` in the plan and the plan of its backend `backend`.
    pub(super) fn backend_named(&self, vip: &str, backend: &str) -> Option<(usize, &BackendPlan)> {
        let v = self.plan.vips.iter().position(|p| p.name == vip)?;
        let b = self.plan.vips[v]
            .backends
            .iter()
            .find(|b| b.conf.name == backend)?;
        Some((v, b))
    }

    /// (VIP name, backend name) of backend `index`.
    pub(super) fn backend_names(&self, index: usize) -> (String, String) {
        let (vip, pos) = self.locate_backend(index);
        let v = &self.plan.vips[vip];
        (v.name.clone(), v.backends[pos].conf.name.clone())
    }

    /// Feeds one input to the backend core and applies what it decides.
    pub(super) fn backend_input(&mut self, input: Input) {
        let save = match input {
            Input::Probe { at, .. } => Save::Soon(at),
            _ => Save::Now,
        };
        let actions = self.backends.handle(input, now());
        self.apply_backend_actions(actions, save);
    }

    /// Applies the backend core's actions in order, the publishes last (each VIP once), then
    /// what tells others (hooks, peers) and the log lines (a line written to stderr before
    /// the publish delayed the verdict's table), then the state file (`save` says how).
    pub(super) fn apply_backend_actions(&mut self, actions: Vec<Action>, save_how: Save) {
        let mut publish: Vec<(usize, Instant, bool)> = Vec::new();
        let mut save = false;
        let mut notes = Vec::new();
        let mut shares = Vec::new();
        for action in actions {
            match action {
                Action::Publish { vip, at, admin } => {
                    match publish.iter_mut().find(|(v, _, _)| *v == vip) {
                        Some(p) => p.2 |= admin,
                        None => publish.push((vip, at, admin)),
                    }
                }
                Action::WriteBackend(index) => self.write_backend(index as usize),
                Action::Broadcast(share) => shares.push(share),
                Action::SaveState => save = true,
                Action::RefreshNeighbours => self.neighbours_due = true,
                Action::ServiceGone => {
                    self.metrics.service_gone.inc();
                }
                Action::WeightFromConfig(index) => self.weight_from_config(index as usize),
                Action::Log(level, note) => notes.push((level, note)),
            }
        }
        for (vip, at, admin) in publish {
            self.admin_publish = admin;
            self.republish(vip, Some(at));
            self.admin_publish = false;
        }
        for share in shares {
            self.share(share);
        }
        for (level, note) in notes {
            self.log_note_soon(level, note);
        }
        // After the publishes: a primary/backup writer they changed is saved too.
        match (save, save_how) {
            (false, _) => {}
            (true, Save::Now) => self.save_state(),
            // Soon, not at the next tick: a restart that replaces the maps has only the state
            // file to know which backends were up. Within SAVE_DELAY, so that a burst of
            // verdicts writes the file once (on its own thread).
            (true, Save::Soon(at)) => {
                self.state_dirty = true;
                self.save_at.get_or_insert(at + super::SAVE_DELAY);
            }
        }
    }

    /// Tells the notify hook and the peers of a backend change.
    fn share(&mut self, share: Share) {
        match share {
            Share::Verdict { index, health } => {
                let state = match health {
                    crate::core::health::Health::Up => "up",
                    crate::core::health::Health::Down => "down",
                };
                self.notify_backend(index as usize, state);
                self.share_verdict(index as usize, health);
            }
            Share::Service { index, listening } => {
                self.share_service(index as usize, listening);
            }
            Share::Admin { index } => {
                let state = self.backends[index as usize].admin.as_str();
                self.notify_backend(index as usize, state);
                self.share_admin(index as usize);
            }
        }
    }

    /// The notify hook's `backend` event: a verdict of this node's probes (`up`, `down`) or
    /// an operator's change here (`enabled`, `drained`, `disabled`).
    fn notify_backend(&self, index: usize, state: &str) {
        let (vip, backend) = self.backend_names(index);
        let env = vec![
            ("VIPD_VIP", vip),
            ("VIPD_BACKEND", backend),
            ("VIPD_STATE", state.to_owned()),
        ];
        let kind = "backend";
        self.notifier
            .notify(crate::shell::hooks::Event { kind, env });
    }

    /// Words a log line of the backend core.
    pub(super) fn log_note(&self, level: Level, note: Note) {
        macro_rules! at_level {
            ($($arg:tt)*) => {
                match level {
                    Level::Debug => tracing::debug!($($arg)*),
                    Level::Info => tracing::info!($($arg)*),
                    Level::Warn => tracing::warn!($($arg)*),
                }
            };
        }
        let index = match note {
            Note::Verdict { index, .. }
            | Note::FlappingHeld { index, .. }
            | Note::FlappingOver { index, .. }
            | Note::DrainTimedOut { index }
            | Note::ServiceSocket { index, .. } => index as usize,
        };
        let (vip, backend) = self.backend_names(index);
        match note {
            Note::Verdict {
                health,
                left_out: None,
                ..
            } if level == Level::Debug => at_level!(
                %vip, %backend, ?health, "health verdict (INFO line rate limited)"
            ),
            Note::Verdict {
                health,
                left_out: None,
                ..
            } => at_level!(%vip, %backend, ?health, "health verdict"),
            Note::Verdict {
                health,
                left_out: Some(left_out),
                ..
            } => at_level!(
                %vip, %backend, ?health, left_out,
                "health verdict ({left_out} verdict lines of this backend logged at DEBUG \
                 since the last one: rate limited)"
            ),
            Note::FlappingHeld {
                transitions,
                held_s,
                ..
            } => at_level!(
                %vip, %backend, transitions, held_s,
                "backend flapping: held down (flap damping) until it has been stable"
            ),
            Note::FlappingOver { transitions, .. } => at_level!(
                %vip, %backend, transitions,
                "backend no longer flapping: its health follows its probes again"
            ),
            Note::DrainTimedOut { .. } => at_level!(
                %vip, %backend,
                "drain timeout passed: the backend gives up its established flows"
            ),
            Note::ServiceSocket { listening, .. } => {
                at_level!(%vip, %backend, listening, "local service socket")
            }
        }
    }

    /// Drain timeouts (`core::drain`), once a second.
    pub(super) fn drain_tick(&mut self) {
        self.backend_input(Input::Tick);
    }

    /// (Re)starts the prober of backend `b` (none while disabled).
    pub(super) fn start_prober(&mut self, vip: usize, pos: usize) {
        let plan = &self.plan.vips[vip].backends[pos];
        let index = plan.index as usize;
        self.probers[index] = None;
        if self.backends[index].admin == Admin::Disabled {
            return;
        }
        let c = &plan.conf.check;
        let seed = u64::from(plan.maglev_id) ^ (self.started.elapsed().as_nanos() as u64);
        let task = crate::shell::probes::spawn_prober(
            (plan.index, plan.serial),
            probe_spec(plan),
            c.interval,
            c.jitter,
            seed,
            self.probe_tx.clone(),
        );
        self.probers[index] = Some(Prober {
            task,
            next_at: None,
        });
    }

    pub(super) fn on_probe(&mut self, ev: ProbeEvent<(u32, u32)>) {
        let (index, serial) = ev.key;
        if !self.backends.is_current(index, serial) {
            return; // a prober of a backend that a reload removed
        }
        if let Some(Some(prober)) = self.probers.get_mut(index as usize) {
            prober.next_at = Some(ev.next_at);
        }
        // The metrics after the verdict's publish: they wait, the verdict does not.
        let (ok, latency) = (ev.result.ok, ev.result.latency);
        self.backend_input(Input::Probe {
            index,
            serial,
            result: ev.result,
            at: ev.at,
        });
        let labels = self.backend_labels(index as usize);
        self.metrics
            .probe_latency
            .get_or_create(&labels)
            .observe(latency.as_secs_f64());
        if !ok {
            self.metrics.probe_failures.get_or_create(&labels).inc();
        }
        // The next probe may now be one short of a verdict: prepare its table.
        if let Some(&vip) = self.vip_of.get(index as usize) {
            self.precompute(vip);
        }
    }
}

/// What the backend core needs to know of backend `b` of the plan's VIP `vip`.
pub fn spec_of(config: &crate::config::Config, vip: usize, b: &BackendPlan) -> Spec {
    let c = &b.conf.check;
    Spec {
        index: b.index,
        serial: b.serial,
        vip,
        address: b.conf.address,
        weight: b.conf.weight,
        rise: c.rise,
        fall: c.fall,
        damping: c.damping,
        local: crate::core::plan::is_local(config, &b.conf),
        drain_timeout: config.vips[vip].drain_timeout,
    }
}
