//! What happens to each haproxy directive the importer does not convert: skipped silently
//! (logging and bookkeeping, no effect on traffic) or reported with the reason it cannot be
//! carried over by an L4 balancer with direct server return.

pub(crate) const HEADERS: &str = "header rewriting needs a proxy; vip-fabric forwards packets \
    unchanged (DSR), so the backend sees the request exactly as the client sent it";
pub(crate) const HTTP_RULES: &str = "HTTP rules need a proxy that parses requests; vip-fabric \
    forwards packets unchanged (DSR): enforce this in the backend";
pub(crate) const TCP_RULES: &str = "content inspection needs a proxy; vip-fabric forwards \
    packets unchanged (DSR)";
pub(crate) const ACL: &str = "ACLs match on request or connection content inside a proxy; \
    vip-fabric does not inspect traffic";
pub(crate) const REDIRECT: &str = "redirects are answered by a proxy; let the backend's web \
    server redirect";
pub(crate) const STICK: &str = "stick tables: use hash = \"source\" for client affinity, or \
    selection = \"primary-backup\" for one active server";
pub(crate) const COOKIE: &str = "cookie persistence needs a proxy that reads and sets cookies: \
    use hash = \"source\" for client affinity";
pub(crate) const FORWARDFOR: &str = "X-Forwarded-For/-To headers are added by a proxy; with DSR \
    the backend sees the client's real source address and needs no header";
pub(crate) const TLS_BIND: &str = "TLS termination stays on the backends: vip-fabric forwards \
    the encrypted bytes, so every backend needs the certificate and must speak TLS on this port";
pub(crate) const TLS_SERVER: &str = "haproxy opened its own TLS connection to this server; with \
    vip-fabric the client's connection reaches the server unchanged, so the server must accept \
    what clients send";
pub(crate) const PROXY_PROTOCOL: &str = "the PROXY protocol is spoken between proxies; with DSR \
    the backend sees the client's real address: turn the PROXY protocol off on the backend";
pub(crate) const LIMITS: &str = "connection limits and queues need a proxy; vip-fabric neither \
    counts nor queues connections";
pub(crate) const TIMEOUT: &str = "proxy timeouts: with DSR there is no proxy connection, the \
    client's and backend's TCP stacks apply their own timeouts";
pub(crate) const RETRIES: &str = "retries and redispatch need a proxy that opens the backend \
    connection; with DSR a client whose backend fails reconnects and reaches a healthy one";
pub(crate) const HTTP_CONN: &str = "HTTP connection handling belongs to a proxy; with DSR client \
    and backend negotiate keep-alive and close themselves";
pub(crate) const KEEPALIVE: &str = "TCP keep-alive probes: with DSR the client's and backend's \
    TCP stacks send their own (net.ipv4.tcp_keepalive_*)";
pub(crate) const L7_BALANCE: &str = "balancing on a URI, header, parameter or cookie needs a \
    proxy: approximated by per-connection Maglev (use hash = \"source\" for client affinity)";
pub(crate) const L7_OTHER: &str = "an HTTP feature of the proxy; vip-fabric forwards packets \
    unchanged (DSR)";
pub(crate) const SESSIONS: &str = "vip-fabric keeps no sessions: once a backend is down, the \
    packets of its connections go to another backend, which resets them";
pub(crate) const SLOWSTART: &str = "slow start needs a proxy that counts connections; a \
    recovered backend takes its full share at once";
pub(crate) const TRACK: &str = "vipd checks every backend itself; tracking another server's \
    state or an agent's weight is not available (use `vipd backend weight`)";
pub(crate) const FASTINTER: &str = "vipd probes at one interval whatever the state; \
    fastinter/downinter are dropped";
pub(crate) const CHECK_ADDR: &str = "vipd health-checks the backend's own address";
pub(crate) const DNS: &str = "vipd needs literal IP addresses: resolve the name and edit the \
    generated file, or write the address into haproxy.cfg before importing";
pub(crate) const CONTENT_CHECK: &str = "vipd checks are a TCP connect, an HTTP GET compared with \
    one status code, or a command: this check conversation is dropped and a TCP connect check \
    is used, so every server that accepts connections gets traffic (a replica as well as the \
    master); an exec check running a script can test the same";
pub(crate) const LUA: &str = "Lua code runs inside haproxy; vip-fabric forwards packets \
    unchanged (DSR)";
