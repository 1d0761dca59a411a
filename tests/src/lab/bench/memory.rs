//! `bench memory`: what a single-node vipd costs with 50 VIPs x 10 healthy backends at the
//! default table size (issue 14: under 64 MiB resident, verdict-to-live p99 under 100 us while
//! the backends come up). Ten backend hosts on one LAN each serve every VIP (one TCP listener,
//! ten addresses' worth of backends per VIP); vipd starts with all of them down and reports,
//! once every VIP has its ten backends in its table, its resident memory, the maps' total and
//! the p99 of its verdict-to-live latencies over the ramp-up (from its own status). vipd runs
//! with `node.realtime = true` (opt-in; see docs/operations.md).
use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use super::Options;
use crate::{
    lab::{story::Story, Bins},
    servers, unique,
    vipd::Vipd,
    Lan, PinDir,
};

const VIPS: u8 = 50;
/// Backend hosts 11..=20 on the LAN.
const BACKEND_HOSTS: std::ops::RangeInclusive<u8> = 11..=20;
const PORT: u16 = 80;
/// How often the bench asks for vipd's status while waiting for the ramp-up to finish: as
/// an operator's `watch` would. A `status` holds vipd's loop for 1-2 ms; asked every 200 ms
/// it was itself a cause of the latencies measured.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// VIP `i` (0-based): 10.78.0.(i+1), off the LAN: only vipd's maps and addresses hold it.
fn vip_address(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, 0, i + 1)
}

fn config(iface: &str, state_dir: &std::path::Path) -> String {
    let mut c = format!(
        "[node]\nname = \"lb\"\ninterfaces = [\"{iface}\"]\npin_dir = \"@PIN_DIR@\"\n\
         state_dir = \"{}\"\nrealtime = true\n\n[control]\nsocket = \"@CONTROL@\"\n",
        state_dir.display()
    );
    for i in 0..VIPS {
        // The default table size and checks: what the issue measures.
        let _ = write!(
            c,
            "\n[[vip]]\nname = \"v{i}\"\naddress = \"{}\"\nport = {PORT}\nprotocol = \"tcp\"\n",
            vip_address(i)
        );
        for h in BACKEND_HOSTS {
            let _ = write!(
                c,
                "[[vip.backend]]\nname = \"b{h}\"\naddress = \"10.77.0.{h}\"\nport = {PORT}\n"
            );
        }
    }
    c
}

/// Backends in their VIP's table, over every VIP.
fn live_backends(status: &serde_json::Value) -> usize {
    status["vips"].as_array().map_or(0, |vips| {
        vips.iter()
            .flat_map(|v| v["backends"].as_array().into_iter().flatten())
            .filter(|b| b["slots"].as_u64() > Some(0))
            .count()
    })
}

pub fn memory(bins: &Bins, _opts: &Options) -> anyhow::Result<()> {
    let story = Story::new();
    story.chapter("memory: one vipd, 50 VIPs x 10 backends, default table size");
    let mut lan = Lan::new();
    let lb = lan.add_host(2);
    let hosts: Vec<usize> = BACKEND_HOSTS.map(|n| lan.add_host(n)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let servers: Vec<_> = hosts
        .iter()
        .map(|&h| servers::http_server(&lan.hosts[h].ns, PORT, format!("h{h}"), stop.clone()))
        .collect();
    let scratch = std::env::temp_dir().join(unique("vip-bench-memory-"));
    std::fs::create_dir_all(&scratch).context("scratch dir")?;
    let pins = PinDir::new();
    let started = Instant::now();
    let vipd = Vipd::start_bin(
        &lan.hosts[lb].ns,
        &pins,
        &config(&lan.hosts[lb].iface, &scratch),
        &bins.vipd,
    );
    let want = usize::from(VIPS) * hosts.len();
    let status = loop {
        let text = vipd
            .cli(&["status", "--json"])
            .map_err(|e| anyhow::anyhow!("vipd status: {e}"))?;
        let status: serde_json::Value = serde_json::from_str(&text).context("status JSON")?;
        let live = live_backends(&status);
        if live == want {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("only {live} of {want} backends live after 60 s");
        }
        std::thread::sleep(STATUS_EVERY);
    };
    story.say(format!(
        "all {want} backends live {:.1?} after the start",
        started.elapsed()
    ));
    // Settle: the precomputed tables of the last publishes are built off the loop.
    std::thread::sleep(Duration::from_secs(2));
    let text = vipd
        .cli(&["status", "--json"])
        .map_err(|e| anyhow::anyhow!("vipd status: {e}"))?;
    let settled: serde_json::Value = serde_json::from_str(&text).context("status JSON")?;
    let mib = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN) / (1024.0 * 1024.0);
    let rss = mib(&settled["rss_bytes"]);
    let maps = mib(&settled["map_bytes"]);
    let p99 = status["verdict_to_live_p99_us"]
        .as_f64()
        .context("no verdict-to-live latencies in the status")?;
    story.say(format!(
        "vipd resident {rss:.1} MiB, maps {maps:.1} MiB, verdict-to-live p99 {p99:.0} us over \
         {} publishes ({} computed ahead; {:.1} MiB of steps held)",
        settled["publishes"],
        settled["publishes_precomputed"],
        mib(&settled["precomputed_bytes"]),
    ));
    if let Some(pid) = vipd.pid() {
        let proc_status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss_lines: Vec<&str> = proc_status
            .lines()
            .filter(|l| l.starts_with("Rss") || l.starts_with("VmHWM") || l.starts_with("Threads"))
            .collect();
        story.say(format!("/proc/{pid}/status: {}", rss_lines.join("; ")));
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    drop(vipd);
    for s in servers {
        let _ = s.join();
    }
    let _ = std::fs::remove_dir_all(&scratch);
    println!("rss_mib_50x10={rss:.1} maps_mib_50x10={maps:.1} ramp_verdict_p99_us={p99:.0}");
    Ok(())
}
