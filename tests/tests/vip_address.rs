//! How vipd puts a VIP address on an interface when it claims it. An IPv6 VIP is a /128 that
//! matches a backend's address better than the node's own, so the kernel would pick it as the
//! source of vipd's probes (RFC 6724 rule 8) and the backends would answer to their own `lo`:
//! every IPv6 backend looked down once the node owned the VIP. vipd adds it deprecated
//! (never chosen as a source, rule 3), without DAD (usable at once after a takeover).
use vip_daemon::shell::{neighbours, vipaddr};
use vip_tests::{privileged, veth_pair, NetNs};

const NODE: &str = "fd00:77::11";
const BACKEND: &str = "fd00:77::21";
/// Closer to the backend's address than the node's own: the source the kernel would pick.
const VIP: &str = "fd00:77::20";

#[test]
fn an_ipv6_vip_is_never_the_source_of_probes_and_is_usable_at_once() {
    if !privileged("an_ipv6_vip_is_never_the_source_of_probes_and_is_usable_at_once") {
        return;
    }
    let node = NetNs::new("v6node-");
    let backend = NetNs::new("v6back-");
    veth_pair(&node, "eth0", &backend, "eth0");
    // Test namespaces turn DAD off; a real NIC has it on, and a claimed VIP must not wait.
    node.exec(&["sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=1"]);
    node.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{NODE}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    backend.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{BACKEND}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    node.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let handle = neighbours::connect().expect("netlink");
            vipaddr::add(&handle, "eth0", VIP.parse().expect("vip"))
                .await
                .expect("add the VIP");
            // Idempotent, as a re-claim is.
            vipaddr::add(&handle, "eth0", VIP.parse().expect("vip"))
                .await
                .expect("add again");
        });
    });
    let route = node.exec(&["ip", "-6", "route", "get", BACKEND]);
    assert!(
        route.contains(&format!("src {NODE}")),
        "probes to a backend must leave from the node's address, not the VIP: {route}"
    );
    let addrs = node.exec(&["ip", "-6", "addr", "show", "dev", "eth0"]);
    let vip_line = addrs
        .lines()
        .find(|l| l.contains(&format!("{VIP}/128")))
        .unwrap_or_else(|| panic!("VIP not on eth0: {addrs}"));
    assert!(vip_line.contains("deprecated"), "{vip_line}");
    assert!(
        !vip_line.contains("tentative"),
        "DAD would delay it: {vip_line}"
    );
    // Deprecated is not unusable: the backend side reaches the VIP at once.
    let ping = backend.exec(&["ping", "-6", "-c", "1", "-W", "2", VIP]);
    assert!(ping.contains("1 received"), "{ping}");
}
