//! Attaching the local-client programs (cgroup `connect4`/`connect6`/`sendmsg4`/`sendmsg6`,
//! see `vip_common::maps::MAP_LOCAL_CLIENTS`) to a cgroup v2 directory. Their links are
//! pinned beside the XDP links (`cgroup_<program>`) and adopted like them: a restarted or
//! upgraded vipd puts its programs into the pinned links (bpf_link_update), so local
//! clients stay balanced throughout.
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use aya::{
    maps::Array,
    programs::{links::FdLink, links::PinnedLink, CgroupAttachMode, CgroupSockAddr},
};
use vip_common::maps::{self as contract, LocalClients};

use super::{Dataplane, DataplaneError};

/// How the local-client programs ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalClientsAttached {
    /// Newly attached (at least one link was made).
    New,
    /// Every link was pinned already: adopted, with this vipd's programs put in.
    Adopted,
}

impl Dataplane {
    /// Writes `LOCAL_CLIENTS` with this network namespace's cookie, then attaches every
    /// local-client program to the cgroup v2 directory `cgroup` (a link: programs of others
    /// there keep running) and pins its link, or adopts the pinned link.
    pub fn attach_local_clients(
        &mut self,
        cgroup: &Path,
    ) -> Result<LocalClientsAttached, DataplaneError> {
        let pin_dir = self
            .pin_dir
            .clone()
            .ok_or_else(|| DataplaneError::Pin("private maps cannot be attached".into()))?;
        let cookie = netns_cookie().map_err(|e| cgroup_err(cgroup, e))?;
        let mut map: Array<_, LocalClients> =
            Array::try_from(self.map_mut(contract::MAP_LOCAL_CLIENTS)?)?;
        map.set(
            0,
            LocalClients {
                netns_cookie: cookie,
            },
            0,
        )?;
        let cgroup_dir = std::fs::File::open(cgroup).map_err(|e| cgroup_err(cgroup, e))?;
        let mut attached = LocalClientsAttached::Adopted;
        for name in contract::LOCAL_CLIENT_PROGS {
            let link_path = link_pin_path(&pin_dir, name);
            if let Some(old) = (self.replacing.as_deref())
                .map(|old| link_pin_path(old, name))
                .filter(|l| l.exists())
            {
                // The old data plane's link: the new program goes in, the pin moves here.
                match self.update_link(name, &old) {
                    Ok(()) => {
                        std::fs::rename(&old, &link_path)
                            .map_err(|source| DataplaneError::PinDir { path: old, source })?;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(program = name, error = %e, "old cgroup link unusable; attaching anew")
                    }
                }
            }
            if link_path.exists() {
                match self.update_link(name, &link_path) {
                    Ok(()) => continue,
                    Err(e) => {
                        tracing::warn!(program = name, error = %e, "pinned cgroup link unusable; attaching anew");
                        unpin(&link_path)?;
                    }
                }
            }
            attached = LocalClientsAttached::New;
            let prog = self.cgroup_program(name)?;
            // A cgroup bpf_link always runs beside the cgroup's other programs; its create
            // call takes no mode flags (BPF_F_ALLOW_MULTI there is EINVAL).
            let id = prog.attach(&cgroup_dir, CgroupAttachMode::Single)?;
            let link = FdLink::try_from(prog.take_link(id)?).map_err(|e| {
                DataplaneError::Pin(format!("kernel gave a cgroup attachment, not a link: {e}"))
            })?;
            link.pin(&link_path)
                .map_err(|e| DataplaneError::Pin(format!("{}: {e}", link_path.display())))?;
        }
        Ok(attached)
    }

    /// Removes the local-client links (`node.local_clients = false`); whether any was there.
    pub fn detach_local_clients(&mut self) -> Result<bool, DataplaneError> {
        let Some(pin_dir) = self.pin_dir.clone() else {
            return Ok(false);
        };
        let mut had = false;
        for name in contract::LOCAL_CLIENT_PROGS {
            let path = link_pin_path(&pin_dir, name);
            if path.exists() {
                unpin(&path)?;
                had = true;
            }
        }
        Ok(had)
    }

    /// A local-client program of the object, loaded on first use.
    fn cgroup_program(
        &mut self,
        name: &'static str,
    ) -> Result<&mut CgroupSockAddr, DataplaneError> {
        let prog: &mut CgroupSockAddr = self
            .ebpf
            .program_mut(name)
            .ok_or(DataplaneError::MissingProgram(name))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()?;
        }
        Ok(prog)
    }

    /// Puts this object's program `name` into the link pinned at `link_path`.
    fn update_link(&mut self, name: &'static str, link_path: &Path) -> Result<(), DataplaneError> {
        let link = obj_get(link_path).map_err(|e| cgroup_err(link_path, e))?;
        let prog = self.cgroup_program(name)?;
        let prog_fd = prog.fd()?.as_fd().as_raw_fd();
        link_update(&link, prog_fd).map_err(|e| cgroup_err(link_path, e))
    }
}

fn link_pin_path(pin_dir: &Path, program: &str) -> PathBuf {
    pin_dir.join(format!("cgroup_{program}"))
}

fn unpin(path: &Path) -> Result<(), DataplaneError> {
    let link = PinnedLink::from_pin(path)
        .map_err(|e| DataplaneError::Pin(format!("{}: {e}", path.display())))?;
    link.unpin().map_err(|source| DataplaneError::PinDir {
        path: path.to_owned(),
        source,
    })?;
    Ok(())
}

fn cgroup_err(path: &Path, source: io::Error) -> DataplaneError {
    DataplaneError::PinDir {
        path: path.to_owned(),
        source,
    }
}

/// The mount point of the cgroup v2 hierarchy (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified`
/// on a hybrid host), from `/proc/self/mountinfo`.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (fields, fs) = line.split_once(" - ")?;
        (fs.split(' ').next() == Some("cgroup2"))
            .then(|| fields.split(' ').nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// `SO_NETNS_COOKIE` of the calling thread's network namespace (Linux 5.14+).
fn netns_cookie() -> io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: a plain socket() call; the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: an 8-byte out buffer and its length.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// An fd of the bpf object pinned at `path`.
fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // union bpf_attr, BPF_OBJ_GET: pathname (u64), bpf_fd, file_flags.
    let mut attr = [0u64; 2];
    attr[0] = c.as_ptr() as u64;
    // SAFETY: the attr outlives the call; the kernel reads 16 bytes of it.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, attr.as_mut_ptr(), 16) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Replaces the program of `link` by `prog_fd` at once (sockets see one or the other).
fn link_update(link: &OwnedFd, prog_fd: i32) -> io::Result<()> {
    // union bpf_attr, BPF_LINK_UPDATE: link_fd, new_prog_fd, flags, old_prog_fd.
    let mut attr = [link.as_raw_fd() as u32, prog_fd as u32, 0, 0];
    // SAFETY: as in `obj_get`.
    let r = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_UPDATE, attr.as_mut_ptr(), 16) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
