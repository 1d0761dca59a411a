//! Prometheus metrics (prometheus-client) and the tiny HTTP endpoint serving them. Data-plane
//! counters are read from the per-CPU maps at scrape time by the event loop, which owns the
//! maps; this module only holds the registry and speaks HTTP.
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::{mpsc, oneshot},
};

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

/// What the flow table did (`vip_common::maps::flow_stat::NAMES`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlowLabels {
    pub result: String,
}

/// Every metric vipd exports.
pub struct Metrics {
    pub registry: Registry,
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
    /// Flow table lookups by result (hit, miss_new, miss_midstream, stale).
    pub flow_table: Family<FlowLabels, Counter>,
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
        let m = Self {
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
            "Flow table results for packets of VIPs using it: hit, miss_new, miss_midstream, stale",
            m.flow_table.clone(),
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
            "Gossip datagrams rejected (forged, replayed, truncated, ...)",
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
        r.register(
            "local_service_gone",
            "Local backend services seen losing their socket (sock_diag), each taken out at once",
            m.service_gone.clone(),
        );
        Self { registry: r, ..m }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Brings a monotonic counter up to `value` (data-plane counters are read as totals).
pub fn counter_to(c: &Counter, value: u64) {
    let now = c.get();
    if value > now {
        c.inc_by(value - now);
    }
}

/// Serves `GET /metrics` on `listen`; each scrape asks the event loop for fresh text.
pub async fn serve(
    listen: std::net::SocketAddr,
    scrapes: mpsc::Sender<oneshot::Sender<String>>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    loop {
        let (mut conn, _) = listener.accept().await?;
        let scrapes = scrapes.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = conn.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if req.starts_with("GET /metrics") {
                let (tx, rx) = oneshot::channel();
                let _ = scrapes.send(tx).await;
                ("200 OK", rx.await.unwrap_or_default())
            } else {
                ("404 Not Found", "try /metrics\n".to_owned())
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
        });
    }
}
