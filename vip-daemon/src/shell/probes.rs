//! Health probes (TCP connect, HTTP(S) status, external command) and the per-backend probe
//! loop. Each probe is bounded by its own timeout and reports a short human-readable detail,
//! which ends up in logs and `vipd status`, so an operator sees *why* a backend is down.
//! Verdicts (rise/fall) are not made here: `core::health` turns the results into state.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    os::unix::process::ExitStatusExt,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use rand::{rngs::SmallRng, SeedableRng};
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    process::{ChildStderr, Command},
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::timeout_at,
};

use crate::config::CheckKind;
use crate::core::health::{first_probe_at, next_probe_at};

#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSpec {
    pub kind: CheckKind,
    pub target: SocketAddr,
    pub timeout: Duration,
}

pub use crate::core::backends::ProbeResult;

/// CA bundle used when `tls_verify` is set; no bundled roots, so the OS's trust store rules.
pub const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Status lines longer than this are not HTTP; stop reading instead of buffering a body.
const MAX_STATUS_LINE: usize = 1024;
/// Stderr kept for the detail: only its first line is shown.
const MAX_STDERR: usize = 512;
/// Time allowed to reap a killed child, and for stderr to arrive after the exit status.
const GRACE: Duration = Duration::from_millis(50);

/// Runs one probe, never panics. Failures come back as `ok: false` with the reason in
/// `detail`. It lasts at most `spec.timeout` (+ a few ms to kill and reap an exec child),
/// unless vipd itself was not running meanwhile: see [`within`], which may add up to one more
/// `spec.timeout`.
pub async fn probe(spec: &ProbeSpec) -> ProbeResult {
    let start = Instant::now();
    // Measured from when the probe really starts (not from when its timer was due), so a
    // prober woken late does not lose the lateness from the probe's time.
    let deadline = tokio::time::Instant::now() + spec.timeout;
    let outcome = match &spec.kind {
        CheckKind::Exec { command } => exec(command, spec.target, deadline, spec.timeout).await,
        kind => within(deadline, spec.timeout, net(kind, spec.target))
            .await
            .unwrap_or(Err(Timeout)),
    };
    let (ok, detail) = match outcome {
        Ok(detail) => (true, detail),
        Err(Fail(detail)) => (false, detail),
        Err(Timeout) => (
            false,
            format!("timeout after {}", fmt_duration(spec.timeout)),
        ),
    };
    let latency = start.elapsed();
    ProbeResult {
        ok,
        latency,
        detail,
    }
}

/// A deadline timer firing later than this means vipd was not running (CPU starvation, a
/// stalled runtime), not the ordinary granularity of tokio's timer wheel (1 ms).
const LATE_TIMER: Duration = Duration::from_millis(5);

/// Awaits `fut` until `deadline`; `None` if it is not done by then. If the deadline's timer
/// fired more than [`LATE_TIMER`] late, this task was not running for at least that long,
/// and probably not in the window before either: an answer that arrived meanwhile is seen
/// when the task runs (the future is polled before the deadline is checked), but a probe
/// with more than one round trip (HTTP: connect, then request) could not send its next
/// step while starved, so the backend had less than `timeout` to answer. The probe then
/// gets the lateness back, once and at most `limit` more, so a starved vipd does not take a
/// healthy backend down (measured: 100 ms checks under CPU load marked one down for 260 ms),
/// while a backend that really does not answer still fails within `2 x limit`.
async fn within<F: Future>(
    deadline: tokio::time::Instant,
    limit: Duration,
    fut: F,
) -> Option<F::Output> {
    tokio::pin!(fut);
    if let Ok(out) = timeout_at(deadline, &mut fut).await {
        return Some(out);
    }
    let late = tokio::time::Instant::now().saturating_duration_since(deadline);
    if late <= LATE_TIMER {
        return None;
    }
    tokio::time::timeout(late.min(limit), &mut fut).await.ok()
}

/// Why a probe failed: `Timeout` is formatted in one place from the spec's timeout.
enum Failure {
    Fail(String),
    Timeout,
}
use Failure::{Fail, Timeout};

type Outcome = Result<String, Failure>;

