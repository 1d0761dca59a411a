//! Claiming and releasing a VIP on this node: the address on the interface (rtnetlink), then
//! bursts of gratuitous ARP (IPv4) or unsolicited neighbour advertisements (IPv6) so that
//! upstream caches move to this node's MAC at once (stale ARP is the classic failover pain).
use std::{ffi::CString, net::IpAddr};

use futures::TryStreamExt as _;
use rtnetlink::{
    packet_route::address::{AddressAttribute, AddressFlags, CacheInfo},
    Handle,
};

#[derive(Debug, thiserror::Error)]
pub enum VipAddrError {
    #[error("interface {0}: not found")]
    NoInterface(String),
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error("announcing {vip} on {iface}: {source}")]
    Announce {
        vip: IpAddr,
        iface: String,
        source: std::io::Error,
    },
}

fn ifindex(iface: &str) -> Result<u32, VipAddrError> {
    let c = CString::new(iface).map_err(|_| VipAddrError::NoInterface(iface.into()))?;
    // SAFETY: a valid C string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(VipAddrError::NoInterface(iface.into())),
        i => Ok(i),
    }
}

fn prefix(vip: &IpAddr) -> u8 {
    if vip.is_ipv4() {
        32
    } else {
        128
    }
}

/// Adds `vip` to `iface` (idempotent).
///
/// An IPv6 VIP is added deprecated (preferred lifetime 0, valid forever), without duplicate
/// address detection and without a prefix route: a /128 matches a backend's address better
/// than the node's own, so the kernel would otherwise pick the VIP as the source of vipd's
/// probes and the backends would answer to their own `lo`; DAD would keep a taken-over VIP
/// unusable for a second. A deprecated address still receives and answers everything sent
/// to it. IPv4 needs none of this (a /32 is never preferred over the subnet's primary).
pub async fn add(handle: &Handle, iface: &str, vip: IpAddr) -> Result<(), VipAddrError> {
    let idx = ifindex(iface)?;
    if present(handle, idx, vip).await? {
        return Ok(());
    }
    let mut req = handle.address().add(idx, vip, prefix(&vip));
    if vip.is_ipv6() {
        let msg = req.message_mut();
        msg.attributes.push(AddressAttribute::Flags(
            AddressFlags::Nodad | AddressFlags::Noprefixroute,
        ));
        let mut lifetimes = CacheInfo::default();
        lifetimes.ifa_valid = u32::MAX;
        msg.attributes.push(AddressAttribute::CacheInfo(lifetimes));
    }
    req.execute().await?;
    Ok(())
}

async fn present(handle: &Handle, idx: u32, vip: IpAddr) -> Result<bool, VipAddrError> {
    let mut found = handle
        .address()
        .get()
        .set_link_index_filter(idx)
        .set_address_filter(vip)
        .execute();
    Ok(found.try_next().await?.is_some())
}

/// Every address on `iface` (its own and any VIP).
pub async fn addresses_on(
    handle: &Handle,
    iface: &str,
) -> Result<std::collections::BTreeSet<IpAddr>, VipAddrError> {
    let idx = ifindex(iface)?;
    let mut found = handle.address().get().set_link_index_filter(idx).execute();
    let mut out = std::collections::BTreeSet::new();
    while let Some(msg) = found.try_next().await? {
        for attr in &msg.attributes {
            if let AddressAttribute::Address(a) = attr {
                out.insert(*a);
            }
        }
    }
    Ok(out)
}

/// Removes `vip` from `iface` (idempotent).
pub async fn remove(handle: &Handle, iface: &str, vip: IpAddr) -> Result<(), VipAddrError> {
    let idx = ifindex(iface)?;
    let mut found = handle
        .address()
        .get()
        .set_link_index_filter(idx)
        .set_address_filter(vip)
        .execute();
    while let Some(msg) = found.try_next().await? {
        handle.address().del(msg).execute().await?;
    }
    Ok(())
}

/// The interface's MAC, asked of the kernel in this thread's network namespace (sysfs shows
/// the namespace it was mounted in, which need not be ours).
pub fn mac_of(iface: &str) -> Option<[u8; 6]> {
    let req = ifreq(iface, libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR filled the hardware-address member.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    Some([
        sa[0] as u8,
        sa[1] as u8,
        sa[2] as u8,
        sa[3] as u8,
        sa[4] as u8,
        sa[5] as u8,
    ])
}

/// The interface's MTU, asked likewise.
pub fn mtu_of(iface: &str) -> Option<u16> {
    let req = ifreq(iface, libc::SIOCGIFMTU)?;
    // SAFETY: SIOCGIFMTU filled the MTU member.
    u16::try_from(unsafe { req.ifr_ifru.ifru_mtu }).ok()
}

/// `request` (an SIOCGIF* ioctl) about `iface`, on a datagram socket of this thread's
/// network namespace.
pub(crate) fn ifreq(iface: &str, request: libc::c_ulong) -> Option<libc::ifreq> {
    if iface.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: an SIOCGIF* ioctl on a datagram socket with a zeroed, NUL-terminated ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (d, s) in req.ifr_name.iter_mut().zip(iface.bytes()) {
            *d = s as libc::c_char;
        }
        let rc = libc::ioctl(fd, request, &mut req);
        libc::close(fd);
        (rc == 0).then_some(req)
    }
}

/// A gratuitous ARP request (sender = target = VIP) from `mac`.
pub fn garp_frame(mac: [u8; 6], vip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&vip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&vip);
    f
}

/// An unsolicited neighbour advertisement (override) for `vip` to all nodes.
pub fn unsolicited_na_frame(mac: [u8; 6], vip: [u8; 16]) -> Vec<u8> {
    let all_nodes = [
        0xff02u16.to_be_bytes(),
        [0, 0],
        [0, 0],
        [0, 0],
        [0, 0],
        [0, 0],
        [0, 0],
        [0, 1],
    ]
    .concat();
    let mut icmp = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    icmp.extend_from_slice(&vip);
    icmp.extend_from_slice(&[2, 1]);
    icmp.extend_from_slice(&mac);
    // Checksum over the IPv6 pseudo header and the message.
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&vip);
    add(&all_nodes);
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(&icmp);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    icmp[2..4].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(&vip);
    f.extend_from_slice(&all_nodes);
    f.extend_from_slice(&icmp);
    f
}

/// Sends one gratuitous ARP / unsolicited NA for `vip` out of `iface` (AF_PACKET).
pub fn announce(iface: &str, vip: IpAddr) -> Result<(), VipAddrError> {
    let err = |source| VipAddrError::Announce {
        vip,
        iface: iface.into(),
        source,
    };
    let idx = ifindex(iface)?;
    let mac = mac_of(iface).ok_or_else(|| err(std::io::Error::other("no MAC address")))?;
    let frame = match vip {
        IpAddr::V4(v4) => garp_frame(mac, v4.octets()),
        IpAddr::V6(v6) => unsolicited_na_frame(mac, v6.octets()),
    };
    // SAFETY: plain socket/sendto/close with valid pointers and lengths.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        if fd < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = idx as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        let rc = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        let e = std::io::Error::last_os_error();
        libc::close(fd);
        if rc < 0 {
            return Err(err(e));
        }
    }
    Ok(())
}
