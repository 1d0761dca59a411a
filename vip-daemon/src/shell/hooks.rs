//! The `[hooks] notify` command: run once per event, in order, one at a time, each within
//! `notify_timeout` (killed beyond it). A slow or broken hook never holds the loop: events
//! queue (bounded; beyond it they are dropped and counted).
use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Mutex,
};

use tokio::sync::mpsc;

use crate::config::Hooks;

/// How many events may wait for the hook; more are dropped (and counted).
const QUEUE: usize = 256;

/// One change worth telling the operator's script about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `claim`, `release`, `standby`, `fault`, `in_service` or `backend`: the first argument
    /// and `VIPD_EVENT`.
    pub kind: &'static str,
    /// Extra `VIPD_*` variables (VIP, EPOCH, BACKEND, STATE, REASON, ...).
    pub env: Vec<(&'static str, String)>,
}

/// Outcomes of the hook's runs, for metrics and status.
#[derive(Debug, Default)]
pub struct HookStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub timed_out: AtomicU64,
    pub dropped: AtomicU64,
    /// The last failure, for status.
    pub last_failure: Mutex<Option<String>>,
}

/// Handle of the hook runner; without a configured hook, events are ignored.
pub struct Notifier {
    tx: mpsc::Sender<(Hooks, Event)>,
    hooks: Hooks,
    node: String,
    pub stats: Arc<HookStats>,
}

impl Notifier {
    pub fn spawn(hooks: Hooks, node: String) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(HookStats::default());
        tokio::spawn(run(rx, stats.clone()));
        Self {
            tx,
            hooks,
            node,
            stats,
        }
    }

    /// A reload's `[hooks]`: events from now on use it.
    pub fn reconfigure(&mut self, hooks: Hooks) {
        self.hooks = hooks;
    }

    pub fn notify(&self, mut event: Event) {
        if self.hooks.notify.is_none() {
            return;
        }
        event.env.push(("VIPD_NODE", self.node.clone()));
        let ms = crate::app::unix_ms();
        event.env.push(("VIPD_TIME_MS", ms.to_string()));
        if self.tx.try_send((self.hooks.clone(), event)).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn run(mut rx: mpsc::Receiver<(Hooks, Event)>, stats: Arc<HookStats>) {
    while let Some((hooks, event)) = rx.recv().await {
        let Some(argv) = hooks.notify.as_ref() else {
            continue;
        };
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .arg(event.kind)
            .env("VIPD_EVENT", event.kind);
        cmd.envs(event.env.iter().map(|(k, v)| (*k, v)));
        cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
        let run = tokio::time::timeout(hooks.notify_timeout, cmd.status()).await;
        let failure = match run {
            Ok(Ok(s)) if s.success() => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(Ok(s)) => format!("{} exited with {s}", argv[0]),
            Ok(Err(e)) => format!("{} could not run: {e}", argv[0]),
            Err(_) => {
                stats.timed_out.fetch_add(1, Ordering::Relaxed);
                format!("{} killed after {:?}", argv[0], hooks.notify_timeout)
            }
        };
        if !failure.contains("killed") {
            stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        tracing::warn!(event = event.kind, "notify hook failed: {failure}");
        *stats.last_failure.lock().expect("hook stats") =
            Some(format!("{}: {failure}", event.kind));
    }
}
