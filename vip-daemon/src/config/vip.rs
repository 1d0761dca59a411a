//! The semantic rules for `[[vip]]` and `[[vip.backend]]` tables, and across VIPs.

use std::net::{IpAddr, SocketAddr};

use super::check::{KindSpec, Timing};
use super::diag::Ctx;
use super::locate::FieldPath;
use super::raw::{RawBackend, RawVip};
use super::types::*;
use super::validate::{check_name, parse_or, ADDRESS_HINT};

/// Every `[[vip]]` in file order, then the cross-VIP rules.
pub(crate) fn vips(raws: &[RawVip], node: &Node, timing: &Timing, cx: &mut Ctx) -> Vec<Vip> {
    let at = |i: usize| FieldPath::root().key("vip").index(i);
    let vips: Vec<Vip> = raws
        .iter()
        .enumerate()
        .map(|(i, v)| vip(v, &at(i), node, timing, cx))
        .collect();
    cross_vip(raws, &vips, cx);
    vips
}

fn vip(raw: &RawVip, at: &FieldPath, node: &Node, default_timing: &Timing, cx: &mut Ctx) -> Vip {
    let name = cx
        .required(&raw.name, &at.key("name"), "\"keystone\"")
        .cloned();
    let name = name
        .inspect(|n| _ = check_name(cx, &at.key("name"), n))
        .unwrap_or_default();
    let address = cx
        .required(&raw.address, &at.key("address"), "\"192.0.2.100\"")
        .cloned();
    let address =
        address.and_then(|a| parse_or::<IpAddr>(cx, &at.key("address"), &a, ADDRESS_HINT));
    let not_unicast =
        |a: &IpAddr| a.is_unspecified() || a.is_multicast() || *a == IpAddr::from([255; 4]);
    if let Some(a) = address.filter(not_unicast) {
        let msg = format!("{a} cannot be a VIP: expected a unicast address like \"192.0.2.100\"");
        cx.error(&at.key("address"), msg);
    }
    let port = cx.int(
        raw.port,
        &at.key("port"),
        0..=65535,
        "a port 0..=65535 (0 = all ports)",
    );
    let port = port.unwrap_or(0) as u16;
    let protocols = [("tcp", Protocol::Tcp), ("udp", Protocol::Udp)];
    let protocol = cx.choice(&raw.protocol, &at.key("protocol"), &protocols);
    let hashes = [("flow", HashMode::Flow), ("source", HashMode::Source)];
    let hash = cx.choice(&raw.hash, &at.key("hash"), &hashes);
    let selections = [
        ("maglev", Selection::Maglev),
        ("primary-backup", Selection::PrimaryBackup),
    ];
    let selection = cx.choice(&raw.selection, &at.key("selection"), &selections);
    let selection = selection.unwrap_or(Selection::Maglev);
    let table_size = table_size(cx, raw.table_size, &at.key("table_size"));
    let table_size = if selection == Selection::PrimaryBackup {
        1
    } else {
        table_size
    };

    let check_at = at.key("check");
    let (spec, timing) = match &raw.check {
        Some(c) => (
            KindSpec::parse(cx, c, &check_at, &KindSpec::default()),
            Timing::parse(cx, &c.timing(), &check_at).over(default_timing),
        ),
        None => (KindSpec::default(), default_timing.clone()),
    };

    if raw.backend.is_empty() {
        let msg = format!(
            "vip {name:?} has no backends: add at least one [[vip.backend]] table after its \
             [[vip]] table"
        );
        cx.error(&at.key("backend"), msg);
    }
    let parent = Parent {
        name: &name,
        address,
        port,
        spec: &spec,
        timing: &timing,
    };
    let mut backends: Vec<BackendConf> = Vec::new();
    for (j, b) in raw.backend.iter().enumerate() {
        let b_at = at.key("backend").index(j);
        if let Some(conf) = backend(b, &b_at, &parent, node, cx) {
            sibling_conflicts(cx, &b_at, &conf, &backends, &raw.backend, selection);
            backends.push(conf);
        }
    }
    Vip {
        name,
        address: address.unwrap_or(IpAddr::from([0; 4])),
        port,
        protocol: protocol.unwrap_or(Protocol::Tcp),
        hash: hash.unwrap_or(HashMode::Flow),
        selection,
        table_size,
        backends,
        preferences: raw.preferences.clone().unwrap_or_default(),
        fencing: raw.fencing.unwrap_or(true),
        failback: failback(cx, raw.failback, &at.key("failback"), selection),
        drain_timeout: drain_timeout(cx, &raw.drain_timeout, &at.key("drain_timeout")),
        announce: cx
            .choice(
                &raw.announce,
                &at.key("announce"),
                &[("address", Announce::Address), ("bgp", Announce::Bgp)],
            )
            .unwrap_or(Announce::Address),
    }
}

