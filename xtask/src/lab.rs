//! `cargo xtask lab [--bgp] [--demo]`: set up, build vipd and vip-lab (release), then become vip-lab
//! (exec, so that Ctrl-C goes straight to it and it cleans up what it made). The lab's
//! benches (`cargo xtask bench throughput|failover`) run the same way.
use std::{os::unix::process::CommandExt as _, path::PathBuf, process::Command};

use anyhow::bail;

use crate::{cargo, run, setup};

pub fn lab(demo: bool, bgp: bool) -> anyhow::Result<()> {
    let mut args = Vec::new();
    if bgp {
        args.push("--bgp");
    }
    if demo {
        args.push("--demo");
    }
    exec_vip_lab(&args, &format!("lab {}", args.join(" ")))
}

/// `cargo xtask bench throughput|failover|changes|memory|scaleout [ARGS]`: vip-fabric against HAProxy +
/// keepalived in the lab, or day-2 changes on one vipd; reports go to `target/bench-report/`.
pub fn bench(which: &str, extra: &[String]) -> anyhow::Result<()> {
    let report_dir = setup::workspace_root()?.join("target/bench-report");
    let report_dir = report_dir.to_string_lossy().into_owned();
    let mut args = vec!["bench", which, "--report-dir", report_dir.as_str()];
    args.extend(extra.iter().map(String::as_str));
    exec_vip_lab(&args, &format!("bench {which}"))
}

fn exec_vip_lab(args: &[&str], what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the lab needs root (network namespaces, XDP, bpffs, apt for setup): \
             run `sudo cargo xtask {what}` (or `sudo -E ...` to keep your rustup environment)"
        );
    }
    // The benches race HAProxy + keepalived, driven by wrk: `setup --bench`.
    setup::run(args.first() == Some(&"bench"))?;
    run(cargo()?.args([
        "build",
        "--release",
        "-p",
        "vip-daemon",
        "--bin",
        "vipd",
        "-p",
        "vip-tests",
        "--bin",
        "vip-lab",
    ]))?;
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => setup::workspace_root()?.join("target"),
    };
    let release = setup::workspace_root()?.join(target).join("release");
    let mut cmd = Command::new(release.join("vip-lab"));
    cmd.env("VIPD_BIN", release.join("vipd")).args(args);
    eprintln!("xtask: running {cmd:?}");
    let err = cmd.exec();
    bail!("exec {cmd:?}: {err}")
}
