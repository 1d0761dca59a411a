//! vipd's metrics pass Prometheus' own checks (issue 14, item 3):
//! - a real single-node vipd's `/metrics` (asked for the Prometheus text format, as
//!   `curl -H 'Accept: text/plain'` in docs/operations.md) passes `promtool check metrics`;
//!   it has `vipd_build_info`, the process, admin state and weight families, and none of the
//!   cluster-only ones (`vipd_in_quorum` would be 0 and its alert would always fire);
//! - the alert rules in packaging/alerts.yml pass `promtool check rules` and their unit tests
//!   (`promtool test rules packaging/alerts.test.yml`).
//!
//! - a real three-node cluster's `/metrics` passes `promtool check metrics` too, with the
//!   cluster-only families (`vipd_in_quorum 1` once the cluster formed).
//!
//! promtool comes with the `prometheus` package (`cargo xtask setup`). Without it the tests
//! skip loudly, or fail under CI=true.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

mod common;

use common::{node_ip, Cluster};
use vip_tests::{privileged, vipd::Vipd, NetNs, PinDir};

const METRICS: &str = "127.0.0.1:9479";
const PACKAGING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging");

fn promtool(test: &str) -> bool {
    if Command::new("promtool").arg("--version").output().is_ok() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: promtool missing (package prometheus: cargo xtask setup)");
    }
    eprintln!("\n!!! SKIPPED {test}: no promtool; run `cargo xtask setup` !!!\n");
    false
}

/// Runs promtool with `args` in `dir`, `stdin` on its standard input: (success, output).
fn run_promtool(dir: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("promtool stdin");
    let out = child.wait_with_output().expect("promtool");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A namespace with a veth pair for vipd to attach to (`e0`, 10.79.0.2/24).
fn namespace() -> NetNs {
    vip_tests::veth_namespace("vmf", "10.79.0.2/24")
}

/// Two backends that do not exist (their probes fail: health does not matter here).
const CONFIG: &str = r#"
[node]
name = "lb"
interfaces = ["e0"]
pin_dir = "@PIN_DIR@"

[metrics]
listen = "127.0.0.1:9479"

[control]
socket = "@CONTROL@"

[defaults.check]
interval = "1s"
timeout = "200ms"

[[vip]]
name = "web"
address = "10.79.0.100"
port = 80
table_size = 251
check = { kind = "tcp" }

[[vip.backend]]
name = "b0"
address = "10.79.0.11"
weight = 3

[[vip.backend]]
name = "b1"
address = "10.79.0.12"
"#;

/// GET /metrics from inside `ns` with `Accept: accept`: (content type, body).
fn scrape(ns: &NetNs, accept: &str) -> (String, String) {
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: vipd\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    ns.run(move || {
        let addr: SocketAddr = METRICS.parse().expect("address");
        let limit = Duration::from_secs(5);
        let mut conn = TcpStream::connect_timeout(&addr, limit).expect("connect /metrics");
        conn.set_read_timeout(Some(limit)).expect("timeout");
        conn.write_all(request.as_bytes()).expect("request");
        let mut raw = String::new();
        conn.read_to_string(&mut raw).expect("answer");
        let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP head");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let content_type = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_default();
        (content_type, body.to_owned())
    })
}

/// The value of the series `name{labels}` (labels exactly as rendered), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn single_node_metrics_pass_promtool_and_have_no_cluster_families() {
    let test = "single_node_metrics_pass_promtool_and_have_no_cluster_families";
    if !privileged(test) || !promtool(test) {
        return;
    }
    let ns = namespace();
    let pins = PinDir::new();
    let vipd = Vipd::start(&ns, &pins, CONFIG);
    vipd.cli(&["backend", "drain", "web", "b1"])
        .expect("drain b1");

    let (content_type, text) = scrape(&ns, "text/plain; version=0.0.4");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let (ok, out) = run_promtool(Path::new("."), &["check", "metrics"], &text);
    assert!(ok, "promtool check metrics: {out}\n{text}");
    // What Prometheus itself asks for stays OpenMetrics.
    let (content_type, om) = scrape(
        &ns,
        "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3",
    );
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");

    for absent in [
        "vipd_in_quorum",
        "vipd_members_alive",
        "vipd_vip_owned",
        "vipd_vip_epoch",
        "vipd_gossip_rejected",
        "vipd_fencing_failures",
        "vipd_member_down_events",
        "vipd_local_health",
    ] {
        assert!(
            !text.lines().any(|l| l.starts_with(absent)),
            "{absent} exported by a single node:\n{text}"
        );
    }
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(&text, &format!("vipd_build_info{{version=\"{version}\"}}")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "vipd_backend_weight{vip=\"web\",backend=\"b0\"}"),
        Some(3.0),
        "{text}"
    );
    for (backend, state, want) in [
        ("b0", "enabled", 1.0),
        ("b0", "drained", 0.0),
        ("b1", "enabled", 0.0),
        ("b1", "drained", 1.0),
        ("b1", "disabled", 0.0),
    ] {
        let series =
            format!("vipd_backend_admin{{vip=\"web\",backend=\"{backend}\",state=\"{state}\"}}");
        assert_eq!(value(&text, &series), Some(want), "{series}\n{text}");
    }
    let pid = vipd.pid().expect("vipd pid");
    let fds = value(&text, "vipd_process_open_fds").expect("open fds");
    let real = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()) as f64;
    assert!(fds >= 5.0 && (fds - real).abs() <= 5.0, "{fds} vs {real}");
    let start = value(&text, "vipd_process_start_time_seconds").expect("start time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        start <= now + 1.0 && start > now - 120.0,
        "{start} vs {now}"
    );
    assert!(
        value(&text, "vipd_process_cpu_seconds_total").is_some_and(|s| s >= 0.0),
        "{text}"
    );
    assert!(
        value(&text, "vipd_resident_memory_bytes").is_some_and(|b| b > 1e6),
        "{text}"
    );

    // Counters keep passing once they moved (a second scrape, a second later).
    std::thread::sleep(Duration::from_secs(1));
    let (_, text) = scrape(&ns, "text/plain");
    let (ok, out) = run_promtool(Path::new("."), &["check", "metrics"], &text);
    assert!(ok, "promtool check metrics (second scrape): {out}\n{text}");
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let test = "alert_rules_pass_promtool_and_their_unit_tests";
    if !promtool(test) {
        return;
    }
    let dir = Path::new(PACKAGING);
    let (ok, out) = run_promtool(dir, &["check", "rules", "alerts.yml"], "");
    assert!(ok, "promtool check rules: {out}");
    assert!(out.contains("SUCCESS: 5 rules found"), "{out}");
    let (ok, out) = run_promtool(dir, &["test", "rules", "alerts.test.yml"], "");
    assert!(ok, "promtool test rules: {out}");
}