fn fmt_duration(d: Duration) -> String {
    match (d.subsec_nanos(), d.subsec_nanos() % 1_000_000) {
        (0, _) => format!("{}s", d.as_secs()),
        (_, 0) => format!("{}ms", d.as_millis()),
        _ => format!("{d:?}"),
    }
}

async fn net(kind: &CheckKind, target: SocketAddr) -> Outcome {
    let stream = TcpStream::connect(target)
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::ConnectionRefused => Fail("connect refused".into()),
            _ => Fail(format!("connect failed: {e}")),
        })?;
    let CheckKind::Http {
        path,
        expect,
        host,
        tls,
        tls_verify,
    } = kind
    else {
        return Ok("connected".into());
    };
    if [path.as_str(), host.as_deref().unwrap_or("")]
        .iter()
        .any(|s| s.contains(|c: char| c.is_ascii_control() || c == ' '))
    {
        return Err(Fail("invalid HTTP path or host".into()));
    }
    let host_header = host.clone().unwrap_or_else(|| target.to_string());
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: vipd-health\r\nConnection: close\r\n\r\n"
    );
    let status = if *tls {
        let config = tls_config(*tls_verify).map_err(Fail)?;
        let name = match host {
            Some(h) => ServerName::try_from(h.clone())
                .map_err(|_| Fail(format!("invalid TLS server name {h:?}")))?,
            None => ServerName::IpAddress(target.ip().into()),
        };
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, stream)
            .await
            .map_err(|e| Fail(format!("TLS handshake failed: {e}")))?;
        status_of(stream, &request).await?
    } else {
        status_of(stream, &request).await?
    };
    if status == *expect {
        Ok(format!("HTTP {status}"))
    } else {
        Err(Fail(format!("HTTP {status} (want {expect})")))
    }
}

/// Sends the request and parses the status code of the response's first line; the body is
/// never read (the connection is dropped), so a large health page costs nothing.
async fn status_of<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &str,
) -> Result<u16, Failure> {
    let io_err = |e: io::Error| Fail(format!("HTTP I/O error: {e}"));
    s.write_all(request.as_bytes()).await.map_err(io_err)?;
    s.flush().await.map_err(io_err)?;
    let mut buf = Vec::with_capacity(256);
    let line_end = loop {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            break i;
        }
        if buf.len() >= MAX_STATUS_LINE {
            return Err(Fail("HTTP status line too long".into()));
        }
        let mut chunk = [0u8; 256];
        match s.read(&mut chunk).await.map_err(io_err)? {
            0 if buf.is_empty() => return Err(Fail("connection closed before response".into())),
            0 => break buf.len(),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let line = String::from_utf8_lossy(&buf[..line_end]);
    let line = line.trim_end();
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next().map(str::parse::<u16>)) {
        (Some(v), Some(Ok(code))) if v.starts_with("HTTP/") && (100..1000).contains(&code) => {
            Ok(code)
        }
        _ => Err(Fail(format!("malformed status line {:?}", short(line, 60)))),
    }
}

fn short(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The shared client configs: building the verified one parses the whole CA bundle, which
/// is too much work to repeat every probe. Only success is cached for it, so a CA file
/// installed after startup is picked up; a CA file *changed* after startup needs a restart.
fn tls_config(verify: bool) -> Result<Arc<ClientConfig>, String> {
    static VERIFIED: Mutex<Option<Arc<ClientConfig>>> = Mutex::new(None);
    static INSECURE: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    // Explicit provider: never depends on which process-wide default got installed.
    let provider = || Arc::new(rustls::crypto::ring::default_provider());
    let builder = |p: Arc<CryptoProvider>| {
        ClientConfig::builder_with_provider(p)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))
    };
    if !verify {
        return INSECURE
            .get_or_init(|| {
                let p = provider();
                let config = builder(p.clone())?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerify(p)))
                    .with_no_client_auth();
                Ok(Arc::new(config))
            })
            .clone();
    }
    let mut cached = VERIFIED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(config) = &*cached {
        return Ok(config.clone());
    }
    let certs = CertificateDer::pem_file_iter(SYSTEM_CA_FILE)
        .map_err(|e| format!("TLS verify: cannot read CA file {SYSTEM_CA_FILE}: {e}"))?
        .filter_map(Result::ok);
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "TLS verify: no CA certificates in {SYSTEM_CA_FILE}"
        ));
    }
    let config = builder(provider())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(cached.insert(Arc::new(config)).clone())
}

