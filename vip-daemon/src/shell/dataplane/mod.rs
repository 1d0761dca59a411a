//! Loading, attaching, pinning and adopting the XDP program and its maps (aya).
//!
//! Layout under the pin directory (default [`PIN_DIR`]):
//! `prog_vip_xdp` (program), `link_<iface>` (one XDP link per interface) and one file per map,
//! named as in `vip_common::maps`, and `cgroup_<program>` (the local-client programs' links). A restarted vipd adopts whatever is pinned there; only
//! [`detach`] removes it.
use std::{
    io,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, HashMap, MapError, PerCpuArray},
    programs::{links::FdLink, links::PinnedLink, xdp::XdpLink, ProgramError, Xdp, XdpMode},
    Ebpf, EbpfError, EbpfLoader,
};
use vip_common::maps::{
    self as contract, Backend, Counter, FlowEntry, FlowKey, Iface, Lease, LeaseKey, Peer, PeerKey,
    Settings, VipInfo, VipKey,
};

mod batch;
mod local_clients;
mod tables;
mod writer;
pub use crate::core::layout::{Sizing, TableRegion};
pub use local_clients::{cgroup2_root, LocalClientsAttached};
pub use tables::{Prepare, TablePublisher, RETIRE_GRACE};
pub use writer::MapWriter;

/// The XDP object built by build.rs from the `vip-ebpf` crate.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vip-xdp"));

pub use vip_common::maps::PIN_DIR;

/// Names of every map in the object, pinned one file each.
pub const MAP_NAMES: &[&str] = contract::ALL_MAPS;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("cannot prepare bpffs pin directory {path}: {source}")]
    PinDir { path: PathBuf, source: io::Error },
    #[error("loading the XDP object failed: {0}")]
    Load(#[from] EbpfError),
    #[error("cannot read the possible CPUs from {path}: {source}")]
    PossibleCpus {
        path: &'static str,
        source: io::Error,
    },
    #[error("program {0} missing from the object")]
    MissingProgram(&'static str),
    #[error("map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("program operation failed: {0}")]
    Program(#[from] ProgramError),
    #[error("map operation failed: {0}")]
    Map(#[from] MapError),
    #[error("interface {iface}: {msg}")]
    Interface { iface: String, msg: String },
    #[error("pinning failed: {0}")]
    Pin(String),
    #[error("egress device map: {0}")]
    Egress(String),
    #[error("mmap of map {map} failed: {source}")]
    Mmap {
        map: &'static str,
        source: io::Error,
    },
    #[error("batch read of map {map} failed: {source}")]
    Batch {
        map: &'static str,
        source: io::Error,
    },
    #[error("table of {got} slots does not fit (expected {expected})")]
    TableSize { expected: u32, got: usize },
    #[error(
        "pinned map {name} has {pinned} entries but the config needs {wanted}: \
         run `vipd detach` on every interface to start afresh"
    )]
    PinnedSize {
        name: &'static str,
        pinned: u32,
        wanted: u32,
    },
    #[error(
        "pinned map {name} stores {pinned} but this vipd's map contract says {wanted} \
         (laid out by another version)"
    )]
    PinnedShape {
        name: &'static str,
        pinned: String,
        wanted: String,
    },
}

