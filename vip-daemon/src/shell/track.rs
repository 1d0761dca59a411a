//! `[track]` conditions, watched off the loop: each tracked interface's link carrier
//! (`IFF_RUNNING` by ioctl, every 100 ms: sysfs shows the namespace it was mounted in, which
//! need not be vipd's; a missing interface counts as down) and each track script's exit
//! status (every `interval`, killed after `timeout`). Raw results go to the loop, which
//! applies rise/fall to scripts.
use std::time::Duration;

use tokio::{sync::mpsc, task::JoinHandle};

use crate::config::Track;

const CARRIER_EVERY: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackEvent {
    /// The interface's carrier changed (and once at start).
    Carrier { iface: String, up: bool },
    /// One run of a script: passed or not, and why not.
    Script {
        name: String,
        ok: bool,
        detail: String,
    },
}

/// The running watchers; dropped (aborted) by a reload before new ones start.
pub struct Watchers(Vec<JoinHandle<()>>);

impl Drop for Watchers {
    fn drop(&mut self) {
        self.0.iter().for_each(JoinHandle::abort);
    }
}

/// Whether `iface` is up with a link carrier now (`IFF_UP` and `IFF_RUNNING`, which the
/// kernel sets while the operational state is up), in this thread's network namespace.
pub fn carrier(iface: &str) -> bool {
    let want = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    crate::shell::vipaddr::ifreq(iface, libc::SIOCGIFFLAGS)
        .is_some_and(|req| unsafe { req.ifr_ifru.ifru_flags } & want == want)
}

/// Starts the watchers; scripts run with `VIPD_NODE` set to this node's name.
pub fn spawn(track: &Track, node: &str, tx: mpsc::Sender<TrackEvent>) -> Watchers {
    let mut tasks = Vec::new();
    for iface in track.interfaces.clone() {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = None;
            let mut tick = tokio::time::interval(CARRIER_EVERY);
            loop {
                tick.tick().await;
                let up = carrier(&iface);
                if last.replace(up) != Some(up) {
                    let iface = iface.clone();
                    if tx.send(TrackEvent::Carrier { iface, up }).await.is_err() {
                        return;
                    }
                }
            }
        }));
    }
    for script in track.scripts.clone() {
        let (tx, node) = (tx.clone(), node.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(script.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let mut cmd = tokio::process::Command::new(&script.command[0]);
                cmd.args(&script.command[1..]).kill_on_drop(true);
                cmd.env("VIPD_NODE", &node);
                cmd.stdin(std::process::Stdio::null());
                cmd.stdout(std::process::Stdio::null());
                let (ok, detail) = match tokio::time::timeout(script.timeout, cmd.status()).await {
                    Ok(Ok(s)) if s.success() => (true, String::new()),
                    Ok(Ok(s)) => (false, format!("exited with {s}")),
                    Ok(Err(e)) => (false, format!("could not run: {e}")),
                    Err(_) => (false, format!("timed out after {:?}", script.timeout)),
                };
                let name = script.name.clone();
                if tx
                    .send(TrackEvent::Script { name, ok, detail })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }));
    }
    Watchers(tasks)
}
