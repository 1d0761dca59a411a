//! The lab: a client and three OpenStack-like controllers in network namespaces on one bridge,
//! each controller running `vipd` in cluster mode and real backend services as separate
//! processes. `vip-lab` (run by `cargo xtask lab`) shows it live or plays the demo story; the
//! end-to-end test `tests/tests/lab.rs` builds the same lab and asserts on the same scenarios.
//!
//! Everything the lab makes carries its prefix (`viplab` for the operator's lab): namespaces
//! `<prefix>-lan|client|ctl1..3`, pins `/sys/fs/bpf/<prefix>-*`, state in `/run/<prefix>`.
//! Cleanup is one sweep over that prefix, run before starting (a crashed run's leftovers) and
//! when the [`Lab`] is dropped (normal exit, error, panic, Ctrl-C).
pub mod bench;
pub mod bgp;
mod bgp_story;
mod chatter;
mod config;
mod display;
mod http;
mod node;
mod reload;
mod restart;
mod running;
mod scenarios;
mod services;
mod story;
mod topology;
mod traffic;
mod writer;

use std::{
    mem::ManuallyDrop,
    path::PathBuf,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{bail, Context as _};

pub use bgp_story::{bgp_acts, bgp_demo, BgpDemo, Step as BgpStep};
pub use config::{Service, ServiceKind, API_VIP, DB_VIP, SERVICES};
pub use display::live;
pub use node::{ask, status_of, Node};
pub use reload::{backend_added_by_reload, BackendAdded};
pub use restart::{restart_under_load, RestartUnderLoad};
pub use running::{agreed_owner, holders, Lab};
pub use scenarios::{
    backend_loss, balanced, drain_under_load, owner_loss, partition, rejoin, BackendLoss,
    DrainUnderLoad, OwnerLoss, Partition,
};
pub use services::{probe_udp, serve};
pub use story::{demo, Story};
pub use topology::Names;
pub use traffic::{Counts, Traffic};
pub use writer::{primary_backup_keeps_writer, WriterKept};

use crate::NetNs;

/// Where the binaries are: `vipd`, and `vip-lab` itself (run as `serve`/`probe-udp`).
#[derive(Clone, Debug)]
pub struct Bins {
    pub vipd: PathBuf,
    pub lab: PathBuf,
}

/// Runs a command; Ok(stdout) or an error with its output.
pub fn cmd(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("spawn {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command inside namespace `ns` (nsenter keeps the host bpffs visible).
pub fn ns_cmd(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    let net = format!("--net=/run/netns/{ns}");
    let mut full = vec!["nsenter", net.as_str(), "--"];
    full.extend_from_slice(args);
    cmd(&full)
}

/// A handle on a namespace the lab's sweep owns: never deleted when the handle is dropped.
pub fn borrowed_ns(name: &str) -> ManuallyDrop<NetNs> {
    ManuallyDrop::new(NetNs {
        name: name.to_owned(),
    })
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Release);
}

/// Ctrl-C and SIGTERM set a flag that every wait of the lab checks, so that the lab unwinds
/// and its Drop guards clean up (instead of dying with namespaces left behind).
pub fn install_stop_handler() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

pub fn stop_requested() -> bool {
    STOP.load(Ordering::Acquire)
}

/// Sleeps `d` in small steps; Err when a stop was requested meanwhile.
pub fn pause(d: std::time::Duration) -> anyhow::Result<()> {
    let until = std::time::Instant::now() + d;
    while std::time::Instant::now() < until {
        if stop_requested() {
            bail!("interrupted");
        }
        std::thread::sleep(std::time::Duration::from_millis(5).min(d));
    }
    Ok(())
}
