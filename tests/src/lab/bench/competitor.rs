//! The stack vip-fabric replaces, in the same lab: HAProxy (TCP mode, on every controller,
//! bound to a keepalived VIP with `ip_nonlocal_bind`) and keepalived (VRRP only), in two
//! flavours side by side: the OpenStack HA guide's settings, and tuned ones. Each instance has
//! its own config, pid files and stats socket under the controller's state directory, so
//! several run in one namespace; the lab's sweep kills them with the namespace.
use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::Ipv4Addr,
    os::unix::net::UnixStream,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use crate::lab::{cmd, config::ctl_addr, node::Proc, ns_cmd, pause, running::Lab, topology::Names};

/// One HAProxy + keepalived configuration, on its own VIP.
#[derive(Clone, Copy, Debug)]
pub struct Flavour {
    pub name: &'static str,
    pub label: &'static str,
    pub vip: Ipv4Addr,
    vrid: u8,
    vrrp_version: u8,
    advert: &'static str,
    check: &'static str,
}

pub const FLAVOURS: [Flavour; 2] = [
    Flavour {
        name: "guide",
        label: "HAProxy inter 2000 rise 2 fall 5 + keepalived VRRPv2 advert 1 s",
        vip: Ipv4Addr::new(192, 0, 2, 102),
        vrid: 52,
        vrrp_version: 2,
        advert: "1",
        check: "inter 2000 rise 2 fall 5",
    },
    Flavour {
        name: "tuned",
        label: "HAProxy inter 100 rise 2 fall 2 + keepalived VRRPv3 advert 0.1 s",
        vip: Ipv4Addr::new(192, 0, 2, 103),
        vrid: 53,
        vrrp_version: 3,
        advert: "0.1",
        check: "inter 100 rise 2 fall 2",
    },
];

/// HAProxy listens on the service port + this (the services hold `[::]:port` themselves).
pub const PORT_OFFSET: u16 = 10_000;

/// The proxied services: the keystone HTTP service (throughput, new connections) and the
/// long-lived stream service.
const PROXIED: [(&str, u16, bool); 2] = [("keystone", 5000, true), ("stream", 7000, false)];

fn file(names: &Names, node: &str, f: &Flavour, what: &str) -> PathBuf {
    names.node_dir(node).join(format!("{}-{what}", f.name))
}

fn haproxy_config(names: &Names, node: &str, f: &Flavour) -> String {
    // Global and defaults as in the OpenStack HA guide (redispatch, retries 3, its timeouts).
    let mut c = format!(
        "global\n    maxconn 8000\n    stats socket {} mode 600 level admin\n\
         defaults\n    mode tcp\n    option redispatch\n    retries 3\n    timeout connect 10s\n    \
         timeout client 1m\n    timeout server 1m\n    timeout check 10s\n",
        file(names, node, f, "haproxy.sock").display()
    );
    for (name, port, http) in PROXIED {
        let _ = writeln!(
            c,
            "listen {name}\n    bind {}:{}\n    balance roundrobin",
            f.vip,
            port + PORT_OFFSET
        );
        if http {
            c.push_str("    option httpchk GET /\n");
        }
        for j in 0..3 {
            let _ = writeln!(
                c,
                "    server ctl{} {}:{port} check {}",
                j + 1,
                ctl_addr(j),
                f.check
            );
        }
    }
    c
}

fn keepalived_config(node: &str, f: &Flavour, priority: u8) -> String {
    format!(
        "global_defs {{\n    router_id {node}_{name}\n    vrrp_version {v}\n}}\n\
         vrrp_instance {name} {{\n    state BACKUP\n    interface eth0\n    virtual_router_id {vrid}\n    \
         priority {priority}\n    advert_int {advert}\n    virtual_ipaddress {{\n        {vip}/24 dev eth0\n    }}\n}}\n",
        name = f.name,
        v = f.vrrp_version,
        vrid = f.vrid,
        advert = f.advert,
        vip = f.vip,
    )
}

/// The HAProxy and keepalived processes of every flavour on every controller, with the
/// controller each runs on.
pub struct Competitors {
    procs: Vec<(usize, Proc)>,
}

impl Competitors {
    /// Starts both flavours on the three controllers; `master` gets the highest VRRP priority
    /// (the bench makes it vipd's VIP owner, so one link cut hits every stack's owner).
    pub fn start(lab: &Lab, master: usize) -> anyhow::Result<Self> {
        let mut me = Self { procs: Vec::new() };
        for i in 0..3 {
            let priority = if i == master {
                150
            } else {
                100 - 50 * u8::from(i > master)
            };
            me.start_on(lab, i, priority)?;
        }
        Ok(me)
    }

    /// SIGKILLs every HAProxy and keepalived on controller `i`, as a crash would: keepalived
    /// leaves its VIPs on eth0.
    pub fn kill_on(&mut self, lab: &Lab, i: usize) {
        self.procs.retain(|(node, _)| *node != i);
        kill_children(&lab.names, lab.nodes[i].name);
    }

    /// Stops every instance, removes the VIPs the killed ones left behind, and starts them
    /// again with `master` on the highest priority.
    pub fn restart(&mut self, lab: &Lab, master: usize) -> anyhow::Result<()> {
        self.procs.clear();
        for node in &lab.nodes {
            kill_children(&lab.names, node.name);
            for f in &FLAVOURS {
                let vip = format!("{}/24", f.vip);
                let _ = ns_cmd(&node.ns, &["ip", "addr", "del", &vip, "dev", "eth0"]);
            }
        }
        *self = Self::start(lab, master)?;
        Ok(())
    }

