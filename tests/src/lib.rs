//! Fixtures for the root-only tests: privilege gate, network namespaces, veth pairs and
//! running code inside a namespace. Every guard cleans up on drop, also when a test panics.
pub mod cluster;
pub mod fixture;
pub mod frr;
pub mod lab;
pub mod packet;
pub mod servers;
pub mod vipd;

use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// True when this process may run privileged tests. With `CI=true` a missing privilege is a
/// failure, never a skip; outside CI the skip is printed loudly.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: needs root (CAP_BPF, CAP_NET_ADMIN) and CI=true forbids skipping");
    }
    eprintln!("\n!!! SKIPPED {test}: needs root; run `sudo -E cargo xtask test` !!!\n");
    false
}

/// Writes one line to the test's stderr at once, past libtest's output capture: `print!` and
/// `eprint!` (also on threads a test spawns) are captured and shown only when the test
/// fails, writes to `std::io::stderr()` are not (checked on Rust 1.95). For tests that run
/// for minutes, so that CI's log shows they are alive and how far they got. Use through
/// [`progress!`].
pub fn progress(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let line = format!("progress: {args}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `progress!("starvation: {m}/{total} min")`: like `eprintln!`, but not captured by libtest
/// (see [`progress()`]).
#[macro_export]
macro_rules! progress {
    ($($arg:tt)*) => {
        $crate::progress(format_args!($($arg)*))
    };
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call, for namespaces, links and pin dirs
/// (interface names are limited to 15 bytes).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command and panics with its output when it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(prefix: &str) -> Self {
        let name = unique(prefix);
        sh(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        // Tentative (DAD) IPv6 addresses, link-local ones included, stall the first seconds
        // of IPv6 traffic; test hosts have unique addresses by construction.
        for key in ["all", "default"] {
            ns.exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{key}.accept_dad=0"),
            ]);
        }
        ns
    }

    /// Runs a command inside the namespace (via `nsenter`, which keeps the host bpffs visible).
    pub fn exec(&self, args: &[&str]) -> String {
        let netns = format!("--net=/run/netns/{}", self.name);
        let mut full = vec!["nsenter", netns.as_str(), "--"];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread in netns panicked")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Creates a veth pair with one end in each namespace and brings both up.
pub fn veth_pair(a: &NetNs, a_if: &str, b: &NetNs, b_if: &str) {
    sh(&[
        "ip", "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    a.exec(&["ip", "link", "set", a_if, "up"]);
    b.exec(&["ip", "link", "set", b_if, "up"]);
}

/// A private pin directory on bpffs, removed on drop.
pub struct PinDir {
    pub path: PathBuf,
}

impl PinDir {
    pub fn new() -> Self {
        vip_daemon::shell::bpffs::ensure_mounted().expect("mount bpffs");
        Self {
            path: PathBuf::from(format!("/sys/fs/bpf/{}", unique("vip-test-"))),
        }
    }
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Path of the `vipd` binary built next to this test binary (`cargo xtask test` builds it).
pub fn vipd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VIPD_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/vipd
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("vipd");
    assert!(
        bin.is_file(),
        "{} missing: build it with `cargo build --release -p vip-daemon` (cargo xtask test does)",
        bin.display()
    );
    bin
}

impl NetNs {
    /// Runs `f` on a background thread that has entered this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter_netns(&path);
            f()
        })
    }
}

fn enter_netns(path: &str) {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: a valid namespace fd; only the calling thread changes namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// One host on the test LAN: its namespace, interface, MAC and addresses.
pub struct Host {
    pub ns: NetNs,
    pub iface: String,
    /// The switch-side end of its veth.
    pub port: String,
    pub mac: [u8; 6],
    pub ip4: [u8; 4],
    pub ip6: [u8; 16],
}

/// A LAN: a "switch" namespace holding a Linux bridge, and hosts each in their own namespace
/// with a veth to the bridge. Addresses 10.77.0.0/24 and fd77::/64; MACs 02:77:00:00:00:<n>.
pub struct Lan {
    pub switch: NetNs,
    pub hosts: Vec<Host>,
}

impl Lan {
    pub fn new() -> Self {
        let switch = NetNs::new("vsw");
        // No multicast snooping: neighbour solicitations reach every port from the start.
        switch.exec(&[
            "ip",
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        switch.exec(&["ip", "link", "set", "br0", "up"]);
        Self {
            switch,
            hosts: Vec::new(),
        }
    }

    /// Adds host number `n` (1..=250); returns its index in `hosts`.
    pub fn add_host(&mut self, n: u8) -> usize {
        let ns = NetNs::new("vh");
        let iface = unique("eh");
        let port = unique("ep");
        let mac = [2, 0x77, 0, 0, 0, n];
        let mac_s = fmt_mac(&mac);
        sh(&[
            "ip",
            "link",
            "add",
            &iface,
            "address",
            &mac_s,
            "netns",
            &ns.name,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.switch.name,
        ]);
        self.switch
            .exec(&["ip", "link", "set", &port, "master", "br0", "up"]);
        let ip4 = [10, 77, 0, n];
        let mut ip6 = [0u8; 16];
        ip6[0] = 0xfd;
        ip6[1] = 0x77;
        ip6[15] = n;
        ns.exec(&["ip", "link", "set", &iface, "up"]);
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("10.77.0.{n}/24"),
            "dev",
            &iface,
        ]);
        ns.exec(&[
            "ip",
            "addr",
            "add",
            &format!("fd77::{n:x}/64"),
            "dev",
            &iface,
            "nodad",
        ]);
        // Checksum offload does not survive XDP_TX on veth: compute checksums in software.
        ns.exec(&["ethtool", "-K", &iface, "tx", "off"]);
        self.hosts.push(Host {
            ns,
            iface,
            port,
            mac,
            ip4,
            ip6,
        });
        self.hosts.len() - 1
    }
}

impl Default for Lan {
    fn default() -> Self {
        Self::new()
    }
}

pub fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Puts a VIP on `lo` of a backend, as DSR needs: accepted locally, never announced.
pub fn vip_on_loopback(host: &Host, vip4: &str, vip6: &str) {
    for (k, v) in [
        ("net.ipv4.conf.all.arp_ignore", "1"),
        ("net.ipv4.conf.all.arp_announce", "2"),
    ] {
        host.ns.exec(&["sysctl", "-qw", &format!("{k}={v}")]);
    }
    host.ns
        .exec(&["ip", "addr", "add", &format!("{vip4}/32"), "dev", "lo"]);
    host.ns.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{vip6}/128"),
        "dev",
        "lo",
        "nodad",
    ]);
}

impl Host {
    /// A permanent neighbour entry: `ip` is reached at `mac` (as after a gratuitous ARP).
    pub fn static_neighbour(&self, ip: &str, mac: &[u8; 6]) {
        let family = if ip.contains(':') { "-6" } else { "-4" };
        self.ns.exec(&[
            "ip",
            family,
            "neigh",
            "replace",
            ip,
            "lladdr",
            &fmt_mac(mac),
            "dev",
            &self.iface,
            "nud",
            "permanent",
        ]);
    }
}

/// A namespace (name prefix `prefix`) with a veth pair `e0`/`e1`, both up, and `addr` (CIDR)
/// on `e0`: something for a single vipd to attach to.
pub fn veth_namespace(prefix: &str, addr: &str) -> NetNs {
    let ns = NetNs::new(prefix);
    ns.exec(&[
        "ip", "link", "add", "e0", "type", "veth", "peer", "name", "e1",
    ]);
    for dev in ["e0", "e1"] {
        ns.exec(&["ip", "link", "set", dev, "up"]);
    }
    ns.exec(&["ip", "addr", "add", addr, "dev", "e0"]);
    ns
}
