//! A server's haproxy health check → a vipd check: kind (tcp, http(s), exec) and timing
//! (`inter`, `rise`, `fall`, `timeout check`).

use std::time::Duration;

use super::haproxy::{Server, Settings, Src};
use super::plan::{fmt_duration, CheckPlan, Timing};
use super::probe::Probe;
use super::Notes;
use crate::config::CheckKind;

/// haproxy's built-in check timing.
const INTER: Duration = Duration::from_secs(2);
const RISE: u32 = 2;
const FALL: u32 = 3;

const NO_EXPECT: &str = "haproxy accepted any 2xx or 3xx status; vipd expects exactly one: 200 \
    is used. Some OpenStack APIs answer GET / with 300 Multiple Choices (glance, cinder): add \
    `http-check expect status 300` before importing, or edit expect";
const HEADERS: &str = "vipd's HTTP check sends only a Host header; the other headers are \
    dropped";
const EXTERNAL: &str = "haproxy passed the server as arguments and HAPROXY_SERVER_* variables; \
    vipd runs the command without arguments and sets VIPD_BACKEND_ADDRESS and \
    VIPD_BACKEND_PORT: adapt the script";
const NO_COMMAND: &str = "option external-check without `external-check command`: a TCP \
    connect check is used";

/// Timing of a server with `opts` under `settings`; the second value is true when `timeout
/// check` was longer than the interval and had to be clamped.
pub(crate) fn timing(settings: &Settings, opts: &super::options::ServerOpts) -> (Timing, bool) {
    let interval = opts.inter.unwrap_or(INTER);
    let check = settings.timeout_check.as_ref().map(|(t, _)| *t);
    let check = check.filter(|t| !t.is_zero());
    let timing = Timing {
        interval,
        timeout: check.unwrap_or(interval).min(interval),
        rise: opts.rise.unwrap_or(RISE),
        fall: opts.fall.unwrap_or(FALL),
    };
    (timing, check.is_some_and(|t| t > interval))
}

/// The check of one server; problems are reported into `notes` at the directive that causes
/// them.
pub(crate) fn check(
    settings: &Settings,
    server: &Server,
    file: &str,
    notes: &mut Notes,
) -> CheckPlan {
    let (timing, clamped) = timing(settings, &server.opts);
    if let (true, Some((t, src))) = (clamped, &settings.timeout_check) {
        let why = format!(
            "vipd needs the check timeout to be at most the interval: clamped to {} for servers \
             checked every {} (timeout check {})",
            fmt_duration(timing.interval),
            fmt_duration(timing.interval),
            fmt_duration(*t)
        );
        report(notes, file, src, &why);
    }
    let probe = &settings.probe;
    let kind = match &probe.probe {
        Probe::Tcp | Probe::Protocol(_) => CheckKind::Tcp,
        Probe::External => match &probe.command {
            Some((command, src)) => {
                report(notes, file, src, EXTERNAL);
                CheckKind::Exec {
                    command: command.clone(),
                }
            }
            None => {
                if let Some(src) = &probe.src {
                    report(notes, file, src, NO_COMMAND);
                }
                CheckKind::Tcp
            }
        },
        Probe::Http => http(settings, server, file, notes),
    };
    CheckPlan { kind, timing }
}

fn http(settings: &Settings, server: &Server, file: &str, notes: &mut Notes) -> CheckKind {
    let probe = &settings.probe;
    let expect = match &probe.expect {
        Some((status, _)) => status.unwrap_or(200),
        None => {
            if let Some(src) = &probe.src {
                report(notes, file, src, NO_EXPECT);
            }
            200
        }
    };
    let (mut path, mut host) = ("/".to_owned(), None);
    if let Some(send) = &probe.send {
        if !matches!(send.method.to_ascii_uppercase().as_str(), "GET" | "HEAD") {
            let why = format!(
                "vipd's HTTP check sends GET (haproxy sent {}): make sure GET {} answers {expect}",
                send.method, send.path
            );
            report(notes, file, &send.src, &why);
        }
        if send.path.starts_with('/') {
            path = send.path.clone();
        } else {
            let why = format!("check path `{}` is not a path: \"/\" is used", send.path);
            report(notes, file, &send.src, &why);
        }
        match &send.host {
            Some(h) if h.is_empty() || h.chars().any(char::is_whitespace) => {
                report(
                    notes,
                    file,
                    &send.src,
                    "Host header value is not usable: dropped",
                );
            }
            h => host = h.clone(),
        }
        if !send.headers.is_empty() {
            let why = format!("{HEADERS}: {}", send.headers.join(", "));
            report(notes, file, &send.src, &why);
        }
    }
    let tls = server.opts.ssl || server.opts.check_ssl;
    CheckKind::Http {
        path,
        expect,
        host,
        tls,
        tls_verify: tls && server.opts.verify_required,
    }
}

fn report(notes: &mut Notes, file: &str, src: &Src, why: &str) {
    notes.add(src.anchor, file, src.line, &src.text, why);
}
