//! `vip-lab --bgp`: the lab with a routed VIP (issue 18). Besides the bridge's hosts, a router
//! namespace `<prefix>-router` (192.0.2.254 on the bridge, 203.0.113.1 towards the client)
//! runs FRR with ECMP over the three controllers (`maximum-paths`, BFD, kernel L4 multipath
//! hash); each controller runs FRR announcing vipd's route table; a client `<prefix>-rclient`
//! (203.0.113.2) behind the router reaches the routed VIP ([`ROUTED_VIP`], a routed copy of
//! the API VIP's keystone and stream services), and the backends answer it straight back
//! through the router (DSR). The FRR configs are `crate::frr`'s, as in tests/tests/bgp_frr.rs;
//! FRR instances are named after the prefix, so the lab's sweep removes them too.
use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

pub use super::config::{ROUTED_SERVICES, ROUTED_VIP};
use super::{
    borrowed_ns, cmd,
    config::{ctl_addr, API_VIP, CONTROLLERS, DB_VIP},
    ns_cmd, pause,
    running::{holders, Lab},
    topology::{self, Names},
    traffic::Traffic,
    Bins,
};
use crate::{
    frr::{self, Frr, Peer},
    servers::LineClient,
};

/// The router's address on the bridge.
pub const ROUTER_LAN: &str = "192.0.2.254";
/// The client's network behind the router (TEST-NET-3).
pub const CLIENT_NET: &str = "203.0.113.0/24";
const ROUTER_CLIENT_SIDE: &str = "203.0.113.1";
const CLIENT: &str = "203.0.113.2";
/// vipd's default `[bgp] table`, which FRR imports.
const TABLE: u32 = 201;

fn router_peer() -> Peer {
    Peer {
        address: ROUTER_LAN.into(),
        asn: 65000,
    }
}

/// Controller `i` as a BGP speaker: its own AS, 65011 + i.
fn balancer(i: usize) -> Peer {
    Peer {
        address: ctl_addr(i).to_string(),
        asn: 65011 + i as u32,
    }
}

/// `crate::frr`'s config with a 1 s BGP connect retry per neighbour, so that a session the
/// lab cut comes back within seconds of the link (FRR's default retry is much longer).
fn fast_reconnect(conf: String, peers: &[Peer]) -> String {
    let retry: String = peers
        .iter()
        .map(|p| format!(" neighbor {} timers connect 1\n", p.address))
        .collect();
    conf.replacen(
        " address-family ipv4 unicast\n",
        &format!("{retry} address-family ipv4 unicast\n"),
        1,
    )
}

pub struct Routed {
    // Dropped first: the routing daemons, then the lab with its namespaces.
    frrs: Vec<Frr>,
    pub lab: Lab,
}

