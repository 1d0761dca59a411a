//! Routed VIPs with real routers (issue 18): three vipd in cluster mode, each with FRR
//! (zebra, bgpd, bfdd) redistributing vipd's route table (`ip import-table`, `redistribute
//! table`), peering with a router namespace running FRR with ECMP (`maximum-paths`, L4
//! multipath hash) and BFD. A client behind the router reaches the routed VIP; the router
//! spreads flows over all three balancers, the backends answer directly (DSR). Every balancer
//! has the same tables, so a flow keeps its backend whichever balancer the router picks:
//! long-lived connections survive a balancer's standby, drain, crash, clean stop and lost
//! link (BFD takes it out of the ECMP group within 500 ms).
mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use common::{node_ip, Cluster, HEARTBEAT, TEST_TIMING};
use vip_tests::{
    frr::{self, Frr, Peer},
    privileged,
    servers::LineClient,
    veth_pair, NetNs,
};

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

/// Balancer `i` (ctl{i+1}) as a BGP speaker: AS 65011 + i.
fn balancer(i: usize) -> Peer {
    Peer {
        address: node_ip(i),
        asn: 65011 + i as u32,
    }
}

fn router_peer() -> Peer {
    Peer {
        address: ROUTER.into(),
        asn: 65000,
    }
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

struct Routed {
    // Dropped first: the routing daemons, then the namespaces they run in.
    frrs: Vec<Frr>,
    cluster: Cluster,
    router_host: usize,
    client: NetNs,
    all: Vec<String>,
}

impl Routed {
    /// The cluster with routed VIPs, FRR on every balancer and on the router, the client
    /// behind the router; returns once the router has all `n` balancers as next hops.
    fn start(n: usize) -> Self {
        let mut cluster =
            Cluster::launch_sized(n, &format!("{TEST_TIMING}\n{HEARTBEAT}"), &routed_vips(n));
        cluster.wait_single_owner(Duration::from_secs(20));
        let router_host = cluster.lan.add_host(254);
        let router = &cluster.lan.hosts[router_host].ns;
        let client = NetNs::new("vcl");
        veth_pair(router, "rc0", &client, "c0");
        router.exec(&["ip", "addr", "add", "10.99.0.1/24", "dev", "rc0"]);
        client.exec(&["ip", "addr", "add", "10.99.0.2/24", "dev", "c0"]);
        client.exec(&["ip", "route", "add", "default", "via", "10.99.0.1"]);
        router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        router.exec(&["sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1"]);
        let balancers: Vec<Peer> = (0..n).map(balancer).collect();
        let mut frrs = vec![Frr::start(
            router,
            &frr::router_conf(&router_peer(), &balancers),
        )];
        for (i, b) in balancers.iter().enumerate() {
            let ns = &cluster.host(i).ns;
            ns.exec(&["ip", "route", "add", "10.99.0.0/24", "via", ROUTER]);
            frrs.push(Frr::start(
                ns,
                &frr::balancer_conf(b, TABLE, &[router_peer()]),
            ));
        }
        let me = Self {
            cluster,
            router_host,
            client,
            frrs,
            all: (0..n).map(node_ip).collect(),
        };
        let took = me.wait_hops(&me.all, "every balancer announces the routed VIP");
        eprintln!("router: {RVIP} over {n} balancers after {took:?}");
        me
    }

    fn router(&self) -> &NetNs {
        &self.cluster.lan.hosts[self.router_host].ns
    }

    /// Routers' and balancers' view, for a failure message.
    fn show(&self) -> String {
        let mut s = self.frrs[0].vtysh("show bgp summary");
        s += &self.frrs[0].vtysh("show bgp ipv4 unicast");
        s += &self.frrs[0].vtysh("show bfd peers brief");
        for i in 0..self.cluster.nodes.len() {
            s += &format!(
                "ctl{}: {}",
                i + 1,
                self.frrs[i + 1].vtysh("show bgp ipv4 unicast")
            );
            s += &self.cluster.host(i).ns.exec(&[
                "sh",
                "-c",
                "ip route show table all proto 201; true",
            ]);
        }
        s
    }

    /// Waits until the router's next hops for the routed VIP are `want`; how long it took.
    fn wait_hops(&self, want: &[String], what: &str) -> Duration {
        let start = Instant::now();
        loop {
            let have = next_hops(self.router());
            if have == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{what}: router next hops {have:?}, want {want:?}\n{}",
                self.show()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `count` long-lived connections through the routed VIP, each with the backend that
    /// answered its first line.
    fn connect(&self, count: usize) -> Vec<(LineClient, String)> {
        self.client
            .run(move || {
                (0..count)
                    .map(|_| {
                        let addr = format!("{RVIP}:7000").parse().expect("addr");
                        let mut c = LineClient::connect(addr)?;
                        let who = c.ask()?;
                        Ok((c, who))
                    })
                    .collect::<std::io::Result<Vec<_>>>()
            })
            .expect("long-lived connections through the routed VIP")
    }

    /// New short connections through the routed VIP, one every 5 ms, until the returned
    /// flag is set; the thread returns (answered, failed).
    fn chatter(&self) -> (Arc<AtomicBool>, std::thread::JoinHandle<(u32, u32)>) {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = self.client.spawn(move || {
            let (mut ok, mut failed) = (0, 0);
            while !flag.load(Ordering::Relaxed) {
                let addr = format!("{RVIP}:7000").parse().expect("addr");
                match LineClient::connect(addr).and_then(|mut c| c.ask()) {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (ok, failed)
        });
        (stop, thread)
    }

    /// Asks every connection again: each must still reach the backend it had, except those
    /// on `lost` backends (dropped from the list). Panics naming `after` otherwise.
    fn still_served(
        &self,
        conns: Vec<(LineClient, String)>,
        lost: &[String],
        after: &'static str,
    ) -> Vec<(LineClient, String)> {
        let lost = lost.to_vec();
        self.client.run(move || {
            let mut kept = Vec::new();
            for (mut c, who) in conns {
                if lost.contains(&who) {
                    continue;
                }
                let again = c
                    .ask()
                    .unwrap_or_else(|e| panic!("a connection to {who} broke across {after}: {e}"));
                assert_eq!(
                    again, who,
                    "a connection moved to another backend across {after}"
                );
                kept.push((c, who));
            }
            kept
        })
    }
}

#[test]
fn ecmp_spreads_flows_and_a_withdraw_keeps_connections() {
    if !privileged("ecmp_spreads_flows_and_a_withdraw_keeps_connections") {
        return;
    }
    let n = 3;
    let r = Routed::start(n);
    let cluster = &r.cluster;

    // Flows from many source ports: every balancer gets some, every request answered.
    let before: Vec<u64> = (0..n).map(|i| vip_packets(cluster, i)).collect();
    let conns = r.connect(60);
    let spread: Vec<u64> = (0..n)
        .map(|i| vip_packets(cluster, i) - before[i])
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
    let took = r.wait_hops(&r.all[1..], "ctl1's route withdrawn");
    eprintln!("router converged {took:?} after ctl1's standby");
    let conns = r.still_served(conns, &[], "a standby");
    cluster.nodes[0]
        .vipd
        .cli(&["node", "unstandby"])
        .expect("unstandby");
    r.wait_hops(&r.all, "ctl1's route back");
    r.still_served(conns, &[], "the return from standby");

    // ctl3 cut off from the other controllers (its BGP session stays up): without quorum
    // its view of health may be stale, so it withdraws; it announces again after the heal.
    cluster.partition(2);
    let took = r.wait_hops(&r.all[..2], "ctl3's route withdrawn without quorum");
    eprintln!("router converged {took:?} after ctl3 lost quorum");
    cluster.heal(2);
    let took = r.wait_hops(&r.all, "ctl3's route back after the heal");
    eprintln!("ctl3 announced again {took:?} after the heal");
}

#[test]
fn a_balancer_crashed_drained_stopped_or_cut_off_breaks_no_connection() {
    if !privileged("a_balancer_crashed_drained_stopped_or_cut_off_breaks_no_connection") {
        return;
    }
    let n = 3;
    let mut r = Routed::start(n);
    let conns = r.connect(60);

    // vipd crashes on ctl2: its pinned data plane keeps forwarding and its route stays, so
    // the router changes nothing; the next vipd adopts the route. The other nodes cannot
    // tell a dead vipd from a dead node within the 50 ms they take to decide, and a dead
    // node's backends leave every table at once (app/liveness.rs): the connections to
    // ctl2's own service are given up like those of a dead node, every other one is kept.
    r.cluster.nodes[1].vipd.kill9();
    std::thread::sleep(Duration::from_millis(200));
    let ctl2 = vec!["ctl2".to_string()];
    let conns = r.still_served(conns, &ctl2, "vipd's crash");
    let fresh = r.connect(20);
    assert_eq!(next_hops(r.router()), r.all, "a crashed vipd's route stays");
    r.cluster.nodes[1].vipd.spawn();
    let logs = r.cluster.nodes[1].vipd.logs();
    assert!(logs.contains("adopting VIP routes"), "{logs}");
    let conns = r.still_served(conns, &[], "vipd's restart");
    let fresh = r.still_served(fresh, &ctl2, "vipd's restart");

    // ctl1 drained under a stream of new connections: the command returns once no VIP
    // packet arrives there any more; not one of them fails.
    let (stop, chatter) = r.chatter();
    std::thread::sleep(Duration::from_millis(300));
    let out = r.cluster.nodes[0]
        .vipd
        .cli(&["node", "drain", "--quiet", "500ms", "--timeout", "20s"])
        .expect("drain");
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = chatter.join().expect("chatter");
    eprintln!(
        "ctl1: {}; new connections meanwhile: {ok} answered, {failed} failed",
        out.trim()
    );
    assert!(out.contains("drained after"), "{out}");
    assert_eq!(
        failed, 0,
        "new connections failed during the drain ({ok} answered)"
    );
    assert_eq!(
        next_hops(r.router()),
        r.all[1..],
        "drained: ctl1 withdrawn\n{out}"
    );
    let conns = r.still_served(conns, &[], "a drain");
    r.cluster.nodes[0]
        .vipd
        .cli(&["node", "undrain"])
        .expect("undrain");
    r.wait_hops(&r.all, "ctl1 back after undrain");
    let conns = r.still_served(conns, &[], "the return from a drain");

    // ctl2 stops cleanly under a stream of new connections: routes withdrawn first, the stop
    // waits until the router moved the traffic (seen in its log); no connection breaks, no
    // new one fails. Then it comes back.
    let (stop, chatter) = r.chatter();
    std::thread::sleep(Duration::from_millis(300));
    let stopped = r.cluster.nodes[1].vipd.terminate();
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = chatter.join().expect("chatter");
    assert_eq!(
        failed, 0,
        "new connections failed during a clean stop ({ok} answered)"
    );
    let logs = r.cluster.nodes[1].vipd.logs();
    assert!(
        logs.contains("VIP routes withdrawn, no packet for them"),
        "the clean stop did not observe the router's convergence:\n{logs}"
    );
    let hops = [r.all[0].clone(), r.all[2].clone()];
    r.wait_hops(&hops, "ctl2 withdrawn by its clean stop");
    eprintln!("ctl2's clean stop took {stopped:?}; new connections meanwhile: {ok} answered");
    let conns = r.still_served(conns, &[], "a balancer's clean stop");
    let fresh = r.still_served(fresh, &[], "a balancer's clean stop");
    r.cluster.nodes[1].vipd.spawn();
    r.wait_hops(&r.all, "ctl2 back after its restart");

    // ctl3's link dies: BFD takes it out of the router's ECMP group within 500 ms. The
    // connections to ctl3's own backend die with it; every other one keeps its backend.
    let dead = r.cluster.host(2);
    dead.ns.exec(&["ip", "link", "set", &dead.iface, "down"]);
    let took = r.wait_hops(
        &r.all[..2],
        "ctl3 out of the ECMP group after its link died",
    );
    eprintln!("router dropped ctl3 {took:?} after its link died (BFD)");
    assert!(
        took < Duration::from_millis(500),
        "traffic left the dead balancer after {took:?}\n{}",
        r.show()
    );
    let lost = vec!["ctl3".to_string()];
    let conns = r.still_served(conns, &lost, "a balancer's lost link");
    let fresh = r.still_served(fresh, &lost, "a balancer's lost link");
    assert!(!conns.is_empty() && !fresh.is_empty());
    // New connections too, once the survivors took ctl3's backend out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while (0..2).any(|i| backend_health(&r.cluster, i, "ctl3") != "down") {
        assert!(Instant::now() < deadline, "ctl3's backend never went down");
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = r.connect(20);
    assert!(after.iter().all(|(_, who)| who != "ctl3"));
}

/// Node `i`'s health verdict for backend `name` of the routed line service.
fn backend_health(cluster: &Cluster, i: usize, name: &str) -> String {
    let s = cluster.nodes[i].vipd.status_json();
    let vips = s["vips"].as_array().cloned().unwrap_or_default();
    let lines = vips.iter().find(|v| v["name"] == "rlines");
    let backends = lines.and_then(|v| v["backends"].as_array().cloned());
    let b = backends.unwrap_or_default();
    let b = b.iter().find(|b| b["name"] == name);
    b.and_then(|b| b["health"].as_str().map(str::to_owned))
        .unwrap_or_default()
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
