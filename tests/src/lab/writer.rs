//! Act 9: a primary/backup VIP (Galera) keeps its writer. The primary's service dies, the
//! writer moves to the backup; the primary comes back and the writer stays on the backup
//! (moving it would reset every connection to it); an operator's `vipd backend promote` on
//! every controller moves it back on purpose. A sampler asks the three controllers who the
//! writer is and opens new connections all along.
//!
//! The writer as a controller sees it: `vipd status` has no writer field; a primary/backup
//! VIP's live table is a single slot, so the writer is the backend with `slots > 0`.
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::bail;
use vip_daemon::shell::{control::AdminAction, status::Status};

use super::{
    borrowed_ns,
    chatter::Chatter,
    config::{CONTROLLERS, DB_VIP},
    pause,
    running::Lab,
    scenarios::{errors, traffic},
    status_of,
    story::Story,
    traffic::since,
};
use crate::servers::LineClient;

const SERVICE: &str = "galera";
/// How often each long-lived connection asks.
const PERIOD: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub struct WriterKept {
    /// The priority-0 backend (the writer at the start) and the one that took over.
    pub primary: &'static str,
    pub backup: String,
    /// The writer each controller named before the act (`none`: an empty slot); when they
    /// did not all name the primary, the act promoted it first.
    pub writers_at_start: Vec<String>,
    /// From SIGKILL of the primary's service until every controller names the backup.
    pub failover: Duration,
    /// Long-lived connections to the primary when its service died (they end with it).
    pub on_primary: usize,
    pub on_primary_ended: usize,
    /// From the service's restart until every controller sees it up.
    pub primary_up_after: Duration,
    /// Who every controller names once the primary has been up for 1.5 s.
    pub writer_after_return: Option<String>,
    /// Long-lived connections opened to the backup after the failover, and how many kept
    /// answering from it through the primary's return (until the promote).
    pub to_backup: usize,
    pub to_backup_landed_on_backup: usize,
    pub to_backup_kept: usize,
    /// Sampler rounds (status of the three controllers and two new connections each).
    pub samples: u64,
    /// Rounds overlapping a planned change of writer: the failover (from the kill until
    /// every controller names the backup) and the promote loop (one control request per
    /// controller: admin state is per node). Controllers may disagree there for a moment.
    pub transition_samples: u64,
    /// Rounds in those windows in which the controllers did not all name one writer.
    pub failover_disagreements: u64,
    pub promote_disagreements: u64,
    pub promote_window: Duration,
    /// Rounds outside them in which the answering controllers did not all name one writer,
    /// or whose new connections landed on more than one backend; rounds in which some
    /// controller did not answer in 100 ms.
    pub disagreements: u64,
    pub split: u64,
    pub unanswered: u64,
    /// Rounds after the primary's restart, before the promote, in which a controller named
    /// the primary or a new connection landed on it.
    pub moved_back: u64,
    /// New connections of the sampler that failed: in rounds overlapping the failover (one
    /// accepted by the primary just before its SIGKILL is reset with it, like the long-lived
    /// ones), and in every other round.
    pub failed_in_failover: u64,
    pub failed_new: u64,
    /// After the promote: sampler connections answered by the primary, of all answered.
    pub new_on_primary_after_promote: u64,
    pub new_after_promote: u64,
    /// Connections to the backup still answering from it 1 s after the promote.
    pub to_backup_after_promote: usize,
    /// Failed new requests of the lab's client load over the act: galera, every service.
    pub galera_errors: u64,
    pub errors: u64,
    /// A few disagreeing or split rounds and failed new connections, for the record.
    pub examples: Vec<String>,
}

