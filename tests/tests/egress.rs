//! Backends behind another interface: a backend whose next hop is behind another attached
//! interface (`Backend::egress`) gets its frames redirected there (`XDP_REDIRECT` through
//! `EGRESS_DEVS`) with that interface's MAC as source, L2 or encapsulated; the encapsulated
//! size is checked against that interface's MTU. First through BPF_PROG_TEST_RUN against the
//! host model, then with real traffic: a client on one link, the balancer attached to two, the
//! backend on the other; its HTTP answers and a 20 MB upload come back directly (DSR).
use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{atomic::AtomicBool, atomic::Ordering, Arc},
};

use vip_common::{
    maps::{
        reason::*, Backend, Iface, Settings, VipInfo, VipKey, FWD_ENCAP, FWD_L2, PROG_BARE_PASS,
    },
    wire::{FAMILY_V4, IPPROTO_TCP, XDP_DROP, XDP_REDIRECT, XDP_TX},
};
use vip_daemon::shell::dataplane::{if_index, Dataplane, Sizing, TableRegion};
use vip_tests::{
    fixture::Balancer,
    packet::{self, Flow, Frame},
    privileged, servers, unique, veth_pair,
    vipd::Vipd,
    NetNs, PinDir,
};

const M: u32 = 251;
const OUR_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const OTHER_MAC: [u8; 6] = [2, 0, 0, 0, 0xb, 1];
const CLIENT: [u8; 4] = [198, 18, 0, 7];
const VIP: [u8; 4] = [192, 0, 2, 20];
const DF: u16 = 0x4000;

fn a4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0; 16];
    x[..4].copy_from_slice(&a);
    x
}

fn sizing() -> Sizing {
    Sizing {
        vips: 4,
        fallbacks: 0,
        backends: 4,
        slots: 8 * M,
        peers: 1,
        interfaces: 2,
        flows: 0,
    }
}

/// VIP:80+i -> backend i: 0 L2 behind egress port 2, 1 IPIP behind port 2, 2 L2 behind port
/// 3 (not listed), 3 L2 out the receiving interface (port 0).
fn balancer() -> Balancer {
    let mut b = Balancer::new(
        sizing(),
        Settings {
            hash_seed: 5,
            encap_src_v4: [10, 255, 0, 0],
            ..Default::default()
        },
    );
    let lo = if_index("lo").expect("lo");
    b.set_own_iface(OUR_MAC, 1500);
    b.set_egress(
        2,
        lo,
        Iface {
            mac: OTHER_MAC,
            mtu: 1400,
        },
    );
    for (i, (mode, egress)) in [(FWD_L2, 2), (FWD_ENCAP, 2), (FWD_L2, 3), (FWD_L2, 0)]
        .into_iter()
        .enumerate()
    {
        let i = i as u32;
        b.set_backend(
            i,
            Backend {
                addr: a4([10, 2, 0, 10 + i as u8]),
                mac: [2, 0xbe, 0, 0, 0, i as u8],
                family: FAMILY_V4,
                mode,
                egress,
                ..Backend::default()
            },
        );
        add_vip(&mut b, i, VIP, 80 + i as u16, i);
    }
    b
}

/// TCP VIP `index` at `addr:port`, its live table all `backend`.
fn add_vip(b: &mut Balancer, index: u32, addr: [u8; 4], port: u16, backend: u32) {
    let key = VipKey {
        addr: a4(addr),
        port,
        proto: IPPROTO_TCP,
        family: FAMILY_V4,
    };
    let info = VipInfo {
        index,
        table_size: M,
        flags: 0,
        fallback: 0,
    };
    b.set_vip(key, info);
    let region = TableRegion {
        vip_index: index,
        base: index * 2 * M,
        size: M,
    };
    b.publish(&region, &vec![backend; M as usize]);
}

fn segment(port: u16, ip_len: usize) -> Vec<u8> {
    let frame = Frame {
        payload: vec![0x5a; ip_len - 40],
        src_mac: CLIENT_MAC,
        dst_mac: OUR_MAC,
        frag: DF,
        ..Frame::default()
    };
    packet::l4_frame(&frame, &Flow::tcp4(CLIENT, 40_000 + port, VIP, port))
}

