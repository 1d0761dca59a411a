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

/// Joins lines so that `lines[n]` is line n + 1 of the source.
fn src(lines: &[&str]) -> String {
    lines.join("\n") + "\n"
}

fn errors(lines: &[&str]) -> Vec<Diagnostic> {
    match config::parse(&src(lines), "t.toml") {
        Ok(c) => panic!("accepted: {c:#?}"),
        Err(ConfigError::Invalid(d)) => d,
        Err(e) => panic!("{e}"),
    }
}

/// The only diagnostic of `lines`, checked for line, field and message fragments.
fn one_error(lines: &[&str], line: usize, field: &str, fragments: &[&str]) -> Diagnostic {
    let d = errors(lines);
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

/// A valid single-VIP file; tests append to it (it is 8 lines long).
const VIP: [&str; 8] = [
    "[[vip]]",
    "name = \"api\"",
    "address = \"192.0.2.100\"",
    "port = 5000",
    "",
    "[[vip.backend]]",
    "name = \"ctl1\"",
    "address = \"192.0.2.11\"",
];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    VIP.iter().copied().chain(extra.iter().copied()).collect()
}

const TCP_2S: Check = Check {
    kind: CheckKind::Tcp,
    interval: Duration::from_secs(2),
    timeout: Duration::from_secs(1),
    rise: 2,
    fall: 3,
    jitter: 0.1,
};

#[test]
fn minimal_example_gets_every_default() {
    let c = config::load(Path::new(MINIMAL)).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned());
    assert_eq!(
        c.node.name,
        host.ok()
            .filter(|h| !h.is_empty())
            .unwrap_or("localhost".into())
    );
    assert!(c.node.interfaces.is_empty() && c.node.addresses.is_empty());
    assert_eq!(c.node.pin_dir, PathBuf::from("/sys/fs/bpf/vip-fabric"));
    let cluster = Cluster {
        hash_seed: 0x7f4a_7c15,
        encap_source_v4: "10.255.0.0".parse().unwrap(),
        encap_source_v6: "fd00:ffff::".parse().unwrap(),
    };
    assert_eq!(c.cluster, cluster);
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9478".parse().unwrap()));
    assert_eq!(c.control_socket, PathBuf::from("/run/vip-fabric/vipd.sock"));
    let backend = |name: &str, ip: &str| BackendConf {
        name: name.into(),
        address: ip.parse().unwrap(),
        port: 80,
        weight: 1,
        priority: 0,
        forward: Forward::L2,
        check: TCP_2S,
    };
    let web = Vip {
        name: "web".into(),
        address: "192.0.2.100".parse().unwrap(),
        port: 80,
        protocol: Protocol::Tcp,
        hash: HashMode::Flow,
        selection: Selection::Maglev,
        table_size: 65537,
        backends: vec![backend("web1", "192.0.2.11"), backend("web2", "192.0.2.12")],
    };
    assert_eq!(c.vips, [web]);
    assert_eq!(DEFAULT_PATH, "/etc/vip-fabric/vipd.toml");
}

