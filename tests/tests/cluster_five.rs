//! Five controllers, all voters (quorum 3): gossip and failure detection sized from the
//! member count. Two voters die at once, the owner among them: the three left take the VIP
//! over, never two owners. A 2 | 3 partition with the owner in the pair: the pair lets go
//! within its lease, the three take over, never two owners, and after the heal nothing
//! moves back.
mod common;

use std::time::{Duration, Instant};

use common::{node_ip, Cluster, TEST_TIMING};
use vip_tests::privileged;

const NODES: usize = 5;

/// Who holds the VIP, sampled for `for_`: every sample's holders, with when.
fn sample(cluster: &Cluster, among: &[usize], for_: Duration) -> Vec<(Duration, Vec<usize>)> {
    let start = Instant::now();
    let mut log = Vec::new();
    while start.elapsed() < for_ {
        let holders: Vec<usize> = cluster.holders(among).into_iter().map(|h| h.0).collect();
        log.push((start.elapsed(), holders));
        std::thread::sleep(Duration::from_millis(40));
    }
    log
}

fn first_other_owner(log: &[(Duration, Vec<usize>)], old: &[usize]) -> Option<(Duration, usize)> {
    log.iter().find_map(|(at, h)| match h[..] {
        [n] if !old.contains(&n) => Some((*at, n)),
        _ => None,
    })
}

#[test]
fn two_voters_dying_at_once_leave_three_that_take_over() {
    if !privileged("two_voters_dying_at_once_leave_three_that_take_over") {
        return;
    }
    let mut cluster = Cluster::start_sized(NODES, TEST_TIMING, "");
    let owner = cluster.wait_single_owner(Duration::from_secs(15));
    let other = (owner + 1) % NODES;
    let dead = [owner, other];
    let alive: Vec<usize> = (0..NODES).filter(|i| !dead.contains(i)).collect();
    for &i in &dead {
        let iface = cluster.host(i).iface.clone();
        cluster
            .host(i)
            .ns
            .exec(&["ip", "link", "set", &iface, "down"]);
        cluster.nodes[i].vipd.kill9();
    }
    let log = sample(&cluster, &alive, Duration::from_secs(4));
    assert!(
        log.iter().all(|(_, h)| h.len() <= 1),
        "two owners among the survivors: {log:?}"
    );
    let (took, new_owner) = first_other_owner(&log, &dead).expect("the three took over");
    eprintln!(
        "{} and {} killed at once: {} owns the VIP after {took:?}",
        cluster.nodes[owner].name, cluster.nodes[other].name, cluster.nodes[new_owner].name
    );
    assert!(took < Duration::from_secs(3), "{log:?}");
    let s = cluster.nodes[new_owner].vipd.status_json();
    assert_eq!(s["cluster"]["in_quorum"], true, "{s}");
    assert!(
        log.iter()
            .filter(|(at, _)| *at > took)
            .all(|(_, h)| h == &vec![new_owner]),
        "the VIP moved again: {log:?}"
    );
}

/// Node group `side` drops everything from the nodes outside it (nftables in each of its
/// namespaces), and the others drop it from `side`: a 2 | 3 partition.
fn split(cluster: &Cluster, side: &[usize]) {
    for i in 0..NODES {
        let away: Vec<String> = (0..NODES)
            .filter(|j| side.contains(j) != side.contains(&i))
            .map(node_ip)
            .collect();
        let set = away.join(", ");
        let rules = format!(
            "table inet vipsplit {{\n chain in {{ type filter hook input priority -300; ip saddr {{ {set} }} drop; }}\n chain out {{ type filter hook output priority -300; ip daddr {{ {set} }} drop; }}\n}}\n"
        );
        let file = cluster.dir.join(format!("split-{i}.nft"));
        std::fs::write(&file, rules).expect("nft rules");
        cluster
            .host(i)
            .ns
            .exec(&["nft", "-f", file.to_str().expect("utf-8")]);
    }
}

fn heal(cluster: &Cluster) {
    for i in 0..NODES {
        cluster
            .host(i)
            .ns
            .exec(&["nft", "delete", "table", "inet", "vipsplit"]);
    }
}

#[test]
fn a_two_three_partition_leaves_the_vip_with_the_three_and_heals_without_moving_back() {
    if !privileged(
        "a_two_three_partition_leaves_the_vip_with_the_three_and_heals_without_moving_back",
    ) {
        return;
    }
    let cluster = Cluster::start_sized(NODES, TEST_TIMING, "");
    let all: Vec<usize> = (0..NODES).collect();
    let owner = cluster.wait_single_owner(Duration::from_secs(15));
    let pair = [owner, (owner + 1) % NODES];
    split(&cluster, &pair);
    let log = sample(&cluster, &all, Duration::from_secs(4));
    assert!(
        log.iter().all(|(_, h)| h.len() <= 1),
        "two owners during the partition: {log:?}"
    );
    let last_old = log
        .iter()
        .filter(|(_, h)| h.contains(&owner))
        .map(|(at, _)| *at)
        .max()
        .unwrap_or_default();
    let (took, new_owner) = first_other_owner(&log, &pair).expect("the three took over");
    eprintln!(
        "2 | 3 split: {} (minority) last held {last_old:?} after the cut; {} owns from {took:?}",
        cluster.nodes[owner].name, cluster.nodes[new_owner].name
    );
    assert!(
        last_old < Duration::from_millis(800),
        "the minority must let go within its lease (600 ms): {log:?}"
    );
    for &i in &pair {
        let s = cluster.nodes[i].vipd.status_json();
        assert_eq!(s["cluster"]["in_quorum"], false, "{s}");
    }
    heal(&cluster);
    let log = sample(&cluster, &all, Duration::from_secs(3));
    assert!(
        log.iter()
            .all(|(_, h)| h.is_empty() || h == &vec![new_owner]),
        "moved after the heal: {log:?}"
    );
    assert_eq!(
        cluster.wait_single_owner(Duration::from_secs(5)),
        new_owner,
        "the VIP moved back after the heal"
    );
}
