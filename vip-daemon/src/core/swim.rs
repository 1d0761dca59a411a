//! SWIM tuning shared by the daemon's gossip shell and the `swim` benchmark: one place decides
//! how foca probes, suspects and spreads news.
use std::{
    num::{NonZeroU32, NonZeroU8, NonZeroUsize},
    time::Duration,
};

/// The timing knobs an operator sets (`[cluster] probe_period`, `suspect_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwimTuning {
    pub probe_period: Duration,
    /// How long a direct probe waits for its ack before asking others to probe indirectly.
    pub probe_rtt: Duration,
    pub suspect_to_down: Duration,
}

impl SwimTuning {
    /// Defaults derived from the probe period: half a period for the direct ack.
    pub fn new(probe_period: Duration, suspect_to_down: Duration) -> Self {
        Self {
            probe_period,
            probe_rtt: probe_period / 2,
            suspect_to_down,
        }
    }
}

/// Foca tuned for a few controllers: a dead node is declared down in well under a second
/// (probe period + direct and one indirect probe + suspicion). With three nodes the third is
/// the indirect prober; larger clusters get foca's LAN defaults for fan-out and announces.
pub fn foca_config(t: &SwimTuning, cluster_size: u32) -> foca::Config {
    let mut f = foca::Config::new_lan(NonZeroU32::new(cluster_size.max(1)).expect("non-zero"));
    f.probe_period = t.probe_period;
    f.probe_rtt = t.probe_rtt;
    f.num_indirect_probes = NonZeroUsize::new(if cluster_size <= 3 { 1 } else { 3 }).expect("1..3");
    f.suspect_to_down_after = t.suspect_to_down;
    if cluster_size <= 3 {
        // Each update reaches both others many times over; larger clusters keep foca's
        // log(n)-scaled count, or news dies out before it has reached everyone.
        f.max_transmissions = NonZeroU8::new(6).expect("6");
    }
    f.max_packet_size = NonZeroUsize::new(1200).expect("1200");
    f.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(2),
        num_members: NonZeroUsize::new(2).expect("2"),
    });
    f.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(1),
        num_members: NonZeroUsize::new(2).expect("2"),
    });
    f
}

/// Lifeguard's local health multiplier, for a node that cannot trust its own clock: when its
/// own timers fire late (CPU starvation, a stalled loop) or others suspected it (it had to
/// refute), its failures to hear from peers are more likely its own fault, so it waits longer
/// before turning its suspicions into "down". Healthy nodes keep the configured timeouts, so
/// detection of a really dead node is not slowed by a node that is fine.
#[derive(Clone, Debug)]
pub struct LocalHealth {
    score: u32,
    max_score: u32,
    /// Timer lag beyond this counts as a sign of local trouble.
    lag_threshold: Duration,
    /// A score point decays after this long without new trouble.
    decay_after: Duration,
    last_trouble: Option<Duration>,
    max_lag_seen: Duration,
}

impl LocalHealth {
    /// Thresholds derived from the probe period: a quarter period of lag is trouble, and a
    /// point decays after four quiet periods.
    pub fn new(probe_period: Duration) -> Self {
        Self {
            score: 0,
            max_score: 8,
            lag_threshold: probe_period / 4,
            decay_after: probe_period * 4,
            last_trouble: None,
            max_lag_seen: Duration::ZERO,
        }
    }

    pub fn score(&self) -> u32 {
        self.score
    }

    /// The longest timer lag observed, for status.
    pub fn max_lag_seen(&self) -> Duration {
        self.max_lag_seen
    }

    /// A timer meant for `due` fired at `now` (both time since an arbitrary origin).
    pub fn timer_fired(&mut self, due: Duration, now: Duration) {
        let lag = now.saturating_sub(due);
        self.max_lag_seen = self.max_lag_seen.max(lag);
        if lag > self.lag_threshold {
            self.trouble(now);
        } else {
            self.decay(now);
        }
    }

    /// A suspicion proved wrong: a member this node suspected answered after all, or this
    /// node itself was declared down while running. Either way its view was not to be trusted.
    pub fn suspicion_was_wrong(&mut self, now: Duration) {
        self.trouble(now);
    }

    fn trouble(&mut self, now: Duration) {
        self.score = (self.score + 1).min(self.max_score);
        self.last_trouble = Some(now);
    }

    fn decay(&mut self, now: Duration) {
        if let Some(last) = self.last_trouble {
            if self.score > 0 && now.saturating_sub(last) >= self.decay_after {
                self.score -= 1;
                // The next point needs another quiet stretch.
                self.last_trouble = Some(now);
            }
        }
    }

    /// The suspicion timeout this node should use now.
    pub fn suspect_to_down(&self, configured: Duration) -> Duration {
        configured * (1 + self.score)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(150);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn on_time_timers_keep_the_configured_timeout() {
        let mut h = LocalHealth::new(PERIOD);
        for i in 0..1000 {
            let due = ms(i * 10);
            h.timer_fired(due, due + ms(5));
        }
        assert_eq!(h.score(), 0);
        assert_eq!(h.suspect_to_down(ms(300)), ms(300));
    }

    #[test]
    fn late_timers_stretch_suspicion_up_to_a_cap_then_decay_when_quiet() {
        let mut h = LocalHealth::new(PERIOD);
        for i in 0..20 {
            let due = ms(i * 100);
            h.timer_fired(due, due + ms(80));
        }
        assert_eq!(h.score(), 8, "capped");
        assert_eq!(h.suspect_to_down(ms(300)), ms(2700));
        // Quiet from 2 s on: one point per four periods (600 ms).
        let mut now = ms(2000);
        let mut seen = vec![];
        while now < ms(2000 + 600 * 9) {
            h.timer_fired(now, now);
            seen.push(h.score());
            now += ms(10);
        }
        assert_eq!(h.score(), 0);
        assert!(seen.windows(2).all(|w| w[0] >= w[1]), "monotone decay");
        assert!(
            seen.iter().filter(|&&s| s == 7).count() >= 55,
            "each point held for a quiet stretch"
        );
    }

    #[test]
    fn a_wrong_suspicion_counts_as_trouble() {
        let mut h = LocalHealth::new(PERIOD);
        h.suspicion_was_wrong(ms(1));
        h.suspicion_was_wrong(ms(2));
        assert_eq!(h.score(), 2);
        assert_eq!(h.suspect_to_down(ms(300)), ms(900));
    }
}
