//! `vip-bench xdp`: ns/packet of the balancer through BPF_PROG_TEST_RUN, side by side with the
//! object's bare baselines (`bare_tx`: swap MACs + XDP_TX, `bare_pass`: XDP_PASS) on the same
//! frames, and the time `TablePublisher::publish` takes for a full M = 65537 table.
//!
//! Noise: the cases are interleaved in rounds (the starting case rotates every round), each
//! run repeats the program `repeat` times in the kernel, and every case reports the median
//! of its rounds; the ratios come from the medians of this one run. The kernel's figure
//! (`TestRunResult::duration`, the mean per repetition, whole nanoseconds) excludes the time
//! the test loop spends rescheduled; the wall-clock column (syscall time / repeat) has
//! sub-ns resolution but counts preemption by other tasks.
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use aya::programs::{TestRun as _, TestRunOptions};
use vip_benches::{cpus, median, min_max, percentile, require_root, vm_rss_kib};
use vip_common::{
    maps::{
        reason, Backend, Settings, VipInfo, VipKey, BACKEND_F_KEEP_FLOWS, FWD_L2, PROG_BARE_PASS,
        PROG_BARE_TX, PROG_XDP, VIP_F_FLOWS, VIP_F_SRC_HASH,
    },
    wire::{FAMILY_V4, FAMILY_V6, XDP_PASS, XDP_TX},
};
use vip_daemon::shell::dataplane::{Dataplane, Sizing, TableRegion};
use vip_tests::{
    fixture::{run_program, Balancer},
    packet::{l4_frame, Flow, Frame},
};

/// Maglev table size of every benchmarked VIP (the production default prime).
const M: u32 = 65_537;
const SEED: u32 = 0x5eed_0001;
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0xee, 1];

const CLIENT4: [u8; 4] = [198, 18, 0, 7];
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7,
];
const VIP_WEB: [u8; 4] = [192, 0, 2, 10];
const VIP_AFFINITY: [u8; 4] = [192, 0, 2, 11];
const VIP_DNS6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const NOT_A_VIP: [u8; 4] = [192, 0, 2, 99];

/// VIP indices (and table regions, in this order).
const WEB: u32 = 0;
const DNS6: u32 = 1;
const AFFINITY: u32 = 2;
/// The web VIP on another port, with the flow table (`VIP_F_FLOWS`): single-node VIPs.
const WEB_FLOWS: u32 = 3;

/// Tables alternated by the publish benchmark.
const PUBLISH_TABLES: usize = 4;
/// Untimed publishes before the measured ones (first touch of both generations' pages).
const PUBLISH_WARMUP: usize = 2 * PUBLISH_TABLES;

#[derive(clap::Args)]
pub struct Args {
    /// Interleaved rounds; every case reports the median over them.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// BPF_PROG_TEST_RUN repetitions per case and round.
    #[arg(long, default_value_t = 1_000_000)]
    repeat: u32,
    /// Measured full-table publishes (after a few untimed ones).
    #[arg(long, default_value_t = 400)]
    publishes: usize,
}

/// One program on one frame, and what it must return.
struct Case {
    name: &'static str,
    prog: &'static str,
    frame: Vec<u8>,
    action: u32,
    /// The balancer's reason counter that must count every repetition (None for baselines).
    reason: Option<u32>,
}

/// One BPF_PROG_TEST_RUN of a case: ns per packet by the kernel's clock and by the wall clock.
struct Sample {
    kernel_ns: f64,
    wall_ns: f64,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    require_root("xdp")?;
    ensure!(args.rounds >= 1, "--rounds must be at least 1");
    ensure!(args.repeat >= 1, "--repeat must be at least 1");
    ensure!(args.publishes >= 1, "--publishes must be at least 1");

    let (mut b, regions) = balancer();
    let cases = cases();
    // Every balancer case once through the kernel and the host model, to be sure each
    // measures the path its name says.
    for case in &cases {
        let got = if case.prog == PROG_XDP {
            b.check(&case.frame).0
        } else {
            run_program(&mut b.dp, case.prog, &case.frame)
        };
        ensure!(
            got.action == case.action,
            "{}: {} returned {} instead of {}",
            case.name,
            case.prog,
            got.action,
            case.action
        );
    }

