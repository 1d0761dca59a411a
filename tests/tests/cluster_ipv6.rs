//! An IPv6 VIP in cluster mode, next to the IPv4 one (a dual-stack cluster), with three real
//! vipd in network namespaces and real packets:
//!
//! - traffic to the IPv6 VIP from the client is answered by every backend, and every node's
//!   own probes of every IPv6 backend pass, also on the owner, which carries the VIP on its
//!   interface (the VIP is never the probes' source: were it, the backends would answer to
//!   the VIP on their own `lo` and the owner would see them fail: `common::VIP6` is closer
//!   to ctl1's address than ctl2's and ctl3's own addresses are, and whichever node owns it
//!   first, a node other than ctl1 owns it before the test ends);
//! - a router's unicast neighbour unreachability probes (NS sent to a node's MAC for the
//!   VIP) are answered by the owner and only by it;
//! - when the owner's vipd is frozen, its kernel stops answering those probes as soon as its
//!   lease has run out (the address is still on its interface); another node takes over, the
//!   VIP address on the new owner is never tentative (no DAD, even with DAD on), the client's
//!   IPv6 neighbour entry moves to the new owner's MAC (unsolicited NA with the override
//!   flag) and traffic works again.
mod common;

use std::{
    collections::BTreeSet,
    ffi::CString,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use common::{node_ip6, Cluster, VIP, VIP6};
use vip_tests::{fmt_mac, packet, privileged, servers, Host};

/// `common::TEST_TIMING`'s lease.
const LEASE: Duration = Duration::from_millis(600);

/// A `[[vip]]` table for [`VIP6`]: HTTP on 80 with the three controllers as IPv6 backends.
fn ipv6_vip() -> String {
    let mut t = format!(
        "\n[[vip]]\nname = \"web6\"\naddress = \"{VIP6}\"\nport = 80\ntable_size = 251\n\
         check = {{ kind = \"http\" }}\n"
    );
    for b in 0..3 {
        t.push_str(&format!(
            "[[vip.backend]]\nname = \"ctl{}\"\naddress = \"{}\"\nport = 80\n",
            b + 1,
            node_ip6(b)
        ));
    }
    t
}

/// Source MACs of the neighbour advertisements for `target` the client receives after
/// sending two unicast neighbour solicitations for it to `to` (a router's NUD probe).
fn nud_answers(client: &Host, to: [u8; 6], target: Ipv6Addr) -> Vec<String> {
    let iface = CString::new(client.iface.clone()).expect("iface name");
    let ns =
        packet::ipv6_unicast_neighbor_solicitation(client.mac, to, client.ip6, target.octets());
    let target = target.octets();
    client.ns.run(move || {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        let mut seen = Vec::new();
        // SAFETY: socket/bind/setsockopt/send/recvfrom/close on an fd owned here, with valid
        // pointers and lengths.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
            assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_protocol = proto;
            addr.sll_ifindex = libc::if_nametoindex(iface.as_ptr()) as i32;
            let sll_len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            let rc = libc::bind(fd, (&raw const addr).cast(), sll_len);
            assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 20_000,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            for _ in 0..2 {
                let rc = libc::send(fd, ns.as_ptr().cast(), ns.len(), 0);
                assert!(rc > 0, "send NS: {}", std::io::Error::last_os_error());
                let end = Instant::now() + Duration::from_millis(200);
                while Instant::now() < end {
                    let mut buf = [0u8; 2048];
                    let mut from: libc::sockaddr_ll = std::mem::zeroed();
                    let mut len = sll_len;
                    let n = libc::recvfrom(
                        fd,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&raw mut from).cast(),
                        &mut len,
                    );
                    if n <= 0 || from.sll_pkttype == libc::PACKET_OUTGOING {
                        continue;
                    }
                    let f = &buf[..n as usize];
                    // Ethernet, IPv6 carrying ICMPv6, a neighbour advertisement for `target`.
                    let na = f.len() >= 78
                        && f[12..14] == [0x86, 0xdd]
                        && f[20] == 58
                        && f[54] == 136
                        && f[62..78] == target;
                    if na {
                        seen.push(fmt_mac(&f[6..12].try_into().expect("6 bytes")));
                    }
                }
            }
            libc::close(fd);
        }
        seen
    })
}

