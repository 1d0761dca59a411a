//! `vip-bench swim`: failure detection time and gossip traffic of vipd's SWIM membership (foca,
//! tuned by `core::swim::foca_config`) for 3 and 1,000 nodes, measured in a deterministic
//! discrete-event simulation: simulated time, one seeded RNG, no sockets, no sleeping.
//!
//! Each cluster starts converged (every node preloaded with all others through
//! `Foca::apply_many`, joining at a random instant of the first probe period so that probes
//! are not in lockstep), runs a warm-up, then a steady-state window in which every datagram is
//! counted, then kills nodes one at a time: a killed node stops handling and sending. A trial
//! measures from the kill to the first `MemberDown` for the victim anywhere, and to the moment
//! every live node has been told.
use std::{
    cmp::Ordering,
    collections::{BinaryHeap, HashMap, HashSet},
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use foca::{
    AccumulatingRuntime, Codec as _, Foca, Member, Message, NoCustomBroadcast, OwnedNotification,
    PostcardCodec, Timer,
};
use rand_foca::{rngs::SmallRng, RngExt as _, SeedableRng as _};
use vip_benches::{min_max, percentile};
use vip_daemon::{
    core::{
        seal,
        swim::{foca_config, SwimTuning},
    },
    shell::gossip::NodeId,
};

/// vipd's defaults (`[cluster] probe_period`, `suspect_timeout`; see `config/membership.rs`).
const PROBE_PERIOD: Duration = Duration::from_millis(150);
const SUSPECT_TIMEOUT: Duration = Duration::from_millis(300);
/// A trial that has not reached every live node by then is reported as incomplete.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Periods simulated before counting traffic: joins are spread over the first period and the
/// first periodic announces (every 2 s) should have happened.
const WARM_UP_PERIODS: u32 = 20;

#[derive(clap::Args)]
pub struct Args {
    /// Size of the large cluster.
    #[arg(long, default_value_t = 1000)]
    pub nodes: u32,
    /// Failures injected into 3-node clusters.
    #[arg(long, default_value_t = 20)]
    pub trials_small: usize,
    /// Failures injected into the large cluster.
    #[arg(long, default_value_t = 10)]
    pub trials_large: usize,
    /// Probability that a datagram is lost (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Steady-state window (no failures) in probe periods, for the message counts.
    #[arg(long, default_value_t = 40)]
    pub steady_periods: u32,
    #[arg(long, default_value_t = 0x5eed_5717)]
    pub seed: u64,
}

/// The simulated LAN: uniform one-way latency and independent loss per datagram.
#[derive(Clone, Copy, Debug)]
pub struct Network {
    pub latency_min: Duration,
    pub latency_max: Duration,
    pub loss: f64,
}

impl Network {
    pub fn lan(loss: f64) -> Self {
        Self {
            latency_min: Duration::from_micros(200),
            latency_max: Duration::from_millis(1),
            loss,
        }
    }
}

/// Datagram kinds, for the traffic breakdown.
const KINDS: [&str; 5] = ["ping/ack", "indirect", "gossip", "announce/feed", "other"];

fn kind_of(message: &Message<NodeId>) -> usize {
    match message {
        Message::Ping(_) | Message::Ack(_) => 0,
        Message::PingReq { .. }
        | Message::IndirectPing { .. }
        | Message::IndirectAck { .. }
        | Message::ForwardedAck { .. } => 1,
        Message::Gossip => 2,
        Message::Announce | Message::Feed => 3,
        Message::Broadcast | Message::TurnUndead => 4,
    }
}

/// Datagrams and bytes sent, per kind. Bytes are what vipd puts on the wire: the foca payload
/// plus the sender-name prefix and the seal (`core::seal::OVERHEAD`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Traffic {
    pub datagrams: [u64; KINDS.len()],
    pub bytes: [u64; KINDS.len()],
}

