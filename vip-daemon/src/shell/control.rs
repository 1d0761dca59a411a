//! The control socket: newline-delimited JSON requests and responses over a Unix socket.
//! vipd's event loop answers; `vipd status|trace|backend|reload` are the clients.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::{
    io::AsyncWriteExt as _,
    sync::{mpsc, oneshot},
};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminAction {
    /// Out of the table for new flows; still probed; established flows stay until the drain
    /// timeout.
    Drain,
    /// Out of the table and not probed.
    Disable,
    /// Back to the configured weight and probing.
    Enable,
    /// Set a runtime weight (0..=65535).
    Weight,
    /// Primary/backup: make this (eligible) backend the writer; it keeps the slot while
    /// eligible.
    Promote,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Trace {
        src: std::net::SocketAddr,
        vip: std::net::SocketAddr,
        proto: String,
    },
    Backend {
        action: AdminAction,
        vip: String,
        backend: String,
        weight: Option<u32>,
        /// `drain --timeout`: how long the backend keeps its established flows (ms); absent
        /// from older clients.
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    Reload,
    /// Release every VIP gracefully and leave the cluster (before a planned stop).
    Leave,
    /// Cluster mode: the owner hands a VIP address to another node.
    VipMove {
        vip: String,
        to: String,
    },
    /// `vipd debug packets`: the XDP program logs the fate of every packet for a VIP (or only
    /// those to `vip` and/or from `src`) for the next few seconds; the CLI renews it every
    /// second while it prints, and turns it off (`on: false`) when it stops.
    DebugPackets {
        on: bool,
        vip: Option<std::net::IpAddr>,
        src: Option<std::net::IpAddr>,
    },
    /// `vipd node standby|unstandby [NODE]`: this node out of service (its VIPs handed over,
    /// nothing placed on it) or back; kept across restarts. NODE, when given, must be this
    /// node (the command acts where it runs).
    Node {
        standby: bool,
        node: Option<String>,
    },
}

impl Request {
    /// What the read-only status socket answers: reads that change nothing.
    pub fn is_read_only(&self) -> bool {
        matches!(self, Request::Status | Request::Trace { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    Status(Box<crate::shell::status::Status>),
    Trace(crate::shell::status::TraceReport),
    Ok {
        message: String,
    },
    Error {
        message: String,
    },
    /// `DebugPackets`: the id of the attached XDP program, whose `AYA_LOGS` ring buffer
    /// carries the records.
    Debug {
        program_id: u32,
    },
}

/// A request from a client with the way back.
pub type Call = (Request, oneshot::Sender<Response>);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    // The io::Error is part of each message and deliberately not a `source`: printed as a
    // chain (`{:#}`), it would be said twice.
    #[error("cannot reach vipd at {}: {error} ({hint})", path.display())]
    Connect {
        path: PathBuf,
        error: std::io::Error,
        hint: &'static str,
    },
    #[error("control socket {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("bad answer from vipd: {0}")]
    Decode(serde_json::Error),
}

/// Longest request line the control socket reads; a longer one is answered with an error and
/// the connection closed, so a client cannot make vipd buffer without limit.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// A connection whose next request line has not fully arrived this long after it was opened
/// or after the previous answer is closed (the CLI sends its line at once).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// An answer the client does not read within this long closes the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;

/// Binds the control socket (mode 0600). A live socket at `path` (another vipd answering
/// there) is an error, not something to take over; a stale one is replaced.
pub fn bind(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use anyhow::Context as _;
    use std::os::unix::fs::FileTypeExt as _;
    let at = || format!("control socket {}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("create {}", dir.display()))
            .with_context(at)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                anyhow::bail!(
                    "{}: another process (another vipd?) is listening there; stop it or set \
                     [control] socket to another path",
                    at()
                );
            }
            std::fs::remove_file(path)
                .context("remove the stale socket")
                .with_context(at)?;
        }
        Ok(_) => anyhow::bail!("{}: exists and is not a socket; not replacing it", at()),
        Err(_) => {}
    }
    let listener = tokio::net::UnixListener::bind(path).with_context(at)?;
    // Root only: the socket changes what the data plane does.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .context("chmod 0600")
        .with_context(at)?;
    Ok(listener)
}

/// What an accept loop does about failed accepts: a full file table (EMFILE, ENFILE), memory
/// pressure or the like passes, so wait a little and accept again, and say so once per burst
/// of failures, not once per try. The loop never ends on an accept error.
pub struct AcceptErrors {
    what: &'static str,
    burst: Option<Burst>,
}

struct Burst {
    started: Instant,
    last: Instant,
    failures: u64,
}

/// Pause after a failed accept: short enough that an endpoint answers again within a fraction
/// of a second once descriptors are free, long enough not to spin on a full table.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// A burst of accept failures ends after this long without one (a table that is just full
/// alternates: a few accepts, a failure, ...; that is one burst, logged once).
pub const BURST_QUIET: Duration = Duration::from_secs(1);

impl AcceptErrors {
    pub fn new(what: &'static str) -> Self {
        Self { what, burst: None }
    }

    /// A connection was accepted: ends the burst of failures once they have stopped.
    pub fn accepted(&mut self) {
        if let Some(b) = self.burst.take_if(|b| b.last.elapsed() >= BURST_QUIET) {
            tracing::info!(
                endpoint = self.what,
                failures = b.failures,
                lasted_ms = (b.last - b.started).as_millis() as u64,
                "accepting connections again"
            );
        }
    }

    /// An accept failed: logs the first failure of a burst, then waits before the next try.
    pub async fn failed(&mut self, e: &std::io::Error) {
        use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
        // The peer gave up before we took its connection: nothing is wrong here.
        if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted) {
            return;
        }
        let now = Instant::now();
        match &mut self.burst {
            Some(b) => {
                b.failures += 1;
                b.last = now;
            }
            None => {
                tracing::warn!(
                    endpoint = self.what,
                    error = %e,
                    "accept failed; retrying every {} ms until it works (logged once per burst)",
                    ACCEPT_BACKOFF.as_millis()
                );
                self.burst = Some(Burst {
                    started: now,
                    last: now,
                    failures: 1,
                });
            }
        }
        tokio::time::sleep(ACCEPT_BACKOFF).await;
    }
}

