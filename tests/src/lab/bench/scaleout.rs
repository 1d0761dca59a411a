//! `bench scaleout`: the `--bgp` lab's routed VIP under ECMP. In one run: `wrk` through the
//! routed VIP with 3, 2 and 1 announcing balancers (the others withdrawn with `vipd node
//! standby`), with each balancer's packets for the VIP; then a balancer's link cut under load
//! (how long until the router's next hops lose it, and until requests succeed again), and a
//! balancer's vipd crash and restart. Long-lived connections opened at the start are asked
//! after every withdraw, return, link cut and crash: those to backends that stayed must all
//! keep their backend.
use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use super::{machine, plot, write_report, wrk, Options};
use crate::{
    lab::{
        bgp::{hop_names, packets_since, Routed, ROUTED_VIP},
        borrowed_ns,
        config::CONTROLLERS,
        ns_cmd, pause,
        story::Story,
        topology::Names,
        Bins,
    },
    servers,
};

const CONNECTIONS: u32 = 48;
const STREAMS: usize = 30;

/// Rounds of 3, 2, 1 balancers at least (the median of each is reported): one wrk run
/// on this shared machine varies by tens of percent.
const MIN_ROUNDS: usize = 3;

/// One wrk run with `announcing` balancers.
struct ScaleRun {
    round: usize,
    announcing: Vec<usize>,
    requests_per_s: f64,
    p99_ms: f64,
    errors: u64,
    packets: Vec<u64>,
}

/// The link-cut measurement.
struct Cut {
    victim: usize,
    /// Link down -> the router's next hops without the victim.
    hops_ms: u128,
    /// Link down -> end of the last request that failed or took over 200 ms.
    requests_ms: u128,
    failed: usize,
    slow: usize,
    total: usize,
}

struct Measured {
    runs: Vec<ScaleRun>,
    cut: Cut,
    /// Where long-lived connections broke: (event, broken).
    broken: Vec<(String, usize)>,
    lost_with_backend: usize,
    crash_hops_changed: bool,
}

pub fn scaleout(names: Names, bins: &Bins, opts: &Options) -> anyhow::Result<()> {
    let story = Story::new();
    story.chapter("scaleout: starting the lab with the routed VIP (FRR, ECMP router)");
    let mut routed = Routed::start(names, bins, &|m| story.say(m))?;
    let result = measure(&mut routed, &story, opts);
    if result.is_err() {
        routed.lab.keep_state = true;
    }
    let m = result?;
    drop(routed);
    story.say("lab removed");
    report(&m, opts)
}

