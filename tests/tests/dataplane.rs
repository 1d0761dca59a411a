//! The balancer through BPF_PROG_TEST_RUN: a fixture table of (input frame, expected verdict,
//! expected reason, expected output bytes), every row also checked against the host model; then
//! counters after the run, a 100,000-packet property test, and table publishing under load.
use vip_common::{
    encap::outer_source_v4,
    flow::{addr_words, flow_hash},
    maps::{
        self, reason::*, Backend, Lease, LeaseKey, Settings, VipInfo, VipKey, FWD_ENCAP, FWD_L2,
        FWD_LOCAL, NO_BACKEND, VIP_F_LEASED, VIP_F_SRC_HASH,
    },
    wire::{FAMILY_V4, FAMILY_V6, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX},
};
use vip_daemon::shell::dataplane::{Prepare, Sizing, TableRegion};
use vip_tests::{
    fixture::{run_program, Balancer},
    packet::{self, Addr, Flow, Frame},
    privileged,
};

const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0xee, 1];
const SEED: u32 = 0x5eed_0001;
const M: u32 = 251;

const CLIENT4: [u8; 4] = [198, 18, 0, 7];
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7,
];
const VIP_WEB: [u8; 4] = [192, 0, 2, 10];
const VIP_AFFINITY: [u8; 4] = [192, 0, 2, 11];
const VIP_PB: [u8; 4] = [192, 0, 2, 12];
const VIP_LOCAL_ALL_PORTS: [u8; 4] = [192, 0, 2, 13];
const VIP_ENCAP4: [u8; 4] = [192, 0, 2, 14];
const VIP_EMPTY: [u8; 4] = [192, 0, 2, 15];
const VIP_DNS6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const VIP_ENCAP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x14,
];
const ENCAP_BACKEND4: [u8; 4] = [198, 51, 100, 8];
const ENCAP_BACKEND6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xbe, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9,
];
const ENCAP_SRC4: [u8; 4] = [10, 255, 0, 0];
const ENCAP_SRC6: [u8; 16] = [0xfd, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn mac_of(index: u32) -> [u8; 6] {
    [2, 0xbe, 0, 0, 0, index as u8]
}

fn a4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0; 16];
    x[..4].copy_from_slice(&a);
    x
}

fn key4(addr: [u8; 4], port: u16, proto: u8) -> VipKey {
    VipKey {
        addr: a4(addr),
        port,
        proto,
        family: FAMILY_V4,
    }
}

fn key6(addr: [u8; 16], port: u16, proto: u8) -> VipKey {
    VipKey {
        addr,
        port,
        proto,
        family: FAMILY_V6,
    }
}

/// A table of `size` slots spreading `backends` round-robin (the data plane does not care how
/// a table was built; Maglev has its own tests).
fn spread(backends: &[u32], size: u32) -> Vec<u32> {
    (0..size)
        .map(|s| backends[s as usize % backends.len()])
        .collect()
}

struct Vips {
    regions: Vec<TableRegion>,
}

/// The fixture: eight VIPs covering every mode, backends 0..=9.
fn balancer() -> (Balancer, Vips) {
    let sizes = [M, M, M, 1, M, M, M, M];
    let mut base = 0;
    let regions: Vec<TableRegion> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let r = TableRegion {
                vip_index: i as u32,
                base,
                size,
            };
            base += r.slots();
            r
        })
        .collect();
    let sizing = Sizing {
        vips: 8,
        backends: 16,
        slots: base,
        peers: 4,
        // Two: `frames_for_another_mac_are_passed_never_forwarded` lists a second one.
        interfaces: 2,
        flows: 0,
        fallbacks: 0,
    };
    let settings = Settings {
        hash_seed: SEED,
        encap_src_v4: ENCAP_SRC4,
        layout_id: 0,
        flags: 0,
        encap_src_v6: ENCAP_SRC6,
        ..Default::default()
    };
    let mut b = Balancer::new(sizing, settings);
    for i in 0..=2 {
        b.set_backend(
            i,
            Backend {
                addr: a4([10, 0, 0, 1 + i as u8]),
                mac: mac_of(i),
                family: FAMILY_V4,
                mode: FWD_L2,
                ..Backend::default()
            },
        );
    }
    for i in 3..=4 {
        let mut addr = CLIENT6;
        addr[15] = i as u8;
        b.set_backend(
            i,
            Backend {
                addr,
                mac: mac_of(i),
                family: FAMILY_V6,
                mode: FWD_L2,
                ..Backend::default()
            },
        );
    }
    for i in 5..=6 {
        b.set_backend(
            i,
            Backend {
                addr: a4([10, 0, 0, 1 + i as u8]),
                mac: mac_of(i),
                family: FAMILY_V4,
                mode: FWD_L2,
                ..Backend::default()
            },
        );
    }
    b.set_backend(
        7,
        Backend {
            addr: a4([10, 0, 0, 100]),
            mac: OUR_MAC,
            family: FAMILY_V4,
            mode: FWD_LOCAL,
            ..Backend::default()
        },
    );
    b.set_backend(
        8,
        Backend {
            addr: a4(ENCAP_BACKEND4),
            mac: mac_of(8),
            family: FAMILY_V4,
            mode: FWD_ENCAP,
            ..Backend::default()
        },
    );
    b.set_backend(
        9,
        Backend {
            addr: ENCAP_BACKEND6,
            mac: mac_of(9),
            family: FAMILY_V6,
            mode: FWD_ENCAP,
            ..Backend::default()
        },
    );

    let vip = |index: u32, table_size: u32, flags: u32| VipInfo {
        index,
        table_size,
        flags,
        fallback: 0,
    };
    b.set_vip(key4(VIP_WEB, 80, 6), vip(0, M, 0));
    b.set_vip(key6(VIP_DNS6, 53, 17), vip(1, M, 0));
    b.set_vip(key4(VIP_AFFINITY, 443, 6), vip(2, M, VIP_F_SRC_HASH));
    b.set_vip(key4(VIP_PB, 3306, 6), vip(3, 1, VIP_F_LEASED));
    b.set_vip(key4(VIP_LOCAL_ALL_PORTS, 0, 17), vip(4, M, 0));
    b.set_vip(key4(VIP_ENCAP4, 80, 6), vip(5, M, 0));
    b.set_vip(key6(VIP_ENCAP6, 80, 6), vip(6, M, 0));
    b.set_vip(key4(VIP_EMPTY, 80, 6), vip(7, M, 0));

    let tables: [Vec<u32>; 8] = [
        spread(&[0, 1, 2], M),
        spread(&[3, 4], M),
        spread(&[0, 1, 2], M),
        vec![5],
        spread(&[7], M),
        spread(&[8], M),
        spread(&[9], M),
        vec![NO_BACKEND; M as usize],
    ];
    for (r, t) in regions.iter().zip(&tables) {
        b.publish(r, t);
    }
    b.set_peer(PEER_MAC);
    // Cluster-managed addresses: this node holds the primary/backup VIP's lease; the
    // affinity VIP's and the IPv6 encap VIP's leases have expired (held by another node).
    b.set_lease(
        lease_key(a4(VIP_PB), FAMILY_V4),
        Lease {
            expiry_ns: u64::MAX,
            epoch: 1,
            _pad: 0,
        },
    );
    b.set_lease(
        lease_key(a4(VIP_AFFINITY), FAMILY_V4),
        Lease {
            expiry_ns: 1,
            epoch: 1,
            _pad: 0,
        },
    );
    b.set_lease(
        lease_key(VIP_ENCAP6, FAMILY_V6),
        Lease {
            expiry_ns: 0,
            epoch: 0,
            _pad: 0,
        },
    );
    (b, Vips { regions })
}

