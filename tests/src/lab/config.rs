//! What the lab runs and how vipd is told about it: the services behind the VIPs, the cluster
//! config of each controller, the shared key and the fencing hook.
use std::{fmt::Write as _, net::Ipv4Addr, os::unix::fs::PermissionsExt as _, path::Path};

use anyhow::Context as _;

use super::{topology::Names, Bins};

/// The API VIP (keystone, nova-api, the long-lived stream service, DNS), as in
/// `examples/openstack-controllers.toml` (TEST-NET-1 addresses).
pub const API_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
/// The database VIP (Galera, primary-backup): a second address, so it may have another owner.
pub const DB_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 101);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// HTTP/1.0 answering the node name.
    Http,
    /// Line protocol answering the node name to every line, connection kept open.
    Tcp,
    /// Datagrams answered with the node name.
    Udp,
}

impl ServiceKind {
    pub fn arg(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// One service on every controller, behind one VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: &'static str,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub kind: ServiceKind,
    pub primary_backup: bool,
}

const fn service(name: &'static str, vip: Ipv4Addr, port: u16, kind: ServiceKind) -> Service {
    Service {
        name,
        vip,
        port,
        kind,
        primary_backup: false,
    }
}

pub const SERVICES: [Service; 5] = [
    service("keystone", API_VIP, 5000, ServiceKind::Http),
    service("nova-api", API_VIP, 8774, ServiceKind::Http),
    // Long-lived connections (like AMQP or DB sessions of API workers), Maglev balanced.
    service("stream", API_VIP, 7000, ServiceKind::Tcp),
    service("dns", API_VIP, 53, ServiceKind::Udp),
    Service {
        primary_backup: true,
        ..service("galera", DB_VIP, 3306, ServiceKind::Tcp)
    },
];

/// The `--bgp` lab's routed VIP (TEST-NET-2, reached through the router): a routed copy of
/// the API VIP's keystone and stream services, served by the same processes (they listen on
/// every address), announced by BGP from every controller in service.
pub const ROUTED_VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);

pub const ROUTED_SERVICES: [Service; 2] = [
    service("rkeystone", ROUTED_VIP, 5000, ServiceKind::Http),
    service("rstream", ROUTED_VIP, 7000, ServiceKind::Tcp),
];

pub const CONTROLLERS: [&str; 3] = ["ctl1", "ctl2", "ctl3"];

/// Host number of controller `i` (0-based): 192.0.2.11..13.
pub fn ctl_host(i: usize) -> u8 {
    11 + i as u8
}

pub fn ctl_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, ctl_host(i))
}

/// A backend added to one service by the lab's config (act 8): a host that does not run vipd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtraBackend {
    pub service: &'static str,
    pub name: &'static str,
    pub address: Ipv4Addr,
}

