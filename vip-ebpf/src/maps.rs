//! The only map statics of the program, typed from `vip_common::maps`. Capacities here are
//! the object's defaults; vipd resizes every map from its config before loading.
use aya_ebpf::{
    btf_maps::{Array, DevMap, HashMap, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use vip_common::maps::{
    flow_stat, local_stat, reason, Backend, Counter, EncapSourceKey, FlowEntry, FlowKey, Iface,
    IfaceSlot, Lease, LeaseKey, LocalClients, PacketNote, Peer, PeerKey, Settings, VipInfo, VipKey,
    BPF_F_MMAPABLE, BPF_F_NO_COMMON_LRU, DEFAULT_MAX_BACKENDS, DEFAULT_MAX_FLOWS,
    DEFAULT_MAX_IFACES, DEFAULT_MAX_LEASES, DEFAULT_MAX_PEERS, DEFAULT_MAX_SLOT_PAIRS,
    DEFAULT_MAX_VIPS, MAX_ENCAP_SOURCES, PEER_FILTER_WORDS, VIP_FILTER_WORDS,
};

const MMAPABLE: usize = BPF_F_MMAPABLE as usize;
const NO_COMMON_LRU: usize = BPF_F_NO_COMMON_LRU as usize;

#[btf_map]
pub static VIPS: HashMap<VipKey, VipInfo, { DEFAULT_MAX_VIPS as usize }> = HashMap::new();
#[btf_map]
pub static BACKENDS: Array<Backend, { DEFAULT_MAX_BACKENDS as usize }> = Array::new();
#[btf_map]
pub static SLOTS: Array<[u32; 2], { DEFAULT_MAX_SLOT_PAIRS as usize }, MMAPABLE> = Array::new();
#[btf_map]
pub static ACTIVE: Array<u32, { DEFAULT_MAX_VIPS as usize }, MMAPABLE> = Array::new();
#[btf_map]
pub static SETTINGS: Array<Settings, 1> = Array::new();
#[btf_map]
pub static PEERS: HashMap<PeerKey, Peer, { DEFAULT_MAX_PEERS as usize }> = HashMap::new();
#[btf_map]
pub static LEASES: HashMap<LeaseKey, Lease, { DEFAULT_MAX_LEASES as usize }> = HashMap::new();
#[btf_map]
pub static ENCAP_SOURCES: HashMap<EncapSourceKey, u32, { MAX_ENCAP_SOURCES as usize }> =
    HashMap::new();
#[btf_map]
pub static VIP_FILTER: Array<u64, { VIP_FILTER_WORDS as usize }> = Array::new();
#[btf_map]
pub static PEER_FILTER: Array<u64, { PEER_FILTER_WORDS as usize }> = Array::new();
#[btf_map]
pub static IFACES: HashMap<u32, Iface, { DEFAULT_MAX_IFACES as usize }> = HashMap::new();
#[btf_map]
pub static IFACE_SLOTS: Array<IfaceSlot, { vip_common::maps::IFACE_SLOTS as usize }> = Array::new();
#[btf_map]
pub static EGRESS: Array<Iface, { DEFAULT_MAX_IFACES as usize + 1 }> = Array::new();
#[btf_map]
pub static EGRESS_DEVS: DevMap<{ DEFAULT_MAX_IFACES as usize + 1 }> = DevMap::new();
#[btf_map]
pub static STATS: PerCpuArray<Counter, { reason::COUNT as usize }> = PerCpuArray::new();
#[btf_map]
pub static VIP_STATS: PerCpuArray<Counter, { DEFAULT_MAX_VIPS as usize }> = PerCpuArray::new();
#[btf_map]
pub static BACKEND_STATS: PerCpuArray<Counter, { DEFAULT_MAX_BACKENDS as usize }> =
    PerCpuArray::new();

#[btf_map]
pub static FLOWS: LruHashMap<FlowKey, FlowEntry, { DEFAULT_MAX_FLOWS as usize }, NO_COMMON_LRU> =
    LruHashMap::new();
#[btf_map]
pub static FLOW_STATS: PerCpuArray<Counter, { flow_stat::COUNT as usize }> = PerCpuArray::new();

#[btf_map]
pub static LOCAL_CLIENTS: Array<LocalClients, 1> = Array::new();
#[btf_map]
pub static LOCAL_STATS: PerCpuArray<Counter, { local_stat::COUNT as usize }> = PerCpuArray::new();

/// `vipd debug packets`: see `vip_common::maps::MAP_PACKET_NOTES`.
#[btf_map]
pub static PACKET_NOTES: PerCpuArray<PacketNote, 1> = PerCpuArray::new();

/// Adds one packet of `bytes` to slot `index` of a per-CPU counter map.
#[inline(always)]
pub fn count<const N: usize>(map: &PerCpuArray<Counter, N>, index: u32, bytes: u64) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot is only touched by this CPU while the program runs.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}
