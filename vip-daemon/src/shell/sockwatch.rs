//! Watches the listening sockets of the backends that run on this node (sock_diag netlink,
//! polled every few milliseconds): a killed service's listener vanishes with the process,
//! long before any probe could notice. Reports only changes.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};
use tokio::sync::mpsc;

/// A local service to watch: a TCP listener or a bound UDP socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    pub key: u32,
    pub udp: bool,
    /// Addresses the service may bind: the backend's and the VIP's (DSR delivers to it).
    pub addrs: Vec<IpAddr>,
    pub port: u16,
}

/// A socket as sock_diag lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenSocket {
    pub udp: bool,
    pub addr: IpAddr,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub key: u32,
    pub listening: bool,
    pub at: Instant,
}

/// Whether each watched service has a socket: same protocol and port, bound to its address
/// or to the wildcard (`::` also takes IPv4 unless v6only, which sock_diag does not show).
pub fn listening(watched: &[Watched], open: &[OpenSocket]) -> Vec<bool> {
    watched
        .iter()
        .map(|w| {
            open.iter().any(|s| {
                s.udp == w.udp
                    && s.port == w.port
                    && (w.addrs.contains(&s.addr)
                        || s.addr == IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                        || s.addr == IpAddr::V6(Ipv6Addr::UNSPECIFIED))
            })
        })
        .collect()
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const TCP_LISTEN: u32 = 10;
/// Unconnected UDP sockets sit in TCP_CLOSE.
const TCP_CLOSE: u32 = 7;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// One `inet_diag_req_v2` dump request (nlmsghdr + request, all sockets of one family and
/// protocol in the given states).
fn request(family: u8, protocol: u8, states: u32, seq: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(72);
    m.extend_from_slice(&72u32.to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[family, protocol, 0, 0]);
    m.extend_from_slice(&states.to_ne_bytes());
    m.extend_from_slice(&[0u8; 48]); // inet_diag_sockid: no filter
    m
}

/// Parses the `inet_diag_msg`s of one reply buffer; true once the dump is done.
fn parse(buf: &[u8], udp: bool, out: &mut Vec<OpenSocket>) -> std::io::Result<bool> {
    let mut rest = buf;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4")) as usize;
        let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2"));
        if len < 16 || len > rest.len() {
            return Err(std::io::Error::other("truncated sock_diag reply"));
        }
        let body = &rest[16..len];
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => return Err(std::io::Error::other("sock_diag error reply")),
            SOCK_DIAG_BY_FAMILY if body.len() >= 72 => {
                let family = body[0];
                let port = u16::from_be_bytes([body[4], body[5]]);
                let src: [u8; 16] = body[8..24].try_into().expect("16");
                let addr = if family == libc::AF_INET as u8 {
                    IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3]))
                } else {
                    IpAddr::V6(Ipv6Addr::from(src))
                };
                out.push(OpenSocket { udp, addr, port });
            }
            _ => {}
        }
        rest = &rest[(len + 3) & !3..];
    }
    Ok(false)
}

/// Every TCP listener and bound UDP socket of this network namespace.
pub fn open_sockets(sock: &Socket, seq: &mut u32) -> std::io::Result<Vec<OpenSocket>> {
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for (protocol, states, udp) in [
            (IPPROTO_TCP, 1 << TCP_LISTEN, false),
            (IPPROTO_UDP, 1 << TCP_CLOSE, true),
        ] {
            *seq = seq.wrapping_add(1);
            sock.send(&request(family, protocol, states, *seq), 0)?;
            loop {
                buf.clear();
                let n = sock.recv(&mut buf, 0)?;
                if parse(&buf[..n], udp, &mut out)? {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// Polls every `period` on a thread of its own and sends a [`WatchEvent`] for each change
/// (and the first state of each service). Stops when the receiver is dropped.
pub fn spawn(
    watched: Vec<Watched>,
    period: Duration,
) -> std::io::Result<mpsc::Receiver<WatchEvent>> {
    let mut sock = Socket::new(NETLINK_SOCK_DIAG)?;
    sock.bind_auto()?;
    let (tx, rx) = mpsc::channel(256);
    std::thread::Builder::new()
        .name("sockwatch".into())
        .spawn(move || {
            let mut seq = 0;
            let mut last: Vec<Option<bool>> = vec![None; watched.len()];
            loop {
                match open_sockets(&sock, &mut seq) {
                    Ok(open) => {
                        let at = Instant::now();
                        for (i, now) in listening(&watched, &open).into_iter().enumerate() {
                            if last[i] != Some(now) {
                                last[i] = Some(now);
                                let ev = WatchEvent {
                                    key: watched[i].key,
                                    listening: now,
                                    at,
                                };
                                if tx.blocking_send(ev).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "sock_diag dump failed"),
                }
                if tx.is_closed() {
                    return;
                }
                std::thread::sleep(period);
            }
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(udp: bool, addr: &str, port: u16) -> Watched {
        Watched {
            key: 0,
            udp,
            addrs: vec![addr.parse().unwrap()],
            port,
        }
    }

    fn s(udp: bool, addr: &str, port: u16) -> OpenSocket {
        OpenSocket {
            udp,
            addr: addr.parse().unwrap(),
            port,
        }
    }

    #[test]
    fn matches_protocol_port_and_address_or_wildcard() {
        let watched = [
            w(false, "10.0.0.1", 80),
            w(true, "10.0.0.1", 53),
            w(false, "fd00::1", 443),
            w(false, "10.0.0.1", 5000),
        ];
        let open = [
            s(false, "0.0.0.0", 80),
            s(false, "10.0.0.1", 53), // TCP, not the UDP service
            s(false, "::", 443),
            s(false, "10.0.0.2", 5000), // another address
        ];
        assert_eq!(listening(&watched, &open), [true, false, true, false]);
    }

    #[test]
    fn sees_a_listener_of_this_process_come_and_go() {
        let mut sock = Socket::new(NETLINK_SOCK_DIAG).expect("netlink");
        sock.bind_auto().expect("bind");
        let mut seq = 0;
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = l.local_addr().unwrap().port();
        let u = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
        let uport = u.local_addr().unwrap().port();
        let watched = [w(false, "127.0.0.1", port), w(true, "127.0.0.1", uport)];
        let open = open_sockets(&sock, &mut seq).expect("dump");
        assert_eq!(listening(&watched, &open), [true, true]);
        drop(l);
        drop(u);
        let open = open_sockets(&sock, &mut seq).expect("dump");
        assert_eq!(listening(&watched, &open), [false, false]);
    }
}
