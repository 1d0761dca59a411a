//! The options after the address on `server`, `default-server` and `bind` lines.

use std::time::Duration;

use super::lex;
use super::why;

/// Server settings from `default-server` and `server` lines; a server starts from its
/// proxy's `default-server` and overrides it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServerOpts {
    pub check: bool,
    pub inter: Option<Duration>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    pub weight: Option<u32>,
    /// `port N`: the health-check port.
    pub port: Option<u16>,
    pub backup: bool,
    /// TLS to the server (`ssl`): checks use TLS too.
    pub ssl: bool,
    pub check_ssl: bool,
    pub verify_required: bool,
    pub disabled: bool,
}

/// Options that cannot be carried over, with the reason; one entry per reason.
#[derive(Debug, Clone)]
pub(crate) struct Dropped {
    pub words: Vec<String>,
    pub why: &'static str,
}

const SOURCE: &str = "haproxy chose the source address of its connections to the server; with \
    DSR the server sees the client's own address";

/// Options that take one argument (on either kind of line).
#[rustfmt::skip]
const ONE_ARG: &[&str] = &[
    "inter", "fastinter", "downinter", "rise", "fall", "weight", "port", "addr", "maxconn",
    "maxqueue", "minconn", "max-reuse", "pool-max-conn", "pool-purge-delay", "pool-low-conn",
    "slowstart", "on-marked-down", "on-marked-up", "on-error", "error-limit", "observe", "track",
    "agent-port", "agent-inter", "agent-addr", "agent-send", "cookie", "redir", "resolvers",
    "resolve-prefer", "resolve-net", "init-addr", "resolve-opts", "id", "namespace", "source",
    "usesrc", "interface", "proxy-v2-options", "verify", "verifyhost", "ca-file", "crt",
    "crt-list", "crl-file", "sni", "check-sni", "ciphers", "ciphersuites", "alpn", "check-alpn",
    "npn", "ssl-min-ver", "ssl-max-ver", "curves", "ecdhe", "sigalgs", "client-sigalgs", "proto",
    "check-proto", "ws", "socks4", "log-proto", "tcp-ut", "shard", "guid", "hash-key", "name",
    "process", "thread", "mss", "nice", "backlog", "mode", "uid", "gid", "user", "group", "level",
    "severity-output", "accept-netscaler-cip", "ca-sign-file", "ca-sign-pass",
    "set-proxy-v2-tlv-fmt", "ca-verify-file", "ocsp-update", "expose-fd",
];

/// TLS options other than `ssl` itself.
fn is_tls(name: &str) -> bool {
    #[rustfmt::skip]
    const TLS: &[&str] = &[
        "verify", "verifyhost", "ca-file", "crt", "crt-list", "crl-file", "sni", "ciphers",
        "ciphersuites", "alpn", "npn", "ssl-min-ver", "ssl-max-ver", "curves", "ecdhe", "sigalgs",
        "client-sigalgs", "strict-sni", "ca-sign-file", "ca-sign-pass", "generate-certificates",
        "allow-0rtt", "prefer-client-ciphers", "ca-verify-file", "ocsp-update", "ssl-reuse",
        "no-ssl-reuse", "tls-tickets", "no-tls-tickets",
    ];
    TLS.contains(&name)
        || ["no-sslv3", "no-tlsv1", "force-sslv3", "force-tlsv1"]
            .iter()
            .any(|p| name.starts_with(p))
}

/// Walks `words` (the options), calling `f(name, argument)`; `f` returns the reason when the
/// option is dropped. Dropped options are merged per reason, in order of appearance.
fn walk(
    words: &[String],
    mut f: impl FnMut(&str, Option<&str>) -> Result<Option<&'static str>, String>,
) -> Result<Vec<Dropped>, String> {
    let mut dropped: Vec<Dropped> = Vec::new();
    let mut rest = words.iter();
    while let Some(name) = rest.next() {
        let mut taken = vec![name.clone()];
        let arg = if ONE_ARG.contains(&name.as_str()) {
            let arg = rest
                .next()
                .ok_or_else(|| format!("option `{name}` needs a value"))?;
            taken.push(arg.clone());
            Some(arg.as_str())
        } else {
            None
        };
        if let Some(why) = f(name, arg)? {
            match dropped.iter_mut().find(|d| d.why == why) {
                Some(d) => d.words.extend(taken),
                None => dropped.push(Dropped { words: taken, why }),
            }
        }
    }
    Ok(dropped)
}

