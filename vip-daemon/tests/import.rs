//! `vipd import-haproxy`: the OpenStack controller fixtures converted field by field, every
//! dropped directive reported with its file and line, and line-numbered errors for malformed
//! input. Every generated file must pass `config::parse`.

use std::net::IpAddr;
use std::time::Duration;

use vip_daemon::config::{self, CheckKind, Config, Forward, HashMode, Selection, Vip};
use vip_daemon::import::{import, ImportError, ImportOutput};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/import/");
const HAPROXY: &str = "openstack-haproxy.cfg";
const KEEPALIVED: &str = "keepalived.conf";
/// A keepalived.conf holding the VIP 192.0.2.100.
const KA: &str = "vrrp_instance V { interface eth0\n virtual_ipaddress {\n 192.0.2.100/24\n }\n}\n";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{DIR}{name}")).unwrap()
}

/// Imports (files named h.cfg and k.conf) and checks that the result validates.
fn run(haproxy: &str, keepalived: Option<&str>) -> (ImportOutput, Config) {
    let out = import(haproxy, "h.cfg", keepalived.map(|k| (k, "k.conf")));
    let out = out.unwrap_or_else(|e| panic!("{e}"));
    let config = config::parse(&out.toml, "out.toml").unwrap_or_else(|e| panic!("{e}"));
    (out, config)
}

/// The fixtures imported and validated, and the haproxy.cfg text.
fn openstack() -> (ImportOutput, Config, String) {
    let (h, k) = (fixture(HAPROXY), fixture(KEEPALIVED));
    let out = import(&h, HAPROXY, Some((&k, KEEPALIVED))).unwrap_or_else(|e| panic!("{e}"));
    let config = config::parse(&out.toml, "out.toml").unwrap_or_else(|e| panic!("{e}"));
    (out, config, h)
}

fn map<T, U>(items: &[T], f: impl Fn(&T) -> U) -> Vec<U> {
    items.iter().map(f).collect()
}

/// 1-based numbers of the lines whose text contains `needle`.
fn lines_of(src: &str, needle: &str) -> Vec<usize> {
    let hits = src.lines().enumerate().filter(|(_, l)| l.contains(needle));
    let lines: Vec<usize> = hits.map(|(i, _)| i + 1).collect();
    assert!(!lines.is_empty(), "{needle:?} not in the fixture");
    lines
}

fn line_of(src: &str, needle: &str) -> usize {
    lines_of(src, needle)[0]
}

fn vip<'a>(c: &'a Config, name: &str) -> &'a Vip {
    let found = c.vips.iter().find(|v| v.name == name);
    found.unwrap_or_else(|| panic!("no vip {name}"))
}

fn kind<'a>(c: &'a Config, name: &str) -> &'a CheckKind {
    &vip(c, name).backends[0].check.kind
}

/// (path, expect, host) of the first backend's plain HTTP check.
fn http(c: &Config, name: &str) -> (String, u16, Option<String>) {
    match kind(c, name) {
        CheckKind::Http {
            path,
            expect,
            host,
            tls,
            ..
        } if !tls => (path.clone(), *expect, host.clone()),
        other => panic!("{name}: {other:?}"),
    }
}

/// A warning at `file:line` whose reason contains `why`, also written into the file.
fn assert_warned(out: &ImportOutput, file: &str, line: usize, why: &str) {
    let at = |w: &&vip_daemon::import::Unsupported| w.file == file && w.line == line;
    let found = out.warnings.iter().filter(at).any(|w| w.why.contains(why));
    assert!(found, "no {file}:{line} {why:?}: {:#?}", out.warnings);
    let comment = format!("# NOT CARRIED OVER: {file}:{line}: ");
    assert!(out.toml.contains(&comment), "no {comment:?}:\n{}", out.toml);
}

