//! Cluster faults with real daemons in network namespaces: a 1 | 2 partition never yields two
//! owners and heals without moving the VIP back; a fencing hook that fails or hangs blocks
//! the takeover until it succeeds; a frozen owner stops answering ARP for the VIP within its
//! lease; forged gossip from a fourth host is rejected and counted; a rebooted node learns
//! the others' backend verdicts as it joins instead of waiting for its own probes.
//!
//! The scenarios run one at a time (each runs three vipd) so timing is not at the mercy of
//! the others on a small machine.
mod common;

use std::{
    net::UdpSocket,
    sync::Mutex,
    time::{Duration, Instant},
};

use common::{node_ip, Cluster, VIP};
use vip_daemon::core::seal::{Sealer, MAX_DATAGRAM};
use vip_tests::{fmt_mac, privileged};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A holder sample: node, when it was asked, and how long its lease still ran.
#[derive(Clone, Copy, Debug)]
struct Held {
    node: usize,
    at: Instant,
    until: Instant,
}

/// Samples every node's claim every 10 ms for `span` and checks safety on the way: a node
/// seen holding the VIP must not do so while another node's lease, as last reported, still
/// runs. Returns the samples.
fn sample_owners(cluster: &Cluster, span: Duration, log: &mut Vec<Held>) {
    let all: Vec<usize> = (0..cluster.nodes.len()).collect();
    let end = Instant::now() + span;
    while Instant::now() < end {
        let at = Instant::now();
        for (node, left) in cluster.holders(&all) {
            let held = Held {
                node,
                at,
                until: at + left,
            };
            if let Some(other) = log.iter().rev().find(|h| h.node != node && h.until > at) {
                panic!("two owners: {other:?} still valid when {held:?} was seen");
            }
            log.push(held);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn partition_never_yields_two_owners_and_heals_without_moving_back() {
    if !privileged("partition_never_yields_two_owners_and_heals_without_moving_back") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start("");
    let owner = cluster.wait_single_owner(Duration::from_secs(10));
    let mut log = Vec::new();
    sample_owners(&cluster, Duration::from_millis(300), &mut log);

    // The owner alone on one side, the pair on the other.
    let cut = Instant::now();
    cluster.partition(owner);
    sample_owners(&cluster, Duration::from_secs(3), &mut log);
    let last_old = log
        .iter()
        .filter(|h| h.node == owner)
        .map(|h| h.at)
        .max()
        .expect("owner samples");
    let first_new = log
        .iter()
        .find(|h| h.node != owner)
        .expect("the pair took the VIP over");
    eprintln!(
        "partition: isolated owner last seen holding {:?} after the cut; pair owner {} from {:?}",
        last_old - cut,
        cluster.nodes[first_new.node].name,
        first_new.at - cut
    );
    assert!(
        last_old - cut < Duration::from_millis(800),
        "the isolated node must release within one lease (600 ms)"
    );
    let iso = cluster.nodes[owner].vipd.status_json();
    assert_eq!(iso["cluster"]["in_quorum"], false, "{iso}");
    let new_owner = first_new.node;

    // Heal: everyone meets again and the VIP stays where it is.
    let healed = Instant::now();
    cluster.heal(owner);
    sample_owners(&cluster, Duration::from_secs(3), &mut log);
    assert_eq!(
        cluster.wait_single_owner(Duration::from_secs(5)),
        new_owner,
        "a returning node must not steal the VIP back"
    );
    assert!(
        log.iter().all(|h| h.at < healed || h.node == new_owner),
        "no moves after the heal"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = cluster.nodes[owner].vipd.status_json();
        let alive = s["cluster"]["members"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|m| m["state"] == "alive").count());
        if s["cluster"]["in_quorum"] == true && alive == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "isolated node did not rejoin: {s}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

const FENCE_SCRIPT: &str = r#"#!/bin/sh
# Test fencing hook: logs each call, then behaves as fence.mode says.
echo "$VIPD_FENCE_NODE $VIPD_FENCE_REASON" >> "$(dirname "$0")/fence.log"
case "$(cat "$(dirname "$0")/fence.mode")" in
  ok) exit 0 ;;
  hang) exec sleep 30 ;;
  *) exit 1 ;;
esac
"#;

#[test]
fn failing_or_hanging_fence_blocks_takeover_until_it_succeeds() {
    if !privileged("failing_or_hanging_fence_blocks_takeover_until_it_succeeds") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start("fence_command = [\"@DIR@/fence.sh\"]\nfence_timeout = \"400ms\"");
    let script = cluster.dir.join("fence.sh");
    std::fs::write(&script, FENCE_SCRIPT).expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let mode = |m: &str| std::fs::write(cluster.dir.join("fence.mode"), m).expect("mode");
    let calls = || {
        std::fs::read_to_string(cluster.dir.join("fence.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    mode("fail");
    let owner = cluster.wait_single_owner(Duration::from_secs(10));
    let owner_name = cluster.nodes[owner].name.clone();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != owner).collect();

    // The owner dies for the others (frozen, link down), but cannot be fenced.
    cluster.nodes[owner].vipd.signal(libc::SIGSTOP);
    let dead = cluster.host(owner);
    dead.ns.exec(&["ip", "link", "set", &dead.iface, "down"]);
    let died = Instant::now();
    let no_takeover_until = |cond: &dyn Fn() -> bool, limit: Duration, what: &str| {
        let end = Instant::now() + limit;
        while !cond() {
            assert!(
                cluster.holders(&survivors).is_empty(),
                "takeover without a successful fence ({what})"
            );
            assert!(
                Instant::now() < end,
                "{what}: timed out; calls {:?}",
                calls()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    no_takeover_until(
        &|| calls().len() >= 2,
        Duration::from_secs(6),
        "two failed fences",
    );
    assert!(
        calls()
            .iter()
            .all(|c| c.starts_with(&format!("{owner_name} "))),
        "the hook gets the node to fence: {:?}",
        calls()
    );
    let alerts = survivors
        .iter()
        .flat_map(|&i| {
            cluster.nodes[i].vipd.status_json()["cluster"]["alerts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|a| a.to_string())
        .collect::<Vec<_>>();
    assert!(
        alerts
            .iter()
            .any(|a| a.contains("FENCING") && a.contains("FAILED")),
        "loud status line: {alerts:?}"
    );
    let failures: f64 = survivors
        .iter()
        .map(|&i| cluster.metric(i, "vipd_fencing_failures_total", ""))
        .sum();
    assert!(failures >= 2.0, "fencing failures metric: {failures}");

    // A hanging hook is cut off by the timeout and still means no takeover.
    mode("hang");
    let before = calls().len();
    no_takeover_until(
        &|| calls().len() > before,
        Duration::from_secs(6),
        "hung fence",
    );
    let hold = Instant::now() + Duration::from_millis(1200);
    no_takeover_until(
        &|| Instant::now() > hold,
        Duration::from_secs(2),
        "hang window",
    );

    // Once the fence works, the VIP moves.
    mode("ok");
    let end = Instant::now() + Duration::from_secs(12);
    let new_owner = loop {
        if let [(i, _)] = cluster.holders(&survivors)[..] {
            break i;
        }
        assert!(Instant::now() < end, "no takeover after fencing succeeded");
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "fencing: {} calls, takeover by {} {:?} after the owner died",
        calls().len(),
        cluster.nodes[new_owner].name,
        died.elapsed()
    );
}

/// Unicast ARP replies for the VIP seen by the client within about a second, as MACs.
fn arp_replies(cluster: &Cluster) -> Vec<String> {
    let c = cluster.client();
    let out = c.ns.exec(&[
        "sh",
        "-c",
        &format!("arping -c 3 -w 1 -I {} {VIP} || true", c.iface),
    ]);
    out.lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| Some(l.split('[').nth(1)?.split(']').next()?.to_lowercase()))
        .collect()
}

#[test]
fn frozen_owner_stops_answering_arp_within_its_lease() {
    if !privileged("frozen_owner_stops_answering_arp_within_its_lease") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start("");
    let owner = cluster.wait_single_owner(Duration::from_secs(10));
    let owner_mac = fmt_mac(&cluster.host(owner).mac).to_lowercase();
    let before = arp_replies(&cluster);
    assert!(
        !before.is_empty() && before.iter().all(|m| *m == owner_mac),
        "only the owner answers: {before:?}"
    );
    // Frozen daemon, link up, VIP address still on its NIC: only the data-plane lease can
    // stop the kernel from answering.
    cluster.nodes[owner].vipd.signal(libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(650)); // lease 600 ms
    let after = arp_replies(&cluster);
    eprintln!("ARP replies after the freeze: {after:?} (owner was {owner_mac})");
    assert!(
        after.iter().all(|m| *m != owner_mac),
        "frozen owner still answers ARP: {after:?}"
    );
    cluster.nodes[owner].vipd.signal(libc::SIGCONT);
}

#[test]
fn forged_gossip_from_a_fourth_host_is_rejected_and_counted() {
    if !privileged("forged_gossip_from_a_fourth_host_is_rejected_and_counted") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = Cluster::start("");
    let intruder = cluster.lan.add_host(66);
    let targets: Vec<String> = (0..3).map(|i| format!("{}:7946", node_ip(i))).collect();
    cluster.lan.hosts[intruder].ns.run(move || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let mut rng = rand::thread_rng();
        let right_key = [0xab; 32];
        for t in &targets {
            // Junk that does not even look like a datagram of ours.
            for len in [0usize, 1, 10, 43, 59, 100, 600] {
                let junk: Vec<u8> = (0..len).map(|_| rand::Rng::gen(&mut rng)).collect();
                sock.send_to(&junk, t).expect("send");
            }
            // Sealed with a key the cluster does not hold.
            let mut stranger = Sealer::new([0x42; 32], None, 7);
            for _ in 0..5 {
                let d = stranger.seal(b"let me in", &mut rng).expect("seal");
                sock.send_to(&d, t).expect("send");
            }
            // The right key id but a tampered body: forged.
            let mut insider = Sealer::new(right_key, None, rand::Rng::gen(&mut rng));
            for _ in 0..5 {
                let mut d = insider.seal(b"tampered", &mut rng).expect("seal");
                let last = d.len() - 1;
                d[last] ^= 1;
                sock.send_to(&d, t).expect("send");
            }
            // One genuine datagram, replayed.
            let d = insider.seal(b"\x00", &mut rng).expect("seal");
            for _ in 0..3 {
                sock.send_to(&d, t).expect("send");
            }
            sock.send_to(&vec![0u8; MAX_DATAGRAM + 1], t).expect("send");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    for (i, node) in cluster.nodes.iter().enumerate() {
        loop {
            let s = node.vipd.status_json();
            let count = |why: &str| {
                s["cluster"]["rejected"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["name"] == why)
                    .and_then(|r| r["count"].as_u64())
                    .unwrap_or(0)
            };
            let got = [
                count("truncated") + count("bad_magic"),
                count("unknown_key"),
                count("forged"),
                count("replayed"),
                count("oversized"),
            ];
            if got == [7, 5, 5, 2, 1] {
                assert_eq!(s["cluster"]["member_down_events"], 0, "{s}");
                assert_eq!(s["cluster"]["in_quorum"], true);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: counts {got:?}\n{s}",
                node.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            cluster.metric(i, "vipd_gossip_rejected_total", "reason=\"forged\""),
            5.0
        );
    }
    assert_eq!(cluster.holders(&[0, 1, 2]).len(), 1, "membership unharmed");
}

/// Live backends (slots > 0) of VIP `vip` in node `i`'s tables.
fn live_backends(cluster: &Cluster, i: usize, vip: &str) -> usize {
    let s = cluster.nodes[i].vipd.status_json();
    (s["vips"].as_array().into_iter().flatten())
        .filter(|v| v["name"] == vip)
        .flat_map(|v| v["backends"].as_array().cloned().unwrap_or_default())
        .filter(|b| b["slots"].as_u64().unwrap_or(0) > 0)
        .count()
}

#[test]
fn rebooted_node_learns_the_others_verdicts_as_it_joins() {
    if !privileged("rebooted_node_learns_the_others_verdicts_as_it_joins") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A VIP (on its own address: same port as `lines`) whose check needs 20 successes
    // 100 ms apart: a node's own probes take 2 s.
    let mut slow = String::from(
        "\n[[vip]]\nname = \"slow\"\naddress = \"10.77.0.101\"\nport = 7000\n\
         table_size = 251\ncheck = { kind = \"tcp\", interval = \"100ms\", timeout = \"100ms\", rise = 20 }\n"
    );
    for b in 0..3 {
        slow.push_str(&format!(
            "[[vip.backend]]\nname = \"ctl{}\"\naddress = \"{}\"\nport = 7000\n",
            b + 1,
            node_ip(b)
        ));
    }
    let mut cluster = Cluster::start_full(common::TEST_TIMING, &slow);
    let everywhere = |c: &Cluster| (0..3).all(|i| live_backends(c, i, "slow") == 3);
    let start = Instant::now();
    while !everywhere(&cluster) {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "slow VIP never up:\n{}",
            cluster.nodes[0].vipd.cli(&["status"]).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let owner = cluster.wait_single_owner(Duration::from_secs(5));
    let i = (owner + 1) % 3;
    let rebooted = Instant::now();
    cluster.nodes[i].vipd.reboot();
    let up = rebooted.elapsed();
    while live_backends(&cluster, i, "slow") < 3 {
        assert!(
            rebooted.elapsed() < Duration::from_secs(10),
            "slow VIP never complete on the rebooted node"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let complete = rebooted.elapsed();
    eprintln!(
        "rebooted {}: vipd up after {up:?}, all 3 slow backends in its table after {complete:?} \
         (its own probes need 2 s)",
        cluster.nodes[i].name
    );
    assert!(
        complete < up + Duration::from_millis(1500),
        "the others' verdicts did not reach the joiner: {complete:?}"
    );
}
