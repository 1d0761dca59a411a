//! `cargo xtask verify [ARGS...]`: the deeper and larger exhaustive runs of the ownership
//! model (`vip-verify`), minutes each. With no arguments: 3 nodes to depth 21, 3 nodes with
//! failure detection 4 ticks (finding 1's configuration) to depth 18 and 5 nodes to depth 14
//! (see `docs/architecture.md`, "Model-checked ownership", for the state counts and
//! times). With arguments: one run of the `vip-verify` binary with them (e.g. `--nodes 5
//! --depth 16`, `--moves`, `--fencing`); it fails when a property is violated, printing the
//! trace (`--fencing` from depth 16 and `--moves` show the open finding).
use crate::{cargo, run, setup};

const DEFAULT_RUNS: [&[&str]; 3] = [
    &["--depth", "21"],
    &["--detect", "4", "--depth", "18"],
    &["--nodes", "5", "--depth", "14"],
];

pub fn verify(extra: &[String]) -> anyhow::Result<()> {
    setup::require_built_toolchain()?;
    let runs: Vec<Vec<String>> = match extra.is_empty() {
        true => DEFAULT_RUNS
            .iter()
            .map(|r| r.iter().map(|a| a.to_string()).collect())
            .collect(),
        false => vec![extra.to_vec()],
    };
    for args in runs {
        run(cargo()?
            .args([
                "run",
                "--release",
                "-p",
                "vip-verify",
                "--bin",
                "vip-verify",
                "--",
            ])
            .args(args))?;
    }
    Ok(())
}
