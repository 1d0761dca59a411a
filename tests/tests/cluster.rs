//! Three controllers, each running vipd in cluster mode and a backend service, on one LAN
//! with a client: they agree on one owner of the VIP (the only node answering ARP for it),
//! traffic is balanced over all three through the owner, and when the owner dies (its link
//! cut, its vipd frozen) another node takes over within a second, the client's neighbour
//! entry moves to it, and long-lived connections to surviving backends keep working.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, Instant},
};

use vip_common::maps;
use vip_daemon::shell::dataplane::{Dataplane, Sizing};
use vip_tests::{fmt_mac, privileged, servers, vipd::Vipd, Lan, PinDir};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);

fn config(name: &str, n: u8, iface: &str, key: &str) -> String {
    let mut c = format!(
        r#"
[node]
name = "{name}"
interfaces = ["{iface}"]
addresses = ["10.77.0.{n}"]
pin_dir = "@PIN_DIR@"

[cluster]
hash_seed = 99
listen = "10.77.0.{n}:7946"
peers = ["10.77.0.11:7946", "10.77.0.12:7946", "10.77.0.13:7946"]
key_file = "{key}"
voters = ["ctl1", "ctl2", "ctl3"]
lease = "600ms"
probe_period = "100ms"
suspect_timeout = "250ms"

[metrics]
listen = "off"

[control]
socket = "@CONTROL@"

[defaults.check]
interval = "100ms"
timeout = "100ms"
rise = 2
fall = 2
jitter = 0.0
"#
    );
    for (vip, port, check) in [("web", 80, "http"), ("lines", 7000, "tcp")] {
        c.push_str(&format!(
            "\n[[vip]]\nname = \"{vip}\"\naddress = \"{VIP}\"\nport = {port}\ntable_size = 251\ncheck = {{ kind = \"{check}\" }}\n"
        ));
        for i in 1..=3 {
            c.push_str(&format!(
                "[[vip.backend]]\nname = \"ctl{i}\"\naddress = \"10.77.0.{}\"\nport = {port}\n",
                10 + i
            ));
        }
    }
    c
}

struct Node {
    host: usize,
    vipd: Vipd,
    _pins: PinDir,
}