#[test]
fn frames_for_backends_behind_another_interface_are_redirected() {
    if !privileged("frames_for_backends_behind_another_interface_are_redirected") {
        return;
    }
    let mut b = balancer();
    let backend_mac = |i: u8| [2, 0xbe, 0, 0, 0, i];
    for (name, port, action, reason, src, grown) in [
        ("L2 behind port 2", 80, XDP_REDIRECT, TX_L2, OTHER_MAC, 0),
        (
            "IPIP behind port 2",
            81,
            XDP_REDIRECT,
            TX_ENCAP,
            OTHER_MAC,
            20,
        ),
        (
            "L2 out the receiving interface",
            83,
            XDP_TX,
            TX_L2,
            OUR_MAC,
            0,
        ),
    ] {
        let sent = segment(port, 200);
        let (run, out) = b.check(&sent);
        assert_eq!((run.action, out.reason), (action, reason), "{name}");
        let dst = backend_mac((port - 80) as u8);
        assert_eq!(run.output[..12], [dst, src].concat(), "{name}: MACs");
        assert_eq!(run.output.len(), sent.len() + grown, "{name}");
    }
    // No device at the backend's port: dropped, untouched.
    let sent = segment(82, 200);
    let (run, out) = b.check(&sent);
    assert_eq!((run.action, out.reason), (XDP_DROP, DROP_NO_BACKEND));
    assert_eq!(run.output, sent);
    // Encapsulated, the packet must fit the egress interface (MTU 1400), not the receiving
    // one (1500): answered "too big" back out of the receiving interface, announcing 1380.
    let sent = segment(81, 1400);
    let (run, out) = b.check(&sent);
    assert_eq!((run.action, out.reason), (XDP_TX, TX_TOO_BIG));
    assert_eq!(run.output[..12], [CLIENT_MAC, OUR_MAC].concat());
    assert_eq!(run.output[14 + 26..14 + 28], 1380u16.to_be_bytes());
    let (run, out) = b.check(&segment(81, 1380));
    assert_eq!((run.action, out.reason), (XDP_REDIRECT, TX_ENCAP), "fits");
}

/// Three namespaces: client (10.91.1.2) --c0/l0-- balancer --l1/b0-- backend (10.91.2.2,
/// the VIP 10.91.9.100 on lo, an HTTP server on 80 and an upload sink on 9000). The backend
/// answers the client through the balancer's kernel (its default route), so only the
/// client's half crosses XDP.
struct Topology {
    client: NetNs,
    lb: NetNs,
    /// Kept alive: dropping it deletes the namespace.
    _backend: NetNs,
    l0: String,
    l1: String,
    backend_mac: [u8; 6],
    stop: Arc<AtomicBool>,
    servers: Vec<std::thread::JoinHandle<()>>,
    _peer_pins: PinDir,
}

