//! keepalived/Pacemaker parity, with real vipds: `vipd node standby|unstandby` (cluster-wide,
//! kept across a restart), `[track]` conditions (a script, a link carrier) that take the
//! node out of service and its local backends out of every table, the `[hooks] notify`
//! command, and the read-only status socket.
mod common;

use std::{
    path::{Path, PathBuf},
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, Instant},
};

use common::{Cluster, TEST_TIMING, VIP};
use vip_tests::{privileged, servers, vipd::Vipd, PinDir};

/// Waits up to `limit` for `ok`, else panics with `what` and the last `show()`.
fn wait(limit: Duration, what: &str, mut ok: impl FnMut() -> bool, show: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}:\n{}",
            show()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A notify hook appending "EVENT VIP REASON STATE BACKEND" lines to `<dir>/<node>.log`.
fn hooks_and_track(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"
[hooks]
notify = ["/bin/sh", "-c", "echo \"$1 $VIPD_VIP|$VIPD_REASON|$VIPD_STATE|$VIPD_BACKEND\" >> {d}/$VIPD_NODE.log", "notify"]
notify_timeout = "2s"

[track]
[[track.script]]
name = "flag"
command = ["/bin/sh", "-c", "test ! -e {d}/fail-$VIPD_NODE"]
interval = "100ms"
timeout = "100ms"
fall = 2
rise = 2
"#
    )
}

/// Indices of the nodes holding the VIP now.
fn holder_nodes(cluster: &Cluster) -> Vec<usize> {
    let holders = cluster.holders(&[0, 1, 2]);
    holders.iter().map(|h| h.0).collect()
}

fn hook_log(dir: &Path, node: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{node}.log"))).unwrap_or_default()
}

fn out_of_service(s: &serde_json::Value) -> Option<String> {
    s["service"]["reason"].as_str().map(str::to_owned)
}

/// Slots of backend `name` of VIP `web` in a node's live table.
fn slots(s: &serde_json::Value, name: &str) -> u64 {
    let web = s["vips"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == "web"));
    let b = web.and_then(|v| {
        v["backends"]
            .as_array()?
            .iter()
            .find(|b| b["name"] == name)
            .cloned()
    });
    b.and_then(|b| b["slots"].as_u64()).unwrap_or(0)
}