/// Every `vipd_*` family named in `text` (PromQL), less the exposition suffixes.
fn families_used(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("vipd_") {
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_owned();
        out.push(base);
    }
    out
}

/// The families documented in docs/operations.md (kept equal to the registry by
/// vip-daemon/tests/docs.rs).
fn documented_families() -> Vec<String> {
    let ops = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/operations.md"
    ))
    .expect("docs/operations.md");
    ops.lines()
        .filter_map(|l| l.strip_prefix("| `vipd_"))
        .filter_map(|l| Some(format!("vipd_{}", l.split_once('`')?.0)))
        .collect()
}

#[test]
fn dashboard_and_alerts_query_only_real_families_in_valid_promql() {
    let test = "dashboard_and_alerts_query_only_real_families_in_valid_promql";
    let documented = documented_families();
    assert!(documented.len() > 20, "{documented:?}");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(PACKAGING).join("grafana-dashboard.json"))
            .expect("grafana-dashboard.json"),
    )
    .expect("dashboard JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().expect("expr").to_owned())
        .collect();
    assert!(exprs.len() >= 5, "{exprs:?}");
    let alerts = std::fs::read_to_string(Path::new(PACKAGING).join("alerts.yml")).expect("alerts");
    let mut unknown = Vec::new();
    for text in exprs.iter().map(String::as_str).chain([alerts.as_str()]) {
        for name in families_used(text) {
            if !documented.contains(&name) {
                unknown.push(name);
            }
        }
    }
    assert!(unknown.is_empty(), "not vipd families: {unknown:?}");
    // The dashboard's queries parse: promtool checks them as recording rules.
    if !promtool(test) {
        return;
    }
    let dir = std::env::temp_dir().join(vip_tests::unique("vipd-dash-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:expr{i}\n        expr: {}\n",
            serde_json::to_string(e).expect("quoted")
        ));
    }
    std::fs::write(dir.join("dashboard.yml"), &rules).expect("write rules");
    let (ok, out) = run_promtool(&dir, &["check", "rules", "dashboard.yml"], "");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "dashboard queries: {out}\n{rules}");
}

#[test]
fn cluster_metrics_pass_promtool_with_the_cluster_families() {
    let test = "cluster_metrics_pass_promtool_with_the_cluster_families";
    if !privileged(test) || !promtool(test) {
        return;
    }
    let cluster = Cluster::start("");
    cluster.wait_single_owner(Duration::from_secs(20));
    for i in 0..cluster.nodes.len() {
        let url = format!("http://{}:9100/metrics", node_ip(i));
        let text = cluster
            .client()
            .ns
            .exec(&["curl", "-sf", "-H", "Accept: text/plain", &url]);
        let (ok, out) = run_promtool(Path::new("."), &["check", "metrics"], &text);
        assert!(ok, "node {i}: promtool check metrics: {out}\n{text}");
        assert_eq!(
            value(&text, "vipd_in_quorum"),
            Some(1.0),
            "node {i}:\n{text}"
        );
        assert_eq!(
            value(&text, "vipd_members_alive"),
            Some(3.0),
            "node {i}:\n{text}"
        );
        assert!(
            // (vipd_gossip_rejected has no series before the first rejection.)
            text.contains("# TYPE vipd_vip_epoch gauge"),
            "node {i}:\n{text}"
        );
    }
}
