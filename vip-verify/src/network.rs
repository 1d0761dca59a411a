//! Gossip in flight: a bag that loses, delays, duplicates and reorders messages.
//!
//! Every [`vip_daemon::core::ownership::Action::Broadcast`] becomes one message per other
//! node. A message is delivered at the next tick unless a fault acts on it first: dropped,
//! delivered now out of order (reordered), delivered now and also kept (duplicated), or
//! held back one more tick (delayed; at most once, so latency is at most 2 ticks).
//! Messages across the partition or to a stopped daemon are lost.
//!
//! Membership probes are not messages here: between connected running daemons they
//! arrive every tick (see `model.rs`), so only a partition (both directions) or a crash
//! silences a node. Gossip items are the ones the network may mistreat one by one.

use vip_daemon::core::ownership::Input;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Msg {
    pub from: u8,
    pub to: u8,
    /// `Input::Claim`, `Input::Released` or `Input::Move`, as the shell maps gossip.
    pub input: Input,
    /// Held back one tick by a delay fault.
    pub delayed: bool,
}

/// Adds a message unless the same one is already waiting: delivering the same item twice
/// at the same instant changes nothing (merging is idempotent), so the copy only multiplies
/// states.
pub fn push(net: &mut Vec<Msg>, msg: Msg) {
    if !net.contains(&msg) {
        net.push(msg);
    }
}

/// Takes what a tick delivers (in send order) and keeps the delayed ones, now due.
pub fn due(net: &mut Vec<Msg>) -> Vec<Msg> {
    let (mut later, now): (Vec<Msg>, Vec<Msg>) = net.drain(..).partition(|m| m.delayed);
    later.iter_mut().for_each(|m| m.delayed = false);
    *net = later;
    now
}
