//! Publishing whole Maglev tables atomically. `SLOTS` and `ACTIVE` are `BPF_F_MMAPABLE`
//! arrays mapped into vipd: a publish copies the new table into the VIP's inactive
//! generation and then flips the VIP's 32-bit `ACTIVE` word with one release store. The XDP
//! program reads that word once per packet, so a packet sees the old table or the new one,
//! never a mix. No per-element syscalls.
use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData};

use super::{DataplaneError, TableRegion};
use crate::core::precompute::DiffCursor;

/// Words per `ACTIVE` element (a u32 value in an 8-byte element).
const ACTIVE_STRIDE: usize = vip_common::maps::ARRAY_ELEMENT_BYTES / 4;

/// A generation just retired may still be read by packets in flight; XDP runs to completion
/// in well under this, so a retired generation is not rewritten sooner.
pub const RETIRE_GRACE: Duration = Duration::from_millis(1);

/// An mmap of a `BPF_F_MMAPABLE` array map viewed as flat `u32` words. The kernel stores each
/// element in 8 bytes, so a `u32`-valued array has one word of padding per element and a
/// `[u32; 2]`-valued one is dense.
struct MappedArray {
    _map: MapData,
    ptr: NonNull<u32>,
    /// Words in the mapping (2 per element).
    len: usize,
    bytes: usize,
}

// SAFETY: the mapping is plain shared memory; all access goes through &mut self or atomics.
unsafe impl Send for MappedArray {}

impl MappedArray {
    fn new(map: Map, name: &'static str) -> Result<Self, DataplaneError> {
        let Map::Array(data) = map else {
            return Err(DataplaneError::MissingMap(name));
        };
        let elements = data.info()?.max_entries() as usize;
        let len = elements * vip_common::maps::ARRAY_ELEMENT_BYTES / 4;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let bytes = (len * 4).div_ceil(page) * page;
        // SAFETY: a shared read/write mapping of a BPF_F_MMAPABLE array of `len` u32s.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                // Populated now: a first touch of each page later faulted inside a write ahead
                // (hundreds of microseconds for a table's 128 pages, verdicts waiting).
                libc::MAP_SHARED | libc::MAP_POPULATE,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(DataplaneError::Mmap {
                map: name,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            _map: data,
            ptr: NonNull::new(ptr.cast()).expect("mmap returned null"),
            len,
            bytes,
        })
    }

    fn slice_mut(&mut self) -> &mut [u32] {
        // SAFETY: the mapping holds `len` u32s and lives as long as self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The word at `index` (a word index, not an element index).
    fn word(&self, index: usize) -> &AtomicU32 {
        assert!(index < self.len);
        // SAFETY: in bounds, 4-byte aligned (page-aligned base), shared with the kernel.
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(index)) }
    }
}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what new() mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.bytes) };
    }
}

/// Writes tables through the mmaps of `SLOTS` and `ACTIVE`.
pub struct TablePublisher {
    slots: MappedArray,
    active: MappedArray,
    retired_at: std::collections::HashMap<u32, Instant>,
    /// By VIP: the slots where the inactive generation differs from the live one, when known
    /// (the last publish was a patch); see [`TablePublisher::publish_patched`].
    behind: std::collections::HashMap<u32, Vec<u32>>,
    /// By VIP: the token of the step its inactive generation holds, written ahead
    /// ([`TablePublisher::prepare`]); any other write of that generation drops it.
    prepared: std::collections::HashMap<u32, u64>,
    /// By VIP: a write ahead under way, a piece per [`TablePublisher::prepare`].
    preparing: std::collections::HashMap<u32, Preparing>,
}

/// A write ahead under way: the inactive generation is brought up to the live one, then the
/// step's diff applied, `max` slots per call, so that the loop takes verdicts in between (a
/// whole write ahead held it for up to 650 us).
struct Preparing {
    token: u64,
    /// Slots of the inactive generation behind the live one (None: possibly all).
    behind: Option<Vec<u32>>,
    /// How many of them (or words of the whole table) are brought up to date.
    caught_up: usize,
    at: DiffCursor,
    /// The slots the diff wrote so far.
    changed: Vec<u32>,
}