/// `failback` changes who gets a primary/backup VIP's single slot; set on a Maglev VIP it
/// would silently do nothing, which is worth telling the author.
fn failback(cx: &mut Ctx, v: Option<bool>, at: &FieldPath, selection: Selection) -> bool {
    let Some(on) = v else { return false };
    if selection != Selection::PrimaryBackup {
        cx.error(
            at,
            "`failback` only applies to selection = \"primary-backup\" (which backend holds \
             the single slot); remove it from this Maglev VIP",
        );
        return false;
    }
    on
}

/// A duration, zero allowed (a drain then gives up established flows at once).
fn drain_timeout(cx: &mut Ctx, v: &Option<String>, at: &FieldPath) -> std::time::Duration {
    match v.as_deref().map(super::check::parse_duration) {
        None => defaults::DRAIN_TIMEOUT,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            cx.error(at, e);
            defaults::DRAIN_TIMEOUT
        }
    }
}

fn table_size(cx: &mut Ctx, v: Option<i64>, at: &FieldPath) -> u32 {
    let max = defaults::MAX_TABLE_SIZE;
    let suggest = defaults::SUGGESTED_TABLE_SIZES
        .map(|p| p.to_string())
        .join(", ");
    let valid = format!("a prime in 2..={max}, e.g. one of {suggest}");
    let Some(n) = cx.int(v, at, 2..=i64::from(max), &valid) else {
        return defaults::TABLE_SIZE;
    };
    let n = n as u32;
    if is_prime(n) {
        return n;
    }
    let below = (2..n).rev().find(|&p| is_prime(p));
    let above = (n + 1..=max).find(|&p| is_prime(p));
    let nearest: Vec<String> = below
        .into_iter()
        .chain(above)
        .map(|p| p.to_string())
        .collect();
    let msg = format!(
        "{n} is not prime: the Maglev table size must be a prime; nearest primes: {} \
         (common choices: {suggest})",
        nearest.join(" and ")
    );
    cx.error(at, msg);
    defaults::TABLE_SIZE
}

