//! THE map contract: names, default capacities and value types of every map the XDP program
//! shares with vipd. Every Pod is `#[repr(C)]` with explicit padding and a compile-time size
//! assert; `bytemuck::Pod` proves there is no hidden padding. Flags and modes are integers
//! compared with the constants below, never `bool`/`Option`/enums. vipd sizes every map from
//! its config at load time (`EbpfLoader::map_max_entries`); the capacities here only size the
//! object file's defaults.

use bytemuck::{Pod, Zeroable};

/// Version of this contract: bumped whenever a map's type, key or value layout changes, so
/// that a vipd never adopts pinned maps laid out by another contract.
pub const CONTRACT_VERSION: u32 = 5;

/// Directory under bpffs where program, links and maps are pinned.
pub const PIN_DIR: &str = "/sys/fs/bpf/vip-fabric";

/// Name of the balancer's XDP entry point (also the pinned program's file name).
pub const PROG_XDP: &str = "vip_xdp";
/// Name of the backend-side decapsulation program for encapsulated DSR.
pub const PROG_DECAP: &str = "vip_decap";
/// Benchmark baselines (never attached): swap MACs + XDP_TX, and XDP_PASS.
pub const PROG_BARE_TX: &str = "bare_tx";
pub const PROG_BARE_PASS: &str = "bare_pass";
/// The local-client balancer (cgroup `connect4`/`connect6`/`sendmsg4`/`sendmsg6` programs):
/// see [`MAP_LOCAL_CLIENTS`].
pub const PROG_CONNECT4: &str = "vip_connect4";
pub const PROG_CONNECT6: &str = "vip_connect6";
pub const PROG_SENDMSG4: &str = "vip_sendmsg4";
pub const PROG_SENDMSG6: &str = "vip_sendmsg6";
/// Every local-client program, with the cgroup hook it attaches to.
pub const LOCAL_CLIENT_PROGS: [&str; 4] =
    [PROG_CONNECT4, PROG_CONNECT6, PROG_SENDMSG4, PROG_SENDMSG6];

/// `VipKey` -> [`VipInfo`] (hash map).
pub const MAP_VIPS: &str = "VIPS";
/// Backend index -> [`Backend`] (array).
pub const MAP_BACKENDS: &str = "BACKENDS";
/// Maglev slots of every table generation of every VIP: a backend index per slot, two slots
/// per element (`[u32; 2]`: the kernel rounds array elements up to 8 bytes, so pairs keep the
/// mmap dense). `BPF_F_MMAPABLE`: vipd writes whole tables through mmap, as one flat `u32`
/// array; slot `s` is element `s / 2`, half `s % 2`.
pub const MAP_SLOTS: &str = "SLOTS";
/// VIP index -> offset in [`MAP_SLOTS`] (in slots) of the live table (u32 values,
/// `BPF_F_MMAPABLE`, one 8-byte element per VIP). Publishing a table is one aligned 32-bit
/// store into this map.
pub const MAP_ACTIVE: &str = "ACTIVE";
/// Single-entry array of [`Settings`].
pub const MAP_SETTINGS: &str = "SETTINGS";
/// Source MAC of a cluster node -> [`Peer`] (hash map): frames they forward are delivered
/// locally, never balanced again (loop freedom).
pub const MAP_PEERS: &str = "PEERS";
/// VIP address -> [`Lease`] (hash map), listing the VIP addresses whose ownership the cluster
/// decides; see [`Lease`] for what an expired lease does.
pub const MAP_LEASES: &str = "LEASES";
/// Interface index -> [`Iface`] (hash map): the MAC of each interface the program runs on.
/// A unicast frame for another MAC (a bridge flooding frames for a dead node's MAC, a
/// promiscuous NIC) is passed untouched, never balanced: only the node it was sent to may
/// forward it. An interface without an entry is not checked.
pub const MAP_IFACES: &str = "IFACES";
/// [`IFACE_SLOTS`] entries of [`IfaceSlot`] (array), indexed by interface index modulo their
/// number: the `IFACES` entries again, where the program finds them with an array load instead
/// of a hash lookup (~25 ns a VIP packet in `bench xdp`). An interface whose slot another one
/// holds (or that has none) is looked up in `IFACES` as before, so nothing depends on the
/// indices being distinct. vipd writes a slot right after the `IFACES` entry.
pub const MAP_IFACE_SLOTS: &str = "IFACE_SLOTS";
/// Egress port (`Backend::egress`, 1..) -> [`Iface`] (array): the MAC and MTU of another
/// attached interface a backend's next hop is behind. Index 0 is unused: port 0 means the
/// interface the packet came in on (`XDP_TX`).
pub const MAP_EGRESS: &str = "EGRESS";
/// Egress port -> that interface (`BPF_MAP_TYPE_DEVMAP`, same indices as [`MAP_EGRESS`]): a
/// frame for a backend behind another attached interface (bonds, VLANs, separate internal
/// and external networks) is redirected there (`XDP_REDIRECT`).
pub const MAP_EGRESS_DEVS: &str = "EGRESS_DEVS";
/// Per-CPU [`Counter`] per `reason::*`.
pub const MAP_STATS: &str = "STATS";
/// Per-CPU [`Counter`] per VIP index.
pub const MAP_VIP_STATS: &str = "VIP_STATS";
/// Per-CPU [`Counter`] per backend index.
pub const MAP_BACKEND_STATS: &str = "BACKEND_STATS";
/// [`FlowKey`] -> [`FlowEntry`]: the backend each recent flow of a `VIP_F_FLOWS` VIP went
/// to, so that a table change does not move established connections (Katran's connection
/// table). `BPF_MAP_TYPE_LRU_HASH` with `BPF_F_NO_COMMON_LRU`: one hash shared by every CPU
/// (a flow whose packets arrive on several CPUs finds its entry) with per-CPU LRU lists (no
/// global LRU lock on insert). The kernel evicts the least recently used entry when full;
/// entries never expire otherwise, so an entry can outlive its connection.
pub const MAP_FLOWS: &str = "FLOWS";
/// Per-CPU [`Counter`] per `flow_stat::*`: what the flow table did for `VIP_F_FLOWS` VIPs.
pub const MAP_FLOW_STATS: &str = "FLOW_STATS";

