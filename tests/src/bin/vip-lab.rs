//! `vip-lab`: the local lab (`cargo xtask lab [--demo]`, as root), and the pieces it runs
//! inside the controllers' namespaces (`serve`, `probe-udp`). The lab itself lives in
//! `vip_tests::lab`, shared with the end-to-end test.
use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::{bail, Context as _};
use vip_tests::lab::{self, bench, Bins, Names};

const USAGE: &str = "usage: vip-lab [--demo]          (root: the lab, live or the scripted demo)
       vip-lab --bgp [--demo]    (root: the lab with a routed VIP, FRR and an ECMP router)
       vip-lab bench throughput [--duration S] [--rounds N] [--report-dir D]
       vip-lab bench failover [--trials N] [--tail S] [--detect-trials N] [--report-dir D]
                                   (root: vip-fabric vs HAProxy + keepalived in the lab)
       vip-lab bench changes [--report-dir D]
                                   (root: day-2 changes on one vipd under load)
       vip-lab bench memory              (root: 50 VIPs x 10 backends: RSS, maps, ramp-up)
       vip-lab bench scaleout [--duration S] [--report-dir D]
                                   (root: req/s through the routed VIP, 1-3 balancers)
       vip-lab serve http|tcp|udp --port P --name N --vip A
       vip-lab probe-udp                 (vipd exec check; VIPD_BACKEND_ADDRESS/PORT)";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        [] => run(false),
        ["--demo"] => run(true),
        ["--bgp"] => {
            let (names, bins) = prepare()?;
            lab::bgp::live(names, &bins)
        }
        ["--bgp", "--demo"] | ["--demo", "--bgp"] => {
            let (names, bins) = prepare()?;
            lab::bgp_demo(names, &bins).map(drop)
        }
        ["bench", which @ ("throughput" | "failover" | "changes" | "memory" | "scaleout"), rest @ ..] => {
            bench(which, rest)
        }
        ["serve", kind, rest @ ..] => {
            let port = flag(rest, "--port")?.parse().context("--port")?;
            let vip: Ipv4Addr = flag(rest, "--vip")?.parse().context("--vip")?;
            lab::serve(kind, port, flag(rest, "--name")?, vip)
        }
        ["probe-udp"] => lab::probe_udp(),
        _ => bail!("{USAGE}"),
    }
}

fn bench(which: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut opts = bench::Options::default();
    let number = |name| -> anyhow::Result<Option<u64>> {
        optional(args, name)
            .map(|v| v.parse().with_context(|| format!("{name} {v}")))
            .transpose()
    };
    opts.duration_s = number("--duration")?.unwrap_or(opts.duration_s);
    opts.rounds = number("--rounds")?.map_or(opts.rounds, |n| n.max(1) as usize);
    opts.tail_s = number("--tail")?.unwrap_or(opts.tail_s);
    opts.trials = number("--trials")?.map_or(opts.trials, |n| n.max(1) as usize);
    opts.detect_trials = number("--detect-trials")?.map_or(opts.detect_trials, |n| n as usize);
    if let Some(dir) = optional(args, "--report-dir") {
        opts.report_dir = dir.into();
    }
    let (names, bins) = prepare()?;
    match which {
        "throughput" => bench::throughput(names, &bins, &opts),
        "changes" => bench::changes(&bins, &opts),
        "memory" => bench::memory(&bins, &opts),
        "scaleout" => bench::scaleout(names, &bins, &opts),
        _ => bench::failover(names, &bins, &opts),
    }
}

fn optional<'a>(args: &[&'a str], name: &str) -> Option<&'a str> {
    args.windows(2).find(|w| w[0] == name).map(|w| w[1])
}

fn flag<'a>(args: &[&'a str], name: &str) -> anyhow::Result<&'a str> {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1])
        .with_context(|| format!("missing {name}\n{USAGE}"))
}

fn run(demo: bool) -> anyhow::Result<()> {
    let (names, bins) = prepare()?;
    if demo {
        lab::demo(names, &bins)
    } else {
        lab::live(names, &bins)
    }
}

/// Root check, Ctrl-C handling, and where the binaries are.
fn prepare() -> anyhow::Result<(Names, Bins)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("vip-lab needs root (network namespaces, XDP, bpffs): run `sudo cargo xtask lab`");
    }
    lab::install_stop_handler();
    let me = std::env::current_exe().context("current_exe")?;
    let bins = Bins {
        vipd: vipd_next_to(&me)?,
        lab: me,
    };
    Ok((Names::new("viplab"), bins))
}

/// vipd is built into the same directory (`VIPD_BIN` overrides).
fn vipd_next_to(me: &std::path::Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("VIPD_BIN") {
        return Ok(p.into());
    }
    let vipd = me.with_file_name("vipd");
    if !vipd.is_file() {
        bail!(
            "{} missing: build it with `cargo build --release -p vip-daemon` (cargo xtask lab does)",
            vipd.display()
        );
    }
    Ok(vipd)
}
