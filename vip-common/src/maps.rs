//! Map names, capacities and value types. Every Pod here is `#[repr(C)]` with explicit
//! padding, and its size is asserted at compile time; `bytemuck::Pod` proves no hidden padding.

use bytemuck::{Pod, Zeroable};

/// Directory under bpffs where program, links and maps are pinned.
pub const PIN_DIR: &str = "/sys/fs/bpf/vip-fabric";

/// Name of the XDP entry point (also the pinned program's file name).
pub const PROG_XDP: &str = "vip_xdp";

/// Per-CPU array of [`Counter`], indexed by a `reason::*` constant.
pub const MAP_STATS: &str = "STATS";

/// Why the program returned what it returned; index into [`MAP_STATS`].
pub mod reason {
    /// Every packet the program saw.
    pub const SEEN: u32 = 0;
    /// Number of slots in the stats map.
    pub const COUNT: u32 = 1;
}

/// A packet and byte counter (per CPU when stored in a per-CPU map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counter>() == 16);

#[cfg(feature = "user")]
mod user {
    // SAFETY: every type below is #[repr(C)], has no padding (bytemuck::Pod proves it) and is
    // valid for any bit pattern.
    unsafe impl aya::Pod for super::Counter {}
}
