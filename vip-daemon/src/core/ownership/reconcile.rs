//! Acting on the decisions: quorum bookkeeping, renewals, claims, releases, fencing
//! requests and anti-entropy gossip.

use std::time::Instant;

use super::state::{FenceTry, Held, Record, Step};
use super::{Action, Gossip, Ownership};

impl Ownership {
    pub(super) fn reconcile(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.update_quorum(now, out);
        let (forget, floor) = (self.cfg.lease + self.cfg.margin, self.seen_floor(now));
        for st in &mut self.vips {
            st.claimants
                .retain(|_, (_, seen)| now < (*seen).max(floor) + forget);
        }
        self.renew(now, out);
        for i in 0..self.vips.len() {
            match self.step(i, now) {
                Step::Claim { from, why } => self.claim(i, now, from, why, out),
                Step::Adopt => self.adopt(i, now, out),
                Step::Release => {
                    self.release(i, out);
                    let vip = &self.cfg.vips[i].name;
                    out.push(Action::Status(format!(
                        "vip {vip}: not eligible here: released"
                    )));
                }
                _ => {}
            }
        }
        let fresh = self.fresh(now);
        for (node, vips) in self.fence_wanted(now) {
            let f = self.fences.entry(node.clone()).or_insert(FenceTry {
                failures: 0,
                in_flight: false,
                retry_at: now,
            });
            if !f.in_flight && now >= f.retry_at && fresh {
                f.in_flight = true;
                let vips = vips.join(", ");
                let reason = format!("{node} is dead and may serve vip {vips}: fencing first");
                out.push(Action::Fence { node, reason });
            }
        }
        if !self.leaving && now >= self.next_gossip {
            self.next_gossip = now + self.renew_every();
            for (pol, st) in self.cfg.vips.iter().zip(&self.vips) {
                if let Some(r) = &st.record {
                    let c = r.claim(&pol.name);
                    let g = if r.released {
                        Gossip::Released(c)
                    } else {
                        Gossip::Claim(c)
                    };
                    out.push(Action::Broadcast(g));
                }
            }
            for (vip, r) in &self.retired {
                out.push(Action::Broadcast(Gossip::Released(r.claim(vip))));
            }
            if let Some(own) = self.service.get(&self.cfg.me) {
                out.push(Action::Broadcast(Gossip::NodeState(own.clone())));
            }
        }
    }

    pub(super) fn update_quorum(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.update_fresh_word(now, out);
        let voters = self.cfg.voters.len();
        let alive = self
            .cfg
            .voters
            .iter()
            .filter(|v| self.alive.contains(*v))
            .count();
        let heard = self.lease_until(now).is_some();
        let active = self.in_quorum() && heard && !self.leaving;
        match (active, self.quorum_since.is_some()) {
            (true, false) => {
                self.quorum_since = Some(now);
                let settle = self.cfg.lease;
                let line = format!("QUORUM ({alive}/{voters} voters alive): settling {settle:?}");
                out.push(Action::Status(line));
            }
            (false, true) => {
                self.quorum_since = None;
                let released = self.release_all(out);
                if self.leaving {
                    return; // Leave said it all
                }
                let line = match heard {
                    false => format!(
                        "LEASE LOST (no quorum heard for {:?}): released {released}",
                        self.cfg.lease
                    ),
                    true => {
                        format!("QUORUM LOST ({alive}/{voters} voters alive): released {released}")
                    }
                };
                out.push(Action::Status(line));
            }
            _ => {}
        }
    }

    /// Notices a break in fresh word (no quorum heard within `margin`) and its end: see
    /// *Stale view* in the module docs. Called before each input is applied, so a packet
    /// ending a silence cannot hide the silence.
    fn update_fresh_word(&mut self, now: Instant, out: &mut Vec<Action>) {
        let fresh = self.fresh(now);
        if self.fresh_word == Some(false) && fresh {
            self.view_since = now;
            let (lease, margin) = (self.cfg.lease, self.cfg.margin);
            out.push(Action::Status(format!(
                "STALE VIEW: a quorum heard again after more than {margin:?} without: \
                 settling {lease:?}, lease takeovers wait {:?}",
                lease + margin
            )));
        }
        if self.fresh_word.is_some() || fresh {
            self.fresh_word = Some(fresh);
        }
    }

