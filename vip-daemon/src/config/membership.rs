//! `[cluster]` keys of cluster mode: gossip address and peers, key file, voters, witness,
//! lease and fencing. Cluster mode is on when `listen` is set; the other keys then apply.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::{
    check::parse_duration,
    diag::Ctx,
    locate::FieldPath,
    raw::RawCluster,
    types::{Heartbeat, Membership, SecondaryLink, Vip},
    validate::parse_or,
};

const SOCKET_HINT: &str = "expected address:port like \"192.0.2.11:7946\"";

pub(crate) fn duration(
    cx: &mut Ctx,
    v: &Option<String>,
    at: &FieldPath,
    default: Duration,
) -> Duration {
    match v.as_deref().map(parse_duration) {
        None => default,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(Ok(_)) => {
            cx.error(at, "must be longer than zero");
            default
        }
        Some(Err(e)) => {
            cx.error(at, e);
            default
        }
    }
}

pub(crate) fn membership(
    raw: &RawCluster,
    at: &FieldPath,
    node_name: &str,
    cx: &mut Ctx,
) -> Option<Membership> {
    let Some(listen) = raw.listen.as_deref() else {
        for (key, set) in [
            ("peers", raw.peers.is_some()),
            ("secondary_listen", raw.secondary_listen.is_some()),
            ("secondary_peers", raw.secondary_peers.is_some()),
            ("heartbeat_interval", raw.heartbeat_interval.is_some()),
            ("key_file", raw.key_file.is_some()),
            ("voters", raw.voters.is_some()),
            ("witness", raw.witness.is_some()),
            ("fence_command", raw.fence_command.is_some()),
        ] {
            if set {
                cx.error(
                    &at.key(key),
                    "only applies in cluster mode: set `listen` too",
                );
            }
        }
        return None;
    };
    let listen = parse_or::<SocketAddr>(cx, &at.key("listen"), listen, SOCKET_HINT);
    let peers: Vec<SocketAddr> = raw
        .peers
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, p)| parse_or::<SocketAddr>(cx, &at.key("peers").index(i), p, SOCKET_HINT))
        .collect();
    let secondary = secondary_link(raw, at, listen, cx);
    let heartbeat = heartbeat(raw, at, cx);
    let key_file = cx
        .required(
            &raw.key_file,
            &at.key("key_file"),
            "\"/etc/vip-fabric/cluster.key\"",
        )
        .cloned()
        .unwrap_or_default();
    if !key_file.is_empty() && !key_file.starts_with('/') {
        cx.error(
            &at.key("key_file"),
            format!("{key_file:?}: expected an absolute path"),
        );
    }
    let voters = raw
        .voters
        .clone()
        .unwrap_or_else(|| vec![node_name.to_owned()]);
    if !voters.iter().any(|v| v == node_name) {
        cx.error(
            &at.key("voters"),
            format!("must include this node ({node_name:?}, from [node] name): every voter runs vipd with its own name"),
        );
    }
    let mut sorted = voters.clone();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != voters.len() {
        cx.error(&at.key("voters"), "lists a node twice");
    }
    if let Some(w) = &raw.witness {
        if !voters.contains(w) {
            cx.error(
                &at.key("witness"),
                format!("{w:?} is not one of the voters {voters:?}"),
            );
        }
    }
    if let Some(cmd) = &raw.fence_command {
        if cmd.is_empty() || cmd[0].is_empty() {
            cx.error(
                &at.key("fence_command"),
                "expected a non-empty argv, e.g. [\"/usr/local/sbin/fence-node\"]",
            );
        }
    }
    let lease = duration(cx, &raw.lease, &at.key("lease"), Duration::from_secs(1));
    let probe_period = duration(
        cx,
        &raw.probe_period,
        &at.key("probe_period"),
        Duration::from_millis(150),
    );
    Some(Membership {
        listen: listen.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
        peers,
        secondary,
        heartbeat,
        key_file: PathBuf::from(key_file),
        voters,
        witness: raw.witness.clone(),
        lease,
        fence_command: raw.fence_command.clone().filter(|c| !c.is_empty()),
        fence_timeout: duration(
            cx,
            &raw.fence_timeout,
            &at.key("fence_timeout"),
            Duration::from_secs(10),
        ),
        probe_period,
        suspect_timeout: duration(
            cx,
            &raw.suspect_timeout,
            &at.key("suspect_timeout"),
            Duration::from_millis(300),
        ),
    })
}

