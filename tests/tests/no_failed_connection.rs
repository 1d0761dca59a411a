//! A service or a whole controller dies while a client opens a new HTTP connection through
//! the VIP every 15 ms: no request fails. The dead service's node gives connections that
//! still reach it a second chance in XDP (no socket: sent on to the fallback backend), its
//! socket watch (sock_diag) takes it out of every table within milliseconds, and membership
//! takes a cut-off controller's backends out as soon as it is declared dead. Connections made
//! while a service was away survive its return.
mod common;

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use common::{
    services::{spawn_service, Services},
    Cluster, VIP,
};
use vip_tests::{privileged, servers, servers::HttpKeepAlive};

const PORT: u16 = 8774;

fn api_vip() -> String {
    let mut c = format!(
        "\n[[vip]]\nname = \"api\"\naddress = \"{VIP}\"\nport = {PORT}\ntable_size = 251\ncheck = {{ kind = \"http\" }}\n"
    );
    for b in 0..3 {
        c.push_str(&format!(
            "[[vip.backend]]\nname = \"ctl{}\"\naddress = \"{}\"\nport = {PORT}\n",
            b + 1,
            common::node_ip(b)
        ));
    }
    c
}

/// One request: when it started and who answered (or the error).
type Outcome = (Instant, Result<String, String>);

/// New connections at a steady pace from the client, each on its own thread so a request
/// that hangs does not slow the others.
struct Load {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Outcome>>>,
}

impl Load {
    fn start(cluster: &Cluster, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, l) = (stop.clone(), log.clone());
        let to = SocketAddr::new(IpAddr::V4(VIP), PORT);
        cluster.client().ns.spawn(move || {
            while !s.load(Ordering::Acquire) {
                let l = l.clone();
                std::thread::spawn(move || {
                    let at = Instant::now();
                    let r = servers::http_get(to)
                        .map(|(_, body)| body.trim().to_owned())
                        .map_err(|e| e.to_string());
                    l.lock().expect("log").push((at, r));
                });
                std::thread::sleep(every);
            }
        });
        Self { stop, log }
    }

    fn outcomes(&self) -> Vec<Outcome> {
        let mut v = self.log.lock().expect("log").clone();
        v.sort_by_key(|o| o.0);
        v
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
    start.elapsed()
}