/// The error for malformed input: (file, line, message); also checks the Display form.
fn error(haproxy: &str, keepalived: Option<&str>) -> (String, usize, String) {
    match import(haproxy, "h.cfg", keepalived.map(|k| (k, "k.conf"))) {
        Err(e @ ImportError::Malformed { .. }) => {
            let ImportError::Malformed { file, line, what } = &e else {
                unreachable!()
            };
            assert_eq!(e.to_string(), format!("{file}:{line}: {what}"));
            (file.clone(), *line, what.clone())
        }
        Err(e) => panic!("not a Malformed error: {e}"),
        Ok(out) => panic!("accepted:\n{}", out.toml),
    }
}

const CONTROLLERS: [(&str, &str); 3] = [
    ("overcloud-controller-0", "192.0.2.11"),
    ("overcloud-controller-1", "192.0.2.12"),
    ("overcloud-controller-2", "192.0.2.13"),
];

/// Every VIP of the fixtures: name, address, port.
#[rustfmt::skip]
const VIPS: [(&str, &str, u16); 16] = [
    ("keystone_admin", "192.0.2.100", 35357),
    ("keystone_public", "192.0.2.100", 5000),
    ("keystone_public-2", "203.0.113.10", 13000), // the second bind (TLS, public VIP)
    ("nova_osapi", "192.0.2.100", 8774),          // frontend nova_osapi_front -> backend nova_osapi
    ("nova_metadata", "192.0.2.100", 8775),
    ("nova_novncproxy", "192.0.2.100", 6080),
    ("glance_api", "192.0.2.100", 9292),
    ("neutron", "192.0.2.100", 9696),
    ("cinder", "192.0.2.100", 8776),
    ("heat_api", "192.0.2.100", 8004),
    ("heat_cfn", "192.0.2.100", 8000),
    ("horizon", "192.0.2.100", 80),               // bind *:80: both keepalived VIPs
    ("horizon-2", "203.0.113.10", 80),
    ("mysql", "192.0.2.100", 3306),
    ("redis", "192.0.2.100", 6379),
    ("swift_proxy_server", "192.0.2.100", 8080),
];

#[test]
fn openstack_fixture_gives_one_vip_per_service_and_bind() {
    let (_, c, _) = openstack();
    let got = map(&c.vips, |v| (v.name.clone(), v.address.to_string(), v.port));
    let want = map(&VIPS, |(n, a, p)| (n.to_string(), a.to_string(), *p));
    assert_eq!(got, want);
    let controllers = map(&CONTROLLERS, |(n, a)| (n.to_string(), a.to_string()));
    for v in &c.vips {
        assert_eq!(v.protocol, config::Protocol::Tcp);
        let backends = map(&v.backends, |b| (b.name.clone(), b.address.to_string()));
        assert_eq!(backends, controllers, "{}", v.name);
        // unicast_src_ip 192.0.2.11 is this node: its own backend is served locally.
        let forwards = map(&v.backends, |b| b.forward);
        assert_eq!(forwards, [Forward::Local, Forward::L2, Forward::L2]);
    }
}

#[test]
fn node_and_cluster_notes_come_from_keepalived() {
    let (out, c, _) = openstack();
    assert_eq!(c.node.interfaces, ["br-ex", "eth1"]);
    assert_eq!(c.node.addresses, ["192.0.2.11".parse::<IpAddr>().unwrap()]);
    assert_eq!(c.cluster.membership, None, "left to the operator");
    // Long comments are wrapped onto "#   " continuation lines.
    let flat = out.toml.replace("\n#   ", " ");
    for fragment in [
        "vrrp_instance VI_INTERNAL (state MASTER, priority 101, virtual_router_id 51): VIPs \
         192.0.2.100",
        "# listen = \"192.0.2.11:7946\"",
        "# peers = [\"192.0.2.12:7946\", \"192.0.2.13:7946\"]",
        "rendezvous hashing",
    ] {
        assert!(flat.contains(fragment), "{fragment:?} missing:\n{flat}");
    }
}

