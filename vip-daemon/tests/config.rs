//! `vipd.toml`: the shipped examples, defaults, and one test per class of error, each pinning
//! the exact line and field path of the diagnostic.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vip_daemon::config::{self, *};

const MINIMAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/minimal.toml");
const OPENSTACK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/openstack-controllers.toml"
);

/// A valid one-VIP file, 8 lines; tests edit it or append from line 9 on.
const VIP: &str = r#"[[vip]]
name = "api"
address = "192.0.2.100"
port = 5000

[[vip.backend]]
name = "ctl1"
address = "192.0.2.11"
"#;

/// `src` with line `n` (1-based) replaced by `new`.
fn edit(src: &str, n: usize, new: &str) -> String {
    let mut lines: Vec<&str> = src.lines().collect();
    lines[n - 1] = new;
    lines.join("\n") + "\n"
}

/// `src` with `new` inserted so that it becomes line `n`.
fn insert(src: &str, n: usize, new: &str) -> String {
    let mut lines: Vec<&str> = src.lines().collect();
    lines.insert(n - 1, new);
    lines.join("\n") + "\n"
}

fn errors(src: &str) -> Vec<Diagnostic> {
    match config::parse(src, "t.toml") {
        Ok(c) => panic!("accepted: {c:#?}"),
        Err(ConfigError::Invalid(d)) => d,
        Err(e) => panic!("{e}"),
    }
}

/// The only diagnostic for `src`, checked for line, field and message fragments.
fn one_error(src: &str, line: usize, field: &str, fragments: &[&str]) -> Diagnostic {
    let d = errors(src);
    assert_eq!(d.len(), 1, "{d:#?}");
    check(&d[0], line, field, fragments);
    d[0].clone()
}

fn check(d: &Diagnostic, line: usize, field: &str, fragments: &[&str]) {
    assert_eq!((d.line, d.field.as_str()), (line, field), "{d}");
    for f in fragments {
        assert!(d.message.contains(f), "{d}\n  lacks {f:?}");
    }
}

