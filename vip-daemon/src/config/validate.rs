//! The semantic rules for the global sections, plus helpers shared with [`super::vip`]:
//! raw file → resolved [`Config`], reporting every violation into the [`Ctx`]. A value that
//! fails its own check is reported once and then left out of the checks that depend on it
//! (a bad VIP address is not also a "family mismatch").

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use super::check::Timing;
use super::diag::Ctx;
use super::locate::FieldPath;
use super::raw::{RawCluster, RawConfig, RawNode};
use super::types::*;
use super::vip;

pub(crate) const ADDRESS_HINT: &str =
    "expected an IPv4 address like \"192.0.2.100\" or an IPv6 address like \"2001:db8::100\"";

/// Builds the resolved config; it is only meaningful if nothing was reported.
pub(crate) fn validate(raw: &RawConfig, cx: &mut Ctx) -> Config {
    let root = FieldPath::root();
    let node = node(&raw.node, cx);
    let cluster = cluster(&raw.cluster, &node.name, cx);

    let listen = raw.metrics.listen.as_deref();
    let metrics_listen = match listen.unwrap_or(defaults::METRICS_LISTEN) {
        "" | "off" => None,
        s => {
            let hint = "expected address:port like \"127.0.0.1:9478\" or \"[::1]:9478\", \
                        or \"off\" to disable metrics";
            parse_or::<SocketAddr>(cx, &root.key("metrics").key("listen"), s, hint)
        }
    };

    let socket = raw
        .control
        .socket
        .as_deref()
        .unwrap_or(defaults::CONTROL_SOCKET);
    // sun_path holds 108 bytes including the terminating NUL.
    if !socket.starts_with('/') || socket.len() > 107 {
        let msg = format!(
            "{socket:?} is not usable: expected an absolute path of at most 107 bytes, \
             e.g. \"{}\"",
            defaults::CONTROL_SOCKET
        );
        cx.error(&root.key("control").key("socket"), msg);
    }

    let default_timing = match &raw.defaults.check {
        Some(t) => Timing::parse(cx, t, &root.key("defaults").key("check")),
        None => Timing::default(),
    };
    default_timing.check_timeout(cx);
    default_timing.check_damping(cx);

    let vips = vip::vips(&raw.vip, &node, &default_timing, cx);
    super::membership::check_vips(cluster.membership.as_ref(), &vips, cx);
    let control_socket = PathBuf::from(socket);
    let mut config = Config {
        hooks: super::ops::hooks(&raw.hooks, cx),
        track: super::ops::track(&raw.track, &node.interfaces, cx),
        status_socket: super::ops::status_socket(&raw.control, cx),
        bgp: super::bgp::bgp(&raw.bgp, cx),
        node,
        cluster,
        metrics_listen,
        control_socket,
        vips,
        limits: LimitSettings::default(),
    };
    super::bgp::check_vips(&config.vips, cx);
    config.limits = super::limits::limits(&raw.limits, &config, cx);
    super::limits::check_memory(&config, cx);
    config
}

/// `s` parsed as a `T`, or a diagnostic "`s` is not valid: `hint`".
pub(crate) fn parse_or<T: std::str::FromStr>(
    cx: &mut Ctx,
    at: &FieldPath,
    s: &str,
    hint: &str,
) -> Option<T> {
    let parsed = s.parse().ok();
    if parsed.is_none() {
        cx.error(at, format!("{s:?} is not valid: {hint}"));
    }
    parsed
}