#[test]
fn http_checks_carry_path_expect_host_and_timing() {
    let (out, c, h) = openstack();
    let warned = |line: usize, why: &str| assert_warned(&out, HAPROXY, line, why);
    let keystone = ("/v3".into(), 200, Some("keystone".into()));
    assert_eq!(http(&c, "keystone_admin"), keystone);
    assert_eq!(http(&c, "keystone_public"), ("/v3".into(), 200, None));
    assert_eq!(http(&c, "nova_osapi"), ("/".into(), 200, None));
    assert_eq!(http(&c, "glance_api"), ("/healthcheck".into(), 200, None));
    assert_eq!(http(&c, "cinder"), ("/".into(), 300, None));
    let login = ("/dashboard/auth/login/".into(), 200, None);
    assert_eq!(http(&c, "horizon-2"), login);
    assert_eq!(http(&c, "neutron"), ("/".into(), 200, None));
    // neutron's bare `option httpchk`: haproxy sent OPTIONS and accepted any 2xx/3xx.
    let bare = |l: &usize| h.lines().nth(l - 1).unwrap().trim() == "option httpchk";
    let neutron = lines_of(&h, "option httpchk").into_iter().find(bare);
    let neutron = neutron.unwrap();
    assert!(neutron > line_of(&h, "listen neutron"));
    warned(neutron, "any 2xx or 3xx");
    warned(neutron, "haproxy sent OPTIONS");
    // inter 2000 rise 2 fall 5; timeout check 10s is clamped to the interval.
    let check = &vip(&c, "keystone_admin").backends[2].check;
    let two = Duration::from_secs(2);
    let timing = (check.interval, check.timeout, check.rise, check.fall);
    assert_eq!(timing, (two, two, 2, 5));
    warned(line_of(&h, "timeout  check 10s"), "clamped to 2s");
    let defaults = "[defaults.check]\ninterval = \"2s\"\ntimeout = \"2s\"\nrise = 2\nfall = 5\n";
    assert!(out.toml.contains(defaults));
}

#[test]
fn tcp_services_and_balance_source() {
    let (out, c, h) = openstack();
    for name in ["nova_metadata", "nova_novncproxy", "redis"] {
        assert_eq!(kind(&c, name), &CheckKind::Tcp, "{name}");
    }
    let sticky = ["horizon", "horizon-2", "nova_novncproxy"];
    for v in &c.vips {
        let source = sticky.contains(&v.name.as_str());
        let hash = [HashMode::Flow, HashMode::Source][usize::from(source)];
        assert_eq!(v.hash, hash, "{}", v.name);
        if v.name != "mysql" {
            assert_eq!((v.selection, v.table_size), (Selection::Maglev, 65537));
        }
    }
    // Redis's master-finding conversation is dropped line by line.
    let mut tcp_check = lines_of(&h, "tcp-check send");
    tcp_check.extend(lines_of(&h, "tcp-check expect"));
    for line in tcp_check {
        assert_warned(&out, HAPROXY, line, "every server that accepts connections");
    }
}

#[test]
fn galera_with_backup_servers_becomes_primary_backup() {
    let (out, c, h) = openstack();
    let mysql = vip(&c, "mysql");
    let pb = (Selection::PrimaryBackup, 1);
    assert_eq!((mysql.selection, mysql.table_size), pb);
    let got = map(&mysql.backends, |b| (b.name.clone(), b.priority, b.port));
    let want = map(&[0, 1, 2], |&p| {
        (CONTROLLERS[p].0.to_owned(), p as u8, 9200)
    });
    assert_eq!(got, want, "clustercheck answers on 9200");
    let check = &mysql.backends[0].check;
    let one = Duration::from_secs(1);
    assert_eq!((check.interval, check.timeout), (one, one));
    let clustercheck =
        matches!(&check.kind, CheckKind::Http { path, expect: 200, .. } if path == "/");
    assert!(clustercheck, "{:?}", check.kind);
    for line in lines_of(&h, "on-marked-down shutdown-sessions") {
        assert_warned(&out, HAPROXY, line, "keeps no sessions");
    }
    let timeout_check = line_of(&h, "timeout  check");
    assert_warned(&out, HAPROXY, timeout_check, "clamped to 1s");
    let one_backend = out.warnings.iter().any(|w| w.why.contains("ONE backend"));
    assert!(!one_backend, "only one server is not a backup");
}

