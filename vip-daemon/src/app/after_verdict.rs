//! Work a verdict brings that neither its table nor the next verdict's waits for, done in
//! the loop's next turns once no verdict waits: the BACKENDS entry of a backend joining
//! the table (a syscall, 3-70 us here) and the verdict's log line (20-40 us). During a
//! ramp-up the next verdicts queued behind them. Each entry is recomputed from the state
//! it finds, so writing it later is the same as writing it now.
use std::collections::VecDeque;

use super::Daemon;
use crate::core::backends::{Level, Note};

#[derive(Default)]
pub struct AfterVerdict {
    /// Backend indices whose BACKENDS entry may lag (`tables::only_gains_keep_flows`).
    backends: Vec<usize>,
    /// Log lines of verdicts, in order.
    notes: VecDeque<(Level, Note)>,
}

impl AfterVerdict {
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty() && self.notes.is_empty()
    }
}

impl Daemon {
    /// Writes backend `index`'s entry in a later turn.
    pub(super) fn write_backend_soon(&mut self, index: usize) {
        if !self.after_verdict.backends.contains(&index) {
            self.after_verdict.backends.push(index);
        }
    }

    pub(super) fn log_note_soon(&mut self, level: Level, note: Note) {
        self.after_verdict.notes.push_back((level, note));
    }

    /// One piece: the entries first, then the log lines.
    pub(super) fn after_verdict_some(&mut self) {
        if let Some(index) = self.after_verdict.backends.pop() {
            self.write_backend(index);
        } else if let Some((level, note)) = self.after_verdict.notes.pop_front() {
            self.log_note(level, note);
        }
    }

    /// All of it now (before anything reads the maps' image, a reload, a stop).
    pub(super) fn settle_after_verdicts(&mut self) {
        while !self.after_verdict.is_empty() {
            self.after_verdict_some();
        }
    }
}
