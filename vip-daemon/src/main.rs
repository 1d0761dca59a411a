//! `vipd`: the vip-fabric daemon and its operator commands.
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use vip_common::maps::{reason, MAP_STATS};
use vip_daemon::shell::dataplane::{self, Attached, Dataplane, Sizing};

#[derive(Parser)]
#[command(name = "vipd", version, about = "eBPF/XDP VIP and health fabric")]
struct Cli {
    /// bpffs directory holding the pinned program, links and maps.
    #[arg(long, global = true, default_value = dataplane::PIN_DIR)]
    pin_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the XDP program, attach it to IFACE and pin program, link and maps.
    Attach {
        #[arg(long)]
        iface: String,
    },
    /// Detach from IFACE; with no interface left, remove every pin.
    Detach {
        #[arg(long)]
        iface: String,
    },
    /// Print the data plane's reason counters.
    Stats,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Attach { iface } => {
            let mut dp = Dataplane::load_pinned(&cli.pin_dir, &Sizing::default())?;
            let how = dp
                .attach(&iface)
                .with_context(|| format!("attach to {iface}"))?;
            let what = match how {
                Attached::Native => "attached (native mode)",
                Attached::Generic => "attached (generic mode: native was refused)",
                Attached::Adopted => "already attached; adopted the pinned link",
            };
            println!("{iface}: {what}; pinned under {}", cli.pin_dir.display());
        }
        Command::Detach { iface } => {
            if dataplane::detach(&cli.pin_dir, &iface)? {
                println!("{iface}: detached");
            } else {
                println!("{iface}: nothing was attached");
            }
        }
        Command::Stats => {
            let stats = dataplane::pinned_counters(&cli.pin_dir, MAP_STATS)?;
            for (name, c) in reason::NAMES.iter().zip(&stats) {
                println!("{name:<20} {:>12} packets {:>14} bytes", c.packets, c.bytes);
            }
        }
    }
    Ok(())
}
