//! The failover bench's printout, markdown report, timeline plot and summary line.
use std::{fmt::Write as _, time::Duration};

use super::{
    super::{machine, plot, write_report, Options},
    BackendKill, LinkCut, Stack,
};

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{}", d.as_millis()))
}

/// Time until the VIP answered again: the first success after the outage began (0 when no
/// request failed at all).
fn failover_ms(c: &LinkCut) -> u128 {
    match (c.seen.failed, c.seen.first_ok_after_outage) {
        (0, _) => 0,
        (_, Some(d)) => d.as_millis(),
        (_, None) => u128::MAX,
    }
}

pub fn print_and_write(
    stacks: &[Stack],
    kills: &[BackendKill],
    cuts: &[LinkCut],
    victim: &str,
    owner: &str,
    opts: &Options,
) -> anyhow::Result<()> {
    let machine = machine();
    let mut md = format!(
        "# Failover: vip-fabric vs HAProxy + keepalived\n\n`cargo xtask bench failover`, {machine}. \
         Three stacks in one lab, probed at once: a new HTTP connection every 15 ms per stack \
         (200 ms timeout counts as failed). HAProxy has the OpenStack guide's `option redispatch`, \
         `retries 3` and timeouts; its master and vipd's VIP owner are the same controller.\n\n\
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
    let _ = write!(
        md,
        "\n## {owner}'s link cut (owner of every VIP; eth0 down, vipd SIGKILLed)\n\n\
         Answering again = first success after the longest run of failed requests. Long-lived connections: open \
         through the VIP before the cut, asked again after the tail; those to the dead node's \
         own backend die in every stack.\n\n\
         | stack | answering again after (ms) | requests | failed | last failure (ms) | long-lived to survivors: broken | to the dead backend: broken |\n|---|---|---|---|---|---|---|\n"
    );
    println!("\n{owner}'s link cut:");
    for (s, c) in stacks.iter().zip(cuts) {
        let line = format!(
            "| {} | {} | {} | {} | {} | {} of {} | {} of {} |",
            s.label,
            failover_ms(c),
            c.seen.requests,
            c.seen.failed,
            ms(c.seen.last_failure),
            c.to_survivors.1,
            c.to_survivors.0,
            c.to_dead.1,
            c.to_dead.0
        );
        println!("  {line}");
        let _ = writeln!(md, "{line}");
    }
    md.push_str("\n![failover](failover.svg)\n");
    let tail = opts.tail_s as f64;
    // The kill's panel ends a second after the slowest stack took the backend out or last
    // failed a request, whichever came later.
    let kill_end = kills
        .iter()
        .flat_map(|k| [k.detected, k.seen.last_failure])
        .flatten()
        .max()
        .map_or(3.0, |d| d.as_secs_f64() + 1.0);
    let plot = plot::failures(
        &format!("failed new connections (one every 15 ms per stack), {machine}"),
        &[
            plot::Panel {
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
            },
            plot::Panel {
                title: format!("{owner}'s link cut (the owner of every VIP)"),
                x_desc: "seconds since the cut".into(),
                from: -1.0,
                to: tail,
                series: series(stacks, cuts.iter().map(|c| c.seen.points.as_slice())),
            },
        ],
    )?;
    write_report(&opts.report_dir, "failover", &md, &plot)?;
    // Resets counted where a balancer can avoid them: connections to surviving backends.
    // One trial per stack: no percentiles yet (issue 15 asks for 20 trials).
    println!(
        "owner_failover_ms={} keepalived_failover_ms={} tuned_keepalived_failover_ms={} \
         link_cut_tail_ms={} failed_requests={} tuned_failed_requests={} kill_failed={} \
         conns_reset={} haproxy_conns_reset={}",
        failover_ms(&cuts[0]),
        failover_ms(&cuts[1]),
        failover_ms(&cuts[2]),
        cuts[0].seen.last_failure.map_or(0, |d| d.as_millis()),
        cuts[0].seen.failed,
        cuts[2].seen.failed,
        kills[0].seen.failed,
        cuts[0].to_survivors.1,
        cuts[1].to_survivors.1
    );
    Ok(())
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
