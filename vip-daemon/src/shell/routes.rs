//! The host routes of `announce = "bgp"` VIPs (`core::announce`), through rtnetlink: one
//! blackhole route per announced address (/32 or /128) in `[bgp] table`, tagged with
//! `[bgp] protocol`, for a routing daemon to redistribute (docs/operations.md, "BGP").
//!
//! Blackhole, not a route via `lo`: the XDP program takes the VIP's traffic before the
//! stack, and whatever it passes (an ICMP echo, a port no VIP serves) must not be routed
//! back to the router it came from if a routing daemon copies the table into the FIB.
use std::{collections::BTreeSet, net::IpAddr};

use futures::TryStreamExt as _;
use rtnetlink::{
    packet_route::route::{
        RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
    },
    Handle, RouteMessageBuilder,
};

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("route {addr}/{len} in table {table}: {source}", len = if addr.is_ipv4() { 32 } else { 128 })]
    Netlink {
        addr: IpAddr,
        table: u32,
        source: rtnetlink::Error,
    },
    #[error("listing the routes of table {table}: {source}")]
    List {
        table: u32,
        source: rtnetlink::Error,
    },
    #[error("no loopback interface in this network namespace")]
    NoLoopback,
}

/// The kernel's table of local addresses (`ip route show table local`).
const RT_TABLE_LOCAL: u32 = 255;

/// Where vipd's routes live and how they are tagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteTable {
    pub table: u32,
    pub protocol: u8,
}

impl RouteTable {
    /// A /32 or /128 route to `addr` tagged with vipd's protocol.
    fn host_route(&self, addr: IpAddr) -> RouteMessageBuilder<IpAddr> {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(addr, len)
            // A host prefix of the address's own family cannot be invalid.
            .unwrap_or_else(|_| RouteMessageBuilder::<IpAddr>::new())
            .protocol(RouteProtocol::from(self.protocol))
    }

    fn message(&self, addr: IpAddr) -> RouteMessage {
        self.host_route(addr)
            .table_id(self.table)
            .kind(RouteType::BlackHole)
            .build()
    }

    /// Adds `msg` for `addr`, replacing an equal route (idempotent).
    async fn replace(
        &self,
        handle: &Handle,
        addr: IpAddr,
        msg: RouteMessage,
    ) -> Result<(), RouteError> {
        handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(|source| self.error(addr, source))
    }

    /// Installs the route of `addr` (idempotent: replaces an equal one).
    pub async fn add(&self, handle: &Handle, addr: IpAddr) -> Result<(), RouteError> {
        self.replace(handle, addr, self.message(addr)).await
    }

    /// Removes the route of `addr` (idempotent: a missing route is not an error).
    pub async fn remove(&self, handle: &Handle, addr: IpAddr) -> Result<(), RouteError> {
        match handle.route().del(self.message(addr)).execute().await {
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ESRCH => Ok(()),
            r => r.map_err(|source| self.error(addr, source)),
        }
    }

    /// Every host route with vipd's protocol in the table: what an earlier run left (a crash
    /// skips the withdraw) and what the self-check compares.
    pub async fn installed(&self, handle: &Handle) -> Result<BTreeSet<IpAddr>, RouteError> {
        let mut out = BTreeSet::new();
        for query in [
            RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ] {
            let mut routes = handle.route().get(query).execute();
            let list = |source| RouteError::List {
                table: self.table,
                source,
            };
            while let Some(r) = routes.try_next().await.map_err(list)? {
                if u8::from(r.header.protocol) != self.protocol || table_of(&r) != self.table {
                    continue;
                }
                let full =
                    if r.header.address_family == rtnetlink::packet_route::AddressFamily::Inet {
                        32
                    } else {
                        128
                    };
                if r.header.destination_prefix_length != full {
                    continue;
                }
                out.extend(r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
                    RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
                    _ => None,
                }));
            }
        }
        Ok(out)
    }

    /// Makes `addr` local on this host without an address on `lo` (idempotent): a `local`
    /// route in the kernel's local table, as `ip route add local VIP dev lo table local`
    /// does. A backend accepts direct-server-return traffic for a routed VIP through it; an
    /// address on `lo` would do the same but also give routing daemons a connected /32
    /// that outranks (distance 0) the imported route they should announce, so a routed VIP
    /// would never be announced from a node that is its own backend.
    pub async fn add_local(&self, handle: &Handle, addr: IpAddr) -> Result<(), RouteError> {
        let lo = lo_index().ok_or(RouteError::NoLoopback)?;
        let msg = self
            .host_route(addr)
            .table_id(RT_TABLE_LOCAL)
            .scope(RouteScope::Host)
            .kind(RouteType::Local)
            .output_interface(lo)
            .build();
        self.replace(handle, addr, msg).await
    }

    fn error(&self, addr: IpAddr, source: rtnetlink::Error) -> RouteError {
        RouteError::Netlink {
            addr,
            table: self.table,
            source,
        }
    }
}

/// A route's table: the 32-bit attribute when present (tables above 255), else the header's.
fn table_of(r: &RouteMessage) -> u32 {
    r.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table))
}

fn lo_index() -> Option<u32> {
    // SAFETY: a valid NUL-terminated C string.
    match unsafe { libc::if_nametoindex(c"lo".as_ptr()) } {
        0 => None,
        i => Some(i),
    }
}