/// [`EncapSourceKey`] -> `u32` (unused, 1) (hash map): where balancers send encapsulated
/// packets from. An IPIP / IP6IP6 packet whose inner packet is for a VIP is decapsulated
/// (`vip_xdp`; `vip_decap`: any IPIP / IP6IP6) only when its outer source, with the per-flow
/// part zeroed ([`crate::encap::encap_source_key`]), is listed; otherwise it is dropped
/// (`reason::DROP_ENCAP_SOURCE`). vipd lists the cluster's `encap_source_v4/v6`.
pub const MAP_ENCAP_SOURCES: &str = "ENCAP_SOURCES";

/// [`VIP_FILTER_WORDS`] `u64` words (array): a bitmap of the VIP addresses, one bit per
/// address at [`vip_filter_bit`]. The program looks a packet's destination up here before any
/// hash lookup and passes it at once when its bit is clear: traffic for no VIP (storage,
/// tenants, management) then costs one array load. Exact: a set bit only sends the packet on
/// to the `VIPS` lookup, so another address sharing a VIP's bit costs that lookup, no more.
/// vipd sets a VIP's bit before writing its `VIPS` entry and clears bits only after removing
/// their last entry. Fixed size (not from the config): the program masks with a constant.
pub const MAP_VIP_FILTER: &str = "VIP_FILTER";

/// [`PEER_FILTER_WORDS`] `u64` words (array): a bitmap of the `PEERS` MACs at
/// [`peer_filter_bit`], checked before the `PEERS` lookup that a VIP packet needs in cluster
/// mode: a frame from a MAC whose bit is clear (the router's, a client's) is not from a peer,
/// with no hash lookup. Exact like [`MAP_VIP_FILTER`]; vipd sets a peer's bit before its
/// `PEERS` entry (either order only delays when frames from it count as a peer's).
pub const MAP_PEER_FILTER: &str = "PEER_FILTER";

/// Single-entry array of [`LocalClients`]. XDP sees only packets from the wire, and every
/// controller holds the VIPs on `lo` (DSR), so a client on a controller connecting to a VIP
/// would always reach its own node's service, and fail while that is dead. The cgroup
/// programs (`PROG_CONNECT4` ...) balance such clients with the same tables: a TCP
/// connect, a UDP connect or an unconnected UDP send to a VIP gets the destination address
/// of the backend the live table picks (the port stays the VIP's); a pick of this node's own
/// backend keeps the VIP (delivered on `lo`) while a socket takes it, otherwise the fallback
/// table picks (second chance). Only sockets of the network namespace whose cookie is here
/// are balanced (0: none): on a host with other namespaces (tenant routers may reuse the
/// VIP's addresses), theirs are left alone.
pub const MAP_LOCAL_CLIENTS: &str = "LOCAL_CLIENTS";
/// Per-CPU [`Counter`] per `local_stat::*` (packets: sockets balanced; bytes unused).
pub const MAP_LOCAL_STATS: &str = "LOCAL_STATS";

/// Every map, in the order vipd pins them.
pub const ALL_MAPS: &[&str] = &[
    MAP_VIPS,
    MAP_BACKENDS,
    MAP_SLOTS,
    MAP_ACTIVE,
    MAP_SETTINGS,
    MAP_PEERS,
    MAP_LEASES,
    MAP_IFACES,
    MAP_STATS,
    MAP_VIP_STATS,
    MAP_BACKEND_STATS,
    MAP_FLOWS,
    MAP_FLOW_STATS,
    MAP_ENCAP_SOURCES,
    MAP_VIP_FILTER,
    MAP_PEER_FILTER,
    MAP_EGRESS,
    MAP_EGRESS_DEVS,
    MAP_LOCAL_CLIENTS,
    MAP_LOCAL_STATS,
    MAP_IFACE_SLOTS,
];