fn measure(r: &mut Routed, story: &Story, opts: &Options) -> anyhow::Result<Measured> {
    let client = r.client_ns();
    let url = format!("http://{ROUTED_VIP}:5000/");
    let mut conns = r.open_streams(STREAMS)?;
    story.say(format!(
        "{STREAMS} long-lived connections open through {ROUTED_VIP}:7000"
    ));
    let mut broken = Vec::new();
    let mut note = |what: String, how: Vec<String>| {
        story.say(format!(
            "{what}: {} long-lived connections broken",
            how.len()
        ));
        for h in &how {
            story.say(format!("  broken: {h}"));
        }
        broken.push((what, how.len()));
    };
    // 3, then 2, then 1 announcing (ctl3, then ctl2 withdrawn), then all back; each round.
    let mut runs = Vec::new();
    let rounds = opts.rounds.max(MIN_ROUNDS);
    for round in 1..=rounds {
        for k in [3usize, 2, 1] {
            let announcing: Vec<usize> = (0..k).collect();
            if k < 3 {
                r.vipd_cli(k, &["node", "standby"])?;
                let took = r.wait_hops(&announcing, Duration::from_secs(10))?;
                story.say(format!(
                    "{} standby: router over {} after {took:?}",
                    CONTROLLERS[k],
                    hop_names(&announcing)
                ));
                let (kept, n, _) = r.check_streams(conns, &[], false);
                conns = kept;
                note(format!("{}'s withdraw (round {round})", CONTROLLERS[k]), n);
            }
            let before = r.routed_packets();
            let w = wrk::run(&client, &url, opts.duration_s, CONNECTIONS)?;
            let packets = packets_since(&r.routed_packets(), &before);
            story.say(format!(
                "round {round}, {k} balancer(s): {:.0} req/s, p99 {:.2} ms, errors {}, packets per balancer {packets:?}",
                w.requests_per_s, w.p99_ms, w.errors
            ));
            runs.push(ScaleRun {
                round,
                announcing,
                requests_per_s: w.requests_per_s,
                p99_ms: w.p99_ms,
                errors: w.errors,
                packets,
            });
        }
        for i in [1, 2] {
            r.vipd_cli(i, &["node", "unstandby"])?;
        }
        let took = r.wait_hops(&[0, 1, 2], Duration::from_secs(10))?;
        story.say(format!(
            "ctl2, ctl3 back in service: router over all three after {took:?}"
        ));
        let (kept, n, _) = r.check_streams(conns, &[], false);
        conns = kept;
        note(format!("the return of ctl2 and ctl3 (round {round})"), n);
    }

    // A link cut under load.
    let victim = r.non_owner()?;
    let load = Probes::start(&client);
    pause(Duration::from_secs(1))?;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let ns = r.lab.nodes[victim].ns.clone();
    let cut_at = Instant::now();
    ns_cmd(&ns, &["ip", "link", "set", "eth0", "down"])?;
    let hops = r.wait_hops(&survivors, Duration::from_secs(10))?;
    pause(Duration::from_secs(3))?;
    let records = load.stop();
    let cut = cut_summary(victim, hops, cut_at, &records);
    story.say(format!(
        "{}'s link cut under load: router next hops {} after {} ms; requests: {} failed, {} slow (> 200 ms) of {}, the last of them ended {} ms after the cut",
        CONTROLLERS[victim],
        hop_names(&survivors),
        cut.hops_ms,
        cut.failed,
        cut.slow,
        cut.total,
        cut.requests_ms
    ));
    let (kept, n, mut lost_with_backend) = r.check_streams(conns, &[victim], false);
    conns = kept;
    note(format!("{}'s link cut", CONTROLLERS[victim]), n);
    r.link_up(victim)?;
    let took = r.wait_hops(&[0, 1, 2], Duration::from_secs(30))?;
    r.lab.wait_converged(Duration::from_secs(20))?;
    story.say(format!(
        "link restored: router over all three after {took:.1?}"
    ));
    let (kept, n, _) = r.check_streams(conns, &[], false);
    conns = kept;
    note(format!("{}'s return", CONTROLLERS[victim]), n);

    // vipd crashes: the data plane and the route stay. Fresh connections replace those that
    // went with the cut controller, so that some reach the crashed one's own backend.
    conns.extend(r.open_streams(STREAMS - conns.len())?);
    let crashed = r.non_owner()?;
    let hops_before = r.next_hops();
    r.lab.nodes[crashed].vipd = None;
    pause(Duration::from_secs(1))?;
    let crash_hops_changed = r.next_hops() != hops_before;
    // The others take the silent node for dead and its own backend out meanwhile (README,
    // "Routed VIPs"): connections to that backend are reset; not counted, as for the cut.
    let (kept, n, lost) = r.check_streams(conns, &[crashed], true);
    lost_with_backend += lost;
    conns = kept;
    note(format!("vipd's crash on {}", CONTROLLERS[crashed]), n);
    r.lab.nodes[crashed].start_vipd()?;
    r.wait_hops(&[0, 1, 2], Duration::from_secs(10))?;
    let (kept, n, _) = r.check_streams(conns, &[], false);
    note(format!("vipd's restart on {}", CONTROLLERS[crashed]), n);
    story.say(format!(
        "{} of {STREAMS} long-lived connections still on their backend at the end",
        kept.len()
    ));
    Ok(Measured {
        runs,
        cut,
        broken,
        lost_with_backend,
        crash_hops_changed,
    })
}

/// One request of the probe load: started this long after the load began, took this long,
/// answered or not.
struct Record {
    at: Instant,
    took: Duration,
    ok: bool,
}

