//! `[bgp]`: where vipd installs the routes of `announce = "bgp"` VIPs for a routing daemon
//! (FRR, BIRD) to redistribute, and how a graceful stop waits for the routers
//! (`core::announce`; the FRR and BIRD side in docs/operations.md).
use std::time::Duration;

use super::{
    diag::Ctx,
    locate::FieldPath,
    membership::duration,
    raw::RawBgp,
    types::{Announce, Selection},
    Vip,
};

/// `[bgp]` as resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bgp {
    /// Kernel routing table of the announced host routes (not main, local or default).
    pub table: u32,
    /// Route protocol number vipd's routes carry (`ip route ... proto N`): how vipd finds its
    /// own routes after a crash, and what a routing daemon may filter on.
    pub protocol: u8,
    /// Announce while out of quorum (cluster mode): stay in the ECMP group through a
    /// partition, at the risk of a stale health view (`core::announce`).
    pub without_quorum: bool,
    /// A graceful stop ends once no packet for a withdrawn VIP arrived for this long...
    pub withdraw_quiet: Duration,
    /// ...or after this long in any case.
    pub withdraw_max: Duration,
}

pub mod defaults {
    use std::time::Duration;
    /// Unused by iproute2's, FRR's and BIRD's defaults (FRR's own protocols are 186-199).
    pub const TABLE: u32 = 201;
    pub const PROTOCOL: u8 = 201;
    pub const WITHDRAW_QUIET: Duration = Duration::from_millis(300);
    pub const WITHDRAW_MAX: Duration = Duration::from_secs(5);
}

impl Default for Bgp {
    fn default() -> Self {
        Self {
            table: defaults::TABLE,
            protocol: defaults::PROTOCOL,
            without_quorum: false,
            withdraw_quiet: defaults::WITHDRAW_QUIET,
            withdraw_max: defaults::WITHDRAW_MAX,
        }
    }
}

/// Tables the kernel and every distribution use for themselves: unspec, default, main, local.
const RESERVED_TABLES: [i64; 4] = [0, 253, 254, 255];

pub(crate) fn bgp(raw: &RawBgp, cx: &mut Ctx) -> Bgp {
    let at = FieldPath::root().key("bgp");
    let valid =
        "a routing table 1..=4294967295 other than 253 (default), 254 (main) and 255 (local)";
    let table = cx
        .int(raw.table, &at.key("table"), 1..=i64::from(u32::MAX), valid)
        .filter(|t| {
            let ok = !RESERVED_TABLES.contains(t);
            if !ok {
                cx.error(
                    &at.key("table"),
                    format!("{t} is reserved: expected {valid}"),
                );
            }
            ok
        })
        .map_or(defaults::TABLE, |t| t as u32);
    // 0-4 are the kernel's own (unspec, redirect, kernel, boot, static).
    let protocol = cx
        .int(
            raw.protocol,
            &at.key("protocol"),
            5..=255,
            "a route protocol 5..=255",
        )
        .map_or(defaults::PROTOCOL, |p| p as u8);
    let quiet = &at.key("withdraw_quiet");
    let max = &at.key("withdraw_max");
    let withdraw_quiet = duration(cx, &raw.withdraw_quiet, quiet, defaults::WITHDRAW_QUIET);
    let withdraw_max = duration(cx, &raw.withdraw_max, max, defaults::WITHDRAW_MAX);
    if withdraw_quiet > withdraw_max {
        cx.error(quiet, "must not be longer than `withdraw_max`");
    }
    Bgp {
        table,
        protocol,
        without_quorum: raw.without_quorum.unwrap_or(false),
        withdraw_quiet,
        withdraw_max,
    }
}

/// A route is per address: the services sharing an address share its `announce`, and
/// ownership preferences mean nothing to a routed VIP.
pub(crate) fn check_vips(vips: &[Vip], cx: &mut Ctx) {
    for (i, v) in vips.iter().enumerate() {
        let at = FieldPath::root().key("vip").index(i);
        if let Some(other) = vips[..i]
            .iter()
            .find(|o| o.address == v.address && o.announce != v.announce)
        {
            let msg = format!(
                "vip {:?} shares address {} with vip {:?} but not its `announce`: \
                 one address is announced one way",
                v.name, v.address, other.name
            );
            cx.error(&at.key("announce"), msg);
        }
        if v.announce == Announce::Bgp && v.selection != Selection::Maglev {
            cx.error(
                &at.key("announce"),
                "announce = \"bgp\" needs selection = \"maglev\": a primary-backup VIP \
                 forwards only on the node holding its lease, and routers send to every node",
            );
        }
        if v.announce == Announce::Bgp && !v.preferences.is_empty() {
            cx.error(
                &at.key("preferences"),
                "`preferences` choose an address owner; an announce = \"bgp\" VIP has none \
                 (every node in service announces it): remove them",
            );
        }
    }
}
