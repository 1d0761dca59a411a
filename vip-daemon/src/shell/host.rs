//! `vipd host`: reads a backend host's state for `core::host`, applies its changes and
//! keeps the record `undo` reverts (sysctls under /proc/sys, addresses on `lo` by
//! rtnetlink, the `vip_decap` program pinned in its own bpffs directory).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
};

use futures::TryStreamExt as _;
use rtnetlink::packet_route::link::{LinkAttribute, LinkXdp};

use crate::core::host::{Change, Observed, Wanted};

/// Where `vipd host setup` records what it changed.
pub const STATE_FILE: &str = "/var/lib/vip-fabric/host.json";
/// bpffs directory of the decapsulation program and its maps (apart from vipd's own).
pub const DECAP_PIN_DIR: &str = "/sys/fs/bpf/vip-fabric-decap";

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path}: {source}")]
    State {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    #[error(transparent)]
    Address(#[from] crate::shell::vipaddr::VipAddrError),
    #[error(transparent)]
    Dataplane(#[from] crate::shell::dataplane::DataplaneError),
}

/// What `setup` changed, oldest first: `undo` reverts exactly these.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub changes: Vec<Change>,
}

pub fn load_record(path: &Path) -> Result<Record, HostError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|source| HostError::State {
            path: path.into(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
        Err(source) => Err(HostError::Io {
            path: path.into(),
            source,
        }),
    }
}

/// Writes the record (removes the file when it is empty), through a temporary file.
pub fn save_record(path: &Path, r: &Record) -> Result<(), HostError> {
    let io = |source| HostError::Io {
        path: path.into(),
        source,
    };
    if r.changes.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        };
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(r).expect("plain data serialises");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// This host's addresses (not on `lo`) -> the interface holding each.
pub fn host_addresses() -> Result<BTreeMap<IpAddr, String>, HostError> {
    let mut out = BTreeMap::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we walk read-only and free once.
    unsafe {
        if libc::getifaddrs(&mut ifap) != 0 {
            return Err(HostError::Io {
                path: "getifaddrs".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        let mut cur = ifap;
        while !cur.is_null() {
            let ifa = &*cur;
            cur = ifa.ifa_next;
            if ifa.ifa_addr.is_null() {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name)
                .to_string_lossy()
                .into_owned();
            let addr: Option<IpAddr> = match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    Some(std::net::Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)).into())
                }
                libc::AF_INET6 => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    Some(std::net::Ipv6Addr::from(sa.sin6_addr.s6_addr).into())
                }
                _ => None,
            };
            if let Some(a) = addr.filter(|_| name != "lo") {
                out.insert(a, name);
            }
        }
        libc::freeifaddrs(ifap);
    }
    Ok(out)
}

fn sysctl_file(path: &str) -> PathBuf {
    Path::new("/proc/sys").join(path)
}

pub fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(sysctl_file(path))
        .ok()
        .map(|s| s.trim().to_owned())
}

fn write_sysctl(path: &str, value: &str) -> Result<(), HostError> {
    let file = sysctl_file(path);
    std::fs::write(&file, value).map_err(|source| HostError::Io { path: file, source })
}

/// The id of the XDP program attached to `iface` (None: none, or no such interface).
pub async fn xdp_prog_id(
    handle: &rtnetlink::Handle,
    iface: &str,
) -> Result<Option<u32>, HostError> {
    let mut links = handle.link().get().match_name(iface.to_owned()).execute();
    let msg = match links.try_next().await {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(None),
        // ENODEV: the interface is not there, so nothing is attached to it.
        Err(rtnetlink::Error::NetlinkError(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    for attr in msg.attributes {
        if let LinkAttribute::Xdp(xdp) = attr {
            for x in xdp {
                if let LinkXdp::ProgId(id) = x {
                    return Ok(Some(id).filter(|id| *id != 0));
                }
            }
        }
    }
    Ok(None)
}

/// Name of the loaded BPF program with this id (None: gone, or unnamed).
pub fn prog_name(id: u32) -> Option<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .and_then(|p| p.name_as_str().map(str::to_owned))
}

/// What `plan`/`plan_undo` need: the sysctls of `w` and of `recorded`, `lo`'s addresses and
/// the XDP program on each interface of `w.decap` and of `recorded`.
pub async fn observe(
    handle: &rtnetlink::Handle,
    w: &Wanted,
    recorded: &[Change],
) -> Result<Observed, HostError> {
    let mut o = Observed::default();
    let mut paths: BTreeSet<String> = crate::core::host::sysctls_for(w)
        .into_iter()
        .map(|s| s.path)
        .collect();
    let mut ifaces = w.decap.clone();
    for c in recorded {
        match c {
            Change::Sysctl { path, .. } => {
                paths.insert(path.clone());
            }
            Change::Decap { iface } => {
                ifaces.insert(iface.clone());
            }
            Change::LoAddress { .. } => {}
        }
    }
    for p in paths {
        let v = read_sysctl(&p);
        o.sysctls.insert(p, v);
    }
    o.lo = crate::shell::vipaddr::addresses_on(handle, "lo").await?;
    for iface in ifaces {
        let name = xdp_prog_id(handle, &iface)
            .await?
            .map(|id| prog_name(id).unwrap_or_else(|| format!("id {id}")));
        o.xdp.insert(iface, name);
    }
    Ok(o)
}

/// Map sizes of the decapsulation program's object: it only counts into `STATS`.
fn decap_sizing() -> crate::core::layout::Sizing {
    crate::core::layout::Sizing {
        vips: 1,
        fallbacks: 0,
        backends: 1,
        slots: 2,
        peers: 1,
        interfaces: 1,
        flows: 0,
    }
}

/// Applies one change.
pub async fn apply(
    handle: &rtnetlink::Handle,
    c: &Change,
    decap_pin_dir: &Path,
    encap_sources: &[vip_common::maps::EncapSourceKey],
) -> Result<(), HostError> {
    match c {
        Change::Sysctl { path, to, .. } => write_sysctl(path, to),
        Change::LoAddress { address } => {
            Ok(crate::shell::vipaddr::add(handle, "lo", *address).await?)
        }
        Change::Decap { iface } => {
            use crate::shell::dataplane::Dataplane;
            let mut dp = Dataplane::load_pinned(decap_pin_dir, &decap_sizing())?;
            // Before attaching: the program drops IPIP/IP6IP6 from sources it does not know.
            dp.set_encap_sources(encap_sources)?;
            dp.attach_program(vip_common::maps::PROG_DECAP, iface)?;
            Ok(())
        }
    }
}

/// Reverts one change `setup` made.
pub async fn revert(
    handle: &rtnetlink::Handle,
    c: &Change,
    decap_pin_dir: &Path,
) -> Result<(), HostError> {
    match c {
        Change::Sysctl { path, from, .. } => match from {
            Some(v) => write_sysctl(path, v),
            None => Ok(()),
        },
        Change::LoAddress { address } => {
            Ok(crate::shell::vipaddr::remove(handle, "lo", *address).await?)
        }
        Change::Decap { iface } => {
            crate::shell::dataplane::detach(decap_pin_dir, iface)?;
            Ok(())
        }
    }
}
