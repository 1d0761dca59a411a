//! FRR (zebra, bgpd, bfdd) run inside a test's or the lab's network namespace, as the routing
//! side of routed VIPs: each instance has its own path space (`-N`: config under
//! /etc/frr/NAME, sockets and pid files under /var/run/frr/NAME), so several run on one
//! machine; killed and removed on drop. `cargo xtask setup` installs FRR (its own service
//! stays off). The configs of a balancer and of the ECMP router are built here, once.
use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use crate::{unique, NetNs};

pub struct Frr {
    pub name: String,
    ns: String,
    etc: PathBuf,
    run: PathBuf,
}

const DAEMONS: [&str; 3] = ["zebra", "bgpd", "bfdd"];

impl Frr {
    /// Starts zebra, bgpd and bfdd in `ns` with `config` (an frr.conf), as user frr.
    pub fn start(ns: &NetNs, config: &str) -> Self {
        Self::start_named(ns, &unique("vt"), config)
    }

    /// As [`Frr::start`] under a chosen instance name: the lab names its instances after its
    /// prefix, so that its sweep finds a crashed run's directories (`/etc/frr/NAME`,
    /// `/var/run/frr/NAME`).
    pub fn start_named(ns: &NetNs, name: &str, config: &str) -> Self {
        let name = name.to_owned();
        let etc = PathBuf::from("/etc/frr").join(&name);
        let run = PathBuf::from("/var/run/frr").join(&name);
        for dir in [&etc, &run] {
            std::fs::create_dir_all(dir).expect("frr dir");
        }
        let conf = etc.join("frr.conf");
        std::fs::write(&conf, config).expect("frr.conf");
        let me = Self {
            name,
            ns: ns.name.clone(),
            etc,
            run,
        };
        for path in [&me.etc, &me.run, &conf] {
            let ok = Command::new("chown")
                .args(["frr:frr", path.to_str().expect("utf-8")])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown frr {}", path.display());
        }
        for daemon in DAEMONS {
            let out = Command::new("ip")
                .args(["netns", "exec", &me.ns])
                .arg(format!("/usr/lib/frr/{daemon}"))
                .args(["-N", &me.name, "-d", "-f", conf.to_str().expect("utf-8")])
                .output()
                .expect("run an FRR daemon (cargo xtask setup installs FRR)");
            assert!(
                out.status.success(),
                "{daemon} -N {}: {}",
                me.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // A line a daemon does not take is only logged; make a config that lost its BGP
        // instance fail here, not as missing routes later.
        if config.contains("router bgp") {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !me.vtysh("show running-config").contains("router bgp") {
                assert!(
                    Instant::now() < deadline,
                    "bgpd -N {} did not take its BGP instance from:\n{config}",
                    me.name
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        me
    }

    /// `vtysh -c CMD` against this instance.
    pub fn vtysh(&self, cmd: &str) -> String {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "vtysh", "-N", &self.name, "-c", cmd,
            ])
            .output()
            .expect("vtysh");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn pids(&self) -> Vec<i32> {
        DAEMONS
            .iter()
            .filter_map(|d| std::fs::read_to_string(self.run.join(format!("{d}.pid"))).ok())
            .filter_map(|p| p.trim().parse().ok())
            .collect()
    }
}

/// BFD every 100 ms, down after 3 missed: a dead peer's routes go within ~300 ms. Last in
/// the file: each daemon reads the whole file, and bgpd, which has no `bfd` node, takes the
/// block's `exit` lines for leaving the config and ignores everything after them.
const BFD_PROFILE: &str = "bfd\n profile fast\n  receive-interval 100\n  transmit-interval 100\n  \
                           detect-multiplier 3\n exit\nexit\n";

/// A BGP speaker and its address.
#[derive(Clone, Debug)]
pub struct Peer {
    pub address: String,
    pub asn: u32,
}

/// FRR on a balancer: vipd's route table (`[bgp] table`) imported and announced to each
/// router over eBGP, with BFD so that a dead balancer leaves the routers' ECMP groups fast.
pub fn balancer_conf(me: &Peer, table: u32, routers: &[Peer]) -> String {
    let mut c = format!(
        "frr defaults datacenter\nip import-table {table}\nrouter bgp {}\n \
         bgp router-id {}\n no bgp ebgp-requires-policy\n",
        me.asn, me.address
    );
    for r in routers {
        c.push_str(&neighbor(r));
    }
    c.push_str(&format!(
        " address-family ipv4 unicast\n  redistribute table {table}\n exit-address-family\n"
    ));
    c + BFD_PROFILE
}

/// FRR on the router: every balancer a neighbour, ECMP over up to 8 of them (each balancer
/// has its own AS, hence `multipath-relax`). The kernel's L4 multipath hash
/// (`net.ipv4.fib_multipath_hash_policy = 1`) is the caller's to set.
pub fn router_conf(me: &Peer, balancers: &[Peer]) -> String {
    let mut c = format!(
        "frr defaults datacenter\nrouter bgp {}\n bgp router-id {}\n \
         no bgp ebgp-requires-policy\n bgp bestpath as-path multipath-relax\n",
        me.asn, me.address
    );
    for b in balancers {
        c.push_str(&neighbor(b));
    }
    c.push_str(" address-family ipv4 unicast\n  maximum-paths 8\n exit-address-family\n");
    c + BFD_PROFILE
}

/// An eBGP neighbour with 1 s / 3 s timers and BFD.
fn neighbor(p: &Peer) -> String {
    format!(
        " neighbor {a} remote-as {asn}\n neighbor {a} timers 1 3\n neighbor {a} bfd profile fast\n",
        a = p.address,
        asn = p.asn
    )
}

impl Drop for Frr {
    fn drop(&mut self) {
        let pids = self.pids();
        for &pid in &pids {
            // SAFETY: plain kill(2) of this instance's daemons, from their pid files.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while pids
            .iter()
            .any(|p| PathBuf::from(format!("/proc/{p}")).exists())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_dir_all(&self.etc);
        let _ = std::fs::remove_dir_all(&self.run);
    }
}
