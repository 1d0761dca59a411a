//! What a backend host needs for direct server return, and how to get there and back.
//!
//! A backend answers clients straight from a VIP it never announces: the VIP on `lo`,
//! `arp_ignore=1` (answer ARP only for addresses on the asking interface) and
//! `arp_announce=2` (never source ARP from the VIP). A backend reached with
//! `forward = "encap"` also needs the outer IPIP/IP6IP6 header stripped: the `vip_decap` XDP
//! program on the interface holding its address, and reverse-path filtering no stricter than
//! loose there (the inner source is a client the host may route elsewhere).
//!
//! Which VIPs: every VIP of the config with a backend whose address is one of this host's
//! (so one config file serves the balancers and their backends), plus any given by hand.
//! Pure: [`plan`] compares that with the observed state, [`plan_undo`] what `setup` recorded
//! with what is there now.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::config::{Config, Forward};

/// What this host should have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// VIP addresses to put on `lo`.
    pub vips: BTreeSet<IpAddr>,
    /// Interfaces that receive encapsulated VIP traffic (need the decapsulation program).
    pub decap: BTreeSet<String>,
    /// Where balancers send encapsulated packets from (`ENCAP_SOURCES` of the decapsulation
    /// program): the config's `cluster.encap_source_v4/v6`, or their defaults without one.
    /// Any other IPIP/IP6IP6 reaching a decap interface is dropped.
    pub encap_sources: Vec<vip_common::maps::EncapSourceKey>,
}

/// The VIPs this host backs: every VIP of `config` with a backend at one of `host` (address ->
/// interface holding it), plus `extra`. A `forward = "encap"` backend's interface needs decap.
pub fn wanted(config: &Config, host: &BTreeMap<IpAddr, String>, extra: &[IpAddr]) -> Wanted {
    let mut w = Wanted {
        encap_sources: crate::core::image::encap_sources(config),
        ..Default::default()
    };
    for vip in &config.vips {
        for b in &vip.backends {
            let Some(iface) = host.get(&b.address) else {
                continue;
            };
            w.vips.insert(vip.address);
            if b.forward == Forward::Encap {
                w.decap.insert(iface.clone());
            }
        }
    }
    w.vips.extend(extra.iter().copied());
    w
}

/// A sysctl by its path under `/proc/sys` (`net/ipv4/conf/all/arp_ignore`): interface names
/// may hold dots, which the dotted form cannot tell from separators.
pub type SysctlPath = String;

/// What this host has, as far as [`plan`] asks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Current value of each sysctl [`sysctls_for`] names (None: not there).
    pub sysctls: BTreeMap<SysctlPath, Option<String>>,
    /// Addresses on `lo`.
    pub lo: BTreeSet<IpAddr>,
    /// Name of the XDP program attached to each interface of `Wanted::decap` (None: none).
    pub xdp: BTreeMap<String, Option<String>>,
}

/// One sysctl requirement: `set` is written unless the value is one of `accept`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysctlWant {
    pub path: SysctlPath,
    pub set: &'static str,
    pub accept: &'static [&'static str],
    pub why: &'static str,
}

/// The sysctls a host with `w` needs. The kernel uses the larger of `all` and the
/// interface's own value for `arp_ignore`/`arp_announce`/`rp_filter`, so `all` is what counts
/// for ARP, and for `rp_filter` both `all` and the decap interface must be 0 or 2.
pub fn sysctls_for(w: &Wanted) -> Vec<SysctlWant> {
    let mut out = Vec::new();
    if w.vips.iter().any(IpAddr::is_ipv4) {
        out.push(SysctlWant {
            path: "net/ipv4/conf/all/arp_ignore".into(),
            set: "1",
            accept: &["1", "2"],
            why: "answer ARP only for addresses of the asking interface, never for a VIP on lo",
        });
        out.push(SysctlWant {
            path: "net/ipv4/conf/all/arp_announce".into(),
            set: "2",
            accept: &["2"],
            why: "never use a VIP as the source of ARP requests",
        });
    }
    if !w.decap.is_empty() {
        let why =
            "decapsulated packets come from clients routed elsewhere: loose reverse-path filter";
        out.push(SysctlWant {
            path: "net/ipv4/conf/all/rp_filter".into(),
            set: "2",
            accept: &["0", "2"],
            why,
        });
        for iface in &w.decap {
            out.push(SysctlWant {
                path: format!("net/ipv4/conf/{iface}/rp_filter"),
                set: "2",
                accept: &["0", "2"],
                why,
            });
        }
    }
    out
}