/// Default capacities compiled into the object (vipd overrides them from the config).
pub const DEFAULT_MAX_VIPS: u32 = 64;
pub const DEFAULT_MAX_BACKENDS: u32 = 256;
/// Elements of [`MAP_SLOTS`] (two slots each): both generations of one M=65537 table.
pub const DEFAULT_MAX_SLOT_PAIRS: u32 = 65537;
/// Slots per element of [`MAP_SLOTS`].
pub const SLOTS_PER_ELEMENT: u32 = 2;
/// Bytes the kernel uses per element of an array map whose values are 4 or 8 bytes.
pub const ARRAY_ELEMENT_BYTES: usize = 8;
pub const DEFAULT_MAX_PEERS: u32 = 16;
pub const DEFAULT_MAX_LEASES: u32 = 64;
pub const DEFAULT_MAX_IFACES: u32 = 8;
/// Entries of [`MAP_IFACE_SLOTS`] (a power of two: the program masks the index with it).
pub const IFACE_SLOTS: u32 = 64;
const _: () = assert!(IFACE_SLOTS.is_power_of_two());
/// Entries of [`MAP_ENCAP_SOURCES`]: the cluster's encapsulation source of each family.
pub const MAX_ENCAP_SOURCES: u32 = 2;
/// Entries of [`MAP_FLOWS`] in the object. The kernel rounds an LRU map with
/// `BPF_F_NO_COMMON_LRU` up to a multiple of the possible CPUs (each CPU's LRU list gets an
/// equal share), so vipd asks for such a multiple. 65536 entries take about 7 MiB (see
/// `Sizing::map_bytes`).
pub const DEFAULT_MAX_FLOWS: u32 = 65536;

/// Words of [`MAP_VIP_FILTER`]: 16384 bits (2 KiB, a few cache lines). With n VIP
/// addresses, a packet for another address finds its bit set with probability ~n / 16384.
pub const VIP_FILTER_WORDS: u32 = 256;
/// log2 of the bits of [`MAP_VIP_FILTER`].
const VIP_FILTER_BITS_LOG2: u32 = 14;
const _: () = assert!(VIP_FILTER_WORDS * 64 == 1 << VIP_FILTER_BITS_LOG2);

/// The bit of [`MAP_VIP_FILTER`] for a destination address given as `flow::addr_words`
/// (IPv4: `[word, 0, 0, 0]`): the top bits of a multiplicative hash of the words' XOR. Word
/// `bit / 64`, bit `bit % 64` of it. Both families share the bitmap (a collision between
/// them is one more false positive).
#[inline(always)]
pub const fn vip_filter_bit(addr: &[u32; 4]) -> u32 {
    let x = addr[0] ^ addr[1] ^ addr[2] ^ addr[3];
    // The last octets (the ones that differ within a subnet) are the word's top bits: fold
    // them down so they reach every bit of the product.
    let x = x ^ (x >> 16);
    x.wrapping_mul(0x9e37_79b1) >> (32 - VIP_FILTER_BITS_LOG2)
}

/// The contents of [`MAP_VIP_FILTER`].
pub type VipFilter = [u64; VIP_FILTER_WORDS as usize];

/// The [`MAP_VIP_FILTER`] contents for these VIP addresses (`VipKey::addr`).
pub fn vip_filter<'a>(addrs: impl IntoIterator<Item = &'a [u8; 16]>) -> VipFilter {
    let mut words = [0u64; VIP_FILTER_WORDS as usize];
    for a in addrs {
        let bit = vip_filter_bit(&crate::flow::addr_words(a));
        words[(bit / 64) as usize] |= 1 << (bit % 64);
    }
    words
}

/// Whether [`MAP_VIP_FILTER`] `words` may hold `addr` (false: surely no VIP).
#[inline(always)]
pub fn vip_filter_has(words: &VipFilter, addr: &[u32; 4]) -> bool {
    let bit = vip_filter_bit(addr);
    words[(bit / 64) as usize] & (1 << (bit % 64)) != 0
}

/// Words of [`MAP_PEER_FILTER`]: 1024 bits for a few dozen nodes.
pub const PEER_FILTER_WORDS: u32 = 16;
const PEER_FILTER_BITS_LOG2: u32 = 10;
const _: () = assert!(PEER_FILTER_WORDS * 64 == 1 << PEER_FILTER_BITS_LOG2);

/// The contents of [`MAP_PEER_FILTER`].
pub type PeerFilter = [u64; PEER_FILTER_WORDS as usize];

/// The bit of [`MAP_PEER_FILTER`] for a source MAC: a multiplicative hash of its last four
/// bytes (the ones that differ between one vendor's NICs) mixed with the first two.
#[inline(always)]
pub const fn peer_filter_bit(mac: &[u8; 6]) -> u32 {
    let x = u32::from_le_bytes([mac[2], mac[3], mac[4], mac[5]])
        ^ (u16::from_le_bytes([mac[0], mac[1]]) as u32).rotate_left(16);
    let x = x ^ (x >> 16);
    x.wrapping_mul(0x9e37_79b1) >> (32 - PEER_FILTER_BITS_LOG2)
}

/// The [`MAP_PEER_FILTER`] contents for these peer MACs.
pub fn peer_filter<'a>(macs: impl IntoIterator<Item = &'a [u8; 6]>) -> PeerFilter {
    let mut words = [0u64; PEER_FILTER_WORDS as usize];
    for mac in macs {
        let bit = peer_filter_bit(mac);
        words[(bit / 64) as usize] |= 1 << (bit % 64);
    }
    words
}

