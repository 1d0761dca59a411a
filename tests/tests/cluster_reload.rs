//! Adding and removing a VIP by `vipd reload` in cluster mode, with three real daemons in
//! network namespaces: added on every node, exactly one node claims the new address and
//! traffic to it reaches every backend through that owner; removed on every node, the
//! address leaves every node and no node reports it. Added on one node first (a rolling
//! reload whose later nodes prefer themselves), the later nodes never claim it over the
//! first: never two owners, sampled every few milliseconds.
//!
//! The scenarios run one at a time (each runs three vipd) so timing is not at the mercy of
//! the others on a small machine.
mod common;

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use common::{node_ip, Cluster};
use vip_tests::{fmt_mac, privileged, servers};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The VIP address the reloads add, on the test LAN next to `common::VIP`.
const NEW_VIP: &str = "10.77.0.101";
/// `common::TEST_TIMING`'s lease: an added VIP is claimed no sooner than this after it was
/// added on a node.
const LEASE: Duration = Duration::from_millis(600);

/// A `[[vip]]` table for [`NEW_VIP`] (HTTP on 80, every controller a backend), with `extra`
/// keys (e.g. preferences).
fn new_vip(extra: &str) -> String {
    let mut t = format!(
        "\n[[vip]]\nname = \"api\"\naddress = \"{NEW_VIP}\"\nport = 80\ntable_size = 251\n\
         check = {{ kind = \"http\" }}\n{extra}"
    );
    for b in 0..3 {
        t.push_str(&format!(
            "[[vip.backend]]\nname = \"ctl{}\"\naddress = \"{}\"\nport = 80\n",
            b + 1,
            node_ip(b)
        ));
    }
    t
}

/// Writes node `i`'s config file and reloads it; returns vipd's answer.
fn reload(cluster: &Cluster, i: usize, text: &str) -> String {
    let vipd = &cluster.nodes[i].vipd;
    std::fs::write(&vipd.config, text).expect("write config");
    let answer = vipd.cli(&["reload"]).expect("reload applies");
    eprintln!("{}: {answer}", cluster.nodes[i].name);
    answer
}

/// A holder sample: node, when it was asked, and how long its lease still ran.
#[derive(Clone, Copy, Debug)]
struct Held {
    node: usize,
    at: Instant,
    until: Instant,
}

