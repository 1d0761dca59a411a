//! Proxies (+ keepalived) → the plan: one VIP per (listen|frontend, bind address:port), with
//! the backend's servers as backends.

use std::net::IpAddr;

use super::backends::{self, Backends};
use super::checks;
use super::haproxy::{Bind, Haproxy, Kind, Mode, Proxy, Settings};
use super::keepalived::Keepalived;
use super::lex::Host;
use super::options::ServerOpts;
use super::plan::{unique, Item, Plan, VipPlan};
use super::{Anchor, ImportError, Notes};

const WILDCARD: &str = "bind on * needs the VIP address: pass --keepalived FILE (the \
    keepalived.conf holding the virtual_ipaddress), or bind to the VIP address itself";

struct Cx<'a> {
    file: &'a str,
    notes: &'a mut Notes,
    keepalived: Option<&'a Keepalived>,
    vip_names: Vec<String>,
    /// (address, port, VIP name, bind line) of every VIP so far.
    keys: Vec<(IpAddr, u16, String, usize)>,
    /// VIPs attempted so far.
    serial: usize,
}

pub(crate) fn build(
    hap: &Haproxy,
    keepalived: Option<&Keepalived>,
    file: &str,
    notes: &mut Notes,
) -> Result<Plan, ImportError> {
    let mut cx = Cx {
        file,
        notes,
        keepalived,
        vip_names: Vec::new(),
        keys: Vec::new(),
        serial: 0,
    };
    let backend_of = |name: &str| {
        hap.proxies
            .iter()
            .find(|p| p.name == name && p.kind != Kind::Frontend)
    };
    let referenced: Vec<&str> = hap
        .proxies
        .iter()
        .filter_map(|p| p.backend.as_ref().map(|(n, _)| n.as_str()))
        .collect();
    let mut items = Vec::new();
    for p in &hap.proxies {
        let skip = |why: &str, cx: &mut Cx| {
            cx.notes.add(
                Anchor::Section(p.section),
                file,
                p.header.line,
                &p.header.text,
                why,
            );
            let binds = p.binds.iter().map(|b| Anchor::Bind(b.src.line));
            let servers = p.servers.iter().map(|s| Anchor::Server(s.src.line));
            Item::Skipped {
                title: format!("{} ({file}:{})", p.header.text, p.header.line),
                anchors: [Anchor::Section(p.section)]
                    .into_iter()
                    .chain(binds)
                    .chain(servers)
                    .collect(),
            }
        };
        if p.disabled {
            items.push(skip(super::why::DISABLED, &mut cx));
            continue;
        }
        let back = match (&p.backend, p.kind) {
            (_, Kind::Backend) => {
                if !referenced.contains(&p.name.as_str()) {
                    items.push(skip(
                        "no frontend uses this backend: no VIP generated",
                        &mut cx,
                    ));
                }
                continue;
            }
            (Some((name, src)), _) if p.servers.is_empty() => match backend_of(name) {
                Some(b) => b,
                None => {
                    let what = format!("no backend or listen section is named `{name}`");
                    return Err(ImportError::malformed(file, src.line, what));
                }
            },
            (None, Kind::Frontend) => {
                items.push(skip(
                    "this frontend has no default_backend: no VIP generated",
                    &mut cx,
                ));
                continue;
            }
            _ => p,
        };
        if back.servers.is_empty() {
            let why = if p.stats {
                "haproxy's statistics page: `vipd status` and the metrics endpoint replace it"
            } else {
                "no server lines: nothing to balance, no VIP generated"
            };
            items.push(skip(why, &mut cx));
            continue;
        }
        let mut made = 0;
        for bind in &p.binds {
            for (host, port) in &bind.addrs {
                for address in addresses(&mut cx, host, bind)? {
                    if let Some(vip) = vip(&mut cx, p, back, bind, address, *port) {
                        items.push(Item::Vip(vip));
                        made += 1;
                    }
                }
            }
        }
        let used_as_backend = referenced.contains(&p.name.as_str());
        if made == 0 && !(p.binds.is_empty() && used_as_backend) {
            let why = if p.binds.is_empty() {
                "no bind line: no VIP generated"
            } else {
                "no usable bind address or server (see the other notes): no VIP generated"
            };
            items.push(skip(why, &mut cx));
        }
    }
    let (defaults, defaults_line) = match hap.defaults.first() {
        Some((src, st)) => (checks::timing(st, &st.server).0, Some(src.line)),
        None => (
            checks::timing(&Settings::default(), &ServerOpts::default()).0,
            None,
        ),
    };
    let (interfaces, addresses) = keepalived.map_or_else(Default::default, |k| node(k, cx.notes));
    Ok(Plan {
        interfaces,
        addresses,
        defaults,
        defaults_line,
        jitter: hap
            .spread_checks
            .as_ref()
            .map(|(pct, _)| f64::from(*pct) / 100.0),
        items,
    })
}

/// `[node]` from keepalived: the VRRP interfaces (and `dev` of the VIPs), and this node's
/// own address (unicast_src_ip).
fn node(k: &Keepalived, notes: &mut Notes) -> (Vec<String>, Vec<IpAddr>) {
    let mut interfaces: Vec<String> = Vec::new();
    let mut addresses: Vec<IpAddr> = Vec::new();
    for i in &k.instances {
        let devs = i
            .vips
            .iter()
            .filter_map(|(_, line, dev)| dev.clone().map(|d| (d, *line)));
        for (name, line) in i.interface.clone().into_iter().chain(devs) {
            let bad = |c: char| c == '/' || c == ':' || c.is_whitespace();
            if !(1..=15).contains(&name.len()) || name == "." || name == ".." || name.contains(bad)
            {
                let why = "not a Linux interface name vipd can attach to (an alias like eth0:1 \
                           belongs to its device): left out of node.interfaces";
                notes.add(Anchor::Keepalived, &k.file, line, &name, why);
            } else if !interfaces.contains(&name) {
                interfaces.push(name);
            }
        }
        if let Some((a, _)) = i.unicast_src.filter(|(a, _)| !addresses.contains(a)) {
            addresses.push(a);
        }
    }
    (interfaces, addresses)
}

