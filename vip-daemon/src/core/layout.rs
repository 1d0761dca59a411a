//! How the config maps onto the BPF maps: capacities and where each VIP's tables live.
//! Pure data; the shell sizes and fills the maps from it.
use vip_common::maps;

/// Map capacities, computed from the config (never the maximum the kernel allows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizing {
    pub vips: u32,
    /// Second-chance fallback tables (their `ACTIVE` words follow the VIPs').
    pub fallbacks: u32,
    pub backends: u32,
    /// Maglev slots, all generations of all VIPs (rounded up to whole elements).
    pub slots: u32,
    pub peers: u32,
    /// Interfaces the program is attached to (their MACs in `IFACES`).
    pub interfaces: u32,
}

impl Default for Sizing {
    fn default() -> Self {
        Self {
            vips: maps::DEFAULT_MAX_VIPS,
            fallbacks: 0,
            backends: maps::DEFAULT_MAX_BACKENDS,
            slots: maps::DEFAULT_MAX_SLOT_PAIRS * maps::SLOTS_PER_ELEMENT,
            peers: maps::DEFAULT_MAX_PEERS,
            interfaces: maps::DEFAULT_MAX_IFACES,
        }
    }
}

impl Sizing {
    pub fn entries(&self) -> [(&'static str, u32); 9] {
        [
            (maps::MAP_VIPS, self.vips.max(1)),
            (maps::MAP_ACTIVE, (self.vips + self.fallbacks).max(1)),
            (maps::MAP_VIP_STATS, self.vips.max(1)),
            (maps::MAP_BACKENDS, self.backends.max(1)),
            (maps::MAP_BACKEND_STATS, self.backends.max(1)),
            (maps::MAP_SLOTS, self.slot_elements()),
            (maps::MAP_PEERS, self.peers.max(1)),
            // At most one lease per VIP address.
            (maps::MAP_LEASES, self.vips.max(1)),
            (maps::MAP_IFACES, self.interfaces.max(1)),
        ]
    }

    /// Elements of the SLOTS map (two slots each).
    pub fn slot_elements(&self) -> u32 {
        self.slots.div_ceil(maps::SLOTS_PER_ELEMENT).max(1)
    }

    /// Slots the SLOTS map really holds (`slots` rounded up to whole elements).
    pub fn slot_capacity(&self) -> u32 {
        self.slot_elements() * maps::SLOTS_PER_ELEMENT
    }

    /// Bytes of kernel memory the maps take (values and keys, per-CPU maps times the CPUs),
    /// ignoring per-map constant overhead.
    pub fn map_bytes(&self, cpus: u32) -> u64 {
        let (v, b, p) = (self.vips as u64, self.backends as u64, self.peers as u64);
        let counters = (v + b + maps::reason::COUNT as u64) * 16 * cpus as u64;
        let slots = self.slot_elements() as u64 * maps::ARRAY_ELEMENT_BYTES as u64;
        // ACTIVE uses one 8-byte element per VIP and per fallback table.
        v * (20 + 16 + 8 + 20 + 16)
            + self.fallbacks as u64 * 8
            + b * 32
            + slots
            + p * 16
            + self.interfaces as u64 * 12
            + 32
            + counters
    }
}

/// Where a VIP's two table generations live in `SLOTS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableRegion {
    /// The VIP's index (its word in `ACTIVE`).
    pub vip_index: u32,
    /// Offset of generation 0; generation 1 follows at `base + size`.
    pub base: u32,
    /// Table size M.
    pub size: u32,
}

impl TableRegion {
    /// Slots needed for both generations.
    pub const fn slots(&self) -> u32 {
        2 * self.size
    }
}