fn node(raw: &RawNode, cx: &mut Ctx) -> Node {
    let at = FieldPath::root().key("node");
    let name = raw.name.clone().unwrap_or_else(hostname);
    if name.is_empty() || name.chars().any(char::is_whitespace) {
        let msg = format!("{name:?} is not valid: expected a name without spaces, e.g. \"ctl1\"");
        cx.error(&at.key("name"), msg);
    }
    let interfaces = raw.interfaces.clone().unwrap_or_default();
    for (j, ifname) in interfaces.iter().enumerate() {
        let path = at.key("interfaces").index(j);
        if let Some(first) = interfaces[..j].iter().position(|x| x == ifname) {
            let msg = format!(
                "duplicate interface {ifname:?} (already node.interfaces[{first}]); \
                 list each interface once"
            );
            cx.error(&path, msg);
        } else if !valid_ifname(ifname) {
            let msg = format!(
                "{ifname:?} is not a valid interface name: expected 1 to 15 bytes without \
                 '/', ':' or whitespace, e.g. \"eth0\""
            );
            cx.error(&path, msg);
        }
    }
    let mut addresses = Vec::new();
    for (j, a) in raw.addresses.iter().flatten().enumerate() {
        let path = at.key("addresses").index(j);
        addresses.extend(parse_or::<IpAddr>(cx, &path, a, ADDRESS_HINT));
    }
    let pin_dir = raw.pin_dir.as_deref().unwrap_or(defaults::PIN_DIR);
    if !pin_dir.starts_with('/') {
        let msg = format!(
            "{pin_dir:?} is not absolute: expected a bpffs directory like \"{}\"",
            defaults::PIN_DIR
        );
        cx.error(&at.key("pin_dir"), msg);
    }
    let state_dir = raw.state_dir.as_deref().unwrap_or(defaults::STATE_DIR);
    if !state_dir.starts_with('/') {
        let msg = format!(
            "{state_dir:?} is not absolute: expected a directory like \"{}\"",
            defaults::STATE_DIR
        );
        cx.error(&at.key("state_dir"), msg);
    }
    let local_clients_cgroup = raw.local_clients_cgroup.as_deref().map(PathBuf::from);
    if local_clients_cgroup
        .as_ref()
        .is_some_and(|p| !p.is_absolute())
    {
        let msg = "not absolute: expected a cgroup v2 directory like \"/sys/fs/cgroup\"".to_owned();
        cx.error(&at.key("local_clients_cgroup"), msg);
    }
    Node {
        name,
        interfaces,
        addresses,
        pin_dir: PathBuf::from(pin_dir),
        state_dir: PathBuf::from(state_dir),
        realtime: raw.realtime.unwrap_or(false),
        local_clients: raw.local_clients.unwrap_or(true),
        local_clients_cgroup,
    }
}

fn cluster(raw: &RawCluster, node_name: &str, cx: &mut Ctx) -> Cluster {
    let at = FieldPath::root().key("cluster");
    let seed_range = 0..=i64::from(u32::MAX);
    let seed = cx.int(
        raw.hash_seed,
        &at.key("hash_seed"),
        seed_range,
        "an integer 0..=4294967295",
    );
    let v4 = raw
        .encap_source_v4
        .as_deref()
        .unwrap_or(defaults::ENCAP_SOURCE_V4);
    let v6 = raw
        .encap_source_v6
        .as_deref()
        .unwrap_or(defaults::ENCAP_SOURCE_V6);
    let v4_hint = "expected an IPv4 address like \"10.255.0.0\"";
    let v6_hint = "expected an IPv6 address like \"fd00:ffff::\"";
    let v4 = parse_or(cx, &at.key("encap_source_v4"), v4, v4_hint);
    let v6 = parse_or(cx, &at.key("encap_source_v6"), v6, v6_hint);
    Cluster {
        hash_seed: seed.map_or(defaults::HASH_SEED, |s| s as u32),
        encap_source_v4: v4.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
        encap_source_v6: v6.unwrap_or(std::net::Ipv6Addr::UNSPECIFIED),
        membership: super::membership::membership(raw, &at, node_name, cx),
    }
}

/// The kernel hostname, or "localhost" if it cannot be read.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| defaults::NODE_NAME.to_owned())
}

/// Linux `dev_valid_name`: 1..IFNAMSIZ-1 bytes, not "." or "..", no '/', ':' or whitespace.
fn valid_ifname(s: &str) -> bool {
    let bad_char = |c: char| c == '/' || c == ':' || c.is_whitespace();
    (1..=15).contains(&s.len()) && s != "." && s != ".." && !s.chars().any(bad_char)
}

/// `[a-z0-9_-]{1,32}` (VIP and backend names); reports and returns false otherwise.
pub(crate) fn check_name(cx: &mut Ctx, at: &FieldPath, name: &str) -> bool {
    let good_byte = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-';
    let ok = (1..=32).contains(&name.len()) && name.bytes().all(good_byte);
    if !ok {
        let msg = format!(
            "{name:?} is not a valid name: expected 1 to 32 characters from a-z, 0-9, '_' \
             and '-', e.g. \"keystone\""
        );
        cx.error(at, msg);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        for ok in ["eth0", "br-ex", "enp3s0f1", "a23456789012345"] {
            assert!(valid_ifname(ok), "{ok}");
        }
        for bad in ["", ".", "..", "eth0:1", "a/b", "eth 0", "a234567890123456"] {
            assert!(!valid_ifname(bad), "{bad}");
        }
    }

    #[test]
    fn hostname_is_never_empty() {
        assert!(!hostname().is_empty());
    }
}