impl Topology {
    fn new() -> Self {
        let (client, lb, backend) = (NetNs::new("vc"), NetNs::new("vl"), NetNs::new("vb"));
        let (c0, l0, l1, b0) = (unique("c"), unique("l"), unique("l"), unique("b"));
        veth_pair(&client, &c0, &lb, &l0);
        veth_pair(&lb, &l1, &backend, &b0);
        client.exec(&["ip", "addr", "add", "10.91.1.2/24", "dev", &c0]);
        client.exec(&["ip", "route", "add", "10.91.9.100/32", "via", "10.91.1.1"]);
        // Checksum offload does not survive XDP on veth: compute checksums in software.
        client.exec(&["ethtool", "-K", &c0, "tx", "off"]);
        lb.exec(&["ip", "addr", "add", "10.91.1.1/24", "dev", &l0]);
        lb.exec(&["ip", "addr", "add", "10.91.2.1/24", "dev", &l1]);
        lb.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for conf in ["all", "default", &l0, &l1] {
            lb.exec(&[
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{conf}.rp_filter=0"),
            ]);
        }
        backend.exec(&["ip", "addr", "add", "10.91.2.2/24", "dev", &b0]);
        backend.exec(&["ip", "addr", "add", "10.91.9.100/32", "dev", "lo"]);
        backend.exec(&["ip", "route", "add", "default", "via", "10.91.2.1"]);
        backend.exec(&["ethtool", "-K", &b0, "tx", "off"]);
        let backend_mac = mac_of(&backend, &b0);
        // A frame redirected into a veth is delivered only when its peer runs XDP too.
        let peer_pins = PinDir::new();
        {
            let (path, b0) = (peer_pins.path.clone(), b0.clone());
            backend.run(move || {
                let mut dp = Dataplane::load_pinned(&path, &Sizing::default()).expect("load");
                dp.attach_program(PROG_BARE_PASS, &b0).expect("attach");
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let servers = vec![
            servers::http_server(&backend, 80, "behind-l1".into(), stop.clone()),
            servers::upload_sink(&backend, 9000, stop.clone()),
        ];
        Self {
            client,
            lb,
            _backend: backend,
            l0,
            l1,
            backend_mac,
            stop,
            servers,
            _peer_pins: peer_pins,
        }
    }

    /// 20 GETs answered by the backend, and a 20 MB upload to it, through the VIP.
    fn traffic_reaches_the_backend(&self) {
        let vip = Ipv4Addr::new(10, 91, 9, 100);
        let answers: Vec<String> = self.client.run(move || {
            (0..20)
                .map(|i| {
                    let (_, body) = servers::http_get(SocketAddr::from((vip, 80)))
                        .unwrap_or_else(|e| panic!("GET {i}: {e}"));
                    body
                })
                .collect()
        });
        assert!(answers.iter().all(|a| a == "behind-l1"), "{answers:?}");
        let counted = self
            .client
            .run(move || servers::upload(SocketAddr::from((vip, 9000)), 20 << 20));
        assert_eq!(counted.expect("20 MB upload"), 20 << 20);
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Release);
        for s in self.servers {
            s.join().expect("server");
        }
    }
}

#[test]
fn real_traffic_reaches_a_backend_behind_the_other_interface() {
    if !privileged("real_traffic_reaches_a_backend_behind_the_other_interface") {
        return;
    }
    let t = Topology::new();
    let (lb, l0, l1, backend_mac) = (&t.lb, t.l0.clone(), t.l1.clone(), t.backend_mac);
    let pins = PinDir::new();
    let (dp, egress) = {
        let (path, l0, l1) = (pins.path.clone(), l0.clone(), l1.clone());
        lb.run(move || {
            let mut dp = Dataplane::load_pinned(&path, &sizing()).expect("load");
            let mut egress = Vec::new();
            for (port, iface) in [(1u8, &l0), (2, &l1)] {
                dp.attach(iface).expect("attach");
                let mac = vip_daemon::shell::vipaddr::mac_of(iface).expect("MAC");
                let mtu = vip_daemon::shell::vipaddr::mtu_of(iface).expect("MTU");
                let ifindex = if_index(iface).expect("ifindex");
                dp.set_iface(ifindex, mac, mtu).expect("IFACES");
                dp.set_egress(port.into(), ifindex, Iface { mac, mtu })
                    .expect("egress");
                egress.push((port, Iface { mac, mtu }));
            }
            (dp, egress)
        })
    };
    let mut bal = Balancer::with_dataplane(dp, sizing(), Settings::default());
    bal.model.egress.extend(egress);
    bal.set_backend(
        0,
        Backend {
            addr: a4([10, 91, 2, 2]),
            mac: backend_mac,
            family: FAMILY_V4,
            mode: FWD_L2,
            egress: 2,
            ..Backend::default()
        },
    );
    for (index, port) in [(0u32, 80u16), (1, 9000)] {
        add_vip(&mut bal, index, [10, 91, 9, 100], port, 0);
    }

    t.traffic_reaches_the_backend();
    let stats = bal.dp.stats().expect("stats");
    assert!(stats[TX_L2 as usize].packets >= 20 * 3, "redirected by L2");
    t.stop();
}

/// The same through vipd attached to both links: it finds the backend's route leaves by l1
/// and lists that port in the backend's entry.
#[test]
fn vipd_redirects_to_a_backend_behind_its_second_interface() {
    if !privileged("vipd_redirects_to_a_backend_behind_its_second_interface") {
        return;
    }
    let t = Topology::new();
    let config = format!(
        r#"
[node]
name = "lb"
interfaces = ["{}", "{}"]
pin_dir = "@PIN_DIR@"

[metrics]
listen = "off"

[control]
socket = "@CONTROL@"

[defaults.check]
interval = "100ms"
timeout = "100ms"
rise = 1
fall = 1

[[vip]]
name = "web"
address = "10.91.9.100"
port = 80
table_size = 251

[[vip.backend]]
name = "behind-l1"
address = "10.91.2.2"

[[vip]]
name = "upload"
address = "10.91.9.100"
port = 9000
table_size = 251

[[vip.backend]]
name = "behind-l1"
address = "10.91.2.2"
"#,
        t.l0, t.l1
    );
    let pins = PinDir::new();
    let vipd = Vipd::start(&t.lb, &pins, &config);
    within_5s("backend live", || {
        vipd.cli(&["status"]).unwrap_or_default().contains("1 of 1")
    });
    // vipd found the backend's route leaves by l1, its second interface: egress port 2.
    let egress: Vec<u8> = pinned_array::<Backend>(&pins, "BACKENDS")
        .iter()
        .filter(|b| b.mode == FWD_L2)
        .map(|b| b.egress)
        .collect();
    assert_eq!(egress, [2, 2], "both VIPs' backend entries");
    t.traffic_reaches_the_backend();

    // The operator lowers l1's MTU: within a neighbour refresh (1 s), EGRESS follows, so that
    // encapsulated packets are checked against the MTU the link has now.
    t.lb.exec(&["ip", "link", "set", &t.l1, "mtu", "1400"]);
    within_5s("EGRESS port 2 at MTU 1400", || {
        pinned_array::<Iface>(&pins, "EGRESS")[2].mtu == 1400
    });
    drop(vipd);
    t.stop();
}

/// Every entry of the pinned array map `name`.
fn pinned_array<T: aya::Pod>(pins: &PinDir, name: &str) -> Vec<T> {
    let pinned = aya::maps::MapData::from_pin(pins.path.join(name)).expect(name);
    let map: aya::maps::Array<_, T> =
        aya::maps::Array::try_from(aya::maps::Map::Array(pinned)).expect("array");
    (0..map.len())
        .map(|i| map.get(&i, 0).expect("entry"))
        .collect()
}

/// Waits up to 5 s for `ok`, polling every 50 ms.
fn within_5s(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "not within 5 s: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The MAC of `iface` in `ns`.
fn mac_of(ns: &NetNs, iface: &str) -> [u8; 6] {
    let iface = iface.to_owned();
    ns.run(move || vip_daemon::shell::vipaddr::mac_of(&iface).expect("MAC"))
}
