//! `cargo xtask lab [--demo]`: set up, build vipd and vip-lab (release), then become vip-lab
//! (exec, so that Ctrl-C goes straight to it and it cleans up what it made).
use std::{os::unix::process::CommandExt as _, path::PathBuf, process::Command};

use anyhow::bail;

use crate::{cargo, run, setup};

pub fn lab(demo: bool) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the lab needs root (network namespaces, XDP, bpffs, apt for setup): \
             run `sudo cargo xtask lab{}` (or `sudo -E ...` to keep your rustup environment)",
            if demo { " --demo" } else { "" }
        );
    }
    setup::run()?;
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
    cmd.env("VIPD_BIN", release.join("vipd"));
    if demo {
        cmd.arg("--demo");
    }
    eprintln!("xtask: running {cmd:?}");
    let err = cmd.exec();
    bail!("exec {cmd:?}: {err}")
}