/// `BPF_F_MMAPABLE` map flag.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;
/// `BPF_F_NO_COMMON_LRU` map flag: per-CPU LRU lists for an LRU hash map.
pub const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

/// Value of a slot with no backend (no healthy backend): the packet is dropped and counted.
pub const NO_BACKEND: u32 = u32::MAX;

/// Why the program returned what it returned; index into [`MAP_STATS`].
pub mod reason {
    /// Not IPv4/IPv6 (ARP, LLDP, ...), or more VLAN tags than parsed.
    pub const PASS_NOT_IP: u32 = 0;
    /// IP, but not to a VIP.
    pub const PASS_NOT_VIP: u32 = 1;
    /// An IPv4 fragment or an IPv6 fragment header: passed to the local stack.
    pub const PASS_FRAGMENT: u32 = 2;
    /// IPv6 with an extension header other than fragment: passed to the kernel.
    pub const PASS_IPV6_EXT: u32 = 3;
    /// Truncated or inconsistent headers: passed untouched, never forwarded.
    pub const PASS_MALFORMED: u32 = 4;
    /// The chosen backend is this node.
    pub const PASS_LOCAL: u32 = 5;
    /// Forwarded to us by a peer node: delivered locally, not balanced again.
    pub const PASS_FROM_PEER: u32 = 6;
    /// An encapsulated VIP packet from a peer: decapsulated and delivered locally.
    pub const PASS_DECAP: u32 = 7;
    /// ICMP that is not a PMTU error about a VIP flow.
    pub const PASS_ICMP: u32 = 8;
    /// Sent to a backend by L2 DSR (MAC rewrite, XDP_TX).
    pub const TX_L2: u32 = 9;
    /// Sent to a backend encapsulated (IPIP / IP6IP6, XDP_TX).
    pub const TX_ENCAP: u32 = 10;
    /// An ICMP frag-needed / packet-too-big sent on to the backend owning the flow.
    pub const TX_ICMP: u32 = 11;
    /// A VIP with no backend in its table: dropped.
    pub const DROP_NO_BACKEND: u32 = 12;
    /// Growing the packet for encapsulation failed: dropped.
    pub const DROP_ENCAP_FAILED: u32 = 13;
    /// An ARP request or neighbour solicitation for a cluster VIP this node holds no valid
    /// lease for, or a packet for a leased VIP without a lease: dropped.
    pub const DROP_NO_LEASE: u32 = 14;
    /// Second chance: meant for a local service with no socket for it (the service died, or
    /// a TCP segment of a connection made while it was out of the tables); sent encapsulated
    /// to the backend of the VIP's fallback table instead of being reset by the kernel.
    pub const TX_SECOND_CHANCE: u32 = 15;
    /// A VIP packet in a unicast frame for another node's MAC (see `MAP_IFACES`): passed
    /// untouched, not forwarded.
    pub const PASS_OTHER_HOST: u32 = 16;
    /// An IPIP / IP6IP6 packet for a VIP (`vip_decap`: any) whose outer source is not a
    /// balancer's (not in `MAP_ENCAP_SOURCES`): dropped, never decapsulated, so that a host
    /// cannot slip a spoofed inner source past the edge's filters.
    pub const DROP_ENCAP_SOURCE: u32 = 17;
    /// Encapsulation (to a backend or as a second chance) would have grown the packet past
    /// the interface's MTU (`Iface::mtu`): answered with ICMP fragmentation-needed /
    /// packet-too-big from the VIP, so that the client lowers its path MTU (see `icmp`).
    pub const TX_TOO_BIG: u32 = 18;
    /// Likewise too big, but not answerable (IPv4 without DF or with options, or an ICMP
    /// error itself): dropped.
    pub const DROP_TOO_BIG: u32 = 19;
    /// Number of reasons (size of the stats map).
    pub const COUNT: u32 = 20;

    /// Human names, indexed by reason.
    pub const NAMES: [&str; COUNT as usize] = [
        "pass_not_ip",
        "pass_not_vip",
        "pass_fragment",
        "pass_ipv6_ext",
        "pass_malformed",
        "pass_local",
        "pass_from_peer",
        "pass_decap",
        "pass_icmp",
        "tx_l2",
        "tx_encap",
        "tx_icmp",
        "drop_no_backend",
        "drop_encap_failed",
        "drop_no_lease",
        "tx_second_chance",
        "pass_other_host",
        "drop_encap_source",
        "tx_too_big",
        "drop_too_big",
    ];
}

