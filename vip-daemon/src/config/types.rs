//! The resolved configuration: every default applied, every string parsed. Nothing here can be
//! invalid in a way the validator knows about; consumers may rely on the invariants documented
//! per field.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Where `vipd` looks for its configuration unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/vip-fabric/vipd.toml";

/// Built-in defaults (the values a file gets for every key it leaves out).
pub mod defaults {
    use std::time::Duration;

    pub const PIN_DIR: &str = "/sys/fs/bpf/vip-fabric";
    /// Where vipd keeps what must survive a restart (layout, verdicts, admin state).
    pub const STATE_DIR: &str = "/var/lib/vip-fabric";
    /// `[limits]` defaults: at least these, and twice what the file needs.
    pub const MIN_VIPS: u32 = 16;
    pub const MIN_BACKENDS: u32 = 64;
    pub const FLOWS: u32 = 65_536;
    /// `limits.flows` when no VIP of the file uses the flow table (room for one added later).
    pub const MIN_FLOWS: u32 = 1024;
    pub const HASH_SEED: u32 = 0x7f4a_7c15;
    pub const ENCAP_SOURCE_V4: &str = "10.255.0.0";
    pub const ENCAP_SOURCE_V6: &str = "fd00:ffff::";
    pub const METRICS_LISTEN: &str = "127.0.0.1:9478";
    pub const CONTROL_SOCKET: &str = "/run/vip-fabric/vipd.sock";
    pub const TABLE_SIZE: u32 = 65537;
    /// Largest accepted Maglev table size (a prime).
    pub const MAX_TABLE_SIZE: u32 = 1_048_573;
    /// Table sizes worth suggesting (primes, roughly 100x a backend count of 2..600).
    pub const SUGGESTED_TABLE_SIZES: [u32; 4] = [251, 4099, 16381, 65537];
    /// How long a drained backend keeps its established flows (`vip.drain_timeout`).
    pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
    pub const INTERVAL: Duration = Duration::from_secs(2);
    pub const TIMEOUT: Duration = Duration::from_secs(1);
    pub const RISE: u32 = 2;
    pub const FALL: u32 = 3;
    pub const JITTER: f64 = 0.1;
    /// Flap damping: held down once the penalty (1 per transition, halving every half-life)
    /// reaches 4, i.e. on the fifth transition in quick succession: two restarts in a row
    /// (four transitions) are not flapping.
    pub const FLAP_SUPPRESS: u32 = 4;
    pub const FLAP_REUSE: u32 = 2;
    /// With suppress 4 and reuse 2, the shortest hold is one half-life.
    pub const FLAP_HALF_LIFE: Duration = Duration::from_secs(30);
    pub const FLAP_MAX_HOLD: Duration = Duration::from_secs(300);
    pub const HTTP_PATH: &str = "/";
    pub const HTTP_EXPECT: u16 = 200;
    pub const WEIGHT: u32 = 1;
    /// Fallback node name when the kernel hostname cannot be read.
    pub const NODE_NAME: &str = "localhost";
}

/// A whole validated `vipd.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub node: Node,
    pub cluster: Cluster,
    /// `None` when `[metrics] listen` is `""` or `"off"`.
    pub metrics_listen: Option<SocketAddr>,
    /// Absolute path of the control socket.
    pub control_socket: PathBuf,
    /// In file order; names unique; (address, port, protocol) keys never overlap.
    pub vips: Vec<Vip>,
    /// `[limits]` as written (None: derived from the VIPs, see [`Config::default_limits`]).
    pub limits: LimitSettings,
    pub hooks: super::ops::Hooks,
    pub track: super::ops::Track,
    pub status_socket: super::ops::StatusSocket,
    pub bgp: super::bgp::Bgp,
}

/// `[limits]` keys as written in the file; each one set is at least what the file needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitSettings {
    pub vips: Option<u32>,
    pub backends: Option<u32>,
    pub table_slots: Option<u32>,
    pub flows: Option<u32>,
    /// Cap on what the config may cost, maps plus vipd (`core::budget`), in MiB.
    pub memory_mib: Option<u32>,
}

/// Capacities of the data plane's maps. Fixed when vipd creates the maps: a reload may
/// change anything that fits in them (see `core::alloc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// VIPs (entries of VIPS; ACTIVE has two words per VIP: its table and its fallback).
    pub vips: u32,
    /// Backends over all VIPs (entries of BACKENDS).
    pub backends: u32,
    /// Maglev slots over all tables: two generations per table, two tables per VIP with
    /// second chance.
    pub table_slots: u32,
    /// Entries of the flow table (connections kept on their backend across table changes).
    pub flows: u32,
}