/// One change to this host.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    Sysctl {
        path: SysctlPath,
        /// Value before (None: unknown or absent).
        from: Option<String>,
        to: String,
    },
    /// A VIP address on `lo`.
    LoAddress { address: IpAddr },
    /// The `vip_decap` program attached to an interface.
    Decap { iface: String },
}

impl Change {
    /// What it does, for people.
    pub fn describe(&self) -> String {
        match self {
            Self::Sysctl { path, from, to } => format!(
                "set {} = {to} (was {})",
                path.replace('/', "."),
                from.as_deref().unwrap_or("absent")
            ),
            Self::LoAddress { address } => format!("add VIP {address} to lo"),
            Self::Decap { iface } => format!("attach the vip_decap XDP program to {iface}"),
        }
    }

    /// What undoing it does, for people.
    pub fn describe_undo(&self) -> String {
        match self {
            Self::Sysctl { path, from, to } => format!(
                "set {} back to {} (from {to})",
                path.replace('/', "."),
                from.as_deref().unwrap_or("absent")
            ),
            Self::LoAddress { address } => format!("remove VIP {address} from lo"),
            Self::Decap { iface } => format!("detach the vip_decap XDP program from {iface}"),
        }
    }
}

/// The changes that take `observed` to `w`, and notes on what is left alone and why.
pub fn plan(w: &Wanted, observed: &Observed) -> (Vec<Change>, Vec<String>) {
    let (mut changes, mut notes) = (Vec::new(), Vec::new());
    for s in sysctls_for(w) {
        let now = observed.sysctls.get(&s.path).cloned().flatten();
        match now.as_deref() {
            Some(v) if s.accept.contains(&v.trim()) => {}
            None => notes.push(format!(
                "{} does not exist on this host ({})",
                s.path.replace('/', "."),
                s.why
            )),
            Some(v) => changes.push(Change::Sysctl {
                path: s.path.clone(),
                from: Some(v.trim().to_owned()),
                to: s.set.into(),
            }),
        }
    }
    for a in &w.vips {
        if !observed.lo.contains(a) {
            changes.push(Change::LoAddress { address: *a });
        }
    }
    for iface in &w.decap {
        match observed.xdp.get(iface).cloned().flatten() {
            None => changes.push(Change::Decap {
                iface: iface.clone(),
            }),
            // vip_xdp strips encapsulated VIP packets itself (`pass_decap`).
            Some(name) if name == "vip_decap" || name == "vip_xdp" => {}
            Some(other) => notes.push(format!(
                "{iface} already runs the XDP program {other:?}: not replaced; encapsulated \
                 VIP packets need vip_decap (or vipd's vip_xdp) there"
            )),
        }
    }
    (changes, notes)
}