/// Slots of backend `name` of VIP `api` in node `i`'s live table.
fn slots(cluster: &Cluster, i: usize, name: &str) -> u64 {
    let s = cluster.nodes[i].vipd.status_json();
    s["vips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["name"] == "api")
        .flat_map(|v| v["backends"].as_array().cloned().unwrap_or_default())
        .find(|b| b["name"] == name)
        .and_then(|b| b["slots"].as_u64())
        .unwrap_or(0)
}

/// Node `i`'s packets counted under data-plane reason `name`.
fn reason_count(cluster: &Cluster, i: usize, name: &str) -> u64 {
    let s = cluster.nodes[i].vipd.status_json();
    let reasons = s["reasons"].as_array().cloned().unwrap_or_default();
    reasons
        .iter()
        .find(|r| r["reason"] == name)
        .and_then(|r| r["packets"].as_u64())
        .unwrap_or(0)
}

/// Segments node `i`'s XDP sent on to another backend.
fn tx_second_chance(cluster: &Cluster, i: usize) -> u64 {
    reason_count(cluster, i, "tx_second_chance")
}

/// Each test runs three vipd; one at a time keeps timings honest on a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Failures among requests started after `cut`, as offsets from it (printed).
fn failures_after(load: &Load, cut: Instant, what: &str) -> Vec<Duration> {
    let after: Vec<Outcome> = load.outcomes().into_iter().filter(|o| o.0 >= cut).collect();
    let failures: Vec<Duration> = after
        .iter()
        .filter(|o| o.1.is_err())
        .map(|o| o.0 - cut)
        .collect();
    eprintln!(
        "{what}: {} of {} requests failed, the last {:?} after the cut",
        failures.len(),
        after.len(),
        failures.last()
    );
    failures
}

#[test]
fn owner_link_cut_fails_nothing_later_than_500_ms() {
    if !privileged("owner_link_cut_fails_nothing_later_than_500_ms") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start_full(common::TEST_TIMING, &api_vip());
    let owner = cluster.wait_single_owner(Duration::from_secs(10));
    let _services = Services((0..3).map(|i| spawn_service(&cluster, i, PORT)).collect());
    wait_until("all api backends live", Duration::from_secs(10), || {
        (0..3).all(|b| slots(&cluster, owner, &format!("ctl{}", b + 1)) > 0)
    });
    let load = Load::start(&cluster, Duration::from_millis(15));
    std::thread::sleep(Duration::from_millis(800));
    let dead = cluster.host(owner);
    let cut = Instant::now();
    dead.ns.exec(&["ip", "link", "set", &dead.iface, "down"]);
    std::thread::sleep(Duration::from_millis(3000));
    load.stop.store(true, Ordering::Release);
    std::thread::sleep(Duration::from_millis(2100)); // hung connects time out
    let failures = failures_after(&load, cut, "owner link cut");
    assert!(
        failures.iter().all(|f| *f <= Duration::from_millis(500)),
        "failures later than 500 ms after the cut: {failures:?}"
    );
    // Once the dead owner's port went down, the bridge flooded the client's frames for its
    // MAC to every port: the survivors saw them and left them alone (each balancing its
    // copy would have sent every request twice).
    let flooded: u64 = (0..3)
        .filter(|i| *i != owner)
        .map(|i| reason_count(&cluster, i, "pass_other_host"))
        .sum();
    eprintln!("owner link cut: {flooded} flooded frames for the dead owner's MAC left alone");
    assert!(
        flooded > 0,
        "the bridge floods after the cut; IFACES must be set"
    );
}

#[test]
fn killed_service_and_cut_controller_leave_the_tables_at_once() {
    if !privileged("killed_service_and_cut_controller_leave_the_tables_at_once") {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = Cluster::start_full(common::TEST_TIMING, &api_vip());
    let owner = cluster.wait_single_owner(Duration::from_secs(10));
    let mut services = Services((0..3).map(|i| spawn_service(&cluster, i, PORT)).collect());
    wait_until("all api backends live", Duration::from_secs(10), || {
        (0..3).all(|b| slots(&cluster, owner, &format!("ctl{}", b + 1)) > 0)
    });
    let load = Load::start(&cluster, Duration::from_millis(15));
    std::thread::sleep(Duration::from_millis(800));

    // 1. SIGKILL one controller's service. The detection goal is 50 ms; this machine is
    // shared and now and then stalls every process for a few hundred ms, so a slow
    // measurement is repeated once, on the other non-owner controller (killing the same
    // service again would make it flap and be held down). A lost socket watch fails both
    // attempts (the probes alone take 100+ ms).
    let mut attempt = 1;
    let (victim, victim_name, killed, local, at_owner) = loop {
        let victim = (owner + attempt) % 3;
        let victim_name = cluster.nodes[victim].name.clone();
        let killed = Instant::now();
        services.0[victim].kill().expect("kill");
        let _ = services.0[victim].wait();
        let gone = Instant::now();
        let local = wait_until("victim's own table", Duration::from_secs(1), || {
            slots(&cluster, victim, &victim_name) == 0
        });
        let at_owner = wait_until("owner's table", Duration::from_secs(1), || {
            slots(&cluster, owner, &victim_name) == 0
        });
        let status = cluster.nodes[victim]
            .vipd
            .cli(&["status"])
            .unwrap_or_default();
        assert!(status.contains("socket GONE"), "status shows it:\n{status}");
        std::thread::sleep(Duration::from_millis(700));
        // Connections opened once the process is gone; one opened before (accepted by the
        // dying process, or in its accept queue) is reset with it, as it would be anywhere.
        let during_kill: Vec<Outcome> = load
            .outcomes()
            .into_iter()
            .filter(|o| o.0 >= gone)
            .collect();
        let failed_kill = during_kill.iter().filter(|o| o.1.is_err()).count();
        eprintln!(
            "service SIGKILL (attempt {attempt}): out of the victim's table after <= {local:?}, \
             the owner's after <= {:?}; {failed_kill} of {} new connections failed",
            local + at_owner,
            during_kill.len()
        );
        assert_eq!(
            failed_kill, 0,
            "second chance: no request fails: {during_kill:?}"
        );
        // Polled through `vipd status` (a process per call), so an upper bound.
        if local < Duration::from_millis(50) {
            break (victim, victim_name, killed, local, at_owner);
        }
        assert!(
            attempt < 2,
            "detection goal 50 ms, missed on two controllers"
        );
        attempt += 1;
        services.0[victim] = spawn_service(&cluster, victim, PORT);
        wait_until("back in both tables", Duration::from_secs(3), || {
            slots(&cluster, owner, &victim_name) > 0 && slots(&cluster, victim, &victim_name) > 0
        });
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        load.outcomes()
            .iter()
            .filter(|o| o.0 > killed + local + at_owner)
            .all(|o| o.1.as_ref().is_ok_and(|who| *who != victim_name)),
        "once the owner knows, nothing reaches the dead service"
    );

    // Long-lived connections made while the service is away live on the two others.
    let to = SocketAddr::new(IpAddr::V4(VIP), PORT);
    let kept: Vec<(HttpKeepAlive, String)> = cluster.client().ns.run(move || {
        (0..30)
            .map(|_| {
                let mut c = HttpKeepAlive::connect(to).expect("connect");
                let first = c.get().expect("first answer");
                (c, first)
            })
            .collect()
    });
    assert!(kept.iter().all(|(_, who)| *who != victim_name));

    // 2. Restarted: back in the tables after the probes rise.
    let restarted = Instant::now();
    services.0[victim] = spawn_service(&cluster, victim, PORT);
    let back = wait_until("back in the owner's table", Duration::from_secs(3), || {
        slots(&cluster, owner, &victim_name) > 0
    });
    eprintln!("service restarted: back in the owner's table after {back:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        load.outcomes()
            .iter()
            .any(|o| o.0 > restarted + back && o.1.as_deref() == Ok(victim_name.as_str())),
        "traffic returns to the restarted service"
    );
    // The return moved about a third of the table to it, but the connections made while it
    // was away are not its: its node gives their segments a second chance (a listener
    // takes only a SYN), and they reach the backends that have them.
    let before = tx_second_chance(&cluster, victim);
    let answers: Vec<(String, Result<String, String>)> = cluster.client().ns.run(move || {
        kept.into_iter()
            .map(|(mut c, first)| (first, c.get().map_err(|e| e.to_string())))
            .collect()
    });
    let broken = answers.iter().filter(|(a, b)| b.as_ref() != Ok(a)).count();
    let rerouted = tx_second_chance(&cluster, victim) - before;
    eprintln!(
        "30 connections made while the service was away: {broken} broken after its return, \
         {rerouted} segments sent on by its node"
    );
    assert_eq!(broken, 0, "{answers:?}");
    assert!(
        rerouted > 0,
        "some connections hashed to the returned backend"
    );

    // 3. The owner's own service: the client's SYNs reach it without a peer hop.
    let owner_name = cluster.nodes[owner].name.clone();
    services.0[owner].kill().expect("kill");
    let _ = services.0[owner].wait();
    let gone = Instant::now();
    wait_until("owner's own table", Duration::from_secs(1), || {
        slots(&cluster, owner, &owner_name) == 0
    });
    std::thread::sleep(Duration::from_millis(500));
    let failed: Vec<Outcome> = load
        .outcomes()
        .into_iter()
        .filter(|o| o.0 >= gone && o.1.is_err())
        .collect();
    eprintln!(
        "owner's service SIGKILL: {} new connections failed",
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    services.0[owner] = spawn_service(&cluster, owner, PORT);

    // 4. The first victim's link is cut: its backends leave the tables when membership
    // declares it dead.
    let dead = cluster.host(victim);
    let cut = Instant::now();
    dead.ns.exec(&["ip", "link", "set", &dead.iface, "down"]);
    std::thread::sleep(Duration::from_millis(2500));
    load.stop.store(true, Ordering::Release);
    std::thread::sleep(Duration::from_millis(2100)); // hung connects time out
    let failures = failures_after(&load, cut, "controller link cut");
    assert!(
        failures.iter().all(|f| *f <= Duration::from_millis(500)),
        "failures later than 500 ms after the cut: {failures:?}"
    );
}