pub(crate) const DISABLED: &str = "the section is disabled in haproxy.cfg: no VIP generated";
pub(crate) const UNKNOWN: &str = "not recognised by the importer: check by hand whether it \
    matters";

/// Why a whole section of this kind is not imported.
pub(crate) fn section(keyword: &str) -> &'static str {
    match keyword {
        "userlist" => "HTTP authentication needs a proxy: let the backend authenticate",
        "peers" => {
            "stick-table replication between haproxy processes: vip-fabric keeps no \
             per-client tables (hash = \"source\" gives affinity without them)"
        }
        "resolvers" => DNS,
        "mailers" => "vipd reports state changes in its log and metrics, not by e-mail",
        "program" => "haproxy's process manager: run the program as a systemd service",
        "cache" | "http-errors" | "fcgi-app" => L7_OTHER,
        "ring" | "log-forward" => "haproxy's own logging; vipd logs to the journal",
        _ => "a haproxy-only section with no vipd equivalent",
    }
}

/// The fate of a directive the interpreter does not handle itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Logging, statistics, names: nothing a packet balancer has to replace.
    Silent,
    Unsupported(&'static str),
}

use Fate::{Silent, Unsupported};

/// First words of proxy directives (`option` and `timeout` are decided by their second word).
const FIRST_WORDS: &[(&str, Fate)] = &[
    ("log", Silent),
    ("log-format", Silent),
    ("log-format-sd", Silent),
    ("error-log-format", Silent),
    ("log-tag", Silent),
    ("capture", Silent),
    ("description", Silent),
    ("id", Silent),
    ("stats", Silent),
    ("monitor-net", Silent),
    ("unique-id-format", Silent),
    ("unique-id-header", Silent),
    ("hash-type", Silent), // Maglev is consistent hashing already
    ("enabled", Silent),
    ("declare", Silent),
    ("email-alert", Silent),
    ("acl", Unsupported(ACL)),
    ("http-request", Unsupported(HEADERS)),
    ("http-response", Unsupported(HEADERS)),
    ("http-after-response", Unsupported(HEADERS)),
    ("reqadd", Unsupported(HEADERS)),
    ("reqrep", Unsupported(HEADERS)),
    ("reqirep", Unsupported(HEADERS)),
    ("reqdel", Unsupported(HEADERS)),
    ("reqidel", Unsupported(HEADERS)),
    ("reqallow", Unsupported(HTTP_RULES)),
    ("reqdeny", Unsupported(HTTP_RULES)),
    ("reqtarpit", Unsupported(HTTP_RULES)),
    ("rspadd", Unsupported(HEADERS)),
    ("rsprep", Unsupported(HEADERS)),
    ("rspirep", Unsupported(HEADERS)),
    ("rspdel", Unsupported(HEADERS)),
    ("rspidel", Unsupported(HEADERS)),
    ("rspdeny", Unsupported(HTTP_RULES)),
    ("block", Unsupported(HTTP_RULES)),
    ("http-reuse", Unsupported(HTTP_CONN)),
    ("tcp-request", Unsupported(TCP_RULES)),
    ("tcp-response", Unsupported(TCP_RULES)),
    ("redirect", Unsupported(REDIRECT)),
    ("stick-table", Unsupported(STICK)),
    ("stick", Unsupported(STICK)),
    ("persist", Unsupported(STICK)),
    ("cookie", Unsupported(COOKIE)),
    ("appsession", Unsupported(COOKIE)),
    ("compression", Unsupported(L7_OTHER)),
    ("errorfile", Unsupported(L7_OTHER)),
    ("errorloc", Unsupported(L7_OTHER)),
    ("errorloc302", Unsupported(L7_OTHER)),
    ("errorloc303", Unsupported(L7_OTHER)),
    ("errorfiles", Unsupported(L7_OTHER)),
    ("monitor-uri", Unsupported(L7_OTHER)),
    ("monitor", Unsupported(L7_OTHER)),
    ("filter", Unsupported(L7_OTHER)),
    ("use-server", Unsupported(HTTP_RULES)),
    ("force-persist", Unsupported(STICK)),
    ("ignore-persist", Unsupported(STICK)),
    ("http-send-name-header", Unsupported(HEADERS)),
    ("maxconn", Unsupported(LIMITS)),
    ("fullconn", Unsupported(LIMITS)),
    ("backlog", Unsupported(LIMITS)),
    ("rate-limit", Unsupported(LIMITS)),
    ("retries", Unsupported(RETRIES)),
    ("retry-on", Unsupported(RETRIES)),
    ("source", Unsupported(PROXY_PROTOCOL)),
    ("server-template", Unsupported(DNS)),
    ("dispatch", Unsupported(UNKNOWN)),
    ("tcp-check", Unsupported(CONTENT_CHECK)),
    ("external-check", Silent), // `path` is handled with `command`
    ("grace", Unsupported(TIMEOUT)),
    ("srvtcpka-cnt", Unsupported(KEEPALIVE)),
    ("srvtcpka-idle", Unsupported(KEEPALIVE)),
    ("srvtcpka-intvl", Unsupported(KEEPALIVE)),
    ("clitcpka-cnt", Unsupported(KEEPALIVE)),
    ("clitcpka-idle", Unsupported(KEEPALIVE)),
    ("clitcpka-intvl", Unsupported(KEEPALIVE)),
];