/// What undoing `recorded` (newest last) does given what is there now: the changes to revert,
/// newest first, and notes on those left because someone changed them since.
pub fn plan_undo(recorded: &[Change], observed: &Observed) -> (Vec<Change>, Vec<String>) {
    let (mut undo, mut notes) = (Vec::new(), Vec::new());
    for c in recorded.iter().rev() {
        match c {
            Change::Sysctl { path, to, .. } => {
                let now = observed.sysctls.get(path).cloned().flatten();
                if now.as_deref().map(str::trim) == Some(to.as_str()) {
                    undo.push(c.clone());
                } else {
                    notes.push(format!(
                        "{} is {} now, not the {to} setup wrote: left as it is",
                        path.replace('/', "."),
                        now.as_deref().unwrap_or("absent")
                    ));
                }
            }
            Change::LoAddress { address } if !observed.lo.contains(address) => {
                notes.push(format!("VIP {address} is no longer on lo"));
            }
            Change::Decap { iface } if observed.xdp.get(iface).cloned().flatten().is_none() => {
                notes.push(format!("{iface} has no XDP program any more"));
            }
            _ => undo.push(c.clone()),
        }
    }
    (undo, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = r#"
[[vip]]
name = "web"
address = "192.0.2.100"
port = 80
  [[vip.backend]]
  name = "a"
  address = "192.0.2.11"
  [[vip.backend]]
  name = "b"
  address = "192.0.2.12"
[[vip]]
name = "far"
address = "192.0.2.101"
port = 80
  [[vip.backend]]
  name = "a"
  address = "192.0.2.11"
  forward = "encap"
[[vip]]
name = "other"
address = "192.0.2.102"
port = 80
  [[vip.backend]]
  name = "c"
  address = "192.0.2.13"
"#;
        crate::config::parse(text, "t.toml").expect("valid")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn host_a() -> BTreeMap<IpAddr, String> {
        BTreeMap::from([(ip("192.0.2.11"), "eth0".to_owned())])
    }

    #[test]
    fn a_host_backs_the_vips_listing_its_addresses_and_decaps_for_encap_ones() {
        let w = wanted(&config(), &host_a(), &[ip("2001:db8::1")]);
        let vips: Vec<String> = w.vips.iter().map(ToString::to_string).collect();
        assert_eq!(vips, ["192.0.2.100", "192.0.2.101", "2001:db8::1"]);
        assert_eq!(w.decap, BTreeSet::from(["eth0".to_owned()]));
        let b = BTreeMap::from([(ip("192.0.2.12"), "eth1".to_owned())]);
        let w = wanted(&config(), &b, &[]);
        assert_eq!(w.vips, BTreeSet::from([ip("192.0.2.100")]));
        assert!(w.decap.is_empty());
    }

    fn observed(arp_ignore: &str, rp: &str) -> Observed {
        let mut o = Observed::default();
        for (k, v) in [
            ("net/ipv4/conf/all/arp_ignore", arp_ignore),
            ("net/ipv4/conf/all/arp_announce", "0"),
            ("net/ipv4/conf/all/rp_filter", rp),
            ("net/ipv4/conf/eth0/rp_filter", "0"),
        ] {
            o.sysctls.insert(k.into(), Some(format!("{v}\n")));
        }
        o.xdp.insert("eth0".into(), None);
        o
    }

    #[test]
    fn the_plan_lists_what_is_missing_and_nothing_that_is_there() {
        let w = wanted(&config(), &host_a(), &[]);
        let mut o = observed("0", "1");
        o.lo.insert(ip("192.0.2.100"));
        let (changes, notes) = plan(&w, &o);
        let said: Vec<String> = changes.iter().map(Change::describe).collect();
        assert_eq!(
            said,
            [
                "set net.ipv4.conf.all.arp_ignore = 1 (was 0)",
                "set net.ipv4.conf.all.arp_announce = 2 (was 0)",
                "set net.ipv4.conf.all.rp_filter = 2 (was 1)",
                "add VIP 192.0.2.101 to lo",
                "attach the vip_decap XDP program to eth0",
            ]
        );
        assert!(notes.is_empty(), "{notes:?}");
        // arp_ignore 2 and rp_filter 0 are as good: left alone; vip_xdp decaps too.
        let mut o = observed("2", "0");
        o.sysctls
            .insert("net/ipv4/conf/all/arp_announce".into(), Some("2".into()));
        o.lo.extend([ip("192.0.2.100"), ip("192.0.2.101")]);
        o.xdp.insert("eth0".into(), Some("vip_xdp".into()));
        assert_eq!(plan(&w, &o), (vec![], vec![]));
    }

    #[test]
    fn a_foreign_xdp_program_is_not_replaced_but_said() {
        let w = wanted(&config(), &host_a(), &[]);
        let mut o = observed("1", "0");
        o.xdp.insert("eth0".into(), Some("firewall".into()));
        let (changes, notes) = plan(&w, &o);
        assert!(!changes.iter().any(|c| matches!(c, Change::Decap { .. })));
        assert!(notes[0].contains("firewall"), "{notes:?}");
    }

    #[test]
    fn undo_reverts_newest_first_and_leaves_what_was_changed_since() {
        let recorded = vec![
            Change::Sysctl {
                path: "net/ipv4/conf/all/arp_ignore".into(),
                from: Some("0".into()),
                to: "1".into(),
            },
            Change::Sysctl {
                path: "net/ipv4/conf/all/arp_announce".into(),
                from: Some("0".into()),
                to: "2".into(),
            },
            Change::LoAddress {
                address: ip("192.0.2.100"),
            },
            Change::LoAddress {
                address: ip("192.0.2.101"),
            },
        ];
        let mut o = observed("1", "0");
        o.sysctls
            .insert("net/ipv4/conf/all/arp_announce".into(), Some("1".into()));
        o.lo.insert(ip("192.0.2.100"));
        let (undo, notes) = plan_undo(&recorded, &o);
        assert_eq!(undo, vec![recorded[2].clone(), recorded[0].clone()]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[1].contains("arp_announce is 1 now"), "{notes:?}");
    }
}
