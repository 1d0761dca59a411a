//! How a backend is reached: the next hop the kernel's routing and neighbour tables give
//! (looked up by `shell::neighbours`), and the status text for it.
use std::net::IpAddr;

use crate::config::Forward;

/// Where frames for a backend go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// The on-link address whose MAC we need: the backend itself, or its gateway.
    pub via: IpAddr,
    /// True when the backend is directly on-link (L2 DSR needs that).
    pub on_link: bool,
    pub mac: Option<[u8; 6]>,
    /// The kernel's route lookup for the backend, when it found none. `mac` is then None and
    /// `on_link` false: a leftover neighbour entry must not make it look reachable.
    pub no_route: Option<NoRoute>,
    /// The attached interface the route leaves by, as its egress port (`Backend::egress`,
    /// 1..), when this node has several; 0: out the interface a packet came in on (one
    /// attached interface, or a route by an interface the program is not attached to).
    pub egress: u8,
}

/// Why the kernel has no usable route to a backend: the lookup's answer, told apart because
/// the fix differs (add a route, or remove a deliberate reject route).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoRoute {
    /// ENETUNREACH: no route matches (typically no default route either).
    Missing,
    /// EHOSTUNREACH: an `unreachable` route matches.
    Unreachable,
    /// EINVAL: a `blackhole` route matches.
    Blackhole,
    /// EACCES: a `prohibit` route matches.
    Prohibit,
}

impl NoRoute {
    fn detail(self) -> &'static str {
        match self {
            Self::Missing => "",
            Self::Unreachable => " (an unreachable route matches)",
            Self::Blackhole => " (a blackhole route matches)",
            Self::Prohibit => " (a prohibit route matches)",
        }
    }
}

impl NextHop {
    /// For `vipd status`: why the backend cannot be reached, or the MAC frames go to. Route
    /// problems come first: "UNRESOLVED neighbour" would send the operator chasing ARP when
    /// the real problem is the routing table.
    pub fn describe(&self, backend: IpAddr, forward: Forward) -> String {
        if let Some(why) = self.no_route {
            return format!(
                "no route to {backend}{}: frames for it have nowhere to go",
                why.detail()
            );
        }
        match self.mac {
            None => format!("UNRESOLVED neighbour {}", self.via),
            Some(_) if !self.on_link && forward == Forward::L2 => {
                format!("NOT ON-LINK (via {}): use forward = \"encap\"", self.via)
            }
            Some(mac) => mac_text(&mac),
        }
    }
}

/// `02:00:00:00:00:01`.
fn mac_text(mac: &[u8; 6]) -> String {
    let hex: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    hex.join(":")
}
