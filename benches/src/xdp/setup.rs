//! The benchmarked balancer and its cases: every forwarding mode of the program, one flow and
//! 2^20 flows, and the bare baselines on the same frames.
use vip_common::{
    maps::{
        reason, Backend, Settings, VipInfo, VipKey, BACKEND_F_KEEP_FLOWS, FWD_ENCAP, FWD_L2,
        FWD_LOCAL, PROG_BARE_PASS, PROG_BARE_TX, PROG_XDP, VIP_F_FLOWS, VIP_F_SRC_HASH,
    },
    wire::{FAMILY_V4, FAMILY_V6, IPPROTO_TCP, IPPROTO_UDP, XDP_PASS, XDP_TX},
};
use vip_daemon::shell::dataplane::{possible_cpus, Sizing, TableRegion};
use vip_tests::{
    fixture::Balancer,
    packet::{l4_frame, Flow, Frame},
};

/// Maglev table size of every benchmarked VIP (the production default prime).
pub const M: u32 = 65_537;
const SEED: u32 = 0x5eed_0001;
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0xee, 1];

const CLIENT4: [u8; 4] = [198, 18, 0, 7];
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7,
];
const VIP_WEB: [u8; 4] = [192, 0, 2, 10];
const VIP_AFFINITY: [u8; 4] = [192, 0, 2, 11];
const VIP_LOCAL: [u8; 4] = [192, 0, 2, 12];
const VIP_ENCAP4: [u8; 4] = [192, 0, 2, 14];
const VIP_DNS6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const VIP_ENCAP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x14,
];
const NOT_A_VIP: [u8; 4] = [192, 0, 2, 99];
const NOT_A_VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99,
];
/// A port nothing on the machine listens on: the second chance finds no socket.
const LOCAL_PORT: u16 = 47_125;

/// VIP indices (and table regions, in this order); region 7 is the fallback table.
pub const WEB: u32 = 0;
const DNS6: u32 = 1;
const AFFINITY: u32 = 2;
/// The web VIP on another port, with the flow table (`VIP_F_FLOWS`): single-node VIPs.
const WEB_FLOWS: u32 = 3;
const ENCAP4: u32 = 4;
const ENCAP6: u32 = 5;
/// Every slot this node (`FWD_LOCAL`), fallback (second chance) in region `FALLBACK`.
const LOCAL: u32 = 6;
const FALLBACK: u32 = 7;

/// One program on one frame (or one of `flows` variants of it), and what it must do.
pub struct Case {
    pub name: &'static str,
    pub prog: &'static str,
    pub frame: Vec<u8>,
    pub action: u32,
    /// The balancer's reason counter every run must count (None for the baselines).
    pub reason: Option<u32>,
    /// Distinct flows the runs cycle through (the client address varies), 1: one flow.
    pub flows: u32,
    /// Length of every output frame (encapsulation adds the outer header).
    pub out_len: usize,
    /// The flow table must find every run's flow (`flow_stat::HIT`).
    pub flow_hit: bool,
    /// The baseline this case is compared with (itself for a baseline).
    pub bare: &'static str,
}

impl Case {
    /// The frame of flow `i` (< `flows`): the client's IPv4 address's low 20 bits are `i`.
    pub fn frame_of(&self, i: u32, buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(&self.frame);
        if self.flows > 1 {
            // IPv4 source at 14 + 12 (no VLAN): 10.<i>, i < 2^24.
            buf[26..30].copy_from_slice(&[10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        }
    }
}

fn a4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0; 16];
    x[..4].copy_from_slice(&a);
    x
}

fn mac_of(index: u32) -> [u8; 6] {
    [2, 0xbe, 0, 0, 0, index as u8]
}