    println!(
        "vip-bench xdp: BPF_PROG_TEST_RUN, {} rounds x {} cases x repeat {}, M = {M}",
        args.rounds,
        cases.len(),
        args.repeat
    );
    // Warm-up: caches, branch predictors, the CPU's clock.
    for case in &cases {
        measure(&mut b.dp, case, args.repeat.min(100_000))?;
    }
    let mut samples: Vec<Vec<Sample>> = cases.iter().map(|_| Vec::new()).collect();
    for round in 0..args.rounds {
        for k in 0..cases.len() {
            let i = (round + k) % cases.len();
            samples[i].push(measure(&mut b.dp, &cases[i], args.repeat)?);
        }
    }

    println!();
    println!(
        "{:<22} {:>13} {:>8} {:>8} {:>13}",
        "case", "ns/pkt median", "min", "max", "wall median"
    );
    let mut medians = Vec::new();
    for (case, s) in cases.iter().zip(&samples) {
        let kernel: Vec<f64> = s.iter().map(|x| x.kernel_ns).collect();
        let wall: Vec<f64> = s.iter().map(|x| x.wall_ns).collect();
        let (lo, hi) = min_max(&kernel);
        let med = median(&kernel);
        println!(
            "{:<22} {:>13.1} {:>8.1} {:>8.1} {:>13.2}",
            case.name,
            med,
            lo,
            hi,
            median(&wall)
        );
        medians.push((case.name, med, median(&wall)));
    }
    let med = |name: &str| {
        medians
            .iter()
            .find(|m| m.0 == name)
            .map(|m| (m.1, m.2))
            .expect("case exists")
    };
    let ratio = |num: &str, den: &str| -> anyhow::Result<(f64, f64)> {
        let ((n, nw), (d, dw)) = (med(num), med(den));
        if d <= 0.0 {
            bail!("{den} measured {d} ns/pkt: the kernel's clock is too coarse for a ratio");
        }
        Ok((n / d, nw / dw))
    };
    let (ratio_hit, ratio_hit_wall) = ratio("hit_v4_tcp", "bare_tx")?;
    let (ratio_miss, ratio_miss_wall) = ratio("miss_v4_tcp", "bare_pass")?;
    let (ratio_flows, _) = ratio("hit_v4_tcp_flows", "bare_tx")?;
    println!(
        "flow table (single-node VIPs): hit_v4_tcp_flows/bare_tx {ratio_flows:.2} against \
         {ratio_hit:.2} without it (cluster VIPs whose backends all run vipd)"
    );
    println!(
        "ratios (kernel clock): hit_v4_tcp/bare_tx {ratio_hit:.2}, miss_v4_tcp/bare_pass \
         {ratio_miss:.2}; by wall clock {ratio_hit_wall:.2}, {ratio_miss_wall:.2}"
    );

    let publish_us = publish(&mut b, &regions[WEB as usize], args.publishes)?;
    let (p50, p99) = (percentile(&publish_us, 50.0), percentile(&publish_us, 99.0));
    let (lo, hi) = min_max(&publish_us);
    println!();
    println!(
        "publish M = {M} ({} publishes of VIP {WEB}, {PUBLISH_TABLES} alternating tables, \
         {PUBLISH_WARMUP} untimed first): p50 {p50:.1} us, p99 {p99:.1} us, min {lo:.1} us, \
         max {hi:.1} us",
        publish_us.len()
    );

    let cpus = cpus();
    let map_bytes = b.sizing.map_bytes(cpus);
    println!();
    println!(
        "maps: {map_bytes} bytes ({:.2} MiB) of kernel memory for {:?}, {cpus} CPUs",
        map_bytes as f64 / (1 << 20) as f64,
        b.sizing
    );
    match vm_rss_kib() {
        Some(kib) => println!("process: VmRSS {kib} KiB ({:.2} MiB)", kib as f64 / 1024.0),
        None => println!("process: VmRSS unknown (no /proc/self/status)"),
    }
    println!("ratio_hit={ratio_hit:.2} ratio_miss={ratio_miss:.2} publish_p99_us={p99:.1}");
    Ok(())
}