fn owner_of(nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .filter_map(|n| {
            let s = n.vipd.status_json();
            let owners = s["cluster"]["owners"].as_array()?.clone();
            owners
                .iter()
                .find(|o| o["vip"] == VIP.to_string() && o["lease_left_ms"].as_f64().is_some())
                .map(|_| s["node"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

#[test]
fn owner_death_moves_the_vip_within_a_second_and_keeps_connections() {
    if !privileged("owner_death_moves_the_vip_within_a_second_and_keeps_connections") {
        return;
    }
    let mut lan = Lan::new();
    let client = lan.add_host(1);
    let hosts: Vec<usize> = (11..=13).map(|n| lan.add_host(n)).collect();
    let port_pins = PinDir::new();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    {
        let (path, ports): (_, Vec<String>) = (
            port_pins.path.clone(),
            hosts.iter().map(|&h| lan.hosts[h].port.clone()).collect(),
        );
        lan.switch.run(move || {
            let mut dp = Dataplane::load_pinned(&path, &Sizing::default()).expect("load");
            for p in ports {
                dp.attach_program(maps::PROG_BARE_PASS, &p)
                    .expect("attach peer");
            }
        });
    }
    let dir = std::env::temp_dir().join(vip_tests::unique("vipd-cluster-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("cluster.key");
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).expect("key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let mut nodes = Vec::new();
    for (i, &h) in hosts.iter().enumerate() {
        let host = &lan.hosts[h];
        threads.push(servers::http_server(
            &host.ns,
            80,
            format!("ctl{}", i + 1),
            stop.clone(),
        ));
        threads.push(servers::line_server(
            &host.ns,
            7000,
            format!("ctl{}", i + 1),
            stop.clone(),
        ));
        let pins = PinDir::new();
        let cfg = config(
            &format!("ctl{}", i + 1),
            11 + i as u8,
            &host.iface,
            key.to_str().unwrap(),
        );
        let vipd = Vipd::start(&host.ns, &pins, &cfg);
        nodes.push(Node {
            host: h,
            vipd,
            _pins: pins,
        });
    }
    // One owner, agreed by all.
    let deadline = Instant::now() + Duration::from_secs(10);
    let owner = loop {
        let owners = owner_of(&nodes);
        if owners.len() == 1 {
            break owners[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no single owner: {owners:?}\n{}",
            nodes[0].vipd.cli(&["status"]).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "owner: {owner}\n{}",
        nodes[0].vipd.cli(&["status"]).unwrap_or_default()
    );
    // Shared health: every node builds the same tables from the agreed view.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tables: Vec<String> = nodes
            .iter()
            .map(|n| {
                let s = n.vipd.status_json();
                let slots: Vec<String> = s["vips"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|v| {
                        v["backends"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|b| format!("{}/{}={}", v["name"], b["name"], b["slots"]))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                slots.join(" ")
            })
            .collect();
        if tables.windows(2).all(|w| w[0] == w[1]) && !tables[0].contains("=0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nodes disagree on tables: {tables:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let c = &lan.hosts[client];
    // Traffic through the owner reaches all three controllers' services.
    let web = SocketAddr::new(IpAddr::V4(VIP), 80);
    let served: std::collections::BTreeSet<String> = c.ns.run(move || {
        (0..40)
            .filter_map(|_| servers::http_get(web).ok().map(|(_, b)| b))
            .collect()
    });
    assert_eq!(served.len(), 3, "balanced over all controllers: {served:?}");
    let owner_mac = c.ns.exec(&["ip", "neigh", "show", &VIP.to_string()]);
    let owner_idx = owner.trim_start_matches("ctl").parse::<usize>().unwrap() - 1;
    assert!(
        owner_mac.contains(&fmt_mac(&lan.hosts[nodes[owner_idx].host].mac)),
        "client resolves the VIP to the owner: {owner_mac}"
    );

    // Long-lived connections, each to some backend.
    let lines = SocketAddr::new(IpAddr::V4(VIP), 7000);
    let conns = c.ns.run(move || {
        (0..8)
            .map(|_| {
                let mut l = servers::LineClient::connect(lines).expect("connect");
                let who = l.ask().expect("ask");
                (l, who)
            })
            .collect::<Vec<_>>()
    });

    // The owner dies: its link goes down and its vipd is frozen.
    let dead = &lan.hosts[nodes[owner_idx].host];
    nodes[owner_idx].vipd.signal(libc::SIGSTOP);
    let cut = Instant::now();
    dead.ns.exec(&["ip", "link", "set", &dead.iface, "down"]);
    let survivors: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != owner_idx)
        .map(|(_, n)| n)
        .collect();
    let deadline = cut + Duration::from_secs(5);
    let new_owner = loop {
        let owners: Vec<String> = survivors
            .iter()
            .filter_map(|n| {
                let s = n.vipd.status_json();
                s["cluster"]["owners"]
                    .as_array()?
                    .iter()
                    .find(|o| o["vip"] == VIP.to_string() && o["lease_left_ms"].as_f64().is_some())
                    .map(|_| s["node"].as_str().unwrap_or_default().to_owned())
            })
            .collect();
        assert!(owners.len() <= 1, "two owners: {owners:?}");
        if owners.len() == 1 {
            break owners[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no takeover:\n{}",
            survivors[0].vipd.cli(&["status"]).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let takeover = cut.elapsed();
    eprintln!("takeover by {new_owner} after {takeover:?}");
    assert_ne!(new_owner, owner);
    assert!(
        takeover < Duration::from_millis(1500),
        "takeover took {takeover:?}"
    );
    // The client's neighbour entry follows the gratuitous ARP.
    let new_idx = new_owner
        .trim_start_matches("ctl")
        .parse::<usize>()
        .unwrap()
        - 1;
    let new_mac = fmt_mac(&lan.hosts[nodes[new_idx].host].mac);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let neigh = c.ns.exec(&["ip", "neigh", "show", &VIP.to_string()]);
        if neigh.contains(&new_mac) {
            break;
        }
        assert!(Instant::now() < deadline, "client still has {neigh}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Long-lived connections to surviving backends keep working through the new owner.
    let dead_name = owner.clone();
    let (kept, lost) = c.ns.run(move || {
        let (mut kept, mut lost) = (0, 0);
        for (mut l, who) in conns {
            if who == dead_name {
                continue;
            }
            match l.ask() {
                Ok(again) if again == who => kept += 1,
                _ => lost += 1,
            }
        }
        (kept, lost)
    });
    eprintln!("long-lived connections to survivors: {kept} kept, {lost} lost");
    assert!(kept > 0 && lost == 0, "kept {kept}, lost {lost}");
    nodes[owner_idx].vipd.signal(libc::SIGCONT);
    stop.store(true, std::sync::atomic::Ordering::Release);
    let _ = threads;
}
