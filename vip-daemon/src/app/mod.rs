//! The daemon: one event loop owning the data plane, the health state and the tables. Probe
//! results, control requests, metric scrapes, neighbour refreshes and signals arrive as inputs;
//! pure cores decide; the loop applies their decisions to the maps. Clustering plugs in as
//! one more input source.
mod admin;
mod after_verdict;
mod announce;
mod backends;
mod cluster;
mod cluster_reload;
mod debug;
pub mod host;
mod liveness;
mod neighbours;
mod own_host;
mod pending_image;
mod precompute;
mod report;
mod selfcheck;
mod service;
mod startup;
mod tables;

use std::{
    net::IpAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot};

use crate::{
    config::Config,
    core::{
        backends::{AdminChange, Backends, Input},
        plan::Plan,
    },
    shell::{
        control::{self, AdminAction, Call, Request, Response},
        dataplane::MapWriter,
        metrics::Metrics,
        probes::ProbeEvent,
    },
};
pub use backends::Admin;

/// A config file read for a reload, and who asked (None: SIGHUP).
pub struct Parsed {
    pub config: Result<Config, String>,
    pub reply: Option<oneshot::Sender<Response>>,
}

/// Command-line options of `vipd run`.
#[derive(Clone, Debug)]
pub struct Options {
    pub config_path: PathBuf,
    /// `vipd run --control PATH`: the control socket instead of the file's `[control]`.
    pub control_socket: Option<PathBuf>,
}

impl Options {
    /// The config file, with the command line's overrides.
    pub fn load_config(&self) -> Result<Config, crate::config::ConfigError> {
        let mut config = crate::config::load(&self.config_path)?;
        if let Some(path) = &self.control_socket {
            config.control_socket = path.clone();
        }
        Ok(config)
    }
}

#[derive(Default)]
pub struct VipRt {
    pub generation: Option<u32>,
    pub publishes: u64,
    pub publishes_precomputed: u64,
    /// Tables computed ahead as steps from the live one (`core::precompute`).
    pub steps: crate::core::precompute::Steps,
    /// The effective weights the live table was built from (where steps start).
    pub basis: crate::core::precompute::Weights,
    /// What was last asked of the precompute worker: not asked twice.
    pub asked_chain: Option<(
        crate::core::precompute::Weights,
        Vec<crate::core::precompute::Weights>,
    )>,
    pub asked_singles: Option<crate::core::precompute::Weights>,
    pub asked_swap: Option<(
        crate::core::precompute::Weights,
        Vec<crate::core::precompute::Weights>,
    )>,
    /// Second chance: the published fallback table (empty until the first publish).
    pub fallback: Vec<u32>,
    /// The live table before the last change (empty until there was one): where
    /// connections made before it live.
    pub previous: Vec<u32>,
    /// Primary/backup: (index, serial) of the backend holding the slot, which keeps it while
    /// eligible (`core::writer`). From the live table, or the state file when the maps were
    /// recreated; serial so that a reused index is not taken for the old writer.
    pub writer: Option<(u32, u32)>,
    /// Maps recreated at start: until this moment the slot stays empty unless `writer`, the
    /// state file's, is back (`core::writer::hold_for_restored`).
    pub awaiting_writer: Option<Instant>,
    /// A flow-table VIP in its transition after switching from second chance: its flow table
    /// has no entry for a connection made before the switch, so the data plane sends such a
    /// connection's segments to the previous table's pick (`VIP_F_PREV_TABLE`).
    pub transition: Option<Transition>,
    /// A VIP back on second chance after the flow table: until then its flow entries still
    /// steer the connections that have them (`VIP_F_FLOWS_EXIT`).
    pub flows_exit_until: Option<Instant>,
    /// Slots per backend index in the live table, kept at each publish (None: not known,
    /// e.g. a table adopted at start; counted when asked).
    /// By backend index.
    pub slot_counts: Option<Vec<u32>>,
    /// (token, weights) of the chain's next step, written ahead into the inactive table
    /// generation: its verdict only flips (`TablePublisher::prepare`).
    pub prepared: Option<(u64, crate::core::precompute::Weights)>,
    /// (token, weights) of a write ahead under way, a piece per turn (`prepare_due`).
    pub preparing: Option<(u64, crate::core::precompute::Weights)>,
    /// The next step is to be written ahead at `Daemon::prepare_at`.
    pub prepare_wanted: bool,
}