pub fn primary_backup_keeps_writer(lab: &mut Lab, story: &Story) -> anyhow::Result<WriterKept> {
    // The lab's config gives backend j priority j: ctl1 is the primary.
    let (p, primary) = (0, CONTROLLERS[0]);
    let db = SocketAddr::new(IpAddr::V4(DB_VIP), 3306);
    let client = lab.names.ns("client");
    let mut r = WriterKept {
        primary,
        ..Default::default()
    };
    let all = lab.statuses(Duration::from_millis(300));
    r.writers_at_start = all
        .iter()
        .map(|s| {
            s.as_ref().map_or("no answer".into(), |s| {
                writer_in(s).unwrap_or("none".into())
            })
        })
        .collect();
    match agreed_writer(&all) {
        Some(w) if w == primary => {}
        _ => {
            story.say(format!(
                "!! writer at the start, as ctl1, ctl2, ctl3 name it: {}; promoting {primary} on every controller first",
                r.writers_at_start.join(", ")
            ));
            for s in all.iter().flatten() {
                let v = s.vips.iter().find(|v| v.name == SERVICE);
                let shown: Vec<String> = v
                    .iter()
                    .flat_map(|v| &v.backends)
                    .map(|b| format!("{} {} {} slots={}", b.name, b.health, b.admin, b.slots))
                    .collect();
                story.say(format!("   {}: {}", s.node, shown.join("; ")));
            }
            lab.admin_all(AdminAction::Promote, SERVICE, primary)?;
            wait_writer(lab, |w| w == primary, Instant::now())?;
        }
    }
    let sampler = Sampler::start(lab, db);
    let before = traffic(lab);
    let on_primary = Chatter::open(&client, db, 6, PERIOD)?;
    story.say(format!(
        "{primary} writes {db}; 6 long-lived connections asking every {PERIOD:?} (to {}); sampling who writes every ~15 ms",
        on_primary.firsts().join(" ")
    ));
    pause(Duration::from_millis(300))?;
    let killed = Instant::now();
    lab.nodes[p].kill_service(SERVICE);
    story.say(format!("SIGKILL {SERVICE} on {primary}"));
    let (backup, failover) = wait_writer(lab, |w| w != primary, killed)?;
    r.failover = failover;
    story.say(format!(
        "every controller names {backup} the writer {failover:.0?} after the kill"
    ));
    let to_backup = Chatter::open(&client, db, 6, PERIOD)?;
    story.say(format!(
        "6 long-lived connections opened to the writer (to {})",
        to_backup.firsts().join(" ")
    ));
    pause(Duration::from_millis(500))?;
    let restarted = Instant::now();
    lab.nodes[p].start_services()?;
    r.primary_up_after = wait_up(lab, primary, restarted)?;
    story.say(format!(
        "{SERVICE} restarted on {primary}: up on every controller after {:.0?}",
        r.primary_up_after
    ));
    pause(Duration::from_millis(1500))?;
    r.writer_after_return = agreed_writer(&lab.statuses(Duration::from_millis(300)));
    let through_return = to_backup.snapshot();
    story.say(format!(
        "1.5 s later every controller names {:?}; connections to {backup} kept: {}/{}",
        r.writer_after_return,
        through_return.iter().filter(|c| c.kept()).count(),
        through_return.len()
    ));
    let promote_start = Instant::now();
    lab.admin_all(AdminAction::Promote, SERVICE, primary)?;
    let promote_end = Instant::now();
    r.promote_window = promote_end - promote_start;
    let (_, promoted) = wait_writer(lab, |w| w == primary, promote_start)?;
    story.say(format!(
        "vipd backend promote {SERVICE} {primary} on every controller ({:.0?}): all name it the writer after {promoted:.0?}",
        r.promote_window
    ));
    pause(Duration::from_secs(1))?;
    let samples = sampler.finish();
    let on_primary = on_primary.finish();
    let to_backup = to_backup.finish();
    let load = since(&traffic(lab), &before);
    r.galera_errors = load.get(SERVICE).map_or(0, |c| c.errors);
    r.errors = errors(&load);

    r.on_primary = on_primary.len();
    r.on_primary_ended = on_primary.iter().filter(|c| c.broke_after(killed)).count();
    r.to_backup = to_backup.len();
    r.to_backup_landed_on_backup = to_backup.iter().filter(|c| c.first == backup).count();
    r.to_backup_kept = to_backup
        .iter()
        .filter(|c| c.first == backup && c.broken.as_ref().is_none_or(|b| b.0 >= promote_start))
        .count();
    r.to_backup_after_promote = to_backup.iter().filter(|c| c.kept()).count();
    r.backup = backup;
    let windows = [(killed, killed + failover), (promote_start, promote_end)];
    tally(&mut r, &samples, restarted, windows);
    tell(story, &r);
    Ok(r)
}