/// (key size, value size) of every map, from the contract's types: a pinned map is adopted
/// only when it has exactly these.
fn expected_shape(name: &str) -> Option<(u32, u32)> {
    use std::mem::size_of;
    let u32s = size_of::<u32>() as u32;
    let sz = |n: usize| n as u32;
    Some(match name {
        contract::MAP_VIPS => (sz(size_of::<VipKey>()), sz(size_of::<VipInfo>())),
        contract::MAP_BACKENDS => (u32s, sz(size_of::<Backend>())),
        contract::MAP_SLOTS => (u32s, 2 * u32s),
        contract::MAP_ACTIVE => (u32s, u32s),
        contract::MAP_SETTINGS => (u32s, sz(size_of::<Settings>())),
        contract::MAP_PEERS => (sz(size_of::<PeerKey>()), sz(size_of::<Peer>())),
        contract::MAP_LEASES => (sz(size_of::<LeaseKey>()), sz(size_of::<Lease>())),
        contract::MAP_IFACES | contract::MAP_EGRESS => (u32s, sz(size_of::<Iface>())),
        // `struct bpf_devmap_val`: the interface index and a program id.
        contract::MAP_EGRESS_DEVS => (u32s, 2 * u32s),
        contract::MAP_ENCAP_SOURCES => (sz(size_of::<contract::EncapSourceKey>()), u32s),
        contract::MAP_VIP_FILTER | contract::MAP_PEER_FILTER => (u32s, 2 * u32s),
        contract::MAP_FLOWS => (
            sz(size_of::<contract::FlowKey>()),
            sz(size_of::<contract::FlowEntry>()),
        ),
        contract::MAP_LOCAL_CLIENTS => (u32s, sz(size_of::<contract::LocalClients>())),
        contract::MAP_IFACE_SLOTS => (u32s, sz(size_of::<contract::IfaceSlot>())),
        contract::MAP_STATS
        | contract::MAP_VIP_STATS
        | contract::MAP_BACKEND_STATS
        | contract::MAP_FLOW_STATS
        | contract::MAP_LOCAL_STATS => (u32s, sz(size_of::<Counter>())),
        _ => return None,
    })
}

/// How the program ended up attached to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// Newly attached in the driver (native) mode.
    Native,
    /// Newly attached in generic (skb) mode, after native mode was refused.
    Generic,
    /// A pinned link for this interface already existed: adopted, and its program atomically
    /// replaced by this vipd's (bpf_link_update: an upgrade takes effect without a gap).
    Adopted,
}

/// The loaded object, with maps pinned (and re-used when already pinned) or private.
pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    /// Set while this data plane is being built beside a pinned one it replaces (in
    /// `pin_dir`, a staging directory): the directory of the old one, whose links
    /// [`Dataplane::attach`] takes over and which [`Dataplane::finish_replacement`] removes.
    replacing: Option<PathBuf>,
}

impl Dataplane {
    /// Loads the object with every map pinned under `pin_dir`; maps already pinned there are
    /// re-used as they are, so a restart never clears state.
    pub fn load_pinned(pin_dir: &Path, sizing: &Sizing) -> Result<Self, DataplaneError> {
        let pin_err = |source| DataplaneError::PinDir {
            path: pin_dir.to_owned(),
            source,
        };
        crate::shell::bpffs::ensure_mounted().map_err(pin_err)?;
        std::fs::create_dir_all(pin_dir).map_err(pin_err)?;
        let entries = sizing.entries(possible_cpus()?);
        for (name, wanted) in entries {
            if let Ok(pinned) = aya::maps::MapData::from_pin(pin_dir.join(name)) {
                let info = pinned.info()?;
                let shape = (info.key_size(), info.value_size());
                if let Some(wanted) = expected_shape(name).filter(|w| *w != shape) {
                    return Err(DataplaneError::PinnedShape {
                        name,
                        pinned: format!("{}-byte keys, {}-byte values", shape.0, shape.1),
                        wanted: format!("{}-byte keys, {}-byte values", wanted.0, wanted.1),
                    });
                }
                let pinned = info.max_entries();
                if pinned != wanted {
                    return Err(DataplaneError::PinnedSize {
                        name,
                        pinned,
                        wanted,
                    });
                }
            }
        }
        let mut loader = EbpfLoader::new();
        for (name, size) in entries {
            loader.map_max_entries(name, size);
        }
        let paths: Vec<(&str, PathBuf)> = MAP_NAMES
            .iter()
            .map(|name| (*name, pin_dir.join(name)))
            .collect();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let ebpf = loader.load(XDP_OBJECT)?;
        Ok(Self {
            ebpf,
            pin_dir: Some(pin_dir.to_owned()),
            replacing: None,
        })
    }

