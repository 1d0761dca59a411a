//! The client's load: one thread per service in the client namespace, each doing one request
//! on a new connection (a new flow) every few milliseconds through the VIP, counting answers
//! by the backend that gave them, and errors.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    borrowed_ns,
    config::{Service, ServiceKind, SERVICES},
};
use crate::servers;

/// Answers of one service: by backend name, and failed requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub by_backend: BTreeMap<String, u64>,
    pub errors: u64,
    pub last_error: Option<Instant>,
    /// What the last failed request saw (connect refused, reset, timeout, ...).
    pub last_error_message: Option<String>,
}

impl Counts {
    /// What happened between `before` and this snapshot.
    pub fn since(&self, before: &Counts) -> Counts {
        let by_backend = self
            .by_backend
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v - before.by_backend.get(k).copied().unwrap_or(0),
                )
            })
            .collect();
        Counts {
            by_backend,
            errors: self.errors - before.errors,
            last_error: self.last_error.filter(|_| self.errors > before.errors),
            last_error_message: (self.last_error_message.clone())
                .filter(|_| self.errors > before.errors),
        }
    }

    pub fn answered(&self) -> u64 {
        self.by_backend.values().sum()
    }
}

/// Snapshot of every service's counts, by service name.
pub type Snapshot = BTreeMap<&'static str, Counts>;

pub struct Traffic {
    counts: Arc<Mutex<Snapshot>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Pause between two requests of one service (~40 requests/s each).
const GAP: Duration = Duration::from_millis(25);

impl Traffic {
    pub fn start(client_ns: &str) -> Self {
        Self::start_services(client_ns, &SERVICES)
    }

    /// The same load on other services (the `--bgp` lab's routed ones).
    pub fn start_services(client_ns: &str, services: &[Service]) -> Self {
        let counts = Arc::new(Mutex::new(Snapshot::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let ns = borrowed_ns(client_ns);
        let threads = services
            .iter()
            .map(|&s| {
                let (counts, stop) = (counts.clone(), stop.clone());
                ns.spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        let answer = request(s);
                        let mut c = counts.lock().expect("counts");
                        let e = c.entry(s.name).or_default();
                        match answer {
                            Ok(backend) => *e.by_backend.entry(backend).or_default() += 1,
                            Err(message) => {
                                e.errors += 1;
                                e.last_error = Some(Instant::now());
                                e.last_error_message = Some(message);
                            }
                        }
                        drop(c);
                        std::thread::sleep(GAP);
                    }
                })
            })
            .collect();
        Self {
            counts,
            stop,
            threads,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.counts.lock().expect("counts").clone()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One request on a new flow: the answering backend's name, or what went wrong.
fn request(s: Service) -> Result<String, String> {
    let to = SocketAddr::new(IpAddr::V4(s.vip), s.port);
    let answer = match s.kind {
        ServiceKind::Http => servers::http_get(to).map(|(_, body)| body),
        ServiceKind::Tcp => servers::LineClient::connect(to)
            .map_err(|e| std::io::Error::new(e.kind(), format!("connect: {e}")))
            .and_then(|mut c| c.ask()),
        ServiceKind::Udp => servers::udp_ask(to, b"query").map(|(_, a)| a),
    };
    match answer {
        Ok(name) if !name.is_empty() => Ok(name),
        Ok(_) => Err("empty answer".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Differences per service between two snapshots.
pub fn since(now: &Snapshot, before: &Snapshot) -> Snapshot {
    now.iter()
        .map(|(k, v)| (*k, v.since(before.get(k).unwrap_or(&Counts::default()))))
        .collect()
}