/// `tls_verify = false`: accepts any certificate (self-signed backends), but still checks
/// the handshake signatures so the session itself is sound.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        msg: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(msg, cert, dss, algs)
    }
    fn verify_tls13_signature(
        &self,
        msg: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(msg, cert, dss, algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Runs the command with the target in its environment. On timeout the child is killed
/// and reaped before returning, so probes never pile up processes. Only the direct child is
/// killed: a shell script should `exec` its last command (or not fork long-lived helpers).
async fn exec(
    command: &[String],
    target: SocketAddr,
    deadline: tokio::time::Instant,
    limit: Duration,
) -> Outcome {
    let Some((program, args)) = command.split_first() else {
        return Err(Fail("empty command".into()));
    };
    let mut child = Command::new(program)
        .args(args)
        .env("VIPD_BACKEND_ADDRESS", target.ip().to_string())
        .env("VIPD_BACKEND_PORT", target.port().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Fail(format!("spawn {program:?} failed: {e}")))?;
    let (first_tx, first_rx) = oneshot::channel();
    // Held to the end of the function: dropping it stops the drain task.
    let _reader = Reader(child.stderr.take().map(|err| drain_stderr(err, first_tx)));
    let status = match within(deadline, limit, child.wait()).await {
        Some(Ok(status)) => status,
        Some(Err(e)) => return Err(Fail(format!("wait failed: {e}"))),
        None => {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(GRACE, child.wait()).await;
            return Err(Timeout);
        }
    };
    let first_line = if status.success() {
        String::new()
    } else {
        // A child that exited may have left a grandchild holding stderr open: wait briefly.
        let first = tokio::time::timeout(GRACE, first_rx).await;
        first.ok().and_then(Result::ok).unwrap_or_default()
    };
    match describe(status) {
        d if status.success() => Ok(d),
        d if first_line.is_empty() => Err(Fail(d)),
        d => Err(Fail(format!("{d}: {first_line}"))),
    }
}

/// Reads stderr to the end so a chatty command never blocks on a full pipe, sending its
/// first line (trimmed, at most 200 chars) on `first` as soon as it is known.
fn drain_stderr(mut err: ChildStderr, first: oneshot::Sender<String>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (mut kept, mut chunk, mut first) = (Vec::new(), [0u8; 512], Some(first));
        loop {
            let n = err.read(&mut chunk).await.unwrap_or(0);
            kept.extend_from_slice(&chunk[..n.min(MAX_STDERR.saturating_sub(kept.len()))]);
            if n == 0 || kept.contains(&b'\n') || kept.len() >= MAX_STDERR {
                if let Some(tx) = first.take() {
                    let text = String::from_utf8_lossy(&kept);
                    let _ = tx.send(short(text.lines().next().unwrap_or("").trim(), 200));
                }
            }
            if n == 0 {
                return;
            }
        }
    })
}

/// Aborts the stderr drain when the probe is done or abandoned (dropped on timeout).
struct Reader(Option<JoinHandle<()>>);

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => format!("{status}"),
    }
}

/// One probe result, tagged with the caller's key for its backend.
#[derive(Clone, Debug)]
pub struct ProbeEvent<K> {
    pub key: K,
    pub result: ProbeResult,
    /// Monotonic completion time (`std::time::Instant::now()` when the probe ended),
    /// the `now` to feed into `HealthState::on_result`.
    pub at: Instant,
    /// When the next probe of this backend starts: the verdict it may bring can be
    /// prepared for (`core::precompute`).
    pub next_at: Instant,
}

/// Intervals below this are treated as this, so a zero interval cannot spin a core.
pub const MIN_INTERVAL: Duration = Duration::from_millis(1);

