//! Prometheus metrics (prometheus-client) and the HTTP endpoint (hyper) serving them and
//! `/healthz`. Data-plane counters are read from the per-CPU maps at scrape time by the event
//! loop, which owns the maps; this module only holds the registry and speaks HTTP.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::{
    net::SocketAddr,
    sync::{atomic::AtomicU64, Arc, Mutex},
    time::Duration,
};

use hyper::{
    header::{self, HeaderValue},
    Method, Request, Response, StatusCode,
};
use tokio::sync::{mpsc, oneshot};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VipLabels {
    pub vip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub vip: String,
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// How a run of the notify hook ended: ok, failed, timed_out or dropped (queue full).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// A backend's admin state: one series per state, 1 for the current one.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdminLabels {
    pub vip: String,
    pub backend: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
}

/// One check of the self-check (`core::selfcheck::CHECKS`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub check: String,
}

/// What the flow table did (`vip_common::maps::flow_stat::NAMES`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlowLabels {
    pub result: String,
}

/// Every metric vipd exports. The cluster-only families live in their own registry, rendered
/// only once [`Metrics::set_cluster_mode`] was called: a single node exports no
/// `vipd_in_quorum 0`.
pub struct Metrics {
    pub registry: Registry,
    cluster_registry: Registry,
    cluster_mode: bool,
    /// 1, labelled with vipd's version.
    pub build_info: Family<BuildLabels, Gauge>,
    /// Admin state per backend: `state` = enabled, drained, disabled; 1 for the current one.
    pub backend_admin: Family<AdminLabels, Gauge>,
    /// Runtime weight per backend (config or control socket).
    pub backend_weight: Family<BackendLabels, Gauge>,
    pub backend_state_since: Family<BackendLabels, Gauge<f64, AtomicU64>>,
    pub process_open_fds: Gauge,
    pub process_start_time: Gauge<f64, AtomicU64>,
    pub process_cpu_seconds: Counter<f64, AtomicU64>,
    pub vip_packets: Family<VipLabels, Counter>,
    pub vip_bytes: Family<VipLabels, Counter>,
    pub backend_packets: Family<BackendLabels, Counter>,
    pub backend_bytes: Family<BackendLabels, Counter>,
    /// 1 when the backend is up (health verdict), 0 when down.
    pub backend_up: Family<BackendLabels, Gauge>,
    /// 1 when the backend is in the live table (up, enabled, neighbour resolved).
    pub backend_live: Family<BackendLabels, Gauge>,
    /// 1 while flap damping holds the backend down.
    pub backend_flapping: Family<BackendLabels, Gauge>,
    /// Up<->Down transitions of the backend's probe health (rise/fall).
    pub backend_transitions: Family<BackendLabels, Counter>,
    /// Drained backends only: flow table entries still made for them.
    pub backend_drain_flows: Family<BackendLabels, Gauge>,
    /// Flow table lookups by result (hit, miss_new, miss_midstream, stale, previous).
    pub flow_table: Family<FlowLabels, Counter>,
    /// Sockets of this node's own clients the local-client programs handled, by result
    /// (backend, local, second_chance, unbalanced).
    pub local_clients: Family<FlowLabels, Counter>,
    pub probe_latency: Family<BackendLabels, Histogram>,
    pub probe_failures: Family<BackendLabels, Counter>,
    pub publishes: Family<VipLabels, Counter>,
    pub verdict_to_live: Histogram,
    pub reasons_packets: Family<ReasonLabels, Counter>,
    pub resident_bytes: Gauge,
    pub map_bytes: Gauge,
    pub reload_failures: Counter,
    /// Cluster mode: 1 while this node is in quorum.
    pub in_quorum: Gauge,
    pub members_alive: Gauge,
    /// 1 when this node holds the VIP address (valid lease).
    pub vip_owned: Family<VipLabels, Gauge>,
    pub vip_epoch: Family<VipLabels, Gauge>,
    pub gossip_rejected: Family<ReasonLabels, Counter>,
    pub fencing_failures: Counter,
    pub member_down_events: Counter,
    pub local_health: Gauge,
    pub service_gone: Counter,
    /// 1 while this node is in service (no standby, no failed track condition).
    pub node_in_service: Gauge,
    pub notify_runs: Family<OutcomeLabels, Counter>,
    /// Self-check mismatches found, by check.
    pub selfcheck_mismatches: Family<CheckLabels, Counter>,
    /// 1 when the last self-check found nothing (or none ran yet).
    pub selfcheck_ok: Gauge,
}