fn located(d: &[Diagnostic]) -> Vec<(usize, &str)> {
    d.iter().map(|d| (d.line, d.field.as_str())).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn default_damping() -> vip_daemon::core::health::Damping {
    vip_daemon::core::health::Damping {
        suppress: 4,
        reuse: 2,
        half_life: Duration::from_secs(30),
        max_hold: Duration::from_secs(300),
    }
}

fn http(path: &str, expect: u16) -> CheckKind {
    CheckKind::Http {
        path: path.into(),
        expect,
        host: None,
        tls: false,
        tls_verify: false,
    }
}

#[test]
fn minimal_example_gets_every_default() {
    let c = config::load(Path::new(MINIMAL)).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = Some(host.trim().to_owned()).filter(|h| !h.is_empty());
    assert_eq!(c.node.name, host.unwrap_or("localhost".into()));
    assert!(c.node.interfaces.is_empty() && c.node.addresses.is_empty());
    assert_eq!(c.node.pin_dir, PathBuf::from("/sys/fs/bpf/vip-fabric"));
    assert!(c.node.local_clients && c.node.local_clients_cgroup.is_none());
    let v4 = "10.255.0.0".parse().unwrap();
    let v6 = "fd00:ffff::".parse().unwrap();
    let cluster = Cluster {
        hash_seed: 0x7f4a_7c15,
        encap_source_v4: v4,
        encap_source_v6: v6,
        membership: None,
    };
    assert_eq!(c.cluster, cluster);
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9478".parse().unwrap()));
    assert_eq!(c.control_socket, PathBuf::from("/run/vip-fabric/vipd.sock"));
    let two = Duration::from_secs(2);
    let tcp = Check {
        kind: CheckKind::Tcp,
        interval: two,
        timeout: two / 2,
        rise: 2,
        fall: 3,
        jitter: 0.1,
        damping: default_damping(),
    };
    let backend = |name: &str, addr: &str| BackendConf {
        name: name.into(),
        address: ip(addr),
        port: 80,
        weight: 1,
        priority: 0,
        forward: Forward::L2,
        check: tcp.clone(),
    };
    let web = Vip {
        name: "web".into(),
        address: ip("192.0.2.100"),
        port: 80,
        protocol: Protocol::Tcp,
        hash: HashMode::Flow,
        selection: Selection::Maglev,
        table_size: 65537,
        backends: vec![backend("web1", "192.0.2.11"), backend("web2", "192.0.2.12")],
        preferences: vec![],
        fencing: true,
        failback: false,
        drain_timeout: std::time::Duration::from_secs(300),
        announce: Announce::Address,
    };
    assert_eq!(c.vips, [web]);
    assert_eq!(c.bgp, Bgp::default());
    assert_eq!(DEFAULT_PATH, "/etc/vip-fabric/vipd.toml");
}

#[test]
fn openstack_example_has_the_controller_services() {
    let c = config::load(Path::new(OPENSTACK)).unwrap();
    assert_eq!((c.node.name.as_str(), c.node.interfaces.len()), ("ctl1", 1));
    assert_eq!(c.node.addresses, [ip("192.0.2.11")]);
    let (flow, source) = (HashMode::Flow, HashMode::Source);
    let (maglev, pb) = (Selection::Maglev, Selection::PrimaryBackup);
    let galera_check = CheckKind::Exec {
        command: vec!["/usr/bin/clustercheck".into()],
    };
    let login = http("/dashboard/auth/login/", 200);
    let expected = [
        ("keystone", 5000, flow, maglev, 65537, http("/v3", 200)),
        ("nova-api", 8774, flow, maglev, 65537, http("/", 200)),
        ("glance", 9292, flow, maglev, 65537, http("/", 300)),
        ("neutron", 9696, flow, maglev, 65537, http("/", 200)),
        ("cinder", 8776, flow, maglev, 65537, http("/", 300)),
        ("horizon", 80, source, maglev, 4099, login),
        ("galera", 3306, flow, pb, 1, galera_check),
    ];
    assert_eq!(c.vips.len(), expected.len(), "no rabbitmq VIP");
    let vip_ip = ip("192.0.2.100");
    for (v, (name, port, hash, selection, table_size, kind)) in c.vips.iter().zip(expected) {
        let got = (
            v.name.as_str(),
            v.address,
            v.port,
            v.protocol,
            v.hash,
            v.selection,
        );
        assert_eq!(got, (name, vip_ip, port, Protocol::Tcp, hash, selection));
        assert_eq!(v.table_size, table_size, "{name}");
        let ctls = [
            ("ctl1", 11, Forward::Local),
            ("ctl2", 12, Forward::L2),
            ("ctl3", 13, Forward::L2),
        ];
        assert_eq!(v.backends.len(), 3);
        for (b, (ctl, host, forward)) in v.backends.iter().zip(ctls) {
            let address = ip(&format!("192.0.2.{host}"));
            assert_eq!(
                (b.name.as_str(), b.address, b.port, b.forward),
                (ctl, address, port, forward)
            );
            assert_eq!(
                (&b.check.kind, b.check.interval),
                (&kind, Duration::from_secs(2))
            );
        }
    }
    let galera = &c.vips[6].backends;
    let priorities: Vec<u8> = galera.iter().map(|b| b.priority).collect();
    assert_eq!(priorities, [0, 1, 2]);
    let check = &galera[2].check;
    assert_eq!(
        (check.timeout, check.rise),
        (Duration::from_millis(1500), 5)
    );
}

#[test]
fn checks_layer_defaults_vip_and_backend() {
    let src = VIP.to_owned()
        + r#"check = { path = "/healthz", rise = 4 }
[[vip.backend]]
name = "ctl2"
address = "192.0.2.12"
port = 5001
forward = "encap"
check = { kind = "tcp" }
[defaults.check]
interval = "500ms"
timeout = "250ms"
[node]
addresses = ["192.0.2.12"]
[metrics]
listen = "off"
"#;
    let vip_check = r#"check = { kind = "https", host = "api", tls_verify = true, fall = 5 }"#;
    let c = config::parse(&insert(&src, 5, vip_check), "t.toml").unwrap();
    assert_eq!(c.metrics_listen, None);
    let [b1, b2] = &c.vips[0].backends[..] else {
        panic!("two backends")
    };
    let ms = Duration::from_millis;
    let (path, host) = ("/healthz".into(), Some("api".into()));
    let https = CheckKind::Http {
        path,
        expect: 200,
        host,
        tls: true,
        tls_verify: true,
    };
    let timing = |kind, rise| Check {
        kind,
        interval: ms(500),
        timeout: ms(250),
        rise,
        fall: 5,
        jitter: 0.1,
        damping: default_damping(),
    };
    assert_eq!(
        b1.check,
        timing(https, 4),
        "kind keys inherited, rise overridden"
    );
    assert_eq!(
        b2.check,
        timing(CheckKind::Tcp, 2),
        "a backend kind starts afresh"
    );
    assert_eq!((b1.port, b1.forward), (5000, Forward::L2));
    assert_eq!(
        (b2.port, b2.forward),
        (5001, Forward::Local),
        "node address wins over encap"
    );
}

/// `#[test] fn NAME`: SRC has exactly one diagnostic, at LINE and FIELD, whose message
/// contains every fragment.
macro_rules! error_test {
    ($name:ident: $src:expr => $line:literal $field:literal $($fragment:literal)*) => {
        #[test]
        fn $name() {
            one_error(&$src, $line, $field, &[$($fragment),*]);
        }
    };
}

/// VIP twice (second copy from line 10 on) with the second copy's line `n` replaced.
fn two_vips(n: usize, new: &str) -> String {
    edit(&format!("{VIP}\n{VIP}"), n, new)
}

error_test! { local_clients_cgroup_must_be_absolute:
    "[node]\nlocal_clients_cgroup = \"sys/fs/cgroup\"\n".to_owned() + VIP
=> 2 "node.local_clients_cgroup" "not absolute" "/sys/fs/cgroup" }
error_test! { syntax_error: VIP.to_owned() + "weight = 1\nport = \n"
=> 10 "syntax" "TOML syntax error" }
error_test! { duplicate_key_is_a_syntax_error: edit(VIP, 8, r#"name = "ctl2""#)
=> 8 "syntax" "duplicate key at `name`" }
error_test! { unknown_key_top_level: VIP.to_owned() + "[nodes]\nname = \"x\"\n"
=> 9 "nodes" "unknown key `nodes`" "valid keys here: `node`, `cluster`" "`vip`" }
error_test! { unknown_key_in_section: "[metrics]\nlisten = \"off\"\nbogus = 1\n"
=> 3 "metrics.bogus" "unknown key `bogus`; the only valid key here is `listen`" }
error_test! { unknown_key_in_backend:
    VIP.to_owned() + "[[vip.backend]]\nname = \"c2\"\naddress = \"192.0.2.12\"\nweigth = 2\n"
=> 12 "vip[0].backend[1].weigth" "unknown key `weigth`" "`weight`" "`priority`" }
error_test! { unknown_key_in_defaults_check: VIP.to_owned() + "[defaults.check]\nkind = \"tcp\"\n"
=> 10 "defaults.check.kind" "unknown key `kind`" "`interval`" }
error_test! { wrong_type: edit(VIP, 4, r#"port = "5000""#)
=> 4 "vip[0].port" "wrong type" "string \"5000\"" "expected an integer port 0..=65535" }
error_test! { bad_address: edit(VIP, 8, r#"address = "192.0.2.300""#)
=> 8 "vip[0].backend[0].address" "\"192.0.2.300\" is not valid" "IPv4 address like" "IPv6" }
error_test! { family_mismatch: edit(VIP, 8, r#"address = "2001:db8::11""#)
=> 8 "vip[0].backend[0].address" "is IPv6 but the VIP address 192.0.2.100 is IPv4"
   "same address family" }
error_test! { non_prime_table_size: insert(VIP, 5, "table_size = 65536")
=> 5 "vip[0].table_size" "65536 is not prime" "nearest primes: 65521 and 65537" "4099" }
error_test! { table_size_out_of_range: insert(VIP, 5, "table_size = 2000000")
=> 5 "vip[0].table_size" "out of range" "a prime in 2..=1048573" }
error_test! { duplicate_vip_name: two_vips(13, "port = 5001")
=> 11 "vip[1].name" "duplicate vip name \"api\"" "(already vip[0])" }
error_test! { conflicting_vip_keys: two_vips(11, r#"name = "api2""#)
=> 13 "vip[1].port" "same address, port and protocol" "(192.0.2.100:5000 tcp)" "\"api\"" }
error_test! { port_zero_conflict:
    edit(&two_vips(11, r#"name = "all""#), 13, "port = 0") + "port = 22\n"
=> 13 "vip[1].port" "vip \"all\" (port 0) overlaps vip[0] \"api\"" "port 0 means all ports" }
error_test! { missing_backend_port_for_all_ports_vip: edit(VIP, 4, "port = 0")
=> 6 "vip[0].backend[0].port" "missing required key `port`" "port 0 (all ports)" "e.g. port = " }
error_test! { timeout_longer_than_interval:
    insert(VIP, 5, r#"check = { interval = "1s", timeout = "1500ms" }"#)
=> 5 "vip[0].check.timeout" "timeout 1500ms is longer than interval 1s" "at most the interval" }
error_test! { default_timeout_longer_than_builtin_interval:
    VIP.to_owned() + "[defaults.check]\ntimeout = \"3s\"\n"
=> 10 "defaults.check.timeout" "timeout 3s is longer than interval 2s"
   "(interval: built-in default)" }
error_test! { bad_duration_string: VIP.to_owned() + "check = { interval = \"2 seconds\" }\n"
=> 9 "vip[0].backend[0].check.interval" "invalid duration \"2 seconds\"" "ms, s or m" "\"250ms\"" }
error_test! { rise_zero: VIP.to_owned() + "[defaults.check]\nrise = 0\n"
=> 10 "defaults.check.rise" "0 is out of range" "an integer >= 1" }
error_test! { jitter_out_of_range: VIP.to_owned() + "check = { kind = \"tcp\", jitter = 0.6 }\n"
=> 9 "vip[0].backend[0].check.jitter" "0.6 is out of range" "0.0..=0.5" }
error_test! { flap_suppress_negative: VIP.to_owned() + "[defaults.check]\nflap_suppress = -1\n"
=> 10 "defaults.check.flap_suppress" "-1 is out of range" "0 (flap damping off)" }
error_test! { flap_reuse_zero: VIP.to_owned() + "check = { flap_reuse = 0 }\n"
=> 9 "vip[0].backend[0].check.flap_reuse" "0 is out of range" "an integer >= 1" }
error_test! { flap_half_life_zero: insert(VIP, 5, r#"check = { flap_half_life = "0s" }"#)
=> 5 "vip[0].check.flap_half_life" "flap_half_life must be greater than 0" }
error_test! { flap_reuse_not_below_suppress:
    VIP.to_owned() + "check = { flap_reuse = 4 }\n"
=> 9 "vip[0].backend[0].check.flap_reuse" "flap_reuse 4 must be below flap_suppress 4"
   "(flap_suppress 4: built-in default)" "flap_suppress = 0 turns damping off" }
error_test! { flap_max_hold_shorter_than_the_shortest_hold:
    insert(VIP, 5, r#"check = { flap_suppress = 8, flap_max_hold = "50s" }"#)
=> 5 "vip[0].check.flap_max_hold" "flap_max_hold 50s is shorter than the shortest hold 1m"
   "flap_suppress 8 to flap_reuse 2 with flap_half_life 30s" }

#[test]
fn flap_damping_keys_layer_and_zero_turns_damping_off() {
    let src = insert(
        VIP,
        5,
        r#"check = { flap_suppress = 6, flap_half_life = "1m" }"#,
    ) + "check = { flap_reuse = 3 }\n[defaults.check]\nflap_max_hold = \"10m\"\n";
    let c = config::parse(&src, "t.toml").unwrap();
    let d = c.vips[0].backends[0].check.damping;
    assert_eq!(
        (d.suppress, d.reuse, d.half_life, d.max_hold),
        (6, 3, Duration::from_secs(60), Duration::from_secs(600))
    );
    let off = insert(VIP, 5, "check = { flap_suppress = 0, flap_reuse = 9 }");
    let c = config::parse(&off, "t.toml").unwrap();
    let d = c.vips[0].backends[0].check.damping;
    assert_eq!(d, vip_daemon::core::health::Damping::OFF);
    assert!(!d.is_on());
}

error_test! { path_on_tcp_check: insert(VIP, 5, r#"check = { kind = "tcp", path = "/" }"#)
=> 5 "vip[0].check.path" "`path` only applies to kind http/https" "this check is kind \"tcp\"" }
error_test! { command_on_http_check:
    insert(VIP, 5, r#"check = { kind = "http", command = ["/bin/true"] }"#)
=> 5 "vip[0].check.command" "`command` only applies to kind exec" }
error_test! { exec_without_command: VIP.to_owned() + "check = {\n  kind = \"exec\",\n}\n"
=> 9 "vip[0].backend[0].check.command" "missing required key `command`"
   "[\"/usr/bin/clustercheck\"]" }
error_test! { loopback_backend: edit(VIP, 8, r#"address = "127.0.0.1""#)
=> 8 "vip[0].backend[0].address" "backend address 127.0.0.1 is a loopback address"
   "never reach a loopback address" "node.addresses" "like \"192.0.2.11\"" }
error_test! { unspecified_backend: edit(VIP, 8, r#"address = "0.0.0.0""#)
=> 8 "vip[0].backend[0].address" "0.0.0.0 is the unspecified address" "like \"192.0.2.11\"" }
error_test! { broadcast_backend: edit(VIP, 8, r#"address = "255.255.255.255""#)
=> 8 "vip[0].backend[0].address" "255.255.255.255 is the IPv4 broadcast address"
   "expected the backend's unicast address" }
error_test! { multicast_backend: edit(VIP, 8, r#"address = "239.1.2.3""#)
=> 8 "vip[0].backend[0].address" "239.1.2.3 is a multicast address" }
error_test! { link_local_backend: edit(VIP, 8, r#"address = "169.254.7.7""#)
=> 8 "vip[0].backend[0].address" "169.254.7.7 is link-local" "like \"192.0.2.11\"" }
error_test! { this_network_backend: edit(VIP, 8, r#"address = "0.10.0.1""#)
=> 8 "vip[0].backend[0].address" "0.10.0.1 is not a unicast destination" "\"this network\"" }
error_test! { reserved_backend: edit(VIP, 8, r#"address = "240.0.0.9""#)
=> 8 "vip[0].backend[0].address" "240.0.0.9 is not a unicast destination" "reserved" }

#[test]
fn every_unusable_backend_address_in_one_run() {
    let mut src = VIP.to_owned();
    for a in [
        "127.0.0.2",
        "169.254.0.1",
        "0.0.0.0",
        "224.0.0.5",
        "240.1.1.1",
    ] {
        let n = src.matches("[[vip.backend]]").count();
        src += &format!("[[vip.backend]]\nname = \"b{n}\"\naddress = \"{a}\"\n");
    }
    let d = errors(&src);
    let want: Vec<(usize, String)> = (1..=5)
        .map(|n| (8 + 3 * n, format!("vip[0].backend[{n}].address")))
        .collect();
    let got: Vec<(usize, String)> = d.iter().map(|d| (d.line, d.field.clone())).collect();
    assert_eq!(got, want, "{d:#?}");
}

/// VIP turned IPv6 (line 3), its backend's address on line 8.
fn v6_backend(address: &str) -> String {
    edit(
        &edit(VIP, 3, r#"address = "2001:db8::100""#),
        8,
        &format!("address = \"{address}\""),
    )
}

#[test]
fn unusable_ipv6_backends() {
    for (a, what) in [
        ("::", "is the unspecified address"),
        ("::1", "is a loopback address"),
        ("ff02::1", "is a multicast address"),
        ("fe80::11", "is link-local"),
        ("::ffff:127.0.0.1", "is a loopback address"),
    ] {
        let want = format!("backend address {a} {what}");
        // Reported once: no "family mismatch" on top, even for the IPv4-mapped one.
        one_error(
            &v6_backend(a),
            8,
            "vip[0].backend[0].address",
            &[&want, "like \"2001:db8::11\""],
        );
    }
    config::parse(&v6_backend("2001:db8::11"), "t.toml").expect("a global address is fine");
    config::parse(&v6_backend("fd00::11"), "t.toml").expect("a ULA is fine");
}

#[test]
fn unusable_vip_addresses() {
    for a in ["0.0.0.0", "::", "255.255.255.255", "224.0.0.18", "ff02::12"] {
        let src = edit(VIP, 3, &format!("address = \"{a}\""));
        let d = errors(&src);
        let want = format!("{a} cannot be a VIP");
        assert!(
            d.iter().any(|d| d.line == 3
                && d.field == "vip[0].address"
                && d.message.contains(&want)
                && d.message.contains("unicast")),
            "{d:#?}"
        );
    }
}

#[test]
fn every_unusable_backend_is_reported() {
    let src = VIP.to_owned()
        + "[[vip.backend]]\nname = \"lo\"\naddress = \"127.0.0.2\"\n\
           [[vip.backend]]\nname = \"ll\"\naddress = \"169.254.0.5\"\n";
    let d = errors(&src);
    assert_eq!(
        located(&d),
        [
            (11, "vip[0].backend[1].address"),
            (14, "vip[0].backend[2].address")
        ]
    );
}

/// The first 4 lines of VIP: a VIP without backends.
fn vip_header() -> String {
    VIP.lines().take(4).collect::<Vec<_>>().join("\n") + "\n"
}

error_test! { empty_backend_list: vip_header()
=> 1 "vip[0].backend" "vip \"api\" has no backends" "[[vip.backend]]" }
error_test! { explicitly_empty_backend_array: vip_header() + "backend = []\n"
=> 5 "vip[0].backend" "no backends" }

#[test]
fn duplicate_priority_in_primary_backup() {
    let src = insert(VIP, 5, r#"selection = "primary-backup""#)
        + "priority = 1\n[[vip.backend]]\nname = \"c2\"\naddress = \"192.0.2.12\"\npriority = 1\n";
    let fragments = [
        "priority 1 is already used by backend \"ctl1\"",
        "distinct priority",
    ];
    one_error(&src, 14, "vip[0].backend[1].priority", &fragments);
    let maglev = edit(&src, 5, r#"selection = "maglev""#);
    assert!(
        config::parse(&maglev, "t.toml").is_ok(),
        "maglev ignores priorities"
    );
}

/// `failback` picks who holds a primary/backup VIP's slot; a Maglev VIP has no such slot.
#[test]
fn failback_only_on_primary_backup_and_drain_timeout_parses() {
    one_error(
        &insert(VIP, 5, "failback = true"),
        5,
        "vip[0].failback",
        &["only applies to selection = \"primary-backup\""],
    );
    let pb = insert(
        &insert(VIP, 5, r#"selection = "primary-backup""#),
        6,
        "failback = true",
    );
    let c = config::parse(&pb, "t.toml").unwrap_or_else(|e| panic!("{e}"));
    assert!(c.vips[0].failback);
    let plain = insert(VIP, 5, r#"selection = "primary-backup""#);
    assert!(!config::parse(&plain, "t.toml").unwrap().vips[0].failback);

    let c = config::parse(&insert(VIP, 5, r#"drain_timeout = "30s""#), "t.toml").unwrap();
    assert_eq!(c.vips[0].drain_timeout, std::time::Duration::from_secs(30));
    one_error(
        &insert(VIP, 5, r#"drain_timeout = "soon""#),
        5,
        "vip[0].drain_timeout",
        &["invalid duration \"soon\""],
    );
}

#[test]
fn bgp_announce_and_its_table() {
    let c = config::parse(&insert(VIP, 5, r#"announce = "bgp""#), "t.toml").unwrap();
    assert_eq!(c.vips[0].announce, Announce::Bgp);
    let src = format!(
        "[bgp]\ntable = 300\nprotocol = 99\nwithout_quorum = true\n\
         withdraw_quiet = \"200ms\"\nwithdraw_max = \"3s\"\n{VIP}"
    );
    let c = config::parse(&src, "t.toml").unwrap();
    let want = Bgp {
        table: 300,
        protocol: 99,
        without_quorum: true,
        withdraw_quiet: Duration::from_millis(200),
        withdraw_max: Duration::from_secs(3),
    };
    assert_eq!(c.bgp, want);
    one_error(
        &insert(VIP, 5, r#"announce = "ospf""#),
        5,
        "vip[0].announce",
        &["unknown value \"ospf\"", "\"address\", \"bgp\""],
    );
    let d = errors(&format!(
        "[bgp]\ntable = 254\nprotocol = 2\nwithdraw_quiet = \"9s\"\n{VIP}"
    ));
    assert_eq!(
        located(&d),
        [
            (2, "bgp.table"),
            (3, "bgp.protocol"),
            (4, "bgp.withdraw_quiet")
        ],
        "{d:#?}"
    );
    check(&d[0], 2, "bgp.table", &["254 is reserved"]);
    check(
        &d[2],
        4,
        "bgp.withdraw_quiet",
        &["not be longer than `withdraw_max`"],
    );
    // One address, one way of announcing it; no owner preferences on a routed VIP.
    let shared = insert(&two_vips(11, r#"name = "api2""#), 12, r#"announce = "bgp""#);
    let d = errors(&shared);
    assert!(
        d.iter()
            .any(|d| d.field == "vip[1].announce" && d.message.contains("shares address")),
        "{d:#?}"
    );
    one_error(
        &insert(
            &insert(VIP, 5, r#"announce = "bgp""#),
            6,
            r#"selection = "primary-backup""#,
        ),
        5,
        "vip[0].announce",
        &["needs selection = \"maglev\""],
    );
    // (Single node: `preferences` are refused for that too.)
    let d = errors(&insert(
        &insert(VIP, 5, r#"announce = "bgp""#),
        6,
        r#"preferences = ["ctl1"]"#,
    ));
    assert!(
        d.iter().any(|d| d.field == "vip[0].preferences"
            && d.message.contains("an announce = \"bgp\" VIP has none")),
        "{d:#?}"
    );
}

#[test]
fn same_port_on_udp_does_not_conflict() {
    let udp = insert(&two_vips(11, r#"name = "api2""#), 14, r#"protocol = "udp""#);
    assert!(config::parse(&udp, "t.toml").is_ok());
}

#[test]
fn missing_required_keys_point_at_their_table() {
    let d = errors("[[vip]]\nport = 1\n[[vip.backend]]\nweight = 2\n");
    let want = [
        (1, "vip[0].name"),
        (1, "vip[0].address"),
        (3, "vip[0].backend[0].name"),
        (3, "vip[0].backend[0].address"),
    ];
    assert_eq!(located(&d), want, "{d:#?}");
    assert!(
        d[0].message
            .contains("missing required key `name`, e.g. name = "),
        "{}",
        d[0]
    );
}

#[test]
fn all_errors_in_one_file_are_reported() {
    let src = r#"[node]
interfaces = ["eth0", "eth0", "this-name-is-too-long"]
[cluster]
hash_seed = -1
[metrics]
listen = "localhost"
[[vip]]
name = "Bad Name"
address = "192.0.2.100"
protocol = "sctp"
[[vip.backend]]
name = "b"
address = "192.0.2.11"
port = 0
weight = 70000
"#;
    let d = errors(src);
    let want = [
        (2, "node.interfaces[1]"),
        (2, "node.interfaces[2]"),
        (4, "cluster.hash_seed"),
        (6, "metrics.listen"),
        (8, "vip[0].name"),
        (10, "vip[0].protocol"),
        (14, "vip[0].backend[0].port"),
        (15, "vip[0].backend[0].weight"),
    ];
    assert_eq!(located(&d), want, "{d:#?}");
    check(
        &d[5],
        10,
        "vip[0].protocol",
        &["unknown value \"sctp\"", "\"tcp\", \"udp\""],
    );
    let text = config::parse(src, "f.toml").unwrap_err().to_string();
    assert_eq!(text.lines().count(), want.len());
    let first = "f.toml:2: node.interfaces[1]: duplicate interface \"eth0\"";
    assert!(text.starts_with(first), "{text}");
}

#[test]
fn io_error_names_the_path() {
    let path = Path::new("/nonexistent/vipd.toml");
    let err = config::load(path).unwrap_err();
    assert!(matches!(&err, ConfigError::Io { path: p, .. } if p == path));
    assert!(err.to_string().contains("/nonexistent/vipd.toml"), "{err}");
}

/// A second gossip link: both keys or neither, on an address of its own; errors at the key.
#[test]
fn a_second_gossip_link_is_checked_where_written() {
    let cluster = "[node]\nname = \"ctl1\"\n[cluster]\nlisten = \"192.0.2.11:7946\"\n\
                   key_file = \"/etc/vip-fabric/cluster.key\"\n";
    let good = format!(
        "{cluster}secondary_listen = \"198.51.100.11:7946\"\n\
         secondary_peers = [\"198.51.100.12:7946\", \"198.51.100.13:7946\"]\n"
    );
    let c = vip_daemon::config::parse(&good, "c.toml").expect("valid");
    let second = c
        .cluster
        .membership
        .and_then(|m| m.secondary)
        .expect("two links");
    assert_eq!(second.listen, "198.51.100.11:7946".parse().unwrap());
    assert_eq!(second.peers.len(), 2);
    let alone = format!("{cluster}secondary_listen = \"198.51.100.11:7946\"\n");
    assert_eq!(located(&errors(&alone)), [(6, "cluster.secondary_listen")]);
    let same =
        format!("{cluster}secondary_listen = \"192.0.2.11:7947\"\nsecondary_peers = [\"bad\"]\n");
    assert_eq!(
        located(&errors(&same)),
        [
            (6, "cluster.secondary_listen"),
            (7, "cluster.secondary_peers[0]")
        ]
    );
}

/// The heartbeat detector: off unless `heartbeat_interval` is set; the timeout defaults to
/// five intervals and must be at least three.
#[test]
fn heartbeat_keys_are_checked_where_written() {
    let cluster = "[node]\nname = \"ctl1\"\n[cluster]\nlisten = \"192.0.2.11:7946\"\n\
                   key_file = \"/etc/vip-fabric/cluster.key\"\n";
    let c = vip_daemon::config::parse(cluster, "c.toml").expect("valid");
    assert_eq!(c.cluster.membership.and_then(|m| m.heartbeat), None);
    let on = format!("{cluster}heartbeat_interval = \"5ms\"\n");
    let c = vip_daemon::config::parse(&on, "c.toml").expect("valid");
    let hb = c.cluster.membership.and_then(|m| m.heartbeat).expect("on");
    assert_eq!(
        (hb.interval, hb.timeout),
        (Duration::from_millis(5), Duration::from_millis(25))
    );
    let short = format!("{on}heartbeat_timeout = \"10ms\"\n");
    assert_eq!(located(&errors(&short)), [(7, "cluster.heartbeat_timeout")]);
    let alone = format!("{cluster}heartbeat_timeout = \"50ms\"\n");
    assert_eq!(located(&errors(&alone)), [(6, "cluster.heartbeat_timeout")]);
}

#[test]
fn cluster_mode_keys() {
    let text = r#"
[node]
name = "ctl1"
[cluster]
listen = "192.0.2.11:7946"
peers = ["192.0.2.12:7946", "192.0.2.13:7946"]
key_file = "/etc/vip-fabric/cluster.key"
voters = ["ctl1", "ctl2", "ctl3"]
witness = "ctl3"
lease = "800ms"
fence_command = ["/usr/local/sbin/fence-node"]
[[vip]]
name = "db"
address = "192.0.2.100"
port = 3306
selection = "primary-backup"
preferences = ["ctl2"]
[[vip.backend]]
name = "a"
address = "192.0.2.11"
"#;
    let c = vip_daemon::config::parse(text, "c.toml").expect("valid");
    let m = c.cluster.membership.expect("cluster mode");
    assert_eq!(m.listen, "192.0.2.11:7946".parse().unwrap());
    assert_eq!(m.voters, ["ctl1", "ctl2", "ctl3"]);
    assert_eq!(m.witness.as_deref(), Some("ctl3"));
    assert_eq!(m.lease, Duration::from_millis(800));
    assert_eq!(c.vips[0].preferences, ["ctl2"]);
    // A preference that is not a voter, a witness that is not a voter, this node missing.
    let bad = text
        .replace("preferences = [\"ctl2\"]", "preferences = [\"ctl9\"]")
        .replace("witness = \"ctl3\"", "witness = \"ctl7\"")
        .replace("name = \"ctl1\"", "name = \"ctl5\"");
    let err = vip_daemon::config::parse(&bad, "c.toml")
        .expect_err("invalid")
        .to_string();
    for needle in [
        "c.toml:8: cluster.voters",
        "c.toml:9: cluster.witness",
        "preferences: \"ctl9\"",
    ] {
        assert!(err.contains(needle), "{needle} not in:\n{err}");
    }
    // Cluster keys without `listen` are refused.
    let err = vip_daemon::config::parse("[cluster]\nvoters = [\"a\"]\n", "d.toml")
        .expect_err("invalid")
        .to_string();
    assert!(err.contains("only applies in cluster mode"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Unknown keys and type errors: all of them in one run, with "did you mean".

#[test]
fn unknown_keys_and_type_errors_all_at_once() {
    let src = format!(
        "[node]\nnmae = \"ctl1\"\ninterfaces = \"eth0\"\n{}\
         [[vip]]\nname = \"b\"\naddress = \"192.0.2.101\"\nport = \"80\"\n\
         check = {{ kind = \"http\", pth = \"/\", rise = \"2\" }}\n\
         [[vip.backend]]\nname = \"x\"\naddress = \"192.0.2.12\"\nwieght = 2\n\
         [metrics]\nlisten = 9478\n",
        VIP
    );
    let d = errors(&src);
    assert_eq!(
        located(&d),
        vec![
            (2, "node.nmae"),
            (3, "node.interfaces"),
            (15, "vip[1].port"),
            (16, "vip[1].check.pth"),
            (16, "vip[1].check.rise"),
            (20, "vip[1].backend[0].wieght"),
            (22, "metrics.listen"),
        ],
        "{d:#?}"
    );
    check(
        &d[0],
        2,
        "node.nmae",
        &["unknown key `nmae` (did you mean `name`?)"],
    );
    check(
        &d[1],
        3,
        "node.interfaces",
        &["wrong type", "array of interface names"],
    );
    check(
        &d[3],
        16,
        "vip[1].check.pth",
        &["did you mean `path`?", "valid keys here"],
    );
    check(
        &d[5],
        20,
        "vip[1].backend[0].wieght",
        &["did you mean `weight`?"],
    );
    check(
        &d[6],
        22,
        "metrics.listen",
        &["wrong type", "found integer"],
    );
    assert!(d.iter().all(|d| d.file == "t.toml"));
}

#[test]
fn no_suggestion_for_a_key_unlike_any() {
    let d = one_error(
        "[metrics]\nlisten = \"off\"\nzzzz = 1\n",
        3,
        "metrics.zzzz",
        &["unknown key `zzzz`; the only valid key here is `listen`"],
    );
    assert!(!d.message.contains("did you mean"), "{d}");
}

#[test]
fn unknown_top_level_tables_and_bad_array_elements_together() {
    let src = VIP.to_owned()
        + "[nodes]\nname = \"x\"\n[cluster]\nhash_seed = \"1\"\n[vip.check]\nkind = 5\n";
    let d = errors(&src);
    assert_eq!(
        located(&d),
        vec![
            (9, "nodes"),
            (12, "cluster.hash_seed"),
            (14, "vip[0].check.kind")
        ],
        "{d:#?}"
    );
    check(&d[0], 9, "nodes", &["did you mean `node`?"]);
}

#[test]
fn shape_errors_are_capped() {
    let mut src = VIP.to_owned();
    for i in 0..200 {
        src += &format!("bogus{i} = 1\n");
    }
    let d = errors(&src);
    assert_eq!(d.len(), config::MAX_SHAPE_ERRORS, "{}", d.len());
    assert_eq!(
        (d[0].line, d[0].field.as_str()),
        (9, "vip[0].backend[0].bogus0")
    );
}

#[test]
fn a_semantic_error_waits_for_shape_errors_to_be_fixed() {
    // Shape errors are reported on their own (the values they leave out would make the
    // semantic checks noise); once fixed, the semantic ones come all at once.
    let src = edit(VIP, 8, r#"address = "192.0.2.300""#) + "wieght = 1\n";
    one_error(
        &src,
        9,
        "vip[0].backend[0].wieght",
        &["did you mean `weight`?"],
    );
}

// ---------------------------------------------------------------------------------------
// Reading the file: `-`, non-regular files, the size cap.

fn load_error(path: &Path) -> String {
    match config::load(path) {
        Ok(_) => panic!("{} accepted", path.display()),
        Err(e @ ConfigError::Io { .. }) => e.to_string(),
        Err(e) => panic!("not an I/O error: {e}"),
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vipd-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn devices_fifos_and_directories_are_refused_without_blocking() {
    let e = load_error(Path::new("/dev/zero"));
    assert!(
        e.contains("/dev/zero") && e.contains("a character device"),
        "{e}"
    );
    assert!(e.contains("expected a regular file, or `-`"), "{e}");
    let e = load_error(Path::new("/tmp"));
    assert!(e.contains("a directory"), "{e}");
    let fifo = scratch("fifo.toml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    // No writer: a blocking open would hang here.
    let e = load_error(&fifo);
    assert!(e.contains("a FIFO"), "{e}");
    std::fs::remove_file(&fifo).unwrap();
}

#[test]
fn files_over_the_cap_are_refused() {
    let big = scratch("big.toml");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(config::MAX_FILE_BYTES + 1).unwrap(); // sparse: costs no disk
    let e = load_error(&big);
    assert!(e.contains("larger than 16 MiB"), "{e}");
    std::fs::remove_file(&big).unwrap();
    let ok = scratch("ok.toml");
    std::fs::write(&ok, VIP).unwrap();
    assert!(config::load(&ok).is_ok());
    std::fs::write(&ok, b"name = \"\xff\"\n").unwrap();
    assert!(load_error(&ok).contains("not UTF-8"));
    std::fs::remove_file(&ok).unwrap();
}

fn validate_stdin(stdin: std::process::Stdio) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(["validate", "-"])
        .stdin(stdin)
        .output()
        .unwrap()
}

#[test]
fn dash_reads_stdin_capped() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_vipd"))
        .args(["validate", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let text = edit(VIP, 8, r#"address = "127.0.0.1""#);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("<stdin>:8: vip[0].backend[0].address"),
        "{err}"
    );

    // /dev/zero as stdin: stops at the cap instead of reading forever.
    let zero = std::fs::File::open("/dev/zero").unwrap();
    let started = std::time::Instant::now();
    let out = validate_stdin(zero.into());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("larger than 16 MiB"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    let ok = scratch("stdin.toml");
    std::fs::write(&ok, VIP).unwrap();
    let out = validate_stdin(std::fs::File::open(&ok).unwrap().into());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid (1 VIPs"));
    std::fs::remove_file(&ok).unwrap();
}

// ---------------------------------------------------------------------------------------
// Scale: validation is linear in the number of VIPs.

/// `n` VIPs with one backend each, on distinct ports of a few addresses.
fn many_vips(n: usize) -> String {
    let mut s = String::with_capacity(n * 120);
    for i in 0..n {
        let (a, port) = (i / 60_000, 1 + i % 60_000);
        s += &format!(
            "[[vip]]\nname = \"v{i}\"\naddress = \"192.0.2.{}\"\nport = {port}\ntable_size = 251\n\
             [[vip.backend]]\nname = \"b\"\naddress = \"198.51.100.1\"\n",
            100 + a
        );
    }
    s
}

#[test]
fn validation_time_is_linear_in_vips() {
    let time = |n: usize| {
        let src = many_vips(n);
        let started = std::time::Instant::now();
        let c = config::parse(&src, "t.toml").unwrap();
        assert_eq!(c.vips.len(), n);
        started.elapsed()
    };
    let small = time(5_000);
    let large = time(40_000);
    // 8x the VIPs: about 8x the time when linear, 64x when quadratic.
    assert!(
        large < small * 24 + Duration::from_millis(200),
        "5k VIPs: {small:?}, 40k VIPs: {large:?}"
    );
    // The clashes are still found among many.
    let src =
        many_vips(3_000) + &edit(VIP, 3, r#"address = "192.0.2.100""#).replace("5000", "2999");
    let d = errors(&src);
    assert_eq!(located(&d), vec![(24_004, "vip[3000].port")], "{d:#?}");
    assert!(
        d[0].message.contains("as vip[2998] \"v2998\""),
        "{}",
        d[0].message
    );
}

#[test]
fn hooks_track_and_status_socket_are_checked_where_written() {
    let ops = format!(
        "{VIP}\n[hooks]\nnotify = [\"vip-notify\"]\n\n[track]\n[[track.script]]\nname = \"db\"\n\
         command = [\"/bin/true\"]\ninterval = \"1s\"\ntimeout = \"2s\"\nfall = 0\n\n\
         [control]\nstatus_group = \"adm\"\n"
    );
    let d = errors(&ops);
    assert_eq!(
        located(&d),
        [
            (11, "hooks.notify"),
            (18, "track.script[0].timeout"),
            (19, "track.script[0].fall"),
            (22, "control.status_group"),
        ],
        "{d:#?}"
    );
    let good = format!(
        "{VIP}\n[hooks]\nnotify = [\"/usr/local/bin/vip-notify\"]\n\n[track]\ninterfaces = [\"eth1\"]\n\
         [[track.script]]\nname = \"db\"\ncommand = [\"/bin/true\"]\n\n\
         [control]\nstatus_socket = \"/run/vip-fabric/status.sock\"\nstatus_group = \"adm\"\n"
    );
    let c = config::parse(&good, "t.toml").expect("valid");
    assert_eq!(c.track.interfaces, ["eth1"]);
    assert_eq!(c.track.scripts[0].interval, Duration::from_secs(2));
    assert_eq!((c.track.scripts[0].fall, c.track.scripts[0].rise), (2, 2));
    assert_eq!(c.hooks.notify_timeout, Duration::from_secs(10));
    assert_eq!(c.status_socket.group.as_deref(), Some("adm"));
}
