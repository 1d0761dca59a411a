//! `vip-bench`: the benchmarks behind `cargo xtask bench WHICH`, one module per subcommand.
mod xdp;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "vip-bench", about = "vip-fabric benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// ns/packet of the XDP balancer through BPF_PROG_TEST_RUN against bare baseline
    /// programs, and the full-table publish time (needs root).
    Xdp(xdp::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Xdp(args) => xdp::run(&args),
    }
}
