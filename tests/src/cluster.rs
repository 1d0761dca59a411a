//! Three controllers on one LAN with a client, each running vipd in cluster mode and real
//! backend services (HTTP on 80, a line server on 7000), all behind one VIP address. Shared by
//! the cluster test binaries and `vip-lab bench failover`'s detection figures; every piece
//! cleans up on drop.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{servers, vipd::Vipd, vipd_bin, Host, Lan, PinDir};
use vip_common::maps;
use vip_daemon::shell::dataplane::{Dataplane, Sizing};

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);

/// An IPv6 VIP on the test LAN (fd77::/64, where node `i` is fd77::{11+i:x}, i.e. ::b, ::c,
/// ::d). Chosen to share a longer prefix with ctl1's address (::b) than ctl2's or ctl3's own
/// addresses do: on ctl2 or ctl3 the kernel's longest-match rule (RFC 6724 rule 8) would pick
/// it as the source of probes to ctl1 unless vipd keeps it from being preferred.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0xa);

/// Node `i` (0-based) is `ctl{i+1}` at 10.77.0.{11+i}.
pub fn node_ip(i: usize) -> String {
    format!("10.77.0.{}", 11 + i)
}

/// Node `i`'s IPv6 address on the test LAN, fd77::{11+i:x}.
pub fn node_ip6(i: usize) -> String {
    format!("fd77::{:x}", 11 + i)
}

/// Fast timings for tests (the daemon's defaults are lease 1 s, probe 150 ms, suspect 300 ms).
pub const TEST_TIMING: &str =
    "lease = \"600ms\"\nprobe_period = \"100ms\"\nsuspect_timeout = \"250ms\"";

/// The lab's detector: a heartbeat every 5 ms, dead after 50 ms of silence on every link
/// (ten heartbeats lost in a row: at 5 % loss, about once in 10^13 windows; with 10 ms
/// heartbeats four or five losses in a row, a few times in ten minutes, would do it).
pub const HEARTBEAT: &str = "heartbeat_interval = \"5ms\"\nheartbeat_timeout = \"50ms\"";

/// Node `i`'s address on the second network (a second gossip link), on the same LAN.
pub fn second_ip(i: usize) -> String {
    format!("10.78.0.{}", 11 + i)
}

/// Cluster config for node `i` of three; `cluster_extra` is appended to the `[cluster]`
/// table, with `@SECOND_IP@` replaced by the node's [`second_ip`].
pub fn config(i: usize, iface: &str, key: &str, cluster_extra: &str, extra: &str) -> String {
    config_of(3, i, iface, key, cluster_extra, extra)
}

