//! Second chance through BPF_PROG_TEST_RUN: a packet meant for this node's own backend whose
//! service has no socket (it died, the tables have not caught up) goes, encapsulated, to the
//! backend of the VIP's fallback table; with a socket it is delivered locally; a TCP segment
//! of a connection this node does not have goes on too (a listener takes only a SYN); a
//! packet already given a second chance (encapsulated, a lower outer TTL) may be given one
//! more, then is delivered, never forwarded again.
//! Every row is also checked against the host model, byte for byte.
use std::{
    collections::HashSet,
    net::{SocketAddr, TcpListener, TcpStream},
};

use vip_common::{
    encap::{OUTER_TTL, SECOND_CHANCES},
    maps::{reason::*, Backend, Settings, VipInfo, VipKey, FWD_L2, FWD_LOCAL, SETTINGS_F_PEERS},
    wire::{FAMILY_V4, IPPROTO_TCP, IPPROTO_UDP, XDP_PASS, XDP_TX},
};
use vip_daemon::{
    core::model::LocalSockets,
    shell::dataplane::{Sizing, TableRegion},
};
use vip_tests::{
    fixture::Balancer,
    packet::{self, Addr, Flow, Frame},
    privileged, NetNs,
};

const M: u32 = 251;
const VIP: [u8; 4] = [10, 99, 0, 100];
const CLIENT: [u8; 4] = [198, 18, 0, 9];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0xee, 1];
/// Ports nothing else on a test machine listens on.
const TCP_PORT: u16 = 47_123;
const UDP_PORT: u16 = 47_124;

fn a4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0; 16];
    x[..4].copy_from_slice(&a);
    x
}

fn mac_of(index: u32) -> [u8; 6] {
    [2, 0xbe, 0, 0, 0, index as u8]
}

/// Two VIPs (TCP and UDP) whose live tables send everything to this node (backend 0) and
/// whose fallback tables spread over backends 1 and 2 on other nodes.
fn balancer() -> Balancer {
    let regions: Vec<TableRegion> = (0..4)
        .map(|i| TableRegion {
            vip_index: i,
            base: i * 2 * M,
            size: M,
        })
        .collect();
    let sizing = Sizing {
        vips: 2,
        fallbacks: 2,
        backends: 3,
        slots: 8 * M,
        peers: 1,
        interfaces: 1,
        flows: 0,
    };
    let settings = Settings {
        hash_seed: 7,
        encap_src_v4: [10, 255, 0, 0],
        layout_id: 0,
        flags: SETTINGS_F_PEERS,
        encap_src_v6: [0; 16],
        ..Default::default()
    };
    let mut b = Balancer::new(sizing, settings);
    for i in 0..3u32 {
        b.set_backend(
            i,
            Backend {
                addr: a4([10, 0, 0, 1 + i as u8]),
                mac: mac_of(i),
                family: FAMILY_V4,
                mode: if i == 0 { FWD_LOCAL } else { FWD_L2 },
                ..Backend::default()
            },
        );
    }
    for (index, port, proto) in [(0, TCP_PORT, IPPROTO_TCP), (1, UDP_PORT, IPPROTO_UDP)] {
        let key = VipKey {
            addr: a4(VIP),
            port,
            proto,
            family: FAMILY_V4,
        };
        let info = VipInfo {
            index,
            table_size: M,
            flags: 0,
            // ACTIVE words 2 and 3 hold the fallback tables.
            fallback: index + 2 + 1,
        };
        b.set_vip(key, info);
    }
    let local: Vec<u32> = vec![0; M as usize];
    let fallback: Vec<u32> = (0..M).map(|s| 1 + s % 2).collect();
    for (r, table) in regions.iter().zip([&local, &local, &fallback, &fallback]) {
        b.publish(r, table);
    }
    b.set_peer(PEER_MAC);
    b.model.sockets = Some(LocalSockets::default());
    b
}

/// The outer destination of an IPIP frame (no VLAN).
fn outer_dst(out: &[u8]) -> [u8; 4] {
    out[30..34].try_into().expect("4 bytes")
}

/// The outer TTL of an IPIP frame (no VLAN): the second chances it has left.
fn outer_ttl(out: &[u8]) -> u8 {
    out[22]
}

#[test]
fn second_chance_sends_socketless_packets_on_at_most_twice() {
    if !privileged("second_chance_sends_socketless_packets_on_at_most_twice") {
        return;
    }
    // The program looks sockets up in the namespace of the receiving device; under
    // BPF_PROG_TEST_RUN that is the calling thread's, so the test owns one.
    let ns = NetNs::new("vsc");
    ns.exec(&["ip", "addr", "add", "10.99.0.100/32", "dev", "lo"]);
    ns.run(socketless_packets_go_on);
}