/// Applies the options of a `server` or `default-server` line to `opts`.
pub(crate) fn server(words: &[String], opts: &mut ServerOpts) -> Result<Vec<Dropped>, String> {
    walk(words, |name, arg| {
        let v = arg.unwrap_or("");
        let why = match name {
            "check" | "no-check" => {
                opts.check = name == "check";
                return Ok(None);
            }
            "check-ssl" | "no-check-ssl" => {
                opts.check_ssl = name == "check-ssl";
                return Ok(None);
            }
            "backup" | "no-backup" => {
                opts.backup = name == "backup";
                return Ok(None);
            }
            "disabled" | "enabled" => {
                opts.disabled = name == "disabled";
                return Ok(None);
            }
            "inter" => {
                opts.inter = Some(lex::positive_time(v)?);
                return Ok(None);
            }
            "rise" => {
                opts.rise = Some(lex::number("rise", v, 1..=u32::MAX)?);
                return Ok(None);
            }
            "fall" => {
                opts.fall = Some(lex::number("fall", v, 1..=u32::MAX)?);
                return Ok(None);
            }
            "weight" => {
                opts.weight = Some(lex::number("weight", v, 0..=65535)?);
                return Ok(None);
            }
            "port" => {
                opts.port = Some(lex::port(v)?);
                return Ok(None);
            }
            "ssl" | "no-ssl" => {
                opts.ssl = name == "ssl";
                why::TLS_SERVER
            }
            "verify" => {
                opts.verify_required = v == "required";
                why::TLS_SERVER
            }
            n if is_tls(n) || n == "check-sni" || n == "check-alpn" => why::TLS_SERVER,
            "fastinter" | "downinter" => why::FASTINTER,
            "addr" => why::CHECK_ADDR,
            "maxconn" | "maxqueue" | "minconn" | "max-reuse" => why::LIMITS,
            n if n.starts_with("pool-") => why::LIMITS,
            "slowstart" => why::SLOWSTART,
            "on-marked-down" | "on-marked-up" => why::SESSIONS,
            "on-error" | "error-limit" | "observe" | "track" => why::TRACK,
            n if n.starts_with("agent-") || n == "no-agent-check" => why::TRACK,
            n if n.starts_with("send-proxy") || n == "check-send-proxy" => why::PROXY_PROTOCOL,
            "proxy-v2-options" | "set-proxy-v2-tlv-fmt" => why::PROXY_PROTOCOL,
            "cookie" => why::COOKIE,
            "redir" => why::REDIRECT,
            "source" | "usesrc" | "interface" => SOURCE,
            "proto" | "check-proto" | "ws" => why::L7_OTHER,
            "resolvers" | "resolve-prefer" | "resolve-net" | "init-addr" | "resolve-opts"
            | "id" | "namespace" | "non-stick" | "tfo" | "guid" | "hash-key" | "shard"
            | "log-proto" | "tcp-ut" => return Ok(None),
            _ => why::UNKNOWN,
        };
        Ok(Some(why))
    })
}

/// The options of a `bind` line (after the addresses): everything that matters is dropped.
pub(crate) fn bind(words: &[String]) -> Result<Vec<Dropped>, String> {
    walk(words, |name, _| {
        Ok(match name {
            "ssl" => Some(why::TLS_BIND),
            n if is_tls(n) => Some(why::TLS_BIND),
            "accept-proxy" | "accept-netscaler-cip" => Some(why::PROXY_PROTOCOL),
            "maxconn" | "backlog" => Some(why::LIMITS),
            "proto" => Some(why::L7_OTHER),
            "transparent" | "name" | "id" | "process" | "thread" | "interface" | "v4v6"
            | "v6only" | "defer-accept" | "tfo" | "mss" | "nice" | "namespace" | "mode" | "uid"
            | "gid" | "user" | "group" | "level" | "severity-output" | "expose-fd" | "guid" => None,
            _ => Some(why::UNKNOWN),
        })
    })
}
