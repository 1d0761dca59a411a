//! The lab's network: a bridge namespace (`<prefix>-lan`, bridge `br0`, one port per host
//! named after it) and the hosts `<prefix>-client` (192.0.2.1) and `<prefix>-ctl1..3`
//! (192.0.2.11-13), each with `eth0` on the bridge. And the sweep that removes all of it.
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use vip_common::maps;
use vip_daemon::shell::dataplane::{Dataplane, Sizing};

use super::{borrowed_ns, cmd, config::CONTROLLERS, ns_cmd};

/// Every name and path of one lab, derived from its prefix.
#[derive(Clone, Debug)]
pub struct Names {
    pub prefix: String,
    /// The `--bgp` lab: routed copies of the services, a router and a client behind it
    /// (`super::bgp`).
    pub bgp: bool,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            bgp: false,
        }
    }

    /// The same lab with routed VIPs (`--bgp`).
    pub fn with_bgp(mut self) -> Self {
        self.bgp = true;
        self
    }

    /// Namespace of a role: "lan", "client", "ctl1".
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    pub fn pins(&self, role: &str) -> PathBuf {
        PathBuf::from(format!("/sys/fs/bpf/{}-{role}", self.prefix))
    }

    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/{}", self.prefix))
    }

    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.state_dir().join(node)
    }

    pub fn config(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("vipd.toml")
    }

    pub fn control(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("vipd.sock")
    }

    pub fn fence_log(&self) -> PathBuf {
        self.state_dir().join("fence.log")
    }
}

/// MAC of host number `n`: 02:77:00:00:00:<n>.
pub fn mac(n: u8) -> String {
    format!("02:77:00:00:00:{n:02x}")
}

/// Creates the namespaces, the bridge and a veth per host (client 1, controllers 11-13).
pub fn build(names: &Names) -> anyhow::Result<()> {
    let lan = names.ns("lan");
    add_ns(&lan)?;
    // No multicast snooping: neighbour solicitations reach every port from the start.
    ns_cmd(
        &lan,
        &[
            "ip",
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ],
    )?;
    ns_cmd(&lan, &["ip", "link", "set", "br0", "up"])?;
    let hosts = std::iter::once(("client", 1u8)).chain(
        CONTROLLERS
            .iter()
            .enumerate()
            .map(|(i, c)| (*c, 11 + i as u8)),
    );
    for (role, n) in hosts {
        add_host(names, role, n)?;
    }
    attach_pass(names, &CONTROLLERS)
}

/// vipd answers and forwards with XDP_TX on the controllers' eth0; a veth only delivers those
/// frames when its peer has an XDP program too (a bare XDP_PASS one is enough).
fn attach_pass(names: &Names, ports: &[&str]) -> anyhow::Result<()> {
    let pins = names.pins("lan");
    let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    borrowed_ns(&names.ns("lan")).run(move || -> anyhow::Result<()> {
        let mut dp = Dataplane::load_pinned(&pins, &Sizing::default())?;
        for port in ports {
            dp.attach_program(maps::PROG_BARE_PASS, &port)
                .with_context(|| format!("attach XDP pass to port {port}"))?;
        }
        Ok(())
    })
}

pub(super) fn add_ns(name: &str) -> anyhow::Result<()> {
    cmd(&["ip", "netns", "add", name])?;
    ns_cmd(name, &["ip", "link", "set", "lo", "up"])?;
    // Tentative (DAD) IPv6 addresses stall the first seconds of traffic.
    for key in ["all", "default"] {
        ns_cmd(
            name,
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{key}.accept_dad=0"),
            ],
        )?;
    }
    Ok(())
}

pub(super) fn add_host(names: &Names, role: &str, n: u8) -> anyhow::Result<()> {
    let (ns, lan) = (names.ns(role), names.ns("lan"));
    add_ns(&ns)?;
    cmd(&[
        "ip",
        "link",
        "add",
        "eth0",
        "address",
        &mac(n),
        "netns",
        &ns,
        "type",
        "veth",
        "peer",
        "name",
        role,
        "netns",
        &lan,
    ])?;
    ns_cmd(&lan, &["ip", "link", "set", role, "master", "br0", "up"])?;
    ns_cmd(&ns, &["ip", "link", "set", "eth0", "up"])?;
    ns_cmd(
        &ns,
        &[
            "ip",
            "addr",
            "add",
            &format!("192.0.2.{n}/24"),
            "dev",
            "eth0",
        ],
    )?;
    // Checksum offload does not survive XDP_TX on veth: compute checksums in software.
    ns_cmd(&ns, &["ethtool", "-K", "eth0", "tx", "off"])?;
    Ok(())
}

