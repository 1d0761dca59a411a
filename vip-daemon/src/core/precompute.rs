//! Tables computed before a verdict needs them, kept as the slots that differ.
//!
//! A Maglev build of the default 65537 slots costs about a millisecond; a verdict should be
//! live in tens of microseconds. So a worker builds, off the event loop, the tables the next
//! verdicts will most likely ask for, and the loop only patches the live table with a
//! [`SlotDiff`] when the verdict comes. Which tables (pure, here):
//! * **Predicted steps** ([`predicted_chain`]): a backend whose next probe will flip its
//!   verdict if its last result repeats (one success short of `rise`, one failure short of
//!   `fall`) will most likely flip at its next probe, whose time the prober announces. The
//!   chain holds the cumulative tables in that order, each a step from the one before, so a
//!   ramp-up of ten backends costs ten builds, not one per backend per verdict.
//! * **Singles** ([`singles`]): the table without each live backend, for the verdicts nobody
//!   can predict (a refused connection with `fall = 1`, a lost next hop or socket).
//!
//! A step applies only to the exact weights it was computed from ([`Steps::find`]), so a
//! stale or out-of-order prediction is a miss (the loop builds), never a wrong table.
//!
//! Memory: a step stores only the slots that differ, as varint slot gaps and 16-bit indices
//! into a small palette of backend indices: ~3 bytes per changed slot, ~20 KiB for "one of
//! ten backends fewer" at 65537 slots instead of 256 KiB for the whole table (issue 14:
//! 50 VIPs x 10 backends held 415 MiB with whole tables).
use std::time::{Duration, Instant};

/// Effective weights of a VIP's backends, in plan order (None: not in the table).
pub type Weights = Vec<Option<u32>>;

/// The slots of one table that differ from another, compactly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotDiff {
    /// Gap from the previous changed slot (the first: from slot 0), LEB128 varints.
    gaps: Vec<u8>,
    /// New value of each changed slot, as an index into `palette`.
    values: Vec<u16>,
    /// The distinct new values.
    palette: Vec<u32>,
}

impl SlotDiff {
    /// What turns `old` into `new`. None when the tables have different sizes or more than
    /// 65536 distinct new values (cannot happen below the backend limit; the caller builds).
    pub fn between(old: &[u32], new: &[u32]) -> Option<Self> {
        if old.len() != new.len() {
            return None;
        }
        let mut diff = SlotDiff::default();
        let mut last = 0usize;
        for (slot, (&o, &n)) in old.iter().zip(new).enumerate() {
            if o == n {
                continue;
            }
            let pos = match diff.palette.iter().position(|&p| p == n) {
                Some(pos) => pos,
                None => {
                    diff.palette.push(n);
                    diff.palette.len() - 1
                }
            };
            diff.values.push(u16::try_from(pos).ok()?);
            push_varint(&mut diff.gaps, (slot - last) as u64);
            last = slot;
        }
        diff.gaps.shrink_to_fit();
        diff.values.shrink_to_fit();
        Some(diff)
    }

    /// Patches `table` (the `old` of [`SlotDiff::between`]) into the `new` one.
    pub fn apply(&self, table: &mut [u32]) {
        self.changes().for_each(|(slot, v)| table[slot] = v);
    }

    /// (slot, new value) of each changed slot, in slot order.
    pub fn changes(&self) -> impl Iterator<Item = (usize, u32)> + '_ {
        let mut slot = 0usize;
        let mut gaps = self.gaps.as_slice();
        self.values.iter().map(move |&v| {
            slot += read_varint(&mut gaps) as usize;
            (slot, self.palette[v as usize])
        })
    }

    /// Applies the next changes from `at`, at most `max` of them, through `f(slot, value)`;
    /// whether the diff is done. Resumable: a large diff is applied a piece per turn of the
    /// loop, so that a verdict never waits behind all of it.
    pub fn apply_some(
        &self,
        at: &mut DiffCursor,
        max: usize,
        mut f: impl FnMut(usize, u32),
    ) -> bool {
        let end = self.values.len().min(at.value.saturating_add(max));
        let mut gaps = &self.gaps[at.gap_byte..];
        for &v in &self.values[at.value..end] {
            at.slot += read_varint(&mut gaps) as usize;
            f(at.slot, self.palette[v as usize]);
        }
        at.gap_byte = self.gaps.len() - gaps.len();
        at.value = end;
        end == self.values.len()
    }

    /// Slots changed.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.gaps.capacity() + 2 * self.values.capacity() + 4 * self.palette.capacity()
    }
}

