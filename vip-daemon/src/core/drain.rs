//! How long a drained backend keeps its established flows.
//!
//! `vipd backend drain` takes a backend out of the table for new flows at once; its
//! established connections stay on it through the flow table while it is healthy. That
//! cannot last forever (a long-lived connection would hold a backend in maintenance for
//! days), so a drain has a timeout (`vip.drain_timeout`, or `--timeout`) after which the
//! backend gives up what is left (`BACKEND_F_KEEP_FLOWS` cleared): those connections move to
//! the table's pick and are reset by their new backend, as with `disable`.
//!
//! Times are wall-clock milliseconds since the Unix epoch so that a drain's start survives a
//! restart of vipd through the state file.
use std::time::Duration;

/// One drain in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Drain {
    /// When `vipd backend drain` was run (Unix ms).
    pub started_ms: u64,
    /// `--timeout`; None: the VIP's `drain_timeout` (as it is now, so a reload changes it).
    pub timeout_override: Option<Duration>,
}

/// Where a drain stands at some moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Established flows stay on the backend for `left` more.
    Keeping { left: Duration },
    /// The timeout passed: the backend keeps no flows.
    TimedOut,
}

impl Drain {
    pub fn timeout(&self, vip_default: Duration) -> Duration {
        self.timeout_override.unwrap_or(vip_default)
    }

    /// The phase at `now_ms`. A clock that went back before the start counts as "just
    /// started" rather than inventing a negative age.
    pub fn phase(&self, vip_default: Duration, now_ms: u64) -> Phase {
        let age = Duration::from_millis(now_ms.saturating_sub(self.started_ms));
        match self.timeout(vip_default).checked_sub(age) {
            Some(left) if !left.is_zero() => Phase::Keeping { left },
            _ => Phase::TimedOut,
        }
    }
}

/// A drain is complete once nothing is left to wait for: no flow-table entry of the backend
/// remains (`flows`: None when they could not be counted), or the timeout passed.
pub fn complete(phase: Phase, flows: Option<u64>) -> bool {
    phase == Phase::TimedOut || flows == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_MIN: Duration = Duration::from_secs(300);

    #[test]
    fn keeps_flows_until_the_timeout_then_gives_them_up() {
        let d = Drain {
            started_ms: 1_000_000,
            timeout_override: None,
        };
        assert_eq!(
            d.phase(FIVE_MIN, 1_000_000),
            Phase::Keeping { left: FIVE_MIN }
        );
        assert_eq!(
            d.phase(FIVE_MIN, 1_000_000 + 299_000),
            Phase::Keeping {
                left: Duration::from_secs(1)
            }
        );
        assert_eq!(d.phase(FIVE_MIN, 1_000_000 + 300_000), Phase::TimedOut);
        assert_eq!(d.phase(FIVE_MIN, u64::MAX), Phase::TimedOut);
    }

    #[test]
    fn the_override_wins_over_the_vip_default() {
        let d = Drain {
            started_ms: 0,
            timeout_override: Some(Duration::from_secs(30)),
        };
        assert_eq!(d.timeout(FIVE_MIN), Duration::from_secs(30));
        assert_eq!(d.phase(FIVE_MIN, 30_000), Phase::TimedOut);
        let now = Drain {
            timeout_override: Some(Duration::ZERO),
            ..d
        };
        assert_eq!(
            now.phase(FIVE_MIN, 0),
            Phase::TimedOut,
            "--timeout 0s ends it"
        );
    }

    #[test]
    fn a_clock_set_back_does_not_end_a_drain() {
        let d = Drain {
            started_ms: 10_000,
            timeout_override: None,
        };
        assert_eq!(d.phase(FIVE_MIN, 5_000), Phase::Keeping { left: FIVE_MIN });
    }

    #[test]
    fn complete_when_no_flow_is_left_or_the_time_is_up() {
        let keeping = Phase::Keeping {
            left: Duration::from_secs(9),
        };
        assert!(!complete(keeping, Some(3)));
        assert!(!complete(keeping, None));
        assert!(complete(keeping, Some(0)));
        assert!(complete(Phase::TimedOut, Some(3)));
    }
}
