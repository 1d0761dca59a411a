//! Admin state is the cluster's, not one node's: a drain, enable or weight set on any node
//! reaches every node (so every node keeps building the same tables), and a node that was
//! down while it changed takes the cluster's newer state over its own state file's.
mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use vip_tests::privileged;

fn backend<'a>(s: &'a serde_json::Value, vip: &str, name: &str) -> &'a serde_json::Value {
    let v = s["vips"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == vip))
        .unwrap_or_else(|| panic!("no vip {vip} in {s}"));
    v["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["name"] == name))
        .unwrap_or_else(|| panic!("no backend {name} in {v}"))
}

/// Waits until every running node's status satisfies `ok` for `vip`/`name`.
fn wait_all(
    cluster: &Cluster,
    what: &str,
    vip: &str,
    name: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let views: Vec<serde_json::Value> = (cluster.nodes.iter())
            .map(|n| backend(&n.vipd.status_json(), vip, name).clone())
            .collect();
        if views.iter().all(&ok) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not on every node within 3 s: {views:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn admin_state_reaches_every_node_and_wins_over_a_stale_state_file() {
    if !privileged("admin_state_reaches_every_node_and_wins_over_a_stale_state_file") {
        return;
    }
    let mut cluster = Cluster::start("");
    let drained = cluster.nodes[0]
        .vipd
        .cli(&["backend", "drain", "lines", "ctl2", "--timeout", "10m"])
        .expect("drain");
    assert!(drained.contains("drained"), "{drained}");
    wait_all(&cluster, "drain from ctl1", "lines", "ctl2", |b| {
        b["admin"] == "drained" && b["slots"] == 0
    });
    // One drain, one start: its timeout ends at the same moment everywhere.
    let starts: Vec<f64> = (cluster.nodes.iter())
        .map(|n| {
            let s = n.vipd.status_json();
            backend(&s, "lines", "ctl2")["drain"]["since_unix_s"]
                .as_f64()
                .expect("drain start")
        })
        .collect();
    assert!(starts.windows(2).all(|w| w[0] == w[1]), "{starts:?}");

    cluster.nodes[1]
        .vipd
        .cli(&["backend", "weight", "web", "ctl3", "7"])
        .expect("weight");
    wait_all(&cluster, "weight from ctl2", "web", "ctl3", |b| {
        b["weight"] == 7
    });

    // ctl3 is down while ctl1 enables the drained backend; its state file still says drained.
    cluster.nodes[2].vipd.kill9();
    std::thread::sleep(Duration::from_millis(100));
    cluster.nodes[0]
        .vipd
        .cli(&["backend", "enable", "lines", "ctl2"])
        .expect("enable");
    cluster.nodes[2].vipd.spawn();
    wait_all(
        &cluster,
        "enable while ctl3 was down",
        "lines",
        "ctl2",
        |b| b["admin"] == "enabled" && b["slots"].as_u64().is_some_and(|s| s > 0),
    );
    // Its own state file's weight (older than nothing else) stays what the cluster says.
    wait_all(&cluster, "weight after the restart", "web", "ctl3", |b| {
        b["weight"] == 7
    });
    // And the tables are the same on every node again (same slots per backend).
    let slots = |i: usize| -> Vec<u64> {
        let s = cluster.nodes[i].vipd.status_json();
        ["ctl1", "ctl2", "ctl3"]
            .iter()
            .map(|b| backend(&s, "web", b)["slots"].as_u64().unwrap_or(0))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while !(slots(0) == slots(1) && slots(1) == slots(2)) {
        assert!(
            Instant::now() < deadline,
            "tables differ: {:?} {:?} {:?}",
            slots(0),
            slots(1),
            slots(2)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