/// Fixture lines (found by a fragment) and the reason each must be reported with.
#[rustfmt::skip]
const L7: [(&str, &str); 15] = [
    ("http-request set-header", "header rewriting needs a proxy"),
    ("reqadd X-Forwarded-Proto", "header rewriting needs a proxy"),
    ("rspadd Strict-Transport-Security", "header rewriting needs a proxy"),
    ("ssl crt /etc/pki", "TLS termination stays on the backends"),
    ("option forwardfor", "real source address"),
    ("redirect scheme https", "redirects are answered by a proxy"),
    ("acl legacy", "ACLs"),
    ("use_backend nova_osapi if legacy", "only the frontend's default backend"),
    ("cookie SERVERID", "use hash = \"source\""),
    ("check cookie overcloud-controller", "use hash = \"source\""),
    ("stick on dst", "stick tables: use hash = \"source\""),
    ("stick-table type ip", "stick tables: use hash = \"source\""),
    ("timeout tunnel 1h", "proxy timeouts"),
    ("option tcpka", "keep-alive"),
    ("listen haproxy.stats", "statistics page"),
];

#[test]
fn every_l7_directive_is_reported_with_file_and_line() {
    let (out, _, h) = openstack();
    for (needle, why) in L7 {
        for line in lines_of(&h, needle) {
            assert_warned(&out, HAPROXY, line, why);
        }
    }
    // Comments sit with the VIP they concern: the cookie lines between heat_cfn and horizon.
    let at = |s: &str| out.toml.find(s).unwrap_or_else(|| panic!("{s:?} missing"));
    let cookie = line_of(&h, "cookie SERVERID");
    let cookie = at(&format!("# NOT CARRIED OVER: {HAPROXY}:{cookie}:"));
    assert!(at("name = \"heat_cfn\"") < cookie && cookie < at("name = \"horizon\""));
}

#[test]
fn keepalived_tracking_and_vrrp_settings_are_reported() {
    let (out, _, _) = openstack();
    let k = fixture(KEEPALIVED);
    let warned = |line: usize, why: &str| assert_warned(&out, KEEPALIVED, line, why);
    for line in lines_of(&k, "chk_haproxy").into_iter().filter(|l| *l > 20) {
        warned(line, "has no job left");
    }
    let exec = "check = { kind = \"exec\", command = [\"/usr/bin/curl\", \"-sf\", \
                \"http://127.0.0.1:5000/v3\"] }";
    warned(line_of(&k, "    chk_keystone"), exec);
    warned(line_of(&k, "authentication {"), "VRRP-only");
    warned(line_of(&k, "notify_master"), "runs no scripts");
}

#[test]
fn warnings_are_sorted_displayed_and_deterministic() {
    let (out, _, _) = openstack();
    let keys = map(&out.warnings, |w| (w.file != HAPROXY, w.line));
    assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{keys:?}");
    let w = &out.warnings[0];
    let display = format!("{}:{}: {} — {}", w.file, w.line, w.directive, w.why);
    assert_eq!(w.to_string(), display);
    assert_eq!(openstack().0.toml, out.toml);
    let header = format!("# vipd configuration imported from {HAPROXY} and {KEEPALIVED}");
    assert!(out.toml.starts_with(&header));
}

#[test]
fn wildcard_bind_needs_keepalived() {
    let h = fixture(HAPROXY);
    let (file, line, what) = error(&h, None);
    assert_eq!((file.as_str(), line), ("h.cfg", line_of(&h, "bind *:80")));
    let want = "bind on * needs the VIP address: pass --keepalived FILE";
    assert!(what.starts_with(want), "{what}");
}

