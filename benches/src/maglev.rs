//! `vip-bench maglev`: Maglev build and diff times for M = 65537 and N = 3, 10, 100, 1000, the
//! disruption of removing one backend, and verdict-to-live: a down verdict publishes the table
//! vipd precomputed for "this backend gone" (copy through mmap + flip), measured here on the
//! same publisher vipd uses; the rebuild-on-verdict path is timed beside it for contrast.
use std::time::Instant;

use vip_benches::{median, percentile, require_root};
use vip_daemon::{
    core::maglev::{build, diff, MaglevBackend},
    shell::dataplane::{Dataplane, Sizing, TableRegion},
};

const M: u32 = 65_537;
const SEED: u32 = 0x5eed_0002;

#[derive(clap::Args)]
pub struct Args {
    /// Builds timed per N.
    #[arg(long, default_value_t = 15)]
    pub builds: usize,
    /// Verdicts published for the verdict-to-live percentile.
    #[arg(long, default_value_t = 400)]
    pub verdicts: usize,
}

fn backends(n: u32) -> Vec<MaglevBackend> {
    (0..n).map(|id| MaglevBackend { id, weight: 1 }).collect()
}

fn ms(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    println!(
        "{:>6} {:>12} {:>12} {:>14} {:>12}",
        "N", "build ms", "diff ms", "moved slots", "moved/M"
    );
    let mut build_n1000 = 0.0;
    for n in [3u32, 10, 100, 1000] {
        let all = backends(n);
        let builds: Vec<f64> = (0..args.builds)
            .map(|_| ms(|| drop(build(SEED, &all, M).expect("build"))))
            .collect();
        let full = build(SEED, &all, M)?;
        let fewer = build(SEED, &all[1..], M)?;
        let diffs: Vec<f64> = (0..args.builds)
            .map(|_| ms(|| drop(diff(&full, &fewer))))
            .collect();
        let moved = diff(&full, &fewer).len();
        let b = median(&builds);
        if n == 1000 {
            build_n1000 = b;
        }
        println!(
            "{n:>6} {b:>12.3} {:>12.3} {moved:>14} {:>11.2}% (1/N = {:.2}%)",
            median(&diffs),
            100.0 * moved as f64 / M as f64,
            100.0 / n as f64
        );
    }

    require_root("maglev (verdict to live)")?;
    let region = TableRegion {
        vip_index: 0,
        base: 0,
        size: M,
    };
    let sizing = Sizing {
        vips: 1,
        backends: 16,
        slots: region.slots(),
        peers: 1,
        interfaces: 1,
        flows: 0,
        fallbacks: 0,
    };
    let mut dp = Dataplane::load_private(&sizing)?;
    let mut tables = dp.table_publisher()?;
    let all = backends(10);
    // What vipd keeps ready: the table without each backend.
    let without: Vec<Vec<u32>> = (0..all.len())
        .map(|i| {
            let rest: Vec<MaglevBackend> =
                all.iter().copied().filter(|b| b.id != i as u32).collect();
            build(SEED, &rest, M)
        })
        .collect::<Result<_, _>>()?;
    let full = build(SEED, &all, M)?;
    let (mut precomputed, mut rebuilt) = (Vec::new(), Vec::new());
    for k in 0..args.verdicts {
        tables.publish(&region, &full)?;
        // Let the just-retired generation's grace period pass outside the timed part.
        std::thread::sleep(std::time::Duration::from_millis(1));
        let lost = k % all.len();
        let verdict = Instant::now();
        tables.publish(&region, &without[lost])?;
        precomputed.push(verdict.elapsed().as_secs_f64() * 1e6);
        std::thread::sleep(std::time::Duration::from_millis(1));
        if k % 8 == 0 {
            let verdict = Instant::now();
            let rest: Vec<MaglevBackend> = all
                .iter()
                .copied()
                .filter(|b| b.id != lost as u32)
                .collect();
            let table = build(SEED, &rest, M)?;
            tables.publish(&region, &table)?;
            rebuilt.push(verdict.elapsed().as_secs_f64() * 1e6);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    let p99 = percentile(&precomputed, 99.0);
    println!(
        "verdict to live, M={M}, N=10: precomputed p50 {:.1} us p99 {p99:.1} us; rebuild on verdict p50 {:.1} us p99 {:.1} us",
        percentile(&precomputed, 50.0),
        percentile(&rebuilt, 50.0),
        percentile(&rebuilt, 99.0)
    );
    println!("build_ms_n1000={build_n1000:.2} verdict_to_live_p99_us={p99:.1}");
    Ok(())
}
