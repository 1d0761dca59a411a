//! Making sure a BPF filesystem is mounted where we pin.
use std::{ffi::CString, io, path::Path};

/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` lives on a bpffs.
pub fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and st a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(
        clippy::unnecessary_cast,
        reason = "f_type's width differs between libcs"
    )]
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Mounts bpffs on `/sys/fs/bpf` when it is not mounted (this machine does not at boot).
/// Returns true when it mounted something.
pub fn ensure_mounted() -> io::Result<bool> {
    let root = Path::new("/sys/fs/bpf");
    if is_bpffs(root)? {
        return Ok(false);
    }
    let src = CString::new("bpf").expect("static");
    let target = CString::new("/sys/fs/bpf").expect("static");
    // SAFETY: all pointers are valid NUL-terminated strings; data may be null.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}