/// The VIP addresses of one bind address: itself, or keepalived's VIPs for a wildcard.
fn addresses(cx: &mut Cx, host: &Host, bind: &Bind) -> Result<Vec<IpAddr>, ImportError> {
    let at = |what: String| ImportError::malformed(cx.file, bind.src.line, what);
    let ka_vips: Option<Vec<IpAddr>> = cx
        .keepalived
        .map(|k| k.vips().into_iter().map(|(a, _)| a).collect());
    match host {
        Host::Ip(ip) => {
            if let Some(vips) = ka_vips.filter(|v| !v.contains(ip)) {
                let list: Vec<String> = vips.iter().map(ToString::to_string).collect();
                let why = format!(
                    "{ip} is not a keepalived virtual_ipaddress ({}): vipd will hold it as a VIP \
                     anyway; make sure it is not a controller's own address",
                    list.join(", ")
                );
                let anchor = Anchor::Bind(bind.src.line);
                cx.notes
                    .add(anchor, cx.file, bind.src.line, &bind.src.text, &why);
            }
            Ok(vec![*ip])
        }
        Host::AnyV4 | Host::Any => {
            let Some(vips) = ka_vips else {
                return Err(at(WILDCARD.to_owned()));
            };
            let v4_only = *host == Host::AnyV4;
            let vips: Vec<IpAddr> = vips
                .into_iter()
                .filter(|a| a.is_ipv4() || !v4_only)
                .collect();
            if vips.is_empty() {
                let family = if v4_only { "IPv4 " } else { "" };
                return Err(at(format!(
                    "bind on * needs the VIP address, but keepalived.conf has no {family}\
                     virtual_ipaddress"
                )));
            }
            Ok(vips)
        }
        Host::Name(name) => Err(at(format!(
            "bind address `{name}` is not an IP address: vipd needs the VIP address itself"
        ))),
    }
}

/// One VIP, or None (reported) when no server can be a backend of it.
fn vip(
    cx: &mut Cx,
    front: &Proxy,
    back: &Proxy,
    bind: &Bind,
    address: IpAddr,
    port: u16,
) -> Option<VipPlan> {
    let file = cx.file;
    let report = |cx: &mut Cx, anchor: Anchor, line: usize, text: &str, why: &str| {
        cx.notes.add(anchor, file, line, text, why);
    };
    let b = &bind.src;
    let serial = cx.serial;
    cx.serial += 1;
    if address.is_multicast() || address == IpAddr::from([255, 255, 255, 255]) {
        let why = format!("{address} is not a unicast address: it cannot be a VIP");
        report(cx, Anchor::Bind(b.line), b.line, &b.text, &why);
        return None;
    }
    if let Some((_, _, name, line)) = cx.keys.iter().find(|k| (k.0, k.1) == (address, port)) {
        let why = format!(
            "{address}:{port} is already VIP \"{name}\" (bind at line {line}): vipd has one VIP \
             per address and port, this bind is left out"
        );
        report(cx, Anchor::Bind(b.line), b.line, &b.text, &why);
        return None;
    }
    let Backends {
        list: backends,
        primary_backup,
        left_out,
        mut notes,
    } = backends::backends(back, address, port, serial, file, cx.notes);
    if backends.is_empty() {
        let h = &back.header;
        let why = format!("no server can be a backend of VIP {address}:{port}: no VIP generated");
        report(cx, h.anchor, h.line, &h.text, &why);
        return None;
    }
    let algo = back
        .settings
        .balance
        .as_ref()
        .map_or("roundrobin", |(a, _)| a.as_str());
    let hash_source = algo == "source";
    notes.push(match algo {
        _ if primary_backup => {
            format!("balance {algo} does not apply: one backend takes all traffic")
        }
        "source" => "balance source -> hash = \"source\": every connection of a client goes to \
                     the same backend"
            .to_owned(),
        a => format!(
            "balance {a} -> Maglev consistent hashing by weight; roundrobin, leastconn and the \
             weights are approximated per connection"
        ),
    });
    if front.settings.mode == Mode::Http || back.settings.mode == Mode::Http {
        notes.insert(
            0,
            "mode http: vip-fabric balances the TCP connections and never parses HTTP".to_owned(),
        );
    }
    let name = unique(&back.name, &mut cx.vip_names);
    cx.keys.push((address, port, name.clone(), b.line));
    let title = match front.kind {
        Kind::Frontend => format!(
            "frontend {} ({file}:{}) -> backend {} ({file}:{}), bind at line {}",
            front.name, front.header.line, back.name, back.header.line, b.line
        ),
        _ => format!(
            "listen {} ({file}:{}), bind at line {}",
            front.name, front.header.line, b.line
        ),
    };
    let mut anchors = vec![Anchor::Section(front.section)];
    if back.section != front.section {
        anchors.push(Anchor::Section(back.section));
    }
    anchors.extend([Anchor::Bind(b.line), Anchor::Vip(serial)]);
    anchors.extend(left_out.into_iter().map(Anchor::Server));
    Some(VipPlan {
        serial,
        name,
        address,
        port,
        hash_source,
        primary_backup,
        check: backends[0].check.clone(),
        backends,
        title,
        notes,
        anchors,
    })
}