/// How far [`TablePublisher::prepare`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prepare {
    /// Nothing written: the inactive generation is in its grace, or nothing is live yet.
    NotNow,
    /// A piece written; call again with the same token.
    More,
    /// Written: [`TablePublisher::publish_prepared`] with the token only flips.
    Done,
}

impl TablePublisher {
    pub(super) fn new(slots: Map, active: Map) -> Result<Self, DataplaneError> {
        Ok(Self {
            slots: MappedArray::new(slots, vip_common::maps::MAP_SLOTS)?,
            active: MappedArray::new(active, vip_common::maps::MAP_ACTIVE)?,
            retired_at: Default::default(),
            behind: Default::default(),
            prepared: Default::default(),
            preparing: Default::default(),
        })
    }

    /// The `ACTIVE` value of a VIP: the first word of its 8-byte element.
    fn active_word(&self, vip_index: u32) -> &AtomicU32 {
        self.active.word(vip_index as usize * ACTIVE_STRIDE)
    }

    /// Which generation (0 or 1) of `region` is live, or None if the VIP's word points
    /// elsewhere (never published under this layout).
    pub fn live_generation(&self, region: &TableRegion) -> Option<u32> {
        let at = self.active_word(region.vip_index).load(Ordering::Acquire);
        if at == region.base {
            Some(0)
        } else if at == region.base + region.size {
            Some(1)
        } else {
            None
        }
    }

    /// The live table of `region`, if any.
    pub fn live_table(&mut self, region: &TableRegion) -> Option<Vec<u32>> {
        let gen = self.live_generation(region)?;
        let start = (region.base + gen * region.size) as usize;
        Some(self.slots.slice_mut()[start..start + region.size as usize].to_vec())
    }

    /// Whether the live table of `region` is `want`, compared in place (the self-check reads
    /// every table every run: no copy).
    pub fn live_equals(&mut self, region: &TableRegion, want: &[u32]) -> bool {
        let Some(gen) = self.live_generation(region) else {
            return false;
        };
        let start = (region.base + gen * region.size) as usize;
        self.slots.slice_mut()[start..start + region.size as usize] == *want
    }

    /// Publishes `table` for `region`: fill the inactive generation, then flip. Returns the
    /// generation now live and how long the copy and flip took (excluding any grace wait).
    pub fn publish(
        &mut self,
        region: &TableRegion,
        table: &[u32],
    ) -> Result<(u32, Duration), DataplaneError> {
        if table.len() != region.size as usize {
            return Err(DataplaneError::TableSize {
                expected: region.size,
                got: table.len(),
            });
        }
        self.behind.remove(&region.vip_index);
        self.prepared.remove(&region.vip_index);
        self.preparing.remove(&region.vip_index);
        self.publish_with(region, |next, _| next.copy_from_slice(table))
    }

    /// Writes the live table of `region` changed by `diff` into the inactive generation
    /// without making it live, at most about `max` slots per call: call again with the same
    /// `token` while it answers [`Prepare::More`]; a later
    /// [`TablePublisher::publish_prepared`] with `token` then only flips. Another token, or
    /// any publish of the VIP, abandons a write under way.
    pub fn prepare(
        &mut self,
        region: &TableRegion,
        diff: &crate::core::precompute::SlotDiff,
        token: u64,
        max: usize,
    ) -> Result<Prepare, DataplaneError> {
        let vip = region.vip_index;
        if self.live_generation(region).is_none() || self.in_grace(vip) {
            return Ok(Prepare::NotNow);
        }
        let mut p = match self.preparing.remove(&vip) {
            Some(p) if p.token == token => p,
            other => {
                self.abandon(vip, other, region.size as usize);
                self.prepared.remove(&vip);
                Preparing {
                    token,
                    // Taken: without it (an error below) the next write copies the whole table.
                    behind: self.behind.remove(&vip),
                    caught_up: 0,
                    at: DiffCursor::default(),
                    changed: Vec::with_capacity(diff.len()),
                }
            }
        };
        let (next, live) = self.generations(region)?;
        let Preparing {
            behind,
            caught_up,
            at,
            changed,
            ..
        } = &mut p;
        let behind_len = behind.as_ref().map_or(next.len(), Vec::len);
        match behind {
            // A copy: a word costs a fraction of a decoded slot.
            None => {
                let end = next.len().min(*caught_up + 8 * max);
                next[*caught_up..end].copy_from_slice(&live[*caught_up..end]);
                *caught_up = end;
            }
            Some(slots) => {
                let end = slots.len().min(*caught_up + max);
                for &s in &slots[*caught_up..end] {
                    next[s as usize] = live[s as usize];
                }
                *caught_up = end;
            }
        }
        if *caught_up == behind_len {
            let done = diff.apply_some(at, max, |slot, value| {
                next[slot] = value;
                changed.push(slot as u32);
            });
            if done {
                // The inactive generation now differs from the live one at the step's slots.
                self.behind.insert(vip, std::mem::take(changed));
                self.prepared.insert(vip, token);
                return Ok(Prepare::Done);
            }
        }
        self.preparing.insert(vip, p);
        Ok(Prepare::More)
    }