#[test]
fn explicit_bind_outside_keepalived_vips_is_flagged() {
    let h = "listen web\n  bind 198.51.100.7:80\n  server a 192.0.2.11:80 check\n";
    let (out, c) = run(h, Some(KA));
    assert_eq!(vip(&c, "web").address.to_string(), "198.51.100.7");
    let why = "not a keepalived virtual_ipaddress (192.0.2.100)";
    assert_warned(&out, "h.cfg", 2, why);
}

#[test]
fn several_active_servers_with_a_backup_warn() {
    let h = "listen galera\n bind 192.0.2.100:3306\n server c 192.0.2.13:3306 backup check\n \
             server a 192.0.2.11:3306 check\n server b 192.0.2.12:3306 check\n";
    let (out, c) = run(h, None);
    let order = map(&vip(&c, "galera").backends, |b| {
        (b.name.clone(), b.priority)
    });
    let want = [("a", 0), ("b", 1), ("c", 2)].map(|(n, p)| (n.to_owned(), p));
    assert_eq!(order, want);
    assert_warned(&out, "h.cfg", 1, "sends everything to ONE backend");
}

#[test]
fn names_are_sanitized_and_unique() {
    let h = "listen API.Public\n bind 192.0.2.100:80,192.0.2.100:81\n \
             server CTL1.example.com 192.0.2.11 check\n server ctl1-Example.com 192.0.2.12\n\
             listen api-public\n bind 192.0.2.100:82\n server a 192.0.2.11\n\
             listen a_very_long_service_name_that_goes_on\n bind 192.0.2.100:83\n \
             server a 192.0.2.11\n";
    let (_, c) = run(h, None);
    let names = map(&c.vips, |v| v.name.clone());
    let long = "a_very_long_service_name_that_go"; // 32 characters
    assert_eq!(names, ["api-public", "api-public-2", "api-public-3", long]);
    let backends = map(&c.vips[0].backends, |b| b.name.clone());
    assert_eq!(backends, ["ctl1-example-com", "ctl1-example-com-2"]);
    assert_eq!(c.vips[1].backends[0].port, 81, "the bind port");
}

#[test]
fn timing_layers_and_clamping() {
    let h = "global\n spread-checks 0\n\
             defaults\n default-server inter 3s rise 3 fall 2\n timeout check 1s\n\
             listen api\n bind 192.0.2.100:80\n server a 192.0.2.11:80 check\n \
             server b 192.0.2.12:80 check inter 500ms rise 1 weight 3\n \
             server c 192.0.2.13:80 check disabled\n";
    let (out, c) = run(h, None);
    let api = vip(&c, "api");
    let timing = map(&api.backends, |b| {
        let (ch, ms) = (&b.check, |d: Duration| d.as_millis());
        (ms(ch.interval), ms(ch.timeout), ch.rise, ch.fall)
    });
    let want = [(3000, 1000, 3, 2), (500, 500, 1, 2), (3000, 1000, 3, 2)];
    assert_eq!(timing, want);
    assert_eq!(map(&api.backends, |b| b.weight), [1, 3, 0], "disabled");
    assert_warned(&out, "h.cfg", 5, "clamped to 500ms");
    let no_jitter = api.backends.iter().all(|b| b.check.jitter == 0.0);
    assert!(no_jitter, "spread-checks 0");
}

#[test]
fn other_checks_mysql_external_https() {
    let h = "listen db\n bind 192.0.2.100:3306\n option mysql-check user haproxy\n \
             server a 192.0.2.11 check\n\
             listen custom\n bind 192.0.2.100:9000\n option external-check\n \
             external-check command /usr/local/bin/chk\n server a 192.0.2.11:9000 check\n\
             listen tls\n bind 192.0.2.100:8443\n option httpchk GET /health\n \
             http-check expect status 204\n \
             server a 192.0.2.11:443 check ssl verify required ca-file /etc/ca.pem\n";
    let (out, c) = run(h, None);
    let warned = |line: usize, why: &str| assert_warned(&out, "h.cfg", line, why);
    assert_eq!(kind(&c, "db"), &CheckKind::Tcp);
    warned(3, "clustercheck");
    let command = vec!["/usr/local/bin/chk".to_owned()];
    assert_eq!(kind(&c, "custom"), &CheckKind::Exec { command });
    warned(8, "VIPD_BACKEND_ADDRESS");
    let https = kind(&c, "tls");
    let tls = (true, true);
    let verified = matches!(https, CheckKind::Http { expect: 204, tls: t, tls_verify: v, .. } if (*t, *v) == tls);
    assert!(verified, "{https:?}");
    warned(14, "DSR keeps the destination port");
    warned(14, "own TLS connection");
}