    /// Builds a new data plane beside the one pinned under `pin_dir` (whose maps have other
    /// shapes or sizes): new maps pinned in a staging directory next to it, for the caller
    /// to fill and publish. The old program keeps forwarding meanwhile; [`Dataplane::attach`]
    /// then swaps the new program into each pinned link (one bpf_link_update each) and
    /// [`Dataplane::finish_replacement`] removes the old maps and moves the new ones in.
    pub fn load_beside(pin_dir: &Path, sizing: &Sizing) -> Result<Self, DataplaneError> {
        let staging = staging_dir(pin_dir);
        // A staging directory left by a vipd that died mid-replacement: its links (if any
        // were moved) go with it; the old directory still has the rest.
        if staging.exists() {
            std::fs::remove_dir_all(&staging).map_err(|source| DataplaneError::PinDir {
                path: staging.clone(),
                source,
            })?;
        }
        let mut dp = Self::load_pinned(&staging, sizing)?;
        dp.replacing = Some(pin_dir.to_owned());
        Ok(dp)
    }

    /// After every interface is attached: the old pinned maps and program go (no link uses
    /// them any more) and the new ones take the pin directory's name.
    pub fn finish_replacement(&mut self) -> Result<(), DataplaneError> {
        let (Some(old), Some(staging)) = (self.replacing.take(), self.pin_dir.clone()) else {
            return Ok(());
        };
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| DataplaneError::PinDir { path, source }
        };
        // Links of interfaces this config no longer attaches stay with the old program.
        let leftover_links = std::fs::read_dir(&old)
            .map(|d| {
                d.filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().starts_with("link_"))
            })
            .unwrap_or(false);
        if leftover_links {
            tracing::warn!(dir = %old.display(), "links of interfaces no longer configured keep the old program: `vipd detach` them");
            let aside = old.with_file_name(format!(
                "{}-old",
                old.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("vip-fabric")
            ));
            let _ = std::fs::remove_dir_all(&aside);
            std::fs::rename(&old, &aside).map_err(io(&old))?;
        } else {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        std::fs::rename(&staging, &old).map_err(io(&staging))?;
        self.pin_dir = Some(old);
        Ok(())
    }

    /// Replacing a data plane: copies the old flow table's entries into the new one before
    /// the program swap, so connections of `VIP_F_FLOWS` VIPs keep their backends through a
    /// restart with another layout. Entries whose backend index changed owner carry another
    /// serial and are ignored by the program. Flows the old program makes between this copy
    /// and the swap are not carried (they re-hash: the same backend unless the tables
    /// changed). Returns the entries copied; 0 when not replacing or when the old map has
    /// another key or value layout (older contract).
    pub fn carry_flows(&mut self) -> Result<u64, DataplaneError> {
        let Some(old_dir) = self.replacing.clone() else {
            return Ok(0);
        };
        let Ok(old) = aya::maps::MapData::from_pin(old_dir.join(contract::MAP_FLOWS)) else {
            return Ok(0);
        };
        let info = old.info()?;
        if expected_shape(contract::MAP_FLOWS) != Some((info.key_size(), info.value_size())) {
            return Ok(0);
        }
        let old: HashMap<_, FlowKey, FlowEntry> =
            HashMap::try_from(aya::maps::Map::LruHashMap(old))?;
        let mut new: HashMap<_, FlowKey, FlowEntry> =
            HashMap::try_from(self.map_mut(contract::MAP_FLOWS)?)?;
        let mut copied = 0;
        // Keys evicted while walking are skipped; a full new map evicts its oldest entries.
        for (key, entry) in old.iter().filter_map(Result::ok) {
            new.insert(key, entry, 0)?;
            copied += 1;
        }
        Ok(copied)
    }

    /// Whether this data plane replaces a pinned one (built by [`Dataplane::load_beside`]).
    pub fn is_replacing(&self) -> bool {
        self.replacing.is_some()
    }

    /// Loads the object with private (unpinned) maps: for BPF_PROG_TEST_RUN and benchmarks.
    pub fn load_private(sizing: &Sizing) -> Result<Self, DataplaneError> {
        let mut loader = EbpfLoader::new();
        for (name, size) in sizing.entries(possible_cpus()?) {
            loader.map_max_entries(name, size);
        }
        Ok(Self {
            ebpf: loader.load(XDP_OBJECT)?,
            pin_dir: None,
            replacing: None,
        })
    }

    /// The balancer XDP program, loaded into the kernel (verified) on first use.
    pub fn program(&mut self) -> Result<&mut Xdp, DataplaneError> {
        self.named_program(contract::PROG_XDP)
    }

    /// An XDP program of the object by name (`PROG_XDP` or `PROG_DECAP`), loaded on first use.
    pub fn named_program(&mut self, name: &'static str) -> Result<&mut Xdp, DataplaneError> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or(DataplaneError::MissingProgram(name))?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()?;
        }
        Ok(prog)
    }

    /// Attaches to `iface` (native mode, falling back to generic with a warning) and pins the
    /// link, or adopts the link a previous vipd pinned. First turns receive VLAN offload off
    /// on it (see [`crate::shell::offload`]), on adoption too: an operator or a driver reset
    /// may have turned it back on since.
    pub fn attach(&mut self, iface: &str) -> Result<Attached, DataplaneError> {
        rx_vlan_offload_off(iface);
        self.attach_program(contract::PROG_XDP, iface)
    }

    /// Attaches the program `name` of the object to `iface` (see [`Dataplane::attach`]).
    pub fn attach_program(
        &mut self,
        name: &'static str,
        iface: &str,
    ) -> Result<Attached, DataplaneError> {
        let pin_dir = self
            .pin_dir
            .clone()
            .ok_or_else(|| DataplaneError::Pin("private maps cannot be attached".into()))?;
        let link_path = link_pin_path(&pin_dir, iface);
        let prog_path = pin_dir.join(name);
        if let Some(old_link) = self
            .replacing
            .as_deref()
            .map(|old| link_pin_path(old, iface))
            .filter(|l| l.exists())
        {
            // The old data plane's link: the new program goes into it atomically, then its
            // pin moves to the new directory.
            match self.replace_program(name, &old_link, &prog_path) {
                Ok(()) => {
                    std::fs::rename(&old_link, &link_path).map_err(|source| {
                        DataplaneError::PinDir {
                            path: old_link.clone(),
                            source,
                        }
                    })?;
                    return Ok(Attached::Adopted);
                }
                Err(e) => {
                    tracing::warn!(%iface, error = %e, "old XDP link unusable; attaching anew")
                }
            }
        }
        if link_path.exists() {
            match self.replace_program(name, &link_path, &prog_path) {
                Ok(()) => return Ok(Attached::Adopted),
                // A link whose interface went away (deleted and re-created) cannot take a
                // program: drop its pin and attach afresh.
                Err(e) => {
                    tracing::warn!(%iface, error = %e, "pinned XDP link unusable; attaching anew");
                    std::fs::remove_file(&link_path).map_err(|source| DataplaneError::PinDir {
                        path: link_path.clone(),
                        source,
                    })?;
                }
            }
        }
        let if_index = if_index(iface)?;
        let prog = self.named_program(name)?;
        let (link_id, mode) = match prog.attach_to_if_index(if_index, XdpMode::Driver) {
            Ok(id) => (id, Attached::Native),
            Err(native_err) => {
                tracing::warn!(%iface, error = %native_err, "native XDP refused; falling back to generic (skb) mode, which is slower");
                (
                    prog.attach_to_if_index(if_index, XdpMode::Skb)?,
                    Attached::Generic,
                )
            }
        };
        let link = prog.take_link(link_id)?;
        let fd_link = FdLink::try_from(link).map_err(|e| {
            DataplaneError::Pin(format!(
                "kernel gave a netlink XDP attachment, not a bpf_link: {e}"
            ))
        })?;
        fd_link
            .pin(&link_path)
            .map_err(|e| DataplaneError::Pin(format!("{}: {e}", link_path.display())))?;
        if !prog_path.exists() {
            prog.pin(&prog_path)
                .map_err(|e| DataplaneError::Pin(format!("{}: {e}", prog_path.display())))?;
        }
        Ok(mode)
    }

    /// Puts this object's program `name` into the pinned link at `link_path` in one
    /// bpf_link_update (packets see the old program or the new one, never none), and re-pins
    /// the program file. The maps are the pinned ones already, shared by both programs.
    fn replace_program(
        &mut self,
        name: &'static str,
        link_path: &Path,
        prog_path: &Path,
    ) -> Result<(), DataplaneError> {
        let pin_err = |e: String| DataplaneError::Pin(format!("{}: {e}", link_path.display()));
        let pinned = PinnedLink::from_pin(link_path).map_err(|e| pin_err(e.to_string()))?;
        let link = XdpLink::try_from(FdLink::from(pinned)).map_err(|e| pin_err(e.to_string()))?;
        let prog = self.named_program(name)?;
        let id = prog.attach_to_link(link)?;
        // The pin keeps the link alive; this fd is not needed past here.
        drop(prog.take_link(id)?);
        if prog_path.exists() {
            let _ = std::fs::remove_file(prog_path);
        }
        prog.pin(prog_path)
            .map_err(|e| DataplaneError::Pin(format!("{}: {e}", prog_path.display())))?;
        Ok(())
    }

    /// Per-reason counters summed over CPUs, indexed by `reason::*`.
    pub fn stats(&self) -> Result<Vec<Counter>, DataplaneError> {
        self.counters(contract::MAP_STATS)
    }

    /// Every slot of a per-CPU counter map (`MAP_STATS`, `MAP_VIP_STATS`,
    /// `MAP_BACKEND_STATS`), summed over CPUs.
    pub fn counters(&self, name: &'static str) -> Result<Vec<Counter>, DataplaneError> {
        let map = self
            .ebpf
            .map(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        static CPUS: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
        let cpus = *CPUS.get_or_init(|| possible_cpus().ok().map(|n| n as usize));
        if let Some(cpus) = cpus {
            if let Some(counters) = batch::sum_per_cpu_batch(map, cpus, name)? {
                return Ok(counters);
            }
        }
        sum_per_cpu(map)
    }

    /// Local-client counters summed over CPUs, indexed by `local_stat::*`.
    pub fn local_stats(&self) -> Result<Vec<Counter>, DataplaneError> {
        self.counters(contract::MAP_LOCAL_STATS)
    }

    /// Flow table counters summed over CPUs, indexed by `flow_stat::*`.
    pub fn flow_stats(&self) -> Result<Vec<Counter>, DataplaneError> {
        self.counters(contract::MAP_FLOW_STATS)
    }

    /// Flow table entries per backend index (a vector as long as `BACKENDS`), counting only
    /// entries made for the backend holding the index now (same serial). Entries are not
    /// connections: nothing expires them, so one stays until the LRU evicts it, also after
    /// its connection closed. Walks the whole map with a syscall or two per entry: for
    /// status and drain progress, not for anything frequent.
    pub fn flows_per_backend(&self) -> Result<Vec<u64>, DataplaneError> {
        let backends = self
            .ebpf
            .map(contract::MAP_BACKENDS)
            .ok_or(DataplaneError::MissingMap(contract::MAP_BACKENDS))?;
        let backends: Array<_, Backend> = Array::try_from(backends)?;
        let serials: Vec<u32> = backends
            .iter()
            .map(|b| b.map(|b| b.serial))
            .collect::<Result<_, _>>()?;
        let flows = self
            .ebpf
            .map(contract::MAP_FLOWS)
            .ok_or(DataplaneError::MissingMap(contract::MAP_FLOWS))?;
        let flows: HashMap<_, FlowKey, FlowEntry> = HashMap::try_from(flows)?;
        let mut per_backend = vec![0u64; serials.len()];
        // aya's iterator skips keys evicted between listing and reading them.
        for item in flows.iter() {
            let (_, entry) = item?;
            let index = entry.backend as usize;
            if serials.get(index) == Some(&entry.serial) {
                per_backend[index] += 1;
            }
        }
        Ok(per_backend)
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DataplaneError> {
        self.ebpf
            .map_mut(name)
            .ok_or(DataplaneError::MissingMap(name))
    }

    pub fn set_settings(&mut self, settings: &Settings) -> Result<(), DataplaneError> {
        let mut map: Array<_, Settings> = Array::try_from(self.map_mut(contract::MAP_SETTINGS)?)?;
        Ok(map.set(0, settings, 0)?)
    }

    /// The SETTINGS entry (all zero when never written).
    pub fn settings(&self) -> Result<Settings, DataplaneError> {
        let map = self
            .ebpf
            .map(contract::MAP_SETTINGS)
            .ok_or(DataplaneError::MissingMap(contract::MAP_SETTINGS))?;
        let map: Array<_, Settings> = Array::try_from(map)?;
        Ok(map.get(&0, 0)?)
    }

    pub fn set_vip(&mut self, key: &VipKey, info: &VipInfo) -> Result<(), DataplaneError> {
        let mut map: HashMap<_, VipKey, VipInfo> =
            HashMap::try_from(self.map_mut(contract::MAP_VIPS)?)?;
        Ok(map.insert(key, info, 0)?)
    }

    pub fn remove_vip(&mut self, key: &VipKey) -> Result<(), DataplaneError> {
        let mut map: HashMap<_, VipKey, VipInfo> =
            HashMap::try_from(self.map_mut(contract::MAP_VIPS)?)?;
        Ok(map.remove(key)?)
    }

    /// Every VIP currently in the map.
    pub fn vips(&self) -> Result<Vec<(VipKey, VipInfo)>, DataplaneError> {
        let map = self
            .ebpf
            .map(contract::MAP_VIPS)
            .ok_or(DataplaneError::MissingMap(contract::MAP_VIPS))?;
        let map: HashMap<_, VipKey, VipInfo> = HashMap::try_from(map)?;
        Ok(map.iter().collect::<Result<_, _>>()?)
    }

    pub fn set_backend(&mut self, index: u32, backend: &Backend) -> Result<(), DataplaneError> {
        let mut map: Array<_, Backend> = Array::try_from(self.map_mut(contract::MAP_BACKENDS)?)?;
        Ok(map.set(index, backend, 0)?)
    }

    pub fn backend(&self, index: u32) -> Result<Backend, DataplaneError> {
        let map = self
            .ebpf
            .map(contract::MAP_BACKENDS)
            .ok_or(DataplaneError::MissingMap(contract::MAP_BACKENDS))?;
        let map: Array<_, Backend> = Array::try_from(map)?;
        Ok(map.get(&index, 0)?)
    }

    /// Lists a cluster VIP address with this node's lease on it (expiry 0: not held).
    pub fn set_lease(&mut self, key: &LeaseKey, lease: &Lease) -> Result<(), DataplaneError> {
        let mut map: HashMap<_, LeaseKey, Lease> =
            HashMap::try_from(self.map_mut(contract::MAP_LEASES)?)?;
        Ok(map.insert(key, lease, 0)?)
    }

    pub fn remove_lease(&mut self, key: &LeaseKey) -> Result<(), DataplaneError> {
        let mut map: HashMap<_, LeaseKey, Lease> =
            HashMap::try_from(self.map_mut(contract::MAP_LEASES)?)?;
        Ok(map.remove(key)?)
    }

    /// Writes the words of bitmap `map` (`VIP_FILTER`, `PEER_FILTER`) that differ from `old`
    /// (None: the map's contents are unknown, write them all). Word by word: ordering against
    /// the map it filters is the caller's.
    pub fn set_filter(
        &mut self,
        map: &'static str,
        words: &[u64],
        old: Option<&[u64]>,
    ) -> Result<(), DataplaneError> {
        let mut map: Array<_, u64> = Array::try_from(self.map_mut(map)?)?;
        for (i, word) in words.iter().enumerate() {
            if old.is_none_or(|old| old[i] != *word) {
                map.set(i as u32, word, 0)?;
            }
        }
        Ok(())
    }

    /// Lists the MAC and MTU (0: unknown) of interface `ifindex` (see `MAP_IFACES`).
    pub fn set_iface(
        &mut self,
        ifindex: u32,
        mac: [u8; 6],
        mtu: u16,
    ) -> Result<(), DataplaneError> {
        let iface = Iface { mac, mtu };
        let mut map: HashMap<_, u32, Iface> =
            HashMap::try_from(self.map_mut(contract::MAP_IFACES)?)?;
        map.insert(ifindex, iface, 0)?;
        // Then its slot, unless another interface holds it (that one keeps it; this one is
        // found in IFACES).
        let mut slots: Array<_, contract::IfaceSlot> =
            Array::try_from(self.map_mut(contract::MAP_IFACE_SLOTS)?)?;
        let at = contract::IfaceSlot::index(ifindex);
        let held = slots.get(&at, 0)?.ifindex;
        if held == 0 || held == ifindex {
            slots.set(at, contract::IfaceSlot::new(ifindex, iface), 0)?;
        }
        Ok(())
    }

    /// Lists interface `ifindex` as egress `port`: its MAC and MTU in `EGRESS`, the device in
    /// `EGRESS_DEVS`, the MAC first (a packet redirected there finds it).
    pub fn set_egress(
        &mut self,
        port: u32,
        ifindex: u32,
        iface: Iface,
    ) -> Result<(), DataplaneError> {
        let mut map: Array<_, Iface> = Array::try_from(self.map_mut(contract::MAP_EGRESS)?)?;
        map.set(port, iface, 0)?;
        let mut devs = aya::maps::DevMap::try_from(self.map_mut(contract::MAP_EGRESS_DEVS)?)?;
        devs.set(port, ifindex, None, 0)
            .map_err(|e| DataplaneError::Egress(e.to_string()))
    }

    /// Lists a source balancers send encapsulated packets from (see `MAP_ENCAP_SOURCES`).
    pub fn set_encap_source(
        &mut self,
        key: &contract::EncapSourceKey,
    ) -> Result<(), DataplaneError> {
        let mut map: HashMap<_, contract::EncapSourceKey, u32> =
            HashMap::try_from(self.map_mut(contract::MAP_ENCAP_SOURCES)?)?;
        Ok(map.insert(key, 1, 0)?)
    }

    pub fn remove_encap_source(
        &mut self,
        key: &contract::EncapSourceKey,
    ) -> Result<(), DataplaneError> {
        let mut map: HashMap<_, contract::EncapSourceKey, u32> =
            HashMap::try_from(self.map_mut(contract::MAP_ENCAP_SOURCES)?)?;
        Ok(map.remove(key)?)
    }

    /// Every key of `ENCAP_SOURCES`.
    pub fn encap_sources(&self) -> Result<Vec<contract::EncapSourceKey>, DataplaneError> {
        let map = self
            .ebpf
            .map(contract::MAP_ENCAP_SOURCES)
            .ok_or(DataplaneError::MissingMap(contract::MAP_ENCAP_SOURCES))?;
        let map: HashMap<_, contract::EncapSourceKey, u32> = HashMap::try_from(map)?;
        Ok(map.keys().collect::<Result<Vec<_>, _>>()?)
    }

    /// Makes `ENCAP_SOURCES` hold exactly `wanted`: each written, then the others removed.
    pub fn set_encap_sources(
        &mut self,
        wanted: &[contract::EncapSourceKey],
    ) -> Result<(), DataplaneError> {
        for key in wanted {
            self.set_encap_source(key)?;
        }
        for key in self.encap_sources()? {
            if !wanted.contains(&key) {
                self.remove_encap_source(&key)?;
            }
        }
        Ok(())
    }

    pub fn set_peer(&mut self, mac: [u8; 6], node_id: u32) -> Result<(), DataplaneError> {
        let mut map: HashMap<_, PeerKey, Peer> =
            HashMap::try_from(self.map_mut(contract::MAP_PEERS)?)?;
        let key = PeerKey { mac, _pad: [0; 2] };
        Ok(map.insert(key, Peer { node_id, _pad: 0 }, 0)?)
    }

    pub fn remove_peer(&mut self, mac: [u8; 6]) -> Result<(), DataplaneError> {
        let mut map: HashMap<_, PeerKey, Peer> =
            HashMap::try_from(self.map_mut(contract::MAP_PEERS)?)?;
        Ok(map.remove(&PeerKey { mac, _pad: [0; 2] })?)
    }

    /// Takes the table maps out of the object and maps them for whole-table publishing.
    /// Call once; later calls fail with `MissingMap`.
    pub fn table_publisher(&mut self) -> Result<TablePublisher, DataplaneError> {
        let slots = self
            .ebpf
            .take_map(contract::MAP_SLOTS)
            .ok_or(DataplaneError::MissingMap(contract::MAP_SLOTS))?;
        let active = self
            .ebpf
            .take_map(contract::MAP_ACTIVE)
            .ok_or(DataplaneError::MissingMap(contract::MAP_ACTIVE))?;
        TablePublisher::new(slots, active)
    }
}

/// A per-CPU counter map read straight from its pin (no object load): for operator commands.
pub fn pinned_counters(pin_dir: &Path, name: &'static str) -> Result<Vec<Counter>, DataplaneError> {
    let data = aya::maps::MapData::from_pin(pin_dir.join(name))?;
    sum_per_cpu(&aya::maps::Map::PerCpuArray(data))
}

fn sum_per_cpu(map: &aya::maps::Map) -> Result<Vec<Counter>, DataplaneError> {
    let stats: PerCpuArray<_, Counter> = PerCpuArray::try_from(map)?;
    stats
        .iter()
        .map(|per_cpu| {
            Ok(per_cpu?.iter().fold(Counter::default(), |acc, c| Counter {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            }))
        })
        .collect()
}

/// CPUs the kernel sizes per-CPU structures for (`/sys/devices/system/cpu/possible`).
pub fn possible_cpus() -> Result<u32, DataplaneError> {
    aya::util::nr_cpus()
        .map(|n| n as u32)
        .map_err(|(path, source)| DataplaneError::PossibleCpus { path, source })
}

fn link_pin_path(pin_dir: &Path, iface: &str) -> PathBuf {
    pin_dir.join(format!("link_{iface}"))
}

/// Without this, a VIP frame whose 802.1Q tag the driver stripped into metadata would be
/// forwarded untagged. Failing to turn it off is a warning, not an error: untagged VIP
/// networks (the common case) do not need it, and refusing to balance would be worse.
fn rx_vlan_offload_off(iface: &str) {
    match crate::shell::offload::rx_vlan_off(iface) {
        Ok(r) if r.turned_off.is_empty() => {
            tracing::debug!(%iface, "rx VLAN offload already off")
        }
        Ok(r) => tracing::info!(
            %iface,
            features = ?r.turned_off,
            "vipd turned rx VLAN offload off on {iface}: XDP must see 802.1Q tags"
        ),
        Err(e) => tracing::warn!(
            %iface,
            error = %e,
            "could not turn rx VLAN offload off on {iface}: 802.1Q-tagged VIP traffic whose \
             tag the driver strips would be forwarded UNTAGGED (untagged VIP networks are \
             unaffected)"
        ),
    }
}

/// Interface index by name (in the calling thread's network namespace).
pub fn if_index(iface: &str) -> Result<u32, DataplaneError> {
    let c = std::ffi::CString::new(iface).map_err(|_| DataplaneError::Interface {
        iface: iface.into(),
        msg: "name contains NUL".into(),
    })?;
    // SAFETY: c is a valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(DataplaneError::Interface {
            iface: iface.into(),
            msg: format!("no such interface: {}", io::Error::last_os_error()),
        });
    }
    Ok(idx)
}