/// One run of `case` with `repeat` repetitions; checks the verdict and, for the balancer, that
/// every repetition counted the expected reason (the frame the kernel re-runs is the output of
/// the previous repetition, so this proves each one took the measured path).
fn measure(dp: &mut Dataplane, case: &Case, repeat: u32) -> anyhow::Result<Sample> {
    let reason_packets = |dp: &Dataplane| -> anyhow::Result<u64> {
        Ok(match case.reason {
            Some(r) => dp.stats()?[r as usize].packets,
            None => 0,
        })
    };
    let before = reason_packets(dp)?;
    let mut out = vec![0u8; case.frame.len() + 256];
    let prog = dp.named_program(case.prog)?;
    let started = Instant::now();
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(&case.frame),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::new()
        })
        .with_context(|| format!("BPF_PROG_TEST_RUN {} ({})", case.prog, case.name))?;
    let wall = started.elapsed();
    ensure!(
        res.return_value == case.action,
        "{}: {} returned {} instead of {} under repeat",
        case.name,
        case.prog,
        res.return_value,
        case.action
    );
    if let Some(r) = case.reason {
        let counted = reason_packets(dp)? - before;
        ensure!(
            counted == u64::from(repeat),
            "{}: {counted} of {repeat} repetitions counted {}",
            case.name,
            reason::NAMES[r as usize]
        );
    }
    Ok(Sample {
        kernel_ns: res.duration.as_nanos() as f64,
        wall_ns: wall.as_nanos() as f64 / f64::from(repeat),
    })
}

/// Publishes `count` full tables of `region` (alternating between a few), returning the
/// copy-and-flip time of each in microseconds (the grace sleep between republishes of one VIP
/// is not part of it).
fn publish(b: &mut Balancer, region: &TableRegion, count: usize) -> anyhow::Result<Vec<f64>> {
    let tables: Vec<Vec<u32>> = (0..PUBLISH_TABLES)
        .map(|k| {
            let backends: Vec<u32> = (0..3).map(|i| (i + k as u32) % 3).collect();
            let mut t = spread(&backends, region.size);
            // Distinct contents, not only rotations: a run of one backend at a moving spot.
            let at = k * region.size as usize / PUBLISH_TABLES;
            t[at..at + 64].fill(backends[0]);
            t
        })
        .collect();
    let mut times = Vec::with_capacity(count);
    let mut last: Option<&Vec<u32>> = None;
    for i in 0..PUBLISH_WARMUP + count {
        let table = &tables[i % tables.len()];
        let (_, took): (u32, Duration) = b.tables.publish(region, table)?;
        if i >= PUBLISH_WARMUP {
            times.push(took.as_secs_f64() * 1e6);
        }
        last = Some(table);
    }
    ensure!(
        b.tables.live_table(region).as_ref() == last,
        "the live table of VIP {} is not the last one published",
        region.vip_index
    );
    Ok(times)
}

/// A table of `size` slots spreading `backends` round-robin.
fn spread(backends: &[u32], size: u32) -> Vec<u32> {
    (0..size)
        .map(|s| backends[s as usize % backends.len()])
        .collect()
}

fn a4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0; 16];
    x[..4].copy_from_slice(&a);
    x
}

fn mac_of(index: u32) -> [u8; 6] {
    [2, 0xbe, 0, 0, 0, index as u8]
}

