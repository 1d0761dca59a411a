//! Long-lived connections that keep talking, like database sessions or AMQP channels: each
//! on its own thread in the client namespace, asking "who" every `period` and noting the
//! first time it broke or another backend answered.
use std::{
    net::SocketAddr,
    sync::{mpsc, Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use super::borrowed_ns;
use crate::servers::LineClient;

/// One connection's record.
#[derive(Clone, Debug, Default)]
pub struct Conn {
    /// The backend that answered its first line.
    pub first: String,
    pub asks: u64,
    /// The first failure: an error, or another backend answering; and when.
    pub broken: Option<(Instant, String)>,
    /// Closed by the client on purpose ([`Chatter::close_where`]).
    pub closed: bool,
}

impl Conn {
    pub fn kept(&self) -> bool {
        self.broken.is_none()
    }

    /// Broke at or after `t`.
    pub fn broke_after(&self, t: Instant) -> bool {
        self.broken.as_ref().is_some_and(|(at, _)| *at >= t)
    }
}

pub struct Chatter {
    conns: Vec<Arc<Mutex<Conn>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Chatter {
    /// Opens `n` connections to `to` from namespace `ns`, each answered once before this
    /// returns; then each asks every `period` until it breaks or is closed.
    pub fn open(ns: &str, to: SocketAddr, n: usize, period: Duration) -> anyhow::Result<Self> {
        let ns = borrowed_ns(ns);
        let (tx, rx) = mpsc::channel();
        let mut conns = Vec::new();
        let mut threads = Vec::new();
        for _ in 0..n {
            let conn = Arc::new(Mutex::new(Conn::default()));
            let (me, tx) = (conn.clone(), tx.clone());
            threads.push(ns.spawn(move || talk(to, period, &me, &tx)));
            conns.push(conn);
        }
        drop(tx);
        let mut chatter = Self { conns, threads };
        for _ in 0..n {
            let opened = rx
                .recv_timeout(Duration::from_secs(5))
                .context("a long-lived connection did not open in 5 s")?;
            if let Err(e) = opened {
                chatter.close_where(|_| true);
                bail!("a long-lived connection to {to} failed to open: {e}");
            }
        }
        Ok(chatter)
    }

    /// Each connection's record so far.
    pub fn snapshot(&self) -> Vec<Conn> {
        self.conns
            .iter()
            .map(|c| c.lock().expect("conn").clone())
            .collect()
    }

    /// The backends answering the connections at open, in order.
    pub fn firsts(&self) -> Vec<String> {
        self.snapshot().into_iter().map(|c| c.first).collect()
    }

    /// The client ends the connections `pick` chooses (each at its next turn); their records.
    pub fn close_where(&mut self, pick: impl Fn(&Conn) -> bool) -> Vec<Conn> {
        let mut closed = Vec::new();
        for c in &self.conns {
            let mut c = c.lock().expect("conn");
            if !c.closed && pick(&c) {
                c.closed = true;
                closed.push(c.clone());
            }
        }
        closed
    }

    /// Closes every connection and waits for their threads: the final records.
    pub fn finish(mut self) -> Vec<Conn> {
        self.close_where(|_| true);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.snapshot()
    }
}

impl Drop for Chatter {
    fn drop(&mut self) {
        self.close_where(|_| true);
    }
}

/// One connection's thread: open, report the first answer, then ask every `period`.
fn talk(
    to: SocketAddr,
    period: Duration,
    me: &Mutex<Conn>,
    opened: &mpsc::Sender<Result<(), String>>,
) {
    let first = LineClient::connect(to).and_then(|mut c| c.ask().map(|who| (c, who)));
    let mut client = match first {
        Ok((client, who)) => {
            let mut c = me.lock().expect("conn");
            c.first = who;
            c.asks = 1;
            drop(c);
            let _ = opened.send(Ok(()));
            client
        }
        Err(e) => {
            let _ = opened.send(Err(e.to_string()));
            return;
        }
    };
    loop {
        std::thread::sleep(period);
        if me.lock().expect("conn").closed {
            return;
        }
        let answer = client.ask();
        let mut c = me.lock().expect("conn");
        c.asks += 1;
        let failure = match answer {
            Ok(who) if who == c.first => continue,
            Ok(who) => format!("answered by {who}"),
            Err(e) => e.to_string(),
        };
        c.broken = Some((Instant::now(), failure));
        return;
    }
}
