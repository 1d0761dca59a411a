//! Backend MACs and next hops from the kernel, through rtnetlink: a route lookup says whether a
//! backend is on-link or behind a gateway, the neighbour table says which MAC answers. A backend
//! whose next hop has no usable neighbour entry is reported, never used with a guessed MAC. The
//! health probes talk to each backend, which keeps its neighbour entry resolved.
use std::{collections::HashMap, net::IpAddr};

use futures::TryStreamExt as _;
use rtnetlink::{
    packet_route::{
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState},
        route::{RouteAddress, RouteAttribute, RouteType},
    },
    Handle, RouteMessageBuilder,
};

pub use crate::core::backends::{NextHop, NoRoute};

impl NoRoute {
    /// The route lookup failure `errno` (positive) means "no usable route", or it is
    /// another failure (socket trouble, a malformed request) and None.
    pub fn from_errno(errno: i32) -> Option<Self> {
        match errno {
            libc::ENETUNREACH => Some(Self::Missing),
            libc::EHOSTUNREACH => Some(Self::Unreachable),
            libc::EINVAL => Some(Self::Blackhole),
            libc::EACCES => Some(Self::Prohibit),
            _ => None,
        }
    }

    /// A route returned with a rejecting type (the kernel answers some lookups this way
    /// instead of with an error).
    fn from_route_type(kind: RouteType) -> Option<Self> {
        match kind {
            RouteType::Unreachable => Some(Self::Unreachable),
            RouteType::BlackHole => Some(Self::Blackhole),
            RouteType::Prohibit => Some(Self::Prohibit),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NeighbourError {
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
}

impl NeighbourError {
    /// EBUSY: another dump was in progress on the shared netlink socket (the self-check's
    /// address dump, say); worth one more try a moment later.
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Netlink(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == libc::EBUSY)
    }
}

/// A netlink connection (its driver task is spawned on the current tokio runtime).
pub fn connect() -> Result<Handle, NeighbourError> {
    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Usable neighbour entries (not failed/incomplete), address -> MAC.
pub async fn neighbour_table(handle: &Handle) -> Result<HashMap<IpAddr, [u8; 6]>, NeighbourError> {
    let mut out = HashMap::new();
    let mut dump = handle.neighbours().get().execute();
    while let Some(msg) = dump.try_next().await? {
        if matches!(
            msg.header.state,
            NeighbourState::Failed | NeighbourState::Incomplete | NeighbourState::None
        ) {
            continue;
        }
        let (mut addr, mut mac) = (None, None);
        for attr in &msg.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    addr = Some((*a).into())
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                    addr = Some((*a).into())
                }
                NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                    mac = Some([l[0], l[1], l[2], l[3], l[4], l[5]])
                }
                _ => {}
            }
        }
        if let (Some(a), Some(m)) = (addr, mac) {
            out.insert(a, m);
        }
    }
    Ok(out)
}

/// What the kernel's route lookup (`ip route get`) says about a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Route {
    OnLink,
    Gateway(IpAddr),
    None(NoRoute),
}

