//! vipd's endpoints under abuse, as an operator and an attacker with local access would meet
//! them (issue 14, item 1): a real vipd in its own network namespace.
//! - Every file descriptor used up (RLIMIT_NOFILE lowered with prlimit, idle connections to
//!   /metrics): accepts fail and back off, and once the connections are gone both the control
//!   socket and /metrics answer again within a second.
//! - The control socket reads lines of at most 64 KiB (64 MiB without a newline: an error
//!   answer, the connection closed, vipd's memory unchanged) and closes idle connections.
//! - /metrics and /healthz over HTTP/1.1: exact paths, GET and HEAD, content types, 404, 405,
//!   503 when the data plane is attached to nothing.
//! - A taken metrics port or a live control socket fails the start, naming it, before READY
//!   and before the data plane is touched.
//! - The CLI: no panic on a closed pipe; errors on one line, exit code 1.
use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::net::{UnixDatagram, UnixListener, UnixStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use vip_tests::{privileged, unique, vipd::Vipd, vipd_bin, NetNs, PinDir};

const METRICS: &str = "127.0.0.1:9478";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// vipd's `control::IDLE_TIMEOUT` and `metrics::HEADER_TIMEOUT`.
const IDLE: Duration = Duration::from_secs(10);

/// A namespace with a veth pair for vipd to attach to (`e0`, 10.78.0.2/24; its peer `e1`).
fn namespace() -> NetNs {
    vip_tests::veth_namespace("vep", "10.78.0.2/24")
}

/// One VIP whose only backend does not exist (its probes fail: health does not matter here).
fn config(interfaces: &str) -> String {
    format!(
        r#"
[node]
name = "lb"
interfaces = {interfaces}
pin_dir = "@PIN_DIR@"

[metrics]
listen = "{METRICS}"

[control]
socket = "@CONTROL@"

[defaults.check]
interval = "1s"
timeout = "200ms"

[[vip]]
name = "web"
address = "10.78.0.100"
port = 80
table_size = 251
check = {{ kind = "tcp" }}

[[vip.backend]]
name = "b0"
address = "10.78.0.11"
"#
    )
}

struct HttpAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method path` to vipd's metrics listener (from inside `ns`) and reads the answer
/// to the end; Err when none comes within `limit`.
fn http(ns: &NetNs, method: &str, path: &str, limit: Duration) -> Result<HttpAnswer, String> {
    let request = format!("{method} {path} HTTP/1.1\r\nHost: vipd\r\nConnection: close\r\n\r\n");
    ns.run(move || {
        let addr: SocketAddr = METRICS.parse().expect("address");
        let mut conn = TcpStream::connect_timeout(&addr, limit).map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(limit))
            .map_err(|e| e.to_string())?;
        conn.write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        conn.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("no HTTP head in {:?}", String::from_utf8_lossy(&raw)))?;
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        Ok(HttpAnswer {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        })
    })
}

/// One `status` request on the control socket; None when no answer comes within `limit`.
fn control_status(path: &Path, limit: Duration) -> Option<serde_json::Value> {
    let mut s = UnixStream::connect(path).ok()?;
    s.set_read_timeout(Some(limit)).ok()?;
    s.set_write_timeout(Some(limit)).ok()?;
    s.write_all(b"{\"cmd\":\"status\"}\n").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    let v: serde_json::Value = serde_json::from_str(&line).ok()?;
    (v["kind"] == "status").then_some(v)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// Sets vipd's RLIMIT_NOFILE soft limit (as `prlimit --pid PID --nofile=SOFT:HARD`); returns
/// the old limits.
fn set_nofile(pid: u32, soft: u64) -> libc::rlimit {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit(2) reading into `old` first, then setting from a valid struct.
    let rc = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: as above.
    let rc = unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The issue's report: idle connections to /metrics use up vipd's file descriptors, and the
/// accept loops ended at the first EMFILE, taking /metrics and the control socket away until
/// a restart. Now an accept error is logged once per burst and retried every 50 ms.
#[test]
fn fd_exhaustion_then_both_endpoints_answer_within_a_second() {
    if !privileged("fd_exhaustion_then_both_endpoints_answer_within_a_second") {
        return;
    }
    let ns = namespace();
    let pins = PinDir::new();
    let vipd = Vipd::start(&ns, &pins, &config("[\"e0\"]"));
    let pid = vipd.pid().expect("pid");
    let before = open_fds(pid);
    // As with nofile=256 in the report: a few spare descriptors, then hundreds of clients.
    let old = set_nofile(pid, before as u64 + 24);
    // As many as it takes: vipd accepts until EMFILE, the kernel queues the listen backlog
    // (128), and further connects time out.
    let idle: Vec<TcpStream> = ns.run(|| {
        let addr: SocketAddr = METRICS.parse().expect("address");
        (0..300)
            .map_while(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok())
            .collect()
    });
    assert!(
        idle.len() > 24,
        "only {} connections to /metrics",
        idle.len()
    );
    wait_until("vipd out of descriptors", Duration::from_secs(5), || {
        vipd.logs().contains("accept failed")
    });
    // The control socket cannot take a connection now either.
    let control_down = control_status(&vipd.control, Duration::from_millis(500)).is_none();
    eprintln!(
        "{} descriptors before, limit {}, {} while exhausted ({} connections to /metrics); \
         control socket answering: {}",
        before,
        before + 24,
        open_fds(pid),
        idle.len(),
        !control_down
    );
    drop(idle);
    let freed = Instant::now();
    let (mut control_at, mut metrics_at) = (None, None);
    while freed.elapsed() < Duration::from_secs(5) && (control_at.is_none() || metrics_at.is_none())
    {
        if control_at.is_none()
            && control_status(&vipd.control, Duration::from_millis(200)).is_some()
        {
            control_at = Some(freed.elapsed());
        }
        if metrics_at.is_none()
            && http(&ns, "GET", "/metrics", Duration::from_millis(200))
                .is_ok_and(|a| a.status == 200)
        {
            metrics_at = Some(freed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "after freeing: control socket answered at {control_at:?}, /metrics at {metrics_at:?}"
    );
    let logs = vipd.logs();
    for (at, what) in [(control_at, "control socket"), (metrics_at, "/metrics")] {
        assert!(
            at.is_some_and(|t| t < Duration::from_secs(1)),
            "{what} did not answer within 1 s of the descriptors being freed ({at:?}):\n{logs}"
        );
    }
    // Once per burst and endpoint, not once per try (a retry every 50 ms).
    let warned = logs.lines().filter(|l| l.contains("accept failed")).count();
    assert!(
        (1..=2).contains(&warned),
        "{warned} accept-failure lines: expected one per burst per endpoint:\n{logs}"
    );
    // The burst ends after 1 s without failures, at the next accept.
    std::thread::sleep(Duration::from_millis(1100));
    assert!(http(&ns, "GET", "/metrics", Duration::from_secs(2)).is_ok_and(|a| a.status == 200));
    let logs = vipd.logs();
    assert!(logs.contains("accepting connections again"), "{logs}");
    assert!(
        control_down || logs.contains("control socket"),
        "the control socket was never refused:\n{logs}"
    );
    // SAFETY: prlimit(2) with a valid struct.
    unsafe { libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &old, std::ptr::null_mut()) };
    vipd.cli(&["status"]).expect("status after recovery");
}

/// The control socket: 64 MiB without a newline is cut at 64 KiB with an error answer and the
/// connection closed, and vipd's memory does not grow with it; a bad line gets an error and the
/// connection serves the next line; idle and half-sent requests are closed after 10 s, and so
/// are idle HTTP connections.
#[test]
fn control_socket_line_limit_and_idle_timeouts() {
    if !privileged("control_socket_line_limit_and_idle_timeouts") {
        return;
    }
    let ns = namespace();
    let pins = PinDir::new();
    let vipd = Vipd::start(&ns, &pins, &config("[\"e0\"]"));
    let pid = vipd.pid().expect("pid");

    // Idle connections first: they time out while the rest runs.
    let idle_control = {
        let path = vipd.control.clone();
        std::thread::spawn(move || {
            [&b""[..], b"{\"cmd\":"].map(|sent| {
                let mut s = UnixStream::connect(&path).expect("connect");
                s.write_all(sent).expect("write");
                s.set_read_timeout(Some(IDLE * 3)).expect("timeout");
                let t0 = Instant::now();
                let mut buf = [0u8; 64];
                let r = s.read(&mut buf);
                (t0.elapsed(), format!("{r:?}"))
            })
        })
    };
    let idle_http = ns.spawn(|| {
        let addr: SocketAddr = METRICS.parse().expect("address");
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(IDLE * 3)).expect("timeout");
        let t0 = Instant::now();
        let mut buf = [0u8; 64];
        let r = s.read(&mut buf);
        (t0.elapsed(), format!("{r:?}"))
    });

    let rss_before = rss_kib(pid);
    let mut s = UnixStream::connect(&vipd.control).expect("connect");
    let mut writer = s.try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'a'; 1 << 20];
        let mut sent = 0usize;
        while sent < 64 << 20 {
            match writer.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) => return (sent, Some(e.kind())),
            }
        }
        (sent, None)
    });
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = BufReader::new(&mut s).read_line(&mut answer);
    let (sent, stopped) = sender.join().expect("sender");
    let rss_after = rss_kib(pid);
    eprintln!(
        "64 MiB without newline: {sent} bytes taken before the close ({stopped:?}); answer \
         {answer:?}; VmRSS {rss_before} -> {rss_after} KiB"
    );
    assert!(
        answer.contains("\"kind\":\"error\"") && answer.contains("longer than 65536 bytes"),
        "no error answer for a too-long line: {answer:?}"
    );
    assert!(
        sent < 64 << 20 && stopped.is_some(),
        "vipd kept reading the endless line ({sent} bytes)"
    );
    assert!(
        rss_after < rss_before + 8 * 1024,
        "VmRSS grew from {rss_before} to {rss_after} KiB"
    );

    // A bad line: an error answer, and the same connection serves the next request.
    let mut s = UnixStream::connect(&vipd.control).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"hello\n{\"cmd\":\"status\"}\n")
        .expect("write");
    let mut lines = BufReader::new(s).lines();
    let first = lines.next().expect("answer").expect("read");
    assert!(first.contains("bad request"), "{first}");
    let second = lines.next().expect("answer").expect("read");
    assert!(second.contains("\"kind\":\"status\""), "{second}");

    vipd.cli(&["status"]).expect("vipd status after the abuse");

    for (took, how) in idle_control.join().expect("idle control") {
        assert!(
            took >= IDLE - Duration::from_millis(500) && took < IDLE + Duration::from_secs(3),
            "an idle control connection was closed after {took:?} ({how}), not ~{IDLE:?}"
        );
    }
    let (took, how) = idle_http.join().expect("idle http");
    assert!(
        took >= IDLE - Duration::from_millis(500) && took < IDLE + Duration::from_secs(3),
        "an idle HTTP connection was closed after {took:?} ({how}), not ~{IDLE:?}"
    );
}

/// /metrics and /healthz on hyper: only these paths, GET and HEAD, the OpenMetrics content type
/// the body is written in; /healthz 200 with the data plane attached, 503 (saying why) when it
/// is attached to nothing. And `vipd status` into a closed pipe exits quietly with success.
#[test]
fn metrics_and_healthz_over_http_and_status_into_a_closed_pipe() {
    if !privileged("metrics_and_healthz_over_http_and_status_into_a_closed_pipe") {
        return;
    }
    let ns = namespace();
    let pins = PinDir::new();
    let vipd = Vipd::start(&ns, &pins, &config("[\"e0\"]"));
    let limit = Duration::from_secs(5);

    let get = http(&ns, "GET", "/metrics", limit).expect("GET /metrics");
    assert_eq!(get.status, 200);
    assert_eq!(get.header("content-type"), Some(OPENMETRICS));
    let text = get.text();
    assert!(
        text.contains("vipd_table_publishes_total{vip=\"web\"}") && text.ends_with("# EOF\n"),
        "not the OpenMetrics text expected:\n{text}"
    );

    let head = http(&ns, "HEAD", "/metrics", limit).expect("HEAD /metrics");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some(OPENMETRICS));
    assert!(head.body.is_empty(), "HEAD got a body");
    let length: usize = head
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .expect("HEAD content-length");
    assert!(length > 1000, "HEAD content-length {length}");

    // Prometheus may add parameters; the path is what counts.
    let query = http(&ns, "GET", "/metrics?x=1", limit).expect("GET /metrics?x=1");
    assert_eq!(query.status, 200);

    for path in [
        "/",
        "/metricsx",
        "/metrics/",
        "/metrics/x",
        "/healthzz",
        "/favicon.ico",
    ] {
        let a = http(&ns, "GET", path, limit).expect("GET");
        assert_eq!(a.status, 404, "GET {path}: {}", a.text());
    }
    let post = http(&ns, "POST", "/metrics", limit).expect("POST");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));

    let health = http(&ns, "GET", "/healthz", limit).expect("GET /healthz");
    assert_eq!(health.status, 200, "{}", health.text());
    assert!(
        health.text().starts_with("ok: data plane attached to e0"),
        "{}",
        health.text()
    );
    let head = http(&ns, "HEAD", "/healthz", limit).expect("HEAD /healthz");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());

    // `vipd status | head -1` with the reader already gone: no panic (was exit 101).
    let (read_end, write_end) = std::io::pipe().expect("pipe");
    drop(read_end);
    let out = Command::new(&vipd.bin)
        .arg("--control")
        .arg(&vipd.control)
        .arg("status")
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .expect("run vipd status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(0) && stderr.is_empty(),
        "vipd status into a closed pipe: {:?}, stderr {stderr:?}",
        out.status
    );
    // And through a real shell pipe, the way people type it.
    let line = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {} --control {} status | head -1",
            vipd.bin.display(),
            vipd.control.display()
        ))
        .output()
        .expect("bash");
    assert!(
        line.status.success() && line.stderr.is_empty(),
        "vipd status | head -1: {:?} {}",
        line.status,
        String::from_utf8_lossy(&line.stderr)
    );
    drop(vipd);

    // No interface to attach to: vipd runs (probes, control socket) but forwards nothing.
    let ns2 = NetNs::new("vep");
    let pins2 = PinDir::new();
    let idle = Vipd::start(&ns2, &pins2, &config("[]"));
    let health = http(&ns2, "GET", "/healthz", limit).expect("GET /healthz");
    assert_eq!(health.status, 503, "{}", health.text());
    assert_eq!(
        health.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(
        health.text().contains("attached to no interface"),
        "{}",
        health.text()
    );
    drop(idle);
}

/// A vipd run by hand (no harness: it is expected to fail), with `NOTIFY_SOCKET` pointing at
/// a datagram socket of ours. Returns (exit code, stderr, whether READY=1 arrived).
fn run_vipd(ns: &NetNs, dir: &Path, config: &str, wait_ready: bool) -> (Option<i32>, String, bool) {
    let file = dir.join("vipd.toml");
    std::fs::write(&file, config).expect("config");
    let notify_path = dir.join(unique("notify-"));
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.name))
        .arg("--")
        .arg(vipd_bin())
        .args(["run", "--config"])
        .arg(&file)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vipd");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ready = false;
    let status = loop {
        let mut buf = [0u8; 256];
        if let Ok(n) = notify.recv(&mut buf) {
            ready |= String::from_utf8_lossy(&buf[..n]).contains("READY=1");
        }
        if wait_ready && ready {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
    };
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    (status.code(), stderr, ready)
}

/// The issue's report: with its metrics port taken, vipd logged the error after READY and ran
/// on without metrics. Now the bind comes first and fails the start, naming the address, with
/// no READY and the data plane untouched; a control socket another process answers on too.
#[test]
fn taken_metrics_port_or_live_control_socket_fail_the_start_before_ready() {
    if !privileged("taken_metrics_port_or_live_control_socket_fail_the_start_before_ready") {
        return;
    }
    let ns = namespace();
    let pins = PinDir::new();
    let dir = std::env::temp_dir().join(unique("vipd-bind-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let control = dir.join("vipd.sock");
    let text = config("[\"e0\"]")
        .replace("@PIN_DIR@", pins.path.to_str().expect("utf-8"))
        .replace("@CONTROL@", control.to_str().expect("utf-8"))
        .replace(
            "[node]\n",
            &format!("[node]\nstate_dir = \"{}\"\n", dir.display()),
        );

    let taken: TcpListener = ns.run(|| TcpListener::bind(METRICS).expect("take the port"));
    let (code, stderr, ready) = run_vipd(&ns, &dir, &text, false);
    eprintln!("metrics port taken: exit {code:?}, stderr:\n{stderr}");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("error: metrics listener 127.0.0.1:9478")
            && stderr.contains("in use")
            && stderr.lines().count() == 1,
        "expected one line naming the address: {stderr}"
    );
    assert!(!stderr.contains("backtrace"), "{stderr}");
    assert!(!ready, "READY=1 was sent by a vipd that failed to start");
    assert!(
        !pins.path.exists(),
        "the data plane was touched before the bind"
    );
    drop(taken);

    let _ = std::fs::remove_file(&control);
    let live = UnixListener::bind(&control).expect("take the control socket");
    let (code, stderr, ready) = run_vipd(&ns, &dir, &text, false);
    eprintln!("control socket live: exit {code:?}, stderr:\n{stderr}");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("control socket {}", control.display()))
            && stderr.contains("another process"),
        "expected the control socket named: {stderr}"
    );
    assert!(!ready && !pins.path.exists());
    drop(live);

    // Both free (the stale socket file is replaced): READY=1 comes.
    let (_, stderr, ready) = run_vipd(&ns, &dir, &text, true);
    assert!(ready, "no READY=1 with both endpoints free:\n{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Errors on one line (`error: what: cause`), each cause once, no backtrace even with
/// RUST_BACKTRACE=1, exit code 1; usage errors stay clap's exit code 2. Needs no root.
#[test]
fn cli_errors_are_one_line_with_exit_code_1() {
    let missing = PathBuf::from(format!("/nonexistent/{}/vipd.sock", unique("x")));
    let out = Command::new(vipd_bin())
        .arg("--control")
        .arg(&missing)
        .arg("status")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run vipd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: cannot reach vipd at {}",
            missing.display()
        )),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "cause repeated: {stderr}"
    );
    for internal in ["Caused by", "backtrace", "panicked", "Error {"] {
        assert!(!stderr.contains(internal), "{internal:?} in {stderr}");
    }

    let out = Command::new(vipd_bin())
        .args(["import-haproxy", "/nonexistent/haproxy.cfg"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run vipd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "error: read /nonexistent/haproxy.cfg: No such file or directory (os error 2)"
    );

    let out = Command::new(vipd_bin())
        .args(["status", "--no-such-flag"])
        .output()
        .expect("run vipd");
    assert_eq!(out.status.code(), Some(2));
}

/// `vipd run --control PATH` serves PATH, not the file's `[control] socket` (it was ignored).
#[test]
fn run_control_overrides_the_config_socket() {
    if !privileged("run_control_overrides_the_config_socket") {
        return;
    }
    let ns = NetNs::new("vep");
    let pins = PinDir::new();
    let dir = std::env::temp_dir().join(unique("vipd-control-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let (in_file, given) = (dir.join("file.sock"), dir.join("given.sock"));
    let text = config("[]")
        .replace(
            "[node]\n",
            &format!("[node]\nstate_dir = \"{}\"\n", dir.display()),
        )
        .replace("@PIN_DIR@", pins.path.to_str().expect("utf-8"))
        .replace("@CONTROL@", in_file.to_str().expect("utf-8"))
        .replace(
            &format!("listen = \"{METRICS}\""),
            "listen = \"127.0.0.1:9479\"",
        );
    let file = dir.join("vipd.toml");
    std::fs::write(&file, text).expect("config");
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.name))
        .arg("--")
        .arg(vipd_bin())
        .arg("--control")
        .arg(&given)
        .args(["run", "--config"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn vipd");
    let up = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        control_status(&given, Duration::from_secs(1)).is_some()
    });
    let file_socket_exists = in_file.exists();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        up,
        "vipd run --control {}: no status there",
        given.display()
    );
    assert!(!file_socket_exists, "the file's socket was bound too");
}

/// A reload reads and checks the file off the event loop: `status` answers while a big file
/// is still being parsed (it used to wait for the whole parse: 748 ms with 92k VIPs).
#[test]
fn status_answers_while_a_big_reload_is_parsed() {
    if !privileged("status_answers_while_a_big_reload_is_parsed") {
        return;
    }
    let ns = NetNs::new("vep");
    let pins = PinDir::new();
    let vipd = Vipd::start(&ns, &pins, &config("[]"));
    // 40,000 VIPs: seconds of parsing and checking, then refused (beyond the maps' limits).
    let mut big = std::fs::read_to_string(&vipd.config).expect("config");
    for i in 0..40_000u32 {
        use std::fmt::Write as _;
        let _ = write!(
            big,
            "\n[[vip]]\nname = \"v{i}\"\naddress = \"10.{}.{}.{}\"\nport = 80\n\
             table_size = 251\n[[vip.backend]]\nname = \"b\"\naddress = \"192.0.2.7\"\n",
            100 + i / 65_536,
            (i / 256) % 256,
            i % 256
        );
    }
    std::fs::write(&vipd.config, big).expect("write the big config");
    let (bin, control) = (vipd.bin.clone(), vipd.control.clone());
    let reload = std::thread::spawn(move || {
        let out = Command::new(&bin)
            .arg("--control")
            .arg(&control)
            .arg("reload")
            .output()
            .expect("vipd reload");
        (
            Instant::now(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    });
    // Status answers that came back before the reload's own answer.
    let mut answered = Vec::new();
    while !reload.is_finished() {
        if control_status(&vipd.control, Duration::from_secs(30)).is_some() {
            answered.push(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (reload_done, reload_err) = reload.join().expect("reload thread");
    assert!(
        reload_err.contains("limit") || reload_err.contains("refused"),
        "the big file is refused: {reload_err}"
    );
    let before = answered.iter().filter(|t| **t < reload_done).count();
    assert!(
        before >= 3,
        "status answered {before} times while the reload was parsed (of {})",
        answered.len()
    );
    drop(vipd);
}
