//! Tiny real services for end-to-end tests: an HTTP server and a UDP responder that answer
//! with their backend's name, and the matching clients. Servers stop when `stop` is set.
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::NetNs;

/// Serves `HTTP/1.0 200` with body `name` on `[::]:port` (IPv4 too) until `stop`.
pub fn http_server(ns: &NetNs, port: u16, name: String, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let ready = Arc::new(AtomicBool::new(false));
    let is_ready = ready.clone();
    let handle = ns.spawn(move || {
        let listener = TcpListener::bind(("::", port)).expect("bind http");
        listener.set_nonblocking(true).expect("nonblocking");
        is_ready.store(true, Ordering::Release);
        while !stop.load(Ordering::Acquire) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut req = Vec::new();
                    let mut buf = [0u8; 512];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = write!(
                        conn,
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
                        name.len()
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    while !ready.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(1));
    }
    handle
}

/// Serves HTTP/1.1 keep-alive on `[::]:port` (IPv4 too) until `stop`: every request on a
/// connection is answered with body `name` (with `Content-Length`), and the connection stays
/// open until the client closes it. An HTTP/1.0 request, or one with `Connection: close` (as
/// vipd's HTTP probe sends), is answered and then closed. A thread per connection. When `stop`
/// is set, the listener closes at once and every open connection is closed within ~100 ms, as
/// when the service dies; the returned thread (the accept loop) ends after the listener is
/// closed, so joining it frees the port for a new server.
pub fn keepalive_server(
    ns: &NetNs,
    port: u16,
    name: String,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let ready = Arc::new(AtomicBool::new(false));
    let is_ready = ready.clone();
    let handle = ns.spawn(move || {
        let listener = TcpListener::bind(("::", port)).expect("bind keep-alive http");
        listener.set_nonblocking(true).expect("nonblocking");
        is_ready.store(true, Ordering::Release);
        while !stop.load(Ordering::Acquire) {
            match listener.accept() {
                Ok((conn, _)) => {
                    let (name, stop) = (name.clone(), stop.clone());
                    std::thread::spawn(move || answer_keepalive(conn, &name, &stop));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    while !ready.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(1));
    }
    handle
}

/// Answers the requests of one keep-alive connection until the client closes it or `stop`.
fn answer_keepalive(conn: TcpStream, name: &str, stop: &AtomicBool) {
    use std::io::BufRead as _;
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_nodelay(true);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = std::io::BufReader::new(conn);
    // The request head read so far (a read timeout may split it).
    let mut head = String::new();
    while !stop.load(Ordering::Acquire) {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                // Keep what arrived of a partial line and wait for the rest.
                head.push_str(&line);
                continue;
            }
            Err(_) => return,
        }
        head.push_str(&line);
        if !head.ends_with("\r\n\r\n") && !head.ends_with("\n\n") {
            continue;
        }
        let request_line = head
            .lines()
            .next()
            .unwrap_or_default()
            .trim_end()
            .to_owned();
        let close = !request_line.ends_with("HTTP/1.1")
            || head
                .lines()
                .any(|h| h.to_ascii_lowercase().starts_with("connection: close"));
        head.clear();
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{}\r\n{name}",
            name.len(),
            if close { "Connection: close\r\n" } else { "" },
        );
        if out.write_all(reply.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// Answers every datagram on `addr` with `name`. Bound to the VIP itself so that replies
/// leave with the VIP as source (direct server return).
pub fn udp_responder(
    ns: &NetNs,
    addr: SocketAddr,
    name: String,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let ready = Arc::new(AtomicBool::new(false));
    let is_ready = ready.clone();
    let handle = ns.spawn(move || {
        let sock = UdpSocket::bind(addr).expect("bind udp");
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        is_ready.store(true, Ordering::Release);
        let mut buf = [0u8; 1500];
        while !stop.load(Ordering::Acquire) {
            if let Ok((_, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(name.as_bytes(), from);
            }
        }
    });
    while !ready.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(1));
    }
    handle
}

/// One HTTP/1.0 GET on a new connection: (client source port, response body).
pub fn http_get(to: SocketAddr) -> std::io::Result<(u16, String)> {
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    let port = conn.local_addr()?.port();
    conn.write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")?;
    let mut resp = String::new();
    conn.read_to_string(&mut resp)?;
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Ok((port, body))
}

/// One datagram from a fresh socket and its answer: (client source port, answer).
pub fn udp_ask(to: SocketAddr, payload: &[u8]) -> std::io::Result<(u16, String)> {
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().expect("addr")
    } else {
        "[::]:0".parse().expect("addr")
    };
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    sock.connect(to)?;
    let port = sock.local_addr()?.port();
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        sock.send(payload)?;
        if let Ok(n) = sock.recv(&mut buf) {
            return Ok((port, String::from_utf8_lossy(&buf[..n]).into_owned()));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no UDP answer",
    ))
}

/// A line server on `[::]:port`: answers every line with `name`, keeping the connection open
/// (long-lived flows that must survive a VIP move).
pub fn line_server(ns: &NetNs, port: u16, name: String, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let ready = Arc::new(AtomicBool::new(false));
    let is_ready = ready.clone();
    let handle = ns.spawn(move || {
        let listener = TcpListener::bind(("::", port)).expect("bind line server");
        listener.set_nonblocking(true).expect("nonblocking");
        is_ready.store(true, Ordering::Release);
        while !stop.load(Ordering::Acquire) {
            match listener.accept() {
                Ok((conn, _)) => {
                    let (name, stop) = (name.clone(), stop.clone());
                    std::thread::spawn(move || {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
                        let mut reader = std::io::BufReader::new(conn.try_clone().expect("clone"));
                        let mut conn = conn;
                        let mut line = String::new();
                        while !stop.load(Ordering::Acquire) {
                            match std::io::BufRead::read_line(&mut reader, &mut line) {
                                Ok(0) => return,
                                Ok(_) => {
                                    line.clear();
                                    if writeln!(conn, "{name}").is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if e.kind() == std::io::ErrorKind::WouldBlock
                                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    while !ready.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(1));
    }
    handle
}

/// A long-lived client connection: the stream to write and a buffered reader of it.
fn long_lived(to: SocketAddr) -> std::io::Result<(TcpStream, std::io::BufReader<TcpStream>)> {
    let conn = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(3)))?;
    let reader = std::io::BufReader::new(conn.try_clone()?);
    Ok((conn, reader))
}

/// A long-lived HTTP/1.1 keep-alive connection (the lab's HTTP service keeps it open).
pub struct HttpKeepAlive {
    conn: TcpStream,
    reader: std::io::BufReader<TcpStream>,
}

impl HttpKeepAlive {
    pub fn connect(to: SocketAddr) -> std::io::Result<Self> {
        let (conn, reader) = long_lived(to)?;
        Ok(Self { conn, reader })
    }

    /// One GET on the open connection: the response body (the serving backend's name).
    pub fn get(&mut self) -> std::io::Result<String> {
        use std::io::BufRead as _;
        self.conn
            .write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let line = line.trim();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("Content-Length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// A long-lived client connection to a line server.
pub struct LineClient {
    conn: TcpStream,
    reader: std::io::BufReader<TcpStream>,
}

impl LineClient {
    pub fn connect(to: SocketAddr) -> std::io::Result<Self> {
        let (conn, reader) = long_lived(to)?;
        Ok(Self { conn, reader })
    }

    /// One request/answer on the open connection: the serving backend's name.
    pub fn ask(&mut self) -> std::io::Result<String> {
        writeln!(self.conn, "who")?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut self.reader, &mut line)?;
        if line.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            ));
        }
        Ok(line.trim().to_owned())
    }
}

/// Counts the bytes of each connection on `[::]:port` (IPv4 too) until the client half-closes
/// it, then answers with the count; a thread per connection, until `stop`.
pub fn upload_sink(ns: &NetNs, port: u16, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let ready = Arc::new(AtomicBool::new(false));
    let is_ready = ready.clone();
    let handle = ns.spawn(move || {
        let listener = TcpListener::bind(("::", port)).expect("bind upload sink");
        listener.set_nonblocking(true).expect("nonblocking");
        is_ready.store(true, Ordering::Release);
        while !stop.load(Ordering::Acquire) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    std::thread::spawn(move || {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
                        let counted = std::io::copy(&mut conn, &mut std::io::sink());
                        if let Ok(n) = counted {
                            let _ = write!(conn, "{n}");
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    });
    while !ready.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(1));
    }
    handle
}

/// Sends `bytes` bytes to an [`upload_sink`] at `to` in full-size segments, half-closes, and
/// returns the count it answered. A path that silently drops the large segments stalls the
/// writes: the timeouts (30 s) turn that into an error.
pub fn upload(to: SocketAddr, bytes: usize) -> std::io::Result<u64> {
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    conn.set_write_timeout(Some(Duration::from_secs(30)))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let chunk = vec![0x5au8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        conn.write_all(&chunk[..n])?;
        left -= n;
    }
    conn.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    answer.trim().parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{answer:?}: {e}"))
    })
}
