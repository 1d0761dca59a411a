//! The fast failure detector next to SWIM (`[cluster] heartbeat_interval`): every member
//! sends a sealed heartbeat to every other each interval on every gossip link, from a
//! real-time thread (`shell::heartbeat`), and a member not heard for `heartbeat_timeout` on
//! any link is *silent*. SWIM's probe, indirect probe and suspicion take several probe
//! periods (~450 ms in the lab); a silence of a few heartbeats is a tenth of that.
//!
//! Pure: the shell feeds what was heard and when, and ticks; this says who went silent and
//! who came back. Rules, each with its test:
//! * A member is judged only once heard: one that never spoke is SWIM's to find (joining,
//!   or not started yet) (`never_heard_is_never_silent`).
//! * Silent after `timeout` without a word, reported once (`silent_once_after_timeout`).
//! * Back at its next word, reported once (`back_at_next_word`).
//! * A member that said goodbye is forgotten, never silent (`goodbye_is_not_silence`).
//! * A deaf node judges nobody: a member goes silent only while another member was heard
//!   within half the timeout. When every peer seems quiet at once, this node's own
//!   receiving (its CPU, its softirqs, its link) is the likelier culprit, and SWIM decides.
//!   Found by `bench failover`: a node whose neighbours restarted HAProxy and keepalived
//!   heard nothing for 50 ms, took both peers for dead in the same instant and fenced a
//!   healthy one (`a_deaf_node_judges_nobody`). The price: with a single peer, or when
//!   every peer dies at once (no quorum is left to act on it then), SWIM finds the death.
//! * After deafness, a full timeout of grace: when the first word after a gap of more than
//!   half the timeout arrives, every member gets `timeout` to be heard again before anyone
//!   is judged. Found by the same bench: a stall of the whole machine (all three nodes'
//!   threads at once, a network-namespace teardown next to them) ended with one peer's
//!   heartbeat arriving a few hundred microseconds before the other's, which was then
//!   judged silent by the rule above, on all three nodes in the same millisecond
//!   (`after_deafness_everyone_gets_a_timeout`).
//!
//! What silence means for ownership is the shell's to decide (`app::cluster`): it is a
//! membership verdict like SWIM's (a false one included), so every rule of
//! `core::ownership` (fencing first, quorum, leases) applies unchanged.
use std::{collections::BTreeMap, time::Duration, time::Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Silent(String),
    Back(String),
}

#[derive(Debug)]
pub struct Detector {
    timeout: Duration,
    /// Last word and whether it is reported silent, by member.
    peers: BTreeMap<String, (Instant, bool)>,
    /// The last word from anyone, and the first word after the last gap of more than half
    /// the timeout (nobody is judged for a timeout after it).
    last_word: Option<Instant>,
    recovered: Option<Instant>,
}

