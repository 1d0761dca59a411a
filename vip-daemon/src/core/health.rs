//! Rise/fall health of one backend, as HAProxy's `rise`/`fall`, plus probe scheduling.
//!
//! Pure: the caller passes the time of every observation and the random number generator,
//! so tests replay exact timelines with simulated instants and a seeded rng. Unlike
//! HAProxy's single up/down counter, a streak here must be *consecutive*: one failure in a
//! rising streak starts it over, and one success in a falling streak does the same, so a
//! backend that alternates ok/fail never changes state (it keeps whatever it had).

use std::time::{Duration, Instant};

/// Whether a backend should receive traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
}

/// A change of health: emitted once per transition, stamped with the time of the probe
/// result that caused it (not the time it was processed), so logs and metrics line up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub health: Health,
    pub at: Instant,
}

/// Health of one backend and the current ok/fail streaks.
#[derive(Clone, Debug)]
pub struct HealthState {
    rise: u32,
    fall: u32,
    health: Health,
    ok_streak: u32,
    fail_streak: u32,
}

impl HealthState {
    /// Starts Down (a backend must prove itself `rise` times before it gets traffic), or Up
    /// when `initial` says so (used when adopting a running data plane, so a daemon restart
    /// does not pull every backend out of rotation). `rise`/`fall` of 0 act as 1: a
    /// threshold of zero results would mean changing state without evidence.
    pub fn new(rise: u32, fall: u32, initial: Health) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            health: initial,
            ok_streak: 0,
            fail_streak: 0,
        }
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// Feeds one probe result observed at `now`; returns `Some(Verdict)` only when the
    /// health changes. Streaks keep counting past the threshold (they saturate), which is
    /// what [`HealthState::consecutive`] reports.
    pub fn on_result(&mut self, now: Instant, ok: bool) -> Option<Verdict> {
        let next = if ok {
            self.ok_streak = self.ok_streak.saturating_add(1);
            self.fail_streak = 0;
            (self.ok_streak >= self.rise).then_some(Health::Up)
        } else {
            self.fail_streak = self.fail_streak.saturating_add(1);
            self.ok_streak = 0;
            (self.fail_streak >= self.fall).then_some(Health::Down)
        };
        match next {
            Some(health) if health != self.health => {
                self.health = health;
                Some(Verdict { health, at: now })
            }
            _ => None,
        }
    }

    /// `(ok streak, fail streak)`; at most one of them is non-zero.
    pub fn consecutive(&self) -> (u32, u32) {
        (self.ok_streak, self.fail_streak)
    }
}

/// Largest jitter fraction: beyond ±50% an "interval" stops meaning anything.
pub const MAX_JITTER: f64 = 0.5;

/// Durations as nanoseconds, saturating at `u64::MAX` (584 years), so absurd intervals
/// cannot overflow the arithmetic below.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// When to run the next probe: `interval` ± `jitter` (a fraction, clamped to 0..=0.5; NaN
/// counts as 0), drawn uniformly from the injected rng. Jitter keeps probers of many
/// backends from drifting into lockstep and hitting a shared dependency at once. The result
/// lies in `[interval - s, interval + s]` with `s = interval.mul_f64(jitter)`; jitter 0 gives
/// exactly `now + interval` and consumes no randomness.
pub fn next_probe_at(
    now: Instant,
    interval: Duration,
    jitter: f64,
    rng: &mut impl rand::Rng,
) -> Instant {
    let jitter = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, MAX_JITTER)
    };
    let base = nanos(interval);
    let span = nanos(interval.mul_f64(jitter)).min(base);
    if span == 0 {
        return now + Duration::from_nanos(base);
    }
    // Integer draw over [base - span, base + span]; saturating keeps it in u64.
    let low = base - span;
    let high = base.saturating_add(span);
    now + Duration::from_nanos(rng.gen_range(low..=high))
}