/// The previous table of a VIP in its transition (see `VipRt::transition`).
pub struct Transition {
    /// The live table when the VIP switched to the flow table (backend indices).
    pub table: Vec<u32>,
    /// (index, serial) of the VIP's backends then: a slot whose index now holds another
    /// backend (a later reload reused it) is published empty, so the program never sends a
    /// connection to a backend it did not live on.
    pub serials: Vec<(u32, u32)>,
    /// End of the transition: the switch plus the VIP's `drain_timeout`.
    pub until: Instant,
    /// What the previous-table region holds (empty until published).
    pub published: Vec<u32>,
}

/// Everything the loop owns.
/// An attached interface as listed in the maps.
#[derive(Clone, Debug)]
pub struct Link {
    pub name: String,
    pub ifindex: u32,
    /// Its MAC and MTU as `IFACES` holds them.
    pub iface: vip_common::maps::Iface,
    /// Its egress port (`EGRESS`), 0: none.
    pub port: u32,
}

pub struct Daemon {
    pub opts: Options,
    pub config: Config,
    pub plan: Plan,
    /// Where each VIP and backend lives in the maps (kept across reloads and restarts).
    pub alloc: crate::core::alloc::Allocation,
    /// Capacities the maps were made with.
    pub limits: crate::config::Limits,
    pub layout_id: u32,
    pub state_path: PathBuf,
    /// A verdict or admin change not yet in the state file.
    pub state_dirty: bool,
    /// When to save the state file for the verdicts since the last save.
    pub save_at: Option<Instant>,
    pub saver: crate::shell::state::Saver,
    /// The publish under way follows an operator's change (drain, enable, weight): only then
    /// does the table it replaces become the fallback's previous table (see `publish`).
    pub admin_publish: bool,
    /// Admin states and primary/backup writers as the cluster agrees on them (`core::admin`).
    pub admin_book: admin::AdminBook,
    pub writer_book: admin::WriterBook,
    /// A backend went up without a resolved next hop: refresh now, not at the next tick
    /// (its probes have just made the kernel resolve it).
    pub neighbours_due: bool,
    /// A neighbour refresh is running off the loop (`refresh_neighbours_soon`).
    pub neighbours_in_flight: bool,
    /// The maps, written only through it; its image is the host model of what they hold.
    pub maps: MapWriter,
    pub interfaces: Vec<(String, String)>,
    /// Interface index of each egress port (port i + 1: `EGRESS`, `EGRESS_DEVS`) when the
    /// program is attached to several interfaces; empty with one (everything leaves by
    /// `XDP_TX`).
    pub egress_ports: Vec<u32>,
    /// The attached interfaces listed in `IFACES` (and `EGRESS`), whose MTU the neighbour
    /// refresh follows.
    pub links: Vec<Link>,
    /// Every backend's state and the decisions made from it (`core::backends`).
    pub backends: Backends,
    /// Backend index -> its prober (the IO beside the core's state).
    pub probers: Vec<Option<backends::Prober>>,
    /// Backend index -> VIP position in `plan.vips` (`usize::MAX`: index unused).
    pub vip_of: Vec<usize>,
    pub vips: Vec<VipRt>,
    pub metrics: Metrics,
    pub verdict_latencies: std::collections::VecDeque<Duration>,
    pub started: Instant,
    pub last_reload: Option<String>,
    pub probe_tx: mpsc::Sender<ProbeEvent<(u32, u32)>>,
    pub precompute: crate::shell::precompute::Worker,
    pub netlink: rtnetlink::Handle,
    /// Cluster mode state, when `[cluster] listen` is set.
    pub cluster: Option<cluster::ClusterRt>,
    /// In or out of service (standby, track conditions).
    pub service: service::NodeService,
    pub track_watchers: Option<crate::shell::track::Watchers>,
    /// The `[hooks] notify` runner.
    pub notifier: crate::shell::hooks::Notifier,
    /// The last self-check (`selfcheck`), for status.
    pub last_selfcheck: Option<selfcheck::Run>,
    /// Routes of `announce = "bgp"` VIPs (`announce`).
    pub routes: announce::Routes,
    /// `vipd debug packets`: what the XDP program logs, until when (renewed by the CLI).
    pub packet_debug: Option<(crate::core::image::PacketDebug, Instant)>,
    /// When to write ahead the next steps of the VIPs that want it (`prepare_due`).
    pub prepare_at: Option<Instant>,
    /// Where the local-client programs are attached, or why not (status).
    pub local_clients: String,
    /// Patches live in the kernel whose image (and slot counts) the loop brings up to date
    /// a piece per idle turn (`tables::PendingImage`).
    pub pending_images: std::collections::VecDeque<pending_image::PendingImage>,
    /// What verdicts left for later turns of the loop.
    pub after_verdict: after_verdict::AfterVerdict,
}

