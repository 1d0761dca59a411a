//! `[hooks]`, `[track]` and the read-only status socket of `[control]`: what keepalived's
//! `notify` / `track_interface` / `track_script` and Pacemaker's alerts gave operators.
use std::{path::PathBuf, time::Duration};

use super::{
    diag::Ctx,
    locate::FieldPath,
    membership::duration,
    raw::{RawControl, RawHooks, RawTrack},
};

/// `[hooks]`: a command run on every ownership, service and backend change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hooks {
    /// argv of the notify command (None: no hook). Environment: see docs/operations.md.
    pub notify: Option<Vec<String>>,
    /// A run longer than this is killed and counted as failed.
    pub notify_timeout: Duration,
}

/// `[track]`: conditions that take this node out of service while they fail (its VIPs
/// handed over, its local backends out of every table).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Track {
    /// Interfaces whose link carrier is tracked (default: `node.interfaces`).
    pub interfaces: Vec<String>,
    pub scripts: Vec<TrackScript>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackScript {
    pub name: String,
    pub command: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures before the condition fails; successes before it passes again.
    pub fall: u32,
    pub rise: u32,
}

/// `[control] status_socket` / `status_group`: a second socket that answers only reads
/// (status, stats, trace), for a monitoring group without root.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusSocket {
    pub path: Option<PathBuf>,
    /// Group owning the socket (mode 0660); None: root's group, mode 0666 is never used.
    pub group: Option<String>,
}

fn argv(cx: &mut Ctx, at: &FieldPath, cmd: &[String]) -> bool {
    let ok = !cmd.is_empty() && cmd[0].starts_with('/');
    if !ok {
        cx.error(
            at,
            "expected an argv starting with an absolute path, e.g. [\"/usr/local/bin/vip-notify\"]",
        );
    }
    ok
}

pub(crate) fn hooks(raw: &RawHooks, cx: &mut Ctx) -> Hooks {
    let at = FieldPath::root().key("hooks");
    let notify = raw.notify.clone();
    let notify = notify.filter(|c| argv(cx, &at.key("notify"), c));
    let timeout = Duration::from_secs(10);
    let notify_timeout = duration(cx, &raw.notify_timeout, &at.key("notify_timeout"), timeout);
    Hooks {
        notify,
        notify_timeout,
    }
}

pub(crate) fn track(raw: &RawTrack, node_interfaces: &[String], cx: &mut Ctx) -> Track {
    let at = FieldPath::root().key("track");
    // The default, `node.interfaces`, is checked where it is written.
    let written = raw.interfaces.iter().flatten();
    for (i, ifname) in written.enumerate() {
        if ifname.is_empty() || ifname.len() > 15 || ifname.contains('/') {
            let msg = format!("{ifname:?} is not a valid interface name, e.g. \"eth0\"");
            cx.error(&at.key("interfaces").index(i), msg);
        }
    }
    let mut scripts: Vec<TrackScript> = Vec::new();
    for (i, s) in raw.script.iter().enumerate() {
        let at = at.key("script").index(i);
        let name = s.name.clone().unwrap_or_default();
        if super::validate::check_name(cx, &at.key("name"), &name)
            && scripts.iter().any(|o| o.name == name)
        {
            cx.error(
                &at.key("name"),
                format!("track script {name:?} is listed twice"),
            );
        }
        let command = s.command.clone().unwrap_or_default();
        argv(cx, &at.key("command"), &command);
        let interval = duration(cx, &s.interval, &at.key("interval"), Duration::from_secs(2));
        let timeout = duration(cx, &s.timeout, &at.key("timeout"), Duration::from_secs(1));
        if timeout > interval {
            let msg = "must not be longer than `interval` (one run at a time)";
            cx.error(&at.key("timeout"), msg);
        }
        let count = |cx: &mut Ctx, v, key: &str| {
            cx.int(v, &at.key(key), 1..=100, "an integer 1..=100")
                .map_or(2, |n| n as u32)
        };
        let (fall, rise) = (count(cx, s.fall, "fall"), count(cx, s.rise, "rise"));
        scripts.push(TrackScript {
            name,
            command,
            interval,
            timeout,
            fall,
            rise,
        });
    }
    Track {
        interfaces: (raw.interfaces.clone()).unwrap_or_else(|| node_interfaces.to_vec()),
        scripts,
    }
}

pub(crate) fn status_socket(raw: &RawControl, cx: &mut Ctx) -> StatusSocket {
    let at = FieldPath::root().key("control");
    let path = raw.status_socket.as_deref().map(PathBuf::from);
    if let Some(p) = raw.status_socket.as_deref() {
        if !p.starts_with('/') || p.len() > 107 {
            let msg =
                format!("{p:?} is not usable: expected an absolute path of at most 107 bytes");
            cx.error(&at.key("status_socket"), msg);
        }
        if Some(p) == raw.socket.as_deref() {
            cx.error(&at.key("status_socket"), "must differ from `socket`");
        }
    }
    if raw.status_group.is_some() && path.is_none() {
        cx.error(&at.key("status_group"), "only applies with `status_socket`");
    }
    StatusSocket {
        path,
        group: raw.status_group.clone(),
    }
}