fn lease_key(addr: [u8; 16], family: u8) -> LeaseKey {
    LeaseKey {
        addr,
        family,
        _pad: [0; 3],
    }
}

/// What a row expects as output.
enum Out {
    /// The input, unchanged.
    Same,
    /// The input with destination MAC `.0` and our MAC as source.
    L2([u8; 6]),
    /// Exactly these bytes.
    Bytes(Vec<u8>),
}

struct Row {
    name: &'static str,
    frame: Vec<u8>,
    action: u32,
    reason: u32,
    out: Out,
}

fn row(name: &'static str, frame: Vec<u8>, action: u32, reason: u32, out: Out) -> Row {
    Row {
        name,
        frame,
        action,
        reason,
        out,
    }
}

fn tcp4(dst: [u8; 4], dport: u16) -> Flow {
    Flow::tcp4(CLIENT4, 40_001, dst, dport)
}

fn with_vlans(vlans: &[(u16, u16)]) -> Frame {
    Frame {
        vlans: vlans.to_vec(),
        ..Frame::default()
    }
}

/// The backend index the model picks for a flow (kernel agreement is asserted per row).
fn model_backend(b: &Balancer, flow: &Flow) -> u32 {
    let f = vip_daemon::core::model::Flow {
        src: addr16(&flow.src),
        dst: addr16(&flow.dst),
        sport: flow.sport,
        dport: flow.dport,
        proto: flow.proto,
        family: if matches!(flow.src, Addr::V4(_)) {
            FAMILY_V4
        } else {
            FAMILY_V6
        },
    };
    b.model
        .choose(&f)
        .and_then(|c| c.backend)
        .expect("flow has a backend")
}

fn addr16(a: &Addr) -> [u8; 16] {
    match a {
        Addr::V4(v) => a4(*v),
        Addr::V6(v) => *v,
    }
}

