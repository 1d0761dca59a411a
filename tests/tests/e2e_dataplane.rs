//! Real traffic through the balancer: a client, one balancer node and three backends on a
//! bridged LAN, each in its own network namespace. Real TCP (HTTP) and UDP flows, IPv4 and IPv6,
//! go to the VIP; each must be answered by the backend the host model predicts, directly (the
//! balancer sees only the client's half). Once with L2 DSR, once encapsulated (IPIP/IP6IP6)
//! with the decap program on the backends; then a host that is not a balancer forges an
//! encapsulated SYN with a spoofed inner source, which the decap program drops before any
//! socket sees it, and 20 MB uploads in full-size segments complete through the VIP,
//! encapsulated and across a second chance (the balancer answers "too big").
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{atomic::AtomicBool, atomic::Ordering, Arc},
};

use vip_common::{
    encap::outer_source_v4,
    maps::{self, Backend, Settings, VipInfo, VipKey, FWD_ENCAP, FWD_L2, FWD_LOCAL},
    wire::{FAMILY_V4, FAMILY_V6, IPPROTO_TCP, IPPROTO_UDP},
};
use vip_daemon::{
    core::{maglev, model},
    shell::{
        dataplane::{if_index, Dataplane, Sizing, TableRegion},
        vipaddr,
    },
};
use vip_tests::{
    fixture::{own_encap_sources, Balancer},
    packet::{self, Addr, Flow, Frame},
    privileged, servers, vip_on_loopback, Lan, PinDir,
};

const VIP4: [u8; 4] = [10, 77, 0, 100];
const VIP6: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
const M: u32 = 251;
/// TCP ports of the upload VIPs: balanced to the backends, and this node's own (no service
/// here: a second chance to the fallback table's backend).
const UPLOAD_PORT: u16 = 9000;
const SECOND_CHANCE_PORT: u16 = 9001;
const SEED: u32 = 0xfab0_0001;
/// Outside the LAN's 10.77.0.0/16: the /16 of this base is what backends accept
/// encapsulated packets from, so it must not hold hosts that are not balancers.
const ENCAP_SRC4: [u8; 4] = [10, 78, 255, 0];

fn settings() -> Settings {
    Settings {
        hash_seed: SEED,
        encap_src_v4: ENCAP_SRC4,
        layout_id: 0,
        flags: 0,
        encap_src_v6: [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0, 0],
        ..Default::default()
    }
}

fn a4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0; 16];
    x[..4].copy_from_slice(&a);
    x
}

