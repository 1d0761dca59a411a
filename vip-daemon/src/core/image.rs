//! Map values computed from the config and the daemon's state, purely: what
//! `shell::dataplane::MapWriter` writes. VIPS entries come from `core::plan`, tables from
//! `core::maglev` / `plan::build_table`; this module holds the rest.
use std::net::IpAddr;

use vip_common::flow::addr_words;
use vip_common::maps::{
    Backend, Settings, BACKEND_F_KEEP_FLOWS, FWD_ENCAP, FWD_L2, FWD_LOCAL, SETTINGS_F_ALL_PORTS,
    SETTINGS_F_DEBUG, SETTINGS_F_DEBUG_SRC, SETTINGS_F_DEBUG_VIP, SETTINGS_F_PEERS,
};
use vip_common::{
    encap::encap_source_key,
    maps::EncapSourceKey,
    wire::{FAMILY_V4, FAMILY_V6},
};

use crate::{
    config::{BackendConf, Config, Forward},
    core::{backends, plan::addr16},
};

/// What `vipd debug packets` asked the XDP program to log: every VIP packet, or only those
/// to one VIP address and/or from one client address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketDebug {
    pub vip: Option<std::net::IpAddr>,
    pub src: Option<std::net::IpAddr>,
}

/// The SETTINGS entry. `peers`: PEERS lists at least one other node's MAC; `debug`: packet
/// logging on, with its filters.
pub fn settings(
    config: &Config,
    layout_id: u32,
    peers: bool,
    debug: Option<PacketDebug>,
) -> Settings {
    let mut flags = 0;
    if config.vips.iter().any(|v| v.port == 0) {
        flags |= SETTINGS_F_ALL_PORTS;
    }
    if peers {
        flags |= SETTINGS_F_PEERS;
    }
    let (mut debug_vip, mut debug_src) = ([0; 4], [0; 4]);
    if let Some(d) = debug {
        flags |= SETTINGS_F_DEBUG;
        if let Some(a) = d.vip {
            flags |= SETTINGS_F_DEBUG_VIP;
            debug_vip = addr_words(&addr16(&a).0);
        }
        if let Some(a) = d.src {
            flags |= SETTINGS_F_DEBUG_SRC;
            debug_src = addr_words(&addr16(&a).0);
        }
    }
    Settings {
        hash_seed: config.cluster.hash_seed,
        encap_src_v4: config.cluster.encap_source_v4.octets(),
        layout_id,
        flags,
        encap_src_v6: config.cluster.encap_source_v6.octets(),
        debug_vip,
        debug_src,
    }
}

/// The ENCAP_SOURCES entries: where the cluster's balancers send encapsulated packets from
/// (`cluster.encap_source_v4/v6`, identical on every node), so that this node decapsulates
/// what a peer's table or second chance sends it, and nothing else.
pub fn encap_sources(config: &Config) -> Vec<EncapSourceKey> {
    encap_sources_of(
        config.cluster.encap_source_v4,
        config.cluster.encap_source_v6,
    )
}

/// [`encap_sources`] of these `encap_source_v4/v6`.
pub fn encap_sources_of(v4: std::net::Ipv4Addr, v6: std::net::Ipv6Addr) -> Vec<EncapSourceKey> {
    let (v4, _) = addr16(&IpAddr::V4(v4));
    let (v6, _) = addr16(&IpAddr::V6(v6));
    vec![
        encap_source_key(v4, FAMILY_V4),
        encap_source_key(v6, FAMILY_V6),
    ]
}

/// What a backend's BACKENDS entry depends on besides its config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendFacts {
    /// The service runs on this node: delivered locally, never forwarded.
    pub local: bool,
    /// The next hop's MAC, when resolved.
    pub mac: Option<[u8; 6]>,
    /// The identity's serial (`core::alloc`): a flow entry of a removed backend whose index
    /// was reused is recognised and ignored.
    pub serial: u32,
    /// Established flows may stay on it (in the table, or drained / weight 0 while healthy).
    pub keep_flows: bool,
    /// `NextHop::egress`: the attached interface its next hop is behind (0: the receiving).
    pub egress: u8,
}

/// The BACKENDS entry of a backend at `address`.
pub fn backend_entry(address: &IpAddr, forward: Forward, facts: BackendFacts) -> Backend {
    let (addr, family) = addr16(address);
    let mode = match (facts.local, forward) {
        (true, _) => FWD_LOCAL,
        (false, Forward::Encap) => FWD_ENCAP,
        (false, _) => FWD_L2,
    };
    Backend {
        addr,
        mac: facts.mac.unwrap_or_default(),
        family,
        mode,
        serial: facts.serial,
        flags: if facts.keep_flows {
            BACKEND_F_KEEP_FLOWS
        } else {
            0
        },
        egress: if facts.local { 0 } else { facts.egress },
        _pad: [0; 2],
    }
}

/// The BACKENDS entry of a configured backend: its config and the backend core's state.
pub fn backend_value(conf: &BackendConf, b: &backends::Backend) -> Backend {
    let facts = BackendFacts {
        local: b.local,
        mac: b.next_hop.and_then(|h| h.mac),
        serial: b.serial,
        // A draining (or weight 0) backend keeps its established flows while it is
        // healthy; down or disabled, they move.
        keep_flows: b.keeps_flows(conf),
        egress: b.next_hop.map_or(0, |h| h.egress),
    };
    backend_entry(&conf.address, conf.forward, facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_wins_over_the_forward_mode_and_flags_follow_the_facts() {
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let facts = BackendFacts {
            local: true,
            mac: None,
            serial: 9,
            keep_flows: true,
            egress: 2,
        };
        let local = backend_entry(&a, Forward::Encap, facts);
        assert_eq!(local.egress, 0, "delivered here: no egress");
        assert_eq!(
            (local.mode, local.serial, local.flags),
            (FWD_LOCAL, 9, BACKEND_F_KEEP_FLOWS)
        );
        let remote = BackendFacts {
            local: false,
            mac: Some([2, 0, 0, 0, 0, 1]),
            keep_flows: false,
            ..facts
        };
        let l2 = backend_entry(&a, Forward::L2, remote);
        assert_eq!((l2.mode, l2.mac, l2.flags), (FWD_L2, [2, 0, 0, 0, 0, 1], 0));
        assert_eq!(l2.egress, 2, "behind the second attached interface");
        assert_eq!(backend_entry(&a, Forward::Encap, remote).mode, FWD_ENCAP);
    }
}