/// What the flow table did with a packet of a `VIP_F_FLOWS` VIP; index into
/// [`MAP_FLOW_STATS`]. A packet counts at most one of `HIT`, `MISS_NEW`, `MISS_MIDSTREAM`,
/// `PREVIOUS`;
/// `STALE` counts entries found unusable, and such a packet then counts a miss as well. ICMP
/// errors (PMTU) only look entries up: they count `HIT` or `STALE`, never a miss.
pub mod flow_stat {
    /// Forwarded to the backend of the flow's entry, not the table's pick.
    pub const HIT: u32 = 0;
    /// Picked from the table and entered: a TCP SYN (always picked afresh, so a backend
    /// that takes no new connections gets none even when a client reuses a 4-tuple), or a
    /// UDP datagram without a usable entry.
    pub const MISS_NEW: u32 = 1;
    /// A TCP segment other than a SYN without a usable entry (evicted, older than the flow
    /// table, or its backend no longer keeps flows), picked from the table and entered: if
    /// the pick differs from where the connection lives, the backend resets it.
    pub const MISS_MIDSTREAM: u32 = 2;
    /// An entry whose backend index now holds another backend (`Backend::serial` differs)
    /// or whose backend no longer keeps flows (`BACKEND_F_KEEP_FLOWS` clear): ignored.
    pub const STALE: u32 = 3;
    /// A TCP segment other than a SYN without a usable entry, of a VIP in its transition
    /// (`VIP_F_PREV_TABLE`): sent to the backend the previous table picks (that backend
    /// still keeps its flows) and entered. Counted instead of `MISS_MIDSTREAM`.
    pub const PREVIOUS: u32 = 4;
    /// Number of counters (size of the map).
    pub const COUNT: u32 = 5;

    /// Human names, indexed by counter.
    pub const NAMES: [&str; COUNT as usize] =
        ["hit", "miss_new", "miss_midstream", "stale", "previous"];
}

/// What the local-client programs did with a socket's destination; index into
/// [`MAP_LOCAL_STATS`].
pub mod local_stat {
    /// Sent to another node's backend: the destination became its address.
    pub const BACKEND: u32 = 0;
    /// This node's own backend, which has a socket for it: left to the VIP on `lo`.
    pub const LOCAL: u32 = 1;
    /// This node's own backend without a socket (the service died, the tables have not
    /// caught up yet): sent to the fallback table's pick instead.
    pub const SECOND_CHANCE: u32 = 2;
    /// No backend to send it to (an empty table, or a dead own service and no fallback):
    /// left as it was.
    pub const UNBALANCED: u32 = 3;
    /// Number of counters (size of the map).
    pub const COUNT: u32 = 4;

    /// Human names, indexed by counter.
    pub const NAMES: [&str; COUNT as usize] = ["backend", "local", "second_chance", "unbalanced"];
}

/// Value of [`MAP_LOCAL_CLIENTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct LocalClients {
    /// `SO_NETNS_COOKIE` of vipd's network namespace: only its sockets are balanced.
    pub netns_cookie: u64,
}
const _: () = assert!(core::mem::size_of::<LocalClients>() == 8);

/// A VIP: destination address, port (host order; 0 = every port) and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct VipKey {
    /// IPv4 in the first 4 bytes (rest zero) or IPv6.
    pub addr: [u8; 16],
    pub port: u16,
    pub proto: u8,
    /// `wire::FAMILY_V4` or `wire::FAMILY_V6`.
    pub family: u8,
}
const _: () = assert!(core::mem::size_of::<VipKey>() == 20);

// The `from_words` constructors lay fields out as little-endian words (bpfel and x86-64).
#[cfg(target_endian = "big")]
compile_error!("the map contract's word constructors assume a little-endian target");

impl VipKey {
    /// The key of destination `addr` (as `flow::addr_words`), built from five whole words: the
    /// program stores them with five 32-bit stores instead of sixteen byte stores and a
    /// byte-by-byte memset (the eBPF target has no wide memset).
    #[inline(always)]
    pub fn from_words(addr: &[u32; 4], port: u16, proto: u8, family: u8) -> Self {
        let tail = port as u32 | (proto as u32) << 16 | (family as u32) << 24;
        bytemuck::cast([addr[0], addr[1], addr[2], addr[3], tail])
    }
}

/// `VipInfo::flags`: hash the source address only (session affinity).
pub const VIP_F_SRC_HASH: u32 = 1;
/// `VipInfo::flags`: forward only while this node holds a valid lease for the VIP's address
/// (primary/backup VIPs in a cluster: a demoted or stalled node must not keep forwarding).
pub const VIP_F_LEASED: u32 = 2;
/// `VipInfo::flags`: keep established flows on their backend through table changes with
/// the flow table ([`MAP_FLOWS`]). Set for Maglev VIPs without second chance (a backend
/// that does not run vipd cannot hand a stray connection back); VIPs without it never touch
/// the flow table.
pub const VIP_F_FLOWS: u32 = 4;
/// `VipInfo::flags`, with [`VIP_F_FLOWS`]: the VIP is in a transition after a table change
/// its flow table cannot have seen (it switched from second chance to the flow table, so
/// connections made before have no entries). A TCP segment other than a SYN without a usable
/// entry goes to the backend of the previous table (the live table before the change, at
/// `ACTIVE[fallback - 1]`) while that backend has `BACKEND_F_KEEP_FLOWS`, else to the live
/// table's pick; either is entered. vipd sets it at the switch and clears it when the
/// transition ends (the VIP's `drain_timeout`); it never sets it without `fallback`.
pub const VIP_F_PREV_TABLE: u32 = 8;
/// `VipInfo::flags`, without [`VIP_F_FLOWS`]: the VIP left the flow table (a reload removed
/// its last backend that does not run vipd, so it went back to second chance) and its
/// connections still have entries there, made by this node while it owned the VIP. A packet
/// other than a TCP SYN with a usable entry goes to the entry's backend; any other packet is
/// picked as usual (live table, second chance) and no entry is made. Without it, a
/// connection whose slot the change moved would be sent to a node that may still run the
/// flow table (nodes reload one by one) and so gives no second chance: reset. vipd sets it
/// at the switch and clears it after the VIP's `drain_timeout`.
pub const VIP_F_FLOWS_EXIT: u32 = 16;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VipInfo {
    /// Index into [`MAP_ACTIVE`], [`MAP_VIP_STATS`].
    pub index: u32,
    /// Maglev table size M (prime; 1 for primary/backup VIPs: one slot, the chosen backend).
    pub table_size: u32,
    /// `VIP_F_*` bits.
    pub flags: u32,
    /// 1 + the `ACTIVE` index of this VIP's second table, 0 for none (zero-initialised means
    /// off). Without `VIP_F_FLOWS`: second chance's fallback table (its live table without
    /// this node's own backends): a packet that would be delivered locally but finds no
    /// local socket (the service died) is sent, encapsulated, to the backend the fallback
    /// table picks. With `VIP_F_FLOWS`: the previous table, read only while
    /// `VIP_F_PREV_TABLE` is set; a flow-table VIP never takes a second chance.
    pub fallback: u32,
}
const _: () = assert!(core::mem::size_of::<VipInfo>() == 16);

