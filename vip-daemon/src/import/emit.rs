//! The plan → vipd config text, with the notes as comments next to what they concern.

use std::fmt::Write as _;

use super::keepalived::Keepalived;
use super::plan::{fmt_duration, BackendPlan, CheckPlan, Item, Plan, Timing, VipPlan};
use super::{Anchor, Notes};
use crate::config::CheckKind;

const WIDTH: usize = 100;

const HEADER: &str = "vip-fabric balances connections in the kernel (XDP) and forwards packets \
    unchanged to the backends, which answer the clients directly (direct server return, DSR). \
    Compared with haproxy: nothing in HTTP or TLS is seen or changed (header rules, TLS \
    termination, stick tables, redirects: each such directive is listed as NOT CARRIED OVER); \
    a backend receives connections addressed to the VIP and the VIP port, so every service \
    must accept them (listen on the VIP or on 0.0.0.0, not only on its own address); backends \
    see the clients' real addresses. The same file goes on every controller; only [node] \
    differs. Check the result with `vipd validate FILE` after editing.";

const VRRP: &str = "vip-fabric replaces VRRP: every controller runs vipd, and each VIP is placed \
    on a live node by rendezvous hashing. keepalived's priorities have no direct equivalent: in \
    cluster mode a VIP's `preferences` list the nodes that should own it first.";

struct Out {
    s: String,
    /// Anchors whose notes were printed already (printed once, referred to afterwards).
    printed: Vec<Anchor>,
}

impl Out {
    fn line(&mut self, text: &str) {
        self.s.push_str(text);
        self.s.push('\n');
    }

    /// `text` as `#` comment lines of at most WIDTH columns, indented by `indent`.
    fn comment(&mut self, indent: &str, text: &str) {
        let clean: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let mut line = format!("{indent}#");
        let mut empty = true;
        for word in clean.split(' ').filter(|w| !w.is_empty()) {
            if !empty && line.chars().count() + 1 + word.chars().count() > WIDTH {
                self.line(&line);
                line = format!("{indent}#  ");
            }
            line.push(' ');
            line.push_str(word);
            empty = false;
        }
        self.line(&line);
    }

    /// The NOT CARRIED OVER lines of `anchor`, or a pointer to where they were printed.
    fn notes(&mut self, indent: &str, notes: &Notes, anchor: Anchor) {
        let items: Vec<_> = notes.at(anchor).collect();
        if items.is_empty() {
            return;
        }
        if self.printed.contains(&anchor) {
            let u = items[0];
            let text = format!(
                "NOT CARRIED OVER: see the notes for {}:{} above",
                u.file, u.line
            );
            self.comment(indent, &text);
            return;
        }
        self.printed.push(anchor);
        for u in items {
            let text = format!("NOT CARRIED OVER: {u}");
            self.comment(indent, &text);
        }
    }
}

pub(crate) fn emit(plan: &Plan, notes: &Notes, file: &str, ka: Option<&Keepalived>) -> String {
    let mut out = Out {
        s: String::new(),
        printed: Vec::new(),
    };
    let sources = match ka {
        Some(k) => format!("{file} and {}", k.file),
        None => file.to_owned(),
    };
    out.comment(
        "",
        &format!("vipd configuration imported from {sources} by `vipd import-haproxy`."),
    );
    out.line("#");
    out.comment("", HEADER);
    out.notes("", notes, Anchor::Top);
    out.line("");
    node(&mut out, plan, ka);
    cluster(&mut out, notes, ka);
    defaults(&mut out, plan, notes);
    for item in &plan.items {
        out.line("");
        match item {
            Item::Vip(v) => vip(&mut out, plan, notes, v),
            Item::Skipped { title, anchors } => {
                out.comment("", &format!("--- skipped: {title}"));
                for a in anchors {
                    out.notes("", notes, *a);
                }
            }
        }
    }
    // Whatever has no place above (VIPs that could not be made, for instance).
    let rest: Vec<Anchor> = notes
        .anchors()
        .into_iter()
        .filter(|a| !out.printed.contains(a))
        .collect();
    if !rest.is_empty() {
        out.line("");
        out.comment("", "--- other notes");
        for anchor in rest {
            out.notes("", notes, anchor);
        }
    }
    out.s
}