pub(crate) fn is_prime(n: u32) -> bool {
    n >= 2
        && (2..)
            .take_while(|d: &u32| d.saturating_mul(*d) <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// What a backend inherits from its VIP.
struct Parent<'a> {
    name: &'a str,
    address: Option<IpAddr>,
    port: u16,
    spec: &'a KindSpec,
    timing: &'a Timing,
}

fn backend(
    raw: &RawBackend,
    at: &FieldPath,
    vip: &Parent,
    node: &Node,
    cx: &mut Ctx,
) -> Option<BackendConf> {
    let name = cx.required(&raw.name, &at.key("name"), "\"ctl1\"").cloned();
    let name = name.filter(|n| check_name(cx, &at.key("name"), n));
    let address = cx
        .required(&raw.address, &at.key("address"), "\"192.0.2.11\"")
        .cloned();
    let address =
        address.and_then(|a| parse_or::<IpAddr>(cx, &at.key("address"), &a, ADDRESS_HINT));
    // An unusable address is reported once and then left out (no family or "is the VIP"
    // message on top), and the backend is dropped like any other invalid one.
    let address = address.filter(|&a| match backend_address_problem(a) {
        Some(problem) => {
            cx.error(&at.key("address"), problem.message(a));
            false
        }
        None => true,
    });
    if let (Some(a), Some(v)) = (address, vip.address) {
        let family = |x: IpAddr| if x.is_ipv4() { "IPv4" } else { "IPv6" };
        if a.is_ipv4() != v.is_ipv4() {
            let msg = format!(
                "backend address {a} is {} but the VIP address {v} is {}: a backend must be \
                 the same address family as its VIP",
                family(a),
                family(v)
            );
            cx.error(&at.key("address"), msg);
        } else if a == v {
            let msg = format!("{a} is the VIP address itself: expected the backend's own address");
            cx.error(&at.key("address"), msg);
        }
    }
    let port = match raw.port {
        Some(p) => cx.int(
            Some(p),
            &at.key("port"),
            1..=65535,
            "a health-check port 1..=65535",
        ),
        None if vip.port == 0 => {
            let msg = format!(
                "missing required key `port`: vip {:?} has port 0 (all ports), so each of its \
                 backends needs the port to health-check, e.g. port = 3306",
                vip.name
            );
            cx.error(&at.key("port"), msg);
            None
        }
        None => Some(i64::from(vip.port)),
    };
    let weight = cx.int(
        raw.weight,
        &at.key("weight"),
        0..=65535,
        "a weight 0..=65535 (0 = drained)",
    );
    let priority_hint = "a priority 0..=255 (lower = preferred)";
    let priority = cx.int(raw.priority, &at.key("priority"), 0..=255, priority_hint);
    let forwards = [
        ("l2", Forward::L2),
        ("encap", Forward::Encap),
        ("local", Forward::Local),
    ];
    let forward = cx.choice(&raw.forward, &at.key("forward"), &forwards);

    let check_at = at.key("check");
    let (spec, timing) = match &raw.check {
        Some(c) => (
            KindSpec::parse(cx, c, &check_at, vip.spec),
            Timing::parse(cx, &c.timing(), &check_at).over(vip.timing),
        ),
        None => (vip.spec.clone(), vip.timing.clone()),
    };
    timing.check_timeout(cx);
    timing.check_damping(cx);
    let check = spec.resolve(&timing);
    let (name, address, port, forward) = (name?, address?, port?, forward?);
    // A backend on this node is always reached through the local stack, whatever the file
    // says: the same file serves every node, only [node] differs.
    let forward = if node.addresses.contains(&address) {
        Forward::Local
    } else {
        forward
    };
    Some(BackendConf {
        name,
        address,
        port: port as u16,
        weight: weight.map_or(defaults::WEIGHT, |w| w as u32),
        priority: priority.unwrap_or(0) as u8,
        forward,
        check,
    })
}

/// Why an address cannot be a backend's. XDP forwards a VIP frame out of the interface it
/// arrived on, to the backend's MAC (or to its next hop, encapsulated): the backend must be a
/// unicast address of another host (or of this node's interface, which makes it local) that a
/// route and a neighbour entry can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendAddressProblem {
    /// 0.0.0.0 or `::`: names no host.
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// 224.0.0.0/4 or ff00::/8.
    Multicast,
    /// 127.0.0.0/8 or `::1`: a forwarded frame leaves the interface and never reaches a
    /// loopback address, on this host or any other.
    Loopback,
    /// 169.254.0.0/16 or fe80::/10. IPv6 link-local needs an interface scope that an address
    /// in this file cannot carry (probes and the route lookup would not know which link);
    /// IPv4 link-local addresses are self-assigned when DHCP fails and change on their own.
    /// Either way a backend on one is a misconfiguration waiting to happen, so both are
    /// refused rather than half-supported.
    LinkLocal,
    /// 0.0.0.0/8 ("this network": valid only as a source) or 240.0.0.0/4 (reserved, not
    /// routed): IPv4 addresses that are not unicast destinations.
    Reserved,
}