    /// Drops a write ahead under way, keeping what is known of where the inactive
    /// generation differs from the live one: the slots not yet brought up to date and those
    /// the diff wrote.
    fn abandon(&mut self, vip: u32, preparing: Option<Preparing>, size: usize) {
        let Some(p) = preparing else {
            return;
        };
        let behind = match p.behind {
            None if p.caught_up < size => None,
            None => Some(p.changed),
            Some(mut slots) => {
                slots.drain(..p.caught_up);
                slots.extend(p.changed);
                Some(slots)
            }
        };
        match behind {
            Some(slots) => self.behind.insert(vip, slots),
            None => self.behind.remove(&vip),
        };
    }

    /// Makes the generation [`TablePublisher::prepare`] wrote for `token` live: one store.
    /// None when it holds something else (nothing changed then).
    pub fn publish_prepared(&mut self, region: &TableRegion, token: u64) -> Option<u32> {
        if self.prepared.get(&region.vip_index) != Some(&token) {
            return None;
        }
        self.prepared.remove(&region.vip_index);
        let next = match self.live_generation(region)? {
            0 => 1,
            _ => 0,
        };
        let start = region.base + next * region.size;
        self.active_word(region.vip_index)
            .store(start, Ordering::Release);
        // The retired generation, the table before, differs from the new live one at the
        // step's slots: `behind` says so already.
        self.retired_at.insert(region.vip_index, Instant::now());
        Some(next)
    }

    /// (inactive generation, live generation) of `region`, writable and readable.
    fn generations(
        &mut self,
        region: &TableRegion,
    ) -> Result<(&mut [u32], &[u32]), DataplaneError> {
        let end = (region.base + region.slots()) as usize;
        if end > self.slots.len {
            return Err(DataplaneError::TableSize {
                expected: self.slots.len as u32,
                got: end,
            });
        }
        let next = match self.live_generation(region) {
            Some(0) => 1,
            _ => 0,
        };
        let start = (region.base + next * region.size) as usize;
        let size = region.size as usize;
        let (before, rest) = self.slots.slice_mut().split_at_mut(start);
        let (next_gen, after) = rest.split_at_mut(size);
        let other_gen = if next == 1 {
            &before[region.base as usize..start]
        } else {
            &after[..size]
        };
        Ok((next_gen, other_gen))
    }

    /// Publishes the live table of `region` changed by `diff`. The inactive generation holds
    /// the table before the last publish; when that publish was a patch too, only the slots
    /// it changed are brought up to date before `diff` is applied: the cost follows the
    /// changes, not the table size (a full copy of 65537 slots cost most of a verdict's
    /// time to live).
    pub fn publish_patched(
        &mut self,
        region: &TableRegion,
        diff: &crate::core::precompute::SlotDiff,
    ) -> Result<(u32, Duration), DataplaneError> {
        if self.live_generation(region).is_none() {
            return Err(DataplaneError::TableSize {
                expected: region.size,
                got: 0,
            });
        }
        let under_way = self.preparing.remove(&region.vip_index);
        self.abandon(region.vip_index, under_way, region.size as usize);
        if self.in_grace(region.vip_index) {
            return self.patch_live(region, diff);
        }
        let behind = self.behind.remove(&region.vip_index);
        self.prepared.remove(&region.vip_index);
        let mut changed = Vec::new();
        let published = self.publish_with(region, |next, live| {
            changed = catch_up_and_apply(next, live, behind, diff);
        })?;
        self.behind.insert(region.vip_index, changed);
        Ok(published)
    }

