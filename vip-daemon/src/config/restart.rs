//! Which config changes a reload cannot apply: they are fixed when vipd starts (sockets it
//! binds, interfaces it attaches, the cluster it joins). A reload that changes them is
//! refused, so the running state never silently differs from the file.
use super::Config;

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
    check(
        "[cluster] membership keys",
        old.cluster.membership != new.cluster.membership,
    );
    check("metrics.listen", old.metrics_listen != new.metrics_listen);
    check("control.socket", old.control_socket != new.control_socket);
    let ownership = |c: &Config| -> Vec<(String, Vec<String>, bool)> {
        c.vips
            .iter()
            .map(|v| (v.name.clone(), v.preferences.clone(), v.fencing))
            .collect()
    };
    check(
        "vip preferences / fencing",
        old.cluster.membership.is_some() && ownership(old) != ownership(new),
    );
    changed
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
    }
}