fn socketless_packets_go_on() {
    let mut b = balancer();
    let client = Frame::default();
    let syn = packet::l4_frame(&client, &Flow::tcp4(CLIENT, 40_000, VIP, TCP_PORT));

    // No socket: the SYN goes, encapsulated, to a backend of the fallback table.
    let (run, out) = b.check(&syn);
    assert_eq!((run.action, out.reason), (XDP_TX, TX_SECOND_CHANCE));
    let dst = outer_dst(&run.output);
    assert!(
        dst == [10, 0, 0, 2] || dst == [10, 0, 0, 3],
        "outer dst {dst:?}"
    );
    assert_eq!(
        &run.output[34..],
        &syn[14..],
        "the inner packet is untouched"
    );
    let summary = packet::parse_summary(&run.output).expect("parses");
    assert_eq!(summary.proto, 4, "IPIP");
    assert_eq!(
        summary.inner.as_ref().map(|i| (i.dst, i.dport)),
        Some((Addr::V4(VIP), TCP_PORT))
    );

    // Forwarded to us by a peer: the same second chance.
    let from_peer = Frame {
        src_mac: PEER_MAC,
        ..Frame::default()
    };
    let peer_syn = packet::l4_frame(&from_peer, &Flow::tcp4(CLIENT, 40_001, VIP, TCP_PORT));
    let (run, out) = b.check(&peer_syn);
    assert_eq!((run.action, out.reason), (XDP_TX, TX_SECOND_CHANCE));

    // Given one second chance already (encapsulated to us, outer TTL one lower): a second
    // and last one, the outer TTL one lower again.
    assert_eq!(outer_ttl(&run.output), OUTER_TTL - 1);
    let mut back = run.output.clone();
    back[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    let (run, out) = b.check(&back);
    assert_eq!((run.action, out.reason), (XDP_TX, TX_SECOND_CHANCE));
    assert_eq!(outer_ttl(&run.output), OUTER_TTL - SECOND_CHANCES);
    assert_eq!(&run.output[34..], &peer_syn[14..], "the same inner packet");
    // Given all its second chances: delivered, never sent again.
    let mut last = run.output.clone();
    last[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    let (run, out) = b.check(&last);
    assert_eq!((run.action, out.reason), (XDP_PASS, PASS_DECAP));
    assert_eq!(&run.output[14..], &peer_syn[14..]);
    // Sent to us encapsulated by a peer's table (full TTL): a first second chance.
    let mut fresh = back.clone();
    fresh[22] = OUTER_TTL;
    let csum = packet::ipv4_checksum(&fresh[14..34]);
    fresh[24..26].copy_from_slice(&csum.to_be_bytes());
    let (run, out) = b.check(&fresh);
    assert_eq!((run.action, out.reason), (XDP_TX, TX_SECOND_CHANCE));
    assert_eq!(outer_ttl(&run.output), OUTER_TTL - 1);

    // UDP to a service without a bound socket: second chance too.
    let dgram = packet::l4_frame(&client, &Flow::udp4(CLIENT, 5353, VIP, UDP_PORT));
    let (run, out) = b.check(&dgram);
    assert_eq!((run.action, out.reason), (XDP_TX, TX_SECOND_CHANCE));

    // With the service's sockets back (listening on the wildcard address), new flows are
    // delivered locally: the SYN, the peer's SYN, the datagram.
    let listener = TcpListener::bind(("0.0.0.0", TCP_PORT)).expect("listen");
    let _udp = std::net::UdpSocket::bind(("0.0.0.0", UDP_PORT)).expect("bind");
    let mut sockets = LocalSockets {
        bound: HashSet::from([
            (IPPROTO_TCP, [0; 16], TCP_PORT),
            (IPPROTO_UDP, [0; 16], UDP_PORT),
        ]),
        ..LocalSockets::default()
    };
    b.model.sockets = Some(sockets.clone());
    for frame in [&syn, &peer_syn, &dgram, &back, &fresh] {
        let (run, out) = b.check(frame);
        assert_eq!(run.action, XDP_PASS, "{}", NAMES[out.reason as usize]);
        assert!([PASS_LOCAL, PASS_FROM_PEER, PASS_DECAP].contains(&out.reason));
    }

    // A segment of a connection this node does not have (made while its backend was out
    // of the tables) belongs to the fallback table's backend: the listener would reset it.
    let ack = Frame {
        tcp_flags: 0x10,
        ..Frame::default()
    };
    let stray = packet::l4_frame(&ack, &Flow::tcp4(CLIENT, 40_002, VIP, TCP_PORT));
    let (run, out) = b.check(&stray);
    assert_eq!((run.action, out.reason), (XDP_TX, TX_SECOND_CHANCE));
    let peer_ack = Frame {
        src_mac: PEER_MAC,
        ..ack.clone()
    };
    let stray = packet::l4_frame(&peer_ack, &Flow::tcp4(CLIENT, 40_003, VIP, TCP_PORT));
    let (run, out) = b.check(&stray);
    assert_eq!((run.action, out.reason), (XDP_TX, TX_SECOND_CHANCE));

    // A segment of a connection this node has: delivered locally.
    let conn = TcpStream::connect((std::net::Ipv4Addr::from(VIP), TCP_PORT)).expect("connect");
    let _accepted = listener.accept().expect("accept");
    let SocketAddr::V4(from) = conn.local_addr().expect("local addr") else {
        panic!("IPv4 connection");
    };
    let (src, sport) = (from.ip().octets(), from.port());
    sockets
        .connections
        .insert((a4(src), sport, a4(VIP), TCP_PORT));
    b.model.sockets = Some(sockets);
    for frame in [&ack, &peer_ack] {
        let segment = packet::l4_frame(frame, &Flow::tcp4(src, sport, VIP, TCP_PORT));
        let (run, out) = b.check(&segment);
        assert_eq!(run.action, XDP_PASS, "{}", NAMES[out.reason as usize]);
        assert!(out.reason == PASS_LOCAL || out.reason == PASS_FROM_PEER);
    }
}
