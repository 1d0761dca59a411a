//! The control socket: newline-delimited JSON requests and responses over a Unix socket.
//! vipd's event loop answers; `vipd status|trace|backend|reload` are the clients.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _},
    sync::{mpsc, oneshot},
};

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
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    Status(Box<crate::shell::status::Status>),
    Trace(crate::shell::status::TraceReport),
    Ok { message: String },
    Error { message: String },
}

/// A request from a client with the way back.
pub type Call = (Request, oneshot::Sender<Response>);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "cannot reach vipd at {path}: {source} (is vipd running? is --control the right path?)"
    )]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad answer from vipd: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Serves the control socket, handing each request to the event loop through `calls`.
pub async fn serve(path: PathBuf, calls: mpsc::Sender<Call>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    // Root only: the socket changes what the data plane does.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    loop {
        let (stream, _) = listener.accept().await?;
        let calls = calls.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let response = match serde_json::from_str::<Request>(&line) {
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
                let mut out = serde_json::to_vec(&response).unwrap_or_default();
                out.push(b'\n');
                if write.write_all(&out).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// One request from the command line (blocking).
pub fn call(path: &Path, request: &Request) -> Result<Response, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(|source| ControlError::Connect {
        path: path.to_owned(),
        source,
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(io)?;
    Ok(serde_json::from_str(&answer)?)
}
