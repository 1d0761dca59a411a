//! The backend services of a controller, one process each (`vip-lab serve KIND ...`, started
//! inside the controller's namespace), built from the test servers of `servers.rs` (HTTP:
//! `http.rs`, keep-alive for the throughput bench); and the
//! UDP health probe (`vip-lab probe-udp`), vipd's exec check for the DNS service.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use anyhow::{bail, Context as _};

use super::{borrowed_ns, config::ServiceKind};
use crate::servers;

/// Serves `kind` on `port` answering `name`, until killed. The process already runs inside the
/// controller's namespace; the servers enter it again for their threads, which is harmless.
pub fn serve(kind: &str, port: u16, name: &str, vip: Ipv4Addr) -> anyhow::Result<()> {
    let ns = own_namespace()?;
    let stop = Arc::new(AtomicBool::new(false));
    let kind = [ServiceKind::Http, ServiceKind::Tcp, ServiceKind::Udp]
        .into_iter()
        .find(|k| k.arg() == kind)
        .with_context(|| format!("unknown service kind {kind:?} (http, tcp, udp)"))?;
    let threads = match kind {
        ServiceKind::Http => return super::http::serve_http(port, name),
        ServiceKind::Tcp => vec![servers::line_server(&ns, port, name.into(), stop)],
        ServiceKind::Udp => {
            // Clients ask the VIP (replies must leave with it as source: direct server
            // return); vipd's probe asks the controller's own address.
            let own = own_address()?;
            [IpAddr::V4(vip), own]
                .into_iter()
                .map(|ip| {
                    let addr = SocketAddr::new(ip, port);
                    servers::udp_responder(&ns, addr, name.into(), stop.clone())
                })
                .collect()
        }
    };
    for t in threads {
        let _ = t.join();
    }
    bail!("service stopped")
}

/// Name of the namespace this process runs in, from /run/netns (matched by inode).
fn own_namespace() -> anyhow::Result<std::mem::ManuallyDrop<crate::NetNs>> {
    use std::os::unix::fs::MetadataExt as _;
    let me = std::fs::metadata("/proc/self/ns/net")?.ino();
    for entry in std::fs::read_dir("/run/netns")?.flatten() {
        if entry.metadata().is_ok_and(|m| m.ino() == me) {
            return Ok(borrowed_ns(&entry.file_name().to_string_lossy()));
        }
    }
    bail!("not inside a named network namespace (start me with nsenter --net=/run/netns/NAME)")
}

/// The controller's address on eth0.
fn own_address() -> anyhow::Result<IpAddr> {
    let out = super::cmd(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"])?;
    let cidr = out
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .context("no IPv4 address on eth0")?;
    let ip = cidr.split('/').next().unwrap_or_default();
    ip.parse().with_context(|| format!("bad address {ip:?}"))
}

/// vipd's exec check: one datagram to $VIPD_BACKEND_ADDRESS:$VIPD_BACKEND_PORT, healthy when
/// an answer comes back in time.
pub fn probe_udp() -> anyhow::Result<()> {
    let addr: IpAddr = std::env::var("VIPD_BACKEND_ADDRESS")?.parse()?;
    let port: u16 = std::env::var("VIPD_BACKEND_PORT")?.parse()?;
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    sock.connect((addr, port))?;
    sock.send(b"health")?;
    let mut buf = [0u8; 64];
    sock.recv(&mut buf).context("no answer")?;
    Ok(())
}
