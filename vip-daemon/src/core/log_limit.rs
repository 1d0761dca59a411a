//! A token bucket for log lines: a burst of `burst` lines, then one per `every`; lines over
//! the limit are counted, and the next admitted line reports how many were left out. Used
//! for health verdicts, so a backend flapping faster than damping holds it (or with damping
//! off) cannot flood the log.
//!
//! Pure: the caller passes the time of every line.

use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct LogLimiter {
    burst: u32,
    every: Duration,
    tokens: u32,
    /// When the last token was added (None: nothing logged yet, the bucket is full).
    refilled_at: Option<Instant>,
    left_out: u64,
}

impl LogLimiter {
    /// `burst` of 0 acts as 1 (a limiter that never logs would hide verdicts entirely).
    pub fn new(burst: u32, every: Duration) -> Self {
        let burst = burst.max(1);
        Self {
            burst,
            every,
            tokens: burst,
            refilled_at: None,
            left_out: 0,
        }
    }

    /// Whether a line at `now` may be logged: `Some(lines left out since the last one
    /// logged)`, or None (the line is counted as left out).
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        let since = *self.refilled_at.get_or_insert(now);
        if !self.every.is_zero() {
            let periods = now.saturating_duration_since(since).as_nanos() / self.every.as_nanos();
            let periods = u32::try_from(periods).unwrap_or(u32::MAX);
            if periods > 0 {
                self.tokens = self.tokens.saturating_add(periods).min(self.burst);
                self.refilled_at = Some(since + self.every * periods);
            }
        } else {
            self.tokens = self.burst;
        }
        if self.tokens == 0 {
            self.left_out += 1;
            return None;
        }
        self.tokens -= 1;
        Some(std::mem::take(&mut self.left_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_burst_then_one_line_per_period_with_the_count_left_out() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(4, 10 * SEC);
        // 5 lines/s for a minute: 4 at once, then one per 10 s, each with the count.
        let admitted: Vec<(u32, u64)> = (0..300u32)
            .filter_map(|i| l.admit(t0 + SEC / 5 * i).map(|n| (i, n)))
            .collect();
        assert_eq!(
            admitted,
            [
                (0, 0),
                (1, 0),
                (2, 0),
                (3, 0),
                (50, 46),
                (100, 49),
                (150, 49),
                (200, 49),
                (250, 49)
            ]
        );
    }

    #[test]
    fn quiet_time_refills_the_burst_and_never_more() {
        let t0 = Instant::now();
        let mut l = LogLimiter::new(2, 10 * SEC);
        assert_eq!(
            (l.admit(t0), l.admit(t0), l.admit(t0)),
            (Some(0), Some(0), None)
        );
        let later = t0 + 3600 * SEC;
        assert_eq!(l.admit(later), Some(1));
        assert_eq!(l.admit(later), Some(0));
        assert_eq!(l.admit(later), None);
        // Zero burst still logs; zero period never limits.
        let mut l = LogLimiter::new(0, Duration::ZERO);
        assert!((0..100).all(|_| l.admit(t0).is_some()));
    }
}