fn rows(b: &Balancer) -> Vec<Row> {
    let f = Frame::default();
    let web = tcp4(VIP_WEB, 80);
    let web_mac = mac_of(model_backend(b, &web));
    let dns6 = Flow::udp6(CLIENT6, 5353, VIP_DNS6, 53);
    let dns6_mac = mac_of(model_backend(b, &dns6));
    let mut rows = vec![
        row(
            "v4 tcp hit",
            packet::l4_frame(&f, &web),
            XDP_TX,
            TX_L2,
            Out::L2(web_mac),
        ),
        row(
            "v6 udp hit",
            packet::l4_frame(&f, &dns6),
            XDP_TX,
            TX_L2,
            Out::L2(dns6_mac),
        ),
        row(
            "v4 udp hit, all-ports VIP, local backend",
            packet::l4_frame(&f, &Flow::udp4(CLIENT4, 999, VIP_LOCAL_ALL_PORTS, 4789)),
            XDP_PASS,
            PASS_LOCAL,
            Out::Same,
        ),
        row(
            "v4 miss: other address",
            packet::l4_frame(&f, &tcp4([192, 0, 2, 99], 80)),
            XDP_PASS,
            PASS_NOT_VIP,
            Out::Same,
        ),
        row(
            "v4 miss: VIP address, other port",
            packet::l4_frame(&f, &tcp4(VIP_WEB, 81)),
            XDP_PASS,
            PASS_NOT_VIP,
            Out::Same,
        ),
        row(
            "v4 miss: VIP port, other protocol",
            packet::l4_frame(&f, &Flow::udp4(CLIENT4, 1, VIP_WEB, 80)),
            XDP_PASS,
            PASS_NOT_VIP,
            Out::Same,
        ),
        row(
            "v6 miss",
            packet::l4_frame(&f, &Flow::udp6(CLIENT6, 5353, VIP_ENCAP6, 53)),
            XDP_PASS,
            PASS_NOT_VIP,
            Out::Same,
        ),
        row(
            "802.1Q tagged hit",
            packet::l4_frame(&with_vlans(&[(0x8100, 100)]), &web),
            XDP_TX,
            TX_L2,
            Out::L2(web_mac),
        ),
        row(
            "QinQ tagged hit",
            packet::l4_frame(&with_vlans(&[(0x88a8, 10), (0x8100, 100)]), &web),
            XDP_TX,
            TX_L2,
            Out::L2(web_mac),
        ),
        row(
            "three tags: not parsed",
            packet::l4_frame(&with_vlans(&[(0x88a8, 1), (0x8100, 2), (0x8100, 3)]), &web),
            XDP_PASS,
            PASS_NOT_IP,
            Out::Same,
        ),
        row(
            "IPv4 options (IHL 6)",
            packet::l4_frame(
                &Frame {
                    ip_options: vec![1, 1, 1, 0],
                    ..Frame::default()
                },
                &web,
            ),
            XDP_TX,
            TX_L2,
            Out::L2(web_mac),
        ),
        row(
            "IPv4 options (IHL 15)",
            packet::l4_frame(
                &Frame {
                    ip_options: vec![1; 40],
                    ..Frame::default()
                },
                &web,
            ),
            XDP_TX,
            TX_L2,
            Out::L2(web_mac),
        ),
        row(
            "v4 first fragment (MF)",
            packet::l4_frame(
                &Frame {
                    frag: 0x2000,
                    ..Frame::default()
                },
                &web,
            ),
            XDP_PASS,
            PASS_FRAGMENT,
            Out::Same,
        ),
        row(
            "v4 later fragment (offset)",
            packet::l4_frame(
                &Frame {
                    frag: 0x0010,
                    ..Frame::default()
                },
                &web,
            ),
            XDP_PASS,
            PASS_FRAGMENT,
            Out::Same,
        ),
        row(
            "v6 fragment header",
            packet::ipv6_with_ext_header(&f, &dns6, 44),
            XDP_PASS,
            PASS_FRAGMENT,
            Out::Same,
        ),
        row(
            "v6 hop-by-hop header",
            packet::ipv6_with_ext_header(&f, &dns6, 0),
            XDP_PASS,
            PASS_IPV6_EXT,
            Out::Same,
        ),
        row(
            "v6 routing header",
            packet::ipv6_with_ext_header(&f, &dns6, 43),
            XDP_PASS,
            PASS_IPV6_EXT,
            Out::Same,
        ),
        row(
            "primary/backup: primary up",
            packet::l4_frame(&f, &tcp4(VIP_PB, 3306)),
            XDP_TX,
            TX_L2,
            Out::L2(mac_of(5)),
        ),
        row(
            "peer-forwarded frame delivered locally",
            packet::l4_frame(
                &Frame {
                    src_mac: PEER_MAC,
                    ..Frame::default()
                },
                &web,
            ),
            XDP_PASS,
            PASS_FROM_PEER,
            Out::Same,
        ),
        row(
            "VIP with no backend: dropped",
            packet::l4_frame(&f, &tcp4(VIP_EMPTY, 80)),
            XDP_DROP,
            DROP_NO_BACKEND,
            Out::Same,
        ),
        row(
            "ICMP echo to a VIP",
            packet::icmp4_echo(&f, CLIENT4, VIP_WEB),
            XDP_PASS,
            PASS_ICMP,
            Out::Same,
        ),
        row(
            "ICMPv6 echo to a VIP",
            packet::icmp6_echo(&f, CLIENT6, VIP_DNS6),
            XDP_PASS,
            PASS_ICMP,
            Out::Same,
        ),
        row(
            "ARP request for a VIP",
            packet::arp_request(CLIENT_MAC, CLIENT4, VIP_WEB),
            XDP_PASS,
            PASS_NOT_IP,
            Out::Same,
        ),
        row(
            "neighbour solicitation for a VIP",
            packet::ipv6_neighbor_solicitation(CLIENT_MAC, CLIENT6, VIP_DNS6),
            XDP_PASS,
            PASS_ICMP,
            Out::Same,
        ),
    ];

    // Source affinity: any port of one client goes to one backend.
    let aff = |sport| Flow::tcp4(CLIENT4, sport, VIP_AFFINITY, 443);
    let aff_mac = mac_of(model_backend(b, &aff(1)));
    for (name, sport) in [
        ("source affinity, port 1", 1),
        ("source affinity, port 2", 2),
        ("source affinity, port 60000", 60_000),
    ] {
        rows.push(row(
            name,
            packet::l4_frame(&f, &aff(sport)),
            XDP_TX,
            TX_L2,
            Out::L2(aff_mac),
        ));
    }

    // PMTU: an ICMP error about the backend's reply goes to the backend owning the flow.
    let reply = packet::l3_packet(&f, &Flow::tcp4(VIP_WEB, 80, CLIENT4, 40_001));
    rows.push(row(
        "ICMP frag-needed about a VIP flow",
        packet::icmp4_frag_needed(&f, [203, 0, 113, 1], VIP_WEB, 1400, &reply[..28]),
        XDP_TX,
        TX_ICMP,
        Out::L2(web_mac),
    ));
    let reply6 = packet::l3_packet(&f, &Flow::udp6(VIP_DNS6, 53, CLIENT6, 5353));
    let mut router6 = CLIENT6;
    router6[15] = 1;
    rows.push(row(
        "ICMPv6 packet-too-big about a VIP flow",
        packet::icmp6_packet_too_big(&f, router6, VIP_DNS6, 1280, &reply6[..48]),
        XDP_TX,
        TX_ICMP,
        Out::L2(dns6_mac),
    ));
    let other = packet::l3_packet(&f, &Flow::tcp4([192, 0, 2, 99], 80, CLIENT4, 40_001));
    rows.push(row(
        "ICMP frag-needed about a non-VIP flow",
        packet::icmp4_frag_needed(&f, [203, 0, 113, 1], [192, 0, 2, 99], 1400, &other[..28]),
        XDP_PASS,
        PASS_ICMP,
        Out::Same,
    ));

    // Encapsulated DSR, byte-exact: outer source varies with the flow hash.
    let enc = tcp4(VIP_ENCAP4, 80);
    let hash = flow_hash(
        SEED,
        &addr_words(&a4(CLIENT4)),
        &addr_words(&a4(VIP_ENCAP4)),
        enc.sport,
        80,
        6,
        false,
    );
    let outer = Frame {
        dst_mac: mac_of(8),
        src_mac: OUR_MAC,
        ..Frame::default()
    };
    let expected = packet::ethernet(
        &outer,
        0x0800,
        &packet::ip_packet(
            &outer,
            &Addr::V4(outer_source_v4(ENCAP_SRC4, hash)),
            &Addr::V4(ENCAP_BACKEND4),
            4,
            &packet::l3_packet(&f, &enc),
        ),
    );
    rows.push(row(
        "IPIP encap v4",
        packet::l4_frame(&f, &enc),
        XDP_TX,
        TX_ENCAP,
        Out::Bytes(expected),
    ));
    let enc6 = Flow::tcp6(CLIENT6, 40_002, VIP_ENCAP6, 80);
    let hash6 = flow_hash(
        SEED,
        &addr_words(&CLIENT6),
        &addr_words(&VIP_ENCAP6),
        40_002,
        80,
        6,
        false,
    );
    let outer6 = Frame {
        dst_mac: mac_of(9),
        ..outer.clone()
    };
    let expected6 = packet::ethernet(
        &outer6,
        0x86dd,
        &packet::ip_packet(
            &outer6,
            &Addr::V6(vip_common::encap::outer_source_v6(ENCAP_SRC6, hash6)),
            &Addr::V6(ENCAP_BACKEND6),
            41,
            &packet::l3_packet(&f, &enc6),
        ),
    );
    rows.push(row(
        "IP6IP6 encap v6",
        packet::l4_frame(&f, &enc6),
        XDP_TX,
        TX_ENCAP,
        Out::Bytes(expected6),
    ));
    let tagged = with_vlans(&[(0x8100, 7)]);
    let outer_tagged = Frame {
        dst_mac: mac_of(8),
        src_mac: OUR_MAC,
        vlans: tagged.vlans.clone(),
        ..Frame::default()
    };
    let expected_tagged = packet::ethernet(
        &outer_tagged,
        0x0800,
        &packet::ip_packet(
            &outer_tagged,
            &Addr::V4(outer_source_v4(ENCAP_SRC4, hash)),
            &Addr::V4(ENCAP_BACKEND4),
            4,
            &packet::l3_packet(&f, &enc),
        ),
    );
    rows.push(row(
        "IPIP encap v4, VLAN tag kept",
        packet::l4_frame(&tagged, &enc),
        XDP_TX,
        TX_ENCAP,
        Out::Bytes(expected_tagged),
    ));

    // A peer's encapsulated VIP packet: decapsulated and delivered here.
    let from_peer = Frame {
        src_mac: PEER_MAC,
        ..Frame::default()
    };
    let inner = packet::l3_packet(&f, &web);
    let encapsulated = packet::ethernet(
        &from_peer,
        0x0800,
        &packet::ip_packet(
            &from_peer,
            &Addr::V4([10, 255, 1, 2]),
            &Addr::V4([10, 0, 0, 1]),
            4,
            &inner,
        ),
    );
    rows.push(row(
        "peer's IPIP to a VIP: decapsulated",
        encapsulated,
        XDP_PASS,
        PASS_DECAP,
        Out::Bytes(packet::ethernet(&from_peer, 0x0800, &inner)),
    ));

    // Only balancers' encapsulated packets are decapsulated: a host that reaches this node
    // forges an IPIP SYN whose inner source is a spoofed client.
    let (forged, from_balancer) = forged_ipip_syn(&f);
    rows.push(row(
        "forged IPIP SYN, spoofed inner source, unknown outer source: dropped",
        forged,
        XDP_DROP,
        DROP_ENCAP_SOURCE,
        Out::Same,
    ));
    rows.push(row(
        "same IPIP SYN from a balancer's encap source: decapsulated",
        from_balancer,
        XDP_PASS,
        PASS_DECAP,
        Out::Bytes(packet::l4_frame(&f, &spoofed_syn())),
    ));
    let inner6 = packet::l3_packet(&f, &dns6);
    let ip6ip6 = |src: [u8; 16]| {
        packet::ethernet(
            &f,
            0x86dd,
            &packet::ip_packet(&f, &Addr::V6(src), &Addr::V6(CLIENT6), 41, &inner6),
        )
    };
    let mut stranger6 = ENCAP_SRC6;
    stranger6[11] = 1;
    rows.push(row(
        "forged IP6IP6 to a VIP, unknown outer source: dropped",
        ip6ip6(stranger6),
        XDP_DROP,
        DROP_ENCAP_SOURCE,
        Out::Same,
    ));
    rows.push(row(
        "IP6IP6 to a VIP from a balancer's encap source: decapsulated",
        ip6ip6(vip_common::encap::outer_source_v6(ENCAP_SRC6, 0x1234_5678)),
        XDP_PASS,
        PASS_DECAP,
        Out::Bytes(packet::ethernet(&f, 0x86dd, &inner6)),
    ));
    let not_vip = packet::l3_packet(&f, &tcp4([203, 0, 113, 80], 80));
    rows.push(row(
        "IPIP not for a VIP from an unknown source: not ours, passed untouched",
        packet::ethernet(
            &f,
            0x0800,
            &packet::ip_packet(
                &f,
                &Addr::V4(STRANGER4),
                &Addr::V4([10, 0, 0, 1]),
                4,
                &not_vip,
            ),
        ),
        XDP_PASS,
        PASS_NOT_VIP,
        Out::Same,
    ));
    rows.extend(prefilter_rows(b));
    rows
}

