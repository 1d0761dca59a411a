//! One node: the real [`Ownership`] machine plus what its shell and data plane would do with
//! the returned actions (address up or down, the data-plane lease, fencing hooks in flight).

use std::collections::BTreeSet;

use vip_daemon::core::ownership::{Action, Gossip, Input, Ownership, OwnershipConfig};

use crate::clocks::{instant, ticks};

/// A fencing hook run by this node's shell.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Hook {
    pub target: u8,
    /// Ticks until the shell reports the outcome.
    pub left: u8,
    pub ok: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    /// The daemon; `None` while stopped (crashed, left, or powered off by fencing).
    pub own: Option<Ownership>,
    /// Powered off by a successful fence (STONITH): nothing of it serves until restarted.
    pub off: bool,
    /// How far this node's clock lags real time (see `clocks.rs`).
    pub lag: u8,
    /// The VIP address is configured on the NIC (a `Claim`, until `Release`/`HandOver`).
    /// Survives a daemon crash, as the kernel keeps it.
    pub addr: bool,
    /// Data-plane lease end in local ticks. Survives a daemon crash (pinned maps); a
    /// restarted daemon clears it (`init_leases`) and removes nothing else.
    pub lease: Option<u32>,
    /// Epoch of the data-plane lease (its `RenewLease`).
    pub lease_epoch: u64,
    /// The membership view last delivered to the machine.
    pub view: BTreeSet<u8>,
    /// Real tick of the last membership probe from each node (the failure detector's input).
    pub contact: Vec<Option<u32>>,
    /// Real tick of the last packet of any kind from each node (`Input::Heard`).
    pub packet: Vec<Option<u32>>,
    pub hooks: Vec<Hook>,
    /// Highest record epoch this daemon incarnation has shown (epochs never go backwards).
    pub epoch: u64,
    /// Membership update skipped at the next tick (a late failure detector).
    pub stall: bool,
}

/// What one call into the machine produced, beyond the node itself.
#[derive(Debug, Default)]
pub struct Effects {
    /// (from, gossip) to send to every other node.
    pub broadcasts: Vec<(u8, Gossip)>,
    /// `Action::Claim` (a claim or an adoption) at this epoch.
    pub claimed: Option<u64>,
    pub handed_over: bool,
    /// The record epoch went down within one daemon incarnation.
    pub epoch_back: bool,
    /// Readable lines for traces, collected only when `verbose`.
    pub log: Vec<String>,
    pub verbose: bool,
}

impl Node {
    pub fn new(cfg: OwnershipConfig, local: u32, n: usize) -> Self {
        let me = u8::try_from(cfg.voters.iter().position(|v| *v == cfg.me).unwrap_or(0))
            .expect("few nodes");
        Node {
            own: Some(Ownership::new(cfg, instant(local))),
            off: false,
            lag: 0,
            addr: false,
            lease: None,
            lease_epoch: 0,
            view: BTreeSet::from([me]),
            contact: vec![None; n],
            packet: vec![None; n],
            hooks: vec![],
            epoch: 0,
            stall: false,
        }
    }

    pub fn local(&self, real: u32) -> u32 {
        real - u32::from(self.lag)
    }

    /// The data plane forwards the VIP here: the lease has not run out on this node's clock.
    pub fn lease_valid(&self, real: u32) -> bool {
        !self.off && self.lease.is_some_and(|u| self.local(real) < u)
    }

    /// Owns the VIP: address up and a valid lease (ARP answered, traffic served).
    pub fn serving(&self, real: u32) -> bool {
        self.addr && self.lease_valid(real)
    }

    /// Feeds one input (or a tick, with `None`) to the machine and applies its actions.
    pub fn feed(&mut self, me: u8, input: Option<Input>, real: u32, fx: &mut Effects) {
        let verbose = fx.verbose;
        let now = instant(self.local(real));
        let Some(own) = self.own.as_mut() else { return };
        let line = input.as_ref().filter(|_| verbose).map(|i| format!("{i:?}"));
        let actions = match input {
            Some(i) => own.handle(i, now),
            None => own.tick(now),
        };
        let epoch = own.view().first().map_or(0, |v| v.epoch);
        if epoch < self.epoch {
            fx.epoch_back = true;
        }
        self.epoch = self.epoch.max(epoch);
        if !actions.is_empty() && verbose {
            if let Some(line) = line {
                fx.log.push(format!("n{me} <- {line}"));
            }
        }
        for a in actions {
            if verbose {
                fx.log.push(format!("n{me} -> {}", show(&a)));
            }
            self.apply(me, a, fx);
        }
    }

    fn apply(&mut self, me: u8, a: Action, fx: &mut Effects) {
        match a {
            Action::Claim { epoch, .. } => {
                self.addr = true;
                fx.claimed = Some(epoch);
            }
            Action::RenewLease { until, epoch, .. } => {
                (self.lease, self.lease_epoch) = (Some(ticks(until)), epoch);
            }
            Action::Release { .. } => (self.addr, self.lease) = (false, None),
            Action::HandOver { .. } => {
                self.addr = false;
                fx.handed_over = true;
            }
            Action::Broadcast(g) => fx.broadcasts.push((me, g)),
            Action::Fence { node, .. } => {
                let target = node
                    .trim_start_matches('n')
                    .parse::<u8>()
                    .expect("node name");
                if !self.hooks.iter().any(|h| h.target == target) {
                    self.hooks.push(Hook {
                        target,
                        left: 1,
                        ok: true,
                    });
                }
            }
            Action::Status(_) => {}
        }
    }
}

/// An action as a trace line: instants as local ticks, no hook reasons.
fn show(a: &Action) -> String {
    match a {
        Action::Fence { node, .. } => format!("Fence({node})"),
        Action::RenewLease { epoch, until, .. } => {
            format!(
                "RenewLease {{ epoch: {epoch}, until: local {} }}",
                ticks(*until)
            )
        }
        a => format!("{a:?}"),
    }
}
