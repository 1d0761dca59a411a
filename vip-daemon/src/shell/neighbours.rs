//! Backend MACs and next hops from the kernel, through rtnetlink: a route lookup says whether a
//! backend is on-link or behind a gateway, the neighbour table says which MAC answers. A backend
//! whose next hop has no usable neighbour entry is reported, never used with a guessed MAC. The
//! health probes talk to each backend, which keeps its neighbour entry resolved.
use std::{collections::HashMap, net::IpAddr};

use futures::TryStreamExt as _;
use rtnetlink::{
    packet_route::{
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState},
        route::{RouteAddress, RouteAttribute},
    },
    Handle, RouteMessageBuilder,
};

/// Where frames for a backend go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// The on-link address whose MAC we need: the backend itself, or its gateway.
    pub via: IpAddr,
    /// True when the backend is directly on-link (L2 DSR needs that).
    pub on_link: bool,
    pub mac: Option<[u8; 6]>,
}

#[derive(Debug, thiserror::Error)]
pub enum NeighbourError {
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
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

/// The gateway the kernel would use for `dst`, if any.
async fn gateway(handle: &Handle, dst: IpAddr) -> Result<Option<IpAddr>, NeighbourError> {
    let prefix = if dst.is_ipv4() { 32 } else { 128 };
    let msg = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dst, prefix)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?
        .build();
    let mut routes = handle.route().get(msg).execute();
    while let Some(route) = routes.try_next().await? {
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => return Ok(Some((*g).into())),
                RouteAttribute::Gateway(RouteAddress::Inet6(g)) => return Ok(Some((*g).into())),
                _ => {}
            }
        }
    }
    Ok(None)
}

/// Next hops of `backends`. A failed route lookup (no route) leaves the backend unresolved.
pub async fn resolve(
    handle: &Handle,
    backends: &[IpAddr],
) -> Result<HashMap<IpAddr, NextHop>, NeighbourError> {
    let table = neighbour_table(handle).await?;
    let mut out = HashMap::new();
    for &b in backends {
        let gw = gateway(handle, b).await.ok().flatten();
        let via = gw.unwrap_or(b);
        out.insert(
            b,
            NextHop {
                via,
                on_link: gw.is_none(),
                mac: table.get(&via).copied(),
            },
        );
    }
    Ok(out)
}