/// `VIP_FILTER`: a packet whose destination's bit is clear is passed untouched before any
/// hash lookup; one whose bit a VIP shares (a false positive) goes on to the exact lookup and
/// is passed all the same; VIP packets are forwarded as ever (the hit rows above). Likewise
/// `PEER_FILTER`: only the exact `PEERS` lookup makes a frame a peer's.
fn prefilter_rows(b: &Balancer) -> Vec<Row> {
    let f = Frame::default();
    let has = |a: [u8; 16]| maps::vip_filter_has(&b.vip_filter, &addr_words(&a));
    let is_vip = |a: [u8; 16]| b.model.vips.keys().any(|k| k.addr == a);
    let v6 = |i: u16| {
        let mut a = VIP_DNS6;
        a[12..14].copy_from_slice(&i.to_be_bytes());
        a
    };
    // Addresses near the VIPs: the first whose bit is clear, the first whose bit is set.
    let near4 = (0..=u16::MAX).map(|i| a4([192, 0, (i >> 8) as u8, i as u8]));
    let near6 = (1..=u16::MAX).map(v6);
    let pick = |mut it: Box<dyn Iterator<Item = [u8; 16]>>, set: bool| {
        it.find(|a| !is_vip(*a) && has(*a) == set)
            .expect("an address exists")
    };
    let clear4 = pick(Box::new(near4.clone()), false);
    let shared4 = pick(Box::new(near4), true);
    let clear6 = pick(Box::new(near6.clone()), false);
    let shared6 = pick(Box::new(near6), true);
    let v4 = |a: [u8; 16]| [a[0], a[1], a[2], a[3]];
    // A MAC that is no peer's but shares the peer's `PEER_FILTER` bit: the exact `PEERS`
    // lookup decides, and the frame is balanced like any client's.
    let peer_bit = maps::peer_filter_bit(&PEER_MAC);
    let lookalike = (0..=u32::MAX)
        .map(|i| {
            let b = i.to_be_bytes();
            [2, 0, b[0], b[1], b[2], b[3]]
        })
        .find(|m| *m != PEER_MAC && maps::peer_filter_bit(m) == peer_bit)
        .expect("a MAC sharing the peer's bit");
    let web = tcp4(VIP_WEB, 80);
    vec![
        row(
            "peer prefilter: a non-peer MAC sharing the peer's bit is balanced",
            packet::l4_frame(
                &Frame {
                    src_mac: lookalike,
                    ..Frame::default()
                },
                &web,
            ),
            XDP_TX,
            TX_L2,
            Out::L2(mac_of(model_backend(b, &web))),
        ),
        row(
            "prefilter: v4 to no VIP, bit clear: passed untouched",
            packet::l4_frame(&f, &tcp4(v4(clear4), 80)),
            XDP_PASS,
            PASS_NOT_VIP,
            Out::Same,
        ),
        row(
            "prefilter: v4 to no VIP sharing a VIP's bit: exact lookup, passed",
            packet::l4_frame(&f, &tcp4(v4(shared4), 80)),
            XDP_PASS,
            PASS_NOT_VIP,
            Out::Same,
        ),
        row(
            "prefilter: v6 to no VIP, bit clear: passed untouched",
            packet::l4_frame(&f, &Flow::udp6(CLIENT6, 5353, clear6, 53)),
            XDP_PASS,
            PASS_NOT_VIP,
            Out::Same,
        ),
        row(
            "prefilter: v6 to no VIP sharing a VIP's bit: exact lookup, passed",
            packet::l4_frame(&f, &Flow::udp6(CLIENT6, 5353, shared6, 53)),
            XDP_PASS,
            PASS_NOT_VIP,
            Out::Same,
        ),
    ]
}

