//! No blackholed large packet, through BPF_PROG_TEST_RUN: a packet that encapsulation (to an
//! IPIP/IP6IP6 backend, or as a second chance) would grow past the receiving interface's MTU
//! is answered with ICMP fragmentation-needed / packet-too-big from the VIP, announcing the
//! MTU minus the outer header, quoting the packet's start; one that fits is encapsulated; one
//! that cannot be answered (IPv4 without DF, an ICMP error) is dropped and counted. Every row
//! is also checked against the host model, byte for byte, and the expected answer is built
//! independently with the test's own packet builder.
use vip_common::{
    maps::{reason::*, Backend, Settings, VipInfo, VipKey, FWD_ENCAP, FWD_L2, FWD_LOCAL},
    wire::{FAMILY_V4, FAMILY_V6, IPPROTO_TCP, XDP_DROP, XDP_TX},
};
use vip_daemon::{
    core::model::LocalSockets,
    shell::dataplane::{Sizing, TableRegion},
};
use vip_tests::{
    fixture::Balancer,
    packet::{self, Flow, Frame},
    privileged,
};

const M: u32 = 251;
const MTU: u16 = 1500;
const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const CLIENT4: [u8; 4] = [198, 18, 0, 7];
const CLIENT6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
const VIP4: [u8; 4] = [192, 0, 2, 14];
const VIP6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x14];
/// VIP4 ports: encapsulated, L2, and this node's own service (second chance when it has no
/// socket; nothing on a test machine listens on it).
const ENCAP_PORT: u16 = 80;
const L2_PORT: u16 = 81;
const LOCAL_PORT: u16 = 47_126;
const DF: u16 = 0x4000;

fn a4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0; 16];
    x[..4].copy_from_slice(&a);
    x
}

