//! The file as serde sees it: every key optional and loosely typed (strings, i64), so that
//! missing keys, ranges, enum spellings and addresses are checked by the validator, which
//! reports all of them with their locations instead of stopping at the first. Unknown keys
//! are rejected here (serde names the key and lists the valid ones).

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub node: RawNode,
    #[serde(default)]
    pub cluster: RawCluster,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub control: RawControl,
    #[serde(default)]
    pub defaults: RawDefaults,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub hooks: RawHooks,
    #[serde(default)]
    pub track: RawTrack,
    #[serde(default)]
    pub bgp: RawBgp,
    #[serde(default)]
    pub vip: Vec<RawVip>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBgp {
    pub table: Option<i64>,
    pub protocol: Option<i64>,
    pub without_quorum: Option<bool>,
    pub withdraw_quiet: Option<String>,
    pub withdraw_max: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub name: Option<String>,
    pub interfaces: Option<Vec<String>>,
    pub addresses: Option<Vec<String>>,
    pub pin_dir: Option<String>,
    pub state_dir: Option<String>,
    pub realtime: Option<bool>,
    pub local_clients: Option<bool>,
    pub local_clients_cgroup: Option<String>,
}

/// `[limits]`: capacities of the data plane, fixed when vipd creates its maps.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub vips: Option<i64>,
    pub backends: Option<i64>,
    pub table_slots: Option<i64>,
    pub flows: Option<i64>,
    pub memory_mib: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub hash_seed: Option<i64>,
    pub encap_source_v4: Option<String>,
    pub encap_source_v6: Option<String>,
    pub listen: Option<String>,
    pub peers: Option<Vec<String>>,
    pub secondary_listen: Option<String>,
    pub secondary_peers: Option<Vec<String>>,
    pub heartbeat_interval: Option<String>,
    pub heartbeat_timeout: Option<String>,
    pub key_file: Option<String>,
    pub voters: Option<Vec<String>>,
    pub witness: Option<String>,
    pub lease: Option<String>,
    pub fence_command: Option<Vec<String>>,
    pub fence_timeout: Option<String>,
    pub probe_period: Option<String>,
    pub suspect_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawControl {
    pub socket: Option<String>,
    pub status_socket: Option<String>,
    pub status_group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHooks {
    pub notify: Option<Vec<String>>,
    pub notify_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrack {
    pub interfaces: Option<Vec<String>>,
    #[serde(default)]
    pub script: Vec<RawTrackScript>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrackScript {
    pub name: Option<String>,
    pub command: Option<Vec<String>>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub fall: Option<i64>,
    pub rise: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaults {
    pub check: Option<RawTiming>,
}

/// `[defaults.check]`: only the timing keys (the kind belongs to each VIP).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTiming {
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub jitter: Option<f64>,
    pub flap_suppress: Option<i64>,
    pub flap_reuse: Option<i64>,
    pub flap_half_life: Option<String>,
    pub flap_max_hold: Option<String>,
}

/// A `check = { ... }` table on a VIP or a backend.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCheck {
    pub kind: Option<String>,
    pub path: Option<String>,
    pub expect: Option<i64>,
    pub host: Option<String>,
    pub tls_verify: Option<bool>,
    pub command: Option<Vec<String>>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub jitter: Option<f64>,
    pub flap_suppress: Option<i64>,
    pub flap_reuse: Option<i64>,
    pub flap_half_life: Option<String>,
    pub flap_max_hold: Option<String>,
}

impl RawCheck {
    pub fn timing(&self) -> RawTiming {
        RawTiming {
            interval: self.interval.clone(),
            timeout: self.timeout.clone(),
            rise: self.rise,
            fall: self.fall,
            jitter: self.jitter,
            flap_suppress: self.flap_suppress,
            flap_reuse: self.flap_reuse,
            flap_half_life: self.flap_half_life.clone(),
            flap_max_hold: self.flap_max_hold.clone(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVip {
    pub name: Option<String>,
    pub address: Option<String>,
    pub port: Option<i64>,
    pub protocol: Option<String>,
    pub hash: Option<String>,
    pub selection: Option<String>,
    pub table_size: Option<i64>,
    pub check: Option<RawCheck>,
    pub preferences: Option<Vec<String>>,
    pub fencing: Option<bool>,
    pub failback: Option<bool>,
    pub drain_timeout: Option<String>,
    pub announce: Option<String>,
    #[serde(default)]
    pub backend: Vec<RawBackend>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub name: Option<String>,
    pub address: Option<String>,
    pub port: Option<i64>,
    pub weight: Option<i64>,
    pub priority: Option<i64>,
    pub forward: Option<String>,
    pub check: Option<RawCheck>,
}