/// First probe of a backend: uniform over `[now, now + interval)`, so N backends configured
/// at the same moment do not all probe in the same instant.
pub fn first_probe_at(now: Instant, interval: Duration, rng: &mut impl rand::Rng) -> Instant {
    match nanos(interval) {
        0 => now,
        n => now + Duration::from_nanos(rng.gen_range(0..n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, SeedableRng};

    const STEP: Duration = Duration::from_secs(2);

    /// Feeds `results` one per STEP from `t0`; returns the verdicts with their indices.
    fn run(state: &mut HealthState, t0: Instant, results: &[bool]) -> Vec<(usize, Verdict)> {
        let mut out = Vec::new();
        for (i, &ok) in results.iter().enumerate() {
            if let Some(v) = state.on_result(t0 + STEP * i as u32, ok) {
                out.push((i, v));
            }
        }
        out
    }

    #[test]
    fn down_to_up_after_exactly_rise_oks() {
        let t0 = Instant::now();
        for rise in 1..6u32 {
            let mut s = HealthState::new(rise, 3, Health::Down);
            let v = run(&mut s, t0, &vec![true; rise as usize + 3]);
            let at = t0 + STEP * (rise - 1);
            let want = Verdict {
                health: Health::Up,
                at,
            };
            assert_eq!(v, vec![(rise as usize - 1, want)], "rise {rise}");
            assert_eq!(s.health(), Health::Up);
            assert_eq!(s.consecutive(), (rise + 3, 0));
        }
    }

    #[test]
    fn up_to_down_after_exactly_fall_failures() {
        let t0 = Instant::now();
        for fall in 1..6u32 {
            let mut s = HealthState::new(2, fall, Health::Up);
            let v = run(&mut s, t0, &vec![false; fall as usize + 2]);
            let want = Verdict {
                health: Health::Down,
                at: t0 + STEP * (fall - 1),
            };
            assert_eq!(v, vec![(fall as usize - 1, want)], "fall {fall}");
            assert_eq!(s.consecutive(), (0, fall + 2));
        }
    }

    #[test]
    fn starts_in_initial_state_with_no_streak() {
        let s = HealthState::new(3, 2, Health::Down);
        assert_eq!((s.health(), s.consecutive()), (Health::Down, (0, 0)));
        let s = HealthState::new(3, 2, Health::Up);
        assert_eq!(s.health(), Health::Up);
        // Results agreeing with the current state never produce a verdict.
        let mut s = HealthState::new(1, 1, Health::Down);
        assert!(run(&mut s, Instant::now(), &[false; 10]).is_empty());
    }

    #[test]
    fn a_failure_inside_a_rising_streak_resets_it() {
        let t0 = Instant::now();
        let mut s = HealthState::new(3, 3, Health::Down);
        // ok ok FAIL ok ok -> still down; the third ok after the failure raises it.
        let v = run(&mut s, t0, &[true, true, false, true, true]);
        assert!(v.is_empty());
        assert_eq!(s.consecutive(), (2, 0));
        let v = s.on_result(t0 + STEP * 5, true);
        assert_eq!(
            v,
            Some(Verdict {
                health: Health::Up,
                at: t0 + STEP * 5
            })
        );
        // Symmetric: one success inside a falling streak resets it.
        let v = run(&mut s, t0, &[false, false, true, false, false]);
        assert!(v.is_empty());
        assert_eq!((s.health(), s.consecutive()), (Health::Up, (0, 2)));
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut s = HealthState::new(0, 0, Health::Down);
        let t0 = Instant::now();
        assert_eq!(run(&mut s, t0, &[true, false]).len(), 2);
    }

    #[test]
    fn flapping_alternates_verdicts() {
        let t0 = Instant::now();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut s = HealthState::new(2, 3, Health::Down);
        let results: Vec<bool> = (0..5000)
            .map(|_| rand::Rng::gen_bool(&mut rng, 0.5))
            .collect();
        let v = run(&mut s, t0, &results);
        assert!(v.len() > 100, "only {} verdicts", v.len());
        assert_eq!(v[0].1.health, Health::Up);
        for w in v.windows(2) {
            assert_ne!(w[0].1.health, w[1].1.health, "repeated verdict");
            assert!(w[0].1.at < w[1].1.at);
        }
        // Every verdict is stamped with the time of the result that caused it.
        for (i, verdict) in &v {
            assert_eq!(verdict.at, t0 + STEP * *i as u32);
        }
        assert_eq!(s.health(), v.last().unwrap().1.health);
    }

    #[test]
    fn jitter_stays_in_bounds_and_averages_to_interval() {
        let now = Instant::now();
        let mut rng = SmallRng::seed_from_u64(42);
        for (interval, jitter) in [
            (Duration::from_secs(2), 0.1),
            (Duration::from_millis(500), 0.5),
            (Duration::from_millis(3), 0.25),
            (Duration::from_nanos(7), 0.5),
        ] {
            let span = interval.mul_f64(jitter);
            let (lo, hi) = (interval - span, interval + span);
            let mut sum = Duration::ZERO;
            let n = 10_000u32;
            for _ in 0..n {
                let d = next_probe_at(now, interval, jitter, &mut rng) - now;
                assert!(lo <= d && d <= hi, "{d:?} outside {lo:?}..={hi:?}");
                sum += d;
            }
            let mean = (sum / n).as_secs_f64();
            let rel = (mean - interval.as_secs_f64()).abs() / interval.as_secs_f64();
            assert!(rel < 0.02, "mean {mean} vs {interval:?}");
        }
    }

    #[test]
    fn jitter_is_clamped() {
        let now = Instant::now();
        let mut rng = SmallRng::seed_from_u64(1);
        let i = Duration::from_secs(1);
        for _ in 0..1000 {
            let d = next_probe_at(now, i, 3.0, &mut rng) - now;
            assert!(d >= i / 2 && d <= i * 3 / 2, "{d:?}");
            let d = next_probe_at(now, i, -1.0, &mut rng) - now;
            assert_eq!(d, i);
            assert_eq!(next_probe_at(now, i, f64::NAN, &mut rng) - now, i);
        }
    }

    #[test]
    fn zero_jitter_gives_exact_intervals() {
        let mut rng = SmallRng::seed_from_u64(3);
        let t0 = Instant::now();
        let interval = Duration::from_millis(1234);
        let mut t = t0;
        for k in 1..=100u32 {
            t = next_probe_at(t, interval, 0.0, &mut rng);
            assert_eq!(t, t0 + interval * k);
        }
        assert_eq!(next_probe_at(t0, Duration::ZERO, 0.5, &mut rng), t0);
    }

    #[test]
    fn first_probe_spreads_over_one_interval() {
        let now = Instant::now();
        let interval = Duration::from_secs(1);
        let mut rng = SmallRng::seed_from_u64(9);
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            let d = first_probe_at(now, interval, &mut rng) - now;
            assert!(d < interval, "{d:?}");
            buckets[(d.as_millis() / 100) as usize] += 1;
        }
        // Uniform: each tenth of the interval gets ~1000 of 10k draws.
        for (i, b) in buckets.iter().enumerate() {
            assert!((850..1150).contains(b), "bucket {i}: {b}");
        }
        assert_eq!(first_probe_at(now, Duration::ZERO, &mut rng), now);
        // Same seed, same schedule: restarts and tests are reproducible.
        let a = first_probe_at(now, interval, &mut SmallRng::seed_from_u64(5));
        let b = first_probe_at(now, interval, &mut SmallRng::seed_from_u64(5));
        assert_eq!(a, b);
    }
}
