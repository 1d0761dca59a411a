//! No false takeover on a lossy network: 5 % of the packets between controllers dropped at
//! random (nftables `numgen random`; this kernel has no netem) for ten minutes
//! (`VIP_LOSS_SECS` to change), with the heartbeat detector on (the lab's timings) next to
//! SWIM. No node may declare another down (SWIM or heartbeat silence), and the VIP must
//! never move.
mod common;

use std::time::{Duration, Instant};

use common::{node_ip, Cluster, HEARTBEAT};
use vip_tests::{privileged, progress};

/// Every node drops 5 % of what it receives from the other controllers.
fn lossy(cluster: &Cluster) {
    for i in 0..cluster.nodes.len() {
        let others: Vec<String> = (0..cluster.nodes.len())
            .filter(|&j| j != i)
            .map(node_ip)
            .collect();
        let rules = format!(
            "table inet viploss {{\n chain in {{ type filter hook input priority -300; ip saddr {{ {} }} numgen random mod 100 < 5 counter drop; }}\n}}\n",
            others.join(", ")
        );
        let file = cluster.dir.join(format!("loss-{i}.nft"));
        std::fs::write(&file, rules).expect("nft rules");
        cluster
            .host(i)
            .ns
            .exec(&["nft", "-f", file.to_str().expect("utf-8")]);
    }
}

#[test]
fn five_percent_loss_between_controllers_causes_no_false_takeover() {
    if !privileged("five_percent_loss_between_controllers_causes_no_false_takeover") {
        return;
    }
    let secs: u64 = std::env::var("VIP_LOSS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let cluster = Cluster::start(HEARTBEAT);
    let owner = cluster.wait_single_owner(Duration::from_secs(10));
    let owner_name = cluster.nodes[owner].name.clone();
    let epoch0 = cluster.nodes[owner].vipd.status_json()["cluster"]["owners"][0]["epoch"].clone();
    lossy(&cluster);
    progress!("loss: 5 % between the controllers for {secs} s, {owner_name} owns the VIP");
    let start = Instant::now();
    let mut next_report = start + Duration::from_secs(30);
    let mut samples = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        for n in &cluster.nodes {
            let s = n.vipd.status_json();
            let c = &s["cluster"];
            assert_eq!(
                c["member_down_events"],
                0,
                "false member-down after {:?} at {}:\n{}",
                start.elapsed(),
                n.name,
                n.vipd.cli(&["status"]).unwrap_or_default()
            );
            assert_eq!(
                c["owners"][0]["owner"],
                owner_name.as_str(),
                "VIP moved: {s}"
            );
            assert_eq!(c["owners"][0]["epoch"], epoch0, "VIP re-claimed: {s}");
        }
        assert_eq!(cluster.holders(&[0, 1, 2]).len(), 1, "exactly one holder");
        samples += 1;
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(30);
            progress!(
                "loss: {:.1}/{:.1} min, 0 member-down, 0 moves",
                start.elapsed().as_secs_f64() / 60.0,
                secs as f64 / 60.0
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // The rules did drop packets.
    for i in 0..cluster.nodes.len() {
        let listing = cluster
            .host(i)
            .ns
            .exec(&["nft", "list", "table", "inet", "viploss"]);
        let dropped: u64 = listing
            .split("counter packets ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        eprintln!(
            "{}: {dropped} packets from the other controllers dropped",
            cluster.nodes[i].name
        );
        assert!(
            dropped > 0,
            "no loss at {}: {listing}",
            cluster.nodes[i].name
        );
    }
    eprintln!("{samples} samples over {secs} s: no member-down, no move");
}
