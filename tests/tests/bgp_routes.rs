//! `announce = "bgp"`, the kernel side (issue 18, without a router yet): one vipd keeps a
//! blackhole host route per routed VIP (IPv4 and IPv6) in `[bgp] table`, tagged with
//! `[bgp] protocol`, exactly while it may serve it: a backend up, the node in service. A
//! crashed vipd's routes are adopted by the next one without a withdraw; a clean stop
//! withdraws them first and waits (observed) until no packet for them arrives.
use std::{
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, Instant},
};

use vip_tests::{privileged, servers, vipd::Vipd, Lan, PinDir};

const TABLE: &str = "333";
const PROTO: &str = "77";

fn config(iface: &str) -> String {
    format!(
        r#"
[node]
name = "lb"
interfaces = ["{iface}"]
pin_dir = "@PIN_DIR@"

[control]
socket = "@CONTROL@"

[metrics]
listen = "off"

[bgp]
table = {TABLE}
protocol = {PROTO}
withdraw_quiet = "200ms"
withdraw_max = "3s"

[defaults.check]
interval = "100ms"
timeout = "100ms"
rise = 2
fall = 2
jitter = 0.0

[[vip]]
name = "web"
address = "10.77.0.100"
port = 80
announce = "bgp"
table_size = 251
check = {{ kind = "tcp" }}
[[vip.backend]]
name = "b1"
address = "10.77.0.12"

[[vip]]
name = "web6"
address = "fd77::64"
port = 80
announce = "bgp"
table_size = 251
check = {{ kind = "tcp" }}
[[vip.backend]]
name = "b1"
address = "fd77::c"

[[vip]]
name = "plain"
address = "10.77.0.101"
port = 80
table_size = 251
[[vip.backend]]
name = "b1"
address = "10.77.0.12"
"#
    )
}

/// The routed VIPs vipd's routes hold now, both families, in the table with its protocol.
fn routes(lb: &vip_tests::NetNs) -> Vec<String> {
    let mut out = Vec::new();
    for family in ["-4", "-6"] {
        // A table with no route left does not exist: `ip` then fails; nothing to list.
        let cmd = format!("ip {family} route show table {TABLE} proto {PROTO} 2>/dev/null || true");
        let text = lb.exec(&["sh", "-c", &cmd]);
        // "blackhole fd77::64 dev lo metric 1024 pref medium": the kind and the prefix.
        out.extend(text.lines().map(|l| {
            let words: Vec<&str> = l.split_whitespace().take(2).collect();
            words.join(" ")
        }));
    }
    out
}

fn wait_routes(lb: &vip_tests::NetNs, want: &[&str], what: &str, vipd: &Vipd) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let have = routes(lb);
        if have == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: routes {have:?}, want {want:?}\n{}",
            vipd.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const BOTH: [&str; 2] = ["blackhole 10.77.0.100", "blackhole fd77::64"];

#[test]
fn routes_follow_backend_health_standby_restart_and_stop() {
    if !privileged("routes_follow_backend_health_standby_restart_and_stop") {
        return;
    }
    let mut lan = Lan::new();
    let lb = lan.add_host(11);
    let backend = lan.add_host(12);
    let serve = |lan: &Lan| {
        let stop = Arc::new(AtomicBool::new(false));
        let t = servers::http_server(&lan.hosts[backend].ns, 80, "b1".into(), stop.clone());
        (stop, t)
    };
    let (stop, server) = serve(&lan);
    let pins = PinDir::new();
    let lb_ns = &lan.hosts[lb].ns;
    let mut vipd = Vipd::start(lb_ns, &pins, &config(&lan.hosts[lb].iface));
    wait_routes(lb_ns, &BOTH, "announced once the backend is up", &vipd);

    // The backend's service stops: no backend left, nothing to announce.
    stop.store(true, std::sync::atomic::Ordering::Release);
    let _ = server.join();
    wait_routes(lb_ns, &[], "withdrawn with no backend up", &vipd);
    let (stop, server) = serve(&lan);
    wait_routes(lb_ns, &BOTH, "announced again when it is back", &vipd);

    // Standby withdraws every route; unstandby brings them back.
    vipd.cli(&["node", "standby"]).expect("standby");
    wait_routes(lb_ns, &[], "withdrawn in standby", &vipd);
    vipd.cli(&["node", "unstandby"]).expect("unstandby");
    wait_routes(lb_ns, &BOTH, "announced after unstandby", &vipd);

    // A crash leaves the routes (the pinned data plane keeps forwarding); the next vipd
    // adopts them and never withdraws them in between.
    vipd.kill9();
    assert_eq!(routes(lb_ns), BOTH);
    let log_before = vipd.logs().len();
    vipd.spawn();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(routes(lb_ns), BOTH);
    let restarted = vipd.logs()[log_before..].to_owned();
    assert!(restarted.contains("adopting VIP routes"), "{restarted}");
    assert!(!restarted.contains("VIP route withdrawn"), "{restarted}");

    // A clean stop withdraws first and waits until nothing arrives (here at once: no
    // traffic) for `withdraw_quiet`, well before `withdraw_max`.
    let took = vipd.terminate();
    assert_eq!(routes(lb_ns), Vec::<String>::new());
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(3),
        "stop took {took:?}"
    );
    assert!(
        vipd.logs()
            .contains("VIP routes withdrawn, no packet for them"),
        "{}",
        vipd.logs()
    );
    stop.store(true, std::sync::atomic::Ordering::Release);
    let _ = server.join();
}
