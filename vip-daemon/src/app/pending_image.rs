//! Keeping the image (the host model of the maps) up with table patches already live in
//! the kernel, a piece at a time.
use super::{tables::count_slot, Daemon};
use crate::core::precompute::{self, DiffCursor};

/// A patch live in the kernel that the image (and the VIP's slot counts) still has to
/// follow. Bringing the image up to date costs a pass over the patch's slots (hundreds of
/// microseconds for a backend joining a 65537-slot table of ten): done right after the flip,
/// it held the loop and the next verdicts behind it (verdict-to-live p99 over 1 ms during a
/// ramp-up). So the loop does it in pieces when it has nothing else to do, and whatever
/// reads the image (commands, scrapes, the self-check, a reload, a whole build) settles it
/// first. Patches of one VIP apply in order; those of different VIPs are independent.
pub struct PendingImage {
    pub vip: usize,
    pub region: crate::core::layout::TableRegion,
    pub diff: precompute::SlotDiff,
    pub at: DiffCursor,
}

/// Slots of pending image patches settled per idle turn of the loop: ~20 us.
const IMAGE_PIECE: usize = 4096;

impl Daemon {
    /// Brings the image up to every patch live in the kernel (and the maps up to the
    /// entries verdicts left for later turns: `after_verdict`).
    pub(super) fn settle_images(&mut self) {
        self.settle_after_verdicts();
        while let Some(mut p) = self.pending_images.pop_front() {
            self.apply_pending(&mut p, usize::MAX);
        }
    }

    /// Brings the image of one VIP up to its patches live in the kernel.
    pub(super) fn settle_image(&mut self, vip: usize) {
        let mut rest = std::collections::VecDeque::new();
        while let Some(mut p) = self.pending_images.pop_front() {
            if p.vip == vip {
                self.apply_pending(&mut p, usize::MAX);
            } else {
                rest.push_back(p);
            }
        }
        self.pending_images = rest;
    }

    /// One piece of the oldest pending patch.
    pub(super) fn settle_images_some(&mut self) {
        if let Some(mut p) = self.pending_images.pop_front() {
            if self.apply_pending(&mut p, IMAGE_PIECE) {
                self.discard_diff(p.diff);
            } else {
                self.pending_images.push_front(p);
            }
        }
    }

    /// Frees a diff on the precompute thread (see `Worker::discard`).
    fn discard_diff(&self, diff: precompute::SlotDiff) {
        let step = precompute::Step {
            from: Vec::new(),
            to: Vec::new(),
            diff,
        };
        self.precompute.discard(vec![step]);
    }

    /// Applies up to `max` more slots of `p` to the image and the counts; whether it is done.
    fn apply_pending(&mut self, p: &mut PendingImage, max: usize) -> bool {
        let mut counts = self
            .vips
            .get_mut(p.vip)
            .and_then(|v| v.slot_counts.as_mut());
        self.maps
            .patch_image_some(&p.region, &p.diff, &mut p.at, max, |old, new| {
                if let Some(counts) = counts.as_mut() {
                    if let Some(n) = counts.get_mut(old as usize) {
                        *n -= 1;
                    }
                    count_slot(counts, new);
                }
            })
    }
}