fn run_e2e(mode: u8, test: &str) {
    if !privileged(test) {
        return;
    }
    let mut lan = Lan::new();
    let client = lan.add_host(1);
    let lb = lan.add_host(2);
    let backends: Vec<usize> = (11..=13).map(|n| lan.add_host(n)).collect();
    let (lb_pins, port_pins) = (PinDir::new(), PinDir::new());
    let backend_pins: Vec<PinDir> = backends.iter().map(|_| PinDir::new()).collect();

    // XDP_TX on a veth is only delivered when its peer runs an XDP program too.
    {
        let (path, port) = (port_pins.path.clone(), lan.hosts[lb].port.clone());
        lan.switch.run(move || {
            let mut dp = Dataplane::load_pinned(&path, &Sizing::default()).expect("load");
            dp.attach_program(maps::PROG_BARE_PASS, &port)
                .expect("attach peer");
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut servers = Vec::new();
    for (i, &b) in backends.iter().enumerate() {
        let host = &lan.hosts[b];
        vip_on_loopback(host, "10.77.0.100", "fd77::100");
        let name = format!("backend-{i}");
        servers.push(servers::http_server(
            &host.ns,
            80,
            name.clone(),
            stop.clone(),
        ));
        for port in [UPLOAD_PORT, SECOND_CHANCE_PORT] {
            servers.push(servers::upload_sink(&host.ns, port, stop.clone()));
        }
        for vip in [
            IpAddr::V4(Ipv4Addr::from(VIP4)),
            IpAddr::V6(Ipv6Addr::from(VIP6)),
        ] {
            servers.push(servers::udp_responder(
                &host.ns,
                SocketAddr::new(vip, 5353),
                name.clone(),
                stop.clone(),
            ));
        }
        if mode == FWD_ENCAP {
            let (path, iface) = (backend_pins[i].path.clone(), host.iface.clone());
            host.ns.run(move || {
                let mut dp = Dataplane::load_pinned(&path, &Sizing::default()).expect("load");
                // Like `vipd host setup`: the balancers' encap sources, then attach.
                dp.set_encap_sources(&own_encap_sources(&settings()))
                    .expect("encap sources");
                dp.attach_program(maps::PROG_DECAP, &iface)
                    .expect("attach decap");
            });
        }
    }
    // The client reaches the VIP through the balancer (as after the owner's gratuitous ARP).
    let c = &lan.hosts[client];
    c.static_neighbour("10.77.0.100", &lan.hosts[lb].mac);
    c.static_neighbour("fd77::100", &lan.hosts[lb].mac);

    // The balancer: attach, then program VIPs, backends and Maglev tables.
    let regions: Vec<TableRegion> = (0..10)
        .map(|i| TableRegion {
            vip_index: i,
            base: i * 2 * M,
            size: M,
        })
        .collect();
    let sizing = Sizing {
        vips: 8,
        backends: 8,
        slots: 20 * M,
        peers: 4,
        interfaces: 1,
        flows: 0,
        fallbacks: 2,
    };
    let lb_mac = lan.hosts[lb].mac;
    let (dp, mtu) = {
        let (path, iface) = (lb_pins.path.clone(), lan.hosts[lb].iface.clone());
        lan.hosts[lb].ns.run(move || {
            let mut dp = Dataplane::load_pinned(&path, &sizing).expect("load");
            dp.attach(&iface).expect("attach");
            // Like vipd: the interface's MAC and MTU in IFACES.
            let mtu = vipaddr::mtu_of(&iface).expect("MTU");
            let ifindex = if_index(&iface).expect("ifindex");
            dp.set_iface(ifindex, lb_mac, mtu).expect("IFACES");
            (dp, mtu)
        })
    };
    assert_eq!(mtu, 1500, "the LAN's links have the usual MTU");
    let mut bal = Balancer::with_dataplane(dp, sizing, settings());
    (bal.model.own_mac, bal.model.mtu) = (Some(lb_mac), mtu);
    // This node's own backends (no service on the second-chance port).
    let lb_host = &lan.hosts[lb];
    for (index, addr, family) in [(6, a4(lb_host.ip4), FAMILY_V4), (7, lb_host.ip6, FAMILY_V6)] {
        bal.set_backend(
            index,
            Backend {
                addr,
                mac: lb_mac,
                family,
                mode: FWD_LOCAL,
                ..Backend::default()
            },
        );
    }
    for (i, &b) in backends.iter().enumerate() {
        let h = &lan.hosts[b];
        bal.set_backend(
            i as u32,
            Backend {
                addr: a4(h.ip4),
                mac: h.mac,
                family: FAMILY_V4,
                mode,
                ..Backend::default()
            },
        );
        bal.set_backend(
            3 + i as u32,
            Backend {
                addr: h.ip6,
                mac: h.mac,
                family: FAMILY_V6,
                mode,
                ..Backend::default()
            },
        );
    }
    let key = |addr, port, proto, family| VipKey {
        addr,
        port,
        proto,
        family,
    };
    // The second-chance VIPs' live tables send everything to this node; their fallback
    // tables (ACTIVE words 8 and 9) spread over the backends.
    let keys = [
        key(a4(VIP4), 80, IPPROTO_TCP, FAMILY_V4),
        key(a4(VIP4), 5353, IPPROTO_UDP, FAMILY_V4),
        key(VIP6, 80, IPPROTO_TCP, FAMILY_V6),
        key(VIP6, 5353, IPPROTO_UDP, FAMILY_V6),
        key(a4(VIP4), UPLOAD_PORT, IPPROTO_TCP, FAMILY_V4),
        key(VIP6, UPLOAD_PORT, IPPROTO_TCP, FAMILY_V6),
        key(a4(VIP4), SECOND_CHANCE_PORT, IPPROTO_TCP, FAMILY_V4),
        key(VIP6, SECOND_CHANCE_PORT, IPPROTO_TCP, FAMILY_V6),
    ];
    let spread = |family| {
        let first = if family == FAMILY_V4 { 0 } else { 3 };
        let members: Vec<maglev::MaglevBackend> = (first..first + 3)
            .map(|id| maglev::MaglevBackend { id, weight: 1 })
            .collect();
        maglev::build(SEED, &members, M).expect("maglev")
    };
    for (i, key) in keys.iter().enumerate() {
        let local = key.port == SECOND_CHANCE_PORT;
        let v4 = key.family == FAMILY_V4;
        bal.set_vip(
            *key,
            VipInfo {
                index: i as u32,
                table_size: M,
                flags: 0,
                fallback: if !local {
                    0
                } else if v4 {
                    9
                } else {
                    10
                },
            },
        );
        let table = match (local, v4) {
            (true, true) => vec![6; M as usize],
            (true, false) => vec![7; M as usize],
            (false, _) => spread(key.family),
        };
        bal.publish(&regions[i], &table);
    }
    bal.publish(&regions[8], &spread(FAMILY_V4));
    bal.publish(&regions[9], &spread(FAMILY_V6));

    // Real flows from the client, each a new connection (new source port).
    let flows = 30;
    let mut seen: HashMap<String, u32> = HashMap::new();
    let vip4: IpAddr = Ipv4Addr::from(VIP4).into();
    let vip6: IpAddr = Ipv6Addr::from(VIP6).into();
    let mut client_sent = 0u64;
    for (vip, src, family) in [(vip4, a4(c.ip4), FAMILY_V4), (vip6, c.ip6, FAMILY_V6)] {
        for proto in [IPPROTO_TCP, IPPROTO_UDP] {
            let to = SocketAddr::new(vip, if proto == IPPROTO_TCP { 80 } else { 5353 });
            let answers: Vec<(u16, String)> = c.ns.run(move || {
                (0..flows)
                    .map(|i| {
                        if proto == IPPROTO_TCP {
                            servers::http_get(to)
                        } else {
                            servers::udp_ask(to, format!("ping {i}").as_bytes())
                        }
                        .unwrap_or_else(|e| panic!("{to} flow {i}: {e}"))
                    })
                    .collect()
            });
            client_sent += flows as u64;
            for (sport, body) in answers {
                let flow = model::Flow {
                    src,
                    dst: if family == FAMILY_V4 { a4(VIP4) } else { VIP6 },
                    sport,
                    dport: to.port(),
                    proto,
                    family,
                };
                let predicted = bal
                    .model
                    .choose(&flow)
                    .and_then(|c| c.backend)
                    .expect("model choice");
                assert_eq!(
                    body,
                    format!("backend-{}", predicted % 3),
                    "{to} from port {sport}"
                );
                *seen.entry(body).or_default() += 1;
            }
        }
    }
    assert_eq!(seen.len(), 3, "every backend served some flows: {seen:?}");

    // The balancer forwarded the client's packets; the answers went straight to the client.
    let stats = bal.dp.stats().expect("stats");
    let forwarded = stats[if mode == FWD_L2 {
        maps::reason::TX_L2
    } else {
        maps::reason::TX_ENCAP
    } as usize]
        .packets;
    assert!(
        forwarded >= client_sent,
        "forwarded {forwarded} < {client_sent} flows"
    );
    let backend_traffic: u64 = bal
        .dp
        .counters(maps::MAP_BACKEND_STATS)
        .expect("backend stats")
        .iter()
        .map(|c| c.packets)
        .sum();
    assert_eq!(
        backend_traffic, forwarded,
        "every forwarded packet is counted for its backend"
    );
    if mode == FWD_ENCAP {
        for (i, pins) in backend_pins.iter().enumerate() {
            let decap = vip_daemon::shell::dataplane::pinned_counters(&pins.path, maps::MAP_STATS)
                .expect("stats")[maps::reason::PASS_DECAP as usize];
            assert!(decap.packets > 0, "backend {i} decapsulated nothing");
        }
        forged_syn_never_reaches_the_listener(&lan, client, backends[0], &backend_pins[0]);
        large_uploads_complete(&lan, client, &mut bal);
    }
    stop.store(true, Ordering::Release);
    for s in servers {
        s.join().expect("server");
    }
}

/// 20 MB uploads in full-size segments (the links' MTU is 1500) through the VIP, IPv4 and
/// IPv6, encapsulated to a backend and across a second chance: encapsulation grows the
/// client's 1500-byte packets past the MTU, so the balancer answers "too big" from the VIP,
/// the client lowers its path MTU to the VIP, and every upload completes. Without the answer
/// those segments are dropped by the backend's link, and the upload stalls.
fn large_uploads_complete(lan: &Lan, client: usize, bal: &mut Balancer) {
    const BYTES: usize = 20 << 20;
    let before = bal.dp.stats().expect("stats");
    let c = &lan.hosts[client];
    for port in [UPLOAD_PORT, SECOND_CHANCE_PORT] {
        for vip in [
            IpAddr::V4(Ipv4Addr::from(VIP4)),
            IpAddr::V6(Ipv6Addr::from(VIP6)),
        ] {
            let to = SocketAddr::new(vip, port);
            let started = std::time::Instant::now();
            let counted = c.ns.run(move || servers::upload(to, BYTES));
            let counted = counted.unwrap_or_else(|e| panic!("20 MB upload to {to}: {e}"));
            assert_eq!(counted, BYTES as u64, "{to}: bytes received");
            eprintln!("20 MB upload to {to}: {:?}", started.elapsed());
        }
    }
    let after = bal.dp.stats().expect("stats");
    let grew = |r: u32| after[r as usize].packets - before[r as usize].packets;
    assert!(
        grew(maps::reason::TX_TOO_BIG) >= 4,
        "each upload was answered"
    );
    assert!(
        grew(maps::reason::TX_SECOND_CHANCE) > 0,
        "second chances taken"
    );
    assert_eq!(grew(maps::reason::DROP_TOO_BIG), 0);
}

/// The client (a host on the LAN, not a balancer) sends backend `b` an IPIP SYN to the VIP
/// whose inner source is an address it does not own. The decap program drops it
/// (`drop_encap_source`): the listener never sees it, so no SYN_RECV request appears. The
/// same SYN with an outer source in the balancers' encap /16 is decapsulated and reaches the
/// listener (one SYN_RECV): the check would see a SYN that got through.
fn forged_syn_never_reaches_the_listener(lan: &Lan, client: usize, b: usize, pins: &PinDir) {
    let (c, backend) = (&lan.hosts[client], &lan.hosts[b]);
    let frame = Frame {
        dst_mac: backend.mac,
        src_mac: c.mac,
        ..Frame::default()
    };
    // On-link but unused: the backend's SYN-ACK has a route, so a request would be kept.
    let spoofed = [10, 77, 0, 99];
    let ipip = |outer_src: [u8; 4], sport: u16| {
        let inner = packet::l3_packet(&frame, &Flow::tcp4(spoofed, sport, VIP4, 80));
        packet::ethernet(
            &frame,
            0x0800,
            &packet::ip_packet(
                &frame,
                &Addr::V4(outer_src),
                &Addr::V4(backend.ip4),
                4,
                &inner,
            ),
        )
    };
    let syn_recv = || {
        backend
            .ns
            .exec(&["ss", "-Htn", "state", "syn-recv", "( sport = :80 )"])
            .lines()
            .filter(|l| l.contains("10.77.0.99"))
            .count()
    };
    let dropped = || {
        vip_daemon::shell::dataplane::pinned_counters(&pins.path, maps::MAP_STATS).expect("stats")
            [maps::reason::DROP_ENCAP_SOURCE as usize]
            .packets
    };
    assert_eq!((syn_recv(), dropped()), (0, 0));

    let forged = ipip(c.ip4, 31_337);
    let iface = c.iface.clone();
    c.ns.run(move || send_raw(&iface, &forged));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let stats =
        vip_daemon::shell::dataplane::pinned_counters(&pins.path, maps::MAP_STATS).expect("stats");
    assert_eq!(
        dropped(),
        1,
        "the forged SYN is dropped and counted: {:?}",
        stats.iter().map(|c| c.packets).collect::<Vec<_>>()
    );
    assert_eq!(syn_recv(), 0, "the forged SYN reached the listener");

    let from_balancer = ipip(outer_source_v4(ENCAP_SRC4, 0x1234), 31_338);
    let iface = c.iface.clone();
    c.ns.run(move || send_raw(&iface, &from_balancer));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while syn_recv() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(syn_recv(), 1, "a balancer-sourced SYN reaches the listener");
    assert_eq!(dropped(), 1);
}

/// Sends one Ethernet frame as is on `iface` of the calling thread's namespace.
fn send_raw(iface: &str, frame: &[u8]) {
    let index = vip_daemon::shell::dataplane::if_index(iface).expect("ifindex");
    // SAFETY: plain socket calls with a zeroed, then filled, sockaddr_ll of the right size.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0, "AF_PACKET socket");
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = index as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        let sent = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        libc::close(fd);
        assert_eq!(sent, frame.len() as isize, "sendto");
    }
}

#[test]
fn e2e_l2_dsr_tcp_udp_v4_v6() {
    run_e2e(FWD_L2, "e2e_l2_dsr_tcp_udp_v4_v6");
}

#[test]
fn e2e_ipip_dsr_with_decap_program() {
    run_e2e(FWD_ENCAP, "e2e_ipip_dsr_with_decap_program");
}
