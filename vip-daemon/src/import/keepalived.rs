//! keepalived.conf: the VRRP instances (VIP addresses, interfaces, peers, priorities) and
//! their tracking scripts. Everything VRRP-specific is reported (vip-fabric replaces VRRP).

use std::net::IpAddr;

use super::{Anchor, ImportError, Notes};

/// A statement: its words and, for `keyword ... { ... }`, its block.
#[derive(Debug, Clone)]
struct Node {
    line: usize,
    words: Vec<String>,
    block: Option<Vec<Node>>,
}

impl Node {
    fn word(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
    }

    fn text(&self) -> String {
        let brace = if self.block.is_some() { " { … }" } else { "" };
        format!("{}{brace}", self.words.join(" "))
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Instance {
    pub name: String,
    pub line: usize,
    pub state: String,
    pub priority: String,
    pub router_id: String,
    pub interface: Option<(String, usize)>,
    /// Address, line, `dev` of each `virtual_ipaddress` entry.
    pub vips: Vec<(IpAddr, usize, Option<String>)>,
    pub unicast_src: Option<(IpAddr, usize)>,
    pub peers: Vec<(IpAddr, usize)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Keepalived {
    pub file: String,
    pub instances: Vec<Instance>,
}

impl Keepalived {
    /// Every VIP address, in file order, without repeats.
    pub fn vips(&self) -> Vec<(IpAddr, usize)> {
        let mut out: Vec<(IpAddr, usize)> = Vec::new();
        for (a, line, _) in self.instances.iter().flat_map(|i| &i.vips) {
            if !out.iter().any(|(b, _)| b == a) {
                out.push((*a, *line));
            }
        }
        out
    }
}

const TRACK_HAPROXY: &str = "keepalived moved the VIP when haproxy died; vipd replaces haproxy \
    and health-checks every backend itself, so this script has no job left";
const TRACK_OTHER: &str = "vip-fabric's health probes replace VRRP tracking: if the script \
    checks a backend service, make it that VIP's exec check";
const VRRP_ONLY: &str = "VRRP-only setting: vip-fabric replaces VRRP (VIP owners are chosen by \
    rendezvous hashing over the live nodes; cluster mode authenticates with key_file)";
const NOTIFY: &str = "vipd runs no scripts when VIP ownership changes; watch `vipd status` or \
    the metrics instead";
const LVS: &str = "keepalived's IPVS virtual servers are not imported: write [[vip]] tables for \
    them by hand";
const INCLUDE: &str = "included files are not read: pass the file that holds the vrrp_instance \
    blocks to --keepalived";
const SKIPPED: &str = "not imported: vip-fabric replaces keepalived";

/// Parses keepalived.conf; VRRP-only settings are reported into `notes`.
pub(crate) fn parse(src: &str, file: &str, notes: &mut Notes) -> Result<Keepalived, ImportError> {
    let nodes = tree(src, file)?;
    let scripts: Vec<(&str, String)> = nodes
        .iter()
        .filter(|n| n.word(0) == "vrrp_script")
        .map(|n| {
            let script = children(n).find(|c| c.word(0) == "script");
            (
                n.word(1),
                script.map(|c| c.words[1..].join(" ")).unwrap_or_default(),
            )
        })
        .collect();
    let mut instances = Vec::new();
    for n in &nodes {
        match n.word(0) {
            "vrrp_instance" => instances.push(instance(n, file, &scripts, notes)?),
            "global_defs" | "vrrp_script" => {}
            "virtual_server" | "virtual_server_group" => {
                notes.add(Anchor::Keepalived, file, n.line, &n.text(), LVS)
            }
            "include" => notes.add(Anchor::Keepalived, file, n.line, &n.text(), INCLUDE),
            _ => notes.add(Anchor::Keepalived, file, n.line, &n.text(), SKIPPED),
        }
    }
    Ok(Keepalived {
        file: file.to_owned(),
        instances,
    })
}

fn children(n: &Node) -> impl Iterator<Item = &Node> {
    n.block.iter().flatten()
}

fn instance(
    n: &Node,
    file: &str,
    scripts: &[(&str, String)],
    notes: &mut Notes,
) -> Result<Instance, ImportError> {
    let mut inst = Instance {
        name: n.word(1).to_owned(),
        line: n.line,
        state: String::new(),
        priority: String::new(),
        router_id: String::new(),
        interface: None,
        vips: Vec::new(),
        unicast_src: None,
        peers: Vec::new(),
    };
    let ip = |c: &Node, s: &str| {
        s.parse::<IpAddr>().map_err(|_| {
            let what = format!("bad address `{s}` in {}: expected an IP address", n.word(0));
            ImportError::malformed(file, c.line, what)
        })
    };
    for c in children(n) {
        let value = c.word(1).to_owned();
        match c.word(0) {
            "state" => inst.state = value,
            "priority" => inst.priority = value,
            "virtual_router_id" => inst.router_id = value,
            "advert_int" | "garp_master_delay" | "dont_track_primary" | "version" => {}
            "interface" => inst.interface = Some((value, c.line)),
            "unicast_src_ip" | "mcast_src_ip" => inst.unicast_src = Some((ip(c, &value)?, c.line)),
            "virtual_ipaddress" | "virtual_ipaddress_excluded" => {
                for e in children(c) {
                    let addr = e.word(0);
                    let bare = addr.split_once('/').map_or(addr, |(a, _)| a);
                    let address = ip(e, bare).map_err(|_| {
                        let what = format!(
                            "bad virtual_ipaddress entry `{addr}`: expected an address like \
                             192.0.2.100/24"
                        );
                        ImportError::malformed(file, e.line, what)
                    })?;
                    let dev = e.words.iter().position(|w| w == "dev");
                    let dev = dev.and_then(|i| e.words.get(i + 1)).cloned();
                    inst.vips.push((address, e.line, dev));
                }
            }
            "unicast_peer" => {
                for e in children(c) {
                    inst.peers.push((ip(e, e.word(0))?, e.line));
                }
            }
            "track_script" => {
                for e in children(c) {
                    let script = scripts.iter().find(|(name, _)| *name == e.word(0));
                    let body = script.map_or("", |(_, s)| s.as_str());
                    let why = if body.contains("haproxy") {
                        TRACK_HAPROXY.to_owned()
                    } else if body.is_empty() {
                        TRACK_OTHER.to_owned()
                    } else {
                        let argv: Vec<String> =
                            body.split_whitespace().map(|w| format!("{w:?}")).collect();
                        format!(
                            "{TRACK_OTHER}: check = {{ kind = \"exec\", command = [{}] }}",
                            argv.join(", ")
                        )
                    };
                    let directive = format!("track_script {} (script \"{body}\")", e.word(0));
                    notes.add(Anchor::Keepalived, file, e.line, &directive, &why);
                }
            }
            w if w.starts_with("notify") => {
                notes.add(Anchor::Keepalived, file, c.line, &c.text(), NOTIFY)
            }
            _ => notes.add(Anchor::Keepalived, file, c.line, &c.text(), VRRP_ONLY),
        }
    }
    Ok(inst)
}

/// Statements and `{ }` blocks. `#` and `!` start comments; "..." groups words.
fn tree(src: &str, file: &str) -> Result<Vec<Node>, ImportError> {
    // Open blocks: the statement that opened them and the statements inside so far.
    let mut stack: Vec<(Node, Vec<Node>)> = Vec::new();
    let mut top: Vec<Node> = Vec::new();
    for (i, raw) in src.lines().enumerate() {
        let no = i + 1;
        let mut words: Vec<String> = Vec::new();
        for token in tokens(raw).map_err(|what| ImportError::malformed(file, no, what))? {
            let current = match stack.last_mut() {
                Some((_, body)) => body,
                None => &mut top,
            };
            match token.as_str() {
                "{" => {
                    let header = if words.is_empty() {
                        // `{` on its own line opens the previous statement.
                        match current.pop() {
                            Some(prev) if prev.block.is_none() => prev,
                            _ => {
                                return Err(ImportError::malformed(
                                    file,
                                    no,
                                    "`{` without a keyword before it",
                                ))
                            }
                        }
                    } else {
                        Node {
                            line: no,
                            words: std::mem::take(&mut words),
                            block: None,
                        }
                    };
                    stack.push((header, Vec::new()));
                }
                "}" => {
                    if !words.is_empty() {
                        current.push(Node {
                            line: no,
                            words: std::mem::take(&mut words),
                            block: None,
                        });
                    }
                    let Some((mut header, body)) = stack.pop() else {
                        return Err(ImportError::malformed(
                            file,
                            no,
                            "unmatched `}`: no block is open",
                        ));
                    };
                    header.block = Some(body);
                    match stack.last_mut() {
                        Some((_, body)) => body.push(header),
                        None => top.push(header),
                    }
                }
                _ => words.push(token),
            }
        }
        if !words.is_empty() {
            let current = match stack.last_mut() {
                Some((_, body)) => body,
                None => &mut top,
            };
            current.push(Node {
                line: no,
                words,
                block: None,
            });
        }
    }
    if let Some((open, _)) = stack.pop() {
        let what = format!(
            "`{} {{` is never closed: add the missing `}}`",
            open.words.join(" ")
        );
        return Err(ImportError::malformed(file, open.line, what));
    }
    Ok(top)
}

/// The words of a line, with `{` and `}` as tokens of their own.
fn tokens(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut chars = line.chars();
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            out.push(std::mem::take(word));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            // A comment starts a word (`auth_pass pa!ss` keeps its `!`).
            '#' | '!' if word.is_empty() => break,
            '"' => {
                let mut closed = false;
                for q in chars.by_ref() {
                    if q == '"' {
                        closed = true;
                        break;
                    }
                    word.push(q);
                }
                if !closed {
                    return Err("unterminated quote: add the closing \"".to_owned());
                }
            }
            '{' | '}' => {
                flush(&mut word, &mut out);
                out.push(c.to_string());
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    Ok(out)
}