/// The route the kernel would use for `dst`, and the interface it leaves by. Lookups the
/// kernel answers with "no route" are [`Route::None`]; any other failure is an error.
async fn route(handle: &Handle, dst: IpAddr) -> Result<(Route, Option<u32>), NeighbourError> {
    let prefix = if dst.is_ipv4() { 32 } else { 128 };
    let msg = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst, prefix)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?
        .build();
    // A route lookup answers with one route (the one the kernel would use).
    let mut routes = handle.route().get(msg).execute();
    let route = match routes.try_next().await {
        Ok(Some(route)) => route,
        Ok(None) => return Ok((Route::OnLink, None)),
        Err(rtnetlink::Error::NetlinkError(e)) => {
            // The kernel's error code is a negative errno.
            return match NoRoute::from_errno(-e.raw_code()) {
                Some(why) => Ok((Route::None(why), None)),
                None => Err(rtnetlink::Error::NetlinkError(e).into()),
            };
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(why) = NoRoute::from_route_type(route.header.kind) {
        return Ok((Route::None(why), None));
    }
    let (mut found, mut oif) = (Route::OnLink, None);
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => found = Route::Gateway((*g).into()),
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => found = Route::Gateway((*g).into()),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    Ok((found, oif))
}

/// Next hops of `backends`. A backend the kernel has no route to gets a [`NextHop`] saying
/// so; a lookup that fails for another reason fails the whole resolve (the caller keeps the
/// hops it had), rather than passing for "on-link". `ports`: the interface index of each
/// egress port (port i + 1), empty when this node has one attached interface.
pub async fn resolve(
    handle: &Handle,
    backends: &[IpAddr],
    ports: &[u32],
) -> Result<HashMap<IpAddr, NextHop>, NeighbourError> {
    let table = neighbour_table(handle).await?;
    let mut out = HashMap::new();
    for &b in backends {
        let (route, oif) = route(handle, b).await?;
        let mut hop = next_hop(b, route, &table);
        hop.egress = egress_port(oif, ports);
        out.insert(b, hop);
    }
    Ok(out)
}

/// The egress port of a route leaving by interface `oif` (see `NextHop::egress`).
fn egress_port(oif: Option<u32>, ports: &[u32]) -> u8 {
    oif.and_then(|i| ports.iter().position(|p| *p == i))
        .map_or(0, |at| at as u8 + 1)
}

/// The next hop for `backend` given its route and the neighbour table (egress port 0).
fn next_hop(backend: IpAddr, route: Route, table: &HashMap<IpAddr, [u8; 6]>) -> NextHop {
    match route {
        Route::None(why) => NextHop {
            via: backend,
            on_link: false,
            mac: None,
            no_route: Some(why),
            egress: 0,
        },
        Route::OnLink | Route::Gateway(_) => {
            let via = match route {
                Route::Gateway(g) => g,
                _ => backend,
            };
            NextHop {
                via,
                on_link: route == Route::OnLink,
                mac: table.get(&via).copied(),
                no_route: None,
                egress: 0,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Forward;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x11];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn route_lookup_errors() {
        assert_eq!(
            NoRoute::from_errno(libc::ENETUNREACH),
            Some(NoRoute::Missing)
        );
        assert_eq!(
            NoRoute::from_errno(libc::EHOSTUNREACH),
            Some(NoRoute::Unreachable)
        );
        assert_eq!(NoRoute::from_errno(libc::EINVAL), Some(NoRoute::Blackhole));
        assert_eq!(NoRoute::from_errno(libc::EACCES), Some(NoRoute::Prohibit));
        assert_eq!(NoRoute::from_errno(libc::ENOBUFS), None);
        assert_eq!(NoRoute::from_errno(libc::EPERM), None);
    }

    #[test]
    fn no_route_is_not_an_unresolved_neighbour() {
        let b = ip("10.1.2.3");
        // A stale neighbour entry for the address must not make it look reachable.
        let table = HashMap::from([(b, MAC)]);
        let hop = next_hop(b, Route::None(NoRoute::Missing), &table);
        assert_eq!((hop.mac, hop.on_link), (None, false));
        let text = hop.describe(b, Forward::L2);
        assert!(text.starts_with("no route to 10.1.2.3:"), "{text}");
        assert!(!text.contains("UNRESOLVED"), "{text}");
        let text = next_hop(b, Route::None(NoRoute::Blackhole), &table).describe(b, Forward::Encap);
        assert!(
            text.starts_with("no route to 10.1.2.3 (a blackhole route matches)"),
            "{text}"
        );
    }

    #[test]
    fn a_route_by_another_attached_interface_gets_its_port() {
        let ports = [7, 9];
        assert_eq!(egress_port(Some(9), &ports), 2);
        assert_eq!(egress_port(Some(7), &ports), 1);
        assert_eq!(
            egress_port(Some(3), &ports),
            0,
            "not attached: out the receiving one"
        );
        assert_eq!(egress_port(None, &ports), 0);
        assert_eq!(egress_port(Some(7), &[]), 0, "one attached interface");
    }

    #[test]
    fn routed_backends() {
        let (b, gw) = (ip("10.1.2.3"), ip("10.0.0.1"));
        let none = HashMap::new();
        let text = next_hop(b, Route::OnLink, &none).describe(b, Forward::L2);
        assert_eq!(text, "UNRESOLVED neighbour 10.1.2.3");
        let text = next_hop(b, Route::Gateway(gw), &none).describe(b, Forward::Encap);
        assert_eq!(text, "UNRESOLVED neighbour 10.0.0.1");
        let table = HashMap::from([(gw, MAC)]);
        let hop = next_hop(b, Route::Gateway(gw), &table);
        assert_eq!((hop.via, hop.on_link, hop.mac), (gw, false, Some(MAC)));
        assert!(hop
            .describe(b, Forward::L2)
            .starts_with("NOT ON-LINK (via 10.0.0.1)"));
        assert_eq!(hop.describe(b, Forward::Encap), "02:00:00:00:00:11");
        let table = HashMap::from([(b, MAC)]);
        assert_eq!(
            next_hop(b, Route::OnLink, &table).describe(b, Forward::L2),
            "02:00:00:00:00:11"
        );
    }
}
