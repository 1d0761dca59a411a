//! The failover bench's printout, markdown report, plots and summary line.
use std::{fmt::Write as _, time::Duration};

use super::{
    super::{machine, plot, write_report, Options},
    detection::Detection,
    BackendKill, Loss, Outage, Stack, Trial,
};

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{}", d.as_millis()))
}

/// Time until the VIP answered again: the first success after the outage began (0 when no
/// request failed at all; the whole tail when it never answered again).
fn failover_ms(c: &Outage, tail_s: u64) -> u128 {
    match (c.seen.failed, c.seen.first_ok_after_outage) {
        (0, _) => 0,
        (_, Some(d)) => d.as_millis(),
        (_, None) => u128::from(tail_s) * 1000,
    }
}

/// Nearest-rank percentile (p99 of 20 trials is the worst one); 0 for no values.
fn percentile(values: &[u128], p: f64) -> u128 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied().unwrap_or(0)
}

/// One stack's figures over a set of trials.
struct Summary {
    failover: Vec<u128>,
    failed: usize,
    requests: usize,
    worst_last_failure: Option<Duration>,
    broken_survivors: (usize, usize),
    broken_dead: (usize, usize),
}

fn summarize<'a>(outages: impl Iterator<Item = &'a Outage>, tail_s: u64) -> Summary {
    let mut s = Summary {
        failover: Vec::new(),
        failed: 0,
        requests: 0,
        worst_last_failure: None,
        broken_survivors: (0, 0),
        broken_dead: (0, 0),
    };
    for o in outages {
        s.failover.push(failover_ms(o, tail_s));
        s.failed += o.seen.failed;
        s.requests += o.seen.requests;
        s.worst_last_failure = s.worst_last_failure.max(o.seen.last_failure);
        s.broken_survivors.0 += o.to_survivors.0;
        s.broken_survivors.1 += o.to_survivors.1;
        s.broken_dead.0 += o.to_dead.0;
        s.broken_dead.1 += o.to_dead.1;
    }
    s
}

/// Stack `k`'s figures over the trials of `loss` (None: every trial).
fn summary_of(trials: &[Trial], k: usize, loss: Option<Loss>, tail_s: u64) -> Summary {
    summarize(
        trials
            .iter()
            .filter(|t| loss.is_none_or(|l| t.loss == l))
            .map(|t| &t.stacks[k]),
        tail_s,
    )
}

