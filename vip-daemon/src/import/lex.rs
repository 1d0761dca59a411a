//! haproxy.cfg as lines, words and sections, plus the value syntaxes shared by the directives:
//! `ADDR:PORT`, ports and times.

use std::net::IpAddr;
use std::time::Duration;

use super::{why, ImportError};

/// One non-empty line: its number, its text without the comment, and its words.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    /// 1-based.
    pub no: usize,
    pub text: String,
    pub words: Vec<String>,
}

impl Line {
    pub fn word(&self, i: usize) -> &str {
        self.words.get(i).map_or("", String::as_str)
    }
}

/// A section: `global`, `defaults`, `listen NAME`, `frontend NAME`, `backend NAME` or one of
/// the sections that have nothing to import (`userlist`, `peers`, ...).
#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub keyword: String,
    pub name: String,
    pub header: Line,
    pub body: Vec<Line>,
}

pub(crate) const PROXY_SECTIONS: [&str; 5] =
    ["global", "defaults", "listen", "frontend", "backend"];
const OTHER_SECTIONS: [&str; 14] = [
    "userlist",
    "peers",
    "resolvers",
    "mailers",
    "program",
    "http-errors",
    "cache",
    "ring",
    "log-forward",
    "fcgi-app",
    "crt-store",
    "traces",
    "acme",
    "namespace_list",
];

pub(crate) fn is_section(word: &str) -> bool {
    PROXY_SECTIONS.contains(&word) || OTHER_SECTIONS.contains(&word)
}

/// Splits haproxy.cfg into sections. A line before the first section, or a line starting in
/// column 0 whose first word is neither a section keyword nor a known directive (a misspelt
/// section keyword), is an error.
pub(crate) fn sections(src: &str, file: &str) -> Result<Vec<Section>, ImportError> {
    let mut out: Vec<Section> = Vec::new();
    for (i, raw) in src.lines().enumerate() {
        let no = i + 1;
        let (words, end) = words(raw).map_err(|what| ImportError::malformed(file, no, what))?;
        if words.is_empty() {
            continue;
        }
        let line = Line {
            no,
            text: raw[..end].trim().to_owned(),
            words,
        };
        let first = line.word(0);
        if is_section(first) {
            out.push(Section {
                keyword: first.to_owned(),
                name: line.word(1).to_owned(),
                header: line,
                body: Vec::new(),
            });
            continue;
        }
        let at_column_0 = !raw.starts_with(char::is_whitespace);
        let current = out
            .last_mut()
            .filter(|_| !at_column_0 || why::is_directive(first));
        let Some(section) = current else {
            let sections = PROXY_SECTIONS.join(", ");
            let what = if out.is_empty() && why::is_directive(first) {
                format!("`{first}` is outside any section: put it under one of {sections}")
            } else {
                format!(
                    "unknown section keyword `{first}`: expected one of {sections}, or a \
                     directive indented inside a section"
                )
            };
            return Err(ImportError::malformed(file, no, what));
        };
        section.body.push(line);
    }
    Ok(out)
}

/// haproxy's word syntax: blanks separate words; `\` escapes the next character (`\r`, `\n`,
/// `\t` and `\xHH` decode); "..." groups with escapes, '...' groups literally; an unquoted,
/// unescaped `#` starts a comment. Returns the words and the byte offset where the comment
/// (or the line) ends.
pub(crate) fn words(line: &str) -> Result<(Vec<String>, usize), String> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.char_indices().peekable();
    let mut quote: Option<char> = None;
    while let Some((at, c)) = chars.next() {
        match (quote, c) {
            (None, '#') => {
                out.extend(word.take());
                return Ok((out, at));
            }
            (None, c) if c.is_whitespace() => out.extend(word.take()),
            (Some(q), c) if c == q => quote = None,
            (None, '"' | '\'') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (Some('\''), c) => word.get_or_insert_with(String::new).push(c),
            (_, '\\') => {
                let escaped = match chars.next().map(|(_, e)| e) {
                    Some('r') => '\r',
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('x') => {
                        let hex: String =
                            (0..2).filter_map(|_| chars.next()).map(|p| p.1).collect();
                        let byte = u8::from_str_radix(&hex, 16).map_err(|_| {
                            format!("bad escape `\\x{hex}`: expected two hex digits")
                        })?;
                        char::from(byte)
                    }
                    Some(other) => other,
                    None => return Err("line ends with a lone `\\`".to_owned()),
                };
                word.get_or_insert_with(String::new).push(escaped);
            }
            (_, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated quote: add the closing {q}"));
    }
    out.extend(word.take());
    Ok((out, line.len()))
}

/// The host part of an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    /// `*`, `0.0.0.0` or an empty host: every IPv4 address.
    AnyV4,
    /// `::`: every address.
    Any,
    Ip(IpAddr),
    /// Not an IP address (a host name).
    Name(String),
}

