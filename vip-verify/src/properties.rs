//! What is checked, as stateright properties over [`World`]. Safety facts that happen at a
//! moment (a claim) are recorded in [`crate::model::Seen`] when they happen.

use stateright::Property;

use crate::model::World;
use crate::OwnershipModel;

/// Nodes owning the VIP now: address up and a lease valid on their own clock.
pub fn owners(w: &World) -> usize {
    w.nodes.iter().filter(|n| n.serving(w.t)).count()
}

pub const ONE_OWNER: &str = "never two owners at one real instant";
pub const EPOCHS: &str = "an epoch never goes backwards on a node";
pub const QUORUM: &str = "a node without quorum never claims";
pub const OLD_OWNER_GONE: &str =
    "no claim before the old owner left, was fenced or its lease certainly expired";
pub const TIE_ONLY: &str =
    "two owners only at one epoch (the tie-break race), and for at most one tick";
pub const CALM_OWNED: &str = "a calm cluster has exactly one owner";
pub const CALM_STILL: &str = "a calm cluster does not move the VIP";
pub const TAKEOVER: &str = "sometimes: a takeover or handover happens";
pub const SERVED: &str = "sometimes: the VIP is owned";

type M = OwnershipModel;

fn one_owner(_: &M, w: &World) -> bool {
    owners(w) <= 1
}
fn tie_only(_: &M, w: &World) -> bool {
    let mut epochs = w
        .nodes
        .iter()
        .filter(|n| n.serving(w.t))
        .map(|n| n.lease_epoch);
    let first = epochs.next();
    owners(w) <= 1 || (epochs.all(|e| Some(e) == first) && w.overlap <= 1)
}
fn epochs(_: &M, w: &World) -> bool {
    !w.seen.epoch_back
}
fn quorum(_: &M, w: &World) -> bool {
    !w.seen.claim_without_quorum
}
fn old_owner_gone(_: &M, w: &World) -> bool {
    !w.seen.claim_over_owner
}
fn calm_owned(m: &M, w: &World) -> bool {
    w.calm < m.setup.calm || owners(w) == 1
}
fn calm_still(_: &M, w: &World) -> bool {
    !w.seen.moved_when_calm
}
fn takeover(_: &M, w: &World) -> bool {
    w.seen.takeover && owners(w) == 1
}
fn served(_: &M, w: &World) -> bool {
    owners(w) == 1
}

pub fn all() -> Vec<Property<M>> {
    vec![
        Property::always(ONE_OWNER, one_owner),
        Property::always(TIE_ONLY, tie_only),
        Property::always(EPOCHS, epochs),
        Property::always(QUORUM, quorum),
        Property::always(OLD_OWNER_GONE, old_owner_gone),
        Property::always(CALM_OWNED, calm_owned),
        Property::always(CALM_STILL, calm_still),
        Property::sometimes(TAKEOVER, takeover),
        Property::sometimes(SERVED, served),
    ]
}
