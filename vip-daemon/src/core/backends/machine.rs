//! The machine: every backend's [`Backend`] state, the inputs that change it and the actions
//! the shell takes for them.
use std::{
    net::IpAddr,
    ops::Index,
    time::{Duration, Instant},
};

use super::{
    reach::NextHop,
    state::{Admin, Backend, BackendAdmin, ProbeResult, Spec},
};
use crate::core::{
    drain::{Drain, Phase},
    health::Health,
};

/// A moment as the machine sees it: monotonic for probes and damping, wall-clock ms for
/// drains (their start survives a restart through the state file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    pub at: Instant,
    pub unix_ms: u64,
}

/// An operator's change of one backend (control socket, or another node's register).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminChange {
    /// `vipd backend drain [--timeout]`.
    Drain {
        timeout: Option<Duration>,
    },
    Disable,
    Enable,
    Weight(u32),
    /// The cluster's newest register for this backend (`core::admin`).
    Set(BackendAdmin),
}

#[derive(Clone, Debug)]
pub enum Input {
    /// A probe result of the backend `index` whose identity had `serial` when its prober
    /// started (a stale prober's results are dropped).
    Probe {
        index: u32,
        serial: u32,
        result: ProbeResult,
        at: Instant,
    },
    Admin {
        index: u32,
        change: AdminChange,
    },
    /// The kernel's current next hop (None: unresolved).
    NextHop {
        index: u32,
        hop: Option<NextHop>,
    },
    /// A local backend's service socket exists or not (sock_diag), seen at `at`.
    Listening {
        index: u32,
        listening: bool,
        at: Instant,
    },
    /// This node's `track` conditions failed (`fault`) or recovered: its local backends go
    /// out of every node's tables with it (shared like a service socket fact) and back.
    LocalFault {
        fault: bool,
        at: Instant,
    },
    /// The cluster's verdict (`core::shared_health::cluster_verdict`: majority of live
    /// observers, a dead host's backends down, a host's own socket report).
    ClusterView {
        index: u32,
        verdict: Health,
    },
    /// A config reload: every backend the new config has. One whose identity (index,
    /// serial) did not change keeps its state; the rest start afresh, down.
    Reload(Vec<Spec>),
    /// Once a second: drain timeouts.
    Tick,
}

