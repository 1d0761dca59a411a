//! The cluster's verdict on one backend, which every node's tables follow: facts about the
//! backend's host beat opinions from probes. A host declared dead by membership takes its
//! backends with it at once, and a host that sees its own service's socket gone says so
//! with authority; otherwise a majority of the live observers decides.
use std::collections::BTreeMap;

use super::health::Health;

/// What membership says about the node a backend runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// Not a cluster member (an external backend): probes alone decide.
    NotMember,
    Alive,
    Dead,
}

/// `views`: each observer's latest verdict (true = up); `live`: whether an observer counts
/// (alive, or this node); `not_listening`: the host reported the service's socket gone.
/// None when nobody has an opinion yet.
pub fn cluster_verdict(
    views: Option<&BTreeMap<String, bool>>,
    live: impl Fn(&str) -> bool,
    host: Host,
    not_listening: bool,
) -> Option<Health> {
    if host == Host::Dead || (host == Host::Alive && not_listening) {
        return Some(Health::Down);
    }
    let live: Vec<bool> = views?
        .iter()
        .filter(|(origin, _)| live(origin))
        .map(|(_, up)| *up)
        .collect();
    if live.is_empty() {
        return None;
    }
    let down = live.iter().filter(|up| !**up).count();
    Some(if down * 2 > live.len() {
        Health::Down
    } else {
        Health::Up
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn views(v: &[(&str, bool)]) -> BTreeMap<String, bool> {
        v.iter().map(|(n, up)| (n.to_string(), *up)).collect()
    }

    #[test]
    fn majority_of_live_observers_decides() {
        let v = views(&[("a", true), ("b", false), ("c", false)]);
        assert_eq!(
            cluster_verdict(Some(&v), |_| true, Host::Alive, false),
            Some(Health::Down)
        );
        // c is dead: a tie of the live ones keeps the backend up.
        assert_eq!(
            cluster_verdict(Some(&v), |n| n != "c", Host::Alive, false),
            Some(Health::Up)
        );
        assert_eq!(cluster_verdict(None, |_| true, Host::Alive, false), None);
    }

    #[test]
    fn a_dead_host_or_its_own_report_beats_the_probes() {
        let up = views(&[("a", true), ("b", true), ("c", true)]);
        assert_eq!(
            cluster_verdict(Some(&up), |_| true, Host::Dead, false),
            Some(Health::Down)
        );
        assert_eq!(
            cluster_verdict(None, |_| true, Host::Dead, false),
            Some(Health::Down)
        );
        assert_eq!(
            cluster_verdict(Some(&up), |_| true, Host::Alive, true),
            Some(Health::Down)
        );
        // Back alive and listening: the probes decide again.
        assert_eq!(
            cluster_verdict(Some(&up), |_| true, Host::Alive, false),
            Some(Health::Up)
        );
        // A report about an external backend cannot come from its host: ignored.
        assert_eq!(
            cluster_verdict(Some(&up), |_| true, Host::NotMember, true),
            Some(Health::Up)
        );
    }
}