fn node(out: &mut Out, plan: &Plan, ka: Option<&Keepalived>) {
    out.line("[node]");
    out.line("# name = \"ctl1\"    # unique per controller; default: the hostname");
    let list = |items: Vec<String>| items.join(", ");
    if plan.interfaces.is_empty() {
        out.comment(
            "",
            "FILL IN: the NICs that receive VIP traffic (XDP attaches there), e.g. [\"eth0\"]",
        );
    } else if let Some(k) = ka {
        let from = format!(
            "From {}: the VRRP interfaces (and the `dev` of the VIPs).",
            k.file
        );
        out.comment("", &from);
    }
    let names = list(plan.interfaces.iter().map(|i| quote(i)).collect());
    out.line(&format!("interfaces = [{names}]"));
    if plan.addresses.is_empty() {
        out.comment(
            "",
            "FILL IN: this controller's own addresses (one of the backend addresses below): \
             its own backend is then served through the local stack.",
        );
    } else {
        out.comment(
            "",
            "keepalived's unicast_src_ip: this controller's own address (its own backend is \
             served through the local stack). Each controller lists its own.",
        );
    }
    let addrs = list(
        plan.addresses
            .iter()
            .map(|a| quote(&a.to_string()))
            .collect(),
    );
    out.line(&format!("addresses = [{addrs}]"));
    out.line("");
}

fn cluster(out: &mut Out, notes: &Notes, ka: Option<&Keepalived>) {
    out.line("[cluster]");
    out.line(
        "# hash_seed = 0x7f4a7c15         # must be identical on every controller (default shown)",
    );
    let Some(k) = ka else {
        out.line("");
        return;
    };
    out.comment("", VRRP);
    for i in &k.instances {
        let vips: Vec<String> = i.vips.iter().map(|(a, _, _)| a.to_string()).collect();
        let text = format!(
            "{}:{}: vrrp_instance {} (state {}, priority {}, virtual_router_id {}): VIPs {}",
            k.file,
            i.line,
            i.name,
            or_unset(&i.state),
            or_unset(&i.priority),
            or_unset(&i.router_id),
            vips.join(", ")
        );
        out.comment("", &text);
    }
    let src = k.instances.iter().find_map(|i| i.unicast_src);
    let peers: Vec<String> = k
        .instances
        .iter()
        .flat_map(|i| &i.peers)
        .map(|(a, _)| quote(&sock(*a, 7946)))
        .fold(Vec::new(), |mut v, p| {
            if !v.contains(&p) {
                v.push(p);
            }
            v
        });
    if !peers.is_empty() || src.is_some() {
        out.comment(
            "",
            "Cluster mode (SWIM gossip, VIP ownership by quorum) takes over from VRRP between \
             the controllers; keepalived's unicast peers are the other controllers:",
        );
        if let Some((a, _)) = src {
            out.line(&format!("# listen = {}", quote(&sock(a, 7946))));
        }
        out.line(&format!("# peers = [{}]", peers.join(", ")));
        out.line("# key_file = \"/etc/vip-fabric/cluster.key\"");
    }
    out.notes("", notes, Anchor::Keepalived);
    out.line("");
}

fn sock(a: std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(a, port).to_string()
}

fn or_unset(s: &str) -> &str {
    if s.is_empty() {
        "unset"
    } else {
        s
    }
}

fn defaults(out: &mut Out, plan: &Plan, notes: &Notes) {
    let from = match plan.defaults_line {
        Some(l) => format!("the first defaults section (line {l})"),
        None => "haproxy's built-in values (no defaults section)".to_owned(),
    };
    let text = format!(
        "Check timing of {from}: default-server inter/rise/fall and timeout check (at most the \
         interval). VIPs and backends override what differs."
    );
    out.comment("", &text);
    out.line("[defaults.check]");
    let t = plan.defaults;
    out.line(&format!("interval = {}", quote(&fmt_duration(t.interval))));
    out.line(&format!("timeout = {}", quote(&fmt_duration(t.timeout))));
    out.line(&format!("rise = {}", t.rise));
    out.line(&format!("fall = {}", t.fall));
    if let Some(j) = plan.jitter {
        out.line(&format!("jitter = {j:?}    # global spread-checks"));
    }
    for anchor in notes.anchors() {
        if let Anchor::Defaults(_) = anchor {
            out.notes("", notes, anchor);
        }
    }
}

