//! Which config changes a reload cannot apply: they are fixed when vipd starts (sockets it
//! binds, interfaces it attaches, the cluster it joins). A reload that changes them is
//! refused, so the running state never silently differs from the file. In cluster mode a
//! reload does apply VIPs added or removed and their `preferences` and `fencing` (the
//! ownership core's `Input::Reconfigure`); the membership keys stay start-only.
use super::{Config, Membership};

/// The settings that differ between `old` and `new` and need a restart, by config key.
pub fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |key, differs: bool| {
        if differs {
            changed.push(key);
        }
    };
    check("node.name", old.node.name != new.node.name);
    check(
        "node.interfaces",
        old.node.interfaces != new.node.interfaces,
    );
    check("node.pin_dir", old.node.pin_dir != new.node.pin_dir);
    check("node.realtime", old.node.realtime != new.node.realtime);
    check(
        "node.local_clients / local_clients_cgroup",
        (old.node.local_clients, &old.node.local_clients_cgroup)
            != (new.node.local_clients, &new.node.local_clients_cgroup),
    );
    match (&old.cluster.membership, &new.cluster.membership) {
        (Some(o), Some(n)) => membership_changes(o, n, &mut check),
        (o, n) => check(
            "cluster mode on or off ([cluster] listen)",
            o.is_some() != n.is_some(),
        ),
    }
    check("metrics.listen", old.metrics_listen != new.metrics_listen);
    check("control.socket", old.control_socket != new.control_socket);
    check(
        "control.status_socket / status_group",
        old.status_socket != new.status_socket,
    );
    // Where the announced routes live: a reload would strand the old table's routes.
    check(
        "bgp.table / bgp.protocol",
        (old.bgp.table, old.bgp.protocol) != (new.bgp.table, new.bgp.protocol),
    );
    changed
}

/// Each `[cluster]` key of a running cluster member: the gossip socket and key, who votes,
/// the lease (the ownership core keeps them), fencing and failure detection timings.
fn membership_changes(
    old: &Membership,
    new: &Membership,
    check: &mut impl FnMut(&'static str, bool),
) {
    // Exhaustive: a new key must be placed on one side or the other.
    let Membership {
        listen,
        peers,
        secondary,
        heartbeat,
        key_file,
        voters,
        witness,
        lease,
        fence_command,
        fence_timeout,
        probe_period,
        suspect_timeout,
    } = old;
    check("cluster.listen", *listen != new.listen);
    check("cluster.peers", *peers != new.peers);
    check(
        "cluster.secondary_listen / secondary_peers",
        *secondary != new.secondary,
    );
    check(
        "cluster.heartbeat_interval / heartbeat_timeout",
        *heartbeat != new.heartbeat,
    );
    check("cluster.key_file", *key_file != new.key_file);
    check("cluster.voters", *voters != new.voters);
    check("cluster.witness", *witness != new.witness);
    check("cluster.lease", *lease != new.lease);
    check("cluster.fence_command", *fence_command != new.fence_command);
    check("cluster.fence_timeout", *fence_timeout != new.fence_timeout);
    check("cluster.probe_period", *probe_period != new.probe_period);
    check(
        "cluster.suspect_timeout",
        *suspect_timeout != new.suspect_timeout,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        crate::config::parse(text, "/etc/vipd.toml").expect("valid")
    }

    const BASE: &str = r#"
[node]
name = "ctl1"
interfaces = ["eth0"]
addresses = ["192.0.2.11"]

[[vip]]
name = "web"
address = "192.0.2.100"
port = 80
[[vip.backend]]
name = "a"
address = "192.0.2.11"
"#;

    #[test]
    fn weights_and_checks_reload_but_interfaces_and_cluster_need_a_restart() {
        let old = config(BASE);
        let weight = config(&format!("{BASE}weight = 5\n"));
        assert!(restart_only_changes(&old, &weight).is_empty());
        let iface = config(&BASE.replace("[\"eth0\"]", "[\"eth1\"]"));
        assert_eq!(restart_only_changes(&old, &iface), ["node.interfaces"]);
        let metrics = config(&format!("[metrics]\nlisten = \"off\"\n{BASE}"));
        assert_eq!(restart_only_changes(&old, &metrics), ["metrics.listen"]);
        let table = config(&format!("[bgp]\ntable = 202\n{BASE}"));
        assert_eq!(
            restart_only_changes(&old, &table),
            ["bgp.table / bgp.protocol"]
        );
        let quiet = config(&format!("[bgp]\nwithdraw_quiet = \"1s\"\n{BASE}"));
        assert!(restart_only_changes(&old, &quiet).is_empty());
        assert!(old.node.local_clients && old.node.local_clients_cgroup.is_none());
        for local in [
            "local_clients = false",
            "local_clients_cgroup = \"/sys/fs/cgroup/x\"",
        ] {
            let changed = config(&BASE.replace("[node]\n", &format!("[node]\n{local}\n")));
            assert_eq!(
                restart_only_changes(&old, &changed),
                ["node.local_clients / local_clients_cgroup"]
            );
        }
    }

    fn cluster(voters: &str, vips: &str) -> Config {
        let (node, rest) = BASE.split_at(BASE.find("[[vip]]").expect("a vip"));
        config(&format!(
            "{node}[cluster]\nlisten = \"192.0.2.11:7946\"\npeers = [\"192.0.2.12:7946\"]\n\
             key_file = \"/etc/vip-fabric/cluster.key\"\nvoters = {voters}\n{rest}{vips}"
        ))
    }

    #[test]
    fn cluster_vips_reload_but_membership_keys_need_a_restart() {
        let voters = r#"["ctl1", "ctl2", "ctl3"]"#;
        let old = cluster(voters, "");
        let added = "[[vip]]\nname = \"api\"\naddress = \"192.0.2.101\"\nport = 443\n\
                     preferences = [\"ctl2\"]\nfencing = false\n\
                     [[vip.backend]]\nname = \"a\"\naddress = \"192.0.2.11\"\n";
        let new = cluster(voters, added);
        assert!(restart_only_changes(&old, &new).is_empty());
        assert!(restart_only_changes(&new, &old).is_empty(), "removed");
        let mut prefs = new.clone();
        prefs.vips[1].preferences = vec!["ctl3".into()];
        prefs.vips[1].fencing = true;
        assert!(restart_only_changes(&new, &prefs).is_empty());
        let fewer = cluster(r#"["ctl1", "ctl2"]"#, added);
        assert_eq!(restart_only_changes(&new, &fewer), ["cluster.voters"]);
        assert_eq!(
            restart_only_changes(&config(BASE), &old),
            ["cluster mode on or off ([cluster] listen)"]
        );
    }
}