impl BackendAddressProblem {
    fn what(self) -> &'static str {
        match self {
            Self::Unspecified => "the unspecified address: it names no host",
            Self::Broadcast => "the IPv4 broadcast address: it names no single host",
            Self::Multicast => "a multicast address: a backend must be one host",
            Self::Loopback => {
                "a loopback address: forwarded frames leave through the network interface and \
                 never reach a loopback address (for a service on this node, give this node's \
                 own address on the VIP network and list it in node.addresses: it is then \
                 served locally)"
            }
            Self::LinkLocal => {
                "link-local: an IPv6 link-local address needs an interface scope this file \
                 cannot give, and an IPv4 one (169.254/16) is self-assigned and changes"
            }
            Self::Reserved => {
                "not a unicast destination: 0.0.0.0/8 is \"this network\" (a source only) \
                 and 240.0.0.0/4 is reserved and not routed"
            }
        }
    }

    /// "backend address A is WHAT: expected ..." with an example of A's family.
    pub fn message(self, a: IpAddr) -> String {
        let example = if a.is_ipv4() {
            "\"192.0.2.11\""
        } else {
            "\"2001:db8::11\""
        };
        format!(
            "backend address {a} is {}; expected the backend's unicast address on the VIP \
             network (or routed to through it), like {example}",
            self.what()
        )
    }
}