/// Removes the pinned link of `iface` (which detaches the program from it). When no link is
/// left, removes the program and map pins too: this is the explicit "remove everything".
/// Returns whether a link was pinned for `iface`.
pub fn detach(pin_dir: &Path, iface: &str) -> Result<bool, DataplaneError> {
    let link_path = link_pin_path(pin_dir, iface);
    let had_link = link_path.exists();
    if had_link {
        let link = PinnedLink::from_pin(&link_path)
            .map_err(|e| DataplaneError::Pin(format!("{}: {e}", link_path.display())))?;
        link.unpin().map_err(|source| DataplaneError::PinDir {
            path: link_path.clone(),
            source,
        })?;
    }
    let links_left = std::fs::read_dir(pin_dir)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("link_"))
        })
        .unwrap_or(false);
    if !links_left && pin_dir.exists() {
        std::fs::remove_dir_all(pin_dir).map_err(|source| DataplaneError::PinDir {
            path: pin_dir.to_owned(),
            source,
        })?;
    }
    Ok(had_link)
}

/// Where a replacement data plane is built: beside `pin_dir`, on the same bpffs.
pub fn staging_dir(pin_dir: &Path) -> PathBuf {
    let name = pin_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("vip-fabric");
    pin_dir.with_file_name(format!("{name}-next"))
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