/// Four threads in the client namespace, each a new HTTP connection (a new flow, hashed
/// anew by the router) every 10 ms to the routed VIP.
struct Probes {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<Record>>>,
}

impl Probes {
    fn start(client_ns: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let to = SocketAddr::new(IpAddr::V4(ROUTED_VIP), 5000);
        let ns = borrowed_ns(client_ns);
        let threads = (0..4)
            .map(|_| {
                let stop = stop.clone();
                ns.spawn(move || {
                    let mut records = Vec::new();
                    while !stop.load(Ordering::Acquire) {
                        let at = Instant::now();
                        let ok = servers::http_get(to).is_ok_and(|(_, body)| !body.is_empty());
                        records.push(Record {
                            at,
                            took: at.elapsed(),
                            ok,
                        });
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    records
                })
            })
            .collect();
        Self { stop, threads }
    }

    fn stop(self) -> Vec<Record> {
        self.stop.store(true, Ordering::Release);
        self.threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_default())
            .collect()
    }
}

fn cut_summary(victim: usize, hops: Duration, cut_at: Instant, records: &[Record]) -> Cut {
    // Requests still running at the cut count too.
    let around: Vec<&Record> = records.iter().filter(|r| r.at + r.took >= cut_at).collect();
    let bad = |r: &Record| !r.ok || r.took > Duration::from_millis(200);
    let requests_ms = around
        .iter()
        .filter(|r| bad(r))
        .map(|r| (r.at + r.took).duration_since(cut_at).as_millis())
        .max()
        .unwrap_or(0);
    Cut {
        victim,
        hops_ms: hops.as_millis(),
        requests_ms,
        failed: around.iter().filter(|r| !r.ok).count(),
        slow: around.iter().filter(|r| r.ok && bad(r)).count(),
        total: around.len(),
    }
}

fn share(packets: &[u64]) -> String {
    let total: u64 = packets.iter().sum::<u64>().max(1);
    CONTROLLERS
        .iter()
        .zip(packets)
        .map(|(n, p)| format!("{n} {:.0} %", *p as f64 * 100.0 / total as f64))
        .collect::<Vec<_>>()
        .join(", ")
}

