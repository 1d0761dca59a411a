//! Backend services as processes of their own, so that a test can SIGKILL one like a
//! crashing service.
use std::process::{Child, Command};

use vip_tests::NetNs;

use super::Cluster;

/// An HTTP service (`vip-lab serve http`, on `[::]:port`) answering `name`, in namespace `ns`.
pub fn spawn_service_in(ns: &NetNs, name: &str, port: u16) -> Child {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.name))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_vip-lab"))
        .args(["serve", "http", "--port", &port.to_string()])
        .args(["--name", name])
        .args(["--vip", &super::VIP.to_string()])
        .spawn()
        .expect("spawn service")
}

/// [`spawn_service_in`] node `i`'s namespace, answering its name.
pub fn spawn_service(cluster: &Cluster, i: usize, port: u16) -> Child {
    spawn_service_in(&cluster.host(i).ns, &cluster.nodes[i].name, port)
}

/// Service processes, killed on drop (also when the test fails).
pub struct Services(pub Vec<Child>);

impl Drop for Services {
    fn drop(&mut self) {
        for s in &mut self.0 {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}