/// Where [`SlotDiff::apply_some`] goes on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiffCursor {
    gap_byte: usize,
    value: usize,
    slot: usize,
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(input: &mut &[u8]) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    while let Some((&b, rest)) = input.split_first() {
        *input = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    v
}

/// One precomputed change of a VIP's table: from the table of `from` to that of `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub from: Weights,
    pub to: Weights,
    pub diff: SlotDiff,
}

/// A VIP's precomputed steps: the predicted chain, the singles of the current table, and
/// the first two predicted verdicts in the other order ([`swapped_pair`]).
#[derive(Clone, Debug, Default)]
pub struct Steps {
    pub chain: Vec<Step>,
    pub singles: Vec<Step>,
    pub swaps: Vec<Step>,
}

impl Steps {
    /// The step from the live table's weights to `to`, if one was computed.
    pub fn find(&self, from: &Weights, to: &Weights) -> Option<&Step> {
        self.chain
            .iter()
            .chain(&self.singles)
            .chain(&self.swaps)
            .find(|s| &s.from == from && &s.to == to)
    }

    /// Takes the step from `from` to `to` out, if one was computed.
    pub fn take(&mut self, from: &Weights, to: &Weights) -> Option<Step> {
        let matches = |s: &Step| &s.from == from && &s.to == to;
        if let Some(i) = self.chain.iter().position(matches) {
            return Some(self.chain.remove(i));
        }
        if let Some(i) = self.singles.iter().position(matches) {
            return Some(self.singles.swap_remove(i));
        }
        let i = self.swaps.iter().position(matches)?;
        Some(self.swaps.remove(i))
    }

    /// After the table of `now` went live: the steps that still start from it or from a
    /// later step of the chain stay; the rest cannot apply any more.
    /// Returns the steps dropped (for the caller to free where it likes).
    pub fn advance(&mut self, now: &Weights) -> Vec<Step> {
        let first = (self.chain.iter().position(|s| &s.from == now)).unwrap_or(self.chain.len());
        let mut stale: Vec<Step> = self.chain.drain(..first).collect();
        let (keep, gone) = std::mem::take(&mut self.singles)
            .into_iter()
            .partition(|s| &s.from == now);
        self.singles = keep;
        stale.extend::<Vec<Step>>(gone);
        // A swap's second step starts where its first one ends.
        let (keep, gone) = std::mem::take(&mut self.swaps)
            .into_iter()
            .partition(|s| &s.from == now);
        self.swaps = keep;
        stale.extend::<Vec<Step>>(gone);
        stale
    }

    /// The weights at the end of the chain (where a longer chain continues), else `basis`.
    pub fn chain_end<'a>(&'a self, basis: &'a Weights) -> &'a Weights {
        self.chain.last().map_or(basis, |s| &s.to)
    }

    pub fn bytes(&self) -> usize {
        self.chain
            .iter()
            .chain(&self.singles)
            .chain(&self.swaps)
            .map(|s| s.diff.bytes() + 8 * (s.from.capacity() + s.to.capacity()))
            .sum()
    }
}

/// A verdict expected at a backend's next probe: position in the VIP's backend list, when,
/// and the weight the backend will have in the table then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    pub pos: usize,
    pub at: Instant,
    pub weight: Option<u32>,
}

/// The cumulative weights after each expected verdict, in the order they are expected
/// (ties by position), skipping those that would not change the table.
pub fn predicted_chain(basis: &Weights, expected: &[Expected]) -> Vec<Weights> {
    let mut current = basis.clone();
    let mut chain = Vec::new();
    for e in changes_in_order(basis, expected) {
        current[e.pos] = e.weight;
        chain.push(current.clone());
    }
    chain
}

/// The expected verdicts that would change `basis` (one per backend), in the order they
/// are expected (ties by position).
fn changes_in_order<'a>(basis: &Weights, expected: &'a [Expected]) -> Vec<&'a Expected> {
    let mut order: Vec<&Expected> = (expected.iter())
        .filter(|e| e.pos < basis.len() && basis[e.pos] != e.weight)
        .collect();
    order.sort_by_key(|e| (e.at, e.pos));
    order
}

/// Verdicts expected this close together may come in either order: a probe's round trip
/// varies by more than the starts of two probes this close differ.
pub const SWAP_WINDOW: Duration = Duration::from_millis(5);

