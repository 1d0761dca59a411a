//! Fixtures for the root-only tests: privilege gate, network namespaces, veth pairs and
//! running code inside a namespace. Every guard cleans up on drop, also when a test panics.
pub mod fixture;
pub mod packet;

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
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            use std::os::fd::AsRawFd as _;
            // SAFETY: a valid namespace fd; only this thread changes namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in netns panicked")
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