/// [`config`] for node `i` of `n`: every node a voter and a backend of both VIPs.
pub fn config_of(
    n: usize,
    i: usize,
    iface: &str,
    key: &str,
    cluster_extra: &str,
    extra: &str,
) -> String {
    let (name, ip, ip6) = (format!("ctl{}", i + 1), node_ip(i), node_ip6(i));
    let peers: Vec<String> = (0..n).map(|j| format!("\"{}:7946\"", node_ip(j))).collect();
    let peers = peers.join(", ");
    let voters: Vec<String> = (0..n).map(|j| format!("\"ctl{}\"", j + 1)).collect();
    let voters = voters.join(", ");
    let cluster_extra = cluster_extra.replace("@SECOND_IP@", &second_ip(i));
    let mut c = format!(
        r#"
[node]
name = "{name}"
interfaces = ["{iface}"]
addresses = ["{ip}", "{ip6}"]
pin_dir = "@PIN_DIR@"

[cluster]
hash_seed = 99
listen = "{ip}:7946"
peers = [{peers}]
key_file = "{key}"
voters = [{voters}]
{cluster_extra}

[metrics]
listen = "{ip}:9100"

[control]
socket = "@CONTROL@"

[defaults.check]
interval = "100ms"
timeout = "100ms"
rise = 2
fall = 2
jitter = 0.0
"#
    );
    c.push_str(extra);
    for (vip, port, check) in [("web", 80, "http"), ("lines", 7000, "tcp")] {
        c.push_str(&format!(
            "\n[[vip]]\nname = \"{vip}\"\naddress = \"{VIP}\"\nport = {port}\ntable_size = 251\ncheck = {{ kind = \"{check}\" }}\n"
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

pub struct Node {
    pub name: String,
    pub host: usize,
    pub vipd: Vipd,
    _pins: PinDir,
}

pub struct Cluster {
    pub lan: Lan,
    pub client: usize,
    pub nodes: Vec<Node>,
    pub dir: PathBuf,
    stop: Arc<AtomicBool>,
    _services: Vec<JoinHandle<()>>,
    _port_pins: PinDir,
}

impl Cluster {
    /// Starts the LAN, the services and three vipd with [`TEST_TIMING`], and waits for one
    /// agreed owner.
    pub fn start(cluster_extra: &str) -> Self {
        Self::start_with(&format!("{TEST_TIMING}\n{cluster_extra}"))
    }

    /// Like [`Cluster::start`] with `cluster` as the whole set of extra `[cluster]` keys.
    pub fn start_with(cluster_extra: &str) -> Self {
        Self::start_full(cluster_extra, "")
    }

    /// `extra` is more config (e.g. `[[vip]]` tables) for every node.
    pub fn start_full(cluster_extra: &str, extra: &str) -> Self {
        Self::start_sized(3, cluster_extra, extra)
    }

    /// [`Cluster::start_full`] with `n` controllers (ctl1..ctlN at 10.77.0.11..), all voters.
    pub fn start_sized(n: usize, cluster_extra: &str, extra: &str) -> Self {
        let cluster = Self::launch_sized(n, cluster_extra, extra);
        cluster.wait_single_owner(Duration::from_secs(10 + 2 * n as u64));
        cluster
    }

    /// Like [`Cluster::start_full`] without waiting for an owner (VIPs with different owners).
    pub fn launch(cluster_extra: &str, extra: &str) -> Self {
        Self::launch_sized(3, cluster_extra, extra)
    }

    /// [`Cluster::launch`] with `n` controllers.
    pub fn launch_sized(n: usize, cluster_extra: &str, extra: &str) -> Self {
        Self::launch_sized_bin(n, cluster_extra, extra, &vipd_bin())
    }

    /// [`Cluster::launch_sized`] running the vipd binary at `bin`.
    pub fn launch_sized_bin(
        n: usize,
        cluster_extra: &str,
        extra: &str,
        bin: &std::path::Path,
    ) -> Self {
        let mut lan = Lan::new();
        let client = lan.add_host(1);
        let hosts: Vec<usize> = (11..11 + n as u8).map(|h| lan.add_host(h)).collect();
        // XDP_TX on a veth needs an XDP program on its peer: bare_pass on the switch ports.
        let port_pins = PinDir::new();
        {
            let path = port_pins.path.clone();
            let ports: Vec<String> = hosts.iter().map(|&h| lan.hosts[h].port.clone()).collect();
            lan.switch.run(move || {
                let mut dp = Dataplane::load_pinned(&path, &Sizing::default()).expect("load");
                for p in ports {
                    dp.attach_program(maps::PROG_BARE_PASS, &p)
                        .expect("attach peer");
                }
            });
        }
        let dir = std::env::temp_dir().join(crate::unique("vipd-cluster-"));
        std::fs::create_dir_all(&dir).expect("dir");
        let key = dir.join("cluster.key");
        std::fs::write(&key, format!("{}\n", "ab".repeat(32))).expect("key");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        let cluster_extra = cluster_extra.replace("@DIR@", dir.to_str().expect("utf-8"));
        let stop = Arc::new(AtomicBool::new(false));
        let mut services = Vec::new();
        let mut nodes = Vec::new();
        for (i, &h) in hosts.iter().enumerate() {
            let host = &lan.hosts[h];
            let name = format!("ctl{}", i + 1);
            services.push(servers::http_server(
                &host.ns,
                80,
                name.clone(),
                stop.clone(),
            ));
            services.push(servers::line_server(
                &host.ns,
                7000,
                name.clone(),
                stop.clone(),
            ));
            host.ns.exec(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", second_ip(i)),
                "dev",
                &host.iface,
            ]);
            let pins = PinDir::new();
            let cfg = config_of(
                n,
                i,
                &host.iface,
                key.to_str().expect("utf-8"),
                &cluster_extra,
                extra,
            );
            let vipd = Vipd::start_bin(&host.ns, &pins, &cfg, bin);
            nodes.push(Node {
                name,
                host: h,
                vipd,
                _pins: pins,
            });
        }
        Self {
            lan,
            client,
            nodes,
            dir,
            stop,
            _services: services,
            _port_pins: port_pins,
        }
    }

    pub fn host(&self, node: usize) -> &Host {
        &self.lan.hosts[self.nodes[node].host]
    }

    pub fn client(&self) -> &Host {
        &self.lan.hosts[self.client]
    }

    pub fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Nodes (among `among`) that hold the VIP with lease time left, with that time.
    pub fn holders(&self, among: &[usize]) -> Vec<(usize, Duration)> {
        self.holders_of(&VIP.to_string(), among)
    }

    /// Nodes (among `among`) that hold the VIP address `vip` with lease time left, with that
    /// time.
    pub fn holders_of(&self, vip: &str, among: &[usize]) -> Vec<(usize, Duration)> {
        among
            .iter()
            .filter_map(|&i| {
                let s = self.nodes[i].vipd.cli(&["status", "--json"]).ok()?;
                let s: serde_json::Value = serde_json::from_str(&s).ok()?;
                let owners = s["cluster"]["owners"].as_array()?.clone();
                owners
                    .iter()
                    .find(|o| o["vip"] == vip)
                    .and_then(|o| o["lease_left_ms"].as_f64())
                    .map(|ms| (i, Duration::from_secs_f64(ms / 1e3)))
            })
            .collect()
    }

    /// Waits until exactly one node holds the VIP and every node agrees on it.
    pub fn wait_single_owner(&self, timeout: Duration) -> usize {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        let deadline = Instant::now() + timeout;
        loop {
            let holders = self.holders(&all);
            if let [(owner, _)] = holders[..] {
                let name = &self.nodes[owner].name;
                let agreed = self.nodes.iter().all(|n| {
                    n.vipd.status_json()["cluster"]["owners"]
                        .as_array()
                        .is_some_and(|o| o.iter().all(|o| o["owner"] == name.as_str()))
                });
                if agreed {
                    return owner;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no single agreed owner: {holders:?}\n{}",
                self.nodes[0].vipd.cli(&["status"]).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until exactly one node among `among` holds the VIP address `vip` and each of
    /// them names it the owner of that address (other VIPs may have other owners).
    pub fn wait_owner_of(&self, vip: &str, among: &[usize], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let holders = self.holders_of(vip, among);
            assert!(holders.len() <= 1, "two owners of {vip}: {holders:?}");
            if let [(owner, _)] = holders[..] {
                let name = &self.nodes[owner].name;
                let agreed = among.iter().all(|&i| {
                    self.nodes[i].vipd.status_json()["cluster"]["owners"]
                        .as_array()
                        .is_some_and(|o| {
                            o.iter()
                                .any(|o| o["vip"] == vip && o["owner"] == name.as_str())
                        })
                });
                if agreed {
                    return owner;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no single agreed owner of {vip}: {holders:?}\n{}",
                self.nodes[among[0]]
                    .vipd
                    .cli(&["status"])
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Cuts node `i` off from the other controllers (nftables in its namespace), keeping
    /// its link up: a network partition 1 | 2.
    pub fn partition(&self, i: usize) {
        let others: Vec<String> = (0..self.nodes.len())
            .filter(|&j| j != i)
            .map(node_ip)
            .collect();
        let set = others.join(", ");
        let rules = format!(
            "table inet vipcut {{\n chain in {{ type filter hook input priority -300; ip saddr {{ {set} }} drop; }}\n chain out {{ type filter hook output priority -300; ip daddr {{ {set} }} drop; }}\n}}\n"
        );
        let file = self.dir.join(format!("cut-{i}.nft"));
        std::fs::write(&file, rules).expect("nft rules");
        self.host(i)
            .ns
            .exec(&["nft", "-f", file.to_str().expect("utf-8")]);
    }

    pub fn heal(&self, i: usize) {
        self.host(i)
            .ns
            .exec(&["nft", "delete", "table", "inet", "vipcut"]);
    }

    /// One metric's value from node `i`'s Prometheus endpoint (summed over label sets that
    /// contain `labels`).
    pub fn metric(&self, i: usize, name: &str, labels: &str) -> f64 {
        let url = format!("http://{}:9100/metrics", node_ip(i));
        let text = self.client().ns.exec(&["curl", "-sf", &url]);
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(labels))
            .filter(|l| l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for n in &self.nodes {
            n.vipd.signal(libc::SIGCONT);
        }
    }
}
