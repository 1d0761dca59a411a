//! `vipd`: the vip-fabric daemon and its operator commands.
use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
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

/// `vipd --version`: the crate version, the git commit it was built from ("unknown" without
/// git) and FNV-1a 64 of the embedded XDP object (`shell::dataplane::XDP_OBJECT`).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("VIPD_GIT_COMMIT"),
    ", bpf fnv1a64 ",
    env!("VIPD_BPF_FNV"),
    ")"
);

#[derive(Parser)]
#[command(name = "vipd", version = VERSION, about = "eBPF/XDP VIP and health fabric")]
struct Cli {
    /// Control socket of the running vipd (status, trace, backend, reload, leave, vip); with
    /// `run`, the socket to serve instead of the config's `[control] socket`.
    /// [default: /run/vip-fabric/vipd.sock]
    #[arg(long, global = true)]
    control: Option<PathBuf>,
    /// bpffs directory of the pinned program, links and maps (attach, detach, stats).
    #[arg(long, global = true, default_value = dataplane::PIN_DIR)]
    pin_dir: PathBuf,
    /// How status, trace, stats and validate print: a human table, or JSON with named fields
    /// and a `schema` version (the same data).
    #[arg(short = 'o', long, global = true, value_enum, default_value = "text")]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Config file to run with.
        #[arg(long, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Check a config file without touching the system.
    Validate {
        /// Config file to check.
        file: PathBuf,
    },
    /// Node, data plane, VIPs and backends of the running vipd.
    Status {
        /// Print the same data as JSON instead of text (as `-o json`).
        #[arg(long)]
        json: bool,
    },
    /// Which backend a flow goes to, and why: `vipd trace 198.51.100.7:40000 192.0.2.100:5000 tcp`.
    Trace {
        /// Client address and port of the flow (ADDR:PORT, IPv6 as [ADDR]:PORT).
        src: SocketAddr,
        /// VIP address and port the flow is sent to.
        vip: SocketAddr,
        /// Transport protocol of the flow.
        #[arg(default_value = "tcp", value_parser = ["tcp", "udp"])]
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
    /// Cluster mode: this node in or out of service (`pcs node standby` / `unstandby`).
    Node {
        #[command(subcommand)]
        action: NodeCmd,
    },
    /// Backend hosts: put in place (`setup`), verify (`check`) or revert (`undo`) what direct
    /// server return needs: the VIPs on `lo`, arp_ignore/arp_announce, rp_filter and the
    /// decapsulation program for `forward = "encap"` backends.
    Host {
        #[command(subcommand)]
        action: HostCmd,
    },
    /// Print a new random cluster key (hex) for the key file.
    Keygen,
    /// Convert an haproxy.cfg (and keepalived.conf) into a vipd config on stdout; what cannot
    /// be carried over is listed on stderr and as comments.
    ImportHaproxy {
        /// haproxy.cfg to convert.
        file: PathBuf,
        /// keepalived.conf of the same node: its virtual addresses and interfaces are carried over too.
        #[arg(long)]
        keepalived: Option<PathBuf>,
    },
    /// Development: load the XDP program, attach it to IFACE and pin everything.
    Attach {
        /// Network interface to attach to (e.g. eth0).
        #[arg(long)]
        iface: String,
    },
    /// Detach from IFACE; with no interface left, remove every pin.
    Detach {
        /// Network interface to detach from.
        #[arg(long)]
        iface: String,
    },
    /// Data-plane reason counters, read from the pinned maps.
    Stats,
    /// What the data plane does with packets, as it happens.
    Debug {
        #[command(subcommand)]
        action: DebugCmd,
    },
    /// Print a completion script for SHELL to stdout (e.g. `vipd completions bash >
    /// /etc/bash_completion.d/vipd`).
    Completions {
        /// Shell to complete for.
        shell: CompletionShell,
    },
    /// Write man pages into DIR: vipd.1 and one per subcommand (vipd-status.1,
    /// vipd-backend-drain.1, ...).
    Man {
        /// Directory to write them to; created if missing.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

/// The shells `vipd completions` writes scripts for.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl From<CompletionShell> for clap_complete::Shell {
    fn from(s: CompletionShell) -> Self {
        match s {
            CompletionShell::Bash => Self::Bash,
            CompletionShell::Zsh => Self::Zsh,
            CompletionShell::Fish => Self::Fish,
        }
    }
}

/// Writes the man page of `cmd` and of each of its subcommands (not the `help` one) into
/// `dir`; the paths written, subcommands first.
fn write_man_pages(cmd: clap::Command, dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    fn walk(
        cmd: clap::Command,
        dir: &std::path::Path,
        out: &mut Vec<PathBuf>,
    ) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            walk(sub, dir, out)?;
        }
        out.push(clap_mangen::Man::new(cmd).generate_to(dir)?);
        Ok(())
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(cmd, dir, &mut out)?;
    Ok(out)
}

#[derive(Subcommand)]
enum BackendCmd {
    /// No new flows; established ones stay on it (flow table) until the drain timeout.
    Drain {
        /// VIP name (`name` in its [[vip]] table).
        vip: String,
        /// Backend name (`name` in its [[vip.backend]] table).
        backend: String,
        /// How long established flows stay (e.g. 30s, 10m); default: the VIP's drain_timeout.
        #[arg(long, value_parser = vip_daemon::config::parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// Out of the table and not probed.
    Disable {
        /// VIP name (`name` in its [[vip]] table).
        vip: String,
        /// Backend name (`name` in its [[vip.backend]] table).
        backend: String,
    },
    /// Back to its configured weight.
    Enable {
        /// VIP name (`name` in its [[vip]] table).
        vip: String,
        /// Backend name (`name` in its [[vip.backend]] table).
        backend: String,
    },
    /// Set a runtime weight (0..=65535).
    Weight {
        /// VIP name (`name` in its [[vip]] table).
        vip: String,
        /// Backend name (`name` in its [[vip.backend]] table).
        backend: String,
        /// The runtime weight, 0..=65535 (0 = drained, as in the config).
        #[arg(value_parser = clap::value_parser!(u32).range(0..=65535))]
        weight: u32,
    },
    /// Primary-backup VIP: make BACKEND (eligible) the writer; it keeps the slot while eligible.
    Promote {
        /// VIP name (`name` in its [[vip]] table).
        vip: String,
        /// Backend name (`name` in its [[vip.backend]] table).
        backend: String,
    },
}

/// What `vipd host` setup and check act on.
#[derive(clap::Args)]
struct HostTarget {
    /// Config file: this host backs every VIP with a backend at one of this host's addresses
    /// (a `forward = "encap"` one also needs decapsulation on the interface holding it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A VIP address to back besides the config's (repeatable).
    #[arg(long = "vip", value_name = "ADDR")]
    vips: Vec<std::net::IpAddr>,
    /// An interface that receives encapsulated VIP traffic besides the config's (repeatable).
    #[arg(long = "decap", value_name = "IFACE")]
    decap: Vec<String>,
    /// Where setup records what it changed, and undo reads it.
    #[arg(long, default_value = vip_daemon::shell::host::STATE_FILE)]
    state_file: PathBuf,
    /// bpffs directory of the decapsulation program (apart from vipd's own pins).
    #[arg(long, default_value = vip_daemon::shell::host::DECAP_PIN_DIR)]
    decap_pin_dir: PathBuf,
}

#[derive(Subcommand)]
enum HostCmd {
    /// Make the changes this backend host is missing and record them (with the values before)
    /// in the state file.
    Setup {
        #[command(flatten)]
        target: HostTarget,
        /// Only print the changes; make none.
        #[arg(long)]
        dry_run: bool,
    },
    /// List what this backend host is missing; exit code 4 when anything is.
    Check {
        #[command(flatten)]
        target: HostTarget,
    },
    /// Revert exactly what setup recorded (a value changed since by someone else is left).
    Undo {
        /// The state file setup wrote.
        #[arg(long, default_value = vip_daemon::shell::host::STATE_FILE)]
        state_file: PathBuf,
        /// bpffs directory of the decapsulation program.
        #[arg(long, default_value = vip_daemon::shell::host::DECAP_PIN_DIR)]
        decap_pin_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum VipCmd {
    /// Run on the owner: hand the VIP's address (VIP name or address) to NODE, which
    /// takes it at once, without fencing; connections survive (same tables everywhere).
    Move {
        /// VIP name or address.
        vip: String,
        /// Name of the node that takes the address (`node.name` in its config).
        node: String,
    },
}

#[derive(Subcommand)]
enum DebugCmd {
    /// Print the XDP program's decision for each packet to a VIP until Ctrl-C: the flow, the
    /// VIP, the live table's slot and backend for it, the action and the reason (flow-table
    /// hit, second chance, no lease...). Off again when it stops; costs nothing while off.
    Packets {
        /// Only packets to this VIP address.
        #[arg(long)]
        vip: Option<std::net::IpAddr>,
        /// Only packets from this client address.
        #[arg(long)]
        src: Option<std::net::IpAddr>,
        /// Stop after this long (e.g. 10s) instead of at Ctrl-C.
        #[arg(long, value_parser = vip_daemon::config::parse_duration)]
        duration: Option<std::time::Duration>,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Take this node out of service: its VIPs are handed over at once and no node places a
    /// VIP here until `unstandby`; kept across restarts of vipd. It still votes.
    Standby {
        /// This node's name (optional; the command acts on the node it runs on).
        node: Option<String>,
    },
    /// Put this node back in service; nothing moves back by itself (stickiness).
    Unstandby {
        /// This node's name (optional; the command acts on the node it runs on).
        node: Option<String>,
    },
    /// Standby, then wait until the traffic left: routed VIPs withdrawn (address VIPs handed
    /// over), established connections still forwarded until no VIP packet arrived here for
    /// `--quiet`, or `--timeout` passed (exit code 5: traffic still arriving).
    Drain {
        /// How long the VIPs' packet counters must stay still.
        #[arg(long, default_value = "1s", value_parser = vip_daemon::config::parse_duration)]
        quiet: std::time::Duration,
        /// The longest wait.
        #[arg(long, default_value = "30s", value_parser = vip_daemon::config::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Back in service after a drain (as `unstandby`): routes announced again.
    Undrain,
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

/// Exit codes: 0 done, 1 failed (the error on stderr), 2 bad command line (clap's), 3 `trace`
/// found the host model and the live table disagreeing, 4 `host check` found something
/// missing.
const EXIT_ERROR: i32 = 1;
const EXIT_TRACE_MISMATCH: i32 = 3;
const EXIT_HOST_MISSING: i32 = 4;
/// `vipd node drain`: VIP packets still arrived here when the wait ended.
const EXIT_NOT_DRAINED: i32 = 5;

/// Writes to stdout. A reader that went away (`vipd status | head -1`) ends the command
/// quietly with success: it has what it wanted.
fn write_stdout(args: std::fmt::Arguments) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut o = std::io::stdout().lock();
    match o.write_fmt(args).and_then(|()| o.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => r.context("write to stdout"),
    }
}

/// `print!` that neither panics on a closed pipe nor ignores other write errors.
macro_rules! out {
    ($($t:tt)*) => { write_stdout(format_args!($($t)*)) };
}

/// `println!`, likewise.
macro_rules! outln {
    ($($t:tt)*) => { write_stdout(format_args!("{}\n", format_args!($($t)*))) };
}

/// A line for stderr; nothing to do if stderr is gone too.
fn warn(line: std::fmt::Arguments) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The error and its causes on one line, `outer: inner: root`, each said once: a message
/// that already includes its cause's text (many `thiserror` types do) does not repeat it.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if out.contains(msg.trim()) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(msg.trim());
    }
    out
}

fn ask(cli: &Cli, req: Request) -> anyhow::Result<Response> {
    let socket = cli
        .control
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL));
    match control::call(&socket, &req)? {
        Response::Error { message } => anyhow::bail!("{message}"),
        r => Ok(r),
    }
}

fn main() {
    init_logging();
    let cli = Cli::parse();
    let code = match command(&cli) {
        Ok(code) => code,
        Err(e) => {
            warn(format_args!("error: {}", one_line(&e)));
            EXIT_ERROR
        }
    };
    std::process::exit(code);
}

/// Runs the command; Ok(exit code).
fn command(cli: &Cli) -> anyhow::Result<i32> {
    match &cli.command {
        Command::Run { config } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let outcome = rt.block_on(app::run(app::Options {
                config_path: config.clone(),
                control_socket: cli.control.clone(),
            }));
            // Dropping the runtime would wait for every blocking task. Nothing there has state
            // to hand over (the data plane stays pinned; the precompute and state-file threads
            // are not the runtime's, and the state file was written before the loop ended),
            // so give the async tasks a moment to drop (exec probes kill their children on
            // drop) and leave the rest to process exit.
            rt.shutdown_timeout(std::time::Duration::from_millis(20));
            outcome?;
        }
        Command::Validate { file } => match config::load(file) {
            Ok(c) => {
                let cost = vip_daemon::core::budget::estimate(
                    &c,
                    &c.default_limits(),
                    config::limits_cpus(),
                );
                if cli.output == Output::Json {
                    let v = serde_json::json!({
                        "file": file.display().to_string(),
                        "valid": true,
                        "vips": c.vips.len(),
                        "backends": c.vips.iter().map(|v| v.backends.len()).sum::<usize>(),
                        "memory": { "maps_bytes": cost.maps, "vipd_bytes": cost.vipd },
                    });
                    print_json(v)?;
                    return Ok(0);
                }
                let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
                outln!(
                    "{}: valid ({} VIPs, {} backends); memory: maps {:.1} MiB + vipd about \
                     {:.1} MiB",
                    file.display(),
                    c.vips.len(),
                    c.vips.iter().map(|v| v.backends.len()).sum::<usize>(),
                    mib(cost.maps),
                    mib(cost.vipd)
                )?
            }
            Err(e) => {
                warn(format_args!("{e}"));
                return Ok(EXIT_ERROR);
            }
        },
        Command::Status { json } => {
            if let Response::Status(s) = ask(cli, Request::Status)? {
                if *json || cli.output == Output::Json {
                    print_json(&s)?;
                } else {
                    out!("{}", s.render())?;
                }
            }
        }
        Command::Trace { src, vip, proto } => {
            let req = Request::Trace {
                src: *src,
                vip: *vip,
                proto: proto.clone(),
            };
            if let Response::Trace(t) = ask(cli, req)? {
                match cli.output {
                    Output::Json => print_json(&t)?,
                    Output::Text => out!("{}", t.render())?,
                }
                if !t.agree {
                    return Ok(EXIT_TRACE_MISMATCH);
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
            if let Response::Ok { message } = ask(cli, req)? {
                outln!("{message}")?;
            }
        }
        Command::Leave => {
            if let Response::Ok { message } = ask(cli, Request::Leave)? {
                outln!("{message}")?;
            }
        }
        Command::Vip {
            action: VipCmd::Move { vip, node },
        } => {
            let req = Request::VipMove {
                vip: vip.clone(),
                to: node.clone(),
            };
            if let Response::Ok { message } = ask(cli, req)? {
                outln!("{message}")?;
            }
        }
        Command::Node { action } => {
            let (standby, node) = match action {
                NodeCmd::Standby { node } => (true, node.clone()),
                NodeCmd::Unstandby { node } => (false, node.clone()),
                NodeCmd::Drain { .. } => (true, None),
                NodeCmd::Undrain => (false, None),
            };
            if let Response::Ok { message } = ask(cli, Request::Node { standby, node })? {
                outln!("{message}")?;
            }
            if let NodeCmd::Drain { quiet, timeout } = action {
                return wait_drained(cli, *quiet, *timeout);
            }
        }
        Command::Debug {
            action: DebugCmd::Packets { vip, src, duration },
        } => return debug_packets(cli, *vip, *src, *duration),
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
            out!("{}", out.toml)?;
            for w in &out.warnings {
                warn(format_args!("not carried over: {w}"));
            }
        }
        Command::Host { action } => return host_command(cli, action),
        Command::Keygen => {
            outln!(
                "{}",
                vip_daemon::shell::keyfile::generate_key(&mut rand::thread_rng())
            )?;
        }
        Command::Reload => {
            if let Response::Ok { message } = ask(cli, Request::Reload)? {
                outln!("{message}")?;
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
            outln!("{iface}: {what}; pinned under {}", cli.pin_dir.display())?;
        }
        Command::Detach { iface } => {
            if dataplane::detach(&cli.pin_dir, iface)? {
                outln!("{iface}: detached")?;
            } else {
                outln!("{iface}: nothing was attached")?;
            }
        }
        Command::Stats => {
            let stats = dataplane::pinned_counters(&cli.pin_dir, MAP_STATS)?;
            if cli.output == Output::Json {
                let reasons: Vec<serde_json::Value> = (reason::NAMES.iter().zip(&stats))
                    .map(|(name, c)| {
                        serde_json::json!({"reason": name, "packets": c.packets, "bytes": c.bytes})
                    })
                    .collect();
                print_json(serde_json::json!({ "reasons": reasons }))?;
                return Ok(0);
            }
            for (name, c) in reason::NAMES.iter().zip(&stats) {
                outln!("{name:<20} {:>12} packets {:>14} bytes", c.packets, c.bytes)?;
            }
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(
                clap_complete::Shell::from(*shell),
                &mut Cli::command(),
                "vipd",
                &mut script,
            );
            out!("{}", String::from_utf8_lossy(&script))?;
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            let written = write_man_pages(Cli::command(), dir)
                .with_context(|| format!("write man pages into {}", dir.display()))?;
            for path in written {
                outln!("{}", path.display())?;
            }
        }
    }
    Ok(0)
}

/// `vipd host ...`: prints the report; Ok(exit code).
fn host_command(cli: &Cli, action: &HostCmd) -> anyhow::Result<i32> {
    use app::host::{self, HostOptions};
    let opts = |t: &HostTarget| HostOptions {
        config: t.config.clone(),
        vips: t.vips.clone(),
        decap: t.decap.clone(),
        state_file: t.state_file.clone(),
        decap_pin_dir: t.decap_pin_dir.clone(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        match action {
            HostCmd::Setup { target, dry_run } => {
                host::setup(&opts(target), !dry_run, "setup").await
            }
            HostCmd::Check { target } => host::setup(&opts(target), false, "check").await,
            HostCmd::Undo {
                state_file,
                decap_pin_dir,
            } => host::undo(state_file, decap_pin_dir).await,
        }
    })?;
    match cli.output {
        Output::Json => print_json(&report)?,
        Output::Text => out!("{}", report.render())?,
    }
    let missing = matches!(action, HostCmd::Check { .. }) && !report.changes.is_empty();
    Ok(if missing { EXIT_HOST_MISSING } else { 0 })
}

/// Prints `value` as pretty JSON: an object with the `schema` version of vipd's JSON output
/// (`shell::status::STATUS_SCHEMA`) among its fields.
/// Set by SIGINT / SIGTERM while `vipd debug packets` streams.
static STOP_STREAM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn stop_stream(_: libc::c_int) {
    STOP_STREAM.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// `vipd debug packets`: turns the XDP program's packet log on, prints it, renews it every
/// second (vipd turns it off by itself a few seconds after the last renewal), and turns it
/// off at Ctrl-C or after `duration`.
fn debug_packets(
    cli: &Cli,
    vip: Option<std::net::IpAddr>,
    src: Option<std::net::IpAddr>,
    duration: Option<std::time::Duration>,
) -> anyhow::Result<i32> {
    use std::time::{Duration, Instant};
    use vip_daemon::shell::packet_log::PacketLog;
    let req = |on| Request::DebugPackets { on, vip, src };
    let program = |resp| match resp {
        Response::Debug { program_id } => Ok(program_id),
        _ => anyhow::bail!("vipd did not answer with its XDP program"),
    };
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, stop_stream as *const () as libc::sighandler_t);
        libc::signal(
            libc::SIGTERM,
            stop_stream as *const () as libc::sighandler_t,
        );
    }
    let mut id = program(ask(cli, req(true))?)?;
    let mut log = PacketLog::open(id)?;
    warn(format_args!(
        "logging the packets to {} from {} (XDP program {id}); Ctrl-C stops",
        vip.map_or("every VIP".into(), |v| v.to_string()),
        src.map_or("any client".into(), |a| a.to_string()),
    ));
    let (started, mut renewed) = (Instant::now(), Instant::now());
    let streamed = (|| -> anyhow::Result<()> {
        while !STOP_STREAM.load(std::sync::atomic::Ordering::Relaxed)
            && duration.is_none_or(|d| started.elapsed() < d)
        {
            log.print_for(Duration::from_millis(200))?;
            if renewed.elapsed() >= Duration::from_secs(1) {
                renewed = Instant::now();
                // A restarted vipd runs another program instance: follow it.
                let now_id = program(ask(cli, req(true))?)?;
                if now_id != id {
                    (id, log) = (now_id, PacketLog::open(now_id)?);
                }
            }
        }
        Ok(())
    })();
    let off = ask(cli, req(false));
    streamed?;
    off?;
    Ok(0)
}

/// `vipd node drain`'s wait: the node's VIP packet counters (over every VIP) polled until
/// they stayed still for `quiet` (the routers or the new owners took the traffic, and the
/// connections that still came here ended or moved) or `timeout` passed.
fn wait_drained(
    cli: &Cli,
    quiet: std::time::Duration,
    timeout: std::time::Duration,
) -> anyhow::Result<i32> {
    use vip_daemon::core::announce::{Converged, Withdrawal};
    let packets = || -> anyhow::Result<u64> {
        match ask(cli, Request::Status)? {
            Response::Status(s) => Ok(s.vips.iter().map(|v| v.packets).sum()),
            _ => anyhow::bail!("vipd did not answer with its status"),
        }
    };
    let started = std::time::Instant::now();
    let mut wait = Withdrawal::start(started, quiet, timeout);
    let mut seen = packets()?;
    let outcome = loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let now_seen = packets()?;
        let now = std::time::Instant::now();
        wait.on_packets(now_seen.saturating_sub(seen), now);
        seen = now_seen;
        if let Some(c) = wait.converged(now) {
            break c;
        }
    };
    let took = started.elapsed().as_secs_f64();
    match outcome {
        Converged::Quiet => {
            outln!("drained after {took:.2}s: no VIP packet here for {quiet:?}")?;
            Ok(0)
        }
        Converged::TimedOut => {
            warn(format_args!(
                "not drained after {took:.2}s: VIP packets still arrive here (traffic that \
                 does not come through the routers, or routers that did not converge); the \
                 node stays in standby"
            ));
            Ok(EXIT_NOT_DRAINED)
        }
    }
}

fn print_json(value: impl serde::Serialize) -> anyhow::Result<()> {
    let mut object = serde_json::Map::new();
    let schema = vip_daemon::shell::status::STATUS_SCHEMA;
    object.insert("schema".into(), schema.into());
    match serde_json::to_value(value)? {
        serde_json::Value::Object(fields) => {
            object.extend(fields.into_iter().filter(|(k, _)| k != "schema"));
        }
        other => {
            object.insert("value".into(), other);
        }
    }
    outln!("{}", serde_json::to_string_pretty(&object)?)?;
    Ok(())
}