    /// Whether the VIP's inactive generation was retired less than [`RETIRE_GRACE`] ago.
    fn in_grace(&self, vip: u32) -> bool {
        (self.retired_at.get(&vip)).is_some_and(|at| at.elapsed() < RETIRE_GRACE)
    }

    /// Writes `diff` into the live generation of `region`, slot by slot, when the inactive
    /// one is in its grace (a second verdict within 1 ms of the first waited out the grace:
    /// ~1 % of a ramp-up's verdicts, the p99 of its time to live). A packet reads one slot
    /// of a table, each written with one 32-bit store, so it still sees the old table's pick
    /// or the new one's. The inactive generation is now behind at the diff's slots too.
    fn patch_live(
        &mut self,
        region: &TableRegion,
        diff: &crate::core::precompute::SlotDiff,
    ) -> Result<(u32, Duration), DataplaneError> {
        let started = Instant::now();
        let gen = self.live_generation(region).expect("checked by the caller");
        self.prepared.remove(&region.vip_index);
        let start = (region.base + gen * region.size) as usize;
        if start + region.size as usize > self.slots.len {
            return Err(DataplaneError::TableSize {
                expected: self.slots.len as u32,
                got: start + region.size as usize,
            });
        }
        let mut changed = Vec::with_capacity(diff.len());
        for (slot, value) in diff.changes() {
            self.slots
                .word(start + slot)
                .store(value, Ordering::Relaxed);
            changed.push(slot as u32);
        }
        std::sync::atomic::fence(Ordering::Release);
        if let Some(behind) = self.behind.get_mut(&region.vip_index) {
            behind.extend(changed);
        }
        Ok((gen, started.elapsed()))
    }

    /// Fills the inactive generation with `fill(inactive, the other generation)`, then flips.
    fn publish_with(
        &mut self,
        region: &TableRegion,
        fill: impl FnOnce(&mut [u32], &[u32]),
    ) -> Result<(u32, Duration), DataplaneError> {
        let end = (region.base + region.slots()) as usize;
        if end > self.slots.len || region.vip_index as usize >= self.active.len / ACTIVE_STRIDE {
            return Err(DataplaneError::TableSize {
                expected: self.slots.len as u32,
                got: end,
            });
        }
        let next = match self.live_generation(region) {
            Some(0) => 1,
            _ => 0,
        };
        if let Some(at) = self.retired_at.get(&region.vip_index) {
            let since = at.elapsed();
            if since < RETIRE_GRACE {
                std::thread::sleep(RETIRE_GRACE - since);
            }
        }
        let started = Instant::now();
        let start = (region.base + next * region.size) as usize;
        let size = region.size as usize;
        // The region's two generations are adjacent: split to borrow both.
        let (before, rest) = self.slots.slice_mut().split_at_mut(start);
        let (next_gen, after) = rest.split_at_mut(size);
        let other_gen = if next == 1 {
            &before[region.base as usize..start]
        } else {
            &after[..size]
        };
        fill(next_gen, other_gen);
        self.active_word(region.vip_index)
            .store(start as u32, Ordering::Release);
        let took = started.elapsed();
        self.retired_at.insert(region.vip_index, Instant::now());
        Ok((next, took))
    }
}

/// Brings `next` up to `live` (only the `behind` slots when known, else all of it), then
/// applies `diff`; the slots it changed.
fn catch_up_and_apply(
    next: &mut [u32],
    live: &[u32],
    behind: Option<Vec<u32>>,
    diff: &crate::core::precompute::SlotDiff,
) -> Vec<u32> {
    match behind {
        Some(slots) => slots
            .iter()
            .for_each(|&s| next[s as usize] = live[s as usize]),
        None => next.copy_from_slice(live),
    }
    // One pass over the diff: it is decoded, not indexed.
    let mut changed = Vec::with_capacity(diff.len());
    for (slot, value) in diff.changes() {
        next[slot] = value;
        changed.push(slot as u32);
    }
    changed
}