/// The balancer: three VIPs with M = 65537 tables (v4 TCP, v6 UDP, v4 TCP with source
/// affinity), L2 DSR backends 0..=2 (v4) and 3..=4 (v6), one peer.
fn balancer() -> (Balancer, Vec<TableRegion>) {
    let regions: Vec<TableRegion> = (0..4)
        .map(|i| TableRegion {
            vip_index: i,
            base: i * 2 * M,
            size: M,
        })
        .collect();
    let sizing = Sizing {
        vips: 4,
        backends: 8,
        slots: regions.iter().map(TableRegion::slots).sum(),
        peers: 4,
        interfaces: 1,
        flows: 1024,
        fallbacks: 0,
    };
    let settings = Settings {
        hash_seed: SEED,
        encap_src_v4: [10, 255, 0, 0],
        layout_id: 0,
        flags: 0,
        encap_src_v6: [0xfd, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    };
    let mut b = Balancer::new(sizing, settings);
    for i in 0..=4 {
        let (addr, family) = if i <= 2 {
            (a4([10, 0, 0, 1 + i as u8]), FAMILY_V4)
        } else {
            let mut addr = CLIENT6;
            addr[15] = i as u8;
            (addr, FAMILY_V6)
        };
        b.set_backend(
            i,
            Backend {
                addr,
                mac: mac_of(i),
                family,
                mode: FWD_L2,
                serial: i + 1,
                // Healthy: the flow case keeps its flow on it.
                flags: BACKEND_F_KEEP_FLOWS,
                ..Backend::default()
            },
        );
    }
    let vip = |index: u32, flags: u32| VipInfo {
        index,
        table_size: M,
        flags,
        fallback: 0,
    };
    let key = |addr: [u8; 16], port: u16, proto: u8, family: u8| VipKey {
        addr,
        port,
        proto,
        family,
    };
    b.set_vip(key(a4(VIP_WEB), 80, 6, FAMILY_V4), vip(WEB, 0));
    b.set_vip(key(VIP_DNS6, 53, 17, FAMILY_V6), vip(DNS6, 0));
    b.set_vip(
        key(a4(VIP_AFFINITY), 443, 6, FAMILY_V4),
        vip(AFFINITY, VIP_F_SRC_HASH),
    );
    b.set_vip(
        key(a4(VIP_WEB), 8080, 6, FAMILY_V4),
        vip(WEB_FLOWS, VIP_F_FLOWS),
    );
    let tables = [
        spread(&[0, 1, 2], M),
        spread(&[3, 4], M),
        spread(&[0, 1, 2], M),
        spread(&[0, 1, 2], M),
    ];
    for (r, t) in regions.iter().zip(&tables) {
        b.publish(r, t);
    }
    b.set_peer(PEER_MAC);
    // IFACES stays empty here, so the destination MAC check (one hash lookup) is not
    // measured: BPF_PROG_TEST_RUN's repeat re-runs the program on the frame it rewrote,
    // whose destination is then the backend's MAC, not this interface's.
    (b, regions)
}

/// The measured cases; the baselines run on the frames of the cases they are compared with.
fn cases() -> Vec<Case> {
    let f = Frame::default();
    let hit4 = l4_frame(&f, &Flow::tcp4(CLIENT4, 40_001, VIP_WEB, 80));
    let miss4 = l4_frame(&f, &Flow::tcp4(CLIENT4, 40_001, NOT_A_VIP, 80));
    let case = |name, prog, frame: &Vec<u8>, action, reason| Case {
        name,
        prog,
        frame: frame.clone(),
        action,
        reason,
    };
    vec![
        case("hit_v4_tcp", PROG_XDP, &hit4, XDP_TX, Some(reason::TX_L2)),
        case(
            "hit_v6_udp",
            PROG_XDP,
            &l4_frame(&f, &Flow::udp6(CLIENT6, 5353, VIP_DNS6, 53)),
            XDP_TX,
            Some(reason::TX_L2),
        ),
        case(
            "hit_affinity_v4_tcp",
            PROG_XDP,
            &l4_frame(&f, &Flow::tcp4(CLIENT4, 40_001, VIP_AFFINITY, 443)),
            XDP_TX,
            Some(reason::TX_L2),
        ),
        // An ACK of an established flow: after the first run it hits its flow-table entry.
        case(
            "hit_v4_tcp_flows",
            PROG_XDP,
            &l4_frame(
                &Frame {
                    tcp_flags: 0x10,
                    ..Frame::default()
                },
                &Flow::tcp4(CLIENT4, 40_001, VIP_WEB, 8080),
            ),
            XDP_TX,
            Some(reason::TX_L2),
        ),
        case(
            "miss_v4_tcp",
            PROG_XDP,
            &miss4,
            XDP_PASS,
            Some(reason::PASS_NOT_VIP),
        ),
        case("bare_tx", PROG_BARE_TX, &hit4, XDP_TX, None),
        case("bare_pass", PROG_BARE_PASS, &miss4, XDP_PASS, None),
    ]
}