/// A host on the network, not a balancer (outside `ENCAP_SRC4`'s /16).
const STRANGER4: [u8; 4] = [10, 254, 0, 66];

/// A SYN to the web VIP from a client address the sender does not own.
fn spoofed_syn() -> Flow {
    Flow::tcp4([203, 0, 113, 99], 31_337, VIP_WEB, 80)
}

/// That SYN in an IPIP header from `STRANGER4`, and from a balancer's encap source.
fn forged_ipip_syn(f: &Frame) -> (Vec<u8>, Vec<u8>) {
    let inner = packet::l3_packet(f, &spoofed_syn());
    let ipip = |src: [u8; 4]| {
        packet::ethernet(
            f,
            0x0800,
            &packet::ip_packet(f, &Addr::V4(src), &Addr::V4([10, 0, 0, 1]), 4, &inner),
        )
    };
    (ipip(STRANGER4), ipip(outer_source_v4(ENCAP_SRC4, 0xbeef)))
}

#[test]
fn fixture_table() {
    if !privileged("fixture_table") {
        return;
    }
    let (mut b, vips) = balancer();
    let rows = rows(&b);
    let mut expected_reasons = vec![0u64; COUNT as usize];
    let mut expected_vips = vec![(0u64, 0u64); 8];
    let mut count_vip = |model: &vip_daemon::core::model::Outcome, frame: &[u8]| {
        if let Some((vip, _)) = model.chosen {
            expected_vips[vip as usize].0 += 1;
            expected_vips[vip as usize].1 += frame.len() as u64;
        }
    };
    for r in &rows {
        let (run, model) = b.check(&r.frame);
        expected_reasons[model.reason as usize] += 1;
        count_vip(&model, &r.frame);
        assert_eq!(run.action, r.action, "{}: action", r.name);
        assert_eq!(
            model.reason, r.reason,
            "{}: reason is {}",
            r.name, NAMES[model.reason as usize]
        );
        let want = match &r.out {
            Out::Same => r.frame.clone(),
            Out::L2(mac) => {
                let mut o = r.frame.clone();
                o[0..6].copy_from_slice(mac);
                o[6..12].copy_from_slice(&OUR_MAC);
                o
            }
            Out::Bytes(b) => b.clone(),
        };
        assert_eq!(run.output, want, "{}: output bytes", r.name);
        if r.action == XDP_TX {
            let l3 = &run.output
                [14 + 4 * packet::parse_summary(&run.output).map_or(0, |s| s.vlan_count)..];
            assert!(
                packet::verify_l4_checksum(l3)
                    || l3[0] >> 4 == 6
                    || packet::verify_ipv4_header_checksum(l3),
                "{}: checksums",
                r.name
            );
        }
    }

    // Truncated at every length (BPF_PROG_TEST_RUN needs at least an Ethernet header): never
    // forwarded, never changed.
    for r in rows.iter().filter(|r| r.action == XDP_TX) {
        for len in 14..r.frame.len() {
            let cut = &r.frame[..len];
            let (run, model) = b.check(cut);
            expected_reasons[model.reason as usize] += 1;
            count_vip(&model, cut);
            assert_eq!(
                (run.action, run.output.as_slice()),
                (XDP_PASS, cut),
                "{} cut at {len}",
                r.name
            );
        }
    }

    // Primary down: the daemon publishes the backup's one-slot table.
    b.publish(&vips.regions[3], &[6]);
    let pb = packet::l4_frame(&Frame::default(), &tcp4(VIP_PB, 3306));
    let (run, model) = b.check(&pb);
    expected_reasons[model.reason as usize] += 1;
    count_vip(&model, &pb);
    assert_eq!(&run.output[0..6], &mac_of(6), "backup takes over");

    // Our lease on the primary/backup VIP expires: we stop forwarding it at once.
    b.set_lease(
        lease_key(a4(VIP_PB), FAMILY_V4),
        Lease {
            expiry_ns: 1,
            epoch: 1,
            _pad: 0,
        },
    );
    let (run, model) = b.check(&pb);
    expected_reasons[model.reason as usize] += 1;
    assert_eq!(
        (run.action, model.reason),
        (XDP_DROP, DROP_NO_LEASE),
        "no lease, no forwarding"
    );

    // The backend side decapsulates what we encapsulate, back to the client's frame.
    let enc = packet::l4_frame(&Frame::default(), &tcp4(VIP_ENCAP4, 80));
    let (sent, model) = b.check(&enc);
    let sent = sent.output;
    expected_reasons[model.reason as usize] += 1;
    count_vip(&model, &enc);
    let got = run_program(&mut b.dp, maps::PROG_DECAP, &sent);
    assert_eq!(got.action, XDP_PASS);
    assert_eq!(
        &got.output[12..],
        &enc[12..],
        "decap restores the inner frame"
    );
    let decapped = vip_daemon::core::model::process_decap(&sent, &b.model.encap_sources);
    assert_eq!(
        (got.action, &got.output),
        (decapped.action, &decapped.output)
    );
    expected_reasons[PASS_DECAP as usize] += 1;

    // The backend side too decapsulates only what a balancer sent.
    let (forged, from_balancer) = forged_ipip_syn(&Frame::default());
    for (frame, action, reason) in [
        (&forged, XDP_DROP, DROP_ENCAP_SOURCE),
        (&from_balancer, XDP_PASS, PASS_DECAP),
    ] {
        let got = run_program(&mut b.dp, maps::PROG_DECAP, frame);
        let want = vip_daemon::core::model::process_decap(frame, &b.model.encap_sources);
        assert_eq!((got.action, &got.output), (want.action, &want.output));
        assert_eq!((want.action, want.reason), (action, reason));
        expected_reasons[reason as usize] += 1;
    }

    // Counters: every reason counted exactly as often as the model says, bytes included.
    let stats = b.dp.stats().expect("stats");
    let got: Vec<u64> = stats.iter().map(|c| c.packets).collect();
    assert_eq!(got, expected_reasons, "reason counters (order: {NAMES:?})");
    let vip_stats: Vec<(u64, u64)> =
        b.dp.counters(maps::MAP_VIP_STATS)
            .expect("vip stats")
            .iter()
            .map(|c| (c.packets, c.bytes))
            .collect();
    assert_eq!(vip_stats, expected_vips, "per-VIP packets and bytes");
    assert!(expected_vips.iter().filter(|v| v.0 > 0).count() >= 6);
}

