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
    /// Entries of the flow table (`FLOWS`). 0 is allowed and means the kernel's minimum: an
    /// LRU map with per-CPU lists needs at least one entry per possible CPU, and the kernel
    /// rounds it up to a multiple of the possible CPUs, so [`Sizing::flow_entries`] does too.
    pub flows: u32,
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
            flows: maps::DEFAULT_MAX_FLOWS,
        }
    }
}

impl Sizing {
    /// Entries of every map vipd sizes; `possible_cpus` as the kernel counts them
    /// (`/sys/devices/system/cpu/possible`), which fixes the size of the flow table.
    pub fn entries(&self, possible_cpus: u32) -> [(&'static str, u32); 13] {
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
            // Egress ports 1..=interfaces (0 is the receiving interface).
            (maps::MAP_EGRESS, self.interfaces + 1),
            (maps::MAP_EGRESS_DEVS, self.interfaces + 1),
            (maps::MAP_FLOWS, self.flow_entries(possible_cpus)),
            // The cluster's encapsulation source of each family.
            (maps::MAP_ENCAP_SOURCES, maps::MAX_ENCAP_SOURCES),
        ]
    }

    /// Entries of `FLOWS` as the kernel will create it: `flows` rounded up to a multiple of
    /// `possible_cpus` (at least one per CPU), so a pinned map's size compares equal.
    pub fn flow_entries(&self, possible_cpus: u32) -> u32 {
        let cpus = possible_cpus.max(1);
        self.flows.max(1).div_ceil(cpus).saturating_mul(cpus)
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
    /// ignoring per-map constant overhead. The flow table is a preallocated hash map: per
    /// entry about 48 bytes of element header (hash node, LRU node, hash) plus the key and
    /// the value, each rounded up to 8 bytes, and a 16-byte bucket per entry rounded up to a
    /// power of two: ~7 MiB for 65536 entries.
    pub fn map_bytes(&self, cpus: u32) -> u64 {
        let (v, b, p) = (self.vips as u64, self.backends as u64, self.peers as u64);
        let counters = (v
            + b
            + (maps::reason::COUNT + maps::flow_stat::COUNT + maps::local_stat::COUNT) as u64)
            * 16
            * cpus as u64;
        let flows = self.flow_entries(cpus) as u64;
        let flow_element = 48
            + size_of::<maps::FlowKey>().next_multiple_of(8) as u64
            + size_of::<maps::FlowEntry>().next_multiple_of(8) as u64;
        let flow_table = flows * flow_element + flows.next_power_of_two() * 16;
        let slots = self.slot_elements() as u64 * maps::ARRAY_ELEMENT_BYTES as u64;
        // ACTIVE uses one 8-byte element per VIP and per fallback table.
        v * (20 + 16 + 8 + 20 + 16)
            + self.fallbacks as u64 * 8
            + b * 32
            + slots
            + p * 16
            + self.interfaces as u64 * 12
            + (self.interfaces as u64 + 1) * (8 + 8)
            + maps::MAX_ENCAP_SOURCES as u64 * 24
            + 32
            + 8
            + maps::IFACE_SLOTS as u64 * 16
            + counters
            + flow_table
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