/// `Backend::mode`: rewrite MACs and transmit (backend on the same L2 segment).
pub const FWD_L2: u8 = 1;
/// `Backend::mode`: this node is the backend; pass to the local stack.
pub const FWD_LOCAL: u8 = 2;
/// `Backend::mode`: encapsulate (IPv4-in-IPv4 / IPv6-in-IPv6) to the backend's address.
pub const FWD_ENCAP: u8 = 3;

/// `Backend::flags`: established flows may stay on this backend (flow table entries pointing
/// at it are used). vipd sets it while the backend is up and enabled, or draining; clears
/// it when the backend is down, disabled or its drain is over, so its flows move to the
/// table's pick.
pub const BACKEND_F_KEEP_FLOWS: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Backend {
    /// Backend address (IPv4 in the first 4 bytes), the outer destination for `FWD_ENCAP`.
    pub addr: [u8; 16],
    /// MAC of the backend (L2) or of the next hop towards it (encap).
    pub mac: [u8; 6],
    /// `wire::FAMILY_*`.
    pub family: u8,
    /// `FWD_*`; 0 means unset (the packet is dropped as having no backend).
    pub mode: u8,
    /// Identity of the backend holding this index, never reused for another backend (0: no
    /// backend). A flow entry records it, so an entry made for an earlier holder of a reused
    /// index is ignored.
    pub serial: u32,
    /// `BACKEND_F_*` bits.
    pub flags: u8,
    /// The attached interface the next hop is behind, as an index into [`MAP_EGRESS`] and
    /// [`MAP_EGRESS_DEVS`]; 0: the interface the packet came in on (`XDP_TX`). An entry
    /// written before this field existed had zero padding here.
    pub egress: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<Backend>() == 32);

/// Key of [`MAP_FLOWS`]: a flow in the client -> VIP direction, as the program parses it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FlowKey {
    /// Client address (IPv4 in the first 4 bytes, rest zero, like [`VipKey::addr`]).
    pub src: [u8; 16],
    /// VIP address, same layout.
    pub dst: [u8; 16],
    /// Ports in host order.
    pub sport: u16,
    pub dport: u16,
    /// `wire::IPPROTO_TCP` or `wire::IPPROTO_UDP`.
    pub proto: u8,
    /// `wire::FAMILY_V4` or `wire::FAMILY_V6`.
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

impl FlowKey {
    /// Like [`VipKey::from_words`]; addresses as `flow::addr_words`.
    #[inline(always)]
    pub fn from_words(
        src: &[u32; 4],
        dst: &[u32; 4],
        (sport, dport): (u16, u16),
        proto: u8,
        family: u8,
    ) -> Self {
        bytemuck::cast([
            src[0],
            src[1],
            src[2],
            src[3],
            dst[0],
            dst[1],
            dst[2],
            dst[3],
            sport as u32 | (dport as u32) << 16,
            proto as u32 | (family as u32) << 8,
        ])
    }
}

/// Value of [`MAP_FLOWS`]: where the flow went.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowEntry {
    /// Index into [`MAP_BACKENDS`].
    pub backend: u32,
    /// `Backend::serial` of that backend when the entry was made; the entry is used only
    /// while they are equal.
    pub serial: u32,
}
const _: () = assert!(core::mem::size_of::<FlowEntry>() == 8);