    fn start_on(&mut self, lab: &Lab, i: usize, priority: u8) -> anyhow::Result<()> {
        let (node, names) = (lab.nodes[i].name, &lab.names);
        let ns = &lab.nodes[i].ns;
        ns_cmd(ns, &["sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1"])?;
        for f in &FLAVOURS {
            let path = |what| file(names, node, f, what);
            std::fs::write(path("haproxy.cfg"), haproxy_config(names, node, f))?;
            std::fs::write(
                path("keepalived.conf"),
                keepalived_config(node, f, priority),
            )?;
            let haproxy = [
                "-db",
                "-f",
                &str_of(&path("haproxy.cfg"))?,
                "-p",
                &str_of(&path("haproxy.pid"))?,
            ]
            .map(str::to_owned);
            self.spawn(i, ns, "haproxy", &haproxy, &path("haproxy.log"))?;
            let keepalived = [
                "-n",
                "-l",
                "-D",
                "--vrrp",
                "-f",
                &str_of(&path("keepalived.conf"))?,
                "-p",
                &str_of(&path("keepalived.pid"))?,
                "-r",
                &str_of(&path("keepalived-vrrp.pid"))?,
                "-c",
                &str_of(&path("keepalived-checkers.pid"))?,
            ]
            .map(str::to_owned);
            self.spawn(i, ns, "keepalived", &keepalived, &path("keepalived.log"))?;
        }
        Ok(())
    }

    fn spawn(
        &mut self,
        node: usize,
        ns: &str,
        program: &str,
        args: &[String],
        log: &std::path::Path,
    ) -> anyhow::Result<()> {
        let program = cmd(&["which", program])?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.procs
            .push((node, Proc::spawn(ns, program.trim().as_ref(), &args, log)?));
        Ok(())
    }

    /// Until each flavour's VIP sits on `master` alone and its HAProxy there sees every
    /// server up.
    pub fn wait_ready(
        &self,
        lab: &Lab,
        master: usize,
        timeout: Duration,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let ready = FLAVOURS.iter().all(|f| {
                holders(lab, f.vip) == [master]
                    && server_states(lab, master, f).is_ok_and(|s| s.iter().all(|x| x.2 == "UP"))
            });
            if ready {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                let states: Vec<String> = FLAVOURS
                    .iter()
                    .map(|f| {
                        let node = lab.nodes[master].name;
                        let log = |what| {
                            let text = std::fs::read_to_string(file(&lab.names, node, f, what))
                                .unwrap_or_default();
                            let lines: Vec<&str> = text.lines().collect();
                            lines[lines.len().saturating_sub(5)..].join("\n    ")
                        };
                        format!(
                            "{}: holders {:?}, servers {:?}\n  {node} haproxy.log:\n    {}\n  {node} keepalived.log:\n    {}",
                            f.name,
                            holders(lab, f.vip),
                            server_states(lab, master, f),
                            log("haproxy.log"),
                            log("keepalived.log")
                        )
                    })
                    .collect();
                bail!(
                    "HAProxy + keepalived not ready after {timeout:?}: {}",
                    states.join("; ")
                );
            }
            pause(Duration::from_millis(50))?;
        }
    }
}

/// SIGKILLs keepalived's VRRP and checker children on `node` (killing the parent leaves them
/// running, and a new keepalived then finds its "daemon already running"), and waits until
/// they are gone.
fn kill_children(names: &Names, node: &str) {
    for f in &FLAVOURS {
        for what in ["keepalived-vrrp.pid", "keepalived-checkers.pid"] {
            let path = file(names, node, f, what);
            let pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok());
            let _ = std::fs::remove_file(&path);
            let Some(pid) = pid.filter(|&p| p > 1) else {
                continue;
            };
            // A file left by a keepalived that died with its namespace (a power-on) may name
            // a pid reused since: only a keepalived is killed.
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() != "keepalived" {
                continue;
            }
            // SAFETY: plain kill(2); the pid is keepalived's own child from its pid file.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let gone = Instant::now() + Duration::from_secs(2);
            while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < gone {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

fn str_of(p: &std::path::Path) -> anyhow::Result<String> {
    Ok(p.to_str().context("utf-8 path")?.to_owned())
}

/// Controllers carrying `vip` on eth0 (keepalived's master: one, or none while it moves).
pub fn holders(lab: &Lab, vip: Ipv4Addr) -> Vec<usize> {
    (0..3)
        .filter(|&i| {
            ns_cmd(
                &lab.nodes[i].ns,
                &["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
            )
            .is_ok_and(|out| out.contains(&format!("inet {vip}/")))
        })
        .collect()
}

/// (proxy, server, status) of every server in the HAProxy of `flavour` on controller `i`, from
/// its stats socket.
pub fn server_states(
    lab: &Lab,
    i: usize,
    f: &Flavour,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let sock = file(&lab.names, lab.nodes[i].name, f, "haproxy.sock");
    let mut s = UnixStream::connect(&sock).with_context(|| format!("{}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(b"show stat\n")?;
    let mut csv = String::new();
    s.read_to_string(&mut csv)?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = |name| {
        header
            .iter()
            .position(|h| *h == name)
            .context("stat column")
    };
    let (px, sv, st) = (col("pxname")?, col("svname")?, col("status")?);
    Ok(lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.len() > st && f[sv] != "FRONTEND" && f[sv] != "BACKEND")
        .map(|f| (f[px].to_owned(), f[sv].to_owned(), f[st].to_owned()))
        .collect())
}