/// Checks unicast NUD for the VIP against each node in `among`: the owner answers (with its
/// own MAC), every other node answers nothing.
fn assert_only_owner_answers_nud(cluster: &Cluster, among: &[usize], owner: usize) {
    for &i in among {
        let mac = cluster.host(i).mac;
        let answers = nud_answers(cluster.client(), mac, VIP6);
        let name = &cluster.nodes[i].name;
        eprintln!("unicast NS for {VIP6} to {name}: answers from {answers:?}");
        if i == owner {
            assert!(
                !answers.is_empty() && answers.iter().all(|m| *m == fmt_mac(&mac)),
                "the owner {name} must answer NUD for {VIP6}: {answers:?}"
            );
        } else {
            assert!(
                answers.is_empty(),
                "non-owner {name} answered NUD for {VIP6}: {answers:?}"
            );
        }
    }
}

/// Why some node in `among` does not see every backend of the IPv6 VIP pass its own last
/// probe, or does not see the backends in `up` (names) up in its tables; Ok when all do.
fn own_probes_of_ipv6_backends(
    cluster: &Cluster,
    among: &[usize],
    up: &[&str],
) -> Result<(), String> {
    for &i in among {
        let s = cluster.nodes[i].vipd.status_json();
        let vip = (s["vips"].as_array().into_iter().flatten())
            .find(|v| v["name"] == "web6")
            .ok_or("no VIP web6 in status")?;
        for b in ["ctl1", "ctl2", "ctl3"] {
            let be = (vip["backends"].as_array().into_iter().flatten())
                .find(|x| x["name"] == b)
                .ok_or_else(|| format!("no backend {b}"))?;
            let probe_ok = be["last_probe"]["ok"].as_bool() == Some(true);
            let live = be["health"] == "up" && be["slots"].as_u64().unwrap_or(0) > 0;
            if !probe_ok || (up.contains(&b) && !live) {
                return Err(format!(
                    "{} sees {b}: health {}, slots {}, last probe {}",
                    cluster.nodes[i].name, be["health"], be["slots"], be["last_probe"]
                ));
            }
        }
    }
    Ok(())
}

