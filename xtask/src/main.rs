//! `cargo xtask`: set up the toolchain, build, load, test and benchmark vip-fabric.
mod bench;
mod dist;
mod lab;
mod setup;
mod verify;

use std::process::Command;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install everything the build and the tests need (idempotent). Services it installs
    /// (prometheus, for promtool) are neither started nor left enabled.
    Setup {
        /// Also what the lab's benches need: HAProxy, keepalived and wrk (their services
        /// neither started nor left enabled either). `cargo xtask bench` does this itself.
        #[arg(long)]
        bench: bool,
    },
    /// Build the XDP object and vipd (release).
    Build,
    /// Build, then attach the XDP program to IFACE for development (`vipd attach`).
    Load {
        #[arg(long)]
        iface: String,
    },
    /// Build the Debian package target/dist/vip-fabric_<version>_<arch>.deb: vipd, its systemd
    /// unit, man pages, completions, example configs, docs, Grafana dashboard and alert rules
    /// (needs dpkg-dev; `cargo xtask setup` installs it). Prints the package's path.
    Dist {
        /// Package this vipd binary instead of building one (the package test passes the
        /// one `cargo test` built).
        #[arg(long)]
        vipd: Option<std::path::PathBuf>,
    },
    /// Run setup when needed, fmt and clippy, then every test of the workspace, root-only ones
    /// included.
    Test {
        /// Extra arguments passed to `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// The local lab (needs root): a client and three controllers running vipd and real
    /// services in network namespaces, shown live until Ctrl-C; `--demo` plays the failure
    /// story (backend loss, owner loss, partition) with timings and exits. `--bgp`: a routed
    /// VIP announced by FRR on every controller to an ECMP router namespace, the client
    /// behind the router (with `--demo`: crash, lost link, drain under ECMP).
    Lab {
        #[arg(long)]
        demo: bool,
        #[arg(long)]
        bgp: bool,
    },
    /// Build and run a benchmark in release mode: `xdp` (ns/packet through BPF_PROG_TEST_RUN
    /// and table publish time; root), `maglev`, `swim` (simulated membership at 3 and 1,000
    /// nodes), `throughput` and `failover` (the lab, against HAProxy + keepalived; root),
    /// `changes` (day-2 changes on one vipd under load; root), `memory` (50 VIPs x 10 backends:
    /// resident memory, maps and verdict-to-live during the ramp-up; root), `scaleout`
    /// (req/s and load spread through a routed VIP with 1, 2, 3 balancers under ECMP; root).
    Bench {
        /// Which benchmark: xdp, maglev, swim, throughput, failover, changes, memory or scaleout.
        which: String,
        /// Extra arguments for it (e.g. `--rounds 9`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Model-check the VIP ownership core (stateright, the real code): deeper and larger
    /// exhaustive runs than the tests (minutes). Arguments go to one `vip-verify` run
    /// instead (e.g. `--nodes 5 --depth 14`, `--moves`, `--fencing`).
    Verify {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Setup { bench } => setup::run(bench),
        Cmd::Build => build(),
        Cmd::Load { iface } => {
            build()?;
            let vipd = setup::workspace_root()?.join("target/release/vipd");
            run(Command::new(vipd).args(["attach", "--iface", &iface]))
        }
        Cmd::Dist { vipd } => {
            let deb = dist::dist(vipd)?;
            println!("{}", deb.display());
            Ok(())
        }
        Cmd::Test { args } => test(&args),
        Cmd::Bench { which, args } => bench::bench(&which, &args),
        Cmd::Lab { demo, bgp } => lab::lab(demo, bgp),
        Cmd::Verify { args } => verify::verify(&args),
    }
}

/// A `cargo` command run from the workspace root with bpf-linker on PATH.
fn cargo() -> anyhow::Result<Command> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(setup::workspace_root()?);
    cmd.env("PATH", setup::path_with_bpf_linker()?);
    Ok(cmd)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().with_context(|| format!("spawn {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn build() -> anyhow::Result<()> {
    setup::require_built_toolchain()?;
    run(cargo()?.args(["build", "--release", "-p", "vip-daemon"]))
}

fn test(extra: &[String]) -> anyhow::Result<()> {
    setup::run(false)?;
    run(cargo()?.args(["fmt", "--all", "--", "--check"]))?;
    // Clippy only checks: an empty stand-in for the eBPF object is enough (see build.rs).
    run(cargo()?.env("VIP_EBPF_STUB", "1").args([
        "clippy",
        "--release",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Release mode: the property test pushes 100k+ packets through BPF_PROG_TEST_RUN and
    // the host model.
    // The root tests drive the real vipd binary, which `cargo test` builds for vip-daemon's
    // own integration tests before running anything; tell them where it is.
    let vipd = setup::workspace_root()?.join("target/release/vipd");
    run(cargo()?
        .env("VIPD_BIN", vipd)
        .args(["test", "--workspace", "--release"])
        .args(extra))
}
