//! Flap damping's arithmetic, as BGP route-flap damping (RFC 2439): a penalty that grows by
//! one per health transition and halves every `half_life`, and the suppressed/released
//! decision made from it with hysteresis (suppress at `suppress`, release below `reuse`).
//! The rules this serves, and the tests showing them, are in [`super::health`].
//!
//! Pure: the caller passes the time of every update.

use std::time::{Duration, Instant};

/// Flap damping settings of one backend's check. `suppress == 0` turns damping off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Damping {
    /// Penalty at which the backend is held down (flapping); 0: damping off.
    pub suppress: u32,
    /// The hold ends once the penalty has decayed below this (and the probes pass).
    pub reuse: u32,
    /// The penalty halves every `half_life`.
    pub half_life: Duration,
    /// Longest hold after the last transition: the penalty is capped so that it decays
    /// from its cap to `reuse` in `max_hold`.
    pub max_hold: Duration,
}

/// The penalty of one transition: thresholds are in units of (undecayed) transitions.
pub const PENALTY_PER_TRANSITION: f64 = 1.0;

/// Caps the cap's exponent: 2^64 transitions is more than any backend will ever make, and a
/// finite cap keeps the decay arithmetic finite for absurd `max_hold / half_life` ratios.
const MAX_HALVINGS: f64 = 64.0;

impl Damping {
    /// Damping off: health follows rise/fall alone.
    pub const OFF: Damping = Damping {
        suppress: 0,
        reuse: 0,
        half_life: Duration::ZERO,
        max_hold: Duration::ZERO,
    };

    /// On when there is a threshold and a decay (config validation guarantees both, and
    /// `reuse < suppress`; a zero half-life would make the penalty vanish at once anyway).
    pub fn is_on(&self) -> bool {
        self.suppress > 0 && !self.half_life.is_zero()
    }

    /// Highest penalty: `reuse * 2^(max_hold / half_life)`, the value that decays to `reuse`
    /// in exactly `max_hold`, so no hold outlasts `max_hold` after the last transition.
    fn ceiling(&self) -> f64 {
        let halvings = self.max_hold.as_secs_f64() / self.half_life.as_secs_f64();
        f64::from(self.reuse.max(1)) * halvings.min(MAX_HALVINGS).exp2()
    }
}

/// A backend's flap penalty and whether it is suppressed (held down) because of it.
#[derive(Clone, Debug, Default)]
pub struct Penalty {
    /// Penalty as of `at` (decays from there).
    value: f64,
    at: Option<Instant>,
    suppressed: bool,
    /// Transitions ever counted (never decays: for status and metrics).
    transitions: u64,
}

impl Penalty {
    /// The penalty decayed to `now` (an earlier `now` than the last update counts as no time).
    pub fn value(&self, d: &Damping, now: Instant) -> f64 {
        let Some(at) = self.at else { return 0.0 };
        if !d.is_on() {
            return 0.0;
        }
        let halvings = now.saturating_duration_since(at).as_secs_f64() / d.half_life.as_secs_f64();
        self.value * (-halvings).exp2()
    }

    /// Counts one Up<->Down transition of the probes' health at `now`.
    pub fn on_transition(&mut self, d: &Damping, now: Instant) {
        self.transitions = self.transitions.saturating_add(1);
        if d.is_on() {
            self.value = (self.value(d, now) + PENALTY_PER_TRANSITION).min(d.ceiling());
            self.at = Some(now);
        }
    }

    /// Re-evaluates suppression at `now` and returns it: suppressed once the penalty reaches
    /// `suppress`, released once it decayed below `reuse`; in between it stays as it was
    /// (the hysteresis that keeps a borderline backend from toggling the flag itself).
    pub fn update(&mut self, d: &Damping, now: Instant) -> bool {
        if !d.is_on() {
            self.suppressed = false;
            return false;
        }
        let p = self.value(d, now);
        if p >= f64::from(d.suppress) {
            self.suppressed = true;
        } else if p < f64::from(d.reuse) {
            self.suppressed = false;
        }
        self.suppressed
    }

