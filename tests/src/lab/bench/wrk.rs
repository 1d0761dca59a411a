//! `wrk` from the client namespace, and its summary parsed: requests/s and latency
//! percentiles.
use anyhow::Context as _;

use crate::lab::ns_cmd;

#[derive(Clone, Debug, Default)]
pub struct WrkResult {
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// `wrk -t2 -c<conns> -d<secs>s --latency url` inside `ns`.
pub fn run(ns: &str, url: &str, secs: u64, conns: u32) -> anyhow::Result<WrkResult> {
    let (d, c) = (format!("{secs}s"), format!("-c{conns}"));
    let out = ns_cmd(ns, &["wrk", "-t2", &c, "-d", &d, "--latency", url])?;
    parse(&out).with_context(|| format!("wrk output:\n{out}"))
}

pub fn parse(out: &str) -> anyhow::Result<WrkResult> {
    let field = |prefix: &str| {
        out.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
    };
    let requests_per_s = field("Requests/sec:").context("Requests/sec")?.parse()?;
    let p50_ms = latency_ms(&field("50%").context("50% latency")?)?;
    let p99_ms = latency_ms(&field("99%").context("99% latency")?)?;
    // "Socket errors: connect 0, read 0, write 0, timeout 0" and "Non-2xx ..." lines.
    let errors = out
        .lines()
        .filter(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        .flat_map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
        })
        .sum();
    Ok(WrkResult {
        requests_per_s,
        p50_ms,
        p99_ms,
        errors,
    })
}

/// "652.00us", "1.23ms", "2.01s" in milliseconds.
fn latency_ms(v: &str) -> anyhow::Result<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic()).context("unit")?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse()?;
    Ok(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => anyhow::bail!("unit {unit:?}"),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_wrk_summary() {
        let out = "Running 1s test @ http://x/\n  Latency Distribution\n     50%  652.00us\n     75%    1.00ms\n     90%    2.00ms\n     99%    4.22ms\n  1000 requests in 1.00s, 1.00MB read\nRequests/sec:   7956.50\nTransfer/sec:      1.00MB\n";
        let r = super::parse(out).expect("parse");
        assert!((r.requests_per_s - 7956.5).abs() < 1e-9);
        assert!((r.p50_ms - 0.652).abs() < 1e-9);
        assert!((r.p99_ms - 4.22).abs() < 1e-9);
        assert_eq!(r.errors, 0);
    }
}