/// `heartbeat_interval` (on when set) and `heartbeat_timeout` (default five intervals, at
/// least three: one lost heartbeat is not a death).
fn heartbeat(raw: &RawCluster, at: &FieldPath, cx: &mut Ctx) -> Option<Heartbeat> {
    let Some(_) = &raw.heartbeat_interval else {
        if raw.heartbeat_timeout.is_some() {
            cx.error(
                &at.key("heartbeat_timeout"),
                "needs heartbeat_interval (the detector is off without it)",
            );
        }
        return None;
    };
    let interval = duration(
        cx,
        &raw.heartbeat_interval,
        &at.key("heartbeat_interval"),
        Duration::from_millis(10),
    );
    let timeout = duration(
        cx,
        &raw.heartbeat_timeout,
        &at.key("heartbeat_timeout"),
        interval * 5,
    );
    if timeout < interval * 3 {
        cx.error(
            &at.key("heartbeat_timeout"),
            format!(
                "{timeout:?} is under three heartbeat intervals ({interval:?}): a lost heartbeat or two would declare a member dead"
            ),
        );
    }
    Some(Heartbeat { interval, timeout })
}

/// `secondary_listen` and `secondary_peers`: both or neither, on another address than the
/// first link's.
fn secondary_link(
    raw: &RawCluster,
    at: &FieldPath,
    listen: Option<SocketAddr>,
    cx: &mut Ctx,
) -> Option<SecondaryLink> {
    let (second, peers) = match (&raw.secondary_listen, &raw.secondary_peers) {
        (None, None) => return None,
        (Some(l), Some(p)) => (l, p),
        (None, Some(_)) => {
            cx.error(
                &at.key("secondary_peers"),
                "needs secondary_listen: this node's address on the second link",
            );
            return None;
        }
        (Some(_), None) => {
            cx.error(
                &at.key("secondary_listen"),
                "needs secondary_peers: the members' addresses on the second link",
            );
            return None;
        }
    };
    let second = parse_or::<SocketAddr>(cx, &at.key("secondary_listen"), second, SOCKET_HINT)?;
    if Some(second) == listen
        || listen.is_some_and(|l| l.ip() == second.ip() && !l.ip().is_unspecified())
    {
        cx.error(
            &at.key("secondary_listen"),
            format!("{second}: the second link needs an address of its own (another network than `listen`)"),
        );
    }
    let peers = peers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            parse_or::<SocketAddr>(cx, &at.key("secondary_peers").index(i), p, SOCKET_HINT)
        })
        .collect();
    Some(SecondaryLink {
        listen: second,
        peers,
    })
}

/// VIP keys of cluster mode: preferences must name voters (and not the witness).
pub(crate) fn check_vips(m: Option<&Membership>, vips: &[Vip], cx: &mut Ctx) {
    for (i, v) in vips.iter().enumerate() {
        let at = FieldPath::root().key("vip").index(i).key("preferences");
        for p in &v.preferences {
            match m {
                None => cx.error(&at, "only applies in cluster mode ([cluster] listen)"),
                Some(m) if !m.voters.contains(p) || m.witness.as_deref() == Some(p) => cx.error(
                    &at,
                    format!(
                        "{p:?} is not a voter that can own VIPs (voters {:?}, witness {:?})",
                        m.voters, m.witness
                    ),
                ),
                Some(_) => {}
            }
        }
    }
}