fn probe_histogram() -> Histogram {
    // 0.1 ms .. ~3.3 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 16,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("vipd");
        let mut cluster = Registry::with_prefix("vipd");
        let m = Self {
            cluster_registry: Registry::default(),
            cluster_mode: false,
            build_info: Family::default(),
            backend_admin: Family::default(),
            backend_weight: Family::default(),
            backend_state_since: Family::default(),
            process_open_fds: Gauge::default(),
            process_start_time: Gauge::default(),
            process_cpu_seconds: Counter::default(),
            vip_packets: Family::default(),
            vip_bytes: Family::default(),
            backend_packets: Family::default(),
            backend_bytes: Family::default(),
            backend_up: Family::default(),
            backend_live: Family::default(),
            backend_flapping: Family::default(),
            backend_transitions: Family::default(),
            backend_drain_flows: Family::default(),
            flow_table: Family::default(),
            local_clients: Family::default(),
            probe_latency: Family::new_with_constructor(probe_histogram),
            probe_failures: Family::default(),
            publishes: Family::default(),
            // 1 us .. ~65 ms
            verdict_to_live: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.000_001, 2.0, 17),
            ),
            reasons_packets: Family::default(),
            resident_bytes: Gauge::default(),
            map_bytes: Gauge::default(),
            reload_failures: Counter::default(),
            in_quorum: Gauge::default(),
            members_alive: Gauge::default(),
            vip_owned: Family::default(),
            vip_epoch: Family::default(),
            gossip_rejected: Family::default(),
            fencing_failures: Counter::default(),
            member_down_events: Counter::default(),
            local_health: Gauge::default(),
            service_gone: Counter::default(),
            node_in_service: Gauge::default(),
            notify_runs: Family::default(),
            selfcheck_mismatches: Family::default(),
            selfcheck_ok: Gauge::default(),
            registry: Registry::default(),
        };
        r.register(
            "vip_packets",
            "Packets balanced per VIP (data plane)",
            m.vip_packets.clone(),
        );
        r.register(
            "vip_bytes",
            "Bytes balanced per VIP (data plane)",
            m.vip_bytes.clone(),
        );
        r.register(
            "backend_packets",
            "Packets sent to each backend (data plane)",
            m.backend_packets.clone(),
        );
        r.register(
            "backend_bytes",
            "Bytes sent to each backend (data plane)",
            m.backend_bytes.clone(),
        );
        r.register(
            "backend_up",
            "Health verdict: 1 up, 0 down",
            m.backend_up.clone(),
        );
        r.register(
            "backend_live",
            "1 when the backend is in the live table",
            m.backend_live.clone(),
        );
        r.register(
            "backend_flapping",
            "1 while flap damping holds the backend down",
            m.backend_flapping.clone(),
        );
        r.register(
            "backend_transitions",
            "Up/down transitions of the backend's probe health",
            m.backend_transitions.clone(),
        );
        r.register(
            "backend_drain_flows",
            "Drained backends: flow table entries still kept for them",
            m.backend_drain_flows.clone(),
        );
        r.register(
            "flow_table_lookups",
            "Flow table results for packets of VIPs using it: hit, miss_new, miss_midstream, stale, previous",
            m.flow_table.clone(),
        );
        r.register(
            "local_client_sockets",
            "Sockets of this node's own clients connecting or sending to a VIP, by result: backend, local, second_chance, unbalanced",
            m.local_clients.clone(),
        );
        r.register(
            "probe_latency_seconds",
            "Health probe latency",
            m.probe_latency.clone(),
        );
        r.register(
            "probe_failures",
            "Failed health probes",
            m.probe_failures.clone(),
        );
        r.register(
            "table_publishes",
            "Maglev tables published per VIP",
            m.publishes.clone(),
        );
        r.register(
            "verdict_to_live_seconds",
            "Time from a health verdict or admin change to the new table being live",
            m.verdict_to_live.clone(),
        );
        r.register(
            "dataplane_packets",
            "Data-plane packets by reason",
            m.reasons_packets.clone(),
        );
        r.register(
            "resident_memory_bytes",
            "vipd resident memory",
            m.resident_bytes.clone(),
        );
        r.register(
            "map_memory_bytes",
            "Kernel memory of the BPF maps",
            m.map_bytes.clone(),
        );
        r.register(
            "reload_failures",
            "Config reloads refused",
            m.reload_failures.clone(),
        );
        for check in crate::core::selfcheck::CHECKS {
            drop(m.selfcheck_mismatches.get_or_create(&CheckLabels {
                check: check.into(),
            }));
        }
        m.selfcheck_ok.set(1);
        r.register(
            "selfcheck_mismatches",
            "Mismatches the periodic self-check found between what runs and what should, by check",
            m.selfcheck_mismatches.clone(),
        );
        r.register(
            "selfcheck_ok",
            "1 when the last self-check found nothing to repair (or none ran yet), else 0",
            m.selfcheck_ok.clone(),
        );
        r.register(
            "local_service_gone",
            "Local backend services seen losing their socket (sock_diag), each taken out at once",
            m.service_gone.clone(),
        );
        r.register(
            "node_in_service",
            "1 while this node is in service (not standby, no failed track condition)",
            m.node_in_service.clone(),
        );
        r.register(
            "notify_hook_runs",
            "Runs of the [hooks] notify command by outcome (ok, failed, timed_out, dropped)",
            m.notify_runs.clone(),
        );
        // Cluster mode only.
        {
            let r = &mut cluster;
            r.register(
                "in_quorum",
                "Cluster mode: 1 while this node is in a quorum of voters",
                m.in_quorum.clone(),
            );
            r.register(
                "members_alive",
                "Cluster members this node sees alive, itself included",
                m.members_alive.clone(),
            );
            r.register(
                "vip_owned",
                "1 while this node owns the VIP address (valid lease)",
                m.vip_owned.clone(),
            );
            r.register(
                "vip_epoch",
                "Ownership epoch of each VIP as this node knows it",
                m.vip_epoch.clone(),
            );
            r.register(
                "gossip_rejected",
                "Gossip datagrams rejected (forged, replayed, ...) and items skipped (unknown_item, ...)",
                m.gossip_rejected.clone(),
            );
            r.register(
                "fencing_failures",
                "Fencing hook runs that failed or timed out (no takeover followed)",
                m.fencing_failures.clone(),
            );
            r.register(
                "member_down_events",
                "Members this node saw declared down (each one can move VIPs)",
                m.member_down_events.clone(),
            );
            r.register(
                "local_health",
                "Lifeguard local health score: 0 healthy, more = own timers late, slower verdicts",
                m.local_health.clone(),
            );
        }
        r.register(
            "build_info",
            "vipd's version: always 1",
            m.build_info.clone(),
        );
        r.register(
            "backend_admin",
            "Admin state of the backend: 1 for the current state (enabled, drained, disabled), 0 for the others",
            m.backend_admin.clone(),
        );
        r.register(
            "backend_weight",
            "Runtime weight of the backend",
            m.backend_weight.clone(),
        );
        r.register(
            "backend_state_change_timestamp_seconds",
            "When the backend's health or admin state last changed (Unix seconds; vipd's start at the earliest)",
            m.backend_state_since.clone(),
        );
        r.register(
            "process_open_fds",
            "File descriptors vipd has open",
            m.process_open_fds.clone(),
        );
        r.register(
            "process_start_time_seconds",
            "When vipd started, in seconds since the Unix epoch",
            m.process_start_time.clone(),
        );
        r.register(
            "process_cpu_seconds",
            "User and system CPU time vipd used",
            m.process_cpu_seconds.clone(),
        );
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        m.process_start_time.set(process_start_time());
        Self {
            registry: r,
            cluster_registry: cluster,
            ..m
        }
    }
}

