//! The running vipd's periodic self-check (issue 14, item 8): a single-node cluster vipd in a
//! namespace; its owned VIP address is deleted from the interface, its pinned XDP link
//! removed (which detaches the program) and its live table overwritten behind its back
//! (`bpftool` on the pinned map). Within one self-check period status shows the ALERT with
//! each finding, `vipd_selfcheck_mismatches_total` counts them, and everything is repaired:
//! the next run finds nothing. Then a clean stop: the held VIP address goes from the
//! interface, the log says what is left on purpose, and `vipd host undo` with vipd's own
//! record (`<state_dir>/vipd-host.json`) reverts the VIP on `lo` and the ARP sysctls.
use std::time::{Duration, Instant};

use vip_tests::{privileged, sh, vipd::Vipd, PinDir};

const VIP: &str = "10.80.0.100";

fn config(key_file: &str) -> String {
    format!(
        r#"
[node]
name = "lb"
interfaces = ["e0"]
pin_dir = "@PIN_DIR@"

[cluster]
listen = "10.80.0.2:7946"
key_file = "{key_file}"
voters = ["lb"]
lease = "600ms"
probe_period = "100ms"
suspect_timeout = "250ms"

[metrics]
listen = "127.0.0.1:9478"

[control]
socket = "@CONTROL@"

[defaults.check]
interval = "1s"
timeout = "200ms"

[[vip]]
name = "web"
address = "{VIP}"
port = 80
table_size = 251
check = {{ kind = "tcp" }}

[[vip.backend]]
name = "b0"
address = "10.80.0.11"
"#
    )
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_self_check_finds_and_repairs_tampering() {
    if !privileged("the_self_check_finds_and_repairs_tampering") {
        return;
    }
    let ns = vip_tests::veth_namespace("vsc", "10.80.0.2/24");
    let pins = PinDir::new();
    let dir = std::env::temp_dir().join(vip_tests::unique("vipd-sc-"));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("cluster.key");
    let hex = sh(&[vip_tests::vipd_bin().to_str().unwrap(), "keygen"]);
    std::fs::write(&key, hex).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let arp_before = ns.exec(&["sysctl", "-n", "net.ipv4.conf.all.arp_ignore"]);
    let mut vipd = Vipd::start(&ns, &pins, &config(key.to_str().unwrap()));
    let on_e0 = || ns.exec(&["ip", "-4", "addr", "show", "dev", "e0"]);
    wait_until("the node owns the VIP", Duration::from_secs(10), || {
        on_e0().contains(&format!("{VIP}/32"))
    });

    // Tamper: the owned address goes, the link pin goes (the program is detached), and the
    // table maps hold junk in every slot of the VIP's two generations.
    ns.exec(&["ip", "addr", "del", &format!("{VIP}/32"), "dev", "e0"]);
    std::fs::remove_file(pins.path.join("link_e0")).expect("link pin");
    let slots = pins.path.join("SLOTS");
    let batch: String = (0u32..251)
        .map(|k| {
            let key = k.to_le_bytes().map(|b| b.to_string()).join(" ");
            let path = slots.display();
            format!("map update pinned {path} key {key} value 0xef 0xbe 0 0 0xef 0xbe 0 0\n")
        })
        .collect();
    let batch_file = dir.join("batch");
    std::fs::write(&batch_file, batch).unwrap();
    sh(&["bpftool", "batch", "file", batch_file.to_str().unwrap()]);

    // Within one period (10 s) the alert shows every finding, each repaired.
    let mut status = serde_json::Value::Null;
    wait_until("the self-check alert", Duration::from_secs(15), || {
        status = vipd.status_json();
        status["self_check"]["ok"] == false
    });
    let findings = status["self_check"]["findings"].as_array().unwrap().clone();
    for check in ["program", "table", "address"] {
        let f = findings
            .iter()
            .find(|f| f["check"] == check)
            .unwrap_or_else(|| panic!("no {check} finding in {status}"));
        assert_eq!(f["repair"], "repaired", "{f}");
    }
    let text = vipd.cli(&["status"]).unwrap();
    assert!(text.contains("ALERT self-check"), "{text}");
    let metrics = ns.exec(&["curl", "-s", "http://127.0.0.1:9478/metrics"]);
    for check in ["program", "table", "address"] {
        let line = format!("vipd_selfcheck_mismatches_total{{check=\"{check}\"}} 1");
        assert!(metrics.contains(&line), "no {line:?} in:\n{metrics}");
    }
    assert!(metrics.contains("vipd_selfcheck_ok 0"), "{metrics}");

    // Repaired: address and program are back at once; the next run finds nothing.
    assert!(on_e0().contains(&format!("{VIP}/32")), "{}", on_e0());
    assert!(ns
        .exec(&["ip", "link", "show", "dev", "e0"])
        .contains("xdp"));
    assert!(pins.path.join("link_e0").exists());
    wait_until("a clean self-check", Duration::from_secs(15), || {
        vipd.status_json()["self_check"]["ok"] == true
    });
    let took = vipd.status_json()["self_check"]["took_us"]
        .as_u64()
        .unwrap();
    eprintln!("self-check took {took} us");
    let metrics = ns.exec(&["curl", "-s", "http://127.0.0.1:9478/metrics"]);
    assert!(metrics.contains("vipd_selfcheck_ok 1"), "{metrics}");

    // Clean stop: the held address goes; the rest stays, said in the log.
    let lo = || ns.exec(&["ip", "-4", "addr", "show", "dev", "lo"]);
    assert!(lo().contains(&format!("{VIP}/32")), "{}", lo());
    vipd.terminate();
    assert!(!on_e0().contains(VIP), "{}", on_e0());
    let logs = vipd.logs();
    assert!(logs.contains("left on this host on purpose"), "{logs}");
    assert!(
        pins.path.join("link_e0").exists(),
        "the data plane stays pinned"
    );
    assert!(lo().contains(&format!("{VIP}/32")), "{}", lo());
    assert_eq!(
        ns.exec(&["sysctl", "-n", "net.ipv4.conf.all.arp_ignore"])
            .trim(),
        "1"
    );
    // vipd's record: `vipd host undo` reverts exactly what it changed.
    let record = vipd.config.parent().unwrap().join("vipd-host.json");
    let text = std::fs::read_to_string(&record).expect("vipd's host record");
    assert!(text.contains(VIP), "{text}");
    let undo = ns.exec(&[
        vip_tests::vipd_bin().to_str().unwrap(),
        "host",
        "undo",
        "--state-file",
        record.to_str().unwrap(),
    ]);
    assert!(
        undo.contains(&format!("remove VIP {VIP} from lo")),
        "{undo}"
    );
    assert!(!lo().contains(VIP), "{}", lo());
    assert_eq!(
        ns.exec(&["sysctl", "-n", "net.ipv4.conf.all.arp_ignore"]),
        arp_before
    );
    let _ = std::fs::remove_dir_all(&dir);
}
