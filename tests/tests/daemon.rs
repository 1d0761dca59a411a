//! vipd as an operator runs it: a real daemon in the balancer's namespace, real HTTP and UDP
//! backends, a real client. Health failover and return, drain through the control socket,
//! `kill -9` of vipd during a UDP stream (nothing lost), SIGHUP with a broken file (nothing
//! changes), status, trace and metrics.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use vip_common::maps;
use vip_daemon::shell::dataplane::{Dataplane, Sizing};
use vip_tests::{fmt_mac, privileged, servers, vip_on_loopback, vipd::Vipd, Lan, PinDir};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
const INTERVAL_MS: u64 = 100;

struct Env {
    lan: Lan,
    client: usize,
    backends: Vec<usize>,
    http_stops: Vec<Arc<AtomicBool>>,
    _threads: Vec<JoinHandle<()>>,
    _pins: (PinDir, PinDir),
    vipd: Vipd,
}

fn config(lb_iface: &str) -> String {
    let mut c = format!(
        r#"
[node]
name = "lb"
interfaces = ["{lb_iface}"]
pin_dir = "@PIN_DIR@"

[cluster]
hash_seed = 4242

[metrics]
listen = "127.0.0.1:9478"

[control]
socket = "@CONTROL@"

[defaults.check]
interval = "{INTERVAL_MS}ms"
timeout = "{INTERVAL_MS}ms"
rise = 2
fall = 2
jitter = 0.0
"#
    );
    for (vip, port, proto, check) in [
        ("web", 80, "tcp", r#"{ kind = "http", path = "/" }"#),
        ("dns", 5353, "udp", r#"{ kind = "tcp" }"#),
    ] {
        c.push_str(&format!(
            "\n[[vip]]\nname = \"{vip}\"\naddress = \"{VIP}\"\nport = {port}\nprotocol = \"{proto}\"\ntable_size = 251\ncheck = {check}\n"
        ));
        for i in 0..3 {
            c.push_str(&format!(
                "[[vip.backend]]\nname = \"b{i}\"\naddress = \"10.77.0.{}\"\nport = 80\n",
                11 + i
            ));
        }
    }
    c
}

fn env() -> Env {
    let mut lan = Lan::new();
    let client = lan.add_host(1);
    let lb = lan.add_host(2);
    let backends: Vec<usize> = (11..=13).map(|n| lan.add_host(n)).collect();
    let (pins, port_pins) = (PinDir::new(), PinDir::new());
    {
        let (path, port) = (port_pins.path.clone(), lan.hosts[lb].port.clone());
        lan.switch.run(move || {
            let mut dp = Dataplane::load_pinned(&path, &Sizing::default()).expect("load");
            dp.attach_program(maps::PROG_BARE_PASS, &port)
                .expect("attach peer");
        });
    }
    let mut threads = Vec::new();
    let mut http_stops = Vec::new();
    for (i, &b) in backends.iter().enumerate() {
        let host = &lan.hosts[b];
        vip_on_loopback(host, &VIP.to_string(), "fd77::100");
        let stop = Arc::new(AtomicBool::new(false));
        threads.push(servers::http_server(
            &host.ns,
            80,
            format!("b{i}"),
            stop.clone(),
        ));
        http_stops.push(stop);
        let udp_stop = Arc::new(AtomicBool::new(false));
        threads.push(servers::udp_responder(
            &host.ns,
            SocketAddr::new(IpAddr::V4(VIP), 5353),
            format!("b{i}"),
            udp_stop,
        ));
    }
    let c = &lan.hosts[client];
    c.static_neighbour(&VIP.to_string(), &lan.hosts[lb].mac);
    let vipd = Vipd::start(&lan.hosts[lb].ns, &pins, &config(&lan.hosts[lb].iface));
    let env = Env {
        lan,
        client,
        backends,
        http_stops,
        _threads: threads,
        _pins: (pins, port_pins),
        vipd,
    };
    wait_for(&env, "all backends up", Duration::from_secs(5), |s| {
        live_backends(s, "web") == 3 && live_backends(s, "dns") == 3
    });
    env
}

fn live_backends(status: &serde_json::Value, vip: &str) -> usize {
    status["vips"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == vip))
        .map_or(0, |v| {
            v["backends"].as_array().map_or(0, |b| {
                b.iter().filter(|b| b["slots"].as_u64() > Some(0)).count()
            })
        })
}

fn backend_field(
    status: &serde_json::Value,
    vip: &str,
    backend: &str,
    field: &str,
) -> serde_json::Value {
    status["vips"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == vip))
        .and_then(|v| {
            v["backends"]
                .as_array()?
                .iter()
                .find(|b| b["name"] == backend)
                .cloned()
        })
        .map_or(serde_json::Value::Null, |b| b[field].clone())
}