impl Config {
    /// What the file needs: (VIPs, backends, table slots).
    pub fn needs(&self) -> (u32, u32, u32) {
        let backends = self.vips.iter().map(|v| v.backends.len() as u32).sum();
        (
            self.vips.len() as u32,
            backends,
            crate::core::alloc::slots_needed(self),
        )
    }

    /// The limits a first start uses: the file's `[limits]`, and for each key it leaves out,
    /// room for the file to double (and at least one more VIP of the default table size).
    pub fn default_limits(&self) -> Limits {
        let (vips, backends, slots) = self.needs();
        let l = &self.limits;
        Limits {
            vips: l.vips.unwrap_or((2 * vips).max(defaults::MIN_VIPS)),
            backends: l
                .backends
                .unwrap_or((2 * backends).max(defaults::MIN_BACKENDS)),
            table_slots: l
                .table_slots
                .unwrap_or((2 * slots).max(slots + 4 * defaults::TABLE_SIZE)),
            // Only Maglev VIPs without second chance use the flow table.
            flows: l.flows.unwrap_or(
                if self.vips.iter().any(|v| {
                    v.selection == Selection::Maglev
                        && !crate::core::plan::second_chance_applies(self, v)
                }) {
                    defaults::FLOWS
                } else {
                    defaults::MIN_FLOWS
                },
            ),
        }
    }

    /// Whether this file fits in `limits` and sets no `[limits]` key to another value.
    pub fn fits(&self, limits: &Limits) -> bool {
        let (vips, backends, slots) = self.needs();
        let l = &self.limits;
        let same = |set: Option<u32>, v: u32| set.is_none_or(|s| s == v);
        vips <= limits.vips
            && backends <= limits.backends
            && slots <= limits.table_slots
            && same(l.vips, limits.vips)
            && same(l.backends, limits.backends)
            && same(l.table_slots, limits.table_slots)
            && same(l.flows, limits.flows)
    }
}

/// This node (the only section that differs between controllers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// Interfaces to attach XDP to: valid Linux interface names, unique.
    pub interfaces: Vec<String>,
    /// This node's own addresses; a backend with one of them is forwarded locally.
    pub addresses: Vec<IpAddr>,
    /// Absolute bpffs directory for pinned programs and maps.
    pub pin_dir: PathBuf,
    /// Absolute directory of the state file (`<state_dir>/<pin_dir's last part>.state.json`).
    pub state_dir: PathBuf,
    /// The event loop runs SCHED_FIFO (below the heartbeat threads), as keepalived and
    /// Corosync do: a verdict goes live without waiting for a CPU on a busy machine. Off by
    /// default: with it, the ten-minute starvation test saw false positives (2 runs of 3).
    pub realtime: bool,
    /// Balance this node's own clients of the VIPs too (cgroup socket programs, see
    /// `vip_common::maps::MAP_LOCAL_CLIENTS`). On by default.
    pub local_clients: bool,
    /// The cgroup v2 directory they attach to (None: the hierarchy's root, every process).
    pub local_clients_cgroup: Option<PathBuf>,
}

/// Settings that must be identical on every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub hash_seed: u32,
    pub encap_source_v4: Ipv4Addr,
    pub encap_source_v6: Ipv6Addr,
    /// Cluster mode (SWIM membership, VIP ownership by quorum) when `listen` is set.
    pub membership: Option<Membership>,
}

/// `[cluster]` keys of cluster mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Gossip bind address (this node's, reachable by the peers).
    pub listen: std::net::SocketAddr,
    /// Static seed list.
    pub peers: Vec<std::net::SocketAddr>,
    /// A second gossip link (Corosync's redundant ring): this node's address on another
    /// network and the peers' addresses there. Every datagram goes out on both links; a
    /// member is down only when silent on both.
    pub secondary: Option<SecondaryLink>,
    /// The fast failure detector (`core::heartbeat`), off unless `heartbeat_interval` is set.
    pub heartbeat: Option<Heartbeat>,
    /// Shared key file (one or two hex keys, mode 0600).
    pub key_file: PathBuf,
    /// Node names that vote; quorum is a strict majority of them. Includes this node.
    pub voters: Vec<String>,
    /// A voter that owns nothing (2-node sites).
    pub witness: Option<String>,
    pub lease: Duration,
    /// Operator command run before taking over from a dead node (IPMI, PDU, cloud API).
    pub fence_command: Option<Vec<String>>,
    pub fence_timeout: Duration,
    pub probe_period: Duration,
    pub suspect_timeout: Duration,
}