/// Runs vipd until SIGTERM/SIGINT. The data plane stays attached and pinned when it returns:
/// a restarted vipd adopts it without dropping a packet.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let config = opts
        .load_config()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("config {}", opts.config_path.display()))?;
    // The endpoints first: a taken port or a live control socket fails the start here,
    // before the data plane is touched and before READY. Requests wait for the loop.
    let metrics_listener = match config.metrics_listen {
        Some(listen) => Some(crate::shell::metrics::bind(listen).await?),
        None => None,
    };
    let control_listener = control::bind(&config.control_socket)?;
    let status_listener = match &config.status_socket.path {
        Some(path) => Some(control::bind_status(
            path,
            config.status_socket.group.as_deref(),
        )?),
        None => None,
    };
    let realtime = config.node.realtime && loop_priority();
    let health = crate::shell::metrics::Health::default();
    let (call_tx, mut call_rx) = mpsc::channel::<Call>(64);
    if let Some(listener) = status_listener {
        tokio::spawn(control::serve(listener, call_tx.clone(), true));
    }
    tokio::spawn(control::serve(control_listener, call_tx, false));
    let (scrape_tx, mut scrape_rx) = mpsc::channel::<oneshot::Sender<String>>(16);
    if let Some(listener) = metrics_listener {
        let serve = crate::shell::metrics::serve(listener, scrape_tx.clone(), health.clone());
        tokio::spawn(serve);
    }
    let (probe_tx, mut probe_rx) = mpsc::channel(1024);
    let (precomputed_tx, mut precomputed_rx) = mpsc::channel(64);
    // Below a real-time loop, the worker cannot delay a verdict: at normal priority it keeps
    // up with a ramp-up on a busy machine (at nice 10 its chains came too late for some
    // verdicts, each then built on the loop). Else it must give way to the loop.
    let worker = crate::shell::precompute::Worker::spawn(precomputed_tx, !realtime);
    let mut d = startup::start(opts, config, probe_tx, worker).await?;
    let (fence_tx, mut fence_rx) = mpsc::channel::<(String, bool)>(16);
    let mut gossip_rx = match d.config.cluster.membership.clone() {
        Some(m) => Some(d.start_cluster(m, fence_tx).await?),
        None => None,
    };
    let mut watch_rx = d.start_sockwatch();
    let (track_tx, mut track_rx) = mpsc::channel(64);
    d.start_track(&track_tx).await;
    let mut ownership_tick = tokio::time::interval(Duration::from_millis(50));

    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut neigh_tick = tokio::time::interval(Duration::from_secs(1));
    let first_check = tokio::time::Instant::now() + selfcheck::INTERVAL;
    let mut selfcheck_tick = tokio::time::interval_at(first_check, selfcheck::INTERVAL);
    let watchdog = sd_notify::watchdog_enabled();
    let mut watchdog_tick =
        tokio::time::interval(watchdog.map_or(Duration::from_secs(3600), |w| w / 2));
    health.set(d.readiness());
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    tracing::info!(node = %d.config.node.name, vips = d.plan.vips.len(), "vipd ready");

    let (neigh_tx, mut neigh_rx) = mpsc::channel(1);
    let (parsed_tx, mut parsed_rx) = mpsc::channel(4);
    loop {
        let (save_at, prepare_at) = (d.save_at, d.prepare_at);
        tokio::select! {
            // Verdicts first, then what the next ones need (steps computed and written
            // ahead), then the rest: a command or tick that is ready at the same time waits.
            biased;
            Some(ev) = probe_rx.recv() => {
                d.on_probe(ev);
                if std::mem::take(&mut d.neighbours_due) {
                    d.refresh_neighbours_soon(&neigh_tx);
                }
            }
            // What the verdicts left for later (`after_verdict`): a piece per turn once no
            // verdict waits.
            _ = std::future::ready(()), if !d.after_verdict.is_empty() => d.after_verdict_some(),
            Some(done) = precomputed_rx.recv() => d.on_precomputed(done),
            _ = sleep_until_some(prepare_at), if prepare_at.is_some() => d.prepare_due(),
            _ = sleep_until_some(save_at), if save_at.is_some() => {
                d.save_at = None;
                d.save_state_soon();
            }
            Some((req, reply)) = call_rx.recv() => {
                // What a command shows, or changes, is on disk: a verdict seen in `status`
                // survives a kill -9 right after.
                let saving = d.save_at.take().is_some();
                if matches!(req, Request::Reload) {
                    if saving {
                        d.save_state();
                    }
                    d.parse_for_reload(&parsed_tx, Some(reply));
                    continue;
                }
                // The write runs off the loop and the answer waits for it, not the verdicts
                // queued behind this command (a write took milliseconds).
                let write = saving.then(|| d.save_state_ordered());
                let resp = d.on_request(req).await;
                match write {
                    None => _ = reply.send(resp),
                    Some(write) => _ = tokio::task::spawn_blocking(move || {
                        if let Err(e) = write() {
                            tracing::warn!(error = %e, "could not save the state file");
                        }
                        let _ = reply.send(resp);
                    }),
                }
            }
            Some(Parsed { config, reply }) = parsed_rx.recv() => {
                let outcome = d.reload(config).await;
                if outcome.is_ok() {
                    d.notifier.reconfigure(d.config.hooks.clone());
                    d.start_track(&track_tx).await;
                    // New backends get their next hops now, not at the next 1 s refresh.
                    d.refresh_neighbours().await;
                }
                if let Some(reply) = reply {
                    let _ = reply.send(match outcome {
                        Ok(message) => Response::Ok { message },
                        Err(message) => Response::Error { message },
                    });
                }
            }
            Some(reply) = scrape_rx.recv() => { let _ = reply.send(d.scrape()); }
            Some(ev) = async { gossip_rx.as_mut()?.recv().await }, if gossip_rx.is_some() => d.on_gossip(ev).await,
            Some(ev) = async { watch_rx.as_mut()?.recv().await }, if watch_rx.is_some() => d.on_service_watch(ev),
            Some((node, ok)) = fence_rx.recv() => d.on_fence_result(node, ok).await,
            Some(ev) = track_rx.recv() => d.on_track(ev).await,
            _ = ownership_tick.tick(), if d.cluster.is_some() => d.ownership_tick().await,
            Some(facts) = neigh_rx.recv() => d.on_neighbours(facts),
            _ = neigh_tick.tick() => {
                d.refresh_neighbours_soon(&neigh_tx);
                d.drain_tick();
                d.restored_writer_tick();
                d.transition_tick();
                d.packet_debug_tick();
                if d.state_dirty {
                    d.save_state_soon();
                }
                health.set(d.readiness());
            }
            _ = selfcheck_tick.tick() => d.self_check().await,
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            _ = hup.recv() => d.parse_for_reload(&parsed_tx, None),
            // Last: only when nothing else is ready, and a piece at a time.
            _ = std::future::ready(()), if !d.pending_images.is_empty() => d.settle_images_some(),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
        // Whatever the event changed (quorum, health, standby, a reload), the routes of
        // `announce = "bgp"` VIPs follow; nothing to do without such VIPs.
        d.reconcile_routes().await;
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    health.set(Err("stopping".into()));
    d.withdraw_before_stop().await;
    d.settle_images();
    d.save_state();
    d.on_clean_stop().await;
    Ok(())
}

impl Daemon {
    async fn on_request(&mut self, req: Request) -> Response {
        // What a command reads or replaces (status' slot counts, a trace, an admin change's
        // previous table) is the image as the kernel has it.
        self.settle_images();
        match req {
            Request::Status => Response::Status(Box::new(self.status())),
            Request::Trace { src, vip, proto } => match self.trace(src, vip, &proto) {
                Ok(t) => Response::Trace(t),
                Err(message) => Response::Error { message },
            },
            Request::Backend {
                action,
                vip,
                backend,
                weight,
                timeout_ms,
            } => match self.admin(
                action,
                &vip,
                &backend,
                weight,
                timeout_ms.map(Duration::from_millis),
            ) {
                Ok(message) => Response::Ok { message },
                Err(message) => Response::Error { message },
            },
            Request::VipMove { vip, to } => match self.move_vip(&vip, &to).await {
                Ok(message) => Response::Ok { message },
                Err(message) => Response::Error { message },
            },
            Request::Node { standby, node } => match self.set_standby(standby, node).await {
                Ok(message) => Response::Ok { message },
                Err(message) => Response::Error { message },
            },
            Request::DebugPackets { on, vip, src } => match self.debug_packets(on, vip, src) {
                Ok(program_id) => Response::Debug { program_id },
                Err(message) => Response::Error { message },
            },
            Request::Leave => match self.leave().await {
                Ok(message) => Response::Ok { message },
                Err(message) => Response::Error { message },
            },
            // Parsed off the loop first: the loop's `call` branch sends it there.
            Request::Reload => Response::Error {
                message: "internal: a reload is parsed before it is applied".into(),
            },
        }
    }

    /// Runtime admin: drain, disable, enable, weight, promote. Visible in status at once.
    /// `drain_timeout`: `vipd backend drain --timeout` (drain only).
    fn admin(
        &mut self,
        action: AdminAction,
        vip: &str,
        backend: &str,
        weight: Option<u32>,
        drain_timeout: Option<Duration>,
    ) -> Result<String, String> {
        let now = Instant::now();
        let (v, b) = match self.backend_named(vip, backend) {
            Some((v, b)) => (v, b.index as usize),
            None if self.plan.vips.iter().any(|v| v.name == vip) => {
                return Err(format!("VIP {vip} has no backend named {backend:?}"));
            }
            None => return Err(format!("no VIP named {vip:?}")),
        };
        if drain_timeout.is_some() && action != AdminAction::Drain {
            return Err("`--timeout` only applies to `drain`".into());
        }
        let change = match action {
            AdminAction::Promote => return self.promote(v, b, now),
            AdminAction::Drain => AdminChange::Drain {
                timeout: drain_timeout,
            },
            AdminAction::Disable => AdminChange::Disable,
            AdminAction::Enable => AdminChange::Enable,
            AdminAction::Weight => {
                let w = weight.ok_or("`weight` needs a value")?;
                if w > 65_535 {
                    return Err(format!("weight {w} out of range 0..=65535"));
                }
                AdminChange::Weight(w)
            }
        };
        self.backend_input(Input::Admin {
            index: b as u32,
            change,
        });
        let rt = &self.backends[b];
        let mut summary = format!(
            "{vip}/{backend}: {} weight {}",
            rt.admin.as_str(),
            rt.weight
        );
        if let Some(d) = rt.drain.filter(|_| action == AdminAction::Drain) {
            let timeout = d.timeout(self.config.vips[v].drain_timeout);
            summary.push_str(&format!(
                ", established flows kept for {} from the start of the drain",
                crate::config::fmt_duration(timeout)
            ));
        }
        tracing::info!("admin: {summary}");
        Ok(summary)
    }

    /// `vipd backend promote`: hands a primary/backup VIP's single slot to backend `b`, which
    /// keeps it from then on while it is eligible (`core::writer`).
    fn promote(&mut self, v: usize, b: usize, now: Instant) -> Result<String, String> {
        let vp = &self.plan.vips[v];
        let (vip, pos) = (vp.name.clone(), self.locate_backend(b).1);
        let name = vp.backends[pos].conf.name.clone();
        if vp.selection != crate::config::Selection::PrimaryBackup {
            return Err(format!(
                "VIP {vip} is not primary-backup (selection = \"maglev\"): promote picks the \
                 single writer of a primary-backup VIP"
            ));
        }
        if vp.failback {
            return Err(format!(
                "VIP {vip} has failback = true: its slot always goes to the eligible backend \
                 with the lowest priority; remove failback to choose the writer by hand"
            ));
        }
        if let Some(why) = self.backends[b].ineligible_reason(&vp.backends[pos].conf) {
            return Err(format!(
                "cannot promote {vip}/{name}: {why}; only an eligible backend (up, enabled, \
                 weight > 0, reachable) can take the slot"
            ));
        }
        let before = self.current_writer(v);
        if before == Some(b as u32) {
            return Ok(format!("{vip}/{name} is already the writer"));
        }
        self.vips[v].writer = Some((b as u32, self.backends[b].serial));
        self.republish(v, Some(now));
        self.share_writer(v, true);
        self.save_state();
        let was = before.map_or("none".to_owned(), |i| {
            let (vi, p) = self.locate_backend(i as usize);
            self.plan.vips[vi].backends[p].conf.name.clone()
        });
        let summary = format!("{vip}/{name}: promoted to writer (was {was})");
        tracing::info!("admin: {summary}");
        Ok(summary)
    }

    /// Reads and checks the config file off the loop (a big file takes seconds: a `status`
    /// meanwhile waited for it); `parsed` brings it back to [`Daemon::reload`] with `reply`.
    pub fn parse_for_reload(
        &self,
        parsed: &mpsc::Sender<Parsed>,
        reply: Option<oneshot::Sender<Response>>,
    ) {
        let (opts, parsed) = (self.opts.clone(), parsed.clone());
        tokio::task::spawn_blocking(move || {
            let config = opts.load_config().map_err(|e| e.to_string());
            let _ = parsed.blocking_send(Parsed { config, reply });
        });
    }

    /// SIGHUP / `vipd reload`, with the file as parsed: a bad file leaves everything as it
    /// was and says why.
    pub async fn reload(&mut self, config: Result<Config, String>) -> Result<String, String> {
        // Positions and regions may change: no patch may be left for the old ones.
        self.settle_images();
        let outcome = match config {
            Ok(config) => self.apply_reload(config).await,
            Err(e) => Err(e),
        };
        let stamp = format!("{:.0}s after start", self.started.elapsed().as_secs_f64());
        match &outcome {
            Ok(m) => {
                tracing::info!("reload applied: {m}");
                self.last_reload = Some(format!("ok ({stamp}): {m}"));
            }
            Err(e) => {
                self.metrics.reload_failures.inc();
                tracing::error!("reload refused, still running the previous config:\n{e}");
                self.last_reload = Some(format!(
                    "REFUSED ({stamp}), still running the previous config: {e}"
                ));
            }
        }
        outcome
    }

    /// `/healthz`: Ok when the data plane is attached to every configured interface and
    /// every VIP has a published table, else Err saying what is missing.
    fn readiness(&self) -> Result<String, String> {
        let wanted = &self.config.node.interfaces;
        if wanted.is_empty() {
            return Err(
                "the data plane is attached to no interface (node.interfaces is empty)".into(),
            );
        }
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|w| !self.interfaces.iter().any(|(i, _)| i == *w))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the data plane is not attached to {}",
                missing.join(", ")
            ));
        }
        let unpublished: Vec<&str> = (self.plan.vips.iter().zip(&self.vips))
            .filter(|(_, rt)| rt.generation.is_none())
            .map(|(v, _)| v.name.as_str())
            .collect();
        if !unpublished.is_empty() {
            return Err(format!(
                "no table published for VIP {}",
                unpublished.join(", ")
            ));
        }
        Ok(format!(
            "data plane attached to {}; tables of {} VIPs published",
            wanted.join(", "),
            self.plan.vips.len()
        ))
    }

    fn scrape(&mut self) -> String {
        self.settle_images();
        self.refresh_metrics();
        self.metrics.encode()
    }
}