impl Detector {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            peers: BTreeMap::new(),
            last_word: None,
            recovered: None,
        }
    }

    /// A heartbeat (or any authentic datagram) from `peer` at `now`.
    pub fn heard(&mut self, peer: &str, now: Instant) -> Option<Verdict> {
        if let Some(last) = self.last_word {
            if now.saturating_duration_since(last) > self.timeout / 2 {
                self.recovered = Some(now);
            }
        }
        self.last_word = self.last_word.max(Some(now));
        match self.peers.get_mut(peer) {
            Some((last, silent)) => {
                *last = (*last).max(now);
                std::mem::take(silent).then(|| Verdict::Back(peer.to_owned()))
            }
            None => {
                self.peers.insert(peer.to_owned(), (now, false));
                None
            }
        }
    }

    /// Members newly silent at `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<Verdict> {
        let age = |last: Instant| now.saturating_duration_since(last);
        if self.recovered.is_some_and(|r| age(r) < self.timeout) {
            return Vec::new();
        }
        let recent = self.timeout / 2;
        let heard_recently: Vec<&String> = (self.peers.iter())
            .filter(|(_, (last, _))| age(*last) <= recent)
            .map(|(p, _)| p)
            .collect();
        let mut out = Vec::new();
        for (peer, (last, silent)) in &self.peers {
            let other_heard = heard_recently.iter().any(|p| *p != peer);
            if !*silent && age(*last) > self.timeout && other_heard {
                out.push(Verdict::Silent(peer.clone()));
            }
        }
        for v in &out {
            if let Verdict::Silent(p) = v {
                if let Some(entry) = self.peers.get_mut(p) {
                    entry.1 = true;
                }
            }
        }
        out
    }

    /// A member that said goodbye (it left): no longer judged until it speaks again.
    pub fn forget(&mut self, peer: &str) {
        self.peers.remove(peer);
    }

    pub fn is_silent(&self, peer: &str) -> bool {
        self.peers.get(peer).is_some_and(|p| p.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(60);

    #[test]
    fn never_heard_is_never_silent() {
        let t0 = Instant::now();
        let mut d = Detector::new(TIMEOUT);
        assert!(d.tick(t0 + Duration::from_secs(10)).is_empty());
        assert!(!d.is_silent("ctl2"));
    }

    #[test]
    fn silent_once_after_timeout() {
        let t0 = Instant::now();
        let mut d = Detector::new(TIMEOUT);
        assert_eq!(d.heard("ctl2", t0), None);
        let ms = Duration::from_millis;
        // ctl3 keeps talking (every 10 ms), ctl4 stops later than ctl2.
        for t in (0..=300).step_by(10) {
            d.heard("ctl3", t0 + ms(t));
        }
        d.heard("ctl4", t0 + ms(30));
        // Exactly at the timeout: not yet.
        assert!(d.tick(t0 + TIMEOUT).is_empty());
        let at = t0 + TIMEOUT + ms(1);
        assert_eq!(d.tick(at), [Verdict::Silent("ctl2".into())]);
        assert!(d.is_silent("ctl2") && !d.is_silent("ctl4"));
        assert!(d.tick(at + ms(5)).is_empty(), "once");
        assert_eq!(d.tick(at + ms(40)), [Verdict::Silent("ctl4".into())]);
    }

    #[test]
    fn a_deaf_node_judges_nobody() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Detector::new(TIMEOUT);
        // Both peers heard every 5 ms until this node stops receiving for 80 ms.
        for t in (0..=100).step_by(5) {
            d.heard("ctl1", t0 + ms(t));
            d.heard("ctl3", t0 + ms(t + 2));
        }
        assert!(d.tick(t0 + ms(182)).is_empty(), "everyone quiet at once");
        // The backlog arrives: nobody was ever reported, so nothing comes back either.
        assert_eq!(d.heard("ctl1", t0 + ms(183)), None);
        assert_eq!(d.heard("ctl3", t0 + ms(183)), None);
        // A real death while the other peer talks is still found.
        for t in (185..=300).step_by(5) {
            d.heard("ctl3", t0 + ms(t));
            let v = d.tick(t0 + ms(t));
            if t < 244 {
                assert!(v.is_empty(), "at {t} ms");
            } else if t == 245 {
                assert_eq!(v, [Verdict::Silent("ctl1".into())]);
            }
        }
        // A single peer is never judged by this detector (SWIM finds its death).
        let mut alone = Detector::new(TIMEOUT);
        alone.heard("ctl2", t0);
        assert!(alone.tick(t0 + ms(500)).is_empty());
    }

    #[test]
    fn back_at_next_word() {
        let t0 = Instant::now();
        let mut d = Detector::new(TIMEOUT);
        d.heard("ctl2", t0);
        for t in (0..=100).step_by(10) {
            d.heard("ctl3", t0 + Duration::from_millis(t));
        }
        d.tick(t0 + Duration::from_millis(100));
        assert!(d.is_silent("ctl2"));
        let back = t0 + Duration::from_millis(120);
        assert_eq!(d.heard("ctl2", back), Some(Verdict::Back("ctl2".into())));
        assert_eq!(d.heard("ctl2", back), None, "once");
        // A late, reordered word does not move the last word back.
        d.heard("ctl2", t0);
        assert!(d.tick(back + TIMEOUT).is_empty());
    }

    #[test]
    fn after_deafness_everyone_gets_a_timeout() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Detector::new(TIMEOUT);
        for t in (0..=100).step_by(5) {
            d.heard("ctl1", t0 + ms(t));
            d.heard("ctl3", t0 + ms(t));
        }
        // 70 ms with no word at all; then ctl3's word arrives just before ctl1's.
        assert_eq!(d.heard("ctl3", t0 + ms(170)), None);
        assert!(d.tick(t0 + ms(170)).is_empty(), "judged in the gap's wake");
        d.heard("ctl1", t0 + ms(171));
        // ctl1 really stops now; ctl3 talks on: found a timeout after its last word
        // (the grace after the gap has ended by then).
        let mut found = None;
        for t in (175..=400).step_by(5) {
            d.heard("ctl3", t0 + ms(t));
            if !d.tick(t0 + ms(t)).is_empty() {
                found = Some(t);
                break;
            }
        }
        assert_eq!(found, Some(235));
    }

    #[test]
    fn goodbye_is_not_silence() {
        let t0 = Instant::now();
        let mut d = Detector::new(TIMEOUT);
        d.heard("ctl2", t0);
        d.forget("ctl2");
        assert!(d.tick(t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(
            d.heard("ctl2", t0 + Duration::from_secs(2)),
            None,
            "new again"
        );
    }

    /// Simulated time, seeded loss: two members heard every 10 ms with 5 % of heartbeats
    /// lost are never reported silent with a 60 ms timeout over 10 minutes (six losses in a
    /// row would be needed), and a member that stops while the other talks is reported
    /// within timeout + one tick.
    #[test]
    fn loss_is_not_silence_and_death_is_found_within_a_tick() {
        let t0 = Instant::now();
        let mut d = Detector::new(TIMEOUT);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut lost = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % 100 < 5
        };
        let tick = Duration::from_millis(10);
        let mut now = t0;
        for _ in 0..60_000 {
            now += tick;
            for peer in ["ctl2", "ctl3"] {
                if !lost() {
                    d.heard(peer, now);
                }
            }
            assert!(d.tick(now).is_empty(), "false silence at {:?}", now - t0);
        }
        let died = now;
        loop {
            now += tick;
            if !lost() {
                d.heard("ctl3", now);
            }
            if !d.tick(now).is_empty() {
                break;
            }
        }
        assert!(now - died <= TIMEOUT + tick, "{:?}", now - died);
    }
}
