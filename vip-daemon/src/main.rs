//! `vipd`: the vip-fabric daemon and its operator commands.
use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use vip_common::maps::{reason, MAP_STATS};
use vip_daemon::{
    app,
    config::{self, DEFAULT_PATH},
    shell::{
        control::{self, AdminAction, Request, Response},
        dataplane::{self, Attached, Dataplane, Sizing},
    },
};

const DEFAULT_CONTROL: &str = "/run/vip-fabric/vipd.sock";

#[derive(Parser)]
#[command(name = "vipd", version, about = "eBPF/XDP VIP and health fabric")]
struct Cli {
    /// Control socket of the running vipd (status, trace, backend, reload).
    #[arg(long, global = true, default_value = DEFAULT_CONTROL)]
    control: PathBuf,
    /// bpffs directory of the pinned program, links and maps (attach, detach, stats).
    #[arg(long, global = true, default_value = dataplane::PIN_DIR)]
    pin_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Check a config file without touching the system.
    Validate { file: PathBuf },
    /// Node, data plane, VIPs and backends of the running vipd.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Which backend a flow goes to, and why: `vipd trace 198.51.100.7:40000 192.0.2.100:5000 tcp`.
    Trace {
        src: SocketAddr,
        vip: SocketAddr,
        #[arg(default_value = "tcp")]
        proto: String,
    },
    /// Runtime admin of one backend of one VIP.
    Backend {
        #[command(subcommand)]
        action: BackendCmd,
    },
    /// Re-read the config file (like SIGHUP); a bad file changes nothing.
    Reload,
    /// Cluster mode: hand every VIP over to another node and leave (before a planned stop).
    Leave,
    /// Cluster mode: VIP addresses on purpose.
    Vip {
        #[command(subcommand)]
        action: VipCmd,
    },
    /// Print a new random cluster key (hex) for the key file.
    Keygen,
    /// Convert an haproxy.cfg (and keepalived.conf) into a vipd config on stdout; what cannot
    /// be carried over is listed on stderr and as comments.
    ImportHaproxy {
        file: PathBuf,
        #[arg(long)]
        keepalived: Option<PathBuf>,
    },
    /// Development: load the XDP program, attach it to IFACE and pin everything.
    Attach {
        #[arg(long)]
        iface: String,
    },
    /// Detach from IFACE; with no interface left, remove every pin.
    Detach {
        #[arg(long)]
        iface: String,
    },
    /// Data-plane reason counters, read from the pinned maps.
    Stats,
}