/// What the shell should tell the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// This node's own verdict on the backend.
    Verdict { index: u32, health: Health },
    /// A local backend's service socket fact.
    Service { index: u32, listening: bool },
    /// This node's operator change: record it in the admin register and gossip it.
    Admin { index: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

/// A log line (the shell words it; its level is decided here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    /// `left_out`: Some(n) when n earlier lines were demoted to DEBUG by the rate limit.
    Verdict {
        index: u32,
        health: Health,
        left_out: Option<u64>,
    },
    FlappingHeld {
        index: u32,
        transitions: u64,
        held_s: u64,
    },
    FlappingOver {
        index: u32,
        transitions: u64,
    },
    DrainTimedOut {
        index: u32,
    },
    ServiceSocket {
        index: u32,
        listening: bool,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// The VIP's table must be recomputed (the change was at `at`; `admin`: an operator's
    /// change, whose publish makes the replaced table the fallback's previous one).
    Publish {
        vip: usize,
        at: Instant,
        admin: bool,
    },
    /// The backend's BACKENDS entry (next hop, keep-flows flag) may have changed.
    WriteBackend(u32),
    Broadcast(Share),
    /// A verdict or admin change the state file must hold at once.
    SaveState,
    /// A backend came up without a resolved next hop: refresh them now.
    RefreshNeighbours,
    /// A local service's socket vanished (metric).
    ServiceGone,
    /// A reload's config weight replaced a runtime weight: a shared runtime weight must be
    /// overwritten in the cluster too.
    WeightFromConfig(u32),
    Log(Level, Note),
}

/// Every backend, by index (the allocation's stable place of an identity).
pub struct Backends {
    rows: Vec<Backend>,
}

impl Index<usize> for Backends {
    type Output = Backend;
    fn index(&self, i: usize) -> &Backend {
        &self.rows[i]
    }
}

impl Backends {
    /// `capacity` unused indices.
    pub fn new(capacity: usize) -> Self {
        Self {
            rows: (0..capacity).map(|_| Backend::unused()).collect(),
        }
    }

    /// At start, before anything runs: the backend restored from the kernel's tables and the
    /// state file (the shell decides what it remembers).
    pub fn restore(&mut self, index: u32, backend: Backend) {
        self.rows[index as usize] = backend;
    }

    /// At start: next hops resolved before the first tables (no actions: everything is
    /// written afterwards anyway).
    pub fn set_next_hop(&mut self, index: u32, hop: Option<NextHop>) {
        self.rows[index as usize].next_hop = hop;
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn get(&self, index: usize) -> Option<&Backend> {
        self.rows.get(index)
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &Backend)> {
        (0u32..).zip(&self.rows)
    }

    /// Whether `(index, serial)` names a backend configured now.
    pub fn is_current(&self, index: u32, serial: u32) -> bool {
        self.get(index as usize)
            .is_some_and(|b| b.in_use() && b.serial == serial)
    }

    pub fn handle(&mut self, input: Input, now: Now) -> Vec<Action> {
        // An input about one backend changes that backend's state only: stamping every row
        // on every probe result walked thousands of rows (tens of microseconds a verdict).
        let only = match &input {
            Input::Probe { index, .. }
            | Input::Admin { index, .. }
            | Input::NextHop { index, .. }
            | Input::Listening { index, .. }
            | Input::ClusterView { index, .. } => Some(*index as usize),
            Input::LocalFault { .. } | Input::Reload(_) | Input::Tick => None,
        };
        let actions = self.route(input, now);
        match only {
            Some(index) => (self.rows.get_mut(index).into_iter())
                .filter(|b| b.in_use())
                .for_each(|b| b.stamp_state(now.unix_ms)),
            None => (self.rows.iter_mut())
                .filter(|b| b.in_use())
                .for_each(|b| b.stamp_state(now.unix_ms)),
        }
        actions
    }

    fn route(&mut self, input: Input, now: Now) -> Vec<Action> {
        match input {
            Input::Probe {
                index,
                serial,
                result,
                at,
            } => self.on_probe(index, serial, result, at),
            Input::Admin { index, change } => self.on_admin(index, change, now),
            Input::NextHop { index, hop } => {
                let Some(b) = self.rows.get_mut(index as usize).filter(|b| b.in_use()) else {
                    return Vec::new();
                };
                if b.local || b.next_hop == hop {
                    return Vec::new();
                }
                b.next_hop = hop;
                vec![
                    Action::WriteBackend(index),
                    Action::Publish {
                        vip: b.vip,
                        at: now.at,
                        admin: false,
                    },
                ]
            }
            Input::Listening {
                index,
                listening,
                at,
            } => self.on_listening(index, listening, at),
            Input::LocalFault { fault, at } => self.on_local_fault(fault, at),
            Input::ClusterView { index, verdict } => {
                let Some(b) = self.rows.get_mut(index as usize).filter(|b| b.in_use()) else {
                    return Vec::new();
                };
                if b.cluster_health == Some(verdict) {
                    return Vec::new();
                }
                b.cluster_health = Some(verdict);
                vec![Action::Publish {
                    vip: b.vip,
                    at: now.at,
                    admin: false,
                }]
            }
            Input::Reload(specs) => self.reload(specs),
            Input::Tick => self.drain_tick(now),
        }
    }

    /// When the machine next needs a [`Input::Tick`]: the earliest drain timeout (the shell
    /// ticks once a second anyway).
    pub fn next_deadline(&self, now: Now) -> Option<Instant> {
        self.rows
            .iter()
            .filter(|b| b.in_use() && b.admin == Admin::Drained && !b.drain_timed_out)
            .filter_map(|b| match b.drain?.phase(b.drain_default, now.unix_ms) {
                Phase::Keeping { left } => Some(now.at + left),
                Phase::TimedOut => Some(now.at),
            })
            .min()
    }

    fn on_probe(
        &mut self,
        index: u32,
        serial: u32,
        result: ProbeResult,
        at: Instant,
    ) -> Vec<Action> {
        if !self.is_current(index, serial) {
            return Vec::new(); // a prober of a backend that a reload removed
        }
        let b = &mut self.rows[index as usize];
        let was_flapping = b.health.flapping();
        let verdict = if b.admin == Admin::Disabled {
            None
        } else {
            b.health.on_result(at, result.ok)
        };
        b.last_probe = Some((result, at));
        let mut out = Vec::new();
        let (flapping, transitions) = (b.health.flapping(), b.health.transitions());
        if flapping && !was_flapping {
            let held_s = b.health.held_for(at).unwrap_or_default().as_secs();
            out.push(Action::Log(
                Level::Warn,
                Note::FlappingHeld {
                    index,
                    transitions,
                    held_s,
                },
            ));
        } else if was_flapping && !flapping {
            out.push(Action::Log(
                Level::Info,
                Note::FlappingOver { index, transitions },
            ));
        }
        let Some(v) = verdict else { return out };
        let (level, left_out) = match b.verdict_log.admit(v.at) {
            Some(0) => (Level::Info, None),
            Some(n) => (Level::Info, Some(n)),
            None => (Level::Debug, None),
        };
        out.push(Action::Log(
            level,
            Note::Verdict {
                index,
                health: v.health,
                left_out,
            },
        ));
        out.push(Action::Broadcast(Share::Verdict {
            index,
            health: v.health,
        }));
        // At once, not at the next tick: a restart that replaces the maps has only the
        // state file to know which backends were up (flap damping bounds how often).
        out.push(Action::SaveState);
        if v.health == Health::Up && !b.local && b.next_hop.and_then(|h| h.mac).is_none() {
            out.push(Action::RefreshNeighbours);
        }
        out.push(Action::Publish {
            vip: b.vip,
            at: v.at,
            admin: false,
        });
        out
    }

    fn on_admin(&mut self, index: u32, change: AdminChange, now: Now) -> Vec<Action> {
        let Some(b) = self.rows.get_mut(index as usize).filter(|b| b.in_use()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        match change {
            AdminChange::Drain { timeout } => {
                // Draining again keeps the original start (the connections have been winding
                // down since then) and takes the new timeout, if one is given.
                b.drain = Some(match b.drain {
                    Some(d) if b.admin == Admin::Drained => Drain {
                        timeout_override: timeout.or(d.timeout_override),
                        ..d
                    },
                    _ => Drain {
                        started_ms: now.unix_ms,
                        timeout_override: timeout,
                    },
                });
                b.admin = Admin::Drained;
            }
            AdminChange::Disable => b.admin = Admin::Disabled,
            AdminChange::Enable => b.admin = Admin::Enabled,
            AdminChange::Weight(w) => b.weight = w,
            AdminChange::Set(value) => {
                b.admin = value.admin;
                b.weight = value.weight.unwrap_or(b.conf_weight);
                b.drain = value.drain;
            }
        }
        if b.admin != Admin::Drained {
            b.drain = None;
        }
        let vip = b.vip;
        if !matches!(change, AdminChange::Set(_)) {
            out.push(Action::Broadcast(Share::Admin { index }));
        }
        // A zero or already passed timeout takes effect with this change, not a tick later.
        out.extend(self.drain_tick(now));
        out.push(Action::Publish {
            vip,
            at: now.at,
            admin: true,
        });
        out.push(Action::SaveState);
        out
    }

    fn on_listening(&mut self, index: u32, listening: bool, at: Instant) -> Vec<Action> {
        let Some(b) = self.rows.get_mut(index as usize).filter(|b| b.in_use()) else {
            return Vec::new();
        };
        let was = b.listening.replace(listening);
        if was == Some(listening) {
            return Vec::new();
        }
        let mut out = Vec::new();
        if was.is_some() || !listening {
            out.push(Action::Log(
                Level::Warn,
                Note::ServiceSocket { index, listening },
            ));
        }
        if !listening {
            out.push(Action::ServiceGone);
        }
        let listening = b.service_up();
        out.push(Action::Broadcast(Share::Service { index, listening }));
        out.push(Action::Publish {
            vip: b.vip,
            at,
            admin: false,
        });
        out
    }

    fn on_local_fault(&mut self, fault: bool, at: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        for (index, b) in (0u32..).zip(self.rows.iter_mut()) {
            if !b.in_use() || !b.local || std::mem::replace(&mut b.local_fault, fault) == fault {
                continue;
            }
            let listening = b.service_up();
            out.push(Action::Broadcast(Share::Service { index, listening }));
            out.push(Action::Publish {
                vip: b.vip,
                at,
                admin: false,
            });
        }
        out
    }

    /// Drains whose timeout passed give up their established flows (`core::drain`); a drain
    /// given a longer `--timeout` again keeps them again. Rewrites only changed entries.
    fn drain_tick(&mut self, now: Now) -> Vec<Action> {
        let mut out = Vec::new();
        for (index, b) in (0u32..).zip(self.rows.iter_mut()) {
            if !b.in_use() {
                continue;
            }
            let timed_out = match (b.admin, b.drain) {
                (Admin::Drained, Some(d)) => {
                    d.phase(b.drain_default, now.unix_ms) == Phase::TimedOut
                }
                _ => false,
            };
            if b.drain_timed_out == timed_out {
                continue;
            }
            b.drain_timed_out = timed_out;
            if timed_out {
                out.push(Action::Log(Level::Info, Note::DrainTimedOut { index }));
            }
            out.push(Action::WriteBackend(index));
        }
        out
    }

    /// The same identity (index and serial) keeps its runtime state: verdict, penalty, admin
    /// state, next hop; its thresholds and config facts follow the file. A new identity
    /// starts down, enabled, with the config's weight, and borrows the next hop of a backend
    /// with the same address. Indices the file no longer uses become unused.
    fn reload(&mut self, specs: Vec<Spec>) -> Vec<Action> {
        let hops: Vec<(IpAddr, NextHop)> = self
            .rows
            .iter()
            .filter(|b| b.in_use())
            .filter_map(|b| Some((b.address?, b.next_hop?)))
            .collect();
        let mut old = std::mem::take(&mut self.rows);
        self.rows = (0..old.len()).map(|_| Backend::unused()).collect();
        let mut out = Vec::new();
        for spec in &specs {
            let i = spec.index as usize;
            let kept = old[i].in_use() && old[i].serial == spec.serial;
            let b = if kept {
                let mut b = std::mem::replace(&mut old[i], Backend::unused());
                if b.conf_weight != spec.weight {
                    // The file's new weight replaces one set at runtime, on every node that
                    // reloads it.
                    b.weight = spec.weight;
                    out.push(Action::WeightFromConfig(spec.index));
                }
                // Penalty, hold and transition count survive; thresholds follow the file.
                b.health.reconfigure(spec.rise, spec.fall, spec.damping);
                b.apply_spec(spec);
                b
            } else {
                Backend::new(spec, Health::Down)
            };
            self.rows[i] = b;
        }
        for spec in &specs {
            let b = &mut self.rows[spec.index as usize];
            if b.next_hop.is_none() && !b.local {
                b.next_hop = hops
                    .iter()
                    .find(|(a, _)| *a == spec.address)
                    .map(|(_, h)| *h);
            }
        }
        out
    }
}