/// Real-time priority of the event loop's thread: below the heartbeat threads' 10
/// (`shell::heartbeat`), above everything at normal priority.
const LOOP_PRIORITY: i32 = 5;

/// SCHED_FIFO for the calling thread, which runs the event loop (`node.realtime`): a verdict
/// must go live in microseconds, and on a busy machine a normal thread woken by it waited for
/// a CPU for tens to hundreds of microseconds. The loop sleeps between events and runs each
/// briefly (long work goes in pieces: `tables::PendingImage`). Threads it starts do not
/// inherit it (`SCHED_RESET_ON_FORK`). Without the privilege, a warning and normal priority.
/// Whether it is real-time.
fn loop_priority() -> bool {
    let param = libc::sched_param {
        sched_priority: LOOP_PRIORITY,
    };
    let policy = libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK;
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "event loop not real-time: verdicts may wait for a CPU on a busy machine"
        );
        return false;
    }
    true
}

/// How long verdicts wait for the state file's write: a burst of them writes it once.
const SAVE_DELAY: Duration = Duration::from_millis(100);

/// Ready at `at`; at once when that is past (a timer rounds up to the next millisecond: a
/// write ahead in pieces took a millisecond per piece).
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) if at <= Instant::now() => {}
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// vipd's own resident memory, in bytes, at most a second old: [`measure_resident_bytes`] on
/// a thread of its own, since reading smaps walks the page tables of every mmapped table map
/// (milliseconds a `status` or a scrape held the loop for, verdicts queued behind it).
pub fn resident_bytes() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static RESIDENT: AtomicU64 = AtomicU64::new(0);
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        RESIDENT.store(measure_resident_bytes(), Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("vipd-rss".into())
            .spawn(|| loop {
                std::thread::sleep(Duration::from_secs(1));
                RESIDENT.store(measure_resident_bytes(), Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no thread to measure resident memory: it stays as first read");
        }
    });
    RESIDENT.load(Ordering::Relaxed)
}