/// A tiny deterministic generator (xorshift64*), seeded per test.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed | 1;
    move || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn frames_for_another_mac_are_passed_never_forwarded() {
    if !privileged("frames_for_another_mac_are_passed_never_forwarded") {
        return;
    }
    // Twice: the interface found in its IFACE_SLOTS slot, then (the slot held by another
    // interface index) in the IFACES hash map.
    for slot_taken in [false, true] {
        let (mut b, _) = balancer();
        if slot_taken {
            let lo = vip_daemon::shell::dataplane::if_index("lo").expect("lo");
            let other = lo + vip_common::maps::IFACE_SLOTS;
            b.dp.set_iface(other, [2, 0, 0, 0, 0, 0x42], 1500)
                .expect("slot");
        }
        other_mac_frames(&mut b, slot_taken);
    }
}

fn other_mac_frames(b: &mut Balancer, slot_taken: bool) {
    eprintln!("own interface's slot taken by another: {slot_taken}");
    let ours = Frame::default();
    b.set_own_mac(ours.dst_mac);
    let web = tcp4(VIP_WEB, 80);
    let dns6 = Flow::udp6(CLIENT6, 5353, VIP_DNS6, 53);
    // Addressed to this interface: balanced as before.
    for flow in [&web, &dns6] {
        let (run, out) = b.check(&packet::l4_frame(&ours, flow));
        assert_eq!((run.action, out.reason), (XDP_TX, TX_L2));
    }
    // A bridge flooding frames for a dead node's MAC, or a promiscuous NIC: the frame is
    // someone else's to forward, left untouched (the kernel drops it as PACKET_OTHERHOST).
    let theirs = Frame {
        dst_mac: [2, 0, 0, 0, 0, 0x99],
        ..Frame::default()
    };
    let from_peer = Frame {
        src_mac: PEER_MAC,
        ..theirs.clone()
    };
    for (frame, flow) in [(&theirs, &web), (&theirs, &dns6), (&from_peer, &web)] {
        let frame = packet::l4_frame(frame, flow);
        let (run, out) = b.check(&frame);
        assert_eq!((run.action, out.reason), (XDP_PASS, PASS_OTHER_HOST));
        assert_eq!(run.output, frame, "untouched");
    }
    // Multicast and broadcast destinations are not unicast frames for someone else.
    let group = Frame {
        dst_mac: [0x01, 0, 0x5e, 0, 0, 1],
        ..Frame::default()
    };
    let (run, out) = b.check(&packet::l4_frame(&group, &web));
    assert_eq!((run.action, out.reason), (XDP_TX, TX_L2));
}