impl Traffic {
    fn add(&mut self, other: &Traffic) {
        for k in 0..KINDS.len() {
            self.datagrams[k] += other.datagrams[k];
            self.bytes[k] += other.bytes[k];
        }
    }

    pub fn total_datagrams(&self) -> u64 {
        self.datagrams.iter().sum()
    }

    pub fn total_bytes(&self) -> u64 {
        self.bytes.iter().sum()
    }
}

enum Event {
    /// The node learns the whole cluster and starts probing.
    Join(usize),
    Deliver {
        to: usize,
        data: Vec<u8>,
    },
    Timer {
        node: usize,
        timer: Timer<NodeId>,
    },
}

struct Scheduled {
    at: Duration,
    /// Insertion order breaks ties, so the run is fully deterministic.
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest event must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

type SimFoca = Foca<NodeId, PostcardCodec, SmallRng, NoCustomBroadcast>;

struct Node {
    foca: SimFoca,
    alive: bool,
}

/// A `MemberDown` notification: `observer` was told that `subject` is down.
struct DownNotice {
    at: Duration,
    observer: usize,
    subject: usize,
}

/// N foca instances on a simulated network.
pub struct Sim {
    now: Duration,
    queue: BinaryHeap<Scheduled>,
    next_seq: u64,
    nodes: Vec<Node>,
    by_addr: HashMap<SocketAddr, usize>,
    net: Network,
    rng: SmallRng,
    /// Scratch runtime, drained after every foca call.
    runtime: AccumulatingRuntime<NodeId>,
    pub traffic: Traffic,
    downs: Vec<DownNotice>,
    /// `MemberDown` about a node that is alive.
    pub false_downs: u64,
    /// Live nodes that learnt the cluster declared them down (foca then rejoins under a
    /// renewed identity).
    pub declared_self_down: u64,
}

fn node_id(i: usize) -> NodeId {
    let [_, _, hi, lo] = (i as u32).to_be_bytes();
    NodeId {
        name: format!("node-{i:04}"),
        addr: SocketAddr::from((Ipv4Addr::new(10, 0, hi, lo), 7946)),
        bump: 1,
    }
}

impl Sim {
    /// `n` nodes, all joining within the first probe period.
    pub fn new(n: usize, tuning: &SwimTuning, net: Network, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let config = foca_config(tuning, n as u32);
        let nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                foca: Foca::new(
                    node_id(i),
                    config.clone(),
                    SmallRng::seed_from_u64(rng.random()),
                    PostcardCodec,
                ),
                alive: true,
            })
            .collect();
        let by_addr = (0..n).map(|i| (node_id(i).addr, i)).collect();
        let mut sim = Self {
            now: Duration::ZERO,
            queue: BinaryHeap::new(),
            next_seq: 0,
            nodes,
            by_addr,
            net,
            rng,
            runtime: AccumulatingRuntime::new(),
            traffic: Traffic::default(),
            downs: Vec::new(),
            false_downs: 0,
            declared_self_down: 0,
        };
        for i in 0..n {
            let at = sim.random_duration(Duration::ZERO, tuning.probe_period);
            sim.schedule(at, Event::Join(i));
        }
        sim
    }

    pub fn now(&self) -> Duration {
        self.now
    }

    pub fn live_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive)
            .collect()
    }

    /// Crash: from now on the node neither handles nor sends anything.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].alive = false;
    }

    fn random_duration(&mut self, min: Duration, max: Duration) -> Duration {
        let (min, max) = (min.as_nanos() as u64, max.as_nanos() as u64);
        Duration::from_nanos(self.rng.random_range(min..=max))
    }

    fn schedule(&mut self, at: Duration, event: Event) {
        self.queue.push(Scheduled {
            at,
            seq: self.next_seq,
            event,
        });
        self.next_seq += 1;
    }

    /// Handles every event due at or before `deadline`; the clock ends at `deadline`.
    pub fn run_until(&mut self, deadline: Duration) {
        while self.step_until(deadline) {}
        self.now = deadline;
    }

    /// Handles the next event if it is due at or before `deadline`; false when there is none.
    fn step_until(&mut self, deadline: Duration) -> bool {
        if self.queue.peek().is_none_or(|next| next.at > deadline) {
            return false;
        }
        let Scheduled { at, event, .. } = self.queue.pop().expect("peeked");
        self.now = at;
        let node = match &event {
            Event::Join(node) | Event::Deliver { to: node, .. } | Event::Timer { node, .. } => {
                *node
            }
        };
        if !self.nodes[node].alive {
            return true;
        }
        let count = self.nodes.len();
        let (foca, runtime) = (&mut self.nodes[node].foca, &mut self.runtime);
        // Errors are foca refusing input (stale or undecodable); vipd logs and goes on too.
        let _ = match event {
            Event::Join(_) => {
                // In index order: foca's member order (and so the run) must not depend on
                // hash order. No broadcast: everyone already knows everyone.
                let everyone = (0..count).filter(|&i| i != node);
                foca.apply_many(everyone.map(|i| Member::alive(node_id(i))), false, runtime)
            }
            Event::Deliver { data, .. } => foca.handle_data(&data, runtime),
            Event::Timer { timer, .. } => foca.handle_timer(timer, runtime),
        };
        self.flush(node);
        true
    }

    /// Turns what foca asked for into scheduled deliveries, timers and notices.
    fn flush(&mut self, node: usize) {
        let name_len = self.nodes[node].foca.identity().name.len();
        while let Some((dst, data)) = self.runtime.to_send() {
            let kind = PostcardCodec
                .decode_header(&data[..])
                .map_or(KINDS.len() - 1, |h| kind_of(&h.message));
            self.traffic.datagrams[kind] += 1;
            self.traffic.bytes[kind] += (data.len() + 1 + name_len + seal::OVERHEAD) as u64;
            let Some(&to) = self.by_addr.get(&dst.addr) else {
                continue;
            };
            if self.net.loss > 0.0 && self.rng.random_bool(self.net.loss) {
                continue;
            }
            let latency = self.random_duration(self.net.latency_min, self.net.latency_max);
            self.schedule(
                self.now + latency,
                Event::Deliver {
                    to,
                    data: data.to_vec(),
                },
            );
        }
        while let Some((delay, timer)) = self.runtime.to_schedule() {
            self.schedule(self.now + delay, Event::Timer { node, timer });
        }
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::MemberDown(id) => {
                    let subject = self.by_addr[&id.addr];
                    if self.nodes[subject].alive {
                        self.false_downs += 1;
                    }
                    self.downs.push(DownNotice {
                        at: self.now,
                        observer: node,
                        subject,
                    });
                }
                OwnedNotification::Defunct | OwnedNotification::Rejoin(_) => {
                    self.declared_self_down += 1;
                }
                _ => {}
            }
        }
    }
}