/// Spawns a task that probes `spec` forever, one task per backend so a slow backend never
/// delays another's verdict. The first probe is spread over one interval; each next probe
/// starts `interval` ± `jitter` after the previous one *ended* (like HAProxy's `inter`), so
/// a slow backend is never probed concurrently with itself. Randomness comes from `seed`
/// (give each backend its own). Every result is sent on `tx`; the task ends when the handle
/// is aborted or `tx`'s receiver is closed (a pending probe is abandoned then, and an exec
/// child killed). Merely dropping a tokio `JoinHandle` detaches the task: call `abort()`.
pub fn spawn_prober<K: Clone + Send + 'static>(
    key: K,
    spec: ProbeSpec,
    interval: Duration,
    jitter: f64,
    seed: u64,
    tx: mpsc::Sender<ProbeEvent<K>>,
) -> JoinHandle<()> {
    let interval = interval.max(MIN_INTERVAL);
    tokio::spawn(async move {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut next = first_probe_at(Instant::now(), interval, &mut rng);
        loop {
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(next));
            let result = tokio::select! {
                _ = tx.closed() => break,
                _ = sleep => tokio::select! {
                    _ = tx.closed() => break,
                    r = probe(&spec) => r,
                },
            };
            let at = Instant::now();
            next = next_probe_at(at, interval, jitter, &mut rng);
            let key = key.clone();
            let event = ProbeEvent {
                key,
                result,
                at,
                next_at: next,
            };
            if tx.send(event).await.is_err() {
                break;
            }
        }
        tracing::debug!(backend = %spec.target, "prober stopped: receiver closed");
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use tokio::net::TcpListener;

    async fn run(kind: CheckKind, target: SocketAddr, timeout_ms: u64) -> ProbeResult {
        let timeout = Duration::from_millis(timeout_ms);
        probe(&ProbeSpec {
            kind,
            target,
            timeout,
        })
        .await
    }

    fn https(host: Option<&str>, tls: bool, tls_verify: bool, path: &str) -> CheckKind {
        let (path, host) = (path.into(), host.map(Into::into));
        CheckKind::Http {
            path,
            expect: 200,
            host,
            tls,
            tls_verify,
        }
    }

    fn get(path: &str) -> CheckKind {
        https(None, false, false, path)
    }

    fn exec(args: &[&str]) -> CheckKind {
        CheckKind::Exec {
            command: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    async fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    }

    /// Reads one request head, forwards it on `seen` and answers `status` on `/health`,
    /// 404 elsewhere, with a large body the probe must not wait for.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        mut s: S,
        status: u16,
        seen: mpsc::UnboundedSender<String>,
    ) {
        let (mut head, mut buf) = (Vec::new(), [0u8; 1024]);
        while !head.ends_with(b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let code = if head.starts_with("GET /health ") {
            status
        } else {
            404
        };
        let body = "x".repeat(1 << 20);
        let resp = format!(
            "HTTP/1.1 {code} Whatever\r\nContent-Length: {}\r\n\r\n{body}",
            1 << 20
        );
        let _ = seen.send(head);
        let _ = s.write_all(resp.as_bytes()).await;
    }

    async fn http_server(status: u16) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
        let (l, addr) = listener().await;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve(s, status, tx.clone()));
            }
        });
        (addr, rx)
    }

    /// Accepts connections and keeps them open without ever answering.
    async fn silent_server() -> SocketAddr {
        let (l, addr) = listener().await;
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        addr
    }

    #[tokio::test]
    async fn tcp_ok_and_refused() {
        let (l, addr) = listener().await;
        let r = run(CheckKind::Tcp, addr, 1000).await;
        assert_eq!((r.ok, r.detail.as_str()), (true, "connected"));
        drop(l);
        let r = run(CheckKind::Tcp, addr, 1000).await;
        assert_eq!((r.ok, r.detail.as_str()), (false, "connect refused"));
    }

    #[tokio::test]
    async fn http_status_decides() {
        let (addr, mut seen) = http_server(200).await;
        let r = run(get("/health"), addr, 1000).await;
        assert_eq!((r.ok, r.detail.as_str()), (true, "HTTP 200"));
        let head = "GET /health HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: vipd-health\r\n";
        let want = format!(
            "{}Connection: close\r\n\r\n",
            head.replace("{addr}", &addr.to_string())
        );
        assert_eq!(seen.recv().await.unwrap(), want);
        // Wrong path: the server's own status is reported.
        let r = run(https(Some("db.example"), false, false, "/nope"), addr, 1000).await;
        assert_eq!((r.ok, r.detail.as_str()), (false, "HTTP 404 (want 200)"));
        assert!(seen
            .recv()
            .await
            .unwrap()
            .contains("\r\nHost: db.example\r\n"));

        let (addr, _seen) = http_server(503).await;
        let r = run(get("/health"), addr, 1000).await;
        assert_eq!((r.ok, r.detail.as_str()), (false, "HTTP 503 (want 200)"));
    }

    #[tokio::test]
    async fn http_garbage_and_injection_fail() {
        let (l, addr) = listener().await;
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await;
            }
        });
        let r = run(get("/health"), addr, 1000).await;
        assert!(
            !r.ok && r.detail.starts_with("malformed status line"),
            "{r:?}"
        );
        let r = run(get("/a\r\nX: y"), addr, 1000).await;
        assert_eq!(
            (r.ok, r.detail.as_str()),
            (false, "invalid HTTP path or host")
        );
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let (addr, t) = (silent_server().await, Instant::now());
        let r = run(get("/health"), addr, 200).await;
        assert_eq!((r.ok, r.detail.as_str()), (false, "timeout after 200ms"));
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        assert!(r.latency >= Duration::from_millis(200));
    }

    /// A backend that answers 30 ms after it gets the request, on its own thread so it is
    /// never starved with the runtime under test.
    fn slow_answering_server() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            while let Ok((mut s, _)) = l.accept() {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                std::thread::sleep(Duration::from_millis(30));
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            }
        });
        addr
    }

    /// The runtime (current-thread here) is blocked for 150 ms right after the probe starts
    /// connecting, past its 100 ms deadline: the request only goes out when the runtime runs
    /// again. The backend answers 30 ms later, and that is within the time the probe had.
    #[tokio::test]
    async fn a_probe_starved_past_its_deadline_gets_the_lost_time_back() {
        let addr = slow_answering_server();
        let blocker = tokio::spawn(async { std::thread::sleep(Duration::from_millis(150)) });
        let t = Instant::now();
        let r = run(get("/health"), addr, 100).await;
        assert_eq!((r.ok, r.detail.as_str()), (true, "HTTP 200"), "{r:?}");
        assert!(
            t.elapsed() >= Duration::from_millis(180),
            "{:?}",
            t.elapsed()
        );
        blocker.await.unwrap();
        // Not starved, a backend that does not answer still times out on time.
        let (addr, t) = (silent_server().await, Instant::now());
        let r = run(get("/health"), addr, 100).await;
        assert_eq!((r.ok, r.detail.as_str()), (false, "timeout after 100ms"));
        assert!(
            t.elapsed() < Duration::from_millis(190),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn exec_exit_status_decides() {
        let target: SocketAddr = "127.0.0.1:3306".parse().unwrap();
        let r = run(exec(&["true"]), target, 2000).await;
        assert_eq!((r.ok, r.detail.as_str()), (true, "exit status 0"));
        let r = run(exec(&["false"]), target, 2000).await;
        assert_eq!((r.ok, r.detail.as_str()), (false, "exit status 1"));
        let script = "echo 'wsrep not synced' >&2; echo second >&2; exit 3";
        let r = run(exec(&["sh", "-c", script]), target, 2000).await;
        assert_eq!(r.detail, "exit status 3: wsrep not synced");
        // The target is in the environment and stdin is empty.
        let check = r#"[ "$VIPD_BACKEND_ADDRESS:$VIPD_BACKEND_PORT" = 127.0.0.1:3306 ] || exit 7
            read x && exit 8; exit 0"#;
        let r = run(exec(&["sh", "-c", check]), target, 2000).await;
        assert!(r.ok, "{r:?}");
        let r = run(exec(&["sh", "-c", "kill -9 $$"]), target, 2000).await;
        assert_eq!(r.detail, "killed by signal 9");
        let r = run(exec(&["/nonexistent/check"]), target, 2000).await;
        assert!(!r.ok && r.detail.starts_with("spawn \"/nonexistent/check\" failed"));
        assert_eq!(run(exec(&[]), target, 2000).await.detail, "empty command");
    }

    #[tokio::test]
    async fn exec_timeout_kills_the_child() {
        let dir = std::env::temp_dir().join(format!("vipd-probe-kill-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        let script = format!("echo $$ > {}; exec sleep 5", pidfile.display());
        let t = Instant::now();
        let r = run(
            exec(&["sh", "-c", &script]),
            "127.0.0.1:1".parse().unwrap(),
            200,
        )
        .await;
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        assert_eq!((r.ok, r.detail.as_str()), (false, "timeout after 200ms"));
        // Killed and reaped: not even a zombie is left.
        let proc = format!(
            "/proc/{}",
            std::fs::read_to_string(&pidfile).unwrap().trim()
        );
        assert!(!std::path::Path::new(&proc).exists(), "{proc} still exists");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Self-signed end-entity cert for 127.0.0.1 from the `openssl` CLI; `None` (test
    /// skipped) when that is not installed, as no cert generator crate is a dependency.
    fn self_signed() -> Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let dir = std::env::temp_dir().join(format!("vipd-probe-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args([std::ffi::OsStr::new("-keyout"), key.as_os_str()])
            .args([std::ffi::OsStr::new("-out"), cert.as_os_str()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let certs = CertificateDer::pem_file_iter(&cert)
            .ok()?
            .collect::<Result<_, _>>();
        let key = PrivateKeyDer::from_pem_file(&key);
        let _ = std::fs::remove_dir_all(dir);
        status.ok()?.success().then_some((certs.ok()?, key.ok()?))
    }

    #[tokio::test]
    async fn https_with_and_without_verification() {
        let Some((certs, key)) = self_signed() else {
            eprintln!("openssl not available: skipping https test");
            return;
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let ((l, addr), (tx, mut seen)) = (listener().await, mpsc::unbounded_channel());
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                if let Ok(s) = acceptor.accept(s).await {
                    tokio::spawn(serve(s, 200, tx.clone()));
                }
            }
        });
        let r = run(https(None, true, false, "/health"), addr, 2000).await;
        assert!(r.ok, "{r:?}");
        assert!(seen
            .recv()
            .await
            .unwrap()
            .contains(&format!("Host: {addr}\r\n")));
        let r = run(https(Some("localhost"), true, false, "/health"), addr, 2000).await;
        assert!(r.ok, "{r:?}");
        assert!(seen.recv().await.unwrap().contains("Host: localhost\r\n"));
        // Self-signed is not in the system trust store.
        let r = run(https(None, true, true, "/health"), addr, 2000).await;
        let unknown = r.detail.starts_with("TLS handshake failed") && r.detail.contains("Unknown");
        assert!(
            !r.ok && (unknown || r.detail.starts_with("TLS verify: ")),
            "{r:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slow_backend_does_not_delay_fast_one() {
        let ms = Duration::from_millis;
        let (slow_addr, (fast_l, fast_addr)) = (silent_server().await, listener().await);
        tokio::spawn(async move { while fast_l.accept().await.is_ok() {} });
        let slow = ProbeSpec {
            kind: get("/health"),
            target: slow_addr,
            timeout: ms(300),
        };
        let fast = ProbeSpec {
            kind: CheckKind::Tcp,
            target: fast_addr,
            timeout: ms(300),
        };
        let (tx, mut rx) = mpsc::channel(64);
        let a = spawn_prober("slow", slow, ms(50), 0.1, 1, tx.clone());
        let b = spawn_prober("fast", fast, ms(50), 0.1, 2, tx);
        let end = tokio::time::Instant::now() + ms(1000);
        let (mut n_slow, mut n_fast) = (0, 0);
        while let Ok(Some(ev)) = timeout_at(end, rx.recv()).await {
            let n = if ev.key == "slow" {
                &mut n_slow
            } else {
                &mut n_fast
            };
            assert_eq!(ev.result.ok, ev.key == "fast", "{ev:?}");
            *n += 1;
        }
        assert!(n_fast >= 10, "fast: {n_fast}");
        assert!((1..=4).contains(&n_slow), "slow: {n_slow}");
        // Aborting a handle ends that task; closing the receiver ends the other.
        a.abort();
        assert!(a.await.unwrap_err().is_cancelled());
        drop(rx);
        tokio::time::timeout(ms(1000), b).await.unwrap().unwrap();
    }
}
