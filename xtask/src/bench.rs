//! `cargo xtask bench WHICH [ARGS...]`: build and run one benchmark in release mode. The lab's
//! side-by-side races against HAProxy + keepalived (`throughput`, `failover`; root) and the
//! day-2 changes under load (`changes`; root) and the routed VIP's scale-out under ECMP
//! (`scaleout`; root) run `vip-lab bench`; every other name is a subcommand of the `vip-bench` binary (package
//! `vip-benches`; `xdp` needs root for BPF_PROG_TEST_RUN).
use crate::{cargo, lab, run, setup};

pub fn bench(which: &str, extra: &[String]) -> anyhow::Result<()> {
    if matches!(
        which,
        "throughput" | "failover" | "changes" | "memory" | "scaleout"
    ) {
        return lab::bench(which, extra);
    }
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