/// Splits `ADDR[:PORT]` the way haproxy does: the port follows the last colon, and an IPv6
/// address without a port is recognised as a whole (`2001:db8::11`). `[v6]:port` and the
/// `ipv4@`/`ipv6@` prefixes are accepted.
pub(crate) fn host_port(s: &str) -> Result<(Host, Option<&str>), String> {
    let s = ["ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@"]
        .iter()
        .find_map(|p| s.strip_prefix(p))
        .unwrap_or(s);
    if s.starts_with('/') || s.contains('@') {
        return Err(format!(
            "`{s}` is not an IP address and port (sockets are not supported)"
        ));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{s}`: missing `]`"))?;
        (h, tail.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) if h.is_empty() || !h.contains(':') || h.parse::<IpAddr>().is_ok() => {
                (h, Some(p))
            }
            _ => (s, None),
        }
    };
    let host = match host {
        "" | "*" | "0.0.0.0" => Host::AnyV4,
        "::" => Host::Any,
        h => match h.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(h.to_owned()),
        },
    };
    Ok((host, port))
}

/// `ADDR:PORT[,ADDR:PORT...]` of a bind; every address needs a port.
pub(crate) fn bind_addrs(list: &str) -> Result<BindAddrs, String> {
    let mut out = BindAddrs::default();
    for a in list.split(',').filter(|a| !a.is_empty()) {
        if let Some(why) = not_carried(a) {
            out.skipped.push(why);
            continue;
        }
        let (host, p) = host_port(a)?;
        let p = p.ok_or_else(|| format!("bind address `{a}` needs a port, e.g. {a}:80"))?;
        out.addrs.push((host, port(p)?));
    }
    Ok(out)
}

/// The elements of a bind address list: the network addresses vipd can hold as VIPs, and
/// why each of the others (UNIX sockets, port ranges) is skipped.
#[derive(Debug, Default)]
pub(crate) struct BindAddrs {
    pub addrs: Vec<(Host, u16)>,
    pub skipped: Vec<String>,
}

/// Why a bind address element cannot become a VIP (None: it is an address and port).
fn not_carried(a: &str) -> Option<String> {
    let local = [
        "unix@",
        "abns@",
        "abnsz@",
        "uxst@",
        "uxdg@",
        "fd@",
        "sockpair@",
    ];
    if a.starts_with('/') || local.iter().any(|p| a.starts_with(p)) {
        return Some(format!(
            "`{a}` is a UNIX socket (or inherited file descriptor) bind: local IPC, not network \
             traffic a VIP receives; skipped"
        ));
    }
    let (_, Some(p)) = host_port(a).ok()? else {
        return None;
    };
    let (lo, hi) = p.split_once('-')?;
    let (lo, hi) = (port(lo).ok()?, port(hi).ok()?);
    Some(format!(
        "`{a}` binds the port range {lo}-{hi}: a vipd VIP has one port (or all ports, \
         port = 0); skipped: add a [[vip]] per port, or one with port = 0 if every port of the \
         address is this service's"
    ))
}

/// A port 1..=65535.
pub(crate) fn port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(format!("bad port `{s}`: expected a single port 1..65535")),
    }
}

/// A haproxy time: an integer with an optional unit (us, ms, s, m, h, d; milliseconds if
/// none). Microseconds round up to whole milliseconds.
pub(crate) fn time(s: &str) -> Result<Duration, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = s.split_at(digits);
    let bad =
        || format!("bad time `{s}`: expected a number with an optional unit, e.g. 2000 or 2s");
    let n: u64 = n.parse().map_err(|_| bad())?;
    let ms = match unit {
        "us" => Some(n.div_ceil(1000)),
        "" | "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "d" => n.checked_mul(86_400_000),
        _ => return Err(bad()),
    };
    ms.map(Duration::from_millis).ok_or_else(bad)
}

/// A positive time (intervals).
pub(crate) fn positive_time(s: &str) -> Result<Duration, String> {
    match time(s)? {
        d if d.is_zero() => Err(format!("bad time `{s}`: must be greater than 0")),
        d => Ok(d),
    }
}

/// An integer in `range` for the option `what`.
pub(crate) fn number(
    what: &str,
    s: &str,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, String> {
    s.parse::<u32>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            let (lo, hi) = (range.start(), range.end());
            format!("bad {what} `{s}`: expected an integer {lo}..{hi}")
        })
}
