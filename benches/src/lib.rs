//! Shared helpers of the `vip-bench` binary (`cargo xtask bench ...`): privilege check, order
//! statistics and the process's resident memory. Each benchmark lives in its own module of the
//! binary (`src/xdp.rs`, ...).
use anyhow::bail;

/// The effective uid, read from `/proc/self/status` (`Uid: real effective saved fs`).
pub fn effective_uid() -> Option<u32> {
    status_field("Uid:")?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Fails loudly unless the process runs as root (BPF_PROG_TEST_RUN needs CAP_BPF and
/// CAP_NET_ADMIN; the benchmarks load the XDP object).
pub fn require_root(bench: &str) -> anyhow::Result<()> {
    if effective_uid() == Some(0) {
        return Ok(());
    }
    eprintln!();
    eprintln!("!!! vip-bench {bench}: NOT RUN: needs root (CAP_BPF, CAP_NET_ADMIN) !!!");
    eprintln!("!!! run it as root: `sudo -E cargo xtask bench {bench}`                !!!");
    eprintln!();
    bail!("vip-bench {bench} needs root")
}

/// The process's resident set size in KiB (`VmRSS` of `/proc/self/status`).
pub fn vm_rss_kib() -> Option<u64> {
    status_field("VmRSS:")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn status_field(name: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_owned())
}

/// CPUs this process may run on (at least 1).
pub fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Median of `xs` (mean of the two middle values for an even count); NaN when empty.
pub fn median(xs: &[f64]) -> f64 {
    let s = sorted(xs);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile `p` (0 < p <= 100) of `xs`; NaN when empty.
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    let s = sorted(xs);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Smallest and largest of `xs` (NaN, NaN when empty).
pub fn min_max(xs: &[f64]) -> (f64, f64) {
    let s = sorted(xs);
    match (s.first(), s.last()) {
        (Some(&lo), Some(&hi)) => (lo, hi),
        _ => (f64::NAN, f64::NAN),
    }
}

fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_statistics() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let xs: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50.0), 100.0);
        assert_eq!(percentile(&xs, 99.0), 198.0);
        assert_eq!(percentile(&xs, 100.0), 200.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(min_max(&[2.0, -1.0, 5.0]), (-1.0, 5.0));
    }

    #[test]
    fn proc_status() {
        assert!(effective_uid().is_some());
        assert!(vm_rss_kib().is_some_and(|kib| kib > 0));
        assert!(cpus() >= 1);
    }
}