    pub fn suppressed(&self) -> bool {
        self.suppressed
    }

    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    /// While suppressed: how long until the penalty decays below `reuse` if no transition
    /// happens meanwhile (zero when it already has, and the release waits for a probe).
    pub fn hold_left(&self, d: &Damping, now: Instant) -> Option<Duration> {
        if !self.suppressed || !d.is_on() {
            return None;
        }
        let ratio = self.value(d, now) / f64::from(d.reuse.max(1));
        let halvings = if ratio > 1.0 { ratio.log2() } else { 0.0 };
        Some(d.half_life.mul_f64(halvings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn damping() -> Damping {
        Damping {
            suppress: 4,
            reuse: 2,
            half_life: 30 * S,
            max_hold: 300 * S,
        }
    }

    #[test]
    fn penalty_halves_every_half_life() {
        let (d, t0) = (damping(), Instant::now());
        let mut p = Penalty::default();
        p.on_transition(&d, t0);
        p.on_transition(&d, t0);
        assert_eq!(p.value(&d, t0), 2.0);
        assert!((p.value(&d, t0 + 30 * S) - 1.0).abs() < 1e-9);
        assert!((p.value(&d, t0 + 90 * S) - 0.25).abs() < 1e-9);
        // Time running backwards (out-of-order stamps) never increases the penalty.
        p.on_transition(&d, t0 + 30 * S);
        assert!((p.value(&d, t0) - 2.0).abs() < 1e-9);
        assert_eq!(p.transitions(), 3);
    }

    #[test]
    fn suppress_and_release_have_hysteresis() {
        let (d, t0) = (damping(), Instant::now());
        let mut p = Penalty::default();
        for _ in 0..3 {
            p.on_transition(&d, t0);
        }
        assert!(!p.update(&d, t0), "3 < suppress 4");
        p.on_transition(&d, t0);
        assert!(p.update(&d, t0), "4 reaches suppress");
        // 4 -> 2 takes one half-life: still held just before, released after.
        assert!(p.update(&d, t0 + 29 * S));
        assert!(p.update(&d, t0 + 30 * S - Duration::from_millis(1)));
        let left = p.hold_left(&d, t0 + 15 * S).unwrap();
        assert!((left.as_secs_f64() - 15.0).abs() < 1e-6, "{left:?}");
        assert!(!p.update(&d, t0 + 31 * S));
        assert_eq!(p.hold_left(&d, t0 + 31 * S), None);
        // Between reuse and suppress an unsuppressed backend stays unsuppressed.
        p.on_transition(&d, t0 + 31 * S);
        assert!(!p.update(&d, t0 + 31 * S), "~3 is below suppress");
    }

    #[test]
    fn penalty_is_capped_so_the_hold_ends_max_hold_after_the_last_transition() {
        let (d, t0) = (damping(), Instant::now());
        let mut p = Penalty::default();
        for i in 0..10_000u32 {
            p.on_transition(&d, t0 + Duration::from_millis(10) * i);
        }
        let last = t0 + Duration::from_millis(10) * 9_999;
        assert!(
            (p.value(&d, last) - 2048.0).abs() < 1e-6,
            "cap reuse * 2^10"
        );
        assert!(p.update(&d, last));
        assert!(p.update(&d, last + 299 * S));
        assert!(!p.update(&d, last + 301 * S));
    }

    #[test]
    fn off_never_suppresses_but_still_counts() {
        let (d, t0) = (Damping::OFF, Instant::now());
        let mut p = Penalty::default();
        for _ in 0..100 {
            p.on_transition(&d, t0);
        }
        assert!(!p.update(&d, t0));
        assert_eq!((p.value(&d, t0), p.transitions()), (0.0, 100));
        assert_eq!(p.hold_left(&d, t0), None);
    }
}