impl Metrics {
    /// The OpenMetrics text of every family, the cluster ones in cluster mode only.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text;
        let mut out = String::new();
        let _ = text::encode_registry(&mut out, &self.registry);
        if self.cluster_mode {
            let _ = text::encode_registry(&mut out, &self.cluster_registry);
        }
        let _ = text::encode_eof(&mut out);
        out
    }

    /// Renders the cluster-only families from now on.
    pub fn set_cluster_mode(&mut self) {
        self.cluster_mode = true;
    }

    /// Reads the process metrics from /proc/self (resident memory is set by the caller).
    pub fn refresh_process(&self) {
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // Less the descriptor of the directory being read.
            self.process_open_fds.set((dir.count() as i64 - 1).max(0));
        }
        if let Some(ticks) = proc_self_stat().and_then(|f| Some(f.get(11)? + f.get(12)?)) {
            let secs = ticks as f64 / clock_ticks();
            let now = self.process_cpu_seconds.get();
            if secs > now {
                self.process_cpu_seconds.inc_by(secs - now);
            }
        }
    }
}

/// /proc/self/stat's fields after the command name, as numbers: index i is proc(5)'s field
/// i + 3 (the state, field 3, reads as 0), so utime (14) is index 11, starttime (22) 19.
fn proc_self_stat() -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The process start time (proc(5) field 22 and the boot time), or now.
fn process_start_time() -> f64 {
    let from_proc = || -> Option<f64> {
        let start_ticks = *proc_self_stat()?.get(19)?;
        let btime: f64 = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some(btime + start_ticks as f64 / clock_ticks())
    };
    from_proc().unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
    })
}