/// Binds the read-only status socket (`[control] status_socket`): mode 0660, owned by
/// `group` when given (e.g. a monitoring group), else root's group.
pub fn bind_status(path: &Path, group: Option<&str>) -> anyhow::Result<tokio::net::UnixListener> {
    use anyhow::Context as _;
    let listener = bind(path)?;
    let at = || format!("status socket {}", path.display());
    if let Some(group) = group {
        let gid = group_id(group).with_context(at)?;
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("chgrp {group}"))
            .with_context(at)?;
    }
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o660))
        .context("chmod 0660")
        .with_context(at)?;
    Ok(listener)
}

/// The id of a group named `name` (or given as a number).
fn group_id(name: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = name.parse() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group")?;
    let gid = groups.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(name)).then(|| f.nth(1)?.parse().ok())?
    });
    gid.ok_or_else(|| anyhow::anyhow!("no group named {name:?} in /etc/group"))
}

/// Serves the control socket bound by [`bind`], handing each request to the event loop
/// through `calls`; `read_only` answers only [`Request::is_read_only`] requests. Runs until
/// the process ends: accept errors are waited out.
pub async fn serve(listener: tokio::net::UnixListener, calls: mpsc::Sender<Call>, read_only: bool) {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut errors = AcceptErrors::new("control socket");
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                errors.accepted();
                let calls = calls.clone();
                tokio::spawn(async move {
                    serve_connection(stream, calls, read_only).await;
                    drop(slot);
                });
            }
            Err(e) => errors.failed(&e).await,
        }
    }
}

fn encode(response: &Response) -> Vec<u8> {
    let mut out = serde_json::to_vec(response).unwrap_or_default();
    out.push(b'\n');
    out
}

/// One client: request lines of at most [`MAX_REQUEST_BYTES`], each answered in turn; closed
/// on a too-long line (after an error answer), on [`IDLE_TIMEOUT`] and on [`WRITE_TIMEOUT`].
async fn serve_connection(
    stream: tokio::net::UnixStream,
    calls: mpsc::Sender<Call>,
    read_only: bool,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_REQUEST_BYTES));
    loop {
        let line = match tokio::time::timeout(IDLE_TIMEOUT, lines.next()).await {
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(LinesCodecError::MaxLineLengthExceeded))) => {
                let answer = encode(&Response::Error {
                    message: format!(
                        "request line longer than {MAX_REQUEST_BYTES} bytes; closing the \
                         connection"
                    ),
                });
                let _ = tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&answer)).await;
                return;
            }
            // Closed, broken, or silent for too long (an idle client or a slow sender).
            Ok(None) | Ok(Some(Err(LinesCodecError::Io(_)))) | Err(_) => return,
        };
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(req) if read_only && !req.is_read_only() => Response::Error {
                message: "this is the read-only status socket (status, trace): changes go \
                          through the control socket, as root"
                    .into(),
            },
            Ok(req) => {
                let (tx, rx) = oneshot::channel();
                if calls.send((req, tx)).await.is_err() {
                    return;
                }
                rx.await.unwrap_or(Response::Error {
                    message: "vipd is shutting down".into(),
                })
            }
            Err(e) => Response::Error {
                message: format!("bad request: {e}"),
            },
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&encode(&response))).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}

