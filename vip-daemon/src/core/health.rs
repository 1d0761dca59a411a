//! Rise/fall health of one backend, as HAProxy's `rise`/`fall`, flap damping on top, plus
//! probe scheduling.
//!
//! Pure: the caller passes the time of every observation and the random number generator,
//! so tests replay exact timelines with simulated instants and a seeded rng.
//!
//! # Rules
//! * *Rise/fall over consecutive results*: unlike HAProxy's single up/down counter, a streak
//!   must be consecutive: one failure in a rising streak starts it over, and one success in
//!   a falling streak does the same, so a backend that alternates ok/fail never changes
//!   state (`a_failure_inside_a_rising_streak_resets_it`). This gives the *probe health*.
//! * *Flap damping* (BGP route-flap damping, RFC 2439; arithmetic in [`super::flap`]): each
//!   Up<->Down transition of the probe health adds a penalty of 1, which halves every
//!   `half_life`. Once the penalty reaches `suppress` the backend is *flapping* and held
//!   down; the hold ends when the penalty has decayed below `reuse` *and* the probe health
//!   is Up. The penalty is capped so that the hold ends at most `max_hold` after the last
//!   transition (`a_flapping_backend_is_held_down_and_makes_few_verdicts`,
//!   `release_after_stability_needs_passing_probes`).
//! * *Down is never delayed*: the reported health is Down whenever the probe health is,
//!   whatever the penalty, so a failing backend is never held Up
//!   (`a_single_down_after_long_stability_is_immediate`,
//!   `a_down_backend_stays_down_whatever_the_penalty`).
//! * *One verdict per change of the reported health*: while held down, probe transitions
//!   only add penalty; the only verdict is the Down that starts the hold (if the backend
//!   was Up) and the Up that ends it (`a_flapping_backend_is_held_down_and_makes_few_verdicts`).
//! * *Release happens on a probe result*, the first one after the penalty decayed below
//!   `reuse` (one arrives every `interval`), so there is no timer to schedule and a release
//!   is always backed by a fresh passing probe.
//! * *Bounded publishes*: every table publish caused by health is a verdict, so damping
//!   bounds publishes per backend whatever the probes do: with the defaults (suppress 4,
//!   reuse 2, half-life 30 s) at most 5 verdicts before the hold (four transitions stay
//!   below the threshold, the fifth is the Down that starts it; plus the first rise after a
//!   start), then none until the hold
//!   ends, which takes at least one half-life, then one Up: well under 1 publish/s per
//!   backend against a goal of 20/s. The 200 ms flap for 2 minutes makes 6 verdicts
//!   starting Down (the first rise is no transition), 5 starting Up, instead of 600 without
//!   damping
//!   (`two_minutes_of_200ms_flapping_make_a_bounded_number_of_verdicts`).
//! * *Transitions are counted* for status and metrics, damping on or off
//!   (`transitions_are_counted_on_or_off`). The first decision of rise/fall after a start
//!   replaces the initial assumption (Down, or Up when adopting a live table) and is no
//!   transition: a backend's first rise adds no penalty, so a restart or two soon after
//!   vipd starts is not flapping (`the_first_decision_after_start_is_no_transition`).

use std::time::{Duration, Instant};

pub use super::flap::Damping;
use super::flap::Penalty;

/// Whether a backend should receive traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Up,
    Down,
}

/// A change of the reported health: emitted once per transition, stamped with the time of
/// the probe result that caused it (not the time it was processed), so logs and metrics line
/// up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub health: Health,
    pub at: Instant,
}

/// Health of one backend: the current ok/fail streaks, the probe health they give, the flap
/// penalty, and the health reported to the tables.
#[derive(Clone, Debug)]
pub struct HealthState {
    rise: u32,
    fall: u32,
    damping: Damping,
    /// What rise/fall over the probe results say.
    probed: Health,
    /// What the tables follow: `probed`, except Down while held down for flapping.
    reported: Health,
    /// Whether rise/fall have decided `probed` yet: until then it is the initial
    /// assumption, and replacing it is no transition.
    established: bool,
    ok_streak: u32,
    fail_streak: u32,
    penalty: Penalty,
}

