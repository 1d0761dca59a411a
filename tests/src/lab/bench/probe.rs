//! A client that opens a new connection every few milliseconds (issue 8's load), each request
//! in its own thread so a hanging one does not delay the next: one HTTP GET with a short
//! timeout, recorded with its start time and the backend that answered.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::lab::borrowed_ns;

/// One request: when it started, and the backend that answered (None: it failed).
#[derive(Clone, Debug)]
pub struct Outcome {
    pub at: Instant,
    pub backend: Option<String>,
}

pub struct Prober {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    scheduler: Option<JoinHandle<()>>,
}

/// A request slower than this counts as failed (and gives the probe its resolution).
const TIMEOUT: Duration = Duration::from_millis(200);

impl Prober {
    pub fn start(client_ns: &str, target: SocketAddr, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let (s, o) = (stop.clone(), outcomes.clone());
        // Threads spawned from inside the namespace are inside it too.
        let scheduler = borrowed_ns(client_ns).spawn(move || {
            let mut inflight = Vec::new();
            while !s.load(Ordering::Acquire) {
                let o = o.clone();
                inflight.push(std::thread::spawn(move || {
                    let at = Instant::now();
                    let backend = http_get(target).ok();
                    o.lock().expect("outcomes").push(Outcome { at, backend });
                }));
                inflight.retain(|t: &JoinHandle<()>| !t.is_finished());
                std::thread::sleep(every);
            }
            for t in inflight {
                let _ = t.join();
            }
        });
        Self {
            stop,
            outcomes,
            scheduler: Some(scheduler),
        }
    }

    /// Stops and returns every outcome, in start order.
    pub fn finish(mut self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.scheduler.take() {
            let _ = t.join();
        }
        let mut all = std::mem::take(&mut *self.outcomes.lock().expect("outcomes"));
        all.sort_by_key(|o| o.at);
        all
    }
}

pub fn http_get(to: SocketAddr) -> std::io::Result<String> {
    let mut conn = TcpStream::connect_timeout(&to, TIMEOUT)?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    conn.write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")?;
    let mut resp = String::new();
    conn.read_to_string(&mut resp)?;
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
    if !resp.starts_with("HTTP/1.0 200") || body.is_empty() {
        return Err(std::io::Error::other("bad answer"));
    }
    Ok(body.to_owned())
}

/// What the probes saw relative to an event (a kill, a link cut).
#[derive(Clone, Debug, Default)]
pub struct Seen {
    pub requests: usize,
    pub failed: usize,
    /// Start of the first success after the longest run of failed requests (the outage):
    /// when the service answered again. None when nothing failed, or it never recovered.
    pub first_ok_after_outage: Option<Duration>,
    pub last_failure: Option<Duration>,
    /// (seconds since the event, ok) of every request, for the plot.
    pub points: Vec<(f64, bool)>,
}

pub fn seen_after(outcomes: &[Outcome], event: Instant) -> Seen {
    let rel = |o: &Outcome| o.at.saturating_duration_since(event);
    let after: Vec<&Outcome> = outcomes.iter().filter(|o| o.at >= event).collect();
    let first_ok_after_outage = end_of_longest_outage(&after).map(rel);
    Seen {
        requests: after.len(),
        failed: after.iter().filter(|o| o.backend.is_none()).count(),
        first_ok_after_outage,
        last_failure: after
            .iter()
            .rev()
            .find(|o| o.backend.is_none())
            .map(|o| rel(o)),
        points: outcomes
            .iter()
            .map(|o| (signed_secs(o.at, event), o.backend.is_some()))
            .collect(),
    }
}

/// Seconds from `event` to `at`, negative before it.
fn signed_secs(at: Instant, event: Instant) -> f64 {
    if at >= event {
        (at - event).as_secs_f64()
    } else {
        -(event - at).as_secs_f64()
    }
}

/// The first success after the longest streak of consecutive failures.
fn end_of_longest_outage<'a>(after: &[&'a Outcome]) -> Option<&'a Outcome> {
    let (mut best, mut streak) = (None, 0usize);
    let mut best_len = 0;
    for o in after {
        if o.backend.is_none() {
            streak += 1;
        } else {
            if streak > best_len {
                (best, best_len) = (Some(*o), streak);
            }
            streak = 0;
        }
    }
    best
}