/// One request from the command line (blocking).
pub fn call(path: &Path, request: &Request) -> Result<Response, ControlError> {
    let io = |error| ControlError::Io {
        path: path.to_owned(),
        error,
    };
    let mut stream = UnixStream::connect(path).map_err(|error| {
        let hint = match error.kind() {
            std::io::ErrorKind::PermissionDenied => "the control socket is root's: run as root",
            _ => "is vipd running? is --control the right path?",
        };
        ControlError::Connect {
            path: path.to_owned(),
            error,
            hint,
        }
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(request).map_err(ControlError::Decode)?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(io)?;
    serde_json::from_str(&answer).map_err(ControlError::Decode)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _};

    use super::*;

    /// A connection served against an event loop that answers every request with Ok.
    fn served() -> tokio::net::UnixStream {
        let (client, server) = tokio::net::UnixStream::pair().expect("pair");
        let (calls, mut rx) = mpsc::channel::<Call>(4);
        tokio::spawn(async move {
            while let Some((_, reply)) = rx.recv().await {
                let _ = reply.send(Response::Ok {
                    message: "done".into(),
                });
            }
        });
        tokio::spawn(serve_connection(server, calls, false));
        client
    }

    #[tokio::test]
    async fn the_status_socket_answers_reads_and_refuses_changes() {
        let (client, server) = tokio::net::UnixStream::pair().expect("pair");
        let (calls, mut rx) = mpsc::channel::<Call>(4);
        tokio::spawn(async move {
            while let Some((req, reply)) = rx.recv().await {
                assert!(req.is_read_only(), "{req:?} reached the loop");
                let _ = reply.send(Response::Ok {
                    message: "read".into(),
                });
            }
        });
        tokio::spawn(serve_connection(server, calls, true));
        let (read, mut write) = client.into_split();
        let asks = b"{\"cmd\":\"reload\"}\n{\"cmd\":\"status\"}\n{\"cmd\":\"leave\"}\n";
        write.write_all(asks).await.expect("write");
        let mut lines = tokio::io::BufReader::new(read).lines();
        let mut answers = Vec::new();
        for _ in 0..3 {
            answers.push(lines.next_line().await.expect("read").expect("answer"));
        }
        assert!(
            answers[0].contains("read-only status socket"),
            "{answers:?}"
        );
        assert_eq!(answers[1], "{\"kind\":\"ok\",\"message\":\"read\"}");
        assert!(
            answers[2].contains("read-only status socket"),
            "{answers:?}"
        );
    }

    #[tokio::test]
    async fn a_too_long_line_gets_an_error_and_the_connection_closes() {
        let mut client = served();
        let line = vec![b'a'; MAX_REQUEST_BYTES + 10_000];
        // vipd stops reading at the limit: the rest may fail to go out.
        let _ = client.write_all(&line).await;
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("{\"kind\":\"error\"") && text.contains("longer than 65536 bytes"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[tokio::test]
    async fn a_bad_line_gets_an_error_and_the_next_one_is_served() {
        let client = served();
        let (read, mut write) = client.into_split();
        write
            .write_all(b"hello\n{\"cmd\":\"reload\"}\n")
            .await
            .expect("write");
        let mut lines = tokio::io::BufReader::new(read).lines();
        let first = lines.next_line().await.expect("read").expect("answer");
        assert!(first.contains("bad request"), "{first}");
        let second = lines.next_line().await.expect("read").expect("answer");
        assert_eq!(second, "{\"kind\":\"ok\",\"message\":\"done\"}");
    }

    #[tokio::test]
    async fn a_line_just_under_the_limit_is_read() {
        let client = served();
        let (read, mut write) = client.into_split();
        // Valid JSON padded with spaces to just under the limit.
        let mut line = b"{\"cmd\":\"reload\"}".to_vec();
        line.resize(MAX_REQUEST_BYTES - 1, b' ');
        line.push(b'\n');
        write.write_all(&line).await.expect("write");
        let mut lines = tokio::io::BufReader::new(read).lines();
        let answer = lines.next_line().await.expect("read").expect("answer");
        assert!(answer.contains("\"kind\":\"ok\""), "{answer}");
    }
}
