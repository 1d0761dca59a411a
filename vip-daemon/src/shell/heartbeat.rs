//! Heartbeat threads of the fast failure detector (`core::heartbeat`): one OS thread per
//! gossip link, on the link's gossip address with the port one higher, at real-time
//! priority (SCHED_FIFO, as Corosync and keepalived run) so that a node whose other work is
//! starved of CPU still speaks and listens on time: the detector must not take a busy node
//! for a dead one, nor a busy observer's late reads for others' deaths. Heartbeats are
//! sealed with the cluster key (`core::seal`); a forged one is dropped. A node that leaves
//! says goodbye, so its peers forget it instead of finding it silent.
use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use rand::{rngs::StdRng, SeedableRng as _};
use tokio::sync::mpsc;

use super::gossip::GossipEvent;

use crate::core::{
    heartbeat::{Detector, Verdict},
    seal::{Opener, Sealer},
};

const MAGIC: &[u8; 2] = b"HB";
const BYE: u8 = 1;
const ALIVE: u8 = 0;
/// Heartbeats come every few milliseconds; the ownership core's arithmetic (`margin`, tens
/// of milliseconds and more) needs word from a peer far less often.
const HEARD_EVERY: Duration = Duration::from_millis(20);

pub struct HeartbeatConfig {
    pub me: String,
    /// Per link: this node's gossip address and the peers' (heartbeats use port + 1).
    pub links: Vec<(SocketAddr, Vec<SocketAddr>)>,
    pub interval: Duration,
    pub timeout: Duration,
    pub keys: ([u8; 32], Option<[u8; 32]>),
}

/// The running threads; dropping it stops them (after a goodbye, see [`Heartbeats::bye`]).
pub struct Heartbeats {
    stop: Arc<AtomicBool>,
    bye: Arc<AtomicBool>,
}

impl Heartbeats {
    /// Peers forget this node at its next heartbeat instead of finding it silent.
    pub fn bye(&self) {
        self.bye.store(true, Ordering::Release);
    }
}

impl Drop for Heartbeats {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// The heartbeat port of a gossip address.
pub fn port_of(gossip: SocketAddr) -> SocketAddr {
    SocketAddr::new(gossip.ip(), gossip.port().wrapping_add(1))
}

pub fn spawn(
    config: HeartbeatConfig,
    events: mpsc::Sender<GossipEvent>,
) -> std::io::Result<Heartbeats> {
    let stop = Arc::new(AtomicBool::new(false));
    let bye = Arc::new(AtomicBool::new(false));
    let detector = Arc::new(Mutex::new(Detector::new(config.timeout)));
    let config = Arc::new(config);
    for (link, (listen, peers)) in config.links.iter().enumerate() {
        let socket = UdpSocket::bind(port_of(*listen))?;
        let peers: Vec<SocketAddr> = peers
            .iter()
            .filter(|p| *p != listen)
            .map(|&p| port_of(p))
            .collect();
        let (config, detector, events) = (config.clone(), detector.clone(), events.clone());
        let (stop, bye) = (stop.clone(), bye.clone());
        std::thread::Builder::new()
            .name(format!("vipd-heartbeat-{link}"))
            .spawn(move || {
                realtime(link);
                let beat = Beat {
                    socket,
                    peers,
                    config: &config,
                    detector: &detector,
                    events: &events,
                    // Only the first link's thread judges (the detector is shared).
                    judge: link == 0,
                };
                beat.run(&stop, &bye);
            })?;
    }
    Ok(Heartbeats { stop, bye })
}

/// SCHED_FIFO for the calling thread; without the privilege, a warning and normal priority.
fn realtime(link: usize) {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        tracing::warn!(
            link,
            error = %std::io::Error::last_os_error(),
            "heartbeat thread not real-time: a CPU-starved node may be taken for dead"
        );
    }
}

struct Beat<'a> {
    socket: UdpSocket,
    peers: Vec<SocketAddr>,
    config: &'a HeartbeatConfig,
    detector: &'a Mutex<Detector>,
    events: &'a mpsc::Sender<GossipEvent>,
    judge: bool,
}

