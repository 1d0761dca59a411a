//! `vip-lab bench throughput|failover`: vip-fabric against HAProxy + keepalived in the same
//! lab, in one run: same namespaces, same backend services, same client. Each bench prints its
//! numbers, ends with one summary line, and writes a markdown report and an SVG plot (`plot`).
//! `vip-lab bench changes`: day-2 changes (reloads, restarts, drain, crash, weight, flap) on
//! one vipd under load, without the competitors; a markdown report and one summary line.
//! `vip-lab bench memory`: one vipd with 50 VIPs x 10 backends: resident memory, maps, ramp-up.
//! `vip-lab bench scaleout`: the `--bgp` lab's routed VIP with 1, 2, 3 balancers under ECMP.
mod changes;
mod competitor;
mod failover;
mod memory;
mod plot;
mod probe;
mod scaleout;
mod throughput;
mod wrk;

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;

pub use changes::changes;
pub use failover::failover;
pub use memory::memory;
pub use scaleout::scaleout;
pub use throughput::throughput;

use self::competitor::Competitors;
use super::{
    config::API_VIP,
    running::{holders, Lab},
    story::Story,
    topology::Names,
    Bins,
};

/// Options shared by both benches.
#[derive(Clone, Debug)]
pub struct Options {
    /// Seconds of each `wrk` run (throughput).
    pub duration_s: u64,
    /// `wrk` runs per target; the median is reported (throughput).
    pub rounds: usize,
    /// How long the probes keep running after each owner loss, to see the failure tail
    /// (failover; the guide's HAProxy takes ~10 s to drop the lost node's backend).
    pub tail_s: u64,
    /// Owner losses (failover), alternately a link cut and a SIGKILL with the link up.
    pub trials: usize,
    /// Owner losses per cluster size in the detection figures (failover).
    pub detect_trials: usize,
    pub report_dir: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            duration_s: 10,
            rounds: 1,
            tail_s: 12,
            trials: 20,
            detect_trials: 5,
            report_dir: PathBuf::from("target/bench-report"),
        }
    }
}

/// The lab without its background client load, plus HAProxy + keepalived with their master
/// on vipd's owner of the API VIP.
struct Arena {
    lab: Lab,
    competitors: Competitors,
    owner: usize,
}

fn start(names: Names, bins: &Bins, story: &Story) -> anyhow::Result<Arena> {
    let mut lab = Lab::start(names, bins, &|m| story.say(m))?;
    lab.traffic = None;
    let all = lab.statuses(Duration::from_millis(300));
    let owner = holders(&all, API_VIP)
        .first()
        .map(|n| lab.index_of(n))
        .context("no owner of the API VIP")?;
    story.say(format!(
        "starting HAProxy + keepalived on every controller (both flavours; master: {}, vipd's owner of {API_VIP})",
        lab.nodes[owner].name
    ));
    let ready = Competitors::start(&lab, owner).and_then(|c| {
        let took = c.wait_ready(&lab, owner, Duration::from_secs(30))?;
        Ok((c, took))
    });
    let (competitors, took) = match ready {
        Ok(ready) => ready,
        Err(e) => {
            // The configs, logs and fencing log stay for a look.
            lab.keep_state = true;
            return Err(e);
        }
    };
    story.say(format!("HAProxy + keepalived ready after {took:.1?}"));
    Ok(Arena {
        lab,
        competitors,
        owner,
    })
}

/// `nproc` and the kernel, for the report.
fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = super::cmd(&["uname", "-r"]).unwrap_or_default();
    format!("{nproc} CPUs, Linux {}", kernel.trim())
}

fn write_report(
    dir: &std::path::Path,
    name: &str,
    markdown: &str,
    svg: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let md = dir.join(format!("{name}.md"));
    std::fs::write(&md, markdown).with_context(|| format!("write {}", md.display()))?;
    std::fs::write(dir.join(format!("{name}.svg")), svg)?;
    println!("report: {} and {name}.svg", md.display());
    Ok(())
}