/// Samples every node's claim on `vip` for `span` and checks safety on the way: a node seen
/// holding it must not do so while another node's lease, as last reported, still runs.
fn sample(cluster: &Cluster, vip: &str, span: Duration, log: &mut Vec<Held>) {
    let all: Vec<usize> = (0..cluster.nodes.len()).collect();
    let end = Instant::now() + span;
    while Instant::now() < end {
        let at = Instant::now();
        for (node, left) in cluster.holders_of(vip, &all) {
            let held = Held {
                node,
                at,
                until: at + left,
            };
            if let Some(other) = log.iter().rev().find(|h| h.node != node && h.until > at) {
                panic!("two owners of {vip}: {other:?} still valid when {held:?} was seen");
            }
            log.push(held);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What every node's status says about `vip`: (owner, epoch) per node, `None` when the node
/// does not report it.
fn reported(cluster: &Cluster, vip: &str) -> Vec<Option<(String, u64)>> {
    let of = |s: &serde_json::Value| {
        let owners = s["cluster"]["owners"].as_array()?;
        let o = owners.iter().find(|o| o["vip"] == vip)?;
        let owner = o["owner"].as_str().unwrap_or("none").to_owned();
        Some((owner, o["epoch"].as_u64().unwrap_or(0)))
    };
    (cluster.nodes.iter())
        .map(|n| of(&n.vipd.status_json()))
        .collect()
}

/// Waits until exactly one node holds `vip` and every node names it the owner.
fn wait_owner_of(cluster: &Cluster, vip: &str, timeout: Duration) -> usize {
    let all: Vec<usize> = (0..cluster.nodes.len()).collect();
    let deadline = Instant::now() + timeout;
    loop {
        let holders = cluster.holders_of(vip, &all);
        assert!(holders.len() <= 1, "two owners of {vip}: {holders:?}");
        if let [(owner, _)] = holders[..] {
            let name = cluster.nodes[owner].name.clone();
            let seen = reported(cluster, vip);
            if seen
                .iter()
                .all(|r| r.as_ref().is_some_and(|(o, _)| *o == name))
            {
                return owner;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no single agreed owner of {vip}: {holders:?}\n{}",
            cluster.nodes[0].vipd.cli(&["status"]).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Interfaces of node `i` that carry `addr`.
fn carriers(cluster: &Cluster, i: usize, addr: &str) -> Vec<String> {
    let out = cluster.host(i).ns.exec(&["ip", "-o", "addr", "show"]);
    let on = out.lines().filter(|l| {
        l.split_whitespace()
            .any(|w| w.split('/').next() == Some(addr))
    });
    let dev = |l: &str| l.split_whitespace().nth(1).unwrap_or_default().to_owned();
    on.map(dev).collect()
}

#[test]
fn reload_adds_a_vip_on_every_node_then_removes_it() {
    if !privileged("reload_adds_a_vip_on_every_node_then_removes_it") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start("");
    let old_owner = cluster.wait_single_owner(Duration::from_secs(10));
    let n = cluster.nodes.len();
    let files: Vec<String> = (cluster.nodes.iter())
        .map(|node| std::fs::read_to_string(&node.vipd.config).expect("config"))
        .collect();

    // Add: every node reloads a file with one more VIP address.
    for (i, file) in files.iter().enumerate() {
        let answer = reload(&cluster, i, &format!("{file}{}", new_vip("")));
        assert!(answer.contains("(1 added, 0 removed"), "{answer}");
        assert!(
            answer.contains(&format!("cluster VIP addresses added: {NEW_VIP}")),
            "{answer}"
        );
    }
    let owner = wait_owner_of(&cluster, NEW_VIP, Duration::from_secs(10));
    let owner_name = cluster.nodes[owner].name.clone();
    eprintln!("{NEW_VIP} owned by {owner_name}");
    assert_eq!(
        reported(&cluster, NEW_VIP),
        vec![Some((owner_name.clone(), 1)); n]
    );
    for i in 0..n {
        let on = carriers(&cluster, i, NEW_VIP);
        let iface = cluster.host(i).iface.clone();
        assert!(on.contains(&"lo".to_owned()), "node {i}: {on:?}");
        assert_eq!(on.contains(&iface), i == owner, "node {i}: {on:?}");
    }
    // Traffic to the new address reaches every controller's service through its owner.
    let c = cluster.client();
    let to = SocketAddr::new(NEW_VIP.parse::<IpAddr>().expect("ip"), 80);
    let deadline = Instant::now() + Duration::from_secs(10);
    let served: BTreeSet<String> = loop {
        let served: BTreeSet<String> = c.ns.run(move || {
            (0..30)
                .filter_map(|_| servers::http_get(to).ok().map(|(_, b)| b))
                .collect()
        });
        if served.len() == 3 || Instant::now() > deadline {
            break served;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(served.len(), 3, "balanced over all controllers: {served:?}");
    let failed = c.ns.run(move || {
        (0..40)
            .filter(|_| servers::http_get(to).map_or(true, |(_, body)| body.is_empty()))
            .count()
    });
    assert_eq!(failed, 0, "requests to {NEW_VIP} failed");
    let neigh = c.ns.exec(&["ip", "neigh", "show", NEW_VIP]);
    assert!(
        neigh.contains(&fmt_mac(&cluster.host(owner).mac)),
        "client resolves {NEW_VIP} to its owner: {neigh}"
    );

    // Remove: every node reloads its original file.
    for (i, file) in files.iter().enumerate() {
        let answer = reload(&cluster, i, file);
        assert!(answer.contains("(0 added, 1 removed"), "{answer}");
        assert!(answer.contains(&format!("removed: {NEW_VIP}")), "{answer}");
    }
    for i in 0..n {
        assert_eq!(
            carriers(&cluster, i, NEW_VIP),
            Vec::<String>::new(),
            "node {i}"
        );
        let s = cluster.nodes[i].vipd.status_json();
        let names = s["vips"].as_array().expect("vips").iter();
        assert!(names.clone().all(|v| v["name"] != "api"), "node {i}: {s}");
    }
    assert_eq!(reported(&cluster, NEW_VIP), vec![None; n]);
    let said = cluster.nodes[owner].vipd.status_json()["cluster"]["alerts"].to_string();
    assert!(
        said.contains(&format!("vip {NEW_VIP}: removed from the config: released")),
        "{said}"
    );
    // The VIP that was there all along never moved.
    assert_eq!(cluster.wait_single_owner(Duration::from_secs(2)), old_owner);
    assert_eq!(
        reported(&cluster, &common::VIP.to_string())
            .iter()
            .map(|r| r.as_ref().map(|(_, e)| *e))
            .collect::<Vec<_>>(),
        vec![Some(1); n]
    );
}

#[test]
fn reload_adding_a_vip_on_one_node_first_never_yields_two_owners() {
    if !privileged("reload_adding_a_vip_on_one_node_first_never_yields_two_owners") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start("");
    cluster.wait_single_owner(Duration::from_secs(10));
    let files: Vec<String> = (cluster.nodes.iter())
        .map(|node| std::fs::read_to_string(&node.vipd.config).expect("config"))
        .collect();
    // Each node's new file prefers that node: a later node that did not wait to learn the
    // first one's claim would claim the address over it.
    let mine = |i: usize| new_vip(&format!("preferences = [\"ctl{}\"]\n", i + 1));
    let mut log = Vec::new();
    let added = Instant::now();
    reload(&cluster, 0, &format!("{}{}", files[0], mine(0)));
    let said = cluster.nodes[0].vipd.status_json()["cluster"]["alerts"].to_string();
    assert!(
        said.contains(&format!("added vip {NEW_VIP} (settling 600ms first)")),
        "{said}"
    );
    while log.is_empty() {
        assert!(
            added.elapsed() < Duration::from_secs(5),
            "ctl1 never claimed"
        );
        sample(&cluster, NEW_VIP, Duration::from_millis(20), &mut log);
    }
    let claimed = log[0].at - added;
    eprintln!("ctl1 claimed {NEW_VIP} {claimed:?} after its reload");
    // A sample's time is taken just before its status requests (a few ms).
    let slack = Duration::from_millis(50);
    assert!(
        claimed + slack >= LEASE,
        "claimed before settling: {claimed:?}"
    );
    sample(&cluster, NEW_VIP, Duration::from_millis(500), &mut log);
    reload(&cluster, 1, &format!("{}{}", files[1], mine(1)));
    sample(&cluster, NEW_VIP, Duration::from_millis(300), &mut log);
    reload(&cluster, 2, &format!("{}{}", files[2], mine(2)));
    sample(&cluster, NEW_VIP, Duration::from_secs(2), &mut log);
    let others: Vec<&Held> = log.iter().filter(|h| h.node != 0).collect();
    assert!(others.is_empty(), "a later node claimed: {others:?}");
    eprintln!("{} samples, all of ctl1 holding {NEW_VIP}", log.len());
    assert_eq!(
        reported(&cluster, NEW_VIP),
        vec![Some(("ctl1".to_owned(), 1)); 3]
    );
}