impl Routed {
    /// The lab with the routed VIP, the router, FRR everywhere and the client behind the
    /// router; returns once the router has all three controllers as next hops. No client
    /// load runs yet (see [`Routed::start_traffic`]).
    pub fn start(names: Names, bins: &Bins, progress: &dyn Fn(&str)) -> anyhow::Result<Self> {
        let mut lab = Lab::start(names.with_bgp(), bins, progress)?;
        // The bridge client's load on the address VIPs is not what this lab shows.
        lab.traffic = None;
        let mut me = Self {
            frrs: Vec::new(),
            lab,
        };
        let names = me.lab.names.clone();
        let (router, client) = (names.ns("router"), names.ns("rclient"));
        topology::add_host(&names, "router", 254)?;
        topology::add_ns(&client)?;
        cmd(&[
            "ip", "link", "add", "rc0", "netns", &router, "type", "veth", "peer", "name", "c0",
            "netns", &client,
        ])?;
        ns_cmd(
            &router,
            &["ip", "addr", "add", "203.0.113.1/24", "dev", "rc0"],
        )?;
        ns_cmd(&router, &["ip", "link", "set", "rc0", "up"])?;
        ns_cmd(
            &client,
            &["ip", "addr", "add", "203.0.113.2/24", "dev", "c0"],
        )?;
        ns_cmd(&client, &["ip", "link", "set", "c0", "up"])?;
        ns_cmd(
            &client,
            &["ip", "route", "add", "default", "via", ROUTER_CLIENT_SIDE],
        )?;
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            // L4 hash: the flows of one client spread over the balancers too.
            ("net.ipv4.fib_multipath_hash_policy", "1"),
        ] {
            ns_cmd(&router, &["sysctl", "-qw", &format!("{k}={v}")])?;
        }
        let balancers: Vec<Peer> = (0..3).map(balancer).collect();
        let conf = frr::router_conf(&router_peer(), &balancers);
        me.frrs.push(Frr::start_named(
            &borrowed_ns(&router),
            &router,
            &fast_reconnect(conf, &balancers),
        ));
        for (i, b) in balancers.iter().enumerate() {
            // The backends' answers to the client go through the router.
            ns_cmd(
                &names.ns(CONTROLLERS[i]),
                &["ip", "route", "add", CLIENT_NET, "via", ROUTER_LAN],
            )?;
            let ns = names.ns(CONTROLLERS[i]);
            let conf = frr::balancer_conf(b, TABLE, &[router_peer()]);
            let conf = fast_reconnect(conf, &[router_peer()]);
            me.frrs
                .push(Frr::start_named(&borrowed_ns(&ns), &ns, &conf));
        }
        progress(&format!(
            "router {ROUTER_LAN} (FRR, ECMP, BFD) and FRR on ctl1-3 started; client {CLIENT} behind it"
        ));
        let took = me.wait_hops(&[0, 1, 2], Duration::from_secs(60))?;
        progress(&format!(
            "router: {ROUTED_VIP} over ctl1, ctl2, ctl3 after {took:.1?}"
        ));
        Ok(me)
    }

    pub fn client_ns(&self) -> String {
        self.lab.names.ns("rclient")
    }

    /// The client's load on the routed services (a new flow every 25 ms per service).
    pub fn start_traffic(&mut self) {
        self.lab.traffic = Some(Traffic::start_services(&self.client_ns(), &ROUTED_SERVICES));
    }

    /// The controllers (indices) the router's route to the routed VIP goes through.
    pub fn next_hops(&self) -> Vec<usize> {
        let out = ns_cmd(
            &self.lab.names.ns("router"),
            &["ip", "route", "show", &ROUTED_VIP.to_string()],
        )
        .unwrap_or_default();
        let words: Vec<&str> = out.split_whitespace().collect();
        let mut hops: Vec<usize> = words
            .windows(2)
            .filter(|w| w[0] == "via")
            .filter_map(|w| (0..3).find(|&i| ctl_addr(i).to_string() == w[1]))
            .collect();
        hops.sort_unstable();
        hops.dedup();
        hops
    }

    /// Waits until the router's next hops are `want`; how long that took.
    pub fn wait_hops(&self, want: &[usize], timeout: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let have = self.next_hops();
            if have == want {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                bail!(
                    "router next hops for {ROUTED_VIP}: {have:?} after {timeout:?}, want {want:?}\n{}",
                    self.show()
                );
            }
            pause(Duration::from_millis(2))?;
        }
    }

    /// The router's BGP and BFD view, for an error message.
    pub fn show(&self) -> String {
        let Some(router) = self.frrs.first() else {
            return String::new();
        };
        [
            "show bgp summary",
            "show bgp ipv4 unicast",
            "show bfd peers brief",
        ]
        .iter()
        .map(|c| router.vtysh(c))
        .collect()
    }

    /// Packets each controller's data plane counted for the routed VIP (its per-CPU counters,
    /// summed by vipd); None where vipd does not answer.
    pub fn routed_packets(&self) -> Vec<Option<u64>> {
        self.lab
            .statuses(Duration::from_millis(500))
            .into_iter()
            .map(|s| {
                s.map(|s| {
                    s.vips
                        .iter()
                        .filter(|v| v.address == ROUTED_VIP.to_string())
                        .map(|v| v.packets)
                        .sum()
                })
            })
            .collect()
    }

    /// `vipd --control SOCKET ARGS...` against controller `i`: its output.
    pub fn vipd_cli(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let control = self.lab.nodes[i].control.display().to_string();
        let vipd = self.lab.bins.vipd.display().to_string();
        let mut full = vec![vipd.as_str(), "--control", control.as_str()];
        full.extend_from_slice(args);
        cmd(&full)
    }

    /// Controller `i`'s link comes back up. (Taking it down removed the route to the client's
    /// network through the router with it.)
    pub fn link_up(&self, i: usize) -> anyhow::Result<()> {
        let ns = &self.lab.nodes[i].ns;
        ns_cmd(ns, &["ip", "link", "set", "eth0", "up"])?;
        ns_cmd(
            ns,
            &["ip", "route", "replace", CLIENT_NET, "via", ROUTER_LAN],
        )?;
        Ok(())
    }

    /// A controller that owns no address VIP: losing it makes nobody fence it (fencing only
    /// comes before an address VIP's takeover), so only the routing side reacts.
    pub fn non_owner(&self) -> anyhow::Result<usize> {
        let all = self.lab.statuses(Duration::from_millis(500));
        let owners: Vec<String> = [API_VIP, DB_VIP]
            .iter()
            .flat_map(|&v| holders(&all, v))
            .collect();
        (0..3)
            .rev()
            .find(|&i| !owners.iter().any(|o| o == CONTROLLERS[i]))
            .context("every controller owns an address VIP")
    }

    /// `count` long-lived connections to the routed stream service, each with the backend
    /// that answered its first line.
    pub fn open_streams(&self, count: usize) -> anyhow::Result<Vec<(LineClient, String)>> {
        let to = SocketAddr::new(IpAddr::V4(ROUTED_VIP), 7000);
        borrowed_ns(&self.client_ns())
            .run(move || {
                (0..count)
                    .map(|_| {
                        let mut c = LineClient::connect(to)?;
                        let who = c.ask()?;
                        Ok((c, who))
                    })
                    .collect::<std::io::Result<Vec<_>>>()
            })
            .context("long-lived connections through the routed VIP")
    }

    /// Asks every connection once more: those still answered by the backend they had are
    /// kept; the others are broken, unless their backend is in `lost` (it went away with
    /// its controller: counted apart, and asked only with `ask_lost`). (kept, how each
    /// broken one broke, lost with their backend).
    pub fn check_streams(
        &self,
        conns: Vec<(LineClient, String)>,
        lost: &[usize],
        ask_lost: bool,
    ) -> (Vec<(LineClient, String)>, Vec<String>, usize) {
        let lost: Vec<String> = lost.iter().map(|&i| CONTROLLERS[i].to_owned()).collect();
        borrowed_ns(&self.client_ns()).run(move || {
            let (mut kept, mut broken, mut gone) = (Vec::new(), Vec::new(), 0);
            for (mut c, who) in conns {
                // Behind a cut link an ask would only wait for its timeout.
                if !ask_lost && lost.contains(&who) {
                    gone += 1;
                    continue;
                }
                match c.ask() {
                    Ok(again) if again == who => kept.push((c, who)),
                    _ if lost.contains(&who) => gone += 1,
                    Ok(again) => broken.push(format!("moved from {who} to {again}")),
                    Err(e) => broken.push(format!("to {who}: {e}")),
                }
            }
            (kept, broken, gone)
        })
    }
}