/// `Settings::flags`: `PEERS` has entries (otherwise the per-packet peer lookup is skipped).
pub const SETTINGS_F_PEERS: u32 = 1;
/// `Settings::flags`: some VIP covers every port (otherwise a miss on the exact port is final).
pub const SETTINGS_F_ALL_PORTS: u32 = 2;
/// `Settings::flags`: log each VIP packet's fate to `AYA_LOGS` (`vipd debug packets`).
pub const SETTINGS_F_DEBUG: u32 = 4;
/// With `SETTINGS_F_DEBUG`: only packets to `Settings::debug_vip`.
pub const SETTINGS_F_DEBUG_VIP: u32 = 8;
/// With `SETTINGS_F_DEBUG`: only packets from `Settings::debug_src`.
pub const SETTINGS_F_DEBUG_SRC: u32 = 16;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Settings {
    /// Cluster-wide flow hash seed: every node must use the same one.
    pub hash_seed: u32,
    /// Base of per-flow outer IPv4 sources for encapsulation (last two bytes from the hash).
    pub encap_src_v4: [u8; 4],
    /// Fingerprint of the map layout vipd wrote (VIP and backend indices, table regions); a
    /// restarted vipd adopts the pinned maps only when its own layout has the same one. Not
    /// read by the XDP program.
    pub layout_id: u32,
    /// `SETTINGS_F_*` bits: which optional lookups the program must do.
    pub flags: u32,
    /// Base of per-flow outer IPv6 sources (last four bytes from the hash).
    pub encap_src_v6: [u8; 16],
    /// `SETTINGS_F_DEBUG_VIP`: the VIP address logged, as `flow::addr_words`.
    pub debug_vip: [u32; 4],
    /// `SETTINGS_F_DEBUG_SRC`: the client address logged, as `flow::addr_words`.
    pub debug_src: [u32; 4],
}
const _: () = assert!(core::mem::size_of::<Settings>() == 64);

/// Per-CPU scratch entry through which `vipd debug packets` passes a packet's notes from
/// the balancer's deep path to the program's entry, which logs them (`AYA_LOGS`, aya-log):
/// logging from the deep path would stack aya-log's record on the balancer's frame past the
/// verifier's 512 bytes. One per loaded program, never pinned, so not in [`ALL_MAPS`].
pub const MAP_PACKET_NOTES: &str = "PACKET_NOTES";

/// Set in a verdict's reason when the packet left a note in [`MAP_PACKET_NOTES`]; the entry
/// clears it before counting.
pub const REASON_F_NOTED: u32 = 1 << 31;
/// Set in a verdict's reason when the packet is to be answered "too big" (bits 8-23: the MTU
/// to announce): the program's entry builds the answer, off the balancer's stack frame.
pub const REASON_F_TOO_BIG: u32 = 1 << 30;

/// What the balancer knew of a packet for a VIP: its flow and the VIP's entry (the record
/// adds the live table's slot and backend for the flow, and the verdict).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PacketNote {
    /// As `flow::addr_words`.
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
    pub vip: VipInfo,
    /// The XDP action << 8 | the reason, written by the program's entry.
    pub verdict: u32,
}
const _: () = assert!(core::mem::size_of::<PacketNote>() == 60);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PeerKey {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<PeerKey>() == 8);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Peer {
    /// Cluster node id (informational).
    pub node_id: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Peer>() == 8);

/// Value of [`MAP_IFACES`] (keyed by the interface index, a `u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Iface {
    pub mac: [u8; 6],
    /// The interface's MTU: a packet that encapsulation would grow past it is answered
    /// `reason::TX_TOO_BIG` instead. 0: not known, not checked (an entry written before
    /// this field existed had zero padding here).
    pub mtu: u16,
}
const _: () = assert!(core::mem::size_of::<Iface>() == 8);

/// Value of [`MAP_IFACE_SLOTS`]: an `IFACES` entry with its key, the MAC as two words in
/// memory order so that the program compares it with a frame's destination in two loads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct IfaceSlot {
    /// The interface index; 0 (never a device's): an empty slot.
    pub ifindex: u32,
    /// MAC bytes 0..4 and 4..6, as little-endian loads of them give.
    pub mac_lo: u32,
    pub mac_hi: u16,
    /// [`Iface::mtu`].
    pub mtu: u16,
}
const _: () = assert!(core::mem::size_of::<IfaceSlot>() == 12);

impl IfaceSlot {
    #[inline(always)]
    pub fn new(ifindex: u32, iface: Iface) -> Self {
        let m = iface.mac;
        Self {
            ifindex,
            mac_lo: u32::from_le_bytes([m[0], m[1], m[2], m[3]]),
            mac_hi: u16::from_le_bytes([m[4], m[5]]),
            mtu: iface.mtu,
        }
    }

    /// The slot of interface `ifindex`.
    #[inline(always)]
    pub const fn index(ifindex: u32) -> u32 {
        ifindex & (IFACE_SLOTS - 1)
    }
}

/// Key of [`MAP_LEASES`]: a VIP address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct LeaseKey {
    /// IPv4 in the first 4 bytes (rest zero) or IPv6.
    pub addr: [u8; 16],
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<LeaseKey>() == 20);

impl LeaseKey {
    /// Like [`VipKey::from_words`].
    #[inline(always)]
    pub fn from_words(addr: &[u32; 4], family: u8) -> Self {
        bytemuck::cast([addr[0], addr[1], addr[2], addr[3], family as u32])
    }
}

/// Key of [`MAP_ENCAP_SOURCES`]: an outer source address with its per-flow part zeroed (see
/// [`crate::encap::encap_source_key`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct EncapSourceKey {
    /// IPv4 in the first 4 bytes (rest zero) or IPv6.
    pub addr: [u8; 16],
    /// `wire::FAMILY_V4` or `wire::FAMILY_V6`.
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<EncapSourceKey>() == 20);