/// What makes `a` unusable as a backend address, if anything. IPv4-mapped IPv6 addresses are
/// judged as the IPv4 address they carry.
pub fn backend_address_problem(a: IpAddr) -> Option<BackendAddressProblem> {
    use BackendAddressProblem::*;
    let a = a.to_canonical();
    let link_local = match a {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    if a.is_unspecified() {
        Some(Unspecified)
    } else if a == IpAddr::from([255; 4]) {
        Some(Broadcast)
    } else if a.is_multicast() {
        Some(Multicast)
    } else if a.is_loopback() {
        Some(Loopback)
    } else if link_local {
        Some(LinkLocal)
    } else if matches!(a, IpAddr::V4(v4) if v4.octets()[0] == 0 || v4.octets()[0] >= 240) {
        Some(Reserved)
    } else {
        None
    }
}

/// Duplicate names, duplicate address:port and (primary-backup) duplicate priorities among
/// the backends of one VIP, reported at the later backend.
fn sibling_conflicts(
    cx: &mut Ctx,
    at: &FieldPath,
    conf: &BackendConf,
    earlier: &[BackendConf],
    raws: &[RawBackend],
    selection: Selection,
) {
    let index_of = |name: &str| raws.iter().position(|r| r.name.as_deref() == Some(name));
    if earlier.iter().any(|b| b.name == conf.name) {
        let msg = format!(
            "duplicate backend name {:?} (already backend[{}]); names must be unique within a VIP",
            conf.name,
            index_of(&conf.name).unwrap_or(0)
        );
        cx.error(&at.key("name"), msg);
    } else if let Some(first) = earlier
        .iter()
        .find(|b| (b.address, b.port) == (conf.address, conf.port))
    {
        let msg = format!(
            "same address and port ({}) as backend {:?}: list each backend once (raise its \
             weight to give it a bigger share)",
            SocketAddr::new(conf.address, conf.port),
            first.name
        );
        cx.error(&at.key("address"), msg);
    }
    if selection == Selection::PrimaryBackup {
        if let Some(first) = earlier.iter().find(|b| b.priority == conf.priority) {
            let msg = format!(
                "priority {} is already used by backend {:?}: in a primary-backup VIP every \
                 backend needs a distinct priority (lower = preferred), e.g. 0, 1, 2",
                conf.priority, first.name
            );
            cx.error(&at.key("priority"), msg);
        }
    }
}

/// Unique VIP names and non-overlapping (address, port, protocol) keys, reported at the
/// later VIP.
/// Duplicate names and overlapping (address, port, protocol) keys, each reported at the
/// later VIP against the first earlier one it clashes with. Linear: the earlier VIPs are
/// looked up by key, not scanned (a file may hold tens of thousands of VIPs).
fn cross_vip(raws: &[RawVip], vips: &[Vip], cx: &mut Ctx) {
    use std::collections::hash_map::{Entry, HashMap};
    let at = |i: usize| FieldPath::root().key("vip").index(i);
    // First VIP by name; by (address, protocol); by (address, protocol, port); and first
    // port-0 VIP by (address, protocol).
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let mut by_addr: HashMap<(IpAddr, Protocol), usize> = HashMap::new();
    let mut by_port: HashMap<(IpAddr, Protocol, u16), usize> = HashMap::new();
    let mut all_ports: HashMap<(IpAddr, Protocol), usize> = HashMap::new();
    for (j, v) in vips.iter().enumerate() {
        match by_name.entry(v.name.as_str()) {
            Entry::Occupied(first) if raws[j].name.is_some() => {
                let msg = format!(
                    "duplicate vip name {:?} (already vip[{}]); VIP names must be unique",
                    v.name,
                    first.get()
                );
                cx.error(&at(j).key("name"), msg);
            }
            Entry::Occupied(_) => {}
            Entry::Vacant(e) => _ = e.insert(j),
        }
        if v.address.is_unspecified() {
            continue; // missing or invalid: already reported
        }
        let ap = (v.address, v.protocol);
        // The first earlier VIP that overlaps: same address and protocol, and the same port
        // or port 0 on either side.
        let clash = if v.port == 0 {
            by_addr.get(&ap).copied()
        } else {
            let same = by_port.get(&(v.address, v.protocol, v.port)).copied();
            let zero = all_ports.get(&ap).copied();
            same.into_iter().chain(zero).min()
        };
        by_addr.entry(ap).or_insert(j);
        by_port.entry((v.address, v.protocol, v.port)).or_insert(j);
        if v.port == 0 {
            all_ports.entry(ap).or_insert(j);
        }
        let Some((i, e)) = clash.map(|i| (i, &vips[i])) else {
            continue;
        };
        let proto = if v.protocol == Protocol::Tcp {
            "tcp"
        } else {
            "udp"
        };
        let msg = if e.port == v.port {
            format!(
                "vip {:?} has the same address, port and protocol ({} {proto}) as vip[{i}] {:?}: \
                 each (address, port, protocol) belongs to one VIP only",
                v.name,
                SocketAddr::new(v.address, v.port),
                e.name
            )
        } else {
            format!(
                "vip {:?} (port {}) overlaps vip[{i}] {:?} (port {}) on {} {proto}: port 0 means \
                 all ports, so a port-0 VIP cannot share its address and protocol with another \
                 VIP; use another address or give both specific ports",
                v.name, v.port, e.name, e.port, v.address
            )
        };
        cx.error(&at(j).key("port"), msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_addresses() {
        use BackendAddressProblem::*;
        let cases = [
            ("0.0.0.0", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("255.255.255.255", Some(Broadcast)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.0.9", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("169.254.1.1", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("0.1.2.3", Some(Reserved)),
            ("240.0.0.1", Some(Reserved)),
            ("255.255.255.254", Some(Reserved)),
            ("::ffff:0.0.0.7", Some(Reserved)),
            ("223.255.255.254", None),
            ("192.0.2.11", None),
            ("10.0.0.255", None),
            ("100.64.0.1", None),
            ("2001:db8::11", None),
            ("fd00::1", None),
            ("fec0::1", None),
        ];
        for (a, want) in cases {
            let a: IpAddr = a.parse().unwrap();
            assert_eq!(backend_address_problem(a), want, "{a}");
        }
    }

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        let known = defaults::SUGGESTED_TABLE_SIZES
            .into_iter()
            .chain([defaults::MAX_TABLE_SIZE, 65521]);
        for p in known {
            assert!(is_prime(p), "{p}");
        }
        assert!(!is_prime(65536) && !is_prime(1_048_575) && !is_prime(u32::MAX));
        assert!(is_prime(4_294_967_291));
    }
}
