//! Health-check directives: `option httpchk`, `http-check expect|send`, `option mysql-check`
//! and the other protocol checks, `option external-check` with `external-check command`.

use super::haproxy::Src;
use super::lex::Line;

/// What haproxy sent to check a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Probe {
    /// TCP connect (no check option).
    #[default]
    Tcp,
    /// `option httpchk`.
    Http,
    /// A protocol conversation vipd cannot hold (`mysql-check`, `redis-check`, `tcp-check`,
    /// ...): a TCP connect check instead.
    Protocol(String),
    /// `option external-check`.
    External,
}

/// The request of an HTTP check.
#[derive(Debug, Clone)]
pub(crate) struct HttpSend {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    /// Headers other than Host (not carried over).
    pub headers: Vec<String>,
    pub src: Src,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    pub probe: Probe,
    /// Where the check option was set.
    pub src: Option<Src>,
    pub send: Option<HttpSend>,
    /// `http-check expect`: the status, or None for a form vipd cannot express.
    pub expect: Option<(Option<u16>, Src)>,
    /// `external-check command`.
    pub command: Option<(Vec<String>, Src)>,
}

pub(crate) enum Outcome {
    Handled,
    /// Handled as far as possible; reported with this reason.
    Dropped(&'static str),
    /// Not a check directive.
    NotMine,
}

pub(crate) const MYSQL_CHECK: &str = "mysql-check logs in to MySQL; vipd cannot, so this is a TCP \
    connect check, which only proves the port is open. For Galera use an exec check running \
    clustercheck: check = { kind = \"exec\", command = [\"/usr/bin/clustercheck\"] }";
const PROTOCOL_CHECK: &str = "vipd does not speak this protocol: converted to a TCP connect \
    check (an exec check running a client command can test more)";
const EXPECT: &str = "vipd compares the HTTP status with one code only: expect = 200 is used, \
    edit it if the backend answers another status";
const HTTP_CHECK_RULE: &str = "vipd's HTTP check sends one GET and compares the status code: \
    this http-check rule is dropped";
const DISABLE_ON_404: &str = "vipd has no drain-on-404: drain a backend with `vipd backend \
    drain VIP BACKEND`";

/// Interprets `line` if it is a check directive.
pub(crate) fn directive(line: &Line, st: &mut Settings, src: &Src) -> Result<Outcome, String> {
    let (w0, w1) = (line.word(0), line.word(1));
    let mut set = |probe: Probe| {
        st.probe = probe;
        st.src = Some(src.clone());
    };
    Ok(match (w0, w1) {
        ("option", "httpchk") => {
            set(Probe::Http);
            st.send = Some(httpchk(&line.words[2..], src));
            Outcome::Handled
        }
        ("option", "mysql-check") => {
            set(Probe::Protocol(w1.to_owned()));
            Outcome::Dropped(MYSQL_CHECK)
        }
        ("option", "ssl-hello-chk" | "ldap-check" | "pgsql-check" | "redis-check")
        | ("option", "smtpchk" | "spop-check") => {
            set(Probe::Protocol(w1.to_owned()));
            Outcome::Dropped(PROTOCOL_CHECK)
        }
        ("option", "tcp-check") => {
            // The `tcp-check` rules themselves are reported one by one.
            set(Probe::Protocol(w1.to_owned()));
            Outcome::Handled
        }
        ("option", "external-check") => {
            set(Probe::External);
            Outcome::Handled
        }
        ("no", "option") if is_check_option(line.word(2)) => {
            set(Probe::Tcp);
            Outcome::Handled
        }
        ("external-check", "command") => {
            let command = line.word(2);
            if command.is_empty() {
                return Err("`external-check command` needs a path".to_owned());
            }
            st.command = Some((vec![command.to_owned()], src.clone()));
            Outcome::Handled
        }
        ("http-check", "expect") => {
            let status = match &line.words[2..] {
                [s, code] if s == "status" => code.parse::<u16>().ok(),
                _ => None,
            };
            st.expect = Some((status.filter(|s| (100..=599).contains(s)), src.clone()));
            match st.expect {
                Some((Some(_), _)) => Outcome::Handled,
                _ => Outcome::Dropped(EXPECT),
            }
        }
        ("http-check", "send") => {
            st.send = Some(http_check_send(&line.words[2..], src));
            Outcome::Handled
        }
        ("http-check", "send-state") => Outcome::Handled,
        ("http-check", "disable-on-404") => Outcome::Dropped(DISABLE_ON_404),
        ("http-check", _) => Outcome::Dropped(HTTP_CHECK_RULE),
        _ => Outcome::NotMine,
    })
}

fn is_check_option(name: &str) -> bool {
    matches!(
        name,
        "httpchk"
            | "mysql-check"
            | "ssl-hello-chk"
            | "ldap-check"
            | "pgsql-check"
            | "redis-check"
            | "smtpchk"
            | "spop-check"
            | "tcp-check"
            | "external-check"
    )
}

/// `option httpchk [[METHOD] URI [VERSION[\r\nHeader: value...]]]` (default: OPTIONS /).
fn httpchk(args: &[String], src: &Src) -> HttpSend {
    let (method, path, rest) = match args {
        [] => ("OPTIONS", "/", &args[..0]),
        [uri] => ("OPTIONS", uri.as_str(), &args[..0]),
        [method, uri, rest @ ..] => (method.as_str(), uri.as_str(), rest),
    };
    let version = rest.join(" ");
    let mut send = HttpSend {
        method: method.to_owned(),
        path: path.to_owned(),
        host: None,
        headers: Vec::new(),
        src: src.clone(),
    };
    for header in version.split('\n').skip(1) {
        add_header(&mut send, header.trim());
    }
    send
}

/// `http-check send [meth M] [uri U] [ver V] [hdr NAME VALUE]...` (haproxy 2.2+).
fn http_check_send(args: &[String], src: &Src) -> HttpSend {
    let mut send = HttpSend {
        method: "GET".to_owned(),
        path: "/".to_owned(),
        host: None,
        headers: Vec::new(),
        src: src.clone(),
    };
    let mut it = args.iter();
    while let Some(key) = it.next() {
        let value = it.next().cloned().unwrap_or_default();
        match key.as_str() {
            "meth" => send.method = value,
            "uri" => send.path = value,
            "hdr" => {
                let header_value = it.next().cloned().unwrap_or_default();
                add_header(&mut send, &format!("{value}: {header_value}"));
            }
            _ => send.headers.push(format!("{key} {value}")),
        }
    }
    send
}

fn add_header(send: &mut HttpSend, header: &str) {
    match header.split_once(':') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("host") => {
            send.host = Some(value.trim().to_owned());
        }
        _ if header.is_empty() => {}
        _ => send.headers.push(header.to_owned()),
    }
}
