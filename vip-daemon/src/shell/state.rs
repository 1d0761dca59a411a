//! The state file: what a restarted vipd needs to carry on exactly where the last one
//! stopped. Where each VIP and backend lives in the pinned maps (and the limits they were
//! sized with), each backend's verdict, and the operator's admin state. JSON, written to a
//! temporary file and renamed over the old one, so a crash leaves the old file or the new one.
//!
//! Path: `<node.state_dir>/<last part of node.pin_dir>.state.json` (by default
//! `/var/lib/vip-fabric/vip-fabric.state.json`), so that several vipds with their own pin
//! directories on one host (tests, labs) never share one.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, Limits},
    core::{
        admin::Stamp,
        alloc::{Allocation, BackendId},
    },
};

/// Bumped when the file's meaning changes; a file of another version is ignored.
const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    pub format: u32,
    /// `Settings::layout_id` of the maps `alloc` describes.
    pub layout_id: u32,
    pub limits: Limits,
    pub alloc: Allocation,
    pub backends: Vec<SavedBackend>,
    /// `vipd node standby` in force since (Unix ms): a restart keeps the node out of service.
    #[serde(default)]
    pub standby_since_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedBackend {
    pub id: BackendId,
    pub up: bool,
    /// "enabled", "drained" or "disabled".
    pub admin: String,
    /// Weight set through the control socket, when it differs from the file's.
    pub weight: Option<u32>,
    /// Primary/backup: this backend holds the VIP's slot and keeps it while eligible; for
    /// maps created afresh, which hold no live table to read it back from.
    #[serde(default)]
    pub writer: bool,
    /// While drained: when the drain started (Unix ms), so that its timeout runs on.
    #[serde(default)]
    pub drain_started_ms: Option<u64>,
    /// `drain --timeout` (ms), when given.
    #[serde(default)]
    pub drain_timeout_ms: Option<u64>,
    /// The stamp of the admin write that set `admin`, `weight` and the drain (`core::admin`):
    /// after a restart the cluster's newer writes win over it.
    #[serde(default)]
    pub admin_stamp: Option<Stamp>,
    /// With `writer`: the stamp of the write that made this backend the writer, if one did.
    #[serde(default)]
    pub writer_stamp: Option<Stamp>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl SavedState {
    pub fn new(layout_id: u32, limits: Limits, alloc: Allocation) -> Self {
        Self {
            format: FORMAT,
            layout_id,
            limits,
            alloc,
            backends: Vec::new(),
            standby_since_ms: None,
        }
    }

    pub fn backend(&self, id: &BackendId) -> Option<&SavedBackend> {
        self.backends.iter().find(|b| &b.id == id)
    }
}

pub fn path(config: &Config) -> PathBuf {
    let stem = config
        .node
        .pin_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("vip-fabric");
    config.node.state_dir.join(format!("{stem}.state.json"))
}

/// The saved state, or None when there is none (first start) or it is of another format.
pub fn load(path: &Path) -> Result<Option<SavedState>, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Io {
                path: path.into(),
                source,
            })
        }
    };
    let state: SavedState = serde_json::from_str(&text).map_err(|source| StateError::Parse {
        path: path.into(),
        source,
    })?;
    Ok((state.format == FORMAT).then_some(state))
}

pub fn save(path: &Path, state: &SavedState) -> Result<(), StateError> {
    write(
        path,
        &serde_json::to_vec_pretty(state).expect("plain data serializes"),
    )
}