#[derive(Subcommand)]
enum BackendCmd {
    /// No new flows; established ones stay on it (flow table) until the drain timeout.
    Drain {
        vip: String,
        backend: String,
        /// How long established flows stay (e.g. 30s, 10m); default: the VIP's drain_timeout.
        #[arg(long, value_parser = vip_daemon::config::parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// Out of the table and not probed.
    Disable { vip: String, backend: String },
    /// Back to its configured weight.
    Enable { vip: String, backend: String },
    /// Set a runtime weight (0..=65535).
    Weight {
        vip: String,
        backend: String,
        weight: u32,
    },
    /// Primary-backup VIP: make BACKEND (eligible) the writer; it keeps the slot while eligible.
    Promote { vip: String, backend: String },
}

#[derive(Subcommand)]
enum VipCmd {
    /// Run on the owner: hand the VIP's address (VIP name or address) to NODE, which
    /// takes it at once, without fencing; connections survive (same tables everywhere).
    Move { vip: String, node: String },
}

fn init_logging() {
    // Under systemd (JOURNAL_STREAM set) journald adds timestamps; no colours in logs.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(!journald && std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if journald {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

fn ask(cli: &Cli, req: Request) -> anyhow::Result<Response> {
    match control::call(&cli.control, &req)? {
        Response::Error { message } => anyhow::bail!("{message}"),
        r => Ok(r),
    }
}

fn main() -> anyhow::Result<()> {
    init_logging();
    let cli = Cli::parse();
    match &cli.command {
        Command::Run { config } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let outcome = rt.block_on(app::run(app::Options {
                config_path: config.clone(),
            }));
            // Dropping the runtime would wait for every spawn_blocking task, and a Maglev
            // precompute in flight (app::tables) takes tens of milliseconds per backend with big
            // tables: SIGTERM then took up to ~150 ms more to exit. Nothing on the blocking
            // pool has state to hand over (the data plane stays pinned), so give the async
            // tasks a moment to drop (exec probes kill their children on drop) and leave the
            // rest to process exit.
            rt.shutdown_timeout(std::time::Duration::from_millis(20));
            outcome?;
        }
        Command::Validate { file } => match config::load(file) {
            Ok(c) => println!(
                "{}: valid ({} VIPs, {} backends)",
                file.display(),
                c.vips.len(),
                c.vips.iter().map(|v| v.backends.len()).sum::<usize>()
            ),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
        Command::Status { json } => {
            if let Response::Status(s) = ask(&cli, Request::Status)? {
                if *json {
                    println!("{}", serde_json::to_string_pretty(&s)?);
                } else {
                    print!("{}", s.render());
                }
            }
        }
        Command::Trace { src, vip, proto } => {
            let req = Request::Trace {
                src: *src,
                vip: *vip,
                proto: proto.clone(),
            };
            if let Response::Trace(t) = ask(&cli, req)? {
                print!("{}", t.render());
                if !t.agree {
                    std::process::exit(2);
                }
            }
        }
        Command::Backend { action } => {
            let mut timeout_ms = None;
            let (action, vip, backend, weight) = match action {
                BackendCmd::Drain {
                    vip,
                    backend,
                    timeout,
                } => {
                    timeout_ms = timeout.map(|t| t.as_millis() as u64);
                    (AdminAction::Drain, vip, backend, None)
                }
                BackendCmd::Disable { vip, backend } => (AdminAction::Disable, vip, backend, None),
                BackendCmd::Enable { vip, backend } => (AdminAction::Enable, vip, backend, None),
                BackendCmd::Weight {
                    vip,
                    backend,
                    weight,
                } => (AdminAction::Weight, vip, backend, Some(*weight)),
                BackendCmd::Promote { vip, backend } => (AdminAction::Promote, vip, backend, None),
            };
            let req = Request::Backend {
                action,
                vip: vip.clone(),
                backend: backend.clone(),
                weight,
                timeout_ms,
            };
            if let Response::Ok { message } = ask(&cli, req)? {
                println!("{message}");
            }
        }
        Command::Leave => {
            if let Response::Ok { message } = ask(&cli, Request::Leave)? {
                println!("{message}");
            }
        }
        Command::Vip {
            action: VipCmd::Move { vip, node },
        } => {
            let req = Request::VipMove {
                vip: vip.clone(),
                to: node.clone(),
            };
            if let Response::Ok { message } = ask(&cli, req)? {
                println!("{message}");
            }
        }
        Command::ImportHaproxy { file, keepalived } => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))
            };
            let haproxy = read(file)?;
            let ka = keepalived.as_ref().map(read).transpose()?;
            let ka_name = keepalived.as_ref().map(|p| p.display().to_string());
            let out = vip_daemon::import::import(
                &haproxy,
                &file.display().to_string(),
                ka.as_deref().zip(ka_name.as_deref()),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            print!("{}", out.toml);
            for w in &out.warnings {
                eprintln!("not carried over: {w}");
            }
        }
        Command::Keygen => {
            println!(
                "{}",
                vip_daemon::shell::keyfile::generate_key(&mut rand::thread_rng())
            );
        }
        Command::Reload => {
            if let Response::Ok { message } = ask(&cli, Request::Reload)? {
                println!("{message}");
            }
        }
        Command::Attach { iface } => {
            let mut dp = Dataplane::load_pinned(&cli.pin_dir, &Sizing::default())?;
            let how = dp
                .attach(iface)
                .with_context(|| format!("attach to {iface}"))?;
            let what = match how {
                Attached::Native => "attached (native mode)",
                Attached::Generic => "attached (generic mode: native was refused)",
                Attached::Adopted => "already attached; adopted the pinned link",
            };
            println!("{iface}: {what}; pinned under {}", cli.pin_dir.display());
        }
        Command::Detach { iface } => {
            if dataplane::detach(&cli.pin_dir, iface)? {
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