/// VIP4:80 (IPIP to backend 0), VIP6:80 (IP6IP6 to backend 1), VIP4:81 (L2 to backend 2),
/// VIP4:47126 (this node, backend 3; fallback table: backend 0); interface MTU 1500.
fn balancer() -> Balancer {
    let sizing = Sizing {
        vips: 4,
        fallbacks: 1,
        backends: 4,
        slots: 10 * M,
        peers: 1,
        interfaces: 1,
        flows: 0,
    };
    let settings = Settings {
        hash_seed: 11,
        encap_src_v4: [10, 255, 0, 0],
        encap_src_v6: [0xfd, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ..Default::default()
    };
    let mut b = Balancer::new(sizing, settings);
    let backends = [
        (a4([198, 51, 100, 8]), FAMILY_V4, FWD_ENCAP),
        (
            [0x20, 1, 0xd, 0xb8, 0xbe, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8],
            FAMILY_V6,
            FWD_ENCAP,
        ),
        (a4([10, 0, 0, 9]), FAMILY_V4, FWD_L2),
        (a4([10, 0, 0, 1]), FAMILY_V4, FWD_LOCAL),
    ];
    for (i, (addr, family, mode)) in backends.into_iter().enumerate() {
        let mac = [2, 0xbe, 0, 0, 0, i as u8];
        let backend = Backend {
            addr,
            mac,
            family,
            mode,
            ..Backend::default()
        };
        b.set_backend(i as u32, backend);
    }
    let vips = [
        (a4(VIP4), ENCAP_PORT, FAMILY_V4, 0),
        (VIP6, ENCAP_PORT, FAMILY_V6, 1),
        (a4(VIP4), L2_PORT, FAMILY_V4, 2),
        (a4(VIP4), LOCAL_PORT, FAMILY_V4, 3),
    ];
    for (index, (addr, port, family, backend)) in vips.into_iter().enumerate() {
        let key = VipKey {
            addr,
            port,
            proto: IPPROTO_TCP,
            family,
        };
        let info = VipInfo {
            index: index as u32,
            table_size: M,
            flags: 0,
            // The local VIP's fallback table is at ACTIVE word 4.
            fallback: if backend == 3 { 5 } else { 0 },
        };
        b.set_vip(key, info);
        let region = TableRegion {
            vip_index: index as u32,
            base: index as u32 * 2 * M,
            size: M,
        };
        b.publish(&region, &vec![backend; M as usize]);
    }
    let fallback = TableRegion {
        vip_index: 4,
        base: 8 * M,
        size: M,
    };
    b.publish(&fallback, &vec![0; M as usize]);
    b.model.sockets = Some(LocalSockets::default());
    b.set_own_iface(OUR_MAC, MTU);
    b
}

/// A client's TCP segment from a frame `frame`, `ip_len` bytes at L3.
fn segment(frame: &Frame, flow: &Flow, ip_len: usize) -> Vec<u8> {
    let headers = if matches!(flow.src, packet::Addr::V4(_)) {
        40
    } else {
        60
    };
    let frame = Frame {
        payload: vec![0xab; ip_len - headers],
        src_mac: CLIENT_MAC,
        dst_mac: OUR_MAC,
        ..frame.clone()
    };
    packet::l4_frame(&frame, flow)
}

/// The answer, built independently: from the VIP to the client, back to the sender's MAC
/// with the same tags, quoting the first 28 (IPv4) or 48 (IPv6) bytes of the packet.
fn expected_answer(sent: &[u8], frame: &Frame, flow: &Flow, mtu: u32) -> Vec<u8> {
    let l3 = packet::l3_offset(frame);
    let back = Frame {
        dst_mac: CLIENT_MAC,
        src_mac: OUR_MAC,
        vlans: frame.vlans.clone(),
        ..Frame::default()
    };
    match (flow.src, flow.dst) {
        (packet::Addr::V4(client), packet::Addr::V4(vip)) => {
            packet::icmp4_frag_needed(&back, vip, client, mtu as u16, &sent[l3..l3 + 28])
        }
        (packet::Addr::V6(client), packet::Addr::V6(vip)) => {
            packet::icmp6_packet_too_big(&back, vip, client, mtu, &sent[l3..l3 + 48])
        }
        _ => unreachable!("one family per flow"),
    }
}

#[test]
fn too_big_packets_are_answered_never_blackholed() {
    if !privileged("too_big_packets_are_answered_never_blackholed") {
        return;
    }
    let mut b = balancer();
    let df = Frame {
        frag: DF,
        ..Frame::default()
    };
    let tagged = Frame {
        vlans: vec![(0x8100, 42)],
        ..df.clone()
    };
    let v4 = Flow::tcp4(CLIENT4, 40_001, VIP4, ENCAP_PORT);
    let v6 = Flow::tcp6(CLIENT6, 40_002, VIP6, ENCAP_PORT);
    let local = Flow::tcp4(CLIENT4, 40_003, VIP4, LOCAL_PORT);
    let l2 = Flow::tcp4(CLIENT4, 40_004, VIP4, L2_PORT);

    // Too big once encapsulated: answered, announcing the MTU left for the inner packet.
    for (name, frame, flow, ip_len, mtu) in [
        ("IPIP, 1500 bytes", &df, &v4, 1500, 1480),
        ("IPIP, 1481 bytes", &df, &v4, 1481, 1480),
        ("IPIP, VLAN-tagged", &tagged, &v4, 1500, 1480),
        ("IP6IP6, 1500 bytes", &df, &v6, 1500, 1460),
        ("IP6IP6, 1461 bytes", &df, &v6, 1461, 1460),
        ("second chance", &df, &local, 1500, 1480),
    ] {
        let sent = segment(frame, flow, ip_len);
        let (run, out) = b.check(&sent);
        assert_eq!((run.action, out.reason), (XDP_TX, TX_TOO_BIG), "{name}");
        let want = expected_answer(&sent, frame, flow, mtu);
        assert_eq!(run.output, want, "{name}: the answer");
        let l3 = packet::l3_offset(frame);
        assert!(packet::verify_l4_checksum(&run.output[l3..]), "{name}");
    }

    // Fits once encapsulated (exactly, or not grown at all): forwarded as before.
    for (name, flow, ip_len, reason, grown) in [
        ("IPIP, 1480 bytes", &v4, 1480, TX_ENCAP, 20),
        ("IP6IP6, 1460 bytes", &v6, 1460, TX_ENCAP, 40),
        ("L2, 1500 bytes", &l2, 1500, TX_L2, 0),
        (
            "second chance, 1480 bytes",
            &local,
            1480,
            TX_SECOND_CHANCE,
            20,
        ),
    ] {
        let sent = segment(&df, flow, ip_len);
        let (run, out) = b.check(&sent);
        assert_eq!((run.action, out.reason), (XDP_TX, reason), "{name}");
        assert_eq!(run.output.len(), sent.len() + grown, "{name}");
    }

    // Not answerable: IPv4 without DF (it asks to be fragmented), and an ICMP error (never
    // answered with another) about a flow of the encapsulated VIP.
    let no_df = segment(&Frame::default(), &v4, 1500);
    let (run, out) = b.check(&no_df);
    assert_eq!((run.action, out.reason), (XDP_DROP, DROP_TOO_BIG), "no DF");
    let reply = packet::l3_packet(&df, &Flow::tcp4(VIP4, ENCAP_PORT, CLIENT4, 40_001));
    let mut quoted = reply.clone();
    quoted.resize(1480, 0);
    let icmp = packet::icmp4_frag_needed(&df, [10, 9, 9, 9], VIP4, 1400, &quoted);
    let (run, out) = b.check(&icmp);
    assert_eq!((run.action, out.reason), (XDP_DROP, DROP_TOO_BIG), "ICMP");

    // An interface whose MTU vipd could not read: not checked, encapsulated as before.
    b.set_own_iface(OUR_MAC, 0);
    let (run, out) = b.check(&segment(&df, &v4, 1500));
    assert_eq!((run.action, out.reason), (XDP_TX, TX_ENCAP), "MTU unknown");
    assert_eq!(run.output.len(), 14 + 1520);

    let stats = b.dp.stats().expect("stats");
    assert_eq!(stats[TX_TOO_BIG as usize].packets, 6, "answers counted");
    assert_eq!(stats[DROP_TOO_BIG as usize].packets, 2, "drops counted");
}
