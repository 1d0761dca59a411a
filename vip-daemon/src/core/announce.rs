//! Which VIP routes this node announces (`announce = "bgp"`), and when a graceful stop may
//! end. vipd does not speak BGP: it installs a host route per announced VIP in its own kernel
//! table and a routing daemon (FRR, BIRD) redistributes that table to the routers, which
//! spread flows over every announcing node by ECMP. Every node builds the same Maglev tables,
//! so a flow lands on the same backend whichever node the router picks.
//!
//! Rules (each checked by the test named after it):
//! - A VIP is announced while the node may serve (in quorum, unless `[bgp] without_quorum`;
//!   not in standby; not stopping) and at least one of the VIP's backends is in its table
//!   (`announced_only_while_quorum_service_and_a_backend_allow`). Without quorum a node's
//!   view of health may be stale, so announcing then risks blackholing a share of the flows;
//!   `without_quorum` trades that for staying in the ECMP group through a partition.
//! - A graceful stop withdraws every route first, then waits until the router stopped sending
//!   traffic: the node saw no packet for the withdrawn VIPs for `quiet` (its per-VIP
//!   counters), or `max_wait` passed, whichever comes first
//!   (`withdrawal_ends_after_quiet_or_at_the_cap`). Observed, not slept: a router that
//!   converges in 50 ms costs a 50 ms + `quiet` stop; the XDP program keeps forwarding
//!   whatever still arrives until then, to the same backends the other nodes pick.
use std::{
    collections::BTreeSet,
    net::IpAddr,
    time::{Duration, Instant},
};

/// What the node's state allows, whatever the VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// Cluster mode: in quorum; single node: always true.
    pub in_quorum: bool,
    /// `[bgp] without_quorum`.
    pub without_quorum: bool,
    /// `vipd node standby` (or a failing `[track]` condition).
    pub out_of_service: bool,
    /// A graceful stop began.
    pub stopping: bool,
}

impl NodeView {
    pub fn may_announce(&self) -> bool {
        (self.in_quorum || self.without_quorum) && !self.out_of_service && !self.stopping
    }
}

/// One `announce = "bgp"` VIP address: how many of its backends (over every service on that
/// address) are in a table now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnouncedVip {
    pub address: IpAddr,
    pub live_backends: usize,
}

/// The routes the node should have installed.
pub fn desired(node: &NodeView, vips: &[AnnouncedVip]) -> BTreeSet<IpAddr> {
    if !node.may_announce() {
        return BTreeSet::new();
    }
    vips.iter()
        .filter(|v| v.live_backends > 0)
        .map(|v| v.address)
        .collect()
}

/// Routes to add and to remove to go from `installed` to `desired`.
pub fn diff(
    installed: &BTreeSet<IpAddr>,
    desired: &BTreeSet<IpAddr>,
) -> (Vec<IpAddr>, Vec<IpAddr>) {
    (
        desired.difference(installed).copied().collect(),
        installed.difference(desired).copied().collect(),
    )
}

/// A graceful stop's wait for the router, after every route was withdrawn.
#[derive(Clone, Copy, Debug)]
pub struct Withdrawal {
    started: Instant,
    last_packet: Instant,
    quiet: Duration,
    max_wait: Duration,
}

/// Why a withdrawal ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Converged {
    /// No packet for `quiet`: the router sends them elsewhere.
    Quiet,
    /// `max_wait` passed with packets still arriving (a router that never converges, or
    /// traffic that does not come through the router).
    TimedOut,
}

impl Withdrawal {
    pub fn start(now: Instant, quiet: Duration, max_wait: Duration) -> Self {
        Self {
            started: now,
            last_packet: now,
            quiet,
            max_wait,
        }
    }

    /// Packets for the withdrawn VIPs seen since the last call.
    pub fn on_packets(&mut self, count: u64, now: Instant) {
        if count > 0 {
            self.last_packet = now;
        }
    }

    pub fn converged(&self, now: Instant) -> Option<Converged> {
        if now.saturating_duration_since(self.last_packet) >= self.quiet {
            Some(Converged::Quiet)
        } else if now.saturating_duration_since(self.started) >= self.max_wait {
            Some(Converged::TimedOut)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(last: u8, live: usize) -> AnnouncedVip {
        AnnouncedVip {
            address: IpAddr::from([192, 0, 2, last]),
            live_backends: live,
        }
    }

    const SERVING: NodeView = NodeView {
        in_quorum: true,
        without_quorum: false,
        out_of_service: false,
        stopping: false,
    };

    #[test]
    fn announced_only_while_quorum_service_and_a_backend_allow() {
        let vips = [vip(1, 3), vip(2, 0), vip(3, 1)];
        let all: BTreeSet<IpAddr> = [vips[0].address, vips[2].address].into();
        assert_eq!(
            desired(&SERVING, &vips),
            all,
            "a VIP with no live backend is not announced"
        );
        let no_quorum = NodeView {
            in_quorum: false,
            ..SERVING
        };
        assert!(desired(&no_quorum, &vips).is_empty());
        let allowed = NodeView {
            without_quorum: true,
            ..no_quorum
        };
        assert_eq!(desired(&allowed, &vips), all);
        for view in [
            NodeView {
                out_of_service: true,
                ..allowed
            },
            NodeView {
                stopping: true,
                ..allowed
            },
        ] {
            assert!(desired(&view, &vips).is_empty(), "{view:?}");
        }
    }

    #[test]
    fn the_diff_adds_what_is_missing_and_removes_what_is_extra() {
        let a = IpAddr::from([192, 0, 2, 1]);
        let b = IpAddr::from([192, 0, 2, 2]);
        let c = IpAddr::from([192, 0, 2, 3]);
        let (add, remove) = diff(&[a, b].into(), &[b, c].into());
        assert_eq!((add, remove), (vec![c], vec![a]));
        let same: BTreeSet<IpAddr> = [a].into();
        assert_eq!(diff(&same, &same), (vec![], vec![]));
    }

    #[test]
    fn withdrawal_ends_after_quiet_or_at_the_cap() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = Withdrawal::start(t0, ms(300), ms(2000));
        // Packets keep coming for 500 ms (the router converging), then stop.
        for t in (0..=500).step_by(50) {
            w.on_packets(4, t0 + ms(t));
            assert_eq!(w.converged(t0 + ms(t)), None);
        }
        w.on_packets(0, t0 + ms(600));
        assert_eq!(w.converged(t0 + ms(799)), None);
        assert_eq!(w.converged(t0 + ms(800)), Some(Converged::Quiet));
        // A router that never converges: the cap ends the wait.
        let mut w = Withdrawal::start(t0, ms(300), ms(2000));
        for t in (0..=2000).step_by(100) {
            w.on_packets(1, t0 + ms(t));
        }
        assert_eq!(w.converged(t0 + ms(2000)), Some(Converged::TimedOut));
        // Nothing arriving at all: quiet after `quiet`.
        let w = Withdrawal::start(t0, ms(300), ms(2000));
        assert_eq!(w.converged(t0 + ms(300)), Some(Converged::Quiet));
    }
}
