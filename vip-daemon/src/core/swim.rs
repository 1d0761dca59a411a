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
    f.max_transmissions = NonZeroU8::new(6).expect("6");
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