fn write(path: &Path, text: &[u8]) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.into(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Writes state files on a thread of its own, newest first-come: the event loop hands over
/// the state and goes on (a write of 500 backends took ~10 ms, and a burst of verdicts wrote once
/// each). A write still pending when a newer one comes is replaced by it; [`Saver::save_now`]
/// writes at once and no older write lands after it (sequence numbers).
#[derive(Clone)]
pub struct Saver {
    shared: std::sync::Arc<SaverShared>,
}

#[derive(Default)]
struct SaverShared {
    /// (sequence, path, state) of the newest write not started yet.
    pending: std::sync::Mutex<Option<(u64, PathBuf, SavedState)>>,
    ready: std::sync::Condvar,
    /// Held while writing: the sequence of the newest write done.
    written: std::sync::Mutex<u64>,
    next_seq: std::sync::atomic::AtomicU64,
}

impl SaverShared {
    fn write_ordered(&self, seq: u64, path: &Path, text: &[u8]) -> Result<(), StateError> {
        let mut written = self.written.lock().expect("state saver");
        if *written > seq {
            return Ok(()); // a newer state is on disk already
        }
        write(path, text)?;
        *written = seq;
        Ok(())
    }

    fn seq(&self) -> u64 {
        self.next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }
}

impl Saver {
    pub fn spawn() -> Self {
        let shared = std::sync::Arc::new(SaverShared::default());
        let theirs = std::sync::Arc::clone(&shared);
        std::thread::Builder::new()
            .name("vipd-state".into())
            .spawn(move || {
                crate::shell::precompute::lower_priority();
                loop {
                    let (seq, path, state) = {
                        let mut next = theirs.pending.lock().expect("state saver");
                        loop {
                            if let Some(job) = next.take() {
                                break job;
                            }
                            next = theirs.ready.wait(next).expect("state saver");
                        }
                    };
                    let text = serde_json::to_vec_pretty(&state).expect("plain data serializes");
                    if let Err(e) = theirs.write_ordered(seq, &path, &text) {
                        tracing::warn!(error = %e, "could not save the state file");
                    }
                }
            })
            .expect("spawn the state saver thread");
        Self { shared }
    }

    /// Queues the write; the thread serialises and writes it.
    pub fn save(&self, path: &Path, state: SavedState) {
        let seq = self.shared.seq();
        *self.shared.pending.lock().expect("state saver") = Some((seq, path.to_path_buf(), state));
        self.shared.ready.notify_one();
    }

    /// A write of `state` ordered as of now (a later `save` or `save_now` wins over it),
    /// to run on another thread: whoever must see it on disk waits for it there, not the
    /// event loop.
    pub fn save_ordered(
        &self,
        path: &Path,
        state: SavedState,
    ) -> impl FnOnce() -> Result<(), StateError> + Send + 'static {
        let (seq, path, shared) = (self.shared.seq(), path.to_path_buf(), self.shared.clone());
        move || {
            let text = serde_json::to_vec_pretty(&state).expect("plain data serializes");
            shared.write_ordered(seq, &path, &text)
        }
    }

    /// Writes now (operator commands, stopping): on disk when it returns.
    pub fn save_now(&self, path: &Path, state: &SavedState) -> Result<(), StateError> {
        let text = serde_json::to_vec_pretty(state).expect("plain data serializes");
        let seq = self.shared.seq();
        self.shared.write_ordered(seq, path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = std::env::temp_dir().join(format!("vipd-state-{}", std::process::id()));
        let path = dir.join("x.state.json");
        assert!(load(&path).unwrap().is_none());
        let limits = Limits {
            vips: 4,
            backends: 8,
            table_slots: 1000,
            flows: 64,
        };
        let mut s = SavedState::new(7, limits, Allocation::default());
        s.backends.push(SavedBackend {
            id: BackendId {
                vip: "web".into(),
                name: "a".into(),
                address: "192.0.2.1".parse().unwrap(),
            },
            up: true,
            admin: "drained".into(),
            weight: Some(3),
            writer: true,
            drain_started_ms: Some(1_700_000_000_000),
            drain_timeout_ms: Some(30_000),
            admin_stamp: Some(Stamp {
                at: 1_700_000_000_001,
                origin: "ctl2".into(),
            }),
            writer_stamp: None,
        });
        save(&path, &s).unwrap();
        assert_eq!(load(&path).unwrap(), Some(s));
        // A file of a vipd without writer and drain fields still reads.
        let mut old: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for field in [
            "writer",
            "drain_started_ms",
            "drain_timeout_ms",
            "admin_stamp",
        ] {
            old["backends"][0].as_object_mut().unwrap().remove(field);
        }
        std::fs::write(&path, old.to_string()).unwrap();
        let back = load(&path).unwrap().unwrap();
        assert_eq!(
            (back.backends[0].writer, back.backends[0].drain_started_ms),
            (false, None)
        );
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(load(&path), Err(StateError::Parse { .. })));
        let _ = std::fs::remove_dir_all(dir);
    }
}