#[test]
fn property_kernel_equals_model() {
    if !privileged("property_kernel_equals_model") {
        return;
    }
    let (mut b, _) = balancer();
    let seeds: Vec<Vec<u8>> = rows(&b).into_iter().map(|r| r.frame).collect();
    // A small MTU, so that encapsulation often would exceed it (answered or dropped "too big").
    b.set_own_iface(OUR_MAC, 100);
    let mut next = rng(0x00c0_ffee);
    let vip4 = [
        VIP_WEB,
        VIP_AFFINITY,
        VIP_PB,
        VIP_LOCAL_ALL_PORTS,
        VIP_ENCAP4,
        VIP_EMPTY,
        [192, 0, 2, 99],
    ];
    let vip6 = [VIP_DNS6, VIP_ENCAP6];
    let packets = 100_000;
    let (mut forwarded, mut too_big) = (0, 0);
    for i in 0..packets {
        let mut frame = if i % 2 == 0 {
            seeds[(next() % seeds.len() as u64) as usize].clone()
        } else {
            let r = next();
            let vlans: Vec<(u16, u16)> = (0..(r % 3))
                .map(|_| (0x8100, (next() % 4096) as u16))
                .collect();
            let fr = Frame {
                vlans,
                payload: vec![0x5a; (next() % 240) as usize],
                frag: if next() & 1 == 0 { 0x4000 } else { 0 },
                ..Frame::default()
            };
            let (sport, dport) = (
                (next() % 65536) as u16,
                [80, 443, 3306, 53, 0, 1][(next() % 6) as usize],
            );
            let flow = if r & 8 == 0 {
                let mut src = CLIENT4;
                src[3] = next() as u8;
                let dst = vip4[(next() % vip4.len() as u64) as usize];
                if r & 16 == 0 {
                    Flow::tcp4(src, sport, dst, dport)
                } else {
                    Flow::udp4(src, sport, dst, dport)
                }
            } else {
                let mut src = CLIENT6;
                src[15] = next() as u8;
                let dst = vip6[(next() % 2) as usize];
                if r & 16 == 0 {
                    Flow::tcp6(src, sport, dst, dport)
                } else {
                    Flow::udp6(src, sport, dst, dport)
                }
            };
            packet::l4_frame(&fr, &flow)
        };
        for _ in 0..(next() % 4) {
            packet::mutate(&mut frame, &mut next);
        }
        if frame.len() < 14 {
            frame.resize(14, 0);
        }
        let (run, model) = b.check(&frame);
        assert_ne!(run.action, XDP_ABORTED, "aborted on {frame:02x?}");
        if model.action == XDP_TX {
            forwarded += 1;
        }
        if model.reason == TX_TOO_BIG || model.reason == DROP_TOO_BIG {
            too_big += 1;
        }
    }
    eprintln!(
        "property: {packets} packets, {forwarded} forwarded, {too_big} too big, kernel == \
         model for all"
    );
    assert!(
        too_big > packets / 200,
        "the generator must exercise the MTU check"
    );
    assert!(
        forwarded > packets / 10,
        "the generator must exercise forwarding"
    );
}

#[test]
fn publish_alternates_generations_for_every_vip() {
    if !privileged("publish_alternates_generations_for_every_vip") {
        return;
    }
    let (mut b, vips) = balancer();
    for region in &vips.regions {
        let before = b.tables.live_generation(region).expect("published once");
        let table: Vec<u32> = (0..region.size).map(|s| s % 3).collect();
        b.publish(region, &table);
        let after = b.tables.live_generation(region).expect("live");
        assert_ne!(
            before, after,
            "vip {}: publish must write the other generation",
            region.vip_index
        );
        assert_eq!(
            b.tables.live_table(region).as_deref(),
            Some(table.as_slice())
        );
    }
    // Every row still agrees with the model after the flips.
    for r in rows(&b) {
        b.check(&r.frame);
    }
}