impl HealthState {
    /// Starts Down (a backend must prove itself `rise` times before it gets traffic), or Up
    /// when `initial` says so (used when adopting a running data plane, so a daemon restart
    /// does not pull every backend out of rotation). `rise`/`fall` of 0 act as 1: a
    /// threshold of zero results would mean changing state without evidence.
    pub fn new(rise: u32, fall: u32, damping: Damping, initial: Health) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            damping,
            probed: initial,
            reported: initial,
            established: false,
            ok_streak: 0,
            fail_streak: 0,
            penalty: Penalty::default(),
        }
    }

    /// New thresholds (a config reload). Streaks start over, as with a new state; the
    /// health, penalty and transition count are kept, so a reload neither lets a flapping
    /// backend back in nor resets its counter. A change of the reported health that
    /// the new settings imply (damping turned off) comes with the next probe result.
    pub fn reconfigure(&mut self, rise: u32, fall: u32, damping: Damping) {
        self.rise = rise.max(1);
        self.fall = fall.max(1);
        self.damping = damping;
        self.ok_streak = 0;
        self.fail_streak = 0;
    }

    /// The health the tables follow.
    pub fn health(&self) -> Health {
        self.reported
    }

    /// Held down by flap damping.
    pub fn flapping(&self) -> bool {
        self.penalty.suppressed()
    }

    /// Up<->Down transitions of the probe health so far (not counting the first decision,
    /// which replaces the initial assumption).
    pub fn transitions(&self) -> u64 {
        self.penalty.transitions()
    }

    /// While flapping: the least time the hold still lasts (the penalty's decay to `reuse`
    /// without further transitions); it ends on the first passing probe after that.
    pub fn held_for(&self, now: Instant) -> Option<Duration> {
        self.penalty.hold_left(&self.damping, now)
    }

    /// Feeds one probe result observed at `now`; returns `Some(Verdict)` only when the
    /// reported health changes. Streaks keep counting past the threshold (they saturate),
    /// which is what [`HealthState::consecutive`] reports.
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
        if let Some(probed) = next {
            if probed != self.probed && self.established {
                self.penalty.on_transition(&self.damping, now);
            }
            self.probed = probed;
            self.established = true;
        }
        let held = self.penalty.update(&self.damping, now);
        let health = if held { Health::Down } else { self.probed };
        if health == self.reported {
            return None;
        }
        self.reported = health;
        Some(Verdict { health, at: now })
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
            let mut s = HealthState::new(rise, 3, Damping::OFF, Health::Down);
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
            let mut s = HealthState::new(2, fall, Damping::OFF, Health::Up);
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
        let s = HealthState::new(3, 2, Damping::OFF, Health::Down);
        assert_eq!((s.health(), s.consecutive()), (Health::Down, (0, 0)));
        let s = HealthState::new(3, 2, Damping::OFF, Health::Up);
        assert_eq!(s.health(), Health::Up);
        // Results agreeing with the current state never produce a verdict.
        let mut s = HealthState::new(1, 1, Damping::OFF, Health::Down);
        assert!(run(&mut s, Instant::now(), &[false; 10]).is_empty());
    }

    #[test]
    fn a_failure_inside_a_rising_streak_resets_it() {
        let t0 = Instant::now();
        let mut s = HealthState::new(3, 3, Damping::OFF, Health::Down);
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
        let mut s = HealthState::new(0, 0, Damping::OFF, Health::Down);
        let t0 = Instant::now();
        assert_eq!(run(&mut s, t0, &[true, false]).len(), 2);
    }

    #[test]
    fn flapping_alternates_verdicts() {
        let t0 = Instant::now();
        let mut rng = SmallRng::seed_from_u64(7);
        let mut s = HealthState::new(2, 3, Damping::OFF, Health::Down);
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

    // Flap damping.

    const SEC: Duration = Duration::from_secs(1);
    /// The probe interval of the flap tests.
    const TICK: Duration = Duration::from_millis(50);

    fn damping() -> Damping {
        Damping {
            suppress: 4,
            reuse: 2,
            half_life: 30 * SEC,
            max_hold: 300 * SEC,
        }
    }

    /// Feeds `n` results from `from`, one per TICK, `ok(i)` deciding each; returns the
    /// verdicts. Checks at every step that a backend whose probes say Down is reported Down.
    fn drive(s: &mut HealthState, from: Instant, n: u32, ok: impl Fn(u32) -> bool) -> Vec<Verdict> {
        let mut out = Vec::new();
        for i in 0..n {
            out.extend(s.on_result(from + TICK * i, ok(i)));
            if s.probed == Health::Down {
                assert_eq!(
                    s.health(),
                    Health::Down,
                    "held up while failing, result {i}"
                );
            }
        }
        out
    }

    /// A state whose initial health rise/fall have confirmed at `at`, so that the next
    /// change is a transition.
    fn settled(rise: u32, fall: u32, d: Damping, initial: Health, at: Instant) -> HealthState {
        let mut s = HealthState::new(rise, fall, d, initial);
        let (ok, n) = match initial {
            Health::Up => (true, rise),
            Health::Down => (false, fall),
        };
        assert!(drive(&mut s, at, n, |_| ok).is_empty());
        s
    }

    /// Up for 200 ms, down for 200 ms (4 results each at 50 ms), for two minutes.
    fn flap_200ms(i: u32) -> bool {
        (i / 4).is_multiple_of(2)
    }
    const TWO_MINUTES: u32 = 120_000 / 50;

    #[test]
    fn two_minutes_of_200ms_flapping_make_a_bounded_number_of_verdicts() {
        for initial in [Health::Down, Health::Up] {
            let t0 = Instant::now();
            let mut s = HealthState::new(2, 3, damping(), initial);
            let v = drive(&mut s, t0, TWO_MINUTES, flap_200ms);
            // Each verdict is at most one table publish.
            let per_s = v.len() as f64 / 120.0;
            eprintln!("{initial:?}: {} verdicts in 120 s ({per_s:.3}/s)", v.len());
            assert!(v.len() <= 10, "{initial:?}: {} verdicts", v.len());
            assert!(per_s <= 20.0);
            // One per 200 ms streak, except the first: it decides the initial health.
            assert_eq!(s.transitions(), 599);
            assert!(s.flapping());
            assert_eq!(s.health(), Health::Down);
            assert_eq!(v.last().map(|v| v.health), Some(Health::Down));
        }
        // Without damping the same flap is a verdict (and a publish) per streak.
        let mut s = HealthState::new(2, 3, Damping::OFF, Health::Down);
        let v = drive(&mut s, Instant::now(), TWO_MINUTES, flap_200ms);
        assert_eq!((v.len(), s.flapping()), (600, false));
    }

    #[test]
    fn the_first_decision_after_start_is_no_transition() {
        let t0 = Instant::now();
        for (initial, ok) in [(Health::Down, true), (Health::Up, false)] {
            let mut s = HealthState::new(1, 1, damping(), initial);
            let v = drive(&mut s, t0, 1, |_| ok);
            assert_eq!(v.len(), 1, "{initial:?}: the verdict is still made");
            assert_eq!(s.transitions(), 0, "{initial:?}");
            // The next change is one.
            drive(&mut s, t0, 1, |_| !ok);
            assert_eq!(s.transitions(), 1, "{initial:?}");
        }
        // Start, then two restarts of the backend within seconds: not flapping.
        let mut s = HealthState::new(1, 1, damping(), Health::Down);
        let v = drive(&mut s, t0, 5, |i| i % 2 == 0);
        assert_eq!((v.len(), s.transitions(), s.flapping()), (5, 4, false));
    }

    #[test]
    fn a_flapping_backend_is_held_down_and_makes_few_verdicts() {
        let t0 = Instant::now();
        let mut s = settled(1, 1, damping(), Health::Up, t0);
        // Down, up, down, up 50 ms apart: penalty ~3.99, below suppress: all verdicts.
        let v = drive(&mut s, t0, 4, |i| i % 2 == 1);
        assert_eq!(v.len(), 4);
        assert!(!s.flapping());
        // The fifth transition (Down) holds it: the Down verdict starts the hold...
        let v = drive(&mut s, t0 + 4 * TICK, 1, |_| false);
        assert_eq!(v.len(), 1);
        assert!(s.flapping());
        // ...and passing probes during the hold change nothing.
        let v = drive(&mut s, t0 + 5 * TICK, 200, |_| true);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(s.health(), Health::Down);
        assert_eq!(s.transitions(), 6);
        let left = s.held_for(t0 + 205 * TICK).expect("held");
        assert!(left > 20 * SEC && left < 40 * SEC, "{left:?}");
    }

    #[test]
    fn release_after_stability_needs_passing_probes() {
        let t0 = Instant::now();
        let mut s = settled(2, 3, damping(), Health::Up, t0);
        drive(&mut s, t0, TWO_MINUTES, flap_200ms);
        let end = t0 + TICK * TWO_MINUTES;
        // Stable and passing from `end` (the rise to Up is one more transition): exactly one
        // verdict, Up, at the first result after the hold.
        let mut stable = s.clone();
        assert!(drive(&mut stable, end, 2, |_| true).is_empty());
        let risen = end + TICK;
        let hold = stable.held_for(risen).expect("held after the flap");
        assert!(hold <= 300 * SEC, "max_hold bounds it: {hold:?}");
        eprintln!("hold after the flap: {hold:?}");
        let v = drive(&mut stable, risen + TICK, 20 * 60 * 20, |_| true);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].health, Health::Up);
        let release = risen + hold;
        assert!(
            v[0].at + TICK > release && v[0].at <= release + TICK,
            "{v:?} vs {release:?}"
        );
        assert!(!stable.flapping());
        // Failing instead: the hold ends without a verdict, and the backend stays Down.
        let mut failing = s.clone();
        assert!(drive(&mut failing, end, 20 * 60 * 20, |_| false).is_empty());
        assert!(!failing.flapping());
        assert_eq!(failing.health(), Health::Down);
    }

    #[test]
    fn a_single_down_after_long_stability_is_immediate() {
        let t0 = Instant::now();
        let mut s = HealthState::new(2, 3, damping(), Health::Down);
        // A restart earlier (Up, Down, Up) leaves some penalty, which has decayed.
        drive(&mut s, t0, 2, |_| true);
        drive(&mut s, t0 + SEC, 3, |_| false);
        drive(&mut s, t0 + 2 * SEC, 2, |_| true);
        assert_eq!((s.health(), s.transitions()), (Health::Up, 2));
        let later = t0 + 3600 * SEC;
        let v = drive(&mut s, later, 3, |_| false);
        let want = Verdict {
            health: Health::Down,
            at: later + 2 * TICK,
        };
        assert_eq!(v, vec![want], "down at the `fall`-th failure");
        // Even right after a flap hold the Down is immediate (the backend was up again).
        let mut s = settled(1, 1, damping(), Health::Up, t0);
        drive(&mut s, t0, 6, |i| i % 2 == 1);
        assert!(s.flapping());
        let v = drive(&mut s, t0 + 600 * SEC, 2, |_| true);
        assert_eq!(v.len(), 1);
        let v = drive(&mut s, t0 + 601 * SEC, 1, |_| false);
        assert_eq!(
            v.iter().map(|v| v.health).collect::<Vec<_>>(),
            [Health::Down]
        );
    }

    #[test]
    fn a_down_backend_stays_down_whatever_the_penalty() {
        let t0 = Instant::now();
        // No penalty at all, or a large one, or one decayed away: failing means Down.
        for flaps in [0, 6, 600] {
            let mut s = settled(1, 1, damping(), Health::Up, t0);
            drive(&mut s, t0, flaps, |i| i % 2 == 1);
            for at in [t0 + SEC, t0 + 100 * SEC, t0 + 3600 * SEC] {
                drive(&mut s, at, 5, |_| false);
                assert_eq!(s.health(), Health::Down, "{flaps} flaps, {at:?}");
            }
        }
    }

    #[test]
    fn transitions_are_counted_on_or_off() {
        for d in [damping(), Damping::OFF] {
            let mut s = settled(1, 1, d, Health::Down, Instant::now());
            drive(&mut s, Instant::now(), 100, |i| i % 2 == 0);
            assert_eq!(s.transitions(), 100, "{d:?}");
        }
        // Results that change nothing are no transitions.
        let mut s = HealthState::new(2, 2, damping(), Health::Down);
        drive(&mut s, Instant::now(), 100, |i| i % 4 == 0);
        assert_eq!(s.transitions(), 0);
    }

    #[test]
    fn reconfigure_keeps_the_hold_and_the_count() {
        let t0 = Instant::now();
        let mut s = settled(1, 1, damping(), Health::Up, t0);
        drive(&mut s, t0, 6, |i| i % 2 == 1);
        assert!(s.flapping());
        s.reconfigure(2, 3, damping());
        assert!(drive(&mut s, t0 + SEC, 5, |_| true).is_empty());
        assert_eq!((s.flapping(), s.transitions()), (true, 6));
        // Damping turned off by the reload: the next passing result lets it back in.
        s.reconfigure(2, 3, Damping::OFF);
        let v = drive(&mut s, t0 + 2 * SEC, 1, |_| true);
        assert_eq!(v.iter().map(|v| v.health).collect::<Vec<_>>(), [Health::Up]);
        assert!(!s.flapping());
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