/// The act's numbers, as the demo prints them.
fn tell(story: &Story, r: &WriterKept) {
    let primary = r.primary;
    story.say(format!(
        "{} sampler rounds; outside the failover and the promote loop: {} with controllers naming different writers, {} with new connections on two backends, {} unanswered; in those windows ({} rounds): {} and {} disagreeing",
        r.samples, r.disagreements, r.split, r.unanswered, r.transition_samples, r.failover_disagreements, r.promote_disagreements
    ));
    story.say(format!(
        "between {primary}'s return and the promote: {} rounds naming it or answered by it; sampler's failed new connections: {} in the failover, {} elsewhere",
        r.moved_back, r.failed_in_failover, r.failed_new
    ));
    story.say(format!(
        "after the promote: {} of {} new connections on {primary}; connections to {} still answered by it: {}/{}; failed new requests over the act: {} ({SERVICE} {})",
        r.new_on_primary_after_promote, r.new_after_promote, r.backup, r.to_backup_after_promote, r.to_backup, r.errors, r.galera_errors
    ));
    for e in &r.examples {
        story.say(format!("!! {e}"));
    }
}

/// Counts the sampler's rounds into `r`; `windows` are the failover's and the promote's.
fn tally(r: &mut WriterKept, samples: &[Sample], restarted: Instant, windows: [Window; 2]) {
    r.samples = samples.len() as u64;
    let [failover, promote] = windows;
    for s in samples {
        // A round's questions take a few ms: it is in a window when they overlap it.
        let within = |w: Window| s.end >= w.0 && s.at <= w.1;
        let answered: Vec<&Option<String>> = s.writers.iter().flatten().collect();
        r.unanswered += u64::from(answered.len() < s.writers.len());
        let agree = answered
            .first()
            .is_some_and(|first| first.is_some() && answered.iter().all(|w| w == first));
        let ok: Vec<&String> = s.answers.iter().flatten().collect();
        let failed = (s.answers.len() - ok.len()) as u64;
        if within(failover) {
            r.failed_in_failover += failed;
        } else {
            r.failed_new += failed;
        }
        for e in s.answers.iter().filter_map(|a| a.as_ref().err()) {
            if r.examples.len() < 8 {
                r.examples.push(format!(
                    "new connection failed {}: {e}",
                    relative(s.at, failover.0)
                ));
            }
        }
        let split = ok.iter().any(|a| *a != ok[0]);
        if within(failover) || within(promote) {
            r.transition_samples += 1;
            r.failover_disagreements += u64::from(!agree && within(failover));
            r.promote_disagreements += u64::from(!agree && within(promote));
        } else {
            r.disagreements += u64::from(!agree);
            r.split += u64::from(split);
            if (!agree || split) && r.examples.len() < 8 {
                r.examples.push(format!(
                    "round {}: writers {:?}, new connections {:?}",
                    relative(s.at, failover.0),
                    s.writers,
                    s.answers
                ));
            }
        }
        if s.at > restarted && s.end < promote.0 {
            let named = answered.iter().any(|w| w.as_deref() == Some(r.primary));
            r.moved_back += u64::from(named || ok.iter().any(|a| *a == r.primary));
        }
        if s.at > promote.1 {
            r.new_after_promote += ok.len() as u64;
            r.new_on_primary_after_promote += ok.iter().filter(|a| **a == r.primary).count() as u64;
        }
    }
}