/// The balancer in cluster mode (a peer listed, the interface's MAC listed): L2 VIPs (v4
/// TCP, v6 UDP, v4 with source affinity, v4 with the flow table), encapsulating VIPs (v4 and
/// v6), and a VIP served by this node whose service has no socket (second chance to an
/// encapsulating backend of its fallback table). Tables of M = 65537 slots.
pub fn balancer(flows: u32) -> anyhow::Result<(Balancer, Vec<TableRegion>)> {
    let regions: Vec<TableRegion> = (0..=FALLBACK)
        .map(|i| TableRegion {
            vip_index: i,
            base: i * 2 * M,
            size: M,
        })
        .collect();
    let sizing = Sizing {
        vips: FALLBACK,
        backends: 16,
        slots: regions.iter().map(TableRegion::slots).sum(),
        peers: 4,
        interfaces: 1,
        // Every CPU's LRU list holds them all with room to spare (the kernel splits the
        // entries between the possible CPUs; the runs cycle through the flows in one order,
        // which a full LRU list would evict just before each use).
        flows: (flows + flows / 4).saturating_mul(possible_cpus()?),
        fallbacks: 1,
    };
    let settings = Settings {
        hash_seed: SEED,
        encap_src_v4: [10, 255, 0, 0],
        layout_id: 0,
        flags: 0,
        encap_src_v6: [0xfd, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ..Default::default()
    };
    let mut b = Balancer::new(sizing, settings);
    let backend = |addr, family, mode, i| Backend {
        addr,
        mac: mac_of(i),
        family,
        mode,
        serial: i + 1,
        // Healthy: the flow cases keep their flows on it.
        flags: BACKEND_F_KEEP_FLOWS,
        ..Backend::default()
    };
    let v6 = |base: [u8; 16], last: u8| {
        let mut a = base;
        a[15] = last;
        a
    };
    for i in 0..=2 {
        b.set_backend(
            i,
            backend(a4([10, 0, 0, 1 + i as u8]), FAMILY_V4, FWD_L2, i),
        );
    }
    for i in 3..=4 {
        b.set_backend(i, backend(v6(CLIENT6, i as u8), FAMILY_V6, FWD_L2, i));
    }
    for i in 5..=6 {
        let addr = a4([198, 51, 100, i as u8]);
        b.set_backend(i, backend(addr, FAMILY_V4, FWD_ENCAP, i));
    }
    for i in 7..=8 {
        b.set_backend(
            i,
            backend(v6(VIP_ENCAP6, 0x80 + i as u8), FAMILY_V6, FWD_ENCAP, i),
        );
    }
    b.set_backend(9, backend(a4([10, 0, 0, 100]), FAMILY_V4, FWD_LOCAL, 9));

    let vip = |index: u32, flags: u32, fallback: u32| VipInfo {
        index,
        table_size: M,
        flags,
        fallback,
    };
    let key = |addr: [u8; 16], port: u16, proto: u8, family: u8| VipKey {
        addr,
        port,
        proto,
        family,
    };
    let (tcp, udp) = (IPPROTO_TCP, IPPROTO_UDP);
    b.set_vip(key(a4(VIP_WEB), 80, tcp, FAMILY_V4), vip(WEB, 0, 0));
    b.set_vip(key(VIP_DNS6, 53, udp, FAMILY_V6), vip(DNS6, 0, 0));
    let affinity = vip(AFFINITY, VIP_F_SRC_HASH, 0);
    b.set_vip(key(a4(VIP_AFFINITY), 443, tcp, FAMILY_V4), affinity);
    let flows_vip = vip(WEB_FLOWS, VIP_F_FLOWS, 0);
    b.set_vip(key(a4(VIP_WEB), 8080, tcp, FAMILY_V4), flows_vip);
    b.set_vip(key(a4(VIP_ENCAP4), 80, tcp, FAMILY_V4), vip(ENCAP4, 0, 0));
    b.set_vip(key(VIP_ENCAP6, 80, tcp, FAMILY_V6), vip(ENCAP6, 0, 0));
    let local = vip(LOCAL, 0, FALLBACK + 1);
    b.set_vip(key(a4(VIP_LOCAL), LOCAL_PORT, tcp, FAMILY_V4), local);
    let tables = [
        spread(&[0, 1, 2], M),
        spread(&[3, 4], M),
        spread(&[0, 1, 2], M),
        spread(&[0, 1, 2], M),
        spread(&[5, 6], M),
        spread(&[7, 8], M),
        spread(&[9], M),
        spread(&[5, 6], M),
    ];
    for (r, t) in regions.iter().zip(&tables) {
        b.publish(r, t);
    }
    b.set_peer(PEER_MAC);
    // The destination MAC check runs as on a real interface: the frames are for us.
    b.set_own_mac(Frame::default().dst_mac);
    Ok((b, regions))
}

/// A table of `size` slots spreading `backends` round-robin.
pub fn spread(backends: &[u32], size: u32) -> Vec<u32> {
    (0..size)
        .map(|s| backends[s as usize % backends.len()])
        .collect()
}

/// The measured cases; the baselines run on the frames of the cases they are compared with.
pub fn cases(many: u32) -> Vec<Case> {
    let f = Frame::default();
    let ack = Frame {
        tcp_flags: 0x10,
        ..Frame::default()
    };
    let web = l4_frame(&f, &Flow::tcp4(CLIENT4, 40_001, VIP_WEB, 80));
    let miss = l4_frame(&f, &Flow::tcp4(CLIENT4, 40_001, NOT_A_VIP, 80));
    let encap4 = l4_frame(&f, &Flow::tcp4(CLIENT4, 40_001, VIP_ENCAP4, 80));
    let flows = l4_frame(&ack, &Flow::tcp4(CLIENT4, 40_001, VIP_WEB, 8080));
    let hit = |name, frame: &Vec<u8>, reason, flows, grow| Case {
        name,
        prog: PROG_XDP,
        out_len: frame.len() + grow,
        frame: frame.clone(),
        action: XDP_TX,
        reason: Some(reason),
        flows,
        flow_hit: false,
        bare: "bare_tx",
    };
    let pass = |name, frame: Vec<u8>| Case {
        name,
        prog: PROG_XDP,
        out_len: frame.len(),
        frame,
        action: XDP_PASS,
        reason: Some(reason::PASS_NOT_VIP),
        flows: 1,
        flow_hit: false,
        bare: "bare_pass",
    };
    let bare = |name, prog, frame: &Vec<u8>, action| Case {
        name,
        prog,
        out_len: frame.len(),
        frame: frame.clone(),
        action,
        reason: None,
        flows: 1,
        flow_hit: false,
        bare: name,
    };
    let (l2, enc) = (reason::TX_L2, reason::TX_ENCAP);
    vec![
        bare("bare_tx", PROG_BARE_TX, &web, XDP_TX),
        bare("bare_pass", PROG_BARE_PASS, &miss, XDP_PASS),
        hit("hit_l2_v4", &web, l2, 1, 0),
        hit("hit_l2_v4_1M", &web, l2, many, 0),
        hit(
            "hit_l2_v6",
            &l4_frame(&f, &Flow::udp6(CLIENT6, 5353, VIP_DNS6, 53)),
            l2,
            1,
            0,
        ),
        hit(
            "hit_l2_affinity",
            &l4_frame(&f, &Flow::tcp4(CLIENT4, 40_001, VIP_AFFINITY, 443)),
            l2,
            1,
            0,
        ),
        hit("encap_v4", &encap4, enc, 1, 20),
        hit("encap_v4_1M", &encap4, enc, many, 20),
        hit(
            "encap_v6",
            &l4_frame(&f, &Flow::tcp6(CLIENT6, 40_001, VIP_ENCAP6, 80)),
            enc,
            1,
            40,
        ),
        hit(
            "second_chance",
            &l4_frame(&f, &Flow::tcp4(CLIENT4, 40_001, VIP_LOCAL, LOCAL_PORT)),
            reason::TX_SECOND_CHANCE,
            1,
            20,
        ),
        // ACKs of established flows: after the warm-up every run hits its flow's entry.
        Case {
            flow_hit: true,
            ..hit("flows_l2_v4", &flows, l2, 1, 0)
        },
        Case {
            flow_hit: true,
            ..hit("flows_l2_v4_1M", &flows, l2, many, 0)
        },
        pass("miss_v4", miss.clone()),
        pass(
            "miss_v6",
            l4_frame(&f, &Flow::udp6(CLIENT6, 5353, NOT_A_VIP6, 53)),
        ),
        // The VIP's address, another port: past the prefilter, the exact lookup misses.
        pass(
            "miss_vip_port",
            l4_frame(&f, &Flow::tcp4(CLIENT4, 40_001, VIP_WEB, 81)),
        ),
    ]
}
