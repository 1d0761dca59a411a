//! `bench throughput`: `wrk` from the client through vip-fabric's VIP, through HAProxy's VIP
//! (the guide flavour: checks do not matter here), and straight to one backend.
use std::fmt::Write as _;

use super::{
    competitor::{FLAVOURS, PORT_OFFSET},
    machine, plot, start, write_report,
    wrk::{self, WrkResult},
    Options,
};
use crate::lab::{config::API_VIP, story::Story, topology::Names, Bins};

const CONNECTIONS: u32 = 50;

pub fn throughput(names: Names, bins: &Bins, opts: &Options) -> anyhow::Result<()> {
    let story = Story::new();
    story.chapter("throughput: starting the lab and HAProxy + keepalived");
    let arena = start(names, bins, &story)?;
    let client = arena.lab.names.ns("client");
    let haproxy = FLAVOURS[0].vip;
    let targets = [
        ("direct to ctl1", "http://192.0.2.11:5000/".to_owned()),
        ("vip-fabric VIP", format!("http://{API_VIP}:5000/")),
        (
            "HAProxy VIP",
            format!("http://{haproxy}:{}/", 5000 + PORT_OFFSET),
        ),
    ];
    story.chapter(&format!(
        "wrk -t2 -c{CONNECTIONS} -d{}s, {} round(s), targets in turn",
        opts.duration_s, opts.rounds
    ));
    let mut runs: Vec<Vec<WrkResult>> = vec![Vec::new(); targets.len()];
    for round in 0..opts.rounds {
        for (k, (label, url)) in targets.iter().enumerate() {
            let r = wrk::run(&client, url, opts.duration_s, CONNECTIONS)?;
            story.say(format!(
                "round {}: {label:<15} {:>9.0} req/s  p50 {:.2} ms  p99 {:.2} ms  errors {}",
                round + 1,
                r.requests_per_s,
                r.p50_ms,
                r.p99_ms,
                r.errors
            ));
            runs[k].push(r);
        }
    }
    drop(arena);
    let medians: Vec<WrkResult> = runs.into_iter().map(median).collect();
    let ratio = |a: usize, b: usize| medians[a].requests_per_s / medians[b].requests_per_s;
    let (vs_direct, vs_haproxy) = (ratio(1, 0), ratio(1, 2));

    let machine = machine();
    let mut md = format!(
        "# Throughput: vip-fabric vs HAProxy vs direct\n\n`cargo xtask bench throughput`, {machine}. \
         `wrk -t2 -c{CONNECTIONS} -d{}s --latency` from the client namespace, HTTP/1.1 keep-alive to the \
         lab's HTTP service (a thread per connection) on the controllers; median of {} round(s). \
         vip-fabric: XDP on the owner forwards to 3 backends, replies go straight back (DSR). \
         HAProxy: TCP mode on the keepalived master, 3 backends, round robin. Everything shares \
         the same CPUs, wrk included.\n\n| target | req/s | p50 ms | p99 ms | socket errors |\n|---|---|---|---|---|\n",
        opts.duration_s, opts.rounds
    );
    for ((label, url), r) in targets.iter().zip(&medians) {
        let _ = writeln!(
            md,
            "| {label} (`{url}`) | {:.0} | {:.2} | {:.2} | {} |",
            r.requests_per_s, r.p50_ms, r.p99_ms, r.errors
        );
    }
    let _ = writeln!(
        md,
        "\nvip-fabric / direct = **{vs_direct:.2}**, vip-fabric / HAProxy = **{vs_haproxy:.2}** (requests/s).\n\n![throughput](throughput.svg)"
    );
    let rows: Vec<(String, f64, String)> = targets
        .iter()
        .zip(&medians)
        .map(|((label, _), r)| {
            let note = format!("req/s (p50 {:.2} ms, p99 {:.2} ms)", r.p50_ms, r.p99_ms);
            (label.to_string(), r.requests_per_s, note)
        })
        .collect();
    let plot = plot::bars(
        &format!(
            "wrk -t2 -c{CONNECTIONS}, median of {} round(s), {machine}",
            opts.rounds
        ),
        "requests/s (HTTP/1.1 keep-alive)",
        &rows,
    )?;
    write_report(&opts.report_dir, "throughput", &md, &plot)?;
    println!("vip_vs_direct={vs_direct:.2} vip_vs_haproxy={vs_haproxy:.2}");
    Ok(())
}

/// The run with the median requests/s.
fn median(mut runs: Vec<WrkResult>) -> WrkResult {
    runs.sort_by(|a, b| a.requests_per_s.total_cmp(&b.requests_per_s));
    runs.swap_remove(runs.len() / 2)
}
