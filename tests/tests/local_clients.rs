//! Clients on the controllers themselves (nova -> keystone on the same node): the cgroup
//! programs balance their connects and sends to a VIP with the same tables as XDP, so a
//! local client reaches every controller's service, and its new connections all succeed
//! while its own node's service is dead, before the tables know (the fallback table's
//! pick, as the second chance does for packets) and after. A restarted vipd adopts the
//! pinned links: local clients stay balanced while it is down.
mod common;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, Instant},
};

use common::{
    node_ip, node_ip6,
    services::{spawn_service, spawn_service_in, Services},
    Cluster, VIP, VIP6,
};
use vip_tests::{privileged, servers, vip_on_loopback, vipd::Vipd, Lan, NetNs, PinDir};

const PORT: u16 = 8774;
const UDP_PORT: u16 = 5353;

/// `api` (HTTP) on the IPv4 and the IPv6 VIP and `dns` (UDP, probed on the HTTP port), every
/// controller a backend of each.
fn vips() -> String {
    let mut c = String::new();
    for (name, vip, proto) in [
        ("api", IpAddr::V4(VIP), "tcp"),
        ("api6", IpAddr::V6(VIP6), "tcp"),
        ("dns", IpAddr::V4(VIP), "udp"),
    ] {
        let port = if proto == "udp" { UDP_PORT } else { PORT };
        let check = if proto == "udp" { "tcp" } else { "http" };
        c.push_str(&format!(
            "\n[[vip]]\nname = \"{name}\"\naddress = \"{vip}\"\nport = {port}\nprotocol = \"{proto}\"\ntable_size = 251\ncheck = {{ kind = \"{check}\" }}\n"
        ));
        for b in 0..3 {
            let address = if vip.is_ipv6() {
                node_ip6(b)
            } else {
                node_ip(b)
            };
            c.push_str(&format!(
                "[[vip.backend]]\nname = \"ctl{}\"\naddress = \"{address}\"\nport = {PORT}\n",
                b + 1
            ));
        }
    }
    c
}

