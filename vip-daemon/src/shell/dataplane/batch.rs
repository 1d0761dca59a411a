//! Reading a whole per-CPU counter array with `BPF_MAP_LOOKUP_BATCH`: a few syscalls for the
//! map instead of one per entry (aya reads entry by entry: thousands of syscalls that held
//! the event loop, and the verdicts queued behind a `status`, for milliseconds).
use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

use aya::maps::{Map, MapData};
use vip_common::maps::Counter;

use super::DataplaneError;

/// `BPF_MAP_LOOKUP_BATCH` (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The kernel's ENOTSUPP (not in libc): a map type without batch operations.
const ENOTSUPP: i32 = 524;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every entry of a per-CPU array of [`Counter`], summed over the `cpus` possible CPUs. None
/// when the kernel has no batch lookup for it (the caller reads entry by entry).
pub(super) fn sum_per_cpu_batch(
    map: &Map,
    cpus: usize,
    name: &'static str,
) -> Result<Option<Vec<Counter>>, DataplaneError> {
    let Map::PerCpuArray(data) = map else {
        return Err(DataplaneError::MissingMap(name));
    };
    let entries = data.info()?.max_entries() as usize;
    match lookup_all(data, entries, cpus) {
        Ok(values) => Ok(Some(
            values
                .chunks_exact(cpus.max(1))
                .map(|per_cpu| {
                    per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                        packets: acc.packets + c.packets,
                        bytes: acc.bytes + c.bytes,
                    })
                })
                .collect(),
        )),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(DataplaneError::Batch { map: name, source }),
    }
}

/// `entries` x `cpus` counters, entry-major, read in as few batches as the kernel allows.
fn lookup_all(data: &MapData, entries: usize, cpus: usize) -> io::Result<Vec<Counter>> {
    let mut keys = vec![0u32; entries];
    let mut values = vec![Counter::default(); entries * cpus];
    let (mut done, mut token, mut first) = (0usize, 0u32, true);
    while done < entries {
        let mut next = 0u32;
        let mut attr = BatchAttr {
            // The array's batch token is the next key; null starts at the first.
            in_batch: if first {
                0
            } else {
                &token as *const u32 as u64
            },
            out_batch: &mut next as *mut u32 as u64,
            keys: keys[done..].as_mut_ptr() as u64,
            values: values[done * cpus..].as_mut_ptr() as u64,
            count: (entries - done) as u32,
            map_fd: data.fd().as_fd().as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: `attr` points at buffers with room for `count` keys and per-CPU values
        // (Counter is 16 bytes: already the 8-byte-rounded per-CPU stride), alive for the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let err = (rc < 0).then(io::Error::last_os_error);
        done += attr.count as usize;
        match err {
            // ENOENT: the end of the map, with the last entries filled.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => break,
            Some(e) => return Err(e),
            None if attr.count == 0 => break,
            None => {}
        }
        (token, first) = (next, false);
    }
    values.truncate(done * cpus);
    Ok(values)
}