fn wait_for(env: &Env, what: &str, limit: Duration, ok: impl Fn(&serde_json::Value) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let s = env.vipd.status_json();
        if ok(&s) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status:\n{}",
            env.vipd.cli(&["status"]).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `n` HTTP requests from the client, each a new connection: (sent at, Ok(backend) | Err).
fn requests(env: &Env, n: usize, gap: Duration) -> Vec<(Instant, Result<String, String>)> {
    let to = SocketAddr::new(IpAddr::V4(VIP), 80);
    env.lan.hosts[env.client].ns.run(move || {
        (0..n)
            .map(|_| {
                let at = Instant::now();
                let r = servers::http_get(to)
                    .map(|(_, b)| b)
                    .map_err(|e| e.to_string());
                std::thread::sleep(gap);
                (at, r)
            })
            .collect()
    })
}

fn served_by(rs: &[(Instant, Result<String, String>)]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for (_, r) in rs {
        *m.entry(r.clone().unwrap_or_else(|e| format!("error: {e}")))
            .or_default() += 1;
    }
    m
}

#[test]
fn health_failover_return_drain_status_trace_metrics() {
    if !privileged("health_failover_return_drain_status_trace_metrics") {
        return;
    }
    let env = env();
    let all = served_by(&requests(&env, 30, Duration::ZERO));
    assert_eq!(all.len(), 3, "three backends serve: {all:?}");

    // trace agrees with what really happens.
    let status = env.vipd.cli(&["status"]).expect("status");
    eprintln!("{status}");
    assert!(
        status.contains("VIP web") && status.contains("XDP on"),
        "{status}"
    );
    let trace = env
        .vipd
        .cli(&["trace", "10.77.0.1:40000", "10.77.0.100:80", "tcp"])
        .expect("trace");
    assert!(
        trace.contains("model and live maps agree") && trace.contains("backend: b"),
        "{trace}"
    );
    eprintln!("{trace}");

    // Kill b1's service: within fall x interval (+ timeout + one publish) no new flow goes there.
    let t0 = Instant::now();
    env.http_stops[1].store(true, Ordering::Release);
    let window = Duration::from_millis(INTERVAL_MS * 2 + INTERVAL_MS + 300);
    let during = requests(&env, 60, Duration::from_millis(10));
    let late_failures: Vec<_> = during
        .iter()
        .filter(|(at, r)| r.is_err() && at.duration_since(t0) > window)
        .collect();
    assert!(
        late_failures.is_empty(),
        "failures after the detection window: {late_failures:?}"
    );
    let after = served_by(&requests(&env, 30, Duration::ZERO));
    assert!(
        !after.contains_key("b1") && after.len() == 2,
        "b1 still served: {after:?}"
    );
    let s = env.vipd.status_json();
    assert_eq!(backend_field(&s, "web", "b1", "health"), "down");
    assert!(
        s["verdict_to_live_p99_us"].as_f64().is_some(),
        "verdict-to-live measured"
    );

    // Bring it back: it returns after rise x interval.
    let b1 = env.backends[1];
    let stop = Arc::new(AtomicBool::new(false));
    let _again = servers::http_server(&env.lan.hosts[b1].ns, 80, "b1".into(), stop.clone());
    let t1 = Instant::now();
    wait_for(&env, "b1 back", Duration::from_secs(3), |s| {
        backend_field(s, "web", "b1", "slots").as_u64() > Some(0)
    });
    assert!(
        t1.elapsed() >= Duration::from_millis(INTERVAL_MS),
        "rise needs two probes"
    );
    assert_eq!(served_by(&requests(&env, 30, Duration::ZERO)).len(), 3);

    // Drain through the control socket: gone from the table at once, shown in status.
    let out = env
        .vipd
        .cli(&["backend", "drain", "web", "b2"])
        .expect("drain");
    assert!(out.contains("drained"), "{out}");
    let drained = served_by(&requests(&env, 30, Duration::ZERO));
    assert!(
        !drained.contains_key("b2"),
        "drained b2 still served: {drained:?}"
    );
    assert_eq!(
        backend_field(&env.vipd.status_json(), "web", "b2", "admin"),
        "drained"
    );
    env.vipd
        .cli(&["backend", "enable", "web", "b2"])
        .expect("enable");
    env.vipd
        .cli(&["backend", "weight", "web", "b0", "3"])
        .expect("weight");
    assert_eq!(
        backend_field(&env.vipd.status_json(), "web", "b0", "weight"),
        3
    );
    assert!(env.vipd.cli(&["backend", "drain", "web", "nope"]).is_err());

    // Metrics endpoint.
    let lb = &env.lan.hosts[1];
    let metrics = lb.ns.exec(&["curl", "-s", "http://127.0.0.1:9478/metrics"]);
    for needle in [
        "vipd_backend_up{",
        "vipd_verdict_to_live_seconds_bucket",
        "vipd_backend_packets_total{",
        "vipd_map_memory_bytes",
        "vipd_resident_memory_bytes",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }
    stop.store(true, Ordering::Release);
}

/// The id of the program in vipd's pinned XDP link (there is one interface).
fn linked_prog_id(env: &Env) -> u64 {
    let link = std::fs::read_dir(&env.vipd.pins)
        .expect("pins")
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("link_"))
        .expect("a pinned link")
        .path();
    let out = vip_tests::sh(&[
        "bpftool",
        "-j",
        "link",
        "show",
        "pinned",
        link.to_str().expect("utf-8"),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("bpftool json");
    v["prog_id"].as_u64().expect("prog_id")
}

#[test]
fn kill9_during_udp_stream_loses_nothing_and_restart_adopts() {
    if !privileged("kill9_during_udp_stream_loses_nothing_and_restart_adopts") {
        return;
    }
    let mut env = env();
    let gen_before = env.vipd.status_json()["vips"][1]["generation"].clone();
    let prog_before = linked_prog_id(&env);
    let to = SocketAddr::new(IpAddr::V4(VIP), 5353);
    let stream = env.lan.hosts[env.client].ns.spawn(move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        sock.connect(to).expect("connect");
        let (mut lost, mut buf) = (0u32, [0u8; 64]);
        for seq in 0..1500u32 {
            sock.send(&seq.to_be_bytes()).expect("send");
            if sock.recv(&mut buf).is_err() {
                lost += 1;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        lost
    });
    std::thread::sleep(Duration::from_millis(500));
    env.vipd.kill9();
    std::thread::sleep(Duration::from_millis(500));
    env.vipd.spawn();
    let lost = stream.join().expect("stream");
    assert_eq!(lost, 0, "datagrams lost across kill -9 and restart");
    let s = env.vipd.status_json();
    assert_eq!(
        s["interfaces"][0]["mode"], "adopted",
        "restart adopts the pinned link"
    );
    assert_eq!(
        live_backends(&s, "dns"),
        3,
        "restart kept every live backend"
    );
    assert_eq!(
        s["vips"][1]["generation"], gen_before,
        "an identical table is not republished"
    );
    assert_ne!(
        linked_prog_id(&env),
        prog_before,
        "the restarted vipd's program replaced the old one in the link (upgrade path)"
    );
}

#[test]
fn sighup_with_broken_config_keeps_running_state() {
    if !privileged("sighup_with_broken_config_keeps_running_state") {
        return;
    }
    let env = env();
    let before = env.vipd.status_json();
    let good = std::fs::read_to_string(&env.vipd.config).expect("read");
    std::fs::write(
        &env.vipd.config,
        good.replace("table_size = 251", "table_size = 250"),
    )
    .expect("write");
    env.vipd.signal(libc::SIGHUP);
    wait_for(&env, "reload refused", Duration::from_secs(3), |s| {
        s["last_reload"]
            .as_str()
            .is_some_and(|r| r.contains("REFUSED"))
    });
    let s = env.vipd.status_json();
    let reason = s["last_reload"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains("vipd.toml:") && reason.contains("table_size") && reason.contains("251"),
        "{reason}"
    );
    assert_eq!(
        s["vips"],
        before["vips"]
            .clone()
            .as_array()
            .map(|_| s["vips"].clone())
            .unwrap()
    );
    assert_eq!(live_backends(&s, "web"), 3);
    for v in 0..2 {
        assert_eq!(
            s["vips"][v]["generation"], before["vips"][v]["generation"],
            "tables untouched"
        );
    }
    assert_eq!(
        served_by(&requests(&env, 30, Duration::ZERO)).len(),
        3,
        "traffic still balanced"
    );
    let err = env
        .vipd
        .cli(&["reload"])
        .expect_err("reload of a broken file fails");
    assert!(err.contains("table_size"), "{err}");
    // Fixed file: reload works.
    std::fs::write(&env.vipd.config, &good).expect("write");
    assert!(env
        .vipd
        .cli(&["reload"])
        .expect("reload")
        .contains("reloaded"));
}

/// Every reload below changes what the old vipd refused as a "layout change", under a new
/// connection every 10 ms: a backend added, one removed, a VIP added, a table size changed,
/// then a restart with an edited file. None may fail a request, and unchanged backends keep
/// their verdicts (no `rise` wait) through all of it.
#[test]
fn reloads_and_restart_with_changed_layout_fail_no_request() {
    if !privileged("reloads_and_restart_with_changed_layout_fail_no_request") {
        return;
    }
    let mut env = env();
    let good = std::fs::read_to_string(&env.vipd.config).expect("read");
    let stop = Arc::new(AtomicBool::new(false));
    let to = SocketAddr::new(IpAddr::V4(VIP), 80);
    let load = {
        let stop = stop.clone();
        env.lan.hosts[env.client].ns.spawn(move || {
            let mut results = Vec::new();
            while !stop.load(Ordering::Acquire) {
                results.push(
                    servers::http_get(to)
                        .map(|(_, b)| b)
                        .map_err(|e| e.to_string()),
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            results
        })
    };
    let reload = |env: &Env, text: &str, expect: &str| {
        std::fs::write(&env.vipd.config, text).expect("write");
        let answer = env.vipd.cli(&["reload"]).expect("reload applies");
        assert!(answer.contains(expect), "{answer}");
    };
    // A backend added on a new server: it must rise before it gets traffic.
    let new_host = env.lan.add_host(14);
    vip_on_loopback(&env.lan.hosts[new_host], &VIP.to_string(), "fd77::100");
    let new_stop = Arc::new(AtomicBool::new(false));
    env._threads.push(servers::http_server(
        &env.lan.hosts[new_host].ns,
        80,
        "b3".into(),
        new_stop.clone(),
    ));
    let web_end = good.find("\n[[vip]]\nname = \"dns\"").expect("dns VIP");
    let added = format!(
        "{}[[vip.backend]]\nname = \"b3\"\naddress = \"10.77.0.14\"\nport = 80\n{}",
        &good[..web_end + 1],
        &good[web_end + 1..]
    );
    reload(&env, &added, "1 added, 0 removed)");
    let s = env.vipd.status_json();
    assert_eq!(
        live_backends(&s, "web"),
        3,
        "kept verdicts, new one not yet risen"
    );
    wait_for(&env, "b3 up", Duration::from_secs(5), |s| {
        live_backends(s, "web") == 4
    });
    // b0 removed, the way an operator removes a server that still runs: drained first, so
    // that its established connections end where they are (a removed backend's flows move
    // at once, as a failed one's do), then taken out of the file.
    env.vipd
        .cli(&["backend", "drain", "web", "b0"])
        .expect("drain");
    std::thread::sleep(Duration::from_millis(300));
    let removed = added.replacen(
        "[[vip.backend]]\nname = \"b0\"\naddress = \"10.77.0.11\"\nport = 80\n",
        "",
        1,
    );
    reload(&env, &removed, "0 added, 1 removed)");
    assert_eq!(live_backends(&env.vipd.status_json(), "web"), 3);
    // A VIP added, and web's table size changed (a new place in the maps).
    let with_vip = format!(
        "{}\n[[vip]]\nname = \"alt\"\naddress = \"{VIP}\"\nport = 8080\ntable_size = 251\n\
         check = {{ kind = \"tcp\" }}\n[[vip.backend]]\nname = \"a0\"\naddress = \"10.77.0.12\"\n\
         port = 80\n",
        removed.replacen("table_size = 251", "table_size = 257", 1)
    );
    reload(&env, &with_vip, "1 added, 0 removed, 1 re-laid out)");
    let s = env.vipd.status_json();
    assert_eq!(
        live_backends(&s, "web"),
        3,
        "re-laid out VIP kept its backends"
    );
    wait_for(&env, "alt up", Duration::from_secs(3), |s| {
        live_backends(s, "alt") == 1
    });
    // Restart with the VIP removed again: adopted, no recreate, verdicts kept.
    std::fs::write(&env.vipd.config, &removed).expect("write");
    env.vipd.kill9();
    env.vipd.spawn();
    let s = env.vipd.status_json();
    assert_eq!(s["interfaces"][0]["mode"], "adopted");
    assert_eq!(live_backends(&s, "web"), 3, "verdicts survived the restart");
    assert!(
        !env.vipd.logs().contains("re-creating the data plane"),
        "{}",
        env.vipd.logs()
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    let results = load.join().expect("load");
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(results.len() > 50, "too few requests: {}", results.len());
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        results.len()
    );
    let b3 = results.iter().filter(|r| r.as_deref() == Ok("b3")).count();
    assert!(b3 > 0, "the added backend never served");
    new_stop.store(true, Ordering::Release);
}

/// A backend the balancer has no route to is reported as such (not as an unresolved
/// neighbour), and vipd exits promptly on SIGTERM: `systemctl stop` and restarts must not
/// wait on probers, the control socket or background work.
#[test]
fn no_route_backend_status_and_prompt_sigterm_exit() {
    if !privileged("no_route_backend_status_and_prompt_sigterm_exit") {
        return;
    }
    let mut lan = Lan::new();
    let lb = lan.add_host(2);
    let backend = lan.add_host(11);
    let stop = Arc::new(AtomicBool::new(false));
    let _server = servers::http_server(&lan.hosts[backend].ns, 80, "b0".into(), stop.clone());
    let pins = PinDir::new();
    // The LB namespace has only 10.77.0.0/24 and no default route: 198.51.100.7 is unroutable.
    let config = format!(
        r#"
[node]
name = "lb"
interfaces = ["{}"]
pin_dir = "@PIN_DIR@"

[metrics]
listen = "127.0.0.1:9478"

[control]
socket = "@CONTROL@"

[defaults.check]
interval = "100ms"
timeout = "100ms"

[[vip]]
name = "web"
address = "{VIP}"
port = 80
check = {{ kind = "http", path = "/" }}

[[vip.backend]]
name = "b0"
address = "10.77.0.11"

[[vip.backend]]
name = "far"
address = "198.51.100.7"
forward = "encap"
"#,
        lan.hosts[lb].iface
    );
    let mut vipd = Vipd::start(&lan.hosts[lb].ns, &pins, &config);
    // Both next hops settle within a few neighbour refreshes (1 s apart): b0's MAC once its
    // probes have resolved it, far's route lookup at the first refresh.
    let b0_mac = fmt_mac(&lan.hosts[backend].mac);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let s = vipd.status_json();
        let far = backend_field(&s, "web", "far", "neighbour");
        let b0 = backend_field(&s, "web", "b0", "neighbour");
        let settled = far
            .as_str()
            .is_some_and(|t| !t.contains("not resolved yet"))
            && b0.as_str() == Some(b0_mac.as_str());
        if settled || Instant::now() > deadline {
            // Read after the JSON that settled: an earlier text could predate it.
            break vipd.cli(&["status"]).expect("status");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("{status}");
    assert!(
        status.contains("no route to 198.51.100.7") && !status.contains("UNRESOLVED"),
        "{status}"
    );
    assert!(status.contains(&b0_mac), "b0 resolved: {status}");
    let s = vipd.status_json();
    let neighbour = backend_field(&s, "web", "far", "neighbour");
    assert!(
        neighbour
            .as_str()
            .is_some_and(|t| t.starts_with("no route to 198.51.100.7")),
        "{neighbour}"
    );
    assert_eq!(
        backend_field(&s, "web", "far", "slots"),
        0,
        "unroutable: no slots"
    );

    // SIGTERM to exit, three times over restarts; the best of three must be within 200 ms
    // (the machine is shared: one sample can be slowed by a neighbour, the best cannot be
    // slowed by vipd's own shutdown). All three are printed.
    let mut took = Vec::new();
    for i in 0..3 {
        if i > 0 {
            vipd.spawn();
        }
        // Probes, neighbour refreshes and table work in flight, as in production.
        std::thread::sleep(Duration::from_millis(300));
        took.push(vipd.terminate());
    }
    eprintln!("vipd exit after SIGTERM: {took:?}");
    let best = took.iter().min().copied().unwrap_or_default();
    assert!(
        best <= Duration::from_millis(200),
        "vipd took {took:?} to exit after SIGTERM (best {best:?} > 200 ms):\n{}",
        vipd.logs()
    );
    stop.store(true, Ordering::Release);
}

/// A restart whose maps need other sizes (here a `[limits]` change) builds the new data plane
/// beside the pinned one and swaps the program in each link: under a new connection every
/// 10 ms, no request fails, and the old maps are gone afterwards.
#[test]
fn restart_with_new_limits_swaps_the_data_plane_without_a_gap() {
    if !privileged("restart_with_new_limits_swaps_the_data_plane_without_a_gap") {
        return;
    }
    let mut env = env();
    let pins = env._pins.0.path.clone();
    let vips_entries = |pins: &std::path::Path| {
        aya::maps::MapData::from_pin(pins.join(maps::MAP_VIPS))
            .and_then(|m| m.info())
            .map(|i| i.max_entries())
            .expect("pinned VIPS")
    };
    assert_eq!(vips_entries(&pins), 16, "default limits.vips");
    let stop = Arc::new(AtomicBool::new(false));
    let to = SocketAddr::new(IpAddr::V4(VIP), 80);
    let load = {
        let stop = stop.clone();
        env.lan.hosts[env.client].ns.spawn(move || {
            let mut results = Vec::new();
            while !stop.load(Ordering::Acquire) {
                results.push(servers::http_get(to).map_err(|e| e.to_string()));
                std::thread::sleep(Duration::from_millis(10));
            }
            results
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let good = std::fs::read_to_string(&env.vipd.config).expect("read");
    std::fs::write(&env.vipd.config, format!("[limits]\nvips = 40\n{good}")).expect("write");
    env.vipd.kill9();
    env.vipd.spawn();
    let s = env.vipd.status_json();
    assert_eq!(
        s["interfaces"][0]["mode"], "adopted",
        "the link was taken over"
    );
    assert_eq!(live_backends(&s, "web"), 3, "verdicts carried over");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    let results = load.join().expect("load");
    let logs = env.vipd.logs();
    assert!(logs.contains("building a new data plane beside"), "{logs}");
    assert_eq!(
        vips_entries(&pins),
        40,
        "the new maps took the pin directory"
    );
    assert!(!vip_daemon::shell::dataplane::staging_dir(&pins).exists());
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(results.len() > 30, "too few requests: {}", results.len());
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        results.len()
    );
    // The swapped-in program forwards with the new maps.
    assert_eq!(served_by(&requests(&env, 30, Duration::ZERO)).len(), 3);
}

/// A primary-backup VIP keeps its writer like HAProxy's `stick on dst`: the preferred backend
/// coming back does not take the traffic (and reset the backup's connections); a restart of
/// vipd keeps the writer; `vipd backend promote` moves it, and is refused for a backend that
/// cannot take it and for a Maglev VIP. On the Maglev VIP beside it: `drain --timeout` shows
/// its progress in status and metrics, and completes when the timeout passes; status shows
/// the limits in force.
#[test]
fn primary_backup_keeps_its_writer_until_promoted_and_drain_times_out() {
    if !privileged("primary_backup_keeps_its_writer_until_promoted_and_drain_times_out") {
        return;
    }
    const WEB: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 101);
    let mut lan = Lan::new();
    let client = lan.add_host(1);
    let lb = lan.add_host(2);
    let backends: Vec<usize> = (11..=12).map(|n| lan.add_host(n)).collect();
    let (pins, port_pins) = (PinDir::new(), PinDir::new());
    {
        // XDP_TX out of a veth needs a program on its peer.
        let (path, port) = (port_pins.path.clone(), lan.hosts[lb].port.clone());
        lan.switch.run(move || {
            let mut dp = Dataplane::load_pinned(&path, &Sizing::default()).expect("load");
            dp.attach_program(maps::PROG_BARE_PASS, &port)
                .expect("attach peer");
        });
    }
    let mut stops = Vec::new();
    let mut threads = Vec::new();
    for (i, &b) in backends.iter().enumerate() {
        let host = &lan.hosts[b];
        vip_on_loopback(host, &VIP.to_string(), "fd77::100");
        host.ns
            .exec(&["ip", "addr", "add", &format!("{WEB}/32"), "dev", "lo"]);
        let stop = Arc::new(AtomicBool::new(false));
        threads.push(servers::http_server(
            &host.ns,
            80,
            format!("b{i}"),
            stop.clone(),
        ));
        stops.push(stop);
    }
    for vip in [VIP, WEB] {
        lan.hosts[client].static_neighbour(&vip.to_string(), &lan.hosts[lb].mac);
    }
    let config = format!(
        r#"
[node]
name = "lb"
interfaces = ["{}"]
pin_dir = "@PIN_DIR@"

[metrics]
listen = "127.0.0.1:9478"

[control]
socket = "@CONTROL@"

[defaults.check]
interval = "{INTERVAL_MS}ms"
timeout = "{INTERVAL_MS}ms"
rise = 2
fall = 2
jitter = 0.0

[[vip]]
name = "galera"
address = "{VIP}"
port = 80
selection = "primary-backup"
check = {{ kind = "http", path = "/" }}

[[vip.backend]]
name = "b0"
address = "10.77.0.11"
priority = 0

# Two probes more to come up: the primary is eligible first whatever the order of the
# first probes (the writer is sticky: a backup up first would keep the slot).
[[vip.backend]]
name = "b1"
address = "10.77.0.12"
priority = 1
check = {{ kind = "http", path = "/", rise = 4 }}

[[vip]]
name = "web"
address = "{WEB}"
port = 80
table_size = 251
check = {{ kind = "http", path = "/" }}

[[vip.backend]]
name = "b0"
address = "10.77.0.11"

[[vip.backend]]
name = "b1"
address = "10.77.0.12"
"#,
        lan.hosts[lb].iface
    );
    let mut vipd = Vipd::start(&lan.hosts[lb].ns, &pins, &config);
    let wait =
        |vipd: &Vipd, what: &str, limit: Duration, ok: &dyn Fn(&serde_json::Value) -> bool| {
            let deadline = Instant::now() + limit;
            loop {
                if ok(&vipd.status_json()) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {what}; status:\n{}",
                    vipd.cli(&["status"]).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        };
    let slots = |s: &serde_json::Value, vip: &str, b: &str| backend_field(s, vip, b, "slots");
    let serve = |to: Ipv4Addr, n: usize| {
        let to = SocketAddr::new(IpAddr::V4(to), 80);
        let got: Vec<String> = lan.hosts[client].ns.run(move || {
            (0..n)
                .map(|_| match servers::http_get(to) {
                    Ok((_, b)) => b,
                    Err(e) => format!("error: {e}"),
                })
                .collect()
        });
        let mut m: HashMap<String, usize> = HashMap::new();
        for g in got {
            *m.entry(g).or_default() += 1;
        }
        m
    };
    let only = |name: &str, n: usize| HashMap::from([(name.to_owned(), n)]);
    wait(
        &vipd,
        "b0 writes, b1 up, both serve web",
        Duration::from_secs(5),
        &|s| {
            slots(s, "galera", "b0") == 1
                && backend_field(s, "galera", "b1", "health") == "up"
                && live_backends(s, "web") == 2
        },
    );
    assert_eq!(serve(VIP, 10), only("b0", 10), "the primary writes first");

    // The primary's service dies: the backup takes the slot.
    stops[0].store(true, Ordering::Release);
    wait(&vipd, "b1 writes", Duration::from_secs(3), &|s| {
        slots(s, "galera", "b1") == 1
    });
    assert_eq!(serve(VIP, 10), only("b1", 10), "primary dead -> backup");

    // The primary returns and passes its checks: the backup keeps writing.
    let stop0 = Arc::new(AtomicBool::new(false));
    let _again = servers::http_server(&lan.hosts[backends[0]].ns, 80, "b0".into(), stop0.clone());
    wait(&vipd, "b0 up again", Duration::from_secs(3), &|s| {
        backend_field(s, "galera", "b0", "health") == "up"
            && slots(s, "web", "b0").as_u64() > Some(0)
    });
    std::thread::sleep(Duration::from_millis(INTERVAL_MS * 2 * 3));
    let s = vipd.status_json();
    assert_eq!(
        (slots(&s, "galera", "b0"), slots(&s, "galera", "b1")),
        (0.into(), 1.into()),
        "primary back after > rise x interval: the backup keeps the slot"
    );
    assert_eq!(
        serve(VIP, 10),
        only("b1", 10),
        "primary returns -> backup kept"
    );

    // kill -9 and restart: the adopted live table names the writer.
    vipd.kill9();
    vipd.spawn();
    std::thread::sleep(Duration::from_millis(INTERVAL_MS * 2 * 3));
    let s = vipd.status_json();
    assert_eq!(
        slots(&s, "galera", "b1"),
        1,
        "the writer survives a restart:\n{}",
        vipd.cli(&["status"]).unwrap_or_default()
    );
    assert_eq!(serve(VIP, 10), only("b1", 10), "after restart");

    // Restart with other [limits]: new maps are built beside the old ones, so no live table
    // names the writer; the state file's writer gets the slot back (and b0, the preferred
    // one, does not take it).
    vipd.terminate();
    let text = std::fs::read_to_string(&vipd.config).expect("config");
    let text = text.replacen("[metrics]", "[limits]\nvips = 8\n\n[metrics]", 1);
    std::fs::write(&vipd.config, text).expect("config");
    vipd.spawn();
    wait(
        &vipd,
        "both up after recreation",
        Duration::from_secs(5),
        &|s| {
            ["b0", "b1"]
                .iter()
                .all(|b| backend_field(s, "galera", b, "health") == "up")
                && slots(s, "galera", "b1") == 1
        },
    );
    assert!(
        vipd.logs().contains("building a new data plane beside"),
        "the maps were replaced:\n{}",
        vipd.logs()
    );
    let s = vipd.status_json();
    assert_eq!(
        slots(&s, "galera", "b0"),
        0,
        "the state file's writer kept the slot"
    );
    assert_eq!(s["limits"]["vips"]["limit"], 8, "{}", s["limits"]);
    assert_eq!(serve(VIP, 10), only("b1", 10), "after recreation");

    // Promote: refused for what cannot take the slot, then moves it.
    let maglev = vipd
        .cli(&["backend", "promote", "web", "b0"])
        .expect_err("promote on a Maglev VIP");
    assert!(maglev.contains("not primary-backup"), "{maglev}");
    vipd.cli(&["backend", "disable", "galera", "b0"])
        .expect("disable");
    let disabled = vipd
        .cli(&["backend", "promote", "galera", "b0"])
        .expect_err("promote a disabled backend");
    assert!(disabled.contains("it is disabled"), "{disabled}");
    vipd.cli(&["backend", "enable", "galera", "b0"])
        .expect("enable");
    wait(&vipd, "b0 probed up again", Duration::from_secs(3), &|s| {
        backend_field(s, "galera", "b0", "health") == "up"
    });
    assert_eq!(
        slots(&vipd.status_json(), "galera", "b1"),
        1,
        "enable is no promote"
    );
    let out = vipd
        .cli(&["backend", "promote", "galera", "b0"])
        .expect("promote");
    assert!(out.contains("promoted to writer (was b1)"), "{out}");
    assert_eq!(slots(&vipd.status_json(), "galera", "b0"), 1);
    assert_eq!(serve(VIP, 10), only("b0", 10), "promote moves the writer");

    // Drain with a timeout on the Maglev VIP: progress in status, complete at the timeout.
    let before = serve(WEB, 40);
    assert!(before.get("b1") > Some(&0), "b1 serves web: {before:?}");
    let out = vipd
        .cli(&["backend", "drain", "web", "b1", "--timeout", "2s"])
        .expect("drain");
    assert!(out.contains("drained") && out.contains("2s"), "{out}");
    let s = vipd.status_json();
    let drain = backend_field(&s, "web", "b1", "drain");
    eprintln!("{}", vipd.cli(&["status"]).unwrap_or_default());
    assert!(
        drain["left_s"]
            .as_f64()
            .is_some_and(|l| l > 0.0 && l <= 2.0)
            && drain["timeout_s"] == 2.0
            && drain["flows"].as_u64() > Some(0)
            && drain["complete"] == false,
        "b1's client connections left flow entries to drain: {drain}"
    );
    assert!(backend_field(&s, "web", "b0", "drain").is_null());
    assert_eq!(s["limits"]["vips"]["used"], 2, "{}", s["limits"]);
    assert_eq!(s["limits"]["backends"]["used"], 4, "{}", s["limits"]);
    assert!(s["flow_table"]
        .as_array()
        .is_some_and(|f| f.len() == maps::flow_stat::NAMES.len()));
    // Versioned, named fields (not positional arrays).
    assert_eq!(s["schema"], vip_daemon::shell::status::STATUS_SCHEMA);
    assert!(
        s["flow_table"][0]["name"].is_string(),
        "{}",
        s["flow_table"]
    );
    assert!(s["reasons"][0]["reason"].is_string(), "{}", s["reasons"]);
    assert!(s["reasons"][0]["packets"].is_u64(), "{}", s["reasons"]);
    // "Up since": when the backend's health or admin state last changed.
    let since = backend_field(&s, "web", "b0", "since_unix_s");
    assert!(since.as_f64().is_some_and(|t| t > 1.7e9), "{since}");
    let lbh = &lan.hosts[lb];
    let metrics = lbh
        .ns
        .exec(&["curl", "-s", "http://127.0.0.1:9478/metrics"]);
    for needle in [
        "vipd_backend_drain_flows{vip=\"web\",backend=\"b1\"}",
        "vipd_flow_table_lookups_total{result=\"hit\"}",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }
    wait(&vipd, "drain complete", Duration::from_secs(4), &|s| {
        let d = backend_field(s, "web", "b1", "drain");
        d["complete"] == true && d["left_s"] == 0.0
    });
    let text = vipd.cli(&["status"]).expect("status");
    assert!(
        text.contains("drain complete (timeout passed") && text.contains("limits: VIPs 2 of"),
        "{text}"
    );
    assert!(
        !serve(WEB, 20).contains_key("b1"),
        "drained b1 gets no new connections"
    );
    stop0.store(true, Ordering::Release);
    for s in &stops {
        s.store(true, Ordering::Release);
    }
}