/// One injected failure, timed from the kill.
#[derive(Clone, Copy, Debug)]
pub struct Detection {
    /// First `MemberDown` for the victim on any node.
    pub first: Duration,
    /// Every live node told; `None` when that did not happen within [`TRIAL_TIMEOUT`].
    pub everyone: Option<Duration>,
}

/// Kills a random live node and runs until every other live node reported it down.
pub fn kill_and_detect(sim: &mut Sim) -> Detection {
    let live = sim.live_nodes();
    let victim = live[sim.rng.random_range(0..live.len())];
    let killed_at = sim.now();
    sim.kill(victim);
    let mut not_told: HashSet<usize> = live.into_iter().filter(|&i| i != victim).collect();
    let mut first = None;
    let deadline = killed_at + TRIAL_TIMEOUT;
    while !not_told.is_empty() && sim.step_until(deadline) {
        for notice in sim.downs.drain(..) {
            if notice.subject == victim {
                first.get_or_insert(notice.at - killed_at);
                not_told.remove(&notice.observer);
            }
        }
    }
    let elapsed = sim.now() - killed_at;
    Detection {
        first: first.unwrap_or(TRIAL_TIMEOUT),
        everyone: not_told.is_empty().then_some(elapsed),
    }
}

/// Everything measured for one cluster size.
#[derive(Debug, Default)]
pub struct Report {
    pub nodes: usize,
    pub detections: Vec<Detection>,
    pub steady: Traffic,
    /// Node-periods the steady traffic was counted over.
    pub node_periods: u64,
    pub false_downs: u64,
    pub declared_self_down: u64,
}