fn report(m: &Measured, opts: &Options) -> anyhow::Result<()> {
    let rps = |k: usize| {
        let mut all: Vec<f64> = m
            .runs
            .iter()
            .filter(|r| r.announcing.len() == k)
            .map(|r| r.requests_per_s)
            .collect();
        all.sort_by(f64::total_cmp);
        all.get(all.len() / 2).copied().unwrap_or(0.0)
    };
    // Each balancer's packets over every run with k announcing.
    let packets = |k: usize| {
        m.runs
            .iter()
            .filter(|r| r.announcing.len() == k)
            .fold(vec![0u64; 3], |mut sum, r| {
                for (s, p) in sum.iter_mut().zip(&r.packets) {
                    *s += p;
                }
                sum
            })
    };
    let (one, two, three) = (rps(1), rps(2), rps(3));
    let scale_2 = two / one.max(1.0);
    let scale_3 = three / one.max(1.0);
    let broken: usize = m.broken.iter().map(|b| b.1).sum();
    // What else ran on the machine meanwhile shows in the spread of the rounds.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_owned();
    let machine = format!("{}, load average {load} at the end", machine());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let mut md = format!(
        "# Scale-out: a routed VIP over 1, 2 and 3 balancers (ECMP)\n\n\
         `sudo cargo xtask bench scaleout`, {machine}. The `--bgp` lab: FRR on each controller \
         announces vipd's route for {ROUTED_VIP} to a router namespace running FRR (ECMP, \
         `maximum-paths 8`, BFD 100 ms x 3, `fib_multipath_hash_policy = 1`); the client behind \
         the router runs `wrk -t2 -c{CONNECTIONS} -d{}s` against the routed HTTP service \
         (keystone's processes, DSR answers through the router). The balancers not announcing \
         are withdrawn with `vipd node standby`; {} rounds of 3, 2, 1 balancers in one lab, \
         the median of each reported.\n\n\
         **What this machine can show.** Every namespace shares the same {cpus} CPUs: the \
         balancers' XDP programs, the backends, FRR, the router's forwarding and wrk itself. \
         XDP forwarding is a small part of each request's cost here, so adding balancers \
         cannot add CPU, and the requests/s ratios below are not a speed-up measurement (about \
         1.0 is the expected, honest result). What does show is the load spread: the \
         packets each balancer's data plane counted for the VIP (its per-CPU counters, from \
         `vipd status`). On separate machines, each balancer forwards only its share.\n\n\
         | round | announcing | req/s | p99 ms | wrk errors | packets per balancer | share |\n|---|---|---|---|---|---|---|\n",
        opts.duration_s,
        m.runs.iter().map(|r| r.round).max().unwrap_or(0),
    );
    for r in &m.runs {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.2} | {} | {:?} | {} |",
            r.round,
            hop_names(&r.announcing),
            r.requests_per_s,
            r.p99_ms,
            r.errors,
            r.packets,
            share(&r.packets)
        );
    }
    let c = &m.cut;
    let _ = write!(
        md,
        "\nscale_2_vs_1 = **{scale_2:.2}**, scale_3_vs_1 = **{scale_3:.2}** (median requests/s, same run). \
         Load spread, packets summed over the rounds: 3 announcing: {}; 2 announcing: {}; \
         1 announcing: {}.\n\n\
         ## A balancer's link cut under load\n\n\
         {victim}'s link went down while four client threads opened a new HTTP connection every \
         10 ms each through the routed VIP. `bgp_withdraw_failover_ms` is the time from the \
         link going down until the router's kernel route for {ROUTED_VIP} no longer had {victim} \
         as a next hop (BFD's detection, then bgpd and zebra; polled every 2 ms): \
         **{} ms**. Requests: {} failed and {} took over 200 ms (a SYN or segment sent to the \
         dead balancer, retransmitted) of {} around the cut; the last of them ended {} ms after \
         the cut.\n\n\
         ## Long-lived connections\n\n\
         {STREAMS} connections to the routed line service, opened with three balancers and \
         asked again after each event; a connection is broken when it errs or answers from \
         another backend. Those whose backend was the cut or crashed controller's own ({} in \
         all) are not counted: they went with the link, or the others took the backend of a \
         node whose vipd fell silent out of their tables until it was back (README, \
         \"Routed VIPs\"). A vipd crash left the router's next hops {}.\n\n\
         | event | broken |\n|---|---|\n",
        share(&packets(3)),
        share(&packets(2)),
        share(&packets(1)),
        c.hops_ms,
        c.failed,
        c.slow,
        c.total,
        c.requests_ms,
        m.lost_with_backend,
        if m.crash_hops_changed { "changed (unexpected)" } else { "unchanged (the pinned data plane and the route stay)" },
        victim = CONTROLLERS[c.victim],
    );
    for (what, n) in &m.broken {
        let _ = writeln!(md, "| {what} | {n} |");
    }
    let _ = writeln!(
        md,
        "\n`bgp_broken_conns` = **{broken}**.\n\n![scaleout](scaleout.svg)"
    );
    let rows: Vec<(String, f64, String)> = [3, 2, 1]
        .into_iter()
        .map(|k| {
            (
                format!("{k} announcing"),
                rps(k),
                format!("req/s (median); packets {}", share(&packets(k))),
            )
        })
        .collect();
    let plot = plot::bars(
        &format!("routed VIP, wrk -c{CONNECTIONS}: req/s and load spread ({machine})"),
        "requests/s (HTTP/1.1 keep-alive, one wrk on the same CPUs)",
        &rows,
    )?;
    write_report(&opts.report_dir, "scaleout", &md, &plot)?;
    println!(
        "scale_2_vs_1={scale_2:.2} scale_3_vs_1={scale_3:.2} bgp_withdraw_failover_ms={} bgp_broken_conns={broken}",
        c.hops_ms
    );
    Ok(())
}
