//! Three controllers, each running vipd in cluster mode and a backend service, on one LAN
//! with a client: they agree on one owner of the VIP (the only node answering ARP for it),
//! traffic is balanced over all three through the owner, and when the owner dies (its link
//! cut, its vipd frozen) another node takes over within a second, the client's neighbour
//! entry moves to it, and long-lived connections to surviving backends keep working.
mod common;

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use common::{Cluster, Node, VIP};
use vip_tests::{fmt_mac, privileged, servers};

#[test]
fn owner_death_moves_the_vip_within_a_second_and_keeps_connections() {
    if !privileged("owner_death_moves_the_vip_within_a_second_and_keeps_connections") {
        return;
    }
    let cluster = Cluster::start("");
    let owner_idx = cluster.wait_single_owner(Duration::from_secs(10));
    let owner = cluster.nodes[owner_idx].name.clone();
    let nodes = &cluster.nodes;
    eprintln!(
        "owner: {owner}\n{}",
        nodes[0].vipd.cli(&["status"]).unwrap_or_default()
    );
    // Shared health: every node builds the same tables from the agreed view.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tables: Vec<String> = nodes
            .iter()
            .map(|n| {
                let s = n.vipd.status_json();
                let slots: Vec<String> = s["vips"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|v| {
                        v["backends"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|b| format!("{}/{}={}", v["name"], b["name"], b["slots"]))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                slots.join(" ")
            })
            .collect();
        if tables.windows(2).all(|w| w[0] == w[1]) && !tables[0].contains("=0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes disagree on tables: {tables:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let c = cluster.client();
    // Traffic through the owner reaches all three controllers' services.
    let web = SocketAddr::new(IpAddr::V4(VIP), 80);
    let served: std::collections::BTreeSet<String> = c.ns.run(move || {
        (0..40)
            .filter_map(|_| servers::http_get(web).ok().map(|(_, b)| b))
            .collect()
    });
    assert_eq!(served.len(), 3, "balanced over all controllers: {served:?}");
    let owner_mac = c.ns.exec(&["ip", "neigh", "show", &VIP.to_string()]);
    assert!(
        owner_mac.contains(&fmt_mac(&cluster.host(owner_idx).mac)),
        "client resolves the VIP to the owner: {owner_mac}"
    );

    // Long-lived connections, each to some backend.
    let lines = SocketAddr::new(IpAddr::V4(VIP), 7000);
    let conns = c.ns.run(move || {
        (0..8)
            .map(|_| {
                let mut l = servers::LineClient::connect(lines).expect("connect");
                let who = l.ask().expect("ask");
                (l, who)
            })
            .collect::<Vec<_>>()
    });

    // The owner dies: its link goes down and its vipd is frozen.
    let dead = cluster.host(owner_idx);
    nodes[owner_idx].vipd.signal(libc::SIGSTOP);
    let cut = Instant::now();
    dead.ns.exec(&["ip", "link", "set", &dead.iface, "down"]);
    let survivors: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != owner_idx)
        .map(|(_, n)| n)
        .collect();
    let deadline = cut + Duration::from_secs(5);
    let new_owner = loop {
        let owners: Vec<String> = survivors
            .iter()
            .filter_map(|n| {
                let s = n.vipd.status_json();
                s["cluster"]["owners"]
                    .as_array()?
                    .iter()
                    .find(|o| o["vip"] == VIP.to_string() && o["lease_left_ms"].as_f64().is_some())
                    .map(|_| s["node"].as_str().unwrap_or_default().to_owned())
            })
            .collect();
        assert!(owners.len() <= 1, "two owners: {owners:?}");
        if owners.len() == 1 {
            break owners[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no takeover:\n{}",
            survivors[0].vipd.cli(&["status"]).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let takeover = cut.elapsed();
    eprintln!("takeover by {new_owner} after {takeover:?}");
    assert_ne!(new_owner, owner);
    assert!(
        takeover < Duration::from_millis(1500),
        "takeover took {takeover:?}"
    );
    // The client's neighbour entry follows the gratuitous ARP.
    let new_mac = fmt_mac(&cluster.host(cluster.index_of(&new_owner)).mac);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let neigh = c.ns.exec(&["ip", "neigh", "show", &VIP.to_string()]);
        if neigh.contains(&new_mac) {
            break;
        }
        assert!(Instant::now() < deadline, "client still has {neigh}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Long-lived connections to surviving backends keep working through the new owner.
    let dead_name = owner.clone();
    let (kept, lost) = c.ns.run(move || {
        let (mut kept, mut lost) = (0, 0);
        for (mut l, who) in conns {
            if who == dead_name {
                continue;
            }
            match l.ask() {
                Ok(again) if again == who => kept += 1,
                _ => lost += 1,
            }
        }
        (kept, lost)
    });
    eprintln!("long-lived connections to survivors: {kept} kept, {lost} lost");
    assert!(kept > 0 && lost == 0, "kept {kept}, lost {lost}");
}

/// `vipd vip move`: the owner hands the VIP to the named node, which answers for it at once;
/// every long-lived connection keeps its backend (the old owner is alive, so none is lost).
/// A non-owner refuses and names the owner.
#[test]
fn operator_move_hands_the_vip_over_and_keeps_connections() {
    if !privileged("operator_move_hands_the_vip_over_and_keeps_connections") {
        return;
    }
    let cluster = Cluster::start("");
    let owner_idx = cluster.wait_single_owner(Duration::from_secs(10));
    let owner = cluster.nodes[owner_idx].name.clone();
    let target_idx = (owner_idx + 1) % cluster.nodes.len();
    let bystander = (owner_idx + 2) % cluster.nodes.len();
    let target = cluster.nodes[target_idx].name.clone();
    let vip = VIP.to_string();
    let refused = cluster.nodes[bystander]
        .vipd
        .cli(&["vip", "move", &vip, &target])
        .expect_err("only the owner moves");
    assert!(refused.contains(&format!("owned by {owner}")), "{refused}");

    let c = cluster.client();
    let lines = SocketAddr::new(IpAddr::V4(VIP), 7000);
    let conns = c.ns.run(move || {
        (0..8)
            .map(|_| {
                let mut l = servers::LineClient::connect(lines).expect("connect");
                let who = l.ask().expect("ask");
                (l, who)
            })
            .collect::<Vec<_>>()
    });
    let moved = cluster.nodes[owner_idx]
        .vipd
        .cli(&["vip", "move", &vip, &target])
        .expect("move");
    assert!(moved.contains("handed over"), "{moved}");
    let new_owner = cluster.wait_single_owner(Duration::from_secs(3));
    assert_eq!(new_owner, target_idx, "the named node owns the VIP");
    let new_mac = fmt_mac(&cluster.host(target_idx).mac);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let neigh = c.ns.exec(&["ip", "neigh", "show", &vip]);
        if neigh.contains(&new_mac) {
            break;
        }
        assert!(Instant::now() < deadline, "client still has {neigh}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (kept, lost) = c.ns.run(move || {
        let (mut kept, mut lost) = (0, 0);
        for (mut l, who) in conns {
            match l.ask() {
                Ok(again) if again == who => kept += 1,
                _ => lost += 1,
            }
        }
        (kept, lost)
    });
    assert_eq!((kept, lost), (8, 0), "connections through the move");
}