/// Waits until every node in `among` probes every IPv6 backend successfully and has those in
/// `up` live in its tables, then checks that it stays so for half a second (five checks, ten
/// probe periods).
fn assert_probes_pass(cluster: &Cluster, among: &[usize], up: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Err(e) = own_probes_of_ipv6_backends(cluster, among, up) {
        assert!(Instant::now() < deadline, "IPv6 backends not up: {e}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(100));
        if let Err(e) = own_probes_of_ipv6_backends(cluster, among, up) {
            panic!("IPv6 probes failing: {e}");
        }
    }
}

/// Backends (by name) that answered `n` HTTP requests to `addr` from the client; panics
/// when any request fails.
fn served(cluster: &Cluster, addr: IpAddr, n: usize) -> BTreeSet<String> {
    let to = SocketAddr::new(addr, 80);
    cluster.client().ns.run(move || {
        (0..n)
            .map(|k| match servers::http_get(to) {
                Ok((_, body)) => body,
                Err(e) => panic!("request {k} to {to} failed: {e}"),
            })
            .collect()
    })
}

/// The client's neighbour entry for the IPv6 VIP.
fn client_neighbour(cluster: &Cluster) -> String {
    let c = cluster.client();
    c.ns.exec(&[
        "ip",
        "-6",
        "neigh",
        "show",
        &VIP6.to_string(),
        "dev",
        &c.iface,
    ])
}

#[test]
fn ipv6_vip_moves_answers_nud_only_at_its_owner_and_never_sources_probes() {
    if !privileged("ipv6_vip_moves_answers_nud_only_at_its_owner_and_never_sources_probes") {
        return;
    }
    let cluster = Cluster::launch(common::TEST_TIMING, &ipv6_vip());
    let all = [0, 1, 2];
    let vip6 = VIP6.to_string();
    let owner = cluster.wait_owner_of(&vip6, &all, Duration::from_secs(10));
    cluster.wait_owner_of(&VIP.to_string(), &all, Duration::from_secs(5));
    // Test namespaces turn DAD off; a real NIC has it on, and a taken-over VIP must not wait
    // for it (nor fail it against the old owner, which still carries the address).
    for i in all {
        let h = cluster.host(i);
        h.ns.exec(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{}.accept_dad=1", h.iface),
        ]);
    }
    let owner_name = cluster.nodes[owner].name.clone();
    eprintln!(
        "owner of {vip6}: {owner_name}\n{}",
        cluster.nodes[owner]
            .vipd
            .cli(&["status"])
            .unwrap_or_default()
    );

    // (a) Every node's own probes of every IPv6 backend pass, the owner's included.
    assert_probes_pass(&cluster, &all, &["ctl1", "ctl2", "ctl3"]);
    // Dual stack: both VIPs reach every backend through their owners.
    let v6 = served(&cluster, IpAddr::V6(VIP6), 30);
    assert_eq!(
        v6.len(),
        3,
        "IPv6 VIP balanced over all controllers: {v6:?}"
    );
    let v4 = served(&cluster, IpAddr::V4(VIP), 30);
    assert_eq!(
        v4.len(),
        3,
        "IPv4 VIP balanced over all controllers: {v4:?}"
    );
    let owner_mac = fmt_mac(&cluster.host(owner).mac);
    let neigh = client_neighbour(&cluster);
    assert!(
        neigh.contains(&owner_mac),
        "client resolves {vip6} to the owner {owner_mac}: {neigh}"
    );

    // (c) Unicast NUD is answered by the owner and only by it.
    assert_only_owner_answers_nud(&cluster, &all, owner);

    // (d) The owner's vipd freezes with its link up and the VIP still on its interface: only
    // the data plane's lease can stop its kernel from answering.
    let left = cluster
        .holders_of(&vip6, &[owner])
        .first()
        .map(|&(_, left)| left)
        .expect("owner holds a lease");
    assert!(
        left <= LEASE,
        "lease left {left:?} beyond the lease {LEASE:?}"
    );
    cluster.nodes[owner].vipd.signal(libc::SIGSTOP);
    let frozen = Instant::now();
    let survivors: Vec<usize> = all.into_iter().filter(|&i| i != owner).collect();

    // (b) Another node takes over.
    let deadline = frozen + Duration::from_secs(5);
    let new_owner = loop {
        let holders = cluster.holders_of(&vip6, &survivors);
        assert!(holders.len() <= 1, "two owners: {holders:?}");
        if let [(h, _)] = holders[..] {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "no takeover:\n{}",
            cluster.nodes[survivors[0]]
                .vipd
                .cli(&["status"])
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let new_name = cluster.nodes[new_owner].name.clone();
    eprintln!(
        "takeover of {vip6} by {new_name} {:?} after the freeze",
        frozen.elapsed()
    );

    // (e) From the takeover on, the address on the new owner is never tentative (DAD would
    // hold it for a second) and DAD never fails on it.
    let h = cluster.host(new_owner);
    let end = Instant::now() + Duration::from_secs(1);
    let mut seen = 0;
    while Instant::now() < end {
        let addrs = h.ns.exec(&["ip", "-6", "addr", "show", "dev", &h.iface]);
        if let Some(line) = addrs.lines().find(|l| l.contains(&format!("{vip6}/128"))) {
            seen += 1;
            assert!(
                !line.contains("tentative") && !line.contains("dadfailed"),
                "{vip6} on the new owner {new_name}: {line}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        seen > 0,
        "{vip6} never appeared on the new owner {new_name}"
    );

    // (d) Once its lease has run out, the frozen owner answers no NUD probe for the VIP.
    let expired = frozen + left + Duration::from_millis(100);
    std::thread::sleep(expired.saturating_duration_since(Instant::now()));
    let after = nud_answers(cluster.client(), cluster.host(owner).mac, VIP6);
    eprintln!("frozen {owner_name}'s NUD answers after its lease: {after:?}");
    assert!(
        after.is_empty(),
        "frozen owner {owner_name} still answers NS for {vip6} {:?} after the freeze \
         (lease left {left:?}): {after:?}",
        frozen.elapsed()
    );
    // (c) again: among the survivors only the new owner answers.
    assert_only_owner_answers_nud(&cluster, &survivors, new_owner);

    // (b) The client's neighbour entry follows the unsolicited NA (override).
    let new_mac = fmt_mac(&cluster.host(new_owner).mac);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let neigh = client_neighbour(&cluster);
        if neigh.contains(&new_mac) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "client still has {neigh} (new owner {new_name} at {new_mac})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The survivors' probes of every IPv6 backend pass, the new owner's included with the VIP
    // now on its interface (the frozen node's service itself still runs), and traffic works
    // again through the new owner, reaching both surviving backends.
    let names: Vec<&str> = survivors
        .iter()
        .map(|&i| cluster.nodes[i].name.as_str())
        .collect();
    assert_probes_pass(&cluster, &survivors, &names);
    let v6 = served(&cluster, IpAddr::V6(VIP6), 30);
    assert!(
        names.iter().all(|n| v6.contains(*n)),
        "IPv6 VIP through {new_name} reaches {names:?}: {v6:?}"
    );
    cluster.nodes[owner].vipd.signal(libc::SIGCONT);
}
