//! FRR (zebra + bgpd) run inside a test's network namespace, as the routing side of routed
//! VIPs: each instance has its own path space (`-N`: config under /etc/frr/NAME, sockets and
//! pid files under /var/run/frr/NAME), so several run on one machine; killed and removed on
//! drop. `cargo xtask setup` installs FRR (its own service stays off).
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

const DAEMONS: [&str; 2] = ["zebra", "bgpd"];

impl Frr {
    /// Starts zebra and bgpd in `ns` with `config` (an frr.conf), as user frr.
    pub fn start(ns: &NetNs, config: &str) -> Self {
        let name = unique("vt");
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
