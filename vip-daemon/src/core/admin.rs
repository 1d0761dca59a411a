//! Operator state the whole cluster agrees on: one last-writer-wins register per subject (a
//! backend's admin state and weight, a primary/backup VIP's writer), each write stamped by a
//! hybrid logical clock.
//!
//! Pure: the shell passes wall-clock milliseconds in and gossips the writes this returns.
//!
//! # Rules, and the test that shows each
//! * A register's value is its write with the highest [`Stamp`] (time, then origin name): a
//!   join-semilattice, so writes merged in any order, twice, or re-sent by a third node end
//!   in the same value on every node (`any_order_and_repeats_converge`).
//! * A local write is stamped `max(now, newest stamp seen + 1)`: an edit made after seeing
//!   another node's edit wins whatever the two wall clocks say (`later_edit_wins_over_a_clock_ahead`).
//! * Equal times are ordered by origin name, so two nodes editing one subject in the same
//!   millisecond still agree (`same_millisecond_ties_break_by_origin`).
//! * The state file keeps the winning writes with their stamps; a restarted node seeds its
//!   book from them, so an old write it re-sends never beats a newer one the cluster made
//!   while it was down (`a_restored_write_loses_to_a_newer_one`).
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// When a write was made (Unix ms, advanced past every stamp seen) and by which node.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub at: u64,
    pub origin: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write<V> {
    pub stamp: Stamp,
    pub value: V,
}

/// Registers keyed by subject, and the clock that stamps this node's writes.
#[derive(Clone, Debug)]
pub struct Book<K, V> {
    registers: BTreeMap<K, Write<V>>,
    /// The newest time stamped or seen.
    clock: u64,
}

impl<K, V> Default for Book<K, V> {
    fn default() -> Self {
        Self {
            registers: BTreeMap::new(),
            clock: 0,
        }
    }
}

impl<K: Ord + Clone, V: Clone + PartialEq> Book<K, V> {
    /// This node sets `key` to `value` at `now_ms`: the write to gossip.
    pub fn set(&mut self, key: K, value: V, me: &str, now_ms: u64) -> Write<V> {
        self.clock = now_ms.max(self.clock + 1);
        let write = Write {
            stamp: Stamp {
                at: self.clock,
                origin: me.to_string(),
            },
            value,
        };
        self.registers.insert(key, write.clone());
        write
    }

    /// A write from gossip or the state file. Returns the new value when it changed what the
    /// register says (a newer write of the same value changes nothing to apply).
    pub fn merge(&mut self, key: K, write: Write<V>) -> Option<V> {
        self.clock = self.clock.max(write.stamp.at);
        match self.registers.get(&key) {
            Some(old) if old.stamp >= write.stamp => None,
            old => {
                let changed = old.is_none_or(|o| o.value != write.value);
                let value = write.value.clone();
                self.registers.insert(key, write);
                changed.then_some(value)
            }
        }
    }

    /// Whether nothing was ever written (a single node whose operator changed nothing).
    pub fn is_empty(&self) -> bool {
        self.registers.is_empty()
    }

    pub fn get(&self, key: &K) -> Option<&Write<V>> {
        self.registers.get(key)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &Write<V>)> {
        self.registers.iter()
    }

    /// Forgets the subjects `keep` rejects (removed from the config by a reload).
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.registers.retain(|k, _| keep(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

    fn w(at: u64, origin: &str, value: u32) -> Write<u32> {
        Write {
            stamp: Stamp {
                at,
                origin: origin.into(),
            },
            value,
        }
    }

    #[test]
    fn any_order_and_repeats_converge() {
        let writes = [
            w(10, "ctl1", 1),
            w(12, "ctl2", 2),
            w(12, "ctl3", 3),
            w(11, "ctl3", 4),
            w(12, "ctl2", 2),
        ];
        for seed in 0..200 {
            let mut order = writes.to_vec();
            order.extend(writes.iter().cloned());
            order.shuffle(&mut StdRng::seed_from_u64(seed));
            let mut book = Book::default();
            for x in order {
                book.merge("web/a", x);
            }
            assert_eq!(book.get(&"web/a"), Some(&w(12, "ctl3", 3)), "seed {seed}");
        }
    }

    #[test]
    fn later_edit_wins_over_a_clock_ahead() {
        // ctl2's clock runs 5 s ahead; ctl1 drains after seeing ctl2's enable.
        let mut ctl1 = Book::default();
        let mut ctl2 = Book::default();
        let enable = ctl2.set("web/a", 0, "ctl2", 105_000);
        ctl1.merge("web/a", enable.clone());
        let drain = ctl1.set("web/a", 1, "ctl1", 100_001);
        assert!(drain.stamp > enable.stamp);
        assert_eq!(ctl2.merge("web/a", drain), Some(1));
        assert_eq!(ctl1.get(&"web/a").unwrap().value, 1);
    }

    #[test]
    fn same_millisecond_ties_break_by_origin() {
        let mut a = Book::default();
        let mut b = Book::default();
        let from_a = a.set("db", 1, "ctl1", 50);
        let from_b = b.set("db", 2, "ctl2", 50);
        assert_eq!(a.merge("db", from_b.clone()), Some(2));
        assert_eq!(b.merge("db", from_a), None);
        assert_eq!(a.get(&"db"), b.get(&"db"));
        assert_eq!(a.get(&"db"), Some(&from_b));
    }

    #[test]
    fn a_restored_write_loses_to_a_newer_one() {
        let saved = w(100, "ctl1", 1);
        let mut restarted = Book::default();
        restarted.merge("web/a", saved.clone());
        // The cluster enabled it again while ctl1 was down.
        assert_eq!(restarted.merge("web/a", w(200, "ctl2", 0)), Some(0));
        // ctl1 re-sends its old write: everyone ignores it.
        let mut other = Book::default();
        other.merge("web/a", w(200, "ctl2", 0));
        assert_eq!(other.merge("web/a", saved), None);
        // And its next edit is stamped after everything it saw, even with a clock behind.
        assert!(restarted.set("web/a", 2, "ctl1", 150).stamp.at > 200);
    }

    #[test]
    fn same_value_newer_stamp_is_kept_but_not_reapplied() {
        let mut book = Book::default();
        assert_eq!(book.merge("k", w(1, "a", 7)), Some(7));
        assert_eq!(book.merge("k", w(2, "b", 7)), None);
        assert_eq!(book.get(&"k").unwrap().stamp.at, 2);
        book.retain(|_| false);
        assert!(book.get(&"k").is_none());
    }
}