/// This node's data-plane lease on a VIP address. vipd lists every cluster VIP; the owner
/// renews `expiry_ns` (CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`) while it is in
/// quorum. A listed address whose lease has expired (0: never held) is not answered for (ARP
/// and NS dropped) and, for `VIP_F_LEASED` VIPs, not forwarded: a stalled vipd or a cut-off
/// node stops attracting VIP traffic within one lease with no userspace action.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Lease {
    pub expiry_ns: u64,
    pub epoch: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Lease>() == 16);

impl Lease {
    /// Whether the lease is valid at `now_ns`.
    #[inline(always)]
    pub const fn valid(&self, now_ns: u64) -> bool {
        self.expiry_ns > now_ns
    }
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
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::VipInfo {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::Settings {}
    unsafe impl aya::Pod for super::PeerKey {}
    unsafe impl aya::Pod for super::Peer {}
    unsafe impl aya::Pod for super::Iface {}
    unsafe impl aya::Pod for super::Counter {}
    unsafe impl aya::Pod for super::LeaseKey {}
    unsafe impl aya::Pod for super::Lease {}
    unsafe impl aya::Pod for super::LocalClients {}
    unsafe impl aya::Pod for super::IfaceSlot {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::FlowEntry {}
    unsafe impl aya::Pod for super::EncapSourceKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::addr_words;

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut x = [0; 16];
        x[..4].copy_from_slice(&a);
        x
    }

    #[test]
    fn iface_slot_mac_words_are_the_frame_loads() {
        let mac = [0x02, 0x77, 0x00, 0xab, 0xcd, 0xef];
        let s = IfaceSlot::new(9, Iface { mac, mtu: 1500 });
        assert_eq!(s.mac_lo.to_le_bytes(), [0x02, 0x77, 0x00, 0xab]);
        assert_eq!(s.mac_hi.to_le_bytes(), [0xcd, 0xef]);
        assert_eq!(IfaceSlot::index(9 + IFACE_SLOTS), 9);
    }

    #[test]
    fn word_constructors_equal_the_field_by_field_keys() {
        let v6 = [
            0x20, 0x01, 0x0d, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x10,
        ];
        for (addr, family) in [(v4([192, 0, 2, 10]), 4), (v6, 6)] {
            let w = addr_words(&addr);
            let vip = VipKey {
                addr,
                port: 0xabcd,
                proto: 17,
                family,
            };
            assert_eq!(VipKey::from_words(&w, 0xabcd, 17, family), vip);
            let lease = LeaseKey {
                addr,
                family,
                _pad: [0; 3],
            };
            assert_eq!(LeaseKey::from_words(&w, family), lease);
            let other = addr_words(&v4([198, 51, 100, 7]));
            let flow = FlowKey {
                src: v4([198, 51, 100, 7]),
                dst: addr,
                sport: 0x1234,
                dport: 0xfedc,
                proto: 6,
                family,
                _pad: [0; 2],
            };
            assert_eq!(
                FlowKey::from_words(&other, &w, (0x1234, 0xfedc), 6, family),
                flow
            );
        }
    }

    #[test]
    fn vip_filter_holds_every_vip_address_and_few_others() {
        let mut v6 = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let vips = [v4([192, 0, 2, 10]), v4([10, 1, 2, 3]), v6];
        let words = vip_filter(&vips);
        for a in &vips {
            assert!(vip_filter_has(&words, &addr_words(a)), "{a:?}");
        }
        assert_eq!(words.iter().map(|w| w.count_ones()).sum::<u32>(), 3);
        // Neighbouring addresses spread over the bitmap: false positives stay rare.
        let mut hits = 0;
        for i in 0..=255u8 {
            for j in 0..16u8 {
                hits += u32::from(vip_filter_has(&words, &addr_words(&v4([192, 0, j, i]))));
                v6[15] = i;
                v6[14] = j;
                hits += u32::from(vip_filter_has(&words, &addr_words(&v6)));
            }
        }
        // 8192 probes, 2 of them VIPs, against 3 of 16384 bits.
        assert!(hits <= 2 + 16, "{hits} hits");
        assert!(vip_filter(&[]).iter().all(|w| *w == 0));
    }

    #[test]
    fn peer_filter_holds_every_peer_mac() {
        let peers = [[2, 0, 0, 0, 0xee, 1], [0x52, 0x54, 0, 0x12, 0x34, 0x56]];
        let words = peer_filter(&peers);
        for mac in &peers {
            let bit = peer_filter_bit(mac);
            assert!(
                words[(bit / 64) as usize] & (1 << (bit % 64)) != 0,
                "{mac:?}"
            );
        }
        let mut others = 0;
        for i in 0..=255u8 {
            let bit = peer_filter_bit(&[2, 0, 0, 0, 0xee, i]);
            others += u32::from(words[(bit / 64) as usize] & (1 << (bit % 64)) != 0);
        }
        // 256 neighbours (one of them a peer) against 2 of 1024 bits.
        assert!(others <= 1 + 4, "{others}");
    }
}
