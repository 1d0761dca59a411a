//! The lab's HTTP service: a thread per connection, HTTP/1.1 keep-alive (so `wrk` measures
//! the path, not connection setup) and HTTP/1.0 with close (the lab's own client). The body
//! is the node's name.
use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{TcpListener, TcpStream},
};

use anyhow::Context as _;

/// Serves until the process is killed. A blocking accept: a killed service must vanish at
/// once, and an accept loop that polls would cap throughput.
pub fn serve_http(port: u16, name: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("::", port)).with_context(|| format!("bind :{port}"))?;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let name = name.to_owned();
        std::thread::spawn(move || answer_all(conn, &name));
    }
    Ok(())
}

fn answer_all(conn: TcpStream, name: &str) {
    let _ = conn.set_nodelay(true);
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // Skip the headers up to the empty line.
        loop {
            let mut header = String::new();
            match reader.read_line(&mut header) {
                Ok(0) | Err(_) => return,
                Ok(_) if header.trim().is_empty() => break,
                Ok(_) => {}
            }
        }
        let keep_alive = request_line.trim_end().ends_with("HTTP/1.1");
        let reply = format!(
            "{} 200 OK\r\nContent-Length: {}\r\n{}\r\n{name}",
            if keep_alive { "HTTP/1.1" } else { "HTTP/1.0" },
            name.len(),
            if keep_alive {
                ""
            } else {
                "Connection: close\r\n"
            },
        );
        if out.write_all(reply.as_bytes()).is_err() || !keep_alive {
            return;
        }
    }
}