/// "ctl1, ctl3" for next hops.
pub fn hop_names(hops: &[usize]) -> String {
    let names: Vec<&str> = hops.iter().map(|&i| CONTROLLERS[i]).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// Per-controller differences between two [`Routed::routed_packets`] readings (0 where
/// either is missing).
pub fn packets_since(now: &[Option<u64>], before: &[Option<u64>]) -> Vec<u64> {
    now.iter()
        .zip(before)
        .map(|(n, b)| match (n, b) {
            (Some(n), Some(b)) => n.saturating_sub(*b),
            _ => 0,
        })
        .collect()
}

/// `vip-lab --bgp`: the routed lab stays up with the client's load running; every second,
/// the router's next hops, each balancer's packets for the routed VIP and the answers per
/// backend. Ctrl-C stops and cleans up.
pub fn live(names: Names, bins: &Bins) -> anyhow::Result<()> {
    let mut r = Routed::start(names, bins, &|m| println!("vip-lab: {m}"))?;
    r.start_traffic();
    let p = r.lab.names.prefix.clone();
    let help = format!(
        "try: ip netns exec {p}-rclient curl http://{ROUTED_VIP}:5000/\n     \
         ip netns exec {p}-router ip route show {ROUTED_VIP}\n     \
         ip netns exec {p}-router vtysh -N {p}-router -c 'show bgp summary'\n     \
         {vipd} --control {ctl} node drain   (then: node undrain)\n     \
         ip netns exec {p}-ctl3 ip link set eth0 down   (BFD takes ctl3 out; to return it: `up`,\n     \
         then `ip route replace {CLIENT_NET} via {ROUTER_LAN}`: the link's fall took that route)",
        vipd = bins.vipd.display(),
        ctl = r.lab.nodes[0].control.display(),
    );
    let mut before = (r.routed_packets(), snapshot(&r));
    while super::pause(Duration::from_secs(1)).is_ok() {
        let now = (r.routed_packets(), snapshot(&r));
        let packets = packets_since(&now.0, &before.0);
        let mut s = format!(
            "vip-lab --bgp: routed VIP {ROUTED_VIP} (refreshed every second; Ctrl-C stops and cleans up)\n\n\
             router next hops: {}\n\npackets/s per balancer:\n",
            hop_names(&r.next_hops())
        );
        for (i, name) in CONTROLLERS.iter().enumerate() {
            let up = if now.0[i].is_some() {
                ""
            } else {
                " (vipd not answering)"
            };
            s += &format!("  {name}: {:>6}{up}\n", packets[i]);
        }
        s += "\nclient answers/s by backend:\n";
        for (service, c) in super::traffic::since(&now.1, &before.1) {
            let by: Vec<String> = c
                .by_backend
                .iter()
                .map(|(b, n)| format!("{b} {n}"))
                .collect();
            s += &format!("  {service:<10} {}  failed {}\n", by.join(", "), c.errors);
        }
        // Clear the screen, cursor home.
        print!("\x1b[2J\x1b[H{s}\n{help}\n");
        before = now;
    }
    println!("\nvip-lab: stopping, cleaning up...");
    drop(r);
    println!("vip-lab: done, nothing left behind");
    Ok(())
}

/// The client's answers so far (empty before [`Routed::start_traffic`]).
pub fn snapshot(r: &Routed) -> super::traffic::Snapshot {
    r.lab
        .traffic
        .as_ref()
        .map(|t| t.snapshot())
        .unwrap_or_default()
}