#[test]
fn openstack_example_has_the_controller_services() {
    let c = config::load(Path::new(OPENSTACK)).unwrap();
    assert_eq!(c.node.name, "ctl1");
    assert_eq!(c.node.interfaces, ["eth0"]);
    assert_eq!(c.node.addresses, ["192.0.2.11".parse::<IpAddr>().unwrap()]);
    let vip: IpAddr = "192.0.2.100".parse().unwrap();
    let http = |path: &str, expect| CheckKind::Http {
        path: path.into(),
        expect,
        host: None,
        tls: false,
        tls_verify: false,
    };
    let login = "/dashboard/auth/login/";
    let expected = [
        (
            "keystone",
            5000,
            HashMode::Flow,
            Selection::Maglev,
            65537,
            http("/v3", 200),
        ),
        (
            "nova-api",
            8774,
            HashMode::Flow,
            Selection::Maglev,
            65537,
            http("/", 200),
        ),
        (
            "glance",
            9292,
            HashMode::Flow,
            Selection::Maglev,
            65537,
            http("/", 300),
        ),
        (
            "neutron",
            9696,
            HashMode::Flow,
            Selection::Maglev,
            65537,
            http("/", 200),
        ),
        (
            "cinder",
            8776,
            HashMode::Flow,
            Selection::Maglev,
            65537,
            http("/", 300),
        ),
        (
            "horizon",
            80,
            HashMode::Source,
            Selection::Maglev,
            4099,
            http(login, 200),
        ),
        (
            "galera",
            3306,
            HashMode::Flow,
            Selection::PrimaryBackup,
            1,
            CheckKind::Exec {
                command: vec!["/usr/bin/clustercheck".into()],
            },
        ),
    ];
    assert_eq!(c.vips.len(), expected.len(), "no rabbitmq VIP");
    for (v, (name, port, hash, selection, table_size, kind)) in c.vips.iter().zip(expected) {
        assert_eq!(
            (v.name.as_str(), v.address, v.port, v.protocol),
            (name, vip, port, Protocol::Tcp)
        );
        assert_eq!(
            (v.hash, v.selection, v.table_size),
            (hash, selection, table_size),
            "{name}"
        );
        let names: Vec<_> = v
            .backends
            .iter()
            .map(|b| (b.name.as_str(), b.address.to_string(), b.port))
            .collect();
        assert_eq!(
            names,
            [
                ("ctl1", "192.0.2.11".into(), port),
                ("ctl2", "192.0.2.12".into(), port),
                ("ctl3", "192.0.2.13".into(), port)
            ]
        );
        let forwards: Vec<_> = v.backends.iter().map(|b| b.forward).collect();
        assert_eq!(
            forwards,
            [Forward::Local, Forward::L2, Forward::L2],
            "ctl1 is this node"
        );
        assert!(v
            .backends
            .iter()
            .all(|b| b.check.kind == kind && b.check.interval == Duration::from_secs(2)));
    }
    let galera = &c.vips[6];
    assert_eq!(
        galera
            .backends
            .iter()
            .map(|b| b.priority)
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(
        (
            galera.backends[0].check.timeout,
            galera.backends[0].check.rise
        ),
        (Duration::from_millis(1500), 5)
    );
}

#[test]
fn checks_layer_defaults_vip_and_backend() {
    let lines = with(&[
        "check = { path = \"/healthz\", rise = 4 }",
        "[[vip.backend]]",
        "name = \"ctl2\"",
        "address = \"192.0.2.12\"",
        "port = 5001",
        "forward = \"encap\"",
        "check = { kind = \"tcp\" }",
        "[defaults.check]",
        "interval = \"500ms\"",
        "timeout = \"250ms\"",
        "[node]",
        "addresses = [\"192.0.2.12\"]",
        "[metrics]",
        "listen = \"off\"",
    ]);
    let mut lines = lines;
    lines.insert(
        4,
        "check = { kind = \"https\", host = \"api\", tls_verify = true, fall = 5 }",
    );
    let c = config::parse(&src(&lines), "t.toml").unwrap();
    assert_eq!(c.metrics_listen, None);
    let [b1, b2] = &c.vips[0].backends[..] else {
        panic!()
    };
    let https = CheckKind::Http {
        path: "/healthz".into(),
        expect: 200,
        host: Some("api".into()),
        tls: true,
        tls_verify: true,
    };
    let ms = Duration::from_millis;
    assert_eq!(
        b1.check,
        Check {
            kind: https,
            interval: ms(500),
            timeout: ms(250),
            rise: 4,
            fall: 5,
            jitter: 0.1
        }
    );
    assert_eq!(
        b2.check,
        Check {
            kind: CheckKind::Tcp,
            interval: ms(500),
            timeout: ms(250),
            rise: 2,
            fall: 5,
            jitter: 0.1
        }
    );
    assert_eq!(
        (b1.port, b1.forward, b2.port, b2.forward),
        (5000, Forward::L2, 5001, Forward::Local)
    );
}

#[test]
fn syntax_error() {
    one_error(
        &with(&["weight = 1", "port = "]),
        10,
        "syntax",
        &["TOML syntax error"],
    );
}

#[test]
fn unknown_key_top_level() {
    let d = one_error(
        &["[metrics]", "listen = \"off\"", "bogus = 1"],
        3,
        "metrics.bogus",
        &["unknown key `bogus`", "`listen`"],
    );
    assert_eq!(
        d.to_string(),
        format!("t.toml:3: metrics.bogus: {}", d.message)
    );
    one_error(
        &with(&["[nodes]", "name = \"x\""]),
        9,
        "nodes",
        &["unknown key `nodes`", "`node`", "`vip`"],
    );
}

#[test]
fn unknown_key_in_backend() {
    let lines = with(&[
        "[[vip.backend]]",
        "name = \"ctl2\"",
        "address = \"192.0.2.12\"",
        "weigth = 2",
    ]);
    one_error(
        &lines,
        12,
        "vip[0].backend[1].weigth",
        &["unknown key `weigth`", "`weight`", "`priority`"],
    );
}

#[test]
fn wrong_type() {
    let mut lines = VIP.to_vec();
    lines[3] = "port = \"5000\"";
    one_error(
        &lines,
        4,
        "vip[0].port",
        &["wrong type", "string \"5000\"", "an integer port 0..=65535"],
    );
}

#[test]
fn bad_address() {
    let mut lines = VIP.to_vec();
    lines[7] = "address = \"192.0.2.300\"";
    one_error(
        &lines,
        8,
        "vip[0].backend[0].address",
        &["\"192.0.2.300\" is not valid", "IPv4", "IPv6"],
    );
}

#[test]
fn family_mismatch() {
    let mut lines = VIP.to_vec();
    lines[7] = "address = \"2001:db8::11\"";
    one_error(
        &lines,
        8,
        "vip[0].backend[0].address",
        &[
            "is IPv6 but the VIP address 192.0.2.100 is IPv4",
            "same address family",
        ],
    );
}

#[test]
fn non_prime_table_size() {
    let mut lines = VIP.to_vec();
    lines.insert(4, "table_size = 65536");
    one_error(
        &lines,
        5,
        "vip[0].table_size",
        &["65536 is not prime", "65521 and 65537", "4099"],
    );
    lines[4] = "table_size = 2000000";
    one_error(
        &lines,
        5,
        "vip[0].table_size",
        &["out of range", "2..=1048573"],
    );
}

#[test]
fn duplicate_vip_name() {
    let mut lines = with(&[""]);
    lines.extend(VIP);
    lines[12] = "port = 5001";
    one_error(
        &lines,
        11,
        "vip[1].name",
        &["duplicate vip name \"api\"", "vip[0]"],
    );
}

#[test]
fn conflicting_vip_keys() {
    let mut lines = with(&[""]);
    lines.extend(VIP);
    lines[10] = "name = \"api2\"";
    let d = one_error(
        &lines,
        13,
        "vip[1].port",
        &[
            "same address, port and protocol",
            "192.0.2.100:5000 tcp",
            "\"api\"",
        ],
    );
    assert_eq!(d.file, "t.toml");
    lines.insert(13, "protocol = \"udp\"");
    assert!(
        config::parse(&src(&lines), "t.toml").is_ok(),
        "udp and tcp on one port do not clash"
    );
}

#[test]
fn port_zero_conflict() {
    let mut lines = with(&[""]);
    lines.extend(VIP);
    lines[10] = "name = \"all\"";
    lines[12] = "port = 0";
    lines.push("port = 22");
    one_error(
        &lines,
        13,
        "vip[1].port",
        &["overlaps vip[0] \"api\"", "port 0 means all ports"],
    );
}

#[test]
fn missing_backend_port_for_all_ports_vip() {
    let mut lines = VIP.to_vec();
    lines[3] = "port = 0";
    one_error(
        &lines,
        6,
        "vip[0].backend[0].port",
        &[
            "missing required key `port`",
            "port 0 (all ports)",
            "port = ",
        ],
    );
}

#[test]
fn timeout_longer_than_interval() {
    let mut lines = VIP.to_vec();
    lines.insert(4, "check = { interval = \"1s\", timeout = \"1500ms\" }");
    one_error(
        &lines,
        5,
        "vip[0].check.timeout",
        &[
            "timeout 1500ms is longer than interval 1s",
            "at most the interval",
        ],
    );
    let lines = with(&["[defaults.check]", "timeout = \"3s\""]);
    one_error(
        &lines,
        10,
        "defaults.check.timeout",
        &["timeout 3s is longer than interval 2s", "built-in default"],
    );
}

#[test]
fn bad_duration_string() {
    let lines = with(&["check = { interval = \"2 seconds\" }"]);
    one_error(
        &lines,
        9,
        "vip[0].backend[0].check.interval",
        &["invalid duration \"2 seconds\"", "ms, s or m", "\"250ms\""],
    );
}

#[test]
fn rise_zero() {
    one_error(
        &with(&["[defaults.check]", "rise = 0"]),
        10,
        "defaults.check.rise",
        &["0 is out of range", ">= 1"],
    );
}

#[test]
fn jitter_out_of_range() {
    let lines = with(&["check = { kind = \"tcp\", jitter = 0.6 }"]);
    one_error(
        &lines,
        9,
        "vip[0].backend[0].check.jitter",
        &["0.6 is out of range", "0.0..=0.5"],
    );
}

#[test]
fn path_on_tcp_check() {
    let mut lines = VIP.to_vec();
    lines.insert(4, "check = { kind = \"tcp\", path = \"/\" }");
    one_error(
        &lines,
        5,
        "vip[0].check.path",
        &["`path` only applies to kind http/https", "kind \"tcp\""],
    );
    lines[4] = "check = { kind = \"http\", command = [\"/bin/true\"] }";
    one_error(
        &lines,
        5,
        "vip[0].check.command",
        &["`command` only applies to kind exec"],
    );
}

#[test]
fn exec_without_command() {
    let lines = with(&["check = {", "  kind = \"exec\",", "}"]);
    one_error(
        &lines,
        9,
        "vip[0].backend[0].check.command",
        &["missing required key `command`", "/usr/bin/clustercheck"],
    );
}

#[test]
fn duplicate_priority_in_primary_backup() {
    let mut lines = with(&[
        "priority = 1",
        "[[vip.backend]]",
        "name = \"ctl2\"",
        "address = \"192.0.2.12\"",
        "priority = 1",
    ]);
    lines.insert(4, "selection = \"primary-backup\"");
    one_error(
        &lines,
        14,
        "vip[0].backend[1].priority",
        &["priority 1 is already used by backend \"ctl1\""],
    );
    lines[4] = "selection = \"maglev\"";
    assert!(
        config::parse(&src(&lines), "t.toml").is_ok(),
        "maglev ignores priorities"
    );
}

#[test]
fn empty_backend_list() {
    one_error(
        &VIP[..5],
        1,
        "vip[0].backend",
        &["no backends", "[[vip.backend]]"],
    );
    let lines = [
        "[[vip]]",
        "name = \"a\"",
        "address = \"192.0.2.1\"",
        "backend = []",
    ];
    one_error(&lines, 4, "vip[0].backend", &["no backends"]);
}

#[test]
fn missing_required_keys_point_at_their_table() {
    let d = errors(&["[[vip]]", "port = 1", "[[vip.backend]]", "weight = 2"]);
    let got: Vec<_> = d.iter().map(|d| (d.line, d.field.as_str())).collect();
    let want = [
        (1, "vip[0].name"),
        (1, "vip[0].address"),
        (3, "vip[0].backend[0].name"),
        (3, "vip[0].backend[0].address"),
    ];
    assert_eq!(got, want, "{d:#?}");
    assert!(d[0].message.contains("missing required key `name`"));
}

#[test]
fn all_errors_in_one_file_are_reported() {
    let lines = [
        "[node]",
        "interfaces = [\"eth0\", \"eth0\", \"this-name-is-too-long\"]",
        "[cluster]",
        "hash_seed = -1",
        "[metrics]",
        "listen = \"localhost\"",
        "[[vip]]",
        "name = \"Bad Name\"",
        "address = \"192.0.2.100\"",
        "protocol = \"sctp\"",
        "[[vip.backend]]",
        "name = \"b\"",
        "address = \"192.0.2.11\"",
        "port = 0",
        "weight = 70000",
    ];
    let d = errors(&lines);
    let got: Vec<_> = d.iter().map(|d| (d.line, d.field.as_str())).collect();
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
    assert_eq!(got, want, "{d:#?}");
    check(
        &d[5],
        10,
        "vip[0].protocol",
        &["unknown value \"sctp\"", "\"tcp\", \"udp\""],
    );
    let err = config::parse(&src(&lines), "f.toml").unwrap_err();
    let text = err.to_string();
    assert_eq!(text.lines().count(), want.len());
    assert!(
        text.starts_with("f.toml:2: node.interfaces[1]: duplicate interface \"eth0\""),
        "{text}"
    );
}

#[test]
fn io_error_names_the_path() {
    let err = config::load(Path::new("/nonexistent/vipd.toml")).unwrap_err();
    assert!(
        matches!(&err, ConfigError::Io { path, .. } if path == Path::new("/nonexistent/vipd.toml"))
    );
    assert!(err.to_string().contains("/nonexistent/vipd.toml"), "{err}");
}