/// One line per trial for the story: each stack's time to answer again and failed requests.
pub fn trial_summary(stacks: &[Stack], trial: &Trial, tail_s: u64) -> String {
    stacks
        .iter()
        .zip(&trial.stacks)
        .map(|(s, o)| {
            format!(
                "{} {} ms ({} failed)",
                short(s.label),
                failover_ms(o, tail_s),
                o.seen.failed
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn print_and_write(
    stacks: &[Stack],
    kills: &[BackendKill],
    trials: &[Trial],
    detections: &[Detection],
    victim: &str,
    opts: &Options,
) -> anyhow::Result<()> {
    let machine = machine();
    let tail = opts.tail_s;
    let mut md = format!(
        "# Failover: vip-fabric vs HAProxy + keepalived\n\n`cargo xtask bench failover`, {machine}. \
         Three stacks in one lab, probed at once: a new HTTP connection every 15 ms per stack \
         (200 ms timeout counts as failed). HAProxy has the OpenStack guide's `option redispatch`, \
         `retries 3` and timeouts; before each owner loss keepalived's master is moved to vipd's VIP \
         owner, so one loss takes every stack's owner down.\n\n\
         ## keystone SIGKILLed on {victim}\n\n| stack | out of rotation after (ms) | requests | failed | last failure (ms) |\n|---|---|---|---|---|\n"
    );
    println!("\nbackend keystone SIGKILLed on {victim}:");
    for (s, k) in stacks.iter().zip(kills) {
        let line = format!(
            "| {} | {} | {} | {} | {} |",
            s.label,
            ms(k.detected),
            k.seen.requests,
            k.seen.failed,
            ms(k.seen.last_failure)
        );
        println!("  {line}");
        let _ = writeln!(md, "{line}");
    }
    owner_losses(&mut md, stacks, trials, tail);
    detection_table(&mut md, detections);
    md.push_str(
        "\n![failover timelines](failover.svg)\n\n![failover distribution](failover-trials.svg)\n",
    );
    let timeline = timeline_plot(stacks, kills, trials, victim, &machine, tail)?;
    write_report(&opts.report_dir, "failover", &md, &timeline)?;
    let series: Vec<(String, Vec<f64>)> = (0..stacks.len())
        .map(|k| {
            let s = summary_of(trials, k, None, tail);
            (
                format!(
                    "{}: p50 {} ms, p99 {} ms, {} failed",
                    short(stacks[k].label),
                    percentile(&s.failover, 50.0),
                    percentile(&s.failover, 99.0),
                    s.failed
                ),
                s.failover.iter().map(|&v| v as f64).collect(),
            )
        })
        .collect();
    let dist = plot::distribution(
        &format!(
            "owner lost {} times (link cut, SIGKILL): time to answer again, {machine}",
            trials.len()
        ),
        "ms until the first success (log)",
        &series,
    )?;
    std::fs::write(opts.report_dir.join("failover-trials.svg"), dist)?;
    let fabric = summary_of(trials, 0, None, tail);
    let cuts = summary_of(trials, 0, Some(Loss::LinkCut), tail);
    let (guide, tuned) = (
        summary_of(trials, 1, None, tail),
        summary_of(trials, 2, None, tail),
    );
    // Medians and totals over every trial of both kinds; the tail is the worst link cut's.
    println!(
        "owner_failover_ms={} owner_failover_p99_ms={} tuned_keepalived_failover_ms={} \
         keepalived_failover_ms={} link_cut_tail_ms={} failed_requests={} tuned_failed_requests={} \
         kill_failed={} conns_reset={}",
        percentile(&fabric.failover, 50.0),
        percentile(&fabric.failover, 99.0),
        percentile(&tuned.failover, 50.0),
        percentile(&guide.failover, 50.0),
        cuts.worst_last_failure.map_or(0, |d| d.as_millis()),
        fabric.failed,
        tuned.failed,
        kills[0].seen.failed,
        fabric.broken_survivors.1,
    );
    Ok(())
}

/// Per stack and kind of loss: the distribution, totals and long-lived connections; then
/// every trial.
fn owner_losses(md: &mut String, stacks: &[Stack], trials: &[Trial], tail: u64) {
    let _ = write!(
        md,
        "\n## The VIP owner lost {} times\n\n\
         Alternately a **link cut** (eth0 down, vipd SIGKILLed; HAProxy and keepalived keep \
         running behind the dead link) and a **SIGKILL with the link up** (vipd on the owner; \
         HAProxy and keepalived on the master for the others, keepalived leaving its VIP on \
         eth0). In both, vipd's peers fence the lost node with the lab's hook (it freezes the \
         node's processes and takes its link down, as a power fence would): the others see \
         that too. Answering again = the first success after the longest run of failed \
         requests (0: nothing failed; {tail} s: never within the tail). Long-lived \
         connections: {} per stack and trial, asked again after the tail; those to the lost \
         node's own backend die in every stack.\n\n\
         | stack | loss | trials | answering again p50 / p99 / max (ms) | failed requests | worst last failure (ms) | long-lived to survivors: broken | to the lost backend: broken |\n|---|---|---|---|---|---|---|---|\n",
        trials.len(),
        super::LONG_LIVED,
    );
    println!("\nthe VIP owner lost {} times:", trials.len());
    for (k, stack) in stacks.iter().enumerate() {
        for loss in [None, Some(Loss::LinkCut), Some(Loss::Kill)] {
            let s = summary_of(trials, k, loss, tail);
            if s.failover.is_empty() {
                continue;
            }
            let line = format!(
                "| {} | {} | {} | {} / {} / {} | {} of {} | {} | {} of {} | {} of {} |",
                stack.label,
                loss.map_or("all", Loss::label),
                s.failover.len(),
                percentile(&s.failover, 50.0),
                percentile(&s.failover, 99.0),
                s.failover.iter().max().copied().unwrap_or(0),
                s.failed,
                s.requests,
                ms(s.worst_last_failure),
                s.broken_survivors.1,
                s.broken_survivors.0,
                s.broken_dead.1,
                s.broken_dead.0
            );
            println!("  {line}");
            let _ = writeln!(md, "{line}");
        }
    }
    let wrong: usize = trials.iter().map(|t| t.wrongly_fenced.len()).sum();
    let line = format!(
        "vipd fenced a node other than the lost owner {wrong} times in {} trials",
        trials.len()
    );
    println!("  {line}");
    let _ = write!(
        md,
        "\n{line} (a false detection; each one is listed below).\n\n\
         ### Every trial: answering again after (ms) / failed requests\n\n| trial | loss | owner |"
    );
    for s in stacks {
        let _ = write!(md, " {} |", short(s.label));
    }
    let _ = write!(
        md,
        " also fenced |\n|---|---|---|{}---|\n",
        "---|".repeat(stacks.len())
    );
    for (t, trial) in trials.iter().enumerate() {
        let _ = write!(
            md,
            "| {} | {} | {} |",
            t + 1,
            trial.loss.label(),
            trial.owner
        );
        for o in &trial.stacks {
            let _ = write!(md, " {} / {} |", failover_ms(o, tail), o.seen.failed);
        }
        let _ = writeln!(md, " {} |", trial.wrongly_fenced.join(", "));
    }
}

/// vipd alone at 3, 5 and 7 nodes: when the survivors took the lost owner for dead.
fn detection_table(md: &mut String, detections: &[Detection]) {
    let _ = write!(
        md,
        "\n## Detection at 3, 5 and 7 controllers (vipd alone)\n\n\
         The test harness's cluster (every node a voter, the lab's timings: heartbeat every \
         5 ms, silent after 50 ms; SWIM probe 100 ms, suspect 250 ms; a fencing hook that \
         succeeds at once). The owner's link cut and its vipd SIGKILLed; the times come from \
         the survivors' logs against the wall clock at the cut. p50 / p99 (ms) over the \
         trials; `-`: not seen within 15 s.\n\n\
         | nodes | trials | first survivor: silent | every survivor: silent | every survivor: SWIM dead | VIP claimed |\n|---|---|---|---|---|---|\n"
    );
    println!("\ndetection (vipd alone), p50 / p99 ms:");
    for d in detections {
        let col = |f: fn(&super::detection::Detected) -> Option<Duration>| {
            let seen: Vec<u128> = d
                .trials
                .iter()
                .filter_map(f)
                .map(|v| v.as_millis())
                .collect();
            let missed = d.trials.len() - seen.len();
            let mut text = format!("{} / {}", percentile(&seen, 50.0), percentile(&seen, 99.0));
            if missed > 0 {
                let _ = write!(text, " ({missed} -)");
            }
            text
        };
        let line = format!(
            "| {} | {} | {} | {} | {} | {} |",
            d.nodes,
            d.trials.len(),
            col(|t| t.first),
            col(|t| t.all),
            col(|t| t.swim_all),
            col(|t| t.claimed)
        );
        println!("  {line}");
        let _ = writeln!(md, "{line}");
    }
}

/// The timelines: the backend kill, and the first trial of each kind of owner loss.
fn timeline_plot(
    stacks: &[Stack],
    kills: &[BackendKill],
    trials: &[Trial],
    victim: &str,
    machine: &str,
    tail: u64,
) -> anyhow::Result<String> {
    // The kill's panel ends a second after the slowest stack took the backend out or last
    // failed a request, whichever came later.
    let kill_end = kills
        .iter()
        .flat_map(|k| [k.detected, k.seen.last_failure])
        .flatten()
        .max()
        .map_or(3.0, |d| d.as_secs_f64() + 1.0);
    let mut panels = vec![plot::Panel {
        title: format!("keystone SIGKILLed on {victim}"),
        x_desc: "seconds since the SIGKILL".into(),
        from: -1.0,
        to: kill_end.max(2.0),
        series: series(stacks, kills.iter().map(|k| k.seen.points.as_slice()))
            .into_iter()
            .zip(kills)
            .map(|(mut s, k)| {
                s.label += &format!(" (out after {} ms)", ms(k.detected));
                s
            })
            .collect(),
    }];
    for loss in [Loss::LinkCut, Loss::Kill] {
        if let Some((t, trial)) = trials.iter().enumerate().find(|(_, t)| t.loss == loss) {
            panels.push(plot::Panel {
                title: format!(
                    "trial {}: {} of {} (the owner of every VIP)",
                    t + 1,
                    loss.label(),
                    trial.owner
                ),
                x_desc: "seconds since the loss".into(),
                from: -1.0,
                to: tail as f64,
                series: series(
                    stacks,
                    trial.stacks.iter().map(|o| o.seen.points.as_slice()),
                ),
            });
        }
    }
    plot::failures(
        &format!("failed new connections (one every 15 ms per stack), {machine}"),
        &panels,
    )
}

/// Each stack's requests, under its short label.
fn series<'a>(
    stacks: &[Stack],
    points: impl Iterator<Item = &'a [(f64, bool)]>,
) -> Vec<plot::Series<'a>> {
    stacks
        .iter()
        .zip(points)
        .map(|(s, points)| plot::Series {
            label: short(s.label),
            points,
        })
        .collect()
}

/// "HAProxy inter 2000 ... + keepalived VRRPv2 advert 1 s" -> a legend label that fits.
fn short(label: &str) -> String {
    label
        .replace(" + keepalived VRRP", " / VRRP")
        .replace(" rise 2", "")
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u128> = (1..=20).collect();
        assert_eq!(percentile(&v, 50.0), 10);
        assert_eq!(percentile(&v, 99.0), 20);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