impl Beat<'_> {
    fn run(&self, stop: &AtomicBool, bye: &AtomicBool) {
        let mut rng = StdRng::from_entropy();
        let keys = self.config.keys;
        let mut sealer = Sealer::new(keys.0, keys.1, rand::Rng::gen(&mut rng));
        let mut opener = Opener::new(
            &[Some(keys.0), keys.1]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>(),
        );
        let me = self.config.me.as_bytes();
        let mut buf = vec![0u8; 2048];
        let mut next = Instant::now();
        // When each peer's last Heard went to the loop: one per HEARD_EVERY is word enough.
        let mut told: std::collections::HashMap<String, Instant> = Default::default();
        while !stop.load(Ordering::Acquire) {
            let now = Instant::now();
            if now >= next {
                let leaving = bye.load(Ordering::Acquire);
                let mut plain = MAGIC.to_vec();
                plain.push(if leaving { BYE } else { ALIVE });
                plain.push(me.len().min(255) as u8);
                plain.extend_from_slice(&me[..me.len().min(255)]);
                for peer in &self.peers {
                    if let Ok(sealed) = sealer.seal(&plain, &mut rng) {
                        let _ = self.socket.send_to(&sealed, peer);
                    }
                }
                next = (next + self.config.interval).max(now);
            }
            if self.judge {
                let verdicts = self.detector.lock().expect("detector").tick(now);
                for v in verdicts {
                    let _ = self.events.try_send(match v {
                        Verdict::Silent(n) => GossipEvent::Silent(n),
                        Verdict::Back(n) => GossipEvent::Back(n),
                    });
                }
            }
            let wait = next
                .saturating_duration_since(Instant::now())
                .max(Duration::from_micros(100));
            let _ = self.socket.set_read_timeout(Some(wait));
            let Ok((n, _)) = self.socket.recv_from(&mut buf) else {
                continue;
            };
            let Ok(plain) = opener.open(&buf[..n]) else {
                continue;
            };
            let Some((kind, name)) = parse(&plain) else {
                continue;
            };
            let now = Instant::now();
            let mut detector = self.detector.lock().expect("detector");
            if kind == BYE {
                detector.forget(&name);
                continue;
            }
            if let Some(Verdict::Back(n)) = detector.heard(&name, now) {
                let _ = self.events.try_send(GossipEvent::Back(n));
            }
            drop(detector);
            // An authentic heartbeat is word from its sender (`Input::Heard`), sent at most
            // every HEARD_EVERY per peer and only while the channel leaves room for verdicts:
            // a Heard is worth less than a Silent.
            let due = told
                .get(&name)
                .is_none_or(|t| now.duration_since(*t) >= HEARD_EVERY);
            if due && self.events.capacity() > 64 {
                told.insert(name.clone(), now);
                let _ = self.events.try_send(GossipEvent::Heard(name));
            }
        }
    }
}

/// (kind, sender name) of a heartbeat's plaintext.
fn parse(plain: &[u8]) -> Option<(u8, String)> {
    let rest = plain.strip_prefix(MAGIC)?;
    let (&kind, rest) = rest.split_first()?;
    let (&len, rest) = rest.split_first()?;
    let name = rest.get(..len as usize)?;
    Some((kind, String::from_utf8_lossy(name).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `want` arrives within 2 s.
    async fn wait_for(rx: &mut mpsc::Receiver<GossipEvent>, want: GossipEvent) -> bool {
        let found = async {
            while let Some(ev) = rx.recv().await {
                if ev == want {
                    return true;
                }
            }
            false
        };
        tokio::time::timeout(Duration::from_secs(2), found)
            .await
            .unwrap_or(false)
    }

    #[test]
    fn heartbeats_between_three_threads_find_a_stopped_one_silent() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let port = |p| SocketAddr::from(([127, 0, 0, 1], p));
            let probes: Vec<std::net::UdpSocket> = (0..3)
                .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"))
                .collect();
            // Gossip addresses whose port + 1 is free for the heartbeats (probably).
            let gossip: Vec<SocketAddr> = probes
                .iter()
                .map(|s| port(s.local_addr().expect("addr").port() - 1))
                .collect();
            drop(probes);
            let config = |me: &str, listen| HeartbeatConfig {
                me: me.into(),
                links: vec![(listen, gossip.clone())],
                interval: Duration::from_millis(10),
                timeout: Duration::from_millis(50),
                keys: ([3; 32], None),
            };
            let (tx_a, mut rx_a) = mpsc::channel(256);
            let (tx_b, _rx_b) = mpsc::channel(256);
            let (tx_c, _rx_c) = mpsc::channel(256);
            let _ha = spawn(config("a", gossip[0]), tx_a).expect("a");
            let hb = spawn(config("b", gossip[1]), tx_b).expect("b");
            // A third member that keeps talking: a detector judges only while it hears
            // someone (`core::heartbeat`, a deaf node judges nobody).
            let _hc = spawn(config("c", gossip[2]), tx_c).expect("c");
            assert!(wait_for(&mut rx_a, GossipEvent::Heard("b".into())).await);
            drop(hb);
            let stopped = Instant::now();
            assert!(wait_for(&mut rx_a, GossipEvent::Silent("b".into())).await);
            assert!(stopped.elapsed() < Duration::from_millis(500));
        });
    }
}
