//! `cargo xtask bench WHICH [ARGS...]`: build and run one benchmark of the `vip-bench` binary
//! (package `vip-benches`) in release mode. `xdp` needs root (BPF_PROG_TEST_RUN).
use crate::{cargo, run, setup};

pub fn bench(which: &str, extra: &[String]) -> anyhow::Result<()> {
    setup::require_built_toolchain()?;
    run(cargo()?
        .args([
            "run",
            "--release",
            "-p",
            "vip-benches",
            "--bin",
            "vip-bench",
            "--",
            which,
        ])
        .args(extra))
}