fn vip(out: &mut Out, plan: &Plan, notes: &Notes, v: &VipPlan) {
    out.comment("", &format!("--- {}: {}", v.name, v.title));
    for n in &v.notes {
        out.comment("", n);
    }
    for a in &v.anchors {
        out.notes("", notes, *a);
    }
    out.line("[[vip]]");
    out.line(&format!("name = {}", quote(&v.name)));
    out.line(&format!("address = {}", quote(&v.address.to_string())));
    out.line(&format!("port = {}", v.port));
    if v.hash_source {
        out.line("hash = \"source\"");
    }
    if v.primary_backup {
        out.line("selection = \"primary-backup\"");
    }
    let keys = check_keys(&v.check, None, &plan.defaults);
    out.line(&format!("check = {{ {} }}", keys.join(", ")));
    for b in &v.backends {
        out.line("");
        backend(out, notes, v, b);
    }
}

fn backend(out: &mut Out, notes: &Notes, v: &VipPlan, b: &BackendPlan) {
    for n in &b.notes {
        out.comment("  ", n);
    }
    out.notes("  ", notes, Anchor::Server(b.line));
    out.notes("  ", notes, Anchor::Backend(v.serial, b.line));
    out.line("  [[vip.backend]]");
    out.line(&format!("  name = {}", quote(&b.name)));
    out.line(&format!("  address = {}", quote(&b.address.to_string())));
    if b.port != v.port {
        out.line(&format!(
            "  port = {}                      # health-check port",
            b.port
        ));
    }
    if b.weight != 1 {
        out.line(&format!("  weight = {}", b.weight));
    }
    if let Some(p) = b.priority {
        out.line(&format!("  priority = {p}"));
    }
    if b.check != v.check {
        let keys = check_keys(&b.check, Some(&v.check.kind), &v.check.timing);
        out.line(&format!("  check = {{ {} }}", keys.join(", ")));
    }
}

/// The keys of a check table: the kind keys unless the kind is `inherited`, and the timing
/// keys that differ from `base`.
fn check_keys(c: &CheckPlan, inherited: Option<&CheckKind>, base: &Timing) -> Vec<String> {
    let mut keys = Vec::new();
    if inherited != Some(&c.kind) {
        match &c.kind {
            CheckKind::Tcp => keys.push("kind = \"tcp\"".to_owned()),
            CheckKind::Http {
                path,
                expect,
                host,
                tls,
                tls_verify,
            } => {
                let kind = if *tls { "https" } else { "http" };
                keys.push(format!("kind = \"{kind}\""));
                keys.push(format!("path = {}", quote(path)));
                keys.push(format!("expect = {expect}"));
                if let Some(h) = host {
                    keys.push(format!("host = {}", quote(h)));
                }
                if *tls_verify {
                    keys.push("tls_verify = true".to_owned());
                }
            }
            CheckKind::Exec { command } => {
                let argv: Vec<String> = command.iter().map(|a| quote(a)).collect();
                keys.push("kind = \"exec\"".to_owned());
                keys.push(format!("command = [{}]", argv.join(", ")));
            }
        }
    }
    let t = c.timing;
    let mut time = |key: &str, v: std::time::Duration, b: std::time::Duration| {
        if v != b {
            keys.push(format!("{key} = {}", quote(&fmt_duration(v))));
        }
    };
    time("interval", t.interval, base.interval);
    time("timeout", t.timeout, base.timeout);
    if t.rise != base.rise {
        keys.push(format!("rise = {}", t.rise));
    }
    if t.fall != base.fall {
        keys.push(format!("fall = {}", t.fall));
    }
    keys
}

/// A TOML basic string.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