#[test]
fn ipv6_families_hostnames_and_skipped_sections() {
    let h = "global\n lua-load /etc/haproxy/x.lua\nuserlist admins\n user a password x\n\
             listen v6\n bind [2001:db8::100]:443\n server a 2001:db8::11:443 check\n \
             server b 192.0.2.11:443 check\n\
             listen dns\n bind 192.0.2.100:53\n server a ns1.example.com:53 check\n";
    let (out, c) = run(h, None);
    let warned = |line: usize, why: &str| assert_warned(&out, "h.cfg", line, why);
    let v6 = vip(&c, "v6");
    let backends = map(&v6.backends, |b| b.address.to_string());
    assert_eq!(v6.address.to_string(), "2001:db8::100");
    assert_eq!(backends, ["2001:db8::11"]);
    warned(8, "different address families");
    assert!(c.vips.iter().all(|v| v.name != "dns"));
    warned(11, "literal IP addresses");
    warned(2, "Lua");
    warned(3, "HTTP authentication");
}

#[test]
fn loopback_and_link_local_servers_are_left_out() {
    let h = "listen api\n bind 192.0.2.100:80\n server a 192.0.2.11:80 check\n \
             server local 127.0.0.1:80 check\n server ll 169.254.3.3:80 check\n";
    let (out, c) = run(h, None);
    let backends = map(&vip(&c, "api").backends, |b| b.address.to_string());
    assert_eq!(backends, ["192.0.2.11"]);
    assert_warned(&out, "h.cfg", 4, "127.0.0.1 is a loopback address");
    assert_warned(&out, "h.cfg", 5, "169.254.3.3 is link-local");
}

#[test]
fn strings_are_escaped() {
    let h = "listen q\n bind 192.0.2.100:80\n \
             option httpchk GET /a\\\"b\\\\c HTTP/1.1\\r\\nHost:\\ x\\\"y\n \
             server a 192.0.2.11:80 check\n";
    let (_, c) = run(h, None);
    assert_eq!(http(&c, "q"), ("/a\"b\\c".into(), 200, Some("x\"y".into())));
}

/// Malformed haproxy.cfg: the input, the line of the error and a fragment of its message.
#[rustfmt::skip]
const BAD_HAPROXY: [(&str, usize, &str); 12] = [
    ("listen a\n bind 192.0.2.100:80\n server ctl1\n", 3, "server `ctl1` needs an address"),
    ("# x\nfrontnd a\n", 2, "unknown section keyword `frontnd`"),
    ("listen a\n bind 192.0.2.100:80\nbakend b\n", 3, "unknown section keyword `bakend`"),
    ("  bind 192.0.2.100:80\nlisten a\n", 1, "`bind` is outside any section"),
    ("listen a\n bind 192.0.2.100:http\n", 2, "bad port `http`"),
    ("listen a\n bind :80\n server s 192.0.2.11:99999\n", 3, "bad port `99999`"),
    ("listen a\n bind 192.0.2.100\n", 2, "needs a port"),
    ("listen a\n server s 192.0.2.11 inter 2x\n", 2, "bad time `2x`"),
    ("listen a\n option httpchk GET \"/x\n", 2, "unterminated quote"),
    ("frontend f\n bind :80\n default_backend nope\n", 3, "no backend or listen section"),
    ("backend b\n bind 192.0.2.100:80\n", 2, "only allowed in listen and frontend"),
    ("listen a\n mode udp\n", 2, "bad mode `udp`"),
];