#[test]
fn standby_and_track_take_a_node_out_of_service_cluster_wide() {
    if !privileged("standby_and_track_take_a_node_out_of_service_cluster_wide") {
        return;
    }
    let dir = std::env::temp_dir().join(vip_tests::unique("vipd-hooks-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let mut cluster = Cluster::start_full(TEST_TIMING, &hooks_and_track(&dir));
    let all: Vec<usize> = (0..3).collect();
    let owner = cluster.wait_single_owner(Duration::from_secs(10));
    let name = cluster.nodes[owner].name.clone();
    let show = |c: &Cluster| c.nodes[0].vipd.cli(&["status"]).unwrap_or_default();

    // Standby: handed over at once (no lease wait), and every node knows why.
    let said = cluster.nodes[owner]
        .vipd
        .cli(&["node", "standby"])
        .expect("standby");
    assert!(said.contains("standby"), "{said}");
    wait(
        Duration::from_secs(1),
        "VIP handed over",
        || matches!(cluster.holders(&all)[..], [(h, _)] if h != owner),
        || show(&cluster),
    );
    let second = cluster.holders(&all)[0].0;
    wait(
        Duration::from_secs(2),
        "every node sees the standby",
        || {
            cluster
                .nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != owner)
                .all(|(_, n)| {
                    let s = n.vipd.status_json();
                    let m = s["cluster"]["members"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    m.iter()
                        .any(|m| m["name"] == name.as_str() && m["out_of_service"] == "standby")
                })
        },
        || show(&cluster),
    );

    // Status says since when the VIP has its owner ("owner ctl2 for 1s").
    let s = cluster.nodes[second].vipd.status_json();
    let for_s = s["cluster"]["owners"][0]["for_s"].as_f64();
    assert!(for_s.is_some_and(|t| t < 5.0), "{s}");

    // Kept across a restart: the node comes back out of service and claims nothing.
    cluster.nodes[owner].vipd.kill9();
    cluster.nodes[owner].vipd.spawn();
    let s = cluster.nodes[owner].vipd.status_json();
    assert_eq!(out_of_service(&s).as_deref(), Some("standby"), "{s}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(holder_nodes(&cluster), [second]);

    // Back in service: nothing moves back (stickiness).
    let said = cluster.nodes[owner]
        .vipd
        .cli(&["node", "unstandby"])
        .expect("unstandby");
    assert!(said.contains("in service"), "{said}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(holder_nodes(&cluster), [second]);
    assert_eq!(cluster.metric(owner, "vipd_node_in_service", ""), 1.0);

    // A failing track script on the owner: out of service, VIP handed over, its own
    // backends out of every node's table; back when the script passes again.
    let second_name = cluster.nodes[second].name.clone();
    let flag = dir.join(format!("fail-{second_name}"));
    std::fs::write(&flag, "").expect("flag");
    wait(
        Duration::from_secs(2),
        "track fault hands the VIP over",
        || matches!(cluster.holders(&all)[..], [(h, _)] if h != second),
        || show(&cluster),
    );
    let s = cluster.nodes[second].vipd.status_json();
    let why = out_of_service(&s).unwrap_or_default();
    assert!(why.contains("script flag failed"), "{why}");
    wait(
        Duration::from_secs(2),
        "its backends out on every node",
        || {
            cluster
                .nodes
                .iter()
                .all(|n| slots(&n.vipd.status_json(), &second_name) == 0)
        },
        || show(&cluster),
    );
    std::fs::remove_file(&flag).expect("unflag");
    wait(
        Duration::from_secs(3),
        "its backends back on every node",
        || {
            cluster
                .nodes
                .iter()
                .all(|n| slots(&n.vipd.status_json(), &second_name) > 0)
        },
        || show(&cluster),
    );
    assert_eq!(
        out_of_service(&cluster.nodes[second].vipd.status_json()),
        None
    );

    // The notify hook saw each change, on the node where it happened.
    let first_log = hook_log(&dir, &name);
    assert!(first_log.contains(&format!("claim {VIP}|")), "{first_log}");
    assert!(
        first_log.contains(&format!("release {VIP}|")),
        "{first_log}"
    );
    assert!(first_log.contains("standby |standby|"), "{first_log}");
    assert!(first_log.contains("in_service |"), "{first_log}");
    let second_log = hook_log(&dir, &second_name);
    assert!(
        second_log.contains(&format!("claim {VIP}|")),
        "{second_log}"
    );
    assert!(
        second_log.contains("fault |track: script flag failed"),
        "{second_log}"
    );
    assert!(second_log.contains("backend web||up|"), "{second_log}");
    let ok = cluster.metric(second, "vipd_notify_hook_runs_total", "outcome=\"ok\"");
    assert!(ok >= 4.0, "{ok} ok runs");
    let _ = std::fs::remove_dir_all(&dir);
}

fn single_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"
[node]
name = "lb"
interfaces = ["e0"]
addresses = ["10.78.0.2"]
pin_dir = "@PIN_DIR@"

[metrics]
listen = "off"

[control]
socket = "@CONTROL@"
status_socket = "{d}/status.sock"
status_group = "0"

[hooks]
notify = ["/bin/sh", "-c", "echo \"$1 $VIPD_REASON\" >> {d}/hooks.log", "notify"]

[defaults.check]
interval = "100ms"
timeout = "100ms"
rise = 1
fall = 1

[[vip]]
name = "web"
address = "10.78.0.100"
port = 8080
table_size = 251
check = {{ kind = "tcp" }}

[[vip.backend]]
name = "here"
address = "10.78.0.2"
"#
    )
}

#[test]
fn a_lost_carrier_takes_local_backends_out_and_the_status_socket_only_reads() {
    if !privileged("a_lost_carrier_takes_local_backends_out_and_the_status_socket_only_reads") {
        return;
    }
    let ns = vip_tests::veth_namespace("vsv", "10.78.0.2/24");
    let stop = Arc::new(AtomicBool::new(false));
    let _server = servers::http_server(&ns, 8080, "here".into(), stop.clone());
    let dir: PathBuf = std::env::temp_dir().join(vip_tests::unique("vipd-svc-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let pins = PinDir::new();
    let vipd = Vipd::start(&ns, &pins, &single_config(&dir));
    let status = || vipd.status_json();
    let show = || vipd.cli(&["status"]).unwrap_or_default();
    wait(
        Duration::from_secs(3),
        "local backend live",
        || slots(&status(), "here") > 0,
        show,
    );

    // The read-only socket: mode 0660, status answers, changes are refused.
    let sock = dir.join("status.sock");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&sock).expect("sock").permissions(),
    );
    assert_eq!(mode & 0o777, 0o660);
    let ro = |args: &[&str]| {
        let out = std::process::Command::new(&vipd.bin)
            .arg("--control")
            .arg(&sock)
            .args(args)
            .output()
            .expect("run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = ro(&["status"]);
    assert!(ok && text.contains("service: in service"), "{text}");
    let (ok, text) = ro(&["backend", "drain", "web", "here"]);
    assert!(!ok && text.contains("read-only status socket"), "{text}");
    assert_eq!(status()["vips"][0]["backends"][0]["admin"], "enabled");

    // The peer goes down: e0 loses its carrier (e0 itself stays up, XDP attached).
    ns.exec(&["ip", "link", "set", "e1", "down"]);
    wait(
        Duration::from_secs(1),
        "carrier fault",
        || out_of_service(&status()).is_some_and(|r| r.contains("link e0 down")),
        show,
    );
    wait(
        Duration::from_secs(1),
        "local backend out",
        || slots(&status(), "here") == 0,
        show,
    );
    ns.exec(&["ip", "link", "set", "e1", "up"]);
    wait(
        Duration::from_secs(2),
        "back in service",
        || out_of_service(&status()).is_none(),
        show,
    );
    wait(
        Duration::from_secs(2),
        "local backend back",
        || slots(&status(), "here") > 0,
        show,
    );
    // The hook runs off the loop, one run at a time: its log may trail the status.
    let hooks = || std::fs::read_to_string(dir.join("hooks.log")).unwrap_or_default();
    wait(
        Duration::from_secs(2),
        "the notify hook's runs",
        || hooks().contains("fault track: link e0 down") && hooks().contains("in_service"),
        hooks,
    );
    // Standby is a cluster command: refused here with the alternative.
    let refused = vipd.cli(&["node", "standby"]).expect_err("single node");
    assert!(refused.contains("vipd backend drain"), "{refused}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = std::fs::remove_dir_all(&dir);
}