/// The Prometheus text format 0.0.4 of [`Metrics::encode`]'s OpenMetrics text, for clients
/// that ask for `text/plain` (and `promtool check metrics`): counter families are named
/// with their `_total` suffix, `# UNIT` and `# EOF` lines go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Brings a monotonic counter up to `value` (data-plane counters are read as totals).
pub fn counter_to(c: &Counter, value: u64) {
    let now = c.get();
    if value > now {
        c.inc_by(value - now);
    }
}

/// Content type of [`Metrics::encode`]'s text: prometheus-client writes OpenMetrics 1.0.0
/// (with `# EOF`), not the Prometheus 0.0.4 text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of [`to_prometheus_text`]'s text, served when the request's `Accept` names
/// `text/plain` and not OpenMetrics.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";
/// A request's headers must arrive within this long, the first one's counted from the
/// connection's opening and the next one's from the previous answer: idle keep-alive
/// connections and slow senders are closed after it.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection is asked to close after this long whatever it does (a client that does not
/// read its answers), and dropped 5 s later.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);
/// How long a scrape waits for the event loop.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog. Keeps file descriptors for
/// the probes and the data plane when something opens connections by the hundred.
pub const MAX_CONNECTIONS: usize = 128;

/// What `/healthz` says: set by the daemon, read by the HTTP server. Starts "not ready".
#[derive(Clone)]
pub struct Health(Arc<Mutex<Result<String, String>>>);

impl Default for Health {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Err(
            "starting: the data plane is not attached yet".into(),
        ))))
    }
}

impl Health {
    /// Ok(what is fine) answers 200, Err(why not) 503; the text is the body.
    pub fn set(&self, state: Result<String, String>) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if *now != state {
            match &state {
                Ok(why) => tracing::info!("healthz: ok: {why}"),
                Err(why) => tracing::warn!("healthz: not ready: {why}"),
            }
            *now = state;
        }
    }

    pub fn get(&self) -> Result<String, String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Binds the metrics listener (a taken port is the caller's start failure, not a log line).
pub async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context as _;
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("metrics listener {listen} ([metrics] listen)"))
}

/// Serves `/metrics` (GET, HEAD; each scrape asks the event loop for fresh text) and
/// `/healthz` on the listener from [`bind`], over HTTP/1.1 (hyper). Runs until the process
/// ends: accept errors are waited out.
pub async fn serve(
    listener: tokio::net::TcpListener,
    scrapes: mpsc::Sender<oneshot::Sender<String>>,
    health: Health,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut errors = crate::shell::control::AcceptErrors::new("metrics");
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                errors.failed(&e).await;
                continue;
            }
        };
        errors.accepted();
        let (scrapes, health) = (scrapes.clone(), health.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (scrapes, health) = (scrapes.clone(), health.clone());
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &scrapes, &health).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(16 * 1024)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = tokio::time::sleep(MAX_CONNECTION_AGE) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
            drop(slot);
        });
    }
}

type Body = http_body_util::Full<bytes::Bytes>;