/// The first two verdicts of [`predicted_chain`] in the other order, when they are expected
/// within [`SWAP_WINDOW`] of each other: the weights after the second one alone, then after
/// both (the chain's second). Two backends of a VIP probed within a millisecond answered in
/// the other order about once per ramp-up of 500 verdicts, and each time both verdicts
/// found no step computed (two whole builds, 1-2 ms each).
pub fn swapped_pair(basis: &Weights, expected: &[Expected]) -> Option<Vec<Weights>> {
    let changes = changes_in_order(basis, expected);
    let (&first, &second) = (changes.first()?, changes.get(1)?);
    if second.at.saturating_duration_since(first.at) > SWAP_WINDOW {
        return None;
    }
    let mut alone = basis.clone();
    alone[second.pos] = second.weight;
    let mut both = alone.clone();
    both[first.pos] = first.weight;
    Some(vec![alone, both])
}

/// The weights without each backend in the table, one per such backend.
pub fn singles(basis: &Weights) -> Vec<Weights> {
    (0..basis.len())
        .filter(|&i| basis[i].is_some())
        .map(|i| {
            let mut w = basis.clone();
            w[i] = None;
            w
        })
        .collect()
}

/// How much of the chain already computed is still wanted: the length of the prefix of
/// `have` whose targets are the first of `wanted`. The rest of `have` is stale; the rest of
/// `wanted` is still to compute, continuing from the last shared step (or the basis).
pub fn shared_chain(have: &[Step], wanted: &[Weights]) -> usize {
    have.iter()
        .zip(wanted)
        .take_while(|(s, w)| &s.to == *w)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::maglev::{self, MaglevBackend};
    use std::time::Duration;

    fn table(weights: &Weights) -> Vec<u32> {
        let members: Vec<MaglevBackend> = weights
            .iter()
            .enumerate()
            .filter_map(|(i, w)| {
                w.map(|weight| MaglevBackend {
                    id: i as u32,
                    weight,
                })
            })
            .collect();
        maglev::build(7, &members, 65537).unwrap()
    }

    #[test]
    fn a_diff_turns_the_old_table_into_the_new_one_in_a_fraction_of_its_size() {
        let all: Weights = vec![Some(1); 10];
        let mut fewer = all.clone();
        fewer[3] = None;
        let (old, new) = (table(&all), table(&fewer));
        let diff = SlotDiff::between(&old, &new).unwrap();
        let mut patched = old.clone();
        diff.apply(&mut patched);
        assert_eq!(patched, new);
        assert_eq!(diff.len(), maglev::diff(&old, &new).len());
        // ~10 % of the slots change; at ~3 bytes each, under a tenth of a whole table.
        assert!(diff.bytes() < old.len() * 4 / 10, "{} bytes", diff.bytes());
        assert!(SlotDiff::between(&old, &new[1..]).is_none());
        assert!(SlotDiff::between(&old, &old).unwrap().is_empty());
    }

    #[test]
    fn a_diff_applied_a_piece_at_a_time_equals_it_applied_at_once() {
        let mut fewer: Weights = vec![Some(1); 10];
        fewer[3] = None;
        let (old, new) = (table(&vec![Some(1); 10]), table(&fewer));
        let diff = SlotDiff::between(&old, &new).unwrap();
        for piece in [1, 7, 4096, usize::MAX] {
            let (mut patched, mut at, mut turns) = (old.clone(), DiffCursor::default(), 0);
            while !diff.apply_some(&mut at, piece, |slot, v| patched[slot] = v) {
                turns += 1;
            }
            assert_eq!(patched, new, "pieces of {piece}");
            assert_eq!(turns, diff.len().div_ceil(piece.min(diff.len())) - 1);
            // Done stays done.
            assert!(diff.apply_some(&mut at, piece, |_, _| panic!("applied twice")));
        }
    }

    #[test]
    fn large_gaps_and_the_last_slot_round_trip() {
        let old = vec![0u32; 70_000];
        let mut new = old.clone();
        new[0] = 5;
        new[300] = 9;
        new[69_999] = 5;
        let diff = SlotDiff::between(&old, &new).unwrap();
        let mut patched = old;
        diff.apply(&mut patched);
        assert_eq!(patched, new);
    }

    #[test]
    fn the_chain_follows_the_expected_order_and_skips_no_ops() {
        let t0 = Instant::now();
        let basis: Weights = vec![None, None, Some(1)];
        let at = |ms| t0 + Duration::from_millis(ms);
        let expected = [
            Expected {
                pos: 1,
                at: at(20),
                weight: Some(1),
            },
            Expected {
                pos: 0,
                at: at(10),
                weight: Some(2),
            },
            // Already so: no step.
            Expected {
                pos: 2,
                at: at(5),
                weight: Some(1),
            },
        ];
        let chain = predicted_chain(&basis, &expected);
        assert_eq!(
            chain,
            vec![
                vec![Some(2), None, Some(1)],
                vec![Some(2), Some(1), Some(1)]
            ]
        );
    }

    #[test]
    fn steps_apply_only_from_their_exact_basis_and_survive_along_the_chain() {
        let basis: Weights = vec![None, None];
        let a: Weights = vec![Some(1), None];
        let ab: Weights = vec![Some(1), Some(1)];
        let step = |from: &Weights, to: &Weights| Step {
            from: from.clone(),
            to: to.clone(),
            diff: SlotDiff::between(&table(from), &table(to)).unwrap(),
        };
        let mut steps = Steps {
            chain: vec![step(&basis, &a), step(&a, &ab)],
            singles: vec![],
            swaps: vec![],
        };
        assert!(steps.find(&basis, &a).is_some());
        // Out of order (b before a): a miss, not a wrong table.
        assert!(steps.find(&basis, &vec![None, Some(1)]).is_none());
        steps.advance(&a);
        assert_eq!(steps.chain.len(), 1);
        assert!(steps.find(&a, &ab).is_some());
        assert_eq!(
            shared_chain(&steps.chain, &[ab.clone(), vec![Some(2), Some(1)]]),
            1
        );
        assert_eq!(steps.chain_end(&a), &ab);
        assert_eq!(shared_chain(&steps.chain, &[vec![Some(2), None]]), 0);
        // Something else went live: nothing applies any more.
        steps.advance(&vec![None, Some(1)]);
        assert!(steps.chain.is_empty());
    }

    #[test]
    fn two_verdicts_expected_close_together_are_also_prepared_in_the_other_order() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let basis: Weights = vec![None, None, Some(1)];
        let a = |ms| Expected {
            pos: 0,
            at: at(ms),
            weight: Some(1),
        };
        let b = |ms| Expected {
            pos: 1,
            at: at(ms),
            weight: Some(1),
        };
        // Already so: not a verdict that changes the table.
        let c = Expected {
            pos: 2,
            at: at(0),
            weight: Some(1),
        };
        let (alone, both) = (
            vec![None, Some(1), Some(1)],
            vec![Some(1), Some(1), Some(1)],
        );
        assert_eq!(
            swapped_pair(&basis, &[b(11), c, a(10)]),
            Some(vec![alone.clone(), both.clone()])
        );
        assert_eq!(predicted_chain(&basis, &[b(11), c, a(10)])[1], both);
        // Far enough apart, or a single one: the chain's order only.
        let apart = 10 + SWAP_WINDOW.as_millis() as u64 + 1;
        assert_eq!(swapped_pair(&basis, &[a(10), b(apart)]), None);
        assert_eq!(swapped_pair(&basis, &[a(10), c]), None);

        // b came first: its step is a swap, then a's from there; the chain is stale.
        let step = |from: &Weights, to: &Weights| Step {
            from: from.clone(),
            to: to.clone(),
            diff: SlotDiff::between(&table(from), &table(to)).unwrap(),
        };
        let first = vec![Some(1), None, Some(1)];
        let mut steps = Steps {
            chain: vec![step(&basis, &first), step(&first, &both)],
            singles: vec![],
            swaps: vec![step(&basis, &alone), step(&alone, &both)],
        };
        let taken = steps.take(&basis, &alone).expect("the swap's first step");
        let mut live = table(&basis);
        taken.diff.apply(&mut live);
        assert_eq!(live, table(&alone));
        let stale = steps.advance(&alone);
        assert_eq!(stale.len(), 2, "the chain's steps");
        let taken = steps.take(&alone, &both).expect("the swap's second step");
        taken.diff.apply(&mut live);
        assert_eq!(live, table(&both));
    }

    #[test]
    fn singles_drop_each_backend_in_the_table() {
        let basis: Weights = vec![Some(1), None, Some(3)];
        assert_eq!(
            singles(&basis),
            vec![vec![None, None, Some(3)], vec![Some(1), None, None]]
        );
    }
}
