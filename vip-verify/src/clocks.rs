//! Time in the model: one global real time and one local clock per node.
//!
//! Real time advances in ticks ([`TICK`]). Each node reads its own CLOCK_MONOTONIC, which
//! may lag real time by up to `drift` ticks: `local = real - lag`, `lag` in `0..=drift`.
//! A node's clock may stand still for one tick (the lag grows: it runs slow) or jump one
//! tick ahead (the lag shrinks: it runs fast), but never goes backwards and never leaves
//! the bound. Over any interval two nodes' clocks therefore advance by amounts that differ
//! by at most `drift` ticks each from real time, whatever the interval's length: a bounded
//! *offset* model, which over the lease windows the protocol reasons about (`lease +
//! margin`, 8 ticks) is a rate bound of `drift / 8` (12.5% for `drift = 1`), far above
//! real clock drift (parts per million). The protocol needs `2 * drift < margin` on top of
//! the packet gap (see `docs/architecture.md`).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One model tick of real time: vipd's default membership probe period. Only the ratios
/// matter to the core, except the fencing retry backoff (1 s first, about 7 ticks).
pub const TICK: Duration = Duration::from_millis(150);

/// The instant every node's local clock counts from. Only differences matter to the core.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Local tick count -> the `Instant` the core sees.
pub fn instant(local: u32) -> Instant {
    base() + TICK * local
}

/// An `Instant` the core produced (a lease end) -> local ticks, rounded up: leases are
/// whole ticks in this model, so rounding never applies.
pub fn ticks(at: Instant) -> u32 {
    let d = at.saturating_duration_since(base());
    let t = d.as_nanos().div_ceil(TICK.as_nanos());
    u32::try_from(t).expect("model time fits in u32")
}
