//! `vip-bench`: the benchmarks behind `cargo xtask bench WHICH`, one module per subcommand.
mod maglev;
mod swim;
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
    /// Maglev build/diff times, disruption of a removal, and verdict-to-live publish time.
    Maglev(maglev::Args),
    /// SWIM failure detection time and messages per node per probe period, simulated for 3
    /// and 1,000 nodes with vipd's foca tuning.
    Swim(swim::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Xdp(args) => xdp::run(&args),
        Cmd::Maglev(args) => maglev::run(&args),
        Cmd::Swim(args) => swim::run(&args),
    }
}
