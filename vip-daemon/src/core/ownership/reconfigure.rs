//! A new VIP set while running ([`Input::Reconfigure`], from a config reload): kept VIPs keep
//! their state under their new policy, removed ones are released and forgotten, added ones
//! settle before they may be claimed; gossip about VIPs not configured here. The rules and
//! their reasons are in the module docs (`mod.rs`, "Reconfiguration").
//!
//! [`Input::Reconfigure`]: super::Input::Reconfigure

use std::collections::BTreeMap;
use std::time::Instant;

use super::state::{Record, VipState};
use super::{Action, Claim, Gossip, Ownership, OwnershipConfig, VipPolicy};

impl Ownership {
    pub(super) fn reconfigure(
        &mut self,
        vips: Vec<VipPolicy>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let cfg = OwnershipConfig {
            vips,
            ..self.cfg.clone()
        };
        if let Err(e) = cfg.validate() {
            let line = format!("RECONFIGURE refused, the VIPs stay as they were: {e}");
            out.push(Action::Status(line));
            return;
        }
        let me = self.cfg.me.clone();
        let mut removed = Vec::new();
        for i in 0..self.vips.len() {
            let name = self.cfg.vips[i].name.clone();
            if cfg.vips.iter().any(|v| v.name == name) {
                continue;
            }
            let held = self.vips[i].held.as_ref().map(|h| h.epoch);
            self.release(i, out);
            self.disown(i, out);
            if let Some(epoch) = held {
                let line = format!("vip {name}: removed from the config: released (epoch {epoch})");
                out.push(Action::Status(line));
            }
            // Our release must still reach every node that missed it (nobody else would
            // repeat it): re-gossiped like a record, until someone records something newer.
            let ours = self.vips[i].record.clone().filter(|r| r.owner == me);
            if let Some(r) = ours {
                self.retired.insert(name.clone(), r);
            }
            removed.push(name);
        }
        let old_names = self.cfg.vips.iter().map(|p| p.name.clone());
        let mut old: BTreeMap<String, VipState> =
            old_names.zip(std::mem::take(&mut self.vips)).collect();
        let mut added = Vec::new();
        let retired = &mut self.retired;
        let vips = cfg.vips.iter().map(|p| match old.remove(&p.name) {
            Some(kept) => kept,
            None => {
                added.push(p.name.clone());
                VipState {
                    // Re-added: our own last word on it, so the next claim's epoch is above.
                    record: retired.remove(&p.name),
                    added: Some(now),
                    ..VipState::default()
                }
            }
        });
        self.vips = vips.collect();
        self.cfg = cfg;
        if !added.is_empty() || !removed.is_empty() {
            let mut line = "RECONFIGURED:".to_string();
            if !added.is_empty() {
                let settle = self.cfg.lease;
                let added = added.join(", ");
                line.push_str(&format!(" added vip {added} (settling {settle:?} first)"));
            }
            if !removed.is_empty() {
                line.push_str(&format!(" removed vip {}", removed.join(", ")));
            }
            out.push(Action::Status(line));
        }
    }

    /// Gossip about a VIP not configured here is ignored, except:
    /// * a live claim in our name (a handover, or a record from before we removed it): we
    ///   cannot serve it, so it is disowned with a `Released` (and kept as retired), else
    ///   every node would keep the VIP on us and nobody would serve it;
    /// * another node's record newer than a retired one of ours: our release is moot, as
    ///   that node gossips its own record.
    pub(super) fn merge_unknown(&mut self, c: Claim, released: bool, out: &mut Vec<Action>) {
        let new = Record {
            epoch: c.epoch,
            owner: c.owner,
            released,
        };
        let retired = self.retired.get(&c.vip);
        if new.owner != self.cfg.me {
            if retired.is_some_and(|r| new.key() > r.key()) {
                self.retired.remove(&c.vip);
            }
            return;
        }
        if released || retired.is_some_and(|r| r.epoch >= new.epoch) {
            return;
        }
        // Nothing to `Release`: the data plane has no entry for a VIP the shell does not
        // configure (it removed the address when the VIP was removed).
        let gone = Record {
            released: true,
            ..new
        };
        out.push(Action::Broadcast(Gossip::Released(gone.claim(&c.vip))));
        self.retired.insert(c.vip, gone);
    }
}
