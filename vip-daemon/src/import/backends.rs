//! The servers of a backend section → the backends of one VIP: addresses and check ports,
//! weights, checks, and primary-backup priorities when some servers are `backup`.

use std::net::IpAddr;

use super::checks;
use super::haproxy::Proxy;
use super::lex::Host;
use super::plan::{unique, BackendPlan};
use super::{Anchor, Notes};

pub(crate) struct Backends {
    /// In priority order for primary-backup, else in file order. Empty if no server fits.
    pub list: Vec<BackendPlan>,
    pub primary_backup: bool,
    /// Lines of the servers left out (reported).
    pub left_out: Vec<usize>,
    /// Explanations for the VIP's comment.
    pub notes: Vec<String>,
}

/// The backends of VIP `address:port` (creation serial `serial`) from `back`'s servers.
pub(crate) fn backends(
    back: &Proxy,
    address: IpAddr,
    port: u16,
    serial: usize,
    file: &str,
    notes: &mut Notes,
) -> Backends {
    let report = |notes: &mut Notes, anchor: Anchor, line: usize, text: &str, why: &str| {
        notes.add(anchor, file, line, text, why);
    };
    let mut backends: Vec<BackendPlan> = Vec::new();
    let mut backup = Vec::new();
    let mut names = Vec::new();
    let mut left_out = Vec::new();
    for s in &back.servers {
        let (line, text) = (s.src.line, s.src.text.as_str());
        let (this_vip, this_backend) = (Anchor::Vip(serial), Anchor::Backend(serial, line));
        left_out.push(line); // until it is a backend
        let ip = match &s.host {
            Host::Ip(ip) => *ip,
            _ => {
                report(notes, Anchor::Server(line), line, text, super::why::DNS);
                continue;
            }
        };
        if ip.is_ipv4() != address.is_ipv4() || ip == address {
            let why = if ip == address {
                format!("{ip} is the VIP address itself: left out of VIP {address}")
            } else {
                format!("{ip} and the VIP {address} are of different address families: left out")
            };
            report(notes, this_vip, line, text, &why);
            continue;
        }
        // haproxy in front of a service on 127.0.0.1 is common; vipd cannot forward there
        // (the validator refuses it), so the server is left out with the validator's reason.
        if let Some(problem) = crate::config::backend_address_problem(ip) {
            let why = format!("left out of VIP {address}: {}", problem.message(ip));
            report(notes, this_vip, line, text, &why);
            continue;
        }
        if let Some(p) = s.port.filter(|p| *p != port) {
            let why = format!(
                "DSR keeps the destination port: clients reach this server on the VIP port \
                 {port}, so it must listen there (haproxy connected to port {p})"
            );
            report(notes, this_backend, line, text, &why);
        }
        let check_port = s.opts.port.unwrap_or(port);
        if let Some(first) = backends
            .iter()
            .find(|o| (o.address, o.port) == (ip, check_port))
        {
            let why = format!(
                "same address and check port as server \"{}\": listed once (raise its weight to \
                 give it a bigger share)",
                first.name
            );
            report(notes, this_vip, line, text, &why);
            continue;
        }
        left_out.pop();
        let mut comments = Vec::new();
        if !s.opts.check {
            comments.push(
                "haproxy did not health-check this server (no `check`); vipd checks every backend"
                    .to_owned(),
            );
        }
        if s.opts.disabled {
            comments.push("disabled in haproxy.cfg: weight 0 (drained)".to_owned());
        }
        let check = checks::check(&back.settings, s, file, notes);
        backup.push(s.opts.backup);
        backends.push(BackendPlan {
            name: unique(&s.name, &mut names),
            address: ip,
            port: check_port,
            weight: if s.opts.disabled {
                0
            } else {
                s.opts.weight.unwrap_or(1)
            },
            priority: None,
            check,
            line,
            notes: comments,
        });
    }
    let mut vip_notes = Vec::new();
    let primary_backup = backup.contains(&true);
    if primary_backup && !backends.is_empty() {
        vip_notes.push(order_primary_backup(
            back,
            &mut backends,
            &backup,
            file,
            notes,
        ));
    }
    Backends {
        list: backends,
        primary_backup,
        left_out,
        notes: vip_notes,
    }
}

/// Primary-backup: non-backup servers first (priority 0, 1, ...), then the backups.
fn order_primary_backup(
    back: &Proxy,
    backends: &mut Vec<BackendPlan>,
    backup: &[bool],
    file: &str,
    notes: &mut Notes,
) -> String {
    let mut tagged: Vec<(bool, BackendPlan)> =
        backup.iter().copied().zip(backends.drain(..)).collect();
    tagged.sort_by_key(|(is_backup, _)| *is_backup); // stable: file order within each group
    let actives: Vec<String> = tagged
        .iter()
        .filter(|t| !t.0)
        .map(|t| t.1.name.clone())
        .collect();
    let h = &back.header;
    if actives.len() > 1 {
        let why = format!(
            "{} non-backup servers ({}) shared the load in haproxy, but with a backup server the \
             VIP becomes selection = \"primary-backup\", which sends everything to ONE backend at \
             a time (Galera single-writer semantics): {} first, the others in order",
            actives.len(),
            actives.join(", "),
            actives[0]
        );
        notes.add(h.anchor, file, h.line, &h.text, &why);
    }
    if let Some(src) = &back.settings.allbackups {
        let why = "primary-backup uses one backup at a time, never all of them";
        notes.add(src.anchor, file, src.line, &src.text, why);
    }
    if tagged.len() > 256 {
        let why = "primary-backup priorities go up to 255: servers after the 256th are left out";
        notes.add(h.anchor, file, h.line, &h.text, why);
        tagged.truncate(256);
    }
    for (i, (_, mut b)) in tagged.into_iter().enumerate() {
        b.priority = u8::try_from(i).ok();
        backends.push(b);
    }
    let order: Vec<&str> = backends.iter().map(|b| b.name.as_str()).collect();
    format!(
        "`backup` servers -> selection = \"primary-backup\": the healthy backend with the lowest \
         priority takes all traffic ({})",
        order.join(", then ")
    )
}
