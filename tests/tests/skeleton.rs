//! Walking-skeleton tests: the XDP object loads, verifies, runs through BPF_PROG_TEST_RUN and
//! counts real packets on a veth in a private network namespace.
use aya::programs::{TestRun as _, TestRunOptions};
use vip_common::maps::reason;
use vip_daemon::shell::dataplane::{self, Dataplane, Sizing};
use vip_tests::{privileged, veth_pair, vipd_bin, NetNs, PinDir};

const XDP_PASS: u32 = 2;

/// Ethernet + IPv4 + UDP, 60 bytes.
fn udp_frame() -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = 0x45;
    f[16..18].copy_from_slice(&46u16.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[10, 0, 0, 1]);
    f[30..34].copy_from_slice(&[10, 0, 0, 2]);
    f
}

#[test]
fn prog_test_run_passes_and_counts() {
    if !privileged("prog_test_run_passes_and_counts") {
        return;
    }
    let mut dp = Dataplane::load_private(&Sizing::default()).expect("load");
    let frame = udp_frame();
    let mut out = vec![0u8; 256];
    let res = dp
        .program()
        .expect("verify")
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        })
        .expect("BPF_PROG_TEST_RUN");
    assert_eq!(res.return_value, XDP_PASS);
    assert_eq!(&out[..res.data_size_out as usize], &frame[..]);
    let not_vip = dp.stats().expect("stats")[reason::PASS_NOT_VIP as usize];
    assert_eq!(not_vip.packets, 1);
    assert_eq!(not_vip.bytes, frame.len() as u64);
}

#[test]
fn netns_veth_counts_real_pings() {
    if !privileged("netns_veth_counts_real_pings") {
        return;
    }
    let client = NetNs::new("vtc");
    let node = NetNs::new("vtn");
    let (c_if, n_if) = (vip_tests::unique("vc"), vip_tests::unique("vn"));
    veth_pair(&client, &c_if, &node, &n_if);
    client.exec(&["ip", "addr", "add", "192.0.2.1/24", "dev", &c_if]);
    node.exec(&["ip", "addr", "add", "192.0.2.2/24", "dev", &n_if]);
    let pins = PinDir::new();

    // Through the real CLI, inside the node's namespace.
    let vipd = vipd_bin();
    let pin_arg = pins.path.to_str().unwrap().to_owned();
    let out = node.exec(&[
        vipd.to_str().unwrap(),
        "--pin-dir",
        &pin_arg,
        "attach",
        "--iface",
        &n_if,
    ]);
    assert!(out.contains("attached"), "{out}");
    // A second attach adopts what is pinned instead of loading again.
    let again = node.exec(&[
        vipd.to_str().unwrap(),
        "--pin-dir",
        &pin_arg,
        "attach",
        "--iface",
        &n_if,
    ]);
    assert!(again.contains("adopted"), "{again}");

    client.exec(&["ping", "-c", "5", "-i", "0.05", "-W", "1", "192.0.2.2"]);

    let total = |pins: &std::path::Path| {
        let stats = dataplane::pinned_counters(pins, vip_common::maps::MAP_STATS).expect("stats");
        vip_common::maps::Counter {
            packets: stats.iter().map(|c| c.packets).sum(),
            bytes: stats.iter().map(|c| c.bytes).sum(),
        }
    };
    let icmp = dataplane::pinned_counters(&pins.path, vip_common::maps::MAP_STATS).expect("stats")
        [reason::PASS_ICMP as usize];
    assert!(icmp.packets >= 5, "ICMP counted {} packets", icmp.packets);
    let seen = total(&pins.path);
    // Keep the map open past detach to see that counting stops.
    let dp = Dataplane::load_pinned(&pins.path, &Sizing::default()).expect("adopt pinned maps");
    assert!(seen.packets >= 5, "counted {} packets", seen.packets);
    assert!(seen.bytes >= 5 * 98, "counted {} bytes", seen.bytes);
    let dump = vip_tests::sh(&[
        "bpftool",
        "map",
        "dump",
        "pinned",
        &format!("{pin_arg}/STATS"),
    ]);
    assert!(
        dump.contains("\"packets\"") && dump.contains("\"bytes\""),
        "{dump}"
    );

    assert!(dataplane::detach(&pins.path, &n_if).expect("detach"));
    assert!(
        !pins.path.exists(),
        "detach of the last link removes every pin"
    );
    // Detached: pings no longer counted (the old map handle still reads the same map). The
    // baseline is read after the detach: stray ARP or IPv6 neighbour traffic may be counted
    // between the first read and the detach.
    let detached: u64 = dp.stats().expect("stats").iter().map(|c| c.packets).sum();
    assert!(detached >= seen.packets);
    client.exec(&["ping", "-c", "2", "-i", "0.05", "-W", "1", "192.0.2.2"]);
    let after: u64 = dp.stats().expect("stats").iter().map(|c| c.packets).sum();
    assert_eq!(after, detached, "program still attached after detach");
}
