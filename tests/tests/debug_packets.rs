//! `vipd debug packets` (issue 16, aya-log): while the CLI runs, the XDP program logs each
//! packet to a VIP (filtered by VIP and client address) and the CLI prints it with names;
//! when it stops, or when it is killed and stops renewing, packet logging is off again.
use std::{
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, Instant},
};

use aya::maps::{Array, MapData};
use vip_common::maps::{Settings, SETTINGS_F_DEBUG, SETTINGS_F_DEBUG_SRC, SETTINGS_F_DEBUG_VIP};
use vip_daemon::shell::dataplane::{Dataplane, Sizing};
use vip_tests::{privileged, servers, vip_on_loopback, vipd::Vipd, Lan, PinDir};

const VIP: &str = "10.77.0.100";

fn config(iface: &str) -> String {
    format!(
        r#"
[node]
name = "lb"
interfaces = ["{iface}"]
pin_dir = "@PIN_DIR@"

[control]
socket = "@CONTROL@"

[metrics]
listen = "off"

[defaults.check]
interval = "100ms"
timeout = "100ms"
rise = 2
fall = 2
jitter = 0.0

[[vip]]
name = "web"
address = "{VIP}"
port = 80
table_size = 251
check = {{ kind = "tcp" }}
[[vip.backend]]
name = "b1"
address = "10.77.0.12"
"#
    )
}

/// SETTINGS' flags as the XDP program reads them (from the pinned map).
fn settings_flags(pins: &PinDir) -> u32 {
    let map = MapData::from_pin(pins.path.join("SETTINGS")).expect("pinned SETTINGS");
    let array: Array<_, Settings> = Array::try_from(aya::maps::Map::Array(map)).expect("array");
    array.get(&0, 0).expect("SETTINGS[0]").flags
}

/// `vipd --control SOCKET` of this vipd, arguments to add.
fn cli_command(vipd: &Vipd) -> std::process::Command {
    let mut cmd = std::process::Command::new(&vipd.bin);
    cmd.arg("--control").arg(&vipd.control);
    cmd
}

/// `count` HTTP requests through the VIP from host `from`.
fn requests(lan: &Lan, from: usize, count: usize) {
    lan.hosts[from].ns.run(move || {
        for _ in 0..count {
            servers::http_get(format!("{VIP}:80").parse().expect("addr")).expect("GET via VIP");
        }
    });
}

#[test]
fn packets_are_logged_while_the_cli_runs_and_only_then() {
    if !privileged("packets_are_logged_while_the_cli_runs_and_only_then") {
        return;
    }
    let mut lan = Lan::new();
    let lb = lan.add_host(11);
    let backend = lan.add_host(12);
    let (client, other) = (lan.add_host(13), lan.add_host(14));
    vip_on_loopback(&lan.hosts[backend], VIP, "fd77::64");
    // XDP_TX out of a veth needs a program on its peer.
    let port_pins = PinDir::new();
    {
        let (path, port) = (port_pins.path.clone(), lan.hosts[lb].port.clone());
        lan.switch.run(move || {
            let mut dp = Dataplane::load_pinned(&path, &Sizing::default()).expect("load");
            (dp.attach_program(vip_common::maps::PROG_BARE_PASS, &port)).expect("attach peer");
        });
    }
    for c in [client, other] {
        lan.hosts[c]
            .ns
            .exec(&["ip", "route", "add", VIP, "via", "10.77.0.11"]);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let server = servers::http_server(&lan.hosts[backend].ns, 80, "b1".into(), stop.clone());
    let pins = PinDir::new();
    let vipd = Vipd::start(&lan.hosts[lb].ns, &pins, &config(&lan.hosts[lb].iface));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lan.hosts[client].ns.run(|| {
        let vip = format!("{VIP}:80").parse().expect("addr");
        servers::http_get(vip).is_ok()
    }) {
        assert!(
            Instant::now() < deadline,
            "no answer via the VIP:\n{}",
            vipd.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(settings_flags(&pins) & SETTINGS_F_DEBUG, 0, "off at start");

    // The CLI for 2 s, filtered on the client; requests from both clients meanwhile.
    let cli = {
        let mut cmd = cli_command(&vipd);
        cmd.args(["debug", "packets", "--vip", VIP, "--src", "10.77.0.13"]);
        cmd.args(["--duration", "2s"]);
        std::thread::spawn(move || cmd.output().expect("run vipd debug packets"))
    };
    std::thread::sleep(Duration::from_millis(500));
    let flags = settings_flags(&pins);
    let want = SETTINGS_F_DEBUG | SETTINGS_F_DEBUG_VIP | SETTINGS_F_DEBUG_SRC;
    assert_eq!(flags & want, want, "on, filtered, while the CLI runs");
    requests(&lan, client, 3);
    requests(&lan, other, 3);
    let out = cli.join().expect("cli thread");
    assert!(out.status.success(), "{out:?}");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{out}");
    let logged: Vec<&str> = out.lines().filter(|l| l.contains(" > ")).collect();
    assert!(
        logged.iter().any(|l| l.starts_with("10.77.0.13:")
            && l.contains(&format!("> {VIP}:80 vip "))
            && l.contains("verdict TX tx_l2")),
        "no forwarded packet of the client logged:\n{out}"
    );
    // Each request is a handful of packets (SYN, ACK, request, FIN...): all logged.
    assert!(logged.len() >= 3 * 3, "{} records:\n{out}", logged.len());
    assert!(
        logged.iter().all(|l| l.starts_with("10.77.0.13:")),
        "the filter let another client through:\n{out}"
    );
    assert_eq!(
        settings_flags(&pins) & SETTINGS_F_DEBUG,
        0,
        "off after the CLI"
    );

    // A CLI killed without turning it off: vipd turns it off once renewals stop.
    let mut child = cli_command(&vipd)
        .args(["debug", "packets"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the cli");
    std::thread::sleep(Duration::from_millis(1500));
    assert_ne!(
        settings_flags(&pins) & SETTINGS_F_DEBUG,
        0,
        "on while it runs"
    );
    child.kill().expect("kill the cli");
    let _ = child.wait();
    let killed = Instant::now();
    while settings_flags(&pins) & SETTINGS_F_DEBUG != 0 {
        assert!(
            killed.elapsed() < Duration::from_secs(8),
            "still logging 8 s after the CLI died:\n{}",
            vipd.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "packet logging off {:?} after the CLI was killed",
        killed.elapsed()
    );
    stop.store(true, std::sync::atomic::Ordering::Release);
    let _ = server.join();
}