impl Report {
    pub fn msgs_per_node_period(&self) -> f64 {
        self.steady.total_datagrams() as f64 / self.node_periods as f64
    }

    fn everyone_ms(&self) -> Vec<f64> {
        self.detections
            .iter()
            .map(|d| ms(d.everyone.unwrap_or(TRIAL_TIMEOUT)))
            .collect()
    }

    pub fn detect_p99_ms(&self) -> f64 {
        percentile(&self.everyone_ms(), 99.0)
    }

    fn incomplete(&self) -> usize {
        self.detections
            .iter()
            .filter(|d| d.everyone.is_none())
            .count()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `trials` failures at cluster size `n`. A cluster loses at most 1% of its nodes (at least
/// one), so small sizes get a fresh cluster per failure and 1,000 nodes share one.
pub fn measure(
    n: usize,
    trials: usize,
    tuning: &SwimTuning,
    net: Network,
    steady_periods: u32,
    seed: u64,
) -> Report {
    let kills_per_cluster = (n / 100).max(1);
    let mut report = Report {
        nodes: n,
        ..Report::default()
    };
    let mut cluster_seed = seed;
    while report.detections.len() < trials {
        let mut sim = Sim::new(n, tuning, net, cluster_seed);
        cluster_seed = cluster_seed.wrapping_add(1);
        sim.run_until(tuning.probe_period * WARM_UP_PERIODS);
        sim.traffic = Traffic::default();
        sim.run_until(sim.now() + tuning.probe_period * steady_periods);
        report.steady.add(&sim.traffic);
        report.node_periods += n as u64 * u64::from(steady_periods);
        for _ in 0..kills_per_cluster.min(trials - report.detections.len()) {
            report.detections.push(kill_and_detect(&mut sim));
            // Let the news settle and start the next failure at an arbitrary phase.
            let gap = sim.random_duration(Duration::from_secs(1), Duration::from_secs(2));
            sim.run_until(sim.now() + gap);
        }
        report.false_downs += sim.false_downs;
        report.declared_self_down += sim.declared_self_down;
    }
    report
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!((0.0..1.0).contains(&args.loss), "--loss must be in [0, 1)");
    let tuning = SwimTuning::new(PROBE_PERIOD, SUSPECT_TIMEOUT);
    let net = Network::lan(args.loss);
    println!(
        "vipd tuning: probe_period {:?}, probe_rtt {:?}, suspect_timeout {:?}; latency {:?}..{:?}, loss {}",
        tuning.probe_period,
        tuning.probe_rtt,
        tuning.suspect_to_down,
        net.latency_min,
        net.latency_max,
        args.loss
    );
    let started = std::time::Instant::now();
    let reports = [
        measure(
            3,
            args.trials_small,
            &tuning,
            net,
            args.steady_periods,
            args.seed,
        ),
        measure(
            args.nodes as usize,
            args.trials_large,
            &tuning,
            net,
            args.steady_periods,
            args.seed,
        ),
    ];

    println!();
    println!(
        "{:>6} {:>6} {:>10} {:>10} {:>10} {:>10} {:>11} {:>11} {:>6} {:>6}",
        "N",
        "trials",
        "first p50",
        "all p50",
        "all p99",
        "all max",
        "msgs/node/p",
        "bytes/node/p",
        "falseD",
        "selfD"
    );
    for r in &reports {
        let first: Vec<f64> = r.detections.iter().map(|d| ms(d.first)).collect();
        let everyone = r.everyone_ms();
        println!(
            "{:>6} {:>6} {:>8.0}ms {:>8.0}ms {:>8.0}ms {:>8.0}ms {:>11.2} {:>12.0} {:>6} {:>6}",
            r.nodes,
            r.detections.len(),
            percentile(&first, 50.0),
            percentile(&everyone, 50.0),
            percentile(&everyone, 99.0),
            min_max(&everyone).1,
            r.msgs_per_node_period(),
            r.steady.total_bytes() as f64 / r.node_periods as f64,
            r.false_downs,
            r.declared_self_down,
        );
    }
    println!(
        "(first: kill to the first MemberDown anywhere; all: to the last live node told; \
         falseD: MemberDown about a live node; selfD: live nodes told they were down)"
    );

    let large = &reports[1];
    println!();
    println!(
        "steady state at N={}, per node per probe period ({} periods):",
        large.nodes, args.steady_periods
    );
    for (k, kind) in KINDS.iter().enumerate() {
        println!(
            "  {kind:<14} {:>6.2} msgs {:>8.0} bytes",
            large.steady.datagrams[k] as f64 / large.node_periods as f64,
            large.steady.bytes[k] as f64 / large.node_periods as f64
        );
    }
    for r in &reports {
        if r.incomplete() > 0 {
            println!(
                "WARNING: N={}: {} of {} failures not known to every live node after {:?} \
                 (counted as {:?})",
                r.nodes,
                r.incomplete(),
                r.detections.len(),
                TRIAL_TIMEOUT,
                TRIAL_TIMEOUT
            );
        }
        if r.false_downs > 0 {
            println!(
                "WARNING: N={}: {} false MemberDown notices ({} live nodes told they were down)",
                r.nodes, r.false_downs, r.declared_self_down
            );
        }
    }
    println!("wall time {:.1} s", started.elapsed().as_secs_f64());
    println!(
        "detect_p99_ms_n3={:.0} detect_p99_ms_n{}={:.0} msgs_per_node_period={:.2}",
        reports[0].detect_p99_ms(),
        large.nodes,
        large.detect_p99_ms(),
        large.msgs_per_node_period()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vipd_tuning() -> SwimTuning {
        SwimTuning::new(PROBE_PERIOD, SUSPECT_TIMEOUT)
    }

    #[test]
    fn three_nodes_detect_a_crash_quickly_and_never_falsely() {
        let t = vipd_tuning();
        let report = measure(3, 10, &t, Network::lan(0.0), 20, 7);
        // Worst case: the victim was just probed by both survivors (each walks its two
        // members in a shuffled round-robin), the probe fails, then suspicion runs out.
        let bound = (t.probe_period + t.probe_rtt + t.suspect_to_down) * 3;
        for d in &report.detections {
            let everyone = d.everyone.expect("every live node told");
            assert!(
                d.first <= everyone && everyone <= bound,
                "{d:?} > {bound:?}"
            );
        }
        assert_eq!(report.false_downs, 0);
        assert_eq!(report.declared_self_down, 0);
        // Each node pings one member per period and answers the pings it gets.
        let per_node = report.msgs_per_node_period();
        assert!((2.0..10.0).contains(&per_node), "{per_node}");
    }

    #[test]
    fn same_seed_same_run() {
        let t = vipd_tuning();
        let run = |seed| {
            let r = measure(20, 2, &t, Network::lan(0.05), 10, seed);
            let times: Vec<_> = r.detections.iter().map(|d| (d.first, d.everyone)).collect();
            (times, r.steady.total_datagrams(), r.steady.total_bytes())
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }
}
