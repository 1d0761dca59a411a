//! What the importer will write: the VIPs, their backends and checks, in the vipd config's
//! terms, plus the names rule (`[a-z0-9_-]{1,32}`, unique).

use std::net::IpAddr;
use std::time::Duration;

use super::Anchor;
use crate::config::CheckKind;

/// The whole generated file.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub interfaces: Vec<String>,
    /// This node's own addresses (keepalived's unicast_src_ip).
    pub addresses: Vec<IpAddr>,
    /// `[defaults.check]` timing.
    pub defaults: Timing,
    /// Line of the `defaults` section the timing comes from.
    pub defaults_line: Option<usize>,
    /// From `spread-checks`.
    pub jitter: Option<f64>,
    /// In haproxy.cfg order.
    pub items: Vec<Item>,
}

#[derive(Debug, Clone)]
pub(crate) enum Item {
    Vip(VipPlan),
    /// A proxy section that produced no VIP; its notes are printed under `title`.
    Skipped {
        title: String,
        anchors: Vec<Anchor>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct VipPlan {
    /// Creation serial (for [`super::Anchor::Vip`] and [`super::Anchor::Backend`]).
    pub serial: usize,
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub hash_source: bool,
    pub primary_backup: bool,
    /// The VIP-level check (the first backend's).
    pub check: CheckPlan,
    pub backends: Vec<BackendPlan>,
    /// Where it came from, e.g. "listen keystone (haproxy.cfg:40), bind at line 41".
    pub title: String,
    /// Explanations printed above the table.
    pub notes: Vec<String>,
    /// Whose NOT CARRIED OVER lines are printed above the table: the frontend/listen and
    /// backend sections, the bind, the VIP itself, the servers left out of it.
    pub anchors: Vec<Anchor>,
}

#[derive(Debug, Clone)]
pub(crate) struct BackendPlan {
    pub name: String,
    pub address: IpAddr,
    /// Health-check port (the VIP's unless the server had `port N`).
    pub port: u16,
    pub weight: u32,
    pub priority: Option<u8>,
    pub check: CheckPlan,
    /// The `server` line (its NOT CARRIED OVER lines are printed above the table).
    pub line: usize,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckPlan {
    pub kind: CheckKind,
    pub timing: Timing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// `s` as a vipd name: lowercase, `.` → `-`, anything outside `[a-z0-9_-]` → `_`, at most
/// 32 characters.
pub(crate) fn sanitize(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_' | '-') => c,
            '.' => '-',
            _ => '_',
        })
        .take(32)
        .collect();
    if mapped.is_empty() {
        "unnamed".to_owned()
    } else {
        mapped
    }
}

/// `sanitize(s)`, or with a `-2`, `-3`, ... suffix if that is taken; the result is added to
/// `taken`.
pub(crate) fn unique(s: &str, taken: &mut Vec<String>) -> String {
    let base = sanitize(s);
    let name = if taken.contains(&base) {
        (2..)
            .map(|n| {
                let suffix = format!("-{n}");
                let keep = 32 - suffix.len();
                format!("{}{suffix}", &base[..base.len().min(keep)])
            })
            .find(|candidate| !taken.contains(candidate))
            .unwrap_or(base)
    } else {
        base
    };
    taken.push(name.clone());
    name
}

/// A duration as the vipd config writes it: "2s", "1500ms", "1m".
pub(crate) fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms != 0 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}