/// Malformed keepalived.conf, as above.
#[rustfmt::skip]
const BAD_KEEPALIVED: [(&str, usize, &str); 4] = [
    ("vrrp_instance V {\n interface eth0\n", 1, "`vrrp_instance V {` is never closed"),
    ("vrrp_instance V {\n}\n}\n", 3, "unmatched `}`"),
    ("vrrp_instance V {\n virtual_ipaddress {\n 192.0.2.300/24\n }\n}\n", 3,
     "bad virtual_ipaddress entry `192.0.2.300/24`"),
    ("vrrp_instance V {\n unicast_peer {\n ctl2\n }\n}\n", 3, "bad address `ctl2`"),
];

#[test]
fn malformed_input_names_the_line() {
    let cases = BAD_HAPROXY.map(|(h, line, why)| (h, None, "h.cfg", line, why));
    let ka = BAD_KEEPALIVED.map(|(k, line, why)| ("listen a\n", Some(k), "k.conf", line, why));
    for (h, k, file, line, fragment) in cases.into_iter().chain(ka) {
        let (f, l, what) = error(h, k);
        assert_eq!((f.as_str(), l), (file, line), "{what}");
        assert!(what.contains(fragment), "{what:?} lacks {fragment:?}");
    }
}

#[test]
fn port_range_and_unix_binds_are_notes_not_errors() {
    let h = "frontend api\n  bind 192.0.2.100:5000,192.0.2.100:6000-6010\n  \
             bind unix@/run/haproxy/api.sock\n  default_backend api_be\n\
             backend api_be\n  server a 192.0.2.11:5000 check\n\
             listen stats\n  bind /run/haproxy/stats.sock\n  server s 192.0.2.12:9000\n";
    let (out, c) = run(h, None);
    assert_eq!(c.vips.len(), 1, "{}", out.toml);
    assert_eq!(
        (c.vips[0].address.to_string(), c.vips[0].port),
        ("192.0.2.100".to_owned(), 5000)
    );
    assert_warned(&out, "h.cfg", 2, "binds the port range 6000-6010");
    assert_warned(&out, "h.cfg", 2, "port = 0");
    assert_warned(
        &out,
        "h.cfg",
        3,
        "`unix@/run/haproxy/api.sock` is a UNIX socket",
    );
    assert_warned(
        &out,
        "h.cfg",
        8,
        "`/run/haproxy/stats.sock` is a UNIX socket",
    );
    // The section with nothing else to bind is skipped, and says so.
    assert_warned(&out, "h.cfg", 7, "no usable bind address");
    assert!(!out
        .warnings
        .iter()
        .any(|w| w.why.starts_with("no VIP generated")));
}

#[test]
fn old_listen_syntax_with_a_port_range_is_a_note() {
    let h = "listen web 192.0.2.100:80,192.0.2.100:8000-8001\n  server a 192.0.2.11 check\n";
    let (out, c) = run(h, None);
    assert_eq!(c.vips.len(), 1);
    assert_warned(&out, "h.cfg", 1, "port range 8000-8001");
}

#[test]
fn an_input_without_vips_warns() {
    for h in [
        "",
        "# nothing\nglobal\n  maxconn 100\n",
        "listen s\n  bind unix@/x.sock\n",
    ] {
        let (out, c) = run(h, None);
        assert!(c.vips.is_empty());
        assert_warned(&out, "h.cfg", 1, "no VIP generated");
        assert_warned(&out, "h.cfg", 1, "balances nothing");
    }
}

#[test]
fn a_bind_without_any_address_is_still_an_error() {
    let (_, line, what) = error("listen web\n  bind ,\n  server a 192.0.2.11:80\n", None);
    assert_eq!(line, 2);
    assert!(what.contains("bind needs an address"), "{what}");
}