#[test]
fn publish_under_load_never_mixes_tables() {
    if !privileged("publish_under_load_never_mixes_tables") {
        return;
    }
    use std::sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    };
    let (mut b, vips) = balancer();
    let region = vips.regions[0];
    // Table k maps slot s to backend (k + s) % 3: which table a packet saw is visible from the
    // backend it got.
    let table = |k: u32| -> Vec<u32> { (0..M).map(|s| (k + s) % 3).collect() };
    let flows: Vec<(Vec<u8>, u32)> = (0..64u16)
        .map(|i| {
            let flow = Flow::tcp4(CLIENT4, 1000 + i, VIP_WEB, 80);
            let hash = flow_hash(
                SEED,
                &addr_words(&a4(CLIENT4)),
                &addr_words(&a4(VIP_WEB)),
                1000 + i,
                80,
                6,
                false,
            );
            (packet::l4_frame(&Frame::default(), &flow), hash % M)
        })
        .collect();
    let published = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut dp = b.dp;
    let runner = {
        let (published, stop) = (published.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut checked = 0u64;
            while !stop.load(Ordering::Acquire) {
                for (frame, slot) in &flows {
                    let before = published.load(Ordering::Acquire);
                    let run = run_program(&mut dp, maps::PROG_XDP, frame);
                    let after = published.load(Ordering::Acquire);
                    assert_eq!(run.action, XDP_TX);
                    let got = u32::from(run.output[5]);
                    // Tables are announced before they are published, so the packet saw one
                    // of tables before-1 ..= after.
                    let ok = (before.saturating_sub(1)..=after).any(|k| (k + slot) % 3 == got);
                    assert!(
                        ok,
                        "slot {slot} got backend {got} outside tables {before}..={after}"
                    );
                    checked += 1;
                }
            }
            checked
        })
    };
    let mut times = Vec::new();
    for k in 1..=400u32 {
        published.store(k, Ordering::Release);
        let (_, took) = b.tables.publish(&region, &table(k)).expect("publish");
        times.push(took);
    }
    stop.store(true, Ordering::Release);
    let checked = runner.join().expect("runner");
    times.sort();
    eprintln!(
        "publish: {checked} packets checked across 400 flips; M={M} p50 {:?} p99 {:?}",
        times[200], times[396]
    );
    assert!(checked > 400);
}

#[test]
fn patched_publishes_keep_the_kernel_table_equal_to_the_model() {
    if !privileged("patched_publishes_keep_the_kernel_table_equal_to_the_model") {
        return;
    }
    use vip_daemon::core::precompute::SlotDiff;
    let (mut b, vips) = balancer();
    let region = vips.regions[0];
    let mut next = rng(7);
    let mut want: Vec<u32> = (0..region.size).map(|s| s % 3).collect();
    b.publish(&region, &want);
    // Patches bring only the slots the last patch changed up to date in the other
    // generation; a whole publish in between makes the next patch copy everything; a patch
    // within the grace of a flip goes into the live generation and leaves the other one
    // behind at its slots too. Steps
    // written ahead are flipped live, or patched over when the verdict wanted another.
    for round in 0..200 {
        let mut new = want.clone();
        for _ in 0..(next() % 50) {
            let slot = (next() % u64::from(region.size)) as usize;
            new[slot] = (next() % 4) as u32;
        }
        let diff = SlotDiff::between(&want, &new).expect("same size");
        // Written ahead (the step the verdict brings, or another one it does not), then
        // flipped or patched over: the live table is untouched until then.
        let ahead = match round % 4 {
            1 => Some(diff.clone()),
            2 => {
                let mut other = want.clone();
                other[(next() % u64::from(region.size)) as usize] = 9;
                Some(SlotDiff::between(&want, &other).expect("same size"))
            }
            _ => None,
        };
        let token = round as u64 + 1;
        let mut written = false;
        if let Some(ahead) = &ahead {
            std::thread::sleep(vip_daemon::shell::dataplane::RETIRE_GRACE);
            // In pieces of any size; every third write is left half done (a verdict came
            // first): what follows must still be exact.
            let piece = [1, 7, 300, 100_000][(next() % 4) as usize];
            let give_up_after = (round % 3 == 0).then_some(2);
            let mut pieces = 0;
            loop {
                match b.tables.prepare(&region, ahead, token, piece) {
                    Ok(Prepare::Done) => break written = true,
                    Ok(Prepare::More) => pieces += 1,
                    other => panic!("round {round}: write ahead {other:?}"),
                }
                if Some(pieces) == give_up_after {
                    break;
                }
            }
            let live = b.tables.live_table(&region).expect("live");
            assert!(
                live == want,
                "round {round}: a write ahead changed the live table"
            );
        }
        if round % 17 == 5 {
            b.publish(&region, &new);
        } else if written && ahead.as_ref() == Some(&diff) {
            assert!(b.tables.publish_prepared(&region, token).is_some());
        } else {
            assert!(b.tables.publish_prepared(&region, token + 1000).is_none());
            // Out of the grace of the last flip: into the other generation, then a flip;
            // within it (no wait): into the live generation in place.
            if round % 4 == 3 {
                std::thread::sleep(vip_daemon::shell::dataplane::RETIRE_GRACE);
            }
            b.tables.publish_patched(&region, &diff).expect("patch");
        }
        want = new;
        let live = b.tables.live_table(&region).expect("live");
        assert!(
            live == want,
            "round {round}: kernel table differs from the model"
        );
    }
}