fn response(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let mut r = Response::new(Body::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// Routes one request. HEAD gets GET's headers (hyper leaves the body out).
async fn answer<B>(
    req: &Request<B>,
    scrapes: &mpsc::Sender<oneshot::Sender<String>>,
    health: &Health,
) -> Response<Body> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/healthz") {
        return response(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: vipd serves /metrics and /healthz\n".into(),
        );
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = response(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "method not allowed: GET or HEAD\n".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == "/healthz" {
        return match health.get() {
            Ok(why) => response(StatusCode::OK, TEXT, format!("ok: {why}\n")),
            Err(why) => response(
                StatusCode::SERVICE_UNAVAILABLE,
                TEXT,
                format!("not ready: {why}\n"),
            ),
        };
    }
    let accept = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
        .to_ascii_lowercase();
    let prometheus_text = accept.contains("text/plain") && !accept.contains("openmetrics");
    let (tx, rx) = oneshot::channel();
    let scraped = async {
        scrapes.send(tx).await.ok()?;
        rx.await.ok()
    };
    match tokio::time::timeout(SCRAPE_TIMEOUT, scraped).await {
        Ok(Some(text)) if prometheus_text => {
            response(StatusCode::OK, PROMETHEUS_TEXT, to_prometheus_text(&text))
        }
        Ok(Some(text)) => response(StatusCode::OK, CONTENT_TYPE, text),
        Ok(None) => response(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "vipd is shutting down\n".into(),
        ),
        Err(_) => response(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            format!(
                "vipd's event loop did not answer within {} s\n",
                SCRAPE_TIMEOUT.as_secs()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Routes `method path` with an event loop that scrapes "# EOF\n": (status, content
    /// type, body).
    async fn route(method: &str, path: &str, health: &Health) -> (StatusCode, String, String) {
        let (tx, mut rx) = mpsc::channel::<oneshot::Sender<String>>(1);
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send("# EOF\n".into());
            }
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .expect("request");
        let r = answer(&req, &tx, health).await;
        let status = r.status();
        let content_type = r
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = http_body_util::BodyExt::collect(r.into_body())
            .await
            .expect("body")
            .to_bytes();
        (
            status,
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn exactly_metrics_and_healthz_with_their_content_types() {
        let health = Health::default();
        for method in ["GET", "HEAD"] {
            let (status, ct, body) = route(method, "/metrics", &health).await;
            assert_eq!((status, ct.as_str()), (StatusCode::OK, CONTENT_TYPE));
            assert_eq!(body, "# EOF\n");
        }
        let (status, ..) = route("GET", "/metrics?name[]=x", &health).await;
        assert_eq!(status, StatusCode::OK);
        for path in ["/", "/metricsx", "/metrics/", "/metrics/x", "/healthz/x"] {
            let (status, ..) = route("GET", path, &health).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        }
        for method in ["POST", "PUT", "DELETE"] {
            let (status, ..) = route(method, "/metrics", &health).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        }
    }

    #[tokio::test]
    async fn healthz_follows_the_shared_state() {
        let health = Health::default();
        let (status, ct, body) = route("GET", "/healthz", &health).await;
        assert_eq!(
            (status, ct.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, TEXT)
        );
        assert!(body.starts_with("not ready: starting"), "{body}");
        health.set(Ok("data plane attached to eth0".into()));
        let (status, _, body) = route("HEAD", "/healthz", &health).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "ok: data plane attached to eth0\n");
        health.set(Err("no table published for VIP web".into()));
        let (status, _, body) = route("GET", "/healthz", &health).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready: no table published for VIP web\n");
    }

    /// Every family with a label set, as after a cluster node's first scrape.
    fn populated(cluster: bool) -> Metrics {
        let mut m = Metrics::default();
        let vip = VipLabels { vip: "web".into() };
        let be = BackendLabels {
            vip: "web".into(),
            backend: "b0".into(),
        };
        let reason = ReasonLabels {
            reason: "forged".into(),
        };
        m.vip_packets.get_or_create(&vip).inc();
        m.vip_bytes.get_or_create(&vip).inc();
        m.backend_packets.get_or_create(&be).inc();
        m.backend_bytes.get_or_create(&be).inc();
        m.backend_up.get_or_create(&be).set(1);
        m.backend_live.get_or_create(&be).set(1);
        m.backend_flapping.get_or_create(&be).set(0);
        m.backend_transitions.get_or_create(&be).inc();
        m.backend_drain_flows.get_or_create(&be).set(3);
        m.backend_weight.get_or_create(&be).set(100);
        m.backend_admin
            .get_or_create(&AdminLabels {
                vip: "web".into(),
                backend: "b0\"\\x".into(),
                state: "enabled".into(),
            })
            .set(1);
        m.flow_table
            .get_or_create(&FlowLabels {
                result: "hit".into(),
            })
            .inc();
        m.local_clients
            .get_or_create(&FlowLabels {
                result: "backend".into(),
            })
            .inc();
        m.probe_latency.get_or_create(&be).observe(0.001);
        m.probe_failures.get_or_create(&be).inc();
        m.publishes.get_or_create(&vip).inc();
        m.reasons_packets.get_or_create(&reason).inc();
        m.vip_owned.get_or_create(&vip).set(1);
        m.vip_epoch.get_or_create(&vip).set(2);
        m.gossip_rejected.get_or_create(&reason).inc();
        m.refresh_process();
        if cluster {
            m.set_cluster_mode();
        }
        m
    }

    fn families(text: &str) -> Vec<String> {
        text.lines()
            .filter_map(|l| Some(l.strip_prefix("# TYPE ")?.split(' ').next()?.to_owned()))
            .collect()
    }

    #[test]
    fn cluster_families_only_in_cluster_mode() {
        let single = families(&populated(false).encode());
        let cluster = families(&populated(true).encode());
        for name in [
            "vipd_in_quorum",
            "vipd_members_alive",
            "vipd_vip_owned",
            "vipd_gossip_rejected",
        ] {
            assert!(!single.iter().any(|f| f == name), "{name} in single mode");
            assert!(
                cluster.iter().any(|f| f == name),
                "{name} missing in cluster mode"
            );
        }
        for name in [
            "vipd_build_info",
            "vipd_backend_admin",
            "vipd_backend_weight",
            "vipd_process_open_fds",
            "vipd_process_start_time_seconds",
            "vipd_process_cpu_seconds",
            "vipd_resident_memory_bytes",
        ] {
            assert!(single.iter().any(|f| f == name), "{name} missing");
        }
        let text = populated(false).encode();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!("vipd_build_info{{version=\"{version}\"}} 1\n")),
            "{text}"
        );
    }

    #[test]
    fn process_metrics_read_proc_self() {
        let m = populated(false);
        assert!(
            m.process_open_fds.get() >= 3,
            "{}",
            m.process_open_fds.get()
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let start = m.process_start_time.get();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
    }

    #[test]
    fn prometheus_text_names_counters_with_total_and_has_no_eof() {
        let text = to_prometheus_text(&populated(true).encode());
        assert!(
            text.contains("# TYPE vipd_vip_packets_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# HELP vipd_vip_packets_total "), "{text}");
        assert!(text.contains("# TYPE vipd_backend_up gauge\n"), "{text}");
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    /// `promtool check metrics` (package prometheus, `cargo xtask setup`) accepts the
    /// Prometheus text of every family in both modes. Without promtool: skipped loudly, a
    /// failure under CI=true.
    #[test]
    fn promtool_accepts_the_prometheus_text() {
        use std::io::Write as _;
        let Ok(version) = std::process::Command::new("promtool")
            .arg("--version")
            .output()
        else {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool missing: cargo xtask setup"
            );
            eprintln!("SKIPPED promtool_accepts_the_prometheus_text: no promtool");
            return;
        };
        assert!(version.status.success());
        for cluster in [false, true] {
            let text = to_prometheus_text(&populated(cluster).encode());
            let mut child = std::process::Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("promtool");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write");
            let out = child.wait_with_output().expect("promtool");
            assert!(
                out.status.success(),
                "cluster={cluster}: promtool: {}{}\n{text}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    #[tokio::test]
    async fn accept_text_plain_gets_prometheus_text() {
        let (tx, mut rx) = mpsc::channel::<oneshot::Sender<String>>(1);
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send(Metrics::default().encode());
            }
        });
        for (accept, want) in [
            ("text/plain; version=0.0.4", PROMETHEUS_TEXT),
            ("text/plain", PROMETHEUS_TEXT),
            (
                "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3",
                CONTENT_TYPE,
            ),
            ("*/*", CONTENT_TYPE),
        ] {
            let req = Request::builder()
                .uri("/metrics")
                .header(header::ACCEPT, accept)
                .body(())
                .expect("request");
            let r = answer(&req, &tx, &Health::default()).await;
            assert_eq!(r.headers()[header::CONTENT_TYPE], want, "{accept}");
            let body = http_body_util::BodyExt::collect(r.into_body())
                .await
                .expect("body")
                .to_bytes();
            let body = String::from_utf8_lossy(&body);
            assert_eq!(
                body.contains("# EOF"),
                want == CONTENT_TYPE,
                "{accept}: {body}"
            );
        }
    }
}