/// Directives the interpreter handles itself (known, so never "unknown section keyword").
const HANDLED: &[&str] = &[
    "mode",
    "balance",
    "bind",
    "server",
    "default-server",
    "default_backend",
    "use_backend",
    "option",
    "no",
    "timeout",
    "http-check",
    "disabled",
    "spread-checks",
    "lua-load",
];

/// `option NAME` outcomes not handled by the interpreter.
fn option(name: &str) -> Fate {
    match name {
        n if n.starts_with("log") || n.ends_with("log") => Silent,
        "dontlognull" | "dontlog-normal" | "log-health-checks" | "socket-stats" => Silent,
        "contstats" | "independent-streams" | "transparent" | "nolinger" => Silent,
        "forwardfor" | "originalto" => Unsupported(FORWARDFOR),
        "tcpka" | "clitcpka" | "srvtcpka" => Unsupported(KEEPALIVE),
        "redispatch" | "abortonclose" => Unsupported(RETRIES),
        "persist" | "prefer-last-server" => Unsupported(STICK),
        "checkcache" | "accept-invalid-http-request" | "accept-invalid-http-response" => {
            Unsupported(L7_OTHER)
        }
        n if n.starts_with("http") || n == "forceclose" => Unsupported(HTTP_CONN),
        n if n.starts_with("splice") => Silent,
        "ssl-hello-chk" | "ldap-check" | "pgsql-check" | "redis-check" | "smtpchk"
        | "spop-check" => Unsupported(CONTENT_CHECK),
        _ => Unsupported(UNKNOWN),
    }
}

/// The fate of an unhandled directive (`no option X` is always silent: turning off an option
/// the importer does not carry changes nothing).
pub(crate) fn fate(words: &[String]) -> Fate {
    let first = words.first().map_or("", String::as_str);
    let second = words.get(1).map_or("", String::as_str);
    match first {
        "option" => option(second),
        "timeout" => Unsupported(TIMEOUT),
        "no" => Silent,
        _ => FIRST_WORDS
            .iter()
            .find(|(w, _)| *w == first)
            .map_or(Unsupported(UNKNOWN), |(_, f)| *f),
    }
}

/// Common `global` keywords (all skipped, but known: see [`is_directive`]).
#[rustfmt::skip]
const GLOBAL_WORDS: &[&str] = &[
    "daemon", "user", "group", "uid", "gid", "chroot", "pidfile", "nbproc", "nbthread", "ulimit-n",
    "node", "master-worker", "ca-base", "crt-base", "hard-stop-after", "cpu-map", "setenv",
    "presetenv", "resetenv", "unsetenv", "localpeer", "quiet", "debug", "noepoll", "nopoll",
    "nosplice", "maxsslconn", "maxconnrate", "maxsessrate", "maxpipes", "busy-polling",
    "server-state-file", "server-state-base", "insecure-fork-wanted",
    "expose-experimental-directives", "maxcompcpuusage", "maxcomprate", "maxsslrate", "maxzlibmem",
];
#[rustfmt::skip]
const GLOBAL_PREFIXES: &[&str] = &[
    "tune.", "ssl-", "lua-", "h1-", "h2-", "set-", "51degrees",
];

/// Whether `word` is a directive the importer knows (handled, in the tables, or a common
/// `global` keyword). Lines in column 0 must start with one (or a section keyword).
pub(crate) fn is_directive(word: &str) -> bool {
    HANDLED.contains(&word)
        || FIRST_WORDS.iter().any(|(w, _)| *w == word)
        || GLOBAL_WORDS.contains(&word)
        || GLOBAL_PREFIXES.iter().any(|p| word.starts_with(p))
}