/// A backend host that runs no vipd (act 8): on the bridge at 192.0.2.`n`, with `vip` on its
/// `lo` for direct server return, never answering ARP for it.
pub fn add_backend_host(names: &Names, role: &str, n: u8, vip: &str) -> anyhow::Result<()> {
    add_host(names, role, n)?;
    let ns = names.ns(role);
    for (k, v) in [
        ("net.ipv4.conf.all.arp_ignore", "1"),
        ("net.ipv4.conf.all.arp_announce", "2"),
    ] {
        ns_cmd(&ns, &["sysctl", "-qw", &format!("{k}={v}")])?;
    }
    ns_cmd(
        &ns,
        &["ip", "addr", "add", &format!("{vip}/32"), "dev", "lo"],
    )?;
    Ok(())
}

/// Removes a host made by [`add_backend_host`]: its processes, bridge port and namespace.
pub fn remove_host(names: &Names, role: &str) -> anyhow::Result<()> {
    let ns = names.ns(role);
    kill_all_in(&ns);
    ns_cmd(&names.ns("lan"), &["ip", "link", "del", role])?;
    cmd(&["ip", "netns", "del", &ns])?;
    Ok(())
}

/// A controller reboots: its namespace (processes, link, addresses) and its pins (bpffs does
/// not survive a reboot) go, and it comes back as at first boot.
pub fn reboot_host(names: &Names, node: &str, n: u8) -> anyhow::Result<()> {
    let ns = names.ns(node);
    kill_all_in(&ns);
    // The veth goes now (a deleted namespace takes its links with it only later).
    ns_cmd(&names.ns("lan"), &["ip", "link", "del", node])?;
    cmd(&["ip", "netns", "del", &ns])?;
    let _ = std::fs::remove_dir_all(names.pins(node));
    // The bridge port's pinned XDP link died with its veth; a pin left in place would make
    // the next attach try to update that severed link (vipd's pin name: `link_<iface>`).
    let _ = std::fs::remove_file(names.pins("lan").join(format!("link_{node}")));
    add_host(names, node, n)?;
    attach_pass(names, &[node])
}

/// SIGKILLs every process in namespace `ns` (frozen ones too) and waits until they are gone;
/// how many there were.
fn kill_all_in(ns: &str) -> usize {
    let mut killed = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids = cmd(&["ip", "netns", "pids", ns]).unwrap_or_default();
        let pids: Vec<i32> = pids
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() || Instant::now() > deadline {
            return killed;
        }
        for &pid in &pids {
            // SAFETY: plain kill(2) of a process inside the lab's own namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        killed = killed.max(pids.len());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes everything named after the prefix: processes in its namespaces (SIGKILL works on
/// frozen ones too), the namespaces with their links, the pins and the state directory.
/// Returns what it found, so a run can say it cleaned a crashed run's leftovers.
pub fn sweep(names: &Names, keep_state: bool) -> Vec<String> {
    let mut found = Vec::new();
    let listed = cmd(&["ip", "netns", "list"]).unwrap_or_default();
    let spaces: Vec<String> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{}-", names.prefix)))
        .map(str::to_owned)
        .collect();
    for ns in &spaces {
        let killed = kill_all_in(ns);
        if killed > 0 {
            found.push(format!("{killed} processes in {ns}"));
        }
        let _ = cmd(&["ip", "netns", "del", ns]);
        found.push(format!("namespace {ns}"));
    }
    let pin_prefix = format!("{}-", names.prefix);
    for entry in std::fs::read_dir("/sys/fs/bpf")
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.file_name().to_string_lossy().starts_with(&pin_prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
            found.push(format!("pins {}", entry.path().display()));
        }
    }
    // FRR instances of the `--bgp` lab (their daemons died with the namespaces).
    for dir in ["/etc/frr", "/var/run/frr"] {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&pin_prefix) {
                let _ = std::fs::remove_dir_all(entry.path());
                found.push(format!("FRR directory {}", entry.path().display()));
            }
        }
    }
    if !keep_state {
        let _ = std::fs::remove_dir_all(names.state_dir());
    }
    found
}