/// `[cluster] heartbeat_interval` and `heartbeat_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub interval: Duration,
    pub timeout: Duration,
}

/// `[cluster] secondary_listen` and `secondary_peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondaryLink {
    pub listen: std::net::SocketAddr,
    pub peers: Vec<std::net::SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vip {
    /// `[a-z0-9_-]{1,32}`, unique.
    pub name: String,
    pub address: IpAddr,
    /// 0 = all ports.
    pub port: u16,
    pub protocol: Protocol,
    pub hash: HashMode,
    pub selection: Selection,
    /// A prime in 2..=1048573 for [`Selection::Maglev`]; always 1 for
    /// [`Selection::PrimaryBackup`] (the data plane uses a one-slot table).
    pub table_size: u32,
    /// At least one, in file order; names unique; same address family as the VIP.
    pub backends: Vec<BackendConf>,
    /// Cluster mode: preferred owners, in order.
    pub preferences: Vec<String>,
    /// Cluster mode: fence a dead owner before taking over (default: when a fence command is
    /// configured); without fencing, a takeover waits until the old owner's lease has expired.
    pub fencing: bool,
    /// Primary/backup only: the slot returns to the preferred backend as soon as it is
    /// eligible again (resetting the connections to the backup). Default false: the writer
    /// stays until it fails or an operator promotes another (`core::writer`).
    pub failback: bool,
    /// How long a drained backend keeps its established flows (`core::drain`).
    pub drain_timeout: std::time::Duration,
    /// How the VIP's traffic reaches this node.
    pub announce: Announce,
}

/// How a VIP's traffic is drawn to the node(s) balancing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Announce {
    /// One node owns the address (cluster mode: by quorum, with leases and fencing) and
    /// answers ARP / neighbour discovery for it.
    Address,
    /// Every node in service installs a host route in `[bgp] table` for a routing daemon to
    /// announce (`core::announce`); the routers spread flows over them by ECMP.
    Bgp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// What the flow hash covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashMode {
    /// The 5-tuple: every connection is placed independently.
    Flow,
    /// The source address only: all of a client's connections go to one backend.
    Source,
}

/// How backends share a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Selection {
    /// Weighted Maglev consistent hashing over the healthy backends.
    Maglev,
    /// The healthy backend with the lowest `priority` takes all traffic.
    PrimaryBackup,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackendConf {
    /// `[a-z0-9_-]{1,32}`, unique within its VIP.
    pub name: String,
    pub address: IpAddr,
    /// Health-check port (1..=65535): the backend's own port, else the VIP's.
    pub port: u16,
    /// 0..=65535; 0 = drained.
    pub weight: u32,
    /// Lower is preferred; unique within a primary-backup VIP.
    pub priority: u8,
    /// [`Forward::Local`] whenever `address` is one of `node.addresses`.
    pub forward: Forward,
    pub check: Check,
}

/// How the data plane hands a packet to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Forward {
    /// Rewrite the destination MAC (backend on the same L2 segment).
    L2,
    /// Encapsulate (backend reachable only through routing).
    Encap,
    /// This node: pass the packet up the local stack.
    Local,
}

/// A resolved health check: timeout <= interval, rise/fall >= 1, jitter in 0.0..=0.5; flap
/// damping off (suppress 0) or with reuse < suppress and a max hold no shorter than the
/// shortest hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// Fraction of `interval` by which each probe may be randomly shifted.
    pub jitter: f64,
    pub damping: crate::core::health::Damping,
}

/// What a health check does; the probes (`shell::probes`) run it as is and the importer
/// (`import`) writes it back as config keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// TCP connect: healthy iff the backend accepts a TCP connection.
    Tcp,
    /// HTTP(S) GET of `path`, healthy iff the status is `expect`. `host` is the Host header
    /// and TLS SNI (default: the target address). `tls` is true for kind "https";
    /// `tls_verify` checks the chain against the system CAs, and is always false for plain
    /// http.
    Http {
        path: String,
        expect: u16,
        host: Option<String>,
        tls: bool,
        tls_verify: bool,
    },
    /// Run `command` (argv, non-empty, e.g. Galera's clustercheck); healthy iff it exits 0.
    /// It gets the target in `VIPD_BACKEND_ADDRESS` / `VIPD_BACKEND_PORT`.
    Exec { command: Vec<String> },
}
