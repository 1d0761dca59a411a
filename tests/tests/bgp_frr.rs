//! Routed VIPs with real routers (issue 18): three vipd in cluster mode, each with FRR
//! (zebra + bgpd) redistributing vipd's route table (`ip import-table`, `redistribute
//! table`), peering with a router namespace running FRR with ECMP (`maximum-paths`, L4
//! multipath hash). A client behind the router reaches the routed VIP; the router spreads
//! flows over all three balancers, the backends answer directly (DSR). A balancer's standby
//! withdraws its route and the router converges; long-lived connections to the backends
//! survive it (every balancer has the same tables). BFD and a balancer's crash are not in
//! this test yet.
mod common;

use std::time::{Duration, Instant};

use common::{node_ip, Cluster, HEARTBEAT, TEST_TIMING};
use vip_tests::{frr::Frr, privileged, servers::LineClient, veth_pair, NetNs};

const RVIP: &str = "10.88.0.100";
const TABLE: u32 = 201;
const ROUTER: &str = "10.77.0.254";

fn routed_vips(n: usize) -> String {
    let mut c = String::new();
    for (name, port, check) in [("rweb", 80, "http"), ("rlines", 7000, "tcp")] {
        c.push_str(&format!(
            "\n[[vip]]\nname = \"{name}\"\naddress = \"{RVIP}\"\nport = {port}\nannounce = \"bgp\"\n\
             table_size = 251\ncheck = {{ kind = \"{check}\" }}\n"
        ));
        for b in 0..n {
            c.push_str(&format!(
                "[[vip.backend]]\nname = \"ctl{}\"\naddress = \"{}\"\nport = {port}\n",
                b + 1,
                node_ip(b)
            ));
        }
    }
    c
}

fn node_frr(i: usize) -> String {
    format!(
        "frr defaults datacenter\nip import-table {TABLE}\nrouter bgp {asn}\n bgp router-id {ip}\n \
         no bgp ebgp-requires-policy\n neighbor {ROUTER} remote-as 65000\n \
         neighbor {ROUTER} timers 1 3\n address-family ipv4 unicast\n  redistribute table {TABLE}\n \
         exit-address-family\n",
        asn = 65011 + i,
        ip = node_ip(i)
    )
}

fn router_frr(n: usize) -> String {
    let mut c = format!(
        "frr defaults datacenter\nrouter bgp 65000\n bgp router-id {ROUTER}\n no bgp ebgp-requires-policy\n \
         bgp bestpath as-path multipath-relax\n"
    );
    for i in 0..n {
        c.push_str(&format!(
            " neighbor {ip} remote-as {asn}\n neighbor {ip} timers 1 3\n",
            ip = node_ip(i),
            asn = 65011 + i
        ));
    }
    c.push_str(" address-family ipv4 unicast\n  maximum-paths 8\n exit-address-family\n");
    c
}

/// The router's next hops for the routed VIP.
fn next_hops(router: &NetNs) -> Vec<String> {
    let out = router.exec(&[
        "sh",
        "-c",
        &format!("ip route show {RVIP} 2>/dev/null || true"),
    ]);
    let mut hops: Vec<String> = out
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "via")
        .map(|w| w[1].to_owned())
        .collect();
    hops.sort();
    hops
}

