//! The running vipd's self-check: what runs compared with what should, and what can be
//! repaired safely. The shell observes (program ids, table compares, addresses, leases);
//! [`findings`] says what differs and how to repair it. A lease is the ownership core's to
//! decide, so a bad one is reported, never "repaired" here.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

/// What the self-check observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The id of this vipd's loaded balancer program (None: unknown).
    pub loaded_id: Option<u32>,
    /// Configured interface -> id of the XDP program attached to it (None: none).
    pub attached: BTreeMap<String, Option<u32>>,
    /// VIPs whose live table differs from the published image.
    pub tables_differing: Vec<String>,
    /// Cluster mode: VIP addresses this node owns -> whether its lease in the maps is valid.
    pub owned: BTreeMap<IpAddr, bool>,
    /// Cluster mode: the cluster's VIP addresses this node does not own.
    pub not_owned: BTreeSet<IpAddr>,
    /// Cluster mode: addresses on each configured interface.
    pub on_iface: BTreeMap<String, BTreeSet<IpAddr>>,
}

/// A safe repair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repair {
    /// Attach this vipd's program to the interface again (or put it back in the link).
    Reattach {
        iface: String,
    },
    /// Publish the image's table again.
    RewriteTable {
        vip: String,
    },
    AddAddress {
        iface: String,
        address: IpAddr,
    },
    RemoveAddress {
        iface: String,
        address: IpAddr,
    },
}

/// One mismatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// `program`, `table`, `address`, `foreign_address` or `lease` (the metric's label).
    pub check: &'static str,
    pub what: String,
    pub repair: Option<Repair>,
}

/// Every check's label, for metrics that show all of them from the start.
pub const CHECKS: [&str; 5] = ["program", "table", "address", "foreign_address", "lease"];

/// What differs between `o` and what should run.
pub fn findings(o: &Observed) -> Vec<Finding> {
    let mut out = Vec::new();
    for (iface, attached) in &o.attached {
        let what = match (attached, o.loaded_id) {
            (None, _) => format!("no XDP program attached to {iface}"),
            (Some(a), Some(l)) if *a != l => {
                format!("{iface} runs XDP program id {a}, not this vipd's id {l}")
            }
            _ => continue,
        };
        out.push(Finding {
            check: "program",
            what,
            repair: Some(Repair::Reattach {
                iface: iface.clone(),
            }),
        });
    }
    for vip in &o.tables_differing {
        out.push(Finding {
            check: "table",
            what: format!("VIP {vip}: the live table differs from the published image"),
            repair: Some(Repair::RewriteTable { vip: vip.clone() }),
        });
    }
    for (iface, addrs) in &o.on_iface {
        for address in o.owned.keys() {
            if !addrs.contains(address) {
                out.push(Finding {
                    check: "address",
                    what: format!("owned VIP {address} missing from {iface}"),
                    repair: Some(Repair::AddAddress {
                        iface: iface.clone(),
                        address: *address,
                    }),
                });
            }
        }
        for address in addrs.intersection(&o.not_owned) {
            out.push(Finding {
                check: "foreign_address",
                what: format!("VIP {address} on {iface} but this node does not own it"),
                repair: Some(Repair::RemoveAddress {
                    iface: iface.clone(),
                    address: *address,
                }),
            });
        }
    }
    for (address, _) in o.owned.iter().filter(|(_, ok)| !**ok) {
        out.push(Finding {
            check: "lease",
            what: format!("owned VIP {address} has no valid lease in the maps"),
            repair: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn healthy() -> Observed {
        Observed {
            loaded_id: Some(7),
            attached: BTreeMap::from([("eth0".into(), Some(7))]),
            tables_differing: vec![],
            owned: BTreeMap::from([(ip("10.0.0.100"), true)]),
            not_owned: BTreeSet::from([ip("10.0.0.101")]),
            on_iface: BTreeMap::from([(
                "eth0".into(),
                BTreeSet::from([ip("10.0.0.1"), ip("10.0.0.100")]),
            )]),
        }
    }

    #[test]
    fn what_runs_as_it_should_finds_nothing() {
        assert_eq!(findings(&healthy()), vec![]);
    }

    #[test]
    fn each_mismatch_is_found_with_its_repair() {
        let mut o = healthy();
        o.attached.insert("eth0".into(), Some(9));
        o.attached.insert("eth1".into(), None);
        o.tables_differing.push("web".into());
        o.on_iface
            .insert("eth0".into(), BTreeSet::from([ip("10.0.0.101")]));
        o.owned.insert(ip("10.0.0.100"), false);
        let f = findings(&o);
        let checks: Vec<&str> = f.iter().map(|f| f.check).collect();
        assert_eq!(
            checks,
            [
                "program",
                "program",
                "table",
                "address",
                "foreign_address",
                "lease"
            ]
        );
        assert_eq!(
            f[3].repair,
            Some(Repair::AddAddress {
                iface: "eth0".into(),
                address: ip("10.0.0.100")
            })
        );
        assert_eq!(
            f[4].repair,
            Some(Repair::RemoveAddress {
                iface: "eth0".into(),
                address: ip("10.0.0.101")
            })
        );
        assert_eq!(f[5].repair, None, "a lease is ownership's to decide");
        assert!(
            f[0].what.contains("id 9, not this vipd's id 7"),
            "{}",
            f[0].what
        );
    }
}
