//! Membership over two networks (Corosync's redundant rings): with `secondary_listen` and
//! `secondary_peers` every gossip datagram goes out on both links. The owner's first link
//! cut (its gossip port dropped, nftables): it stays a member and keeps its VIP, nobody
//! counts a member down, and the others' status shows the silent link. Cut on both links:
//! it is declared down, lets go, and the VIP moves.
mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use vip_tests::privileged;

const SECOND_LINK: &str = r#"secondary_listen = "@SECOND_IP@:7947"
secondary_peers = ["10.78.0.11:7947", "10.78.0.12:7947", "10.78.0.13:7947"]"#;

/// Drops node `i`'s gossip on `ports` (UDP, both directions), replacing an earlier cut.
fn cut_gossip(cluster: &Cluster, i: usize, ports: &[u16]) {
    let ns = &cluster.host(i).ns;
    let set = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let rules = format!(
        "table inet vipring\ndelete table inet vipring\ntable inet vipring {{\n chain in {{ type filter hook input priority -300; udp dport {{ {set} }} drop; }}\n chain out {{ type filter hook output priority -300; udp dport {{ {set} }} drop; }}\n}}\n"
    );
    let file = cluster.dir.join(format!("ring-{i}.nft"));
    std::fs::write(&file, rules).expect("nft rules");
    ns.exec(&["nft", "-f", file.to_str().expect("utf-8")]);
}

fn down_events(cluster: &Cluster, i: usize) -> u64 {
    cluster.nodes[i].vipd.status_json()["cluster"]["member_down_events"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

/// The links node `viewer` has not heard `member` on lately.
fn silent_links(cluster: &Cluster, viewer: usize, member: &str) -> Vec<String> {
    let s = cluster.nodes[viewer].vipd.status_json();
    s["cluster"]["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == member)
        .and_then(|m| m["silent_links"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_member_stays_while_one_gossip_link_carries_it_and_moves_when_both_are_cut() {
    if !privileged("a_member_stays_while_one_gossip_link_carries_it_and_moves_when_both_are_cut") {
        return;
    }
    let cluster = Cluster::start(SECOND_LINK);
    let all: Vec<usize> = (0..3).collect();
    let owner = cluster.wait_single_owner(Duration::from_secs(10));
    let name = cluster.nodes[owner].name.clone();
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != owner).collect();
    // Both links carry every member once the greetings went round.
    std::thread::sleep(Duration::from_secs(3));
    for &o in &others {
        assert_eq!(silent_links(&cluster, o, &name), Vec::<String>::new());
    }
    let downs_before: Vec<u64> = all.iter().map(|&i| down_events(&cluster, i)).collect();

    // The first link cut: many suspicion timeouts and leases long, nothing moves.
    cut_gossip(&cluster, owner, &[7946]);
    let cut = Instant::now();
    let mut samples = 0;
    while cut.elapsed() < Duration::from_secs(4) {
        let holders: Vec<usize> = cluster.holders(&all).into_iter().map(|h| h.0).collect();
        assert_eq!(
            holders,
            vec![owner],
            "the VIP moved with one link still up, {:?} after the cut\n{}",
            cut.elapsed(),
            cluster.nodes[others[0]]
                .vipd
                .cli(&["status"])
                .unwrap_or_default()
        );
        samples += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let downs: Vec<u64> = all.iter().map(|&i| down_events(&cluster, i)).collect();
    assert_eq!(downs, downs_before, "member-down events with one link up");
    for &o in &others {
        assert_eq!(
            silent_links(&cluster, o, &name),
            vec!["primary".to_owned()],
            "{} shows {name}'s silent link",
            cluster.nodes[o].name
        );
    }
    eprintln!("first link cut for 4 s: {samples} samples, always one owner ({name})");

    // Both links cut: a member lost for good; the other two take the VIP over.
    cut_gossip(&cluster, owner, &[7946, 7947]);
    let cut = Instant::now();
    let moved = loop {
        let holders: Vec<usize> = cluster.holders(&all).into_iter().map(|h| h.0).collect();
        if let [h] = holders[..] {
            if h != owner {
                break cut.elapsed();
            }
        }
        assert!(
            cut.elapsed() < Duration::from_secs(5),
            "no takeover with both links cut: {holders:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("both links cut: the VIP moved after {moved:?}");
    for &o in &others {
        assert!(down_events(&cluster, o) > downs_before[o], "no member-down");
    }
    cluster
        .host(owner)
        .ns
        .exec(&["nft", "delete", "table", "inet", "vipring"]);
}
