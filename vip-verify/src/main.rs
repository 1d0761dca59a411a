//! `cargo xtask verify`: a deeper or larger exhaustive run than the tests do.
//! `vip-verify [--nodes N] [--depth D] [--faults K] [--fencing] [--no-suspicion]
//! [--moves] [--lease L] [--margin M] [--detect D] [--drift C] [--calm K] [--threads T] [--bug]`

use vip_verify::{check, Setup};

fn main() {
    let mut setup = Setup::three();
    let (mut depth, mut threads) = (18, 2);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = || -> usize {
            let v = args.next().and_then(|v| v.parse().ok());
            v.unwrap_or_else(|| panic!("{a} needs a number"))
        };
        match a.as_str() {
            "--nodes" => setup.nodes = num(),
            "--depth" => depth = num(),
            "--faults" => setup.faults = num() as u8,
            "--calm" => setup.calm = num() as u8,
            "--lease" => setup.lease = num() as u32,
            "--margin" => setup.margin = num() as u32,
            "--detect" => setup.detect = num() as u32,
            "--drift" => setup.drift = num() as u8,
            "--threads" => threads = num(),
            "--fencing" => setup.fencing = true,
            "--no-suspicion" => setup.suspicion = false,
            "--moves" => setup.moves = true,
            "--bug" => setup.bug = true,
            other => panic!("unknown argument {other}"),
        }
    }
    println!("checking {setup:?} to depth {depth} on {threads} threads");
    let report = check(setup, depth, threads);
    println!("{report}");
    if !report.violations.is_empty() || !report.unreached.is_empty() {
        std::process::exit(1);
    }
}