/// The vipd config of controller `i`, with `extra` backends after the controllers.
pub fn vipd_config(names: &Names, bins: &Bins, i: usize, extra: &[ExtraBackend]) -> String {
    let name = CONTROLLERS[i];
    let peers: Vec<String> = (0..3)
        .map(|j| format!("\"{}:7946\"", ctl_addr(j)))
        .collect();
    let state = names.state_dir();
    let mut c = format!(
        r#"# vip-lab controller {name} (generated)
[node]
name = "{name}"
interfaces = ["eth0"]
addresses = ["{addr}"]
pin_dir = "{pins}"
state_dir = "{state}/{name}"

[cluster]
hash_seed = 0x7f4a7c15
listen = "{addr}:7946"
peers = [{peers}]
key_file = "{state}/cluster.key"
voters = ["ctl1", "ctl2", "ctl3"]
lease = "600ms"
probe_period = "100ms"
suspect_timeout = "250ms"
heartbeat_interval = "5ms"
heartbeat_timeout = "50ms"
fence_command = ["{state}/fence.sh", "{name}"]

[metrics]
listen = "127.0.0.1:9478"

[control]
socket = "{control}"

[defaults.check]
interval = "100ms"
timeout = "100ms"
rise = 2
fall = 2
jitter = 0.0
"#,
        addr = ctl_addr(i),
        pins = names.pins(name).display(),
        peers = peers.join(", "),
        state = state.display(),
        control = names.control(name).display(),
    );
    let routed: &[Service] = if names.bgp { &ROUTED_SERVICES } else { &[] };
    for &s in SERVICES.iter().chain(routed) {
        let _ = write!(
            c,
            "\n[[vip]]\nname = \"{}\"\naddress = \"{}\"\nport = {}\n",
            s.name, s.vip, s.port
        );
        if s.vip == ROUTED_VIP {
            // Host route in [bgp] table 201 (the default) for FRR to announce.
            c.push_str("announce = \"bgp\"\n");
        }
        let check = match s.kind {
            ServiceKind::Http => "{ kind = \"http\", path = \"/\", expect = 200 }".to_owned(),
            ServiceKind::Tcp => "{ kind = \"tcp\" }".to_owned(),
            // No UDP probe kind: an exec check asks the backend (vip-lab probe-udp).
            ServiceKind::Udp => format!(
                "{{ kind = \"exec\", command = [\"{}\", \"probe-udp\"], interval = \"200ms\", timeout = \"150ms\" }}",
                bins.lab.display()
            ),
        };
        let _ = writeln!(c, "check = {check}");
        if s.kind == ServiceKind::Udp {
            c.push_str("protocol = \"udp\"\n");
        }
        if s.primary_backup {
            c.push_str("selection = \"primary-backup\"\n");
        } else {
            c.push_str("table_size = 251\n");
        }
        for (j, backend) in CONTROLLERS.iter().enumerate() {
            let _ = write!(
                c,
                "  [[vip.backend]]\n  name = \"{backend}\"\n  address = \"{}\"\n",
                ctl_addr(j)
            );
            if s.primary_backup {
                let _ = writeln!(c, "  priority = {j}");
            }
        }
        for e in extra.iter().filter(|e| e.service == s.name) {
            let _ = write!(
                c,
                "  [[vip.backend]]\n  name = \"{}\"\n  address = \"{}\"\n",
                e.name, e.address
            );
        }
    }
    c
}

/// Rewrites every controller's config file (what an operator's config management does before
/// `vipd reload`).
pub fn write_configs(names: &Names, bins: &Bins, extra: &[ExtraBackend]) -> anyhow::Result<()> {
    for (i, name) in CONTROLLERS.iter().enumerate() {
        let text = vipd_config(names, bins, i, extra);
        write_mode(&names.config(name), &text, 0o644)?;
    }
    Ok(())
}

/// The fencing hook: "powers off" controller $VIPD_FENCE_NODE by freezing every process in its
/// namespace, and logs who fenced whom (the lab prints the log).
pub fn fence_script(names: &Names) -> String {
    format!(
        r#"#!/bin/sh
# vip-lab fencing hook (vipd [cluster] fence_command; argv[1] = the fencing node).
# "Powers off" controller $VIPD_FENCE_NODE: freezes every process in its namespace, and
# takes its link down (its XDP program runs in the kernel, which a freeze does not stop).
ns="{prefix}-$VIPD_FENCE_NODE"
pids=$(ip netns pids "$ns") || exit 1
[ -z "$pids" ] || kill -STOP $pids || exit 1
ip -n "$ns" link set eth0 down || exit 1
echo "$(date +%s.%N) $1 fenced $VIPD_FENCE_NODE (froze pids $(echo $pids)): $VIPD_FENCE_REASON" >> "{log}"
"#,
        prefix = names.prefix,
        log = names.fence_log().display(),
    )
}

/// Writes the shared key (0600), the fencing hook and each controller's config.
pub fn write_all(names: &Names, bins: &Bins) -> anyhow::Result<()> {
    let state = names.state_dir();
    std::fs::create_dir_all(&state).with_context(|| format!("create {}", state.display()))?;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut key))
        .context("read /dev/urandom")?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    write_mode(&state.join("cluster.key"), &format!("{hex}\n"), 0o600)?;
    write_mode(&state.join("fence.sh"), &fence_script(names), 0o755)?;
    write_mode(&names.fence_log(), "", 0o644)?;
    for name in CONTROLLERS {
        std::fs::create_dir_all(names.node_dir(name))?;
    }
    write_configs(names, bins, &[])
}

fn write_mode(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))
}