/// Live backends of VIP `vip` in a vipd's table.
fn live(vipd: &Vipd, vip: &str) -> usize {
    let s = vipd.status_json();
    (s["vips"].as_array().into_iter().flatten())
        .filter(|v| v["name"] == vip)
        .flat_map(|v| v["backends"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["slots"].as_u64().unwrap_or(0) > 0)
        .count()
}

/// A vipd's local-client counter `name` (sockets).
fn sockets(vipd: &Vipd, name: &str) -> u64 {
    let s = vipd.status_json();
    (s["local_clients"]["sockets"]
        .as_array()
        .into_iter()
        .flatten())
    .find(|c| c["name"] == name)
    .and_then(|c| c["count"].as_u64())
    .unwrap_or(0)
}

/// Who answered `n` new connections (or datagrams from new sockets) to `to` from namespace
/// `ns`; panics on any failure.
fn answers(ns: &NetNs, to: SocketAddr, n: usize, how: Ask) -> BTreeMap<String, usize> {
    let got: Vec<Result<String, String>> = ns.run(move || {
        (0..n)
            .map(|_| {
                match how {
                    Ask::Http => servers::http_get(to).map(|(_, body)| body),
                    Ask::UdpConnected => servers::udp_ask(to, b"q").map(|(_, a)| a),
                    Ask::UdpUnconnected => udp_send_to(to),
                }
                .map(|a| a.trim().to_owned())
                .map_err(|e| e.to_string())
            })
            .collect()
    });
    let mut by = BTreeMap::new();
    for (k, a) in got.iter().enumerate() {
        let who = a
            .as_ref()
            .unwrap_or_else(|e| panic!("{how:?} {k} of {n} to {to} from {} failed: {e}", ns.name));
        *by.entry(who.clone()).or_insert(0) += 1;
    }
    by
}

#[derive(Clone, Copy, Debug)]
enum Ask {
    Http,
    UdpConnected,
    UdpUnconnected,
}

/// One datagram from a fresh unconnected socket (`sendto`, the sendmsg hook) and its answer.
fn udp_send_to(to: SocketAddr) -> std::io::Result<String> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        sock.send_to(b"q", to)?;
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    Err(std::io::Error::other("no UDP answer"))
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn local_clients_are_balanced_and_survive_their_own_service_dying() {
    if !privileged("local_clients_are_balanced_and_survive_their_own_service_dying") {
        return;
    }
    let mut cluster = Cluster::launch(common::TEST_TIMING, &vips());
    let mut services = Services((0..3).map(|i| spawn_service(&cluster, i, PORT)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let _udp: Vec<_> = (0..3)
        .map(|i| {
            let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), UDP_PORT);
            servers::udp_responder(
                &cluster.host(i).ns,
                any,
                format!("ctl{}", i + 1),
                stop.clone(),
            )
        })
        .collect();
    let me = 0;
    let my_name = cluster.nodes[me].name.clone();
    wait_until(
        "every backend live on ctl1",
        Duration::from_secs(10),
        || {
            ["api", "api6", "dns"]
                .iter()
                .all(|v| live(&cluster.nodes[me].vipd, v) == 3)
        },
    );
    let status = cluster.nodes[me].vipd.cli(&["status"]).expect("status");
    assert!(status.contains("local clients: attached at"), "{status}");

    // 1. Balanced over every controller, each family and kind of socket.
    let api = SocketAddr::new(IpAddr::V4(VIP), PORT);
    let api6 = SocketAddr::new(IpAddr::V6(VIP6), PORT);
    let dns = SocketAddr::new(IpAddr::V4(VIP), UDP_PORT);
    for (to, how) in [
        (api, Ask::Http),
        (api6, Ask::Http),
        (dns, Ask::UdpConnected),
        (dns, Ask::UdpUnconnected),
    ] {
        let by = answers(&cluster.host(me).ns, to, 45, how);
        eprintln!("{how:?} to {to} from {my_name}: {by:?}");
        assert_eq!(
            by.len(),
            3,
            "every controller answers local clients: {by:?}"
        );
    }
    let (backend, local) = (
        sockets(&cluster.nodes[me].vipd, "backend"),
        sockets(&cluster.nodes[me].vipd, "local"),
    );
    eprintln!("local-client sockets: backend={backend} local={local}");
    assert!(backend > 0 && local > 0);

    // 2. Its own service SIGKILLed while vipd is stopped (the tables cannot follow): a
    // local pick finds no socket and takes the fallback table's.
    let before = sockets(&cluster.nodes[me].vipd, "second_chance");
    cluster.nodes[me].vipd.signal(libc::SIGSTOP);
    services.0[me].kill().expect("kill");
    let _ = services.0[me].wait();
    let frozen = answers(&cluster.host(me).ns, api, 45, Ask::Http);
    cluster.nodes[me].vipd.signal(libc::SIGCONT);
    let taken = sockets(&cluster.nodes[me].vipd, "second_chance") - before;
    eprintln!("own service dead, tables frozen: {frozen:?}; {taken} second chances");
    assert!(!frozen.contains_key(&my_name), "{frozen:?}");
    assert!(taken > 0, "some picks were the dead local service");

    // 3. Once the tables know, the same.
    wait_until(
        "own backend out of ctl1's table",
        Duration::from_secs(5),
        || live(&cluster.nodes[me].vipd, "api") == 2,
    );
    let after = answers(&cluster.host(me).ns, api, 45, Ask::Http);
    eprintln!("own service dead, tables updated: {after:?}");
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(!after.contains_key(&my_name));

    // 4. vipd restarted: while it is down the pinned links and maps keep balancing; the new
    // one adopts them.
    cluster.nodes[me].vipd.terminate();
    let down = answers(&cluster.host(me).ns, api, 30, Ask::Http);
    eprintln!("vipd down: {down:?}");
    assert_eq!(down.len(), 2, "{down:?}");
    cluster.nodes[me].vipd.spawn();
    wait_until("vipd back", Duration::from_secs(10), || {
        (cluster.nodes[me].vipd.cli(&["status"]).ok())
            .is_some_and(|s| s.contains("local clients: adopted at"))
    });
    let back = answers(&cluster.host(me).ns, api, 30, Ask::Http);
    eprintln!("vipd back: {back:?}");
    assert_eq!(back.len(), 2, "{back:?}");
}

/// Single-node mode, one local backend and two plain ones (no vipd there, so no fallback
/// table): a local client is balanced over all three, and while its own service is dead
/// and the table does not know yet, a local pick is picked again from the live table.
#[test]
fn single_node_local_clients_skip_their_dead_service() {
    if !privileged("single_node_local_clients_skip_their_dead_service") {
        return;
    }
    let mut lan = Lan::new();
    let hosts: Vec<usize> = [11, 12, 13].iter().map(|&n| lan.add_host(n)).collect();
    let names = ["lb", "b12", "b13"];
    for &h in &hosts {
        vip_on_loopback(&lan.hosts[h], &VIP.to_string(), &VIP6.to_string());
    }
    let mut services = Services(
        (hosts.iter().zip(names))
            .map(|(&h, name)| spawn_service_in(&lan.hosts[h].ns, name, PORT))
            .collect(),
    );
    let lb = &lan.hosts[hosts[0]];
    let mut config = format!(
        r#"
[node]
name = "lb"
interfaces = ["{}"]
addresses = ["10.77.0.11"]
pin_dir = "@PIN_DIR@"

[control]
socket = "@CONTROL@"

[defaults.check]
interval = "100ms"
timeout = "100ms"
rise = 2
fall = 2
jitter = 0.0

[[vip]]
name = "api"
address = "{VIP}"
port = {PORT}
table_size = 251
check = {{ kind = "http" }}
"#,
        lb.iface
    );
    for (n, name) in [11, 12, 13].iter().zip(names) {
        config.push_str(&format!(
            "[[vip.backend]]\nname = \"{name}\"\naddress = \"10.77.0.{n}\"\nport = {PORT}\n"
        ));
    }
    let pins = PinDir::new();
    let vipd = Vipd::start(&lb.ns, &pins, &config);
    wait_until("every backend live", Duration::from_secs(10), || {
        live(&vipd, "api") == 3
    });
    let api = SocketAddr::new(IpAddr::V4(VIP), PORT);
    let by = answers(&lb.ns, api, 45, Ask::Http);
    eprintln!("single node, local clients: {by:?}");
    assert_eq!(by.len(), 3, "{by:?}");

    vipd.signal(libc::SIGSTOP);
    services.0[0].kill().expect("kill");
    let _ = services.0[0].wait();
    let frozen = answers(&lb.ns, api, 45, Ask::Http);
    vipd.signal(libc::SIGCONT);
    let taken = sockets(&vipd, "second_chance");
    eprintln!("single node, own service dead, table frozen: {frozen:?}; {taken} picked again");
    assert!(!frozen.contains_key("lb"), "{frozen:?}");
    assert!(taken > 0, "some picks were the dead local service");
}