/// VmRSS without the pages of the BPF maps vipd has mmapped (the table maps), which are
/// kernel memory counted in the maps' total.
pub fn measure_resident_bytes() -> u64 {
    let kib = |line: &str| {
        line.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(kib))
        .unwrap_or(0);
    let maps = std::fs::read_to_string("/proc/self/smaps")
        .map(|s| bpf_map_rss_kib(&s, kib))
        .unwrap_or(0);
    rss.saturating_sub(maps) * 1024
}

/// Sum of the `Rss:` lines of the mappings of BPF maps in an smaps text.
fn bpf_map_rss_kib(smaps: &str, kib: impl Fn(&str) -> u64) -> u64 {
    let mut in_map = false;
    let mut total = 0;
    for line in smaps.lines() {
        // A mapping's header starts with its address range; its fields are `Name: value`.
        let header = line.split_whitespace().next().is_some_and(|f| {
            f.contains('-') && f.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        });
        if header {
            in_map = line.ends_with("bpf-map");
        } else if in_map && line.starts_with("Rss:") {
            total += kib(line);
        }
    }
    total
}

/// Wall-clock milliseconds since the Unix epoch: drain starts must mean the same after a
/// restart of vipd, which `Instant` cannot.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ip_string(a: &IpAddr) -> String {
    a.to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_bpf_map_mappings_are_counted_as_maps() {
        let smaps = "\
55d0c0000000-55d0c0100000 r-xp 00000000 08:01 123 /usr/bin/vipd
Rss:                1024 kB
7f0000000000-7f0000400000 rw-s 00000000 00:0e 99 anon_inode:bpf-map
Rss:                 512 kB
Pss:                 512 kB
7f0000400000-7f0000401000 rw-s 00000000 00:0e 98 anon_inode:bpf-map
Rss:                   4 kB
7f0000500000-7f0000600000 rw-p 00000000 00:00 0
Rss:                 256 kB
";
        let kib = |l: &str| l.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert_eq!(super::bpf_map_rss_kib(smaps, kib), 516);
    }
}