    pub(super) fn renew(&mut self, now: Instant, out: &mut Vec<Action>) {
        for i in 0..self.vips.len() {
            if self.vips[i]
                .held
                .as_ref()
                .is_none_or(|h| h.next_renew > now)
            {
                continue;
            }
            let vip = self.cfg.vips[i].name.clone();
            let Some(until) = self.lease_until(now) else {
                self.release(i, out); // unreachable: update_quorum released it already
                continue;
            };
            let next_renew = (now + self.renew_every()).min(until);
            let h = self.vips[i].held.as_mut().expect("checked above");
            (h.until, h.next_renew) = (until, next_renew);
            out.push(Action::RenewLease {
                vip,
                epoch: h.epoch,
                until,
            });
        }
    }

    pub(super) fn claim(
        &mut self,
        i: usize,
        now: Instant,
        from: Option<String>,
        why: &str,
        out: &mut Vec<Action>,
    ) {
        let Some(until) = self.lease_until(now).filter(|_| self.fresh(now)) else {
            return;
        };
        let next_renew = (now + self.renew_every()).min(until);
        let (me, vip) = (self.cfg.me.clone(), self.cfg.vips[i].name.clone());
        let st = &mut self.vips[i];
        let epoch = st.record.as_ref().map_or(0, |r| r.epoch) + 1;
        let record = Record {
            epoch,
            owner: me.clone(),
            released: false,
        };
        out.push(Action::Claim {
            vip: vip.clone(),
            epoch,
        });
        out.push(Action::RenewLease {
            vip: vip.clone(),
            epoch,
            until,
        });
        out.push(Action::Broadcast(Gossip::Claim(record.claim(&vip))));
        if let Some(from) = from {
            let line = format!("TAKEOVER vip {vip} from {from} ({why}), epoch {epoch}");
            out.push(Action::Status(line));
        }
        st.record = Some(record);
        st.held = Some(Held {
            epoch,
            until,
            next_renew,
        });
    }

    /// Starts serving the claim made in our name (see [`Step::Adopt`]).
    pub(super) fn adopt(&mut self, i: usize, now: Instant, out: &mut Vec<Action>) {
        let Some(until) = self.lease_until(now).filter(|_| self.fresh(now)) else {
            return;
        };
        let next_renew = (now + self.renew_every()).min(until);
        let (vip, st) = (self.cfg.vips[i].name.clone(), &mut self.vips[i]);
        let Some(epoch) = st.record.as_ref().map(|r| r.epoch) else {
            return;
        };
        out.push(Action::Claim {
            vip: vip.clone(),
            epoch,
        });
        out.push(Action::RenewLease {
            vip: vip.clone(),
            epoch,
            until,
        });
        out.push(Action::Status(format!(
            "vip {vip}: moved here, epoch {epoch}"
        )));
        st.held = Some(Held {
            epoch,
            until,
            next_renew,
        });
    }

    /// Gives up a live claim in our name that we do not hold and cannot serve (a previous
    /// incarnation's, or a handover arriving when we cannot claim), so others may place the
    /// VIP. `Release` too, in case the data plane still has it from that incarnation.
    pub(super) fn disown(&mut self, i: usize, out: &mut Vec<Action>) {
        let (vip, me, st) = (&self.cfg.vips[i].name, &self.cfg.me, &mut self.vips[i]);
        if st.held.is_some() {
            return;
        }
        let Some(r) = st.record.as_mut().filter(|r| !r.released && r.owner == *me) else {
            return;
        };
        r.released = true;
        out.push(Action::Release {
            vip: vip.clone(),
            epoch: r.epoch,
        });
        out.push(Action::Broadcast(Gossip::Released(r.claim(vip))));
    }

    /// Gives `i` up and tells the others, who may then claim it without fencing.
    pub(super) fn release(&mut self, i: usize, out: &mut Vec<Action>) {
        let (vip, st) = (&self.cfg.vips[i].name, &mut self.vips[i]);
        let Some(h) = st.held.take() else { return };
        let record = Record {
            epoch: h.epoch,
            owner: self.cfg.me.clone(),
            released: true,
        };
        out.push(Action::Release {
            vip: vip.clone(),
            epoch: h.epoch,
        });
        out.push(Action::Broadcast(Gossip::Released(record.claim(vip))));
        st.record = Some(record);
    }

    pub(super) fn release_all(&mut self, out: &mut Vec<Action>) -> String {
        let names = self.owned();
        (0..self.vips.len()).for_each(|i| self.release(i, out));
        (0..self.vips.len()).for_each(|i| self.disown(i, out));
        if names.is_empty() {
            "nothing".to_string()
        } else {
            format!("vip {}", names.join(", "))
        }
    }
}