/// From, until.
type Window = (Instant, Instant);

/// "12ms after the kill" or "300ms before the kill".
fn relative(at: Instant, kill: Instant) -> String {
    match at.checked_duration_since(kill) {
        Some(d) => format!("{d:.0?} after the kill"),
        None => format!("{:.0?} before the kill", kill - at),
    }
}

/// The writer a controller's status names: the backend holding the single slot.
fn writer_in(s: &Status) -> Option<String> {
    let v = s.vips.iter().find(|v| v.name == SERVICE)?;
    v.backends
        .iter()
        .find(|b| b.slots > 0)
        .map(|b| b.name.clone())
}

/// The writer every controller names, when all answer and agree.
fn agreed_writer(all: &[Option<Status>]) -> Option<String> {
    let named: Vec<Option<String>> = all.iter().map(|s| s.as_ref().and_then(writer_in)).collect();
    match named.first() {
        Some(Some(w)) if named.iter().all(|n| n.as_ref() == Some(w)) => Some(w.clone()),
        _ => None,
    }
}

/// Until every controller names one writer that `wanted` accepts: it, and the time since
/// `from`.
fn wait_writer(
    lab: &Lab,
    wanted: impl Fn(&str) -> bool,
    from: Instant,
) -> anyhow::Result<(String, Duration)> {
    loop {
        if let Some(w) = agreed_writer(&lab.statuses(Duration::from_millis(300))) {
            if wanted(&w) {
                return Ok((w, from.elapsed()));
            }
        }
        if from.elapsed() > Duration::from_secs(10) {
            bail!("no agreed {SERVICE} writer as wanted after 10 s");
        }
        pause(Duration::from_millis(5))?;
    }
}

/// Until every controller sees `backend` of the service up (a backup has no slots).
fn wait_up(lab: &Lab, backend: &str, from: Instant) -> anyhow::Result<Duration> {
    loop {
        let all = lab.statuses(Duration::from_millis(300));
        let up = all.iter().all(|s| {
            s.as_ref().is_some_and(|s| {
                s.vips
                    .iter()
                    .filter(|v| v.name == SERVICE)
                    .flat_map(|v| &v.backends)
                    .filter(|b| b.name == backend)
                    .all(|b| b.health == "up")
            })
        });
        if up {
            return Ok(from.elapsed());
        }
        if from.elapsed() > Duration::from_secs(15) {
            bail!("{SERVICE}/{backend} not up everywhere after 15 s");
        }
        pause(Duration::from_millis(10))?;
    }
}

/// One sampler round: the writer each controller names (None: no answer in 100 ms), then
/// two new connections' answers.
struct Sample {
    at: Instant,
    end: Instant,
    writers: Vec<Option<Option<String>>>,
    answers: Vec<Result<String, String>>,
}

struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    fn start(lab: &Lab, db: SocketAddr) -> Self {
        let controls: Vec<PathBuf> = lab.nodes.iter().map(|n| n.control.clone()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let done = stop.clone();
        let thread = borrowed_ns(&lab.names.ns("client")).spawn(move || {
            let mut samples = Vec::new();
            while !done.load(Ordering::Acquire) {
                let at = Instant::now();
                let writers = controls
                    .iter()
                    .map(|c| status_of(c, Duration::from_millis(100)).map(|s| writer_in(&s)))
                    .collect();
                let answers = (0..2)
                    .map(|_| {
                        LineClient::connect(db)
                            .and_then(|mut c| c.ask())
                            .map_err(|e| e.to_string())
                    })
                    .collect();
                samples.push(Sample {
                    at,
                    end: Instant::now(),
                    writers,
                    answers,
                });
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        });
        Self { stop, thread }
    }

    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().unwrap_or_default()
    }
}