fn wait_hops(router: &NetNs, want: &[String], what: &str, show: impl Fn() -> String) -> Duration {
    let start = Instant::now();
    loop {
        let have = next_hops(router);
        if have == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: router next hops {have:?}, want {want:?}\n{}",
            show()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ecmp_spreads_flows_and_a_withdraw_keeps_connections() {
    if !privileged("ecmp_spreads_flows_and_a_withdraw_keeps_connections") {
        return;
    }
    let n = 3;
    let mut cluster =
        Cluster::launch_sized(n, &format!("{TEST_TIMING}\n{HEARTBEAT}"), &routed_vips(n));
    cluster.wait_single_owner(Duration::from_secs(20));
    // The router on the LAN, the client behind it.
    let r = cluster.lan.add_host(254);
    let router = &cluster.lan.hosts[r].ns;
    let client = NetNs::new("vcl");
    veth_pair(router, "rc0", &client, "c0");
    router.exec(&["ip", "addr", "add", "10.99.0.1/24", "dev", "rc0"]);
    client.exec(&["ip", "addr", "add", "10.99.0.2/24", "dev", "c0"]);
    client.exec(&["ip", "route", "add", "default", "via", "10.99.0.1"]);
    router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    router.exec(&["sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1"]);
    let mut frrs = vec![Frr::start(router, &router_frr(n))];
    for i in 0..n {
        let ns = &cluster.host(i).ns;
        ns.exec(&["ip", "route", "add", "10.99.0.0/24", "via", ROUTER]);
        frrs.push(Frr::start(ns, &node_frr(i)));
    }
    let all: Vec<String> = (0..n).map(node_ip).collect();
    let show = || {
        let mut s = frrs[0].vtysh("show bgp summary");
        s += &frrs[0].vtysh("show bgp ipv4 unicast");
        for i in 0..n {
            s += &format!(
                "ctl{}: {}",
                i + 1,
                frrs[i + 1].vtysh("show bgp ipv4 unicast")
            );
            s += &cluster
                .host(i)
                .ns
                .exec(&["sh", "-c", "ip route show table all proto 201; true"]);
        }
        s
    };
    let took = wait_hops(
        router,
        &all,
        "every balancer announces the routed VIP",
        show,
    );
    eprintln!("router: {RVIP} over {n} balancers after {took:?}");

    // Flows from many source ports: every balancer gets some, every request answered.
    let before: Vec<u64> = (0..n).map(|i| vip_packets(&cluster, i)).collect();
    let mut conns = client
        .run(|| {
            (0..60)
                .map(|_| {
                    let mut c = LineClient::connect(format!("{RVIP}:7000").parse().expect("addr"))?;
                    let who = c.ask()?;
                    Ok((c, who))
                })
                .collect::<std::io::Result<Vec<_>>>()
        })
        .expect("60 long-lived connections through the routed VIP");
    let spread: Vec<u64> = (0..n)
        .map(|i| vip_packets(&cluster, i) - before[i])
        .collect();
    assert!(
        spread.iter().all(|&p| p > 0),
        "ECMP spread per balancer: {spread:?}"
    );
    eprintln!("packets per balancer for 60 connections: {spread:?}");

    // ctl1 in standby: its route goes, the router converges on the other two, and every
    // long-lived connection still reaches the same backend.
    cluster.nodes[0]
        .vipd
        .cli(&["node", "standby"])
        .expect("standby");
    let took = wait_hops(router, &all[1..], "ctl1's route withdrawn", show);
    eprintln!("router converged {took:?} after ctl1's standby");
    conns = client.run(move || {
        for (c, who) in &mut conns {
            let again = c
                .ask()
                .expect("a long-lived connection broke across the withdraw");
            assert_eq!(&again, who, "a connection moved to another backend");
        }
        conns
    });
    cluster.nodes[0]
        .vipd
        .cli(&["node", "unstandby"])
        .expect("unstandby");
    wait_hops(router, &all, "ctl1's route back", show);
    client.run(move || {
        for (c, who) in &mut conns {
            assert_eq!(&c.ask().expect("after the return"), who);
        }
    });
    drop(frrs);
}

/// Packets node `i`'s data plane counted for the routed VIPs.
fn vip_packets(cluster: &Cluster, i: usize) -> u64 {
    let s = cluster.nodes[i].vipd.status_json();
    s["vips"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter(|v| v["address"] == RVIP)
                .filter_map(|v| v["packets"].as_u64())
                .sum()
        })
        .unwrap_or(0)
}
