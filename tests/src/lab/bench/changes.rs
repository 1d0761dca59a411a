//! `bench changes`: routine day-2 changes on a single-node vipd in front of real HTTP/1.1
//! keep-alive backends, under a new connection every 10 ms and 40 long-lived keep-alive
//! connections (a request every ~50 ms each, always answered by the same backend). Each step is
//! measured on its own: failed new connections, long-lived connections broken, and the longest
//! run of failing new connections ("gap"). Not the lab's cluster: one vipd, one LAN (the root
//! tests' `Lan`, namespaces with unique names), everything gone when the bench returns.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use vip_common::maps;
use vip_daemon::shell::dataplane::{Dataplane, Sizing};

use super::{machine, Options};
use crate::{
    lab::{cmd, pause, stop_requested, story::Story, Bins},
    servers::{self, HttpKeepAlive},
    unique, vip_on_loopback,
    vipd::Vipd,
    Lan, PinDir,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
/// The VIP added and removed again in step 3.
const ALT_VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 101);
const INTERVAL_MS: u64 = 100;
const RISE: u32 = 2;
const FALL: u32 = 2;
const NEW_EVERY: Duration = Duration::from_millis(10);
const LONG_LIVED: usize = 40;
const LONG_EVERY: Duration = Duration::from_millis(50);
const FLAP_TOGGLE: Duration = Duration::from_millis(200);
const FLAP_FOR: Duration = Duration::from_secs(20);
/// Backends b0..b3 on hosts 11..14 (b3 joins in step 1).
const BACKENDS: [(&str, u8); 4] = [("b0", 11), ("b1", 12), ("b2", 13), ("b3", 14)];

/// One new-connection request: when it started, how long it took, in which step, and the
/// answering backend or the error.
struct Sample {
    at: Instant,
    took: Duration,
    step: usize,
    result: Result<String, String>,
}

/// A long-lived connection that broke: in which step, the backend it was on, and why.
struct Broken {
    step: usize,
    backend: String,
    why: String,
}

/// What the client threads record, shared with the bench.
#[derive(Default)]
struct Record {
    samples: Mutex<Vec<Sample>>,
    broken: Mutex<Vec<Broken>>,
    /// The backend each long-lived connection is on (None while reconnecting).
    on: Mutex<Vec<Option<String>>>,
    /// Requests answered on long-lived connections, per backend.
    kept_answers: Mutex<BTreeMap<String, u64>>,
    /// Requests answered on long-lived connections, per step.
    kept_by_step: Mutex<BTreeMap<usize, u64>>,
}

/// A backend's server that can die and come back.
struct Server {
    host: usize,
    name: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn up(&mut self, lan: &Lan) {
        if self.thread.is_some() {
            return;
        }
        self.stop = Arc::new(AtomicBool::new(false));
        self.thread = Some(servers::keepalive_server(
            &lan.hosts[self.host].ns,
            80,
            self.name.clone(),
            self.stop.clone(),
        ));
    }

    /// Stops accepting at once and closes its connections within ~100 ms, as a dead service.
    fn down(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Everything the bench made; dropped in field order: vipd first, the LAN last.
struct Bench {
    vipd: Vipd,
    servers: Vec<Server>,
    stop_clients: Arc<AtomicBool>,
    step: Arc<AtomicUsize>,
    record: Arc<Record>,
    clients: Vec<JoinHandle<()>>,
    client: usize,
    scratch: PathBuf,
    _pins: (PinDir, PinDir),
    lan: Lan,
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.stop_clients.store(true, Ordering::Release);
        for t in self.clients.drain(..) {
            let _ = t.join();
        }
        self.vipd.kill9();
        for s in &mut self.servers {
            s.down();
        }
        let _ = std::fs::remove_dir_all(&self.scratch);
        if let Some(dir) = self.vipd.config.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The file: VIP web with `backends` (names from [`BACKENDS`]), and VIP alt when `alt`.
fn config(iface: &str, state_dir: &Path, backends: &[&str], alt: bool) -> String {
    let mut c = format!(
        r#"[node]
name = "lb"
interfaces = ["{iface}"]
pin_dir = "@PIN_DIR@"
state_dir = "{}"

[cluster]
hash_seed = 4242

[control]
socket = "@CONTROL@"

[defaults.check]
interval = "{INTERVAL_MS}ms"
timeout = "{INTERVAL_MS}ms"
rise = {RISE}
fall = {FALL}
jitter = 0.0

[[vip]]
name = "web"
address = "{VIP}"
port = 80
protocol = "tcp"
table_size = 251
check = {{ kind = "http", path = "/" }}
"#,
        state_dir.display()
    );
    for (name, host) in BACKENDS.iter().filter(|(n, _)| backends.contains(n)) {
        let _ = write!(
            c,
            "[[vip.backend]]\nname = \"{name}\"\naddress = \"10.77.0.{host}\"\nport = 80\n"
        );
    }
    if alt {
        let _ = write!(
            c,
            "\n[[vip]]\nname = \"alt\"\naddress = \"{ALT_VIP}\"\nport = 80\nprotocol = \"tcp\"\n\
             table_size = 251\ncheck = {{ kind = \"http\", path = \"/\" }}\n\
             [[vip.backend]]\nname = \"a1\"\naddress = \"10.77.0.12\"\nport = 80\n\
             [[vip.backend]]\nname = \"a2\"\naddress = \"10.77.0.13\"\nport = 80\n"
        );
    }
    c
}

impl Bench {
    fn setup(bins: &Bins, story: &Story) -> anyhow::Result<Self> {
        let mut lan = Lan::new();
        let client = lan.add_host(1);
        let lb = lan.add_host(2);
        let hosts: Vec<usize> = BACKENDS.iter().map(|(_, n)| lan.add_host(*n)).collect();
        let (pins, port_pins) = (PinDir::new(), PinDir::new());
        // XDP_TX on a veth needs an XDP program on its peer: a bare pass on the switch port.
        {
            let (path, port) = (port_pins.path.clone(), lan.hosts[lb].port.clone());
            lan.switch.run(move || -> anyhow::Result<()> {
                let mut dp = Dataplane::load_pinned(&path, &Sizing::default())
                    .map_err(|e| anyhow::anyhow!("load the pass program: {e:?}"))?;
                dp.attach_program(maps::PROG_BARE_PASS, &port)
                    .map_err(|e| anyhow::anyhow!("attach the pass program: {e:?}"))?;
                Ok(())
            })?;
        }
        for &h in &hosts {
            let host = &lan.hosts[h];
            vip_on_loopback(host, &VIP.to_string(), "fd77::100");
            host.ns
                .exec(&["ip", "addr", "add", &format!("{ALT_VIP}/32"), "dev", "lo"]);
        }
        for vip in [VIP, ALT_VIP] {
            lan.hosts[client].static_neighbour(&vip.to_string(), &lan.hosts[lb].mac);
        }
        let mut servers: Vec<Server> = BACKENDS
            .iter()
            .zip(&hosts)
            .map(|((name, _), &host)| Server {
                host,
                name: (*name).to_owned(),
                stop: Arc::new(AtomicBool::new(false)),
                thread: None,
            })
            .collect();
        for s in &mut servers[..3] {
            s.up(&lan);
        }
        let scratch = std::env::temp_dir().join(unique("vip-bench-changes-"));
        std::fs::create_dir_all(&scratch).context("scratch dir")?;
        let text = config(&lan.hosts[lb].iface, &scratch, &["b0", "b1", "b2"], false);
        let vipd = Vipd::start_bin(&lan.hosts[lb].ns, &pins, &text, &bins.vipd);
        let bench = Self {
            vipd,
            servers,
            stop_clients: Arc::new(AtomicBool::new(false)),
            step: Arc::new(AtomicUsize::new(0)),
            record: Arc::new(Record::default()),
            clients: Vec::new(),
            client,
            scratch,
            _pins: (pins, port_pins),
            lan,
        };
        bench.wait("b0..b2 up", Duration::from_secs(10), |s| {
            live(s, "web") == 3
        })?;
        story.say("vipd up, b0..b2 up");
        Ok(bench)
    }

    fn lb_iface(&self) -> String {
        self.lan.hosts[1].iface.clone()
    }

    /// Writes the file (placeholders filled in as `Vipd::start` does).
    fn write_config(&self, backends: &[&str], alt: bool) -> anyhow::Result<()> {
        let text = config(&self.lb_iface(), &self.scratch, backends, alt)
            .replace("@PIN_DIR@", &self.vipd.pins.to_string_lossy())
            .replace("@CONTROL@", &self.vipd.control.to_string_lossy());
        std::fs::write(&self.vipd.config, text).context("write config")
    }

    /// Writes the file and reloads; the answer must contain `expect`.
    fn reload(&self, backends: &[&str], alt: bool, expect: &str) -> anyhow::Result<String> {
        self.write_config(backends, alt)?;
        let answer = self
            .vipd
            .cli(&["reload"])
            .map_err(|e| anyhow::anyhow!("reload failed: {e}"))?;
        if !answer.contains(expect) {
            bail!("reload answered {answer:?}, expected {expect:?}");
        }
        Ok(answer.trim().to_owned())
    }

    fn status(&self) -> anyhow::Result<serde_json::Value> {
        let text = self
            .vipd
            .cli(&["status", "--json"])
            .map_err(|e| anyhow::anyhow!("status: {e}"))?;
        serde_json::from_str(&text).context("status json")
    }

    /// Polls status until `ok`; how long that took.
    fn wait(
        &self,
        what: &str,
        limit: Duration,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        loop {
            if ok(&self.status()?) {
                return Ok(t0.elapsed());
            }
            if t0.elapsed() > limit {
                bail!(
                    "timed out ({limit:?}) waiting for {what}; status:\n{}",
                    self.vipd.cli(&["status"]).unwrap_or_default()
                );
            }
            pause(Duration::from_millis(20))?;
        }
    }

    /// Starts the new-connection load and the long-lived connections.
    fn start_clients(&mut self) {
        let web = SocketAddr::new(IpAddr::V4(VIP), 80);
        let ns = &self.lan.hosts[self.client].ns;
        *self.record.on.lock().expect("lock") = vec![None; LONG_LIVED];
        {
            let (stop, step, record) = (
                self.stop_clients.clone(),
                self.step.clone(),
                self.record.clone(),
            );
            self.clients.push(ns.spawn(move || {
                let mut next = Instant::now();
                while !stop.load(Ordering::Acquire) {
                    let at = Instant::now();
                    let step = step.load(Ordering::Acquire);
                    let result = servers::http_get(web)
                        .map(|(_, b)| b)
                        .map_err(|e| e.to_string());
                    let took = at.elapsed();
                    record.samples.lock().expect("lock").push(Sample {
                        at,
                        took,
                        step,
                        result,
                    });
                    next += NEW_EVERY;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
            }));
        }
        for i in 0..LONG_LIVED {
            let (stop, step, record) = (
                self.stop_clients.clone(),
                self.step.clone(),
                self.record.clone(),
            );
            self.clients.push(ns.spawn(move || {
                // Spread the connections' requests over the 50 ms period.
                std::thread::sleep(LONG_EVERY * i as u32 / LONG_LIVED as u32);
                long_lived(i, web, &stop, &step, &record);
            }));
        }
    }

    /// Samples of one step.
    fn samples_in(&self, step: usize) -> Vec<(Instant, Duration, Result<String, String>)> {
        self.record
            .samples
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.step == step)
            .map(|s| (s.at, s.took, s.result.clone()))
            .collect()
    }

    /// New-connection answers started after `t`, per backend.
    fn served_since(&self, t: Instant) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for s in self.record.samples.lock().expect("lock").iter() {
            if s.at >= t {
                if let Ok(b) = &s.result {
                    *m.entry(b.clone()).or_default() += 1;
                }
            }
        }
        m
    }

    /// Long-lived connections currently on `backend`.
    fn long_lived_on(&self, backend: &str) -> usize {
        self.record
            .on
            .lock()
            .expect("lock")
            .iter()
            .filter(|b| b.as_deref() == Some(backend))
            .count()
    }

    fn long_lived_by_backend(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for b in self.record.on.lock().expect("lock").iter().flatten() {
            *m.entry(b.clone()).or_default() += 1;
        }
        m
    }

    fn kept_answers(&self) -> BTreeMap<String, u64> {
        self.record.kept_answers.lock().expect("lock").clone()
    }

    /// The id of the program in vipd's pinned XDP link.
    fn linked_prog_id(&self) -> Option<u64> {
        let link = std::fs::read_dir(&self.vipd.pins)
            .ok()?
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().starts_with("link_"))?
            .path();
        let out = cmd(&["bpftool", "-j", "link", "show", "pinned", link.to_str()?]).ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v["prog_id"].as_u64()
    }
}

/// One long-lived connection, reopened whenever it breaks (each break recorded once).
fn long_lived(i: usize, to: SocketAddr, stop: &AtomicBool, step: &AtomicUsize, record: &Record) {
    while !stop.load(Ordering::Acquire) {
        let opened = HttpKeepAlive::connect(to).and_then(|mut c| c.get().map(|b| (c, b)));
        let Ok((mut conn, backend)) = opened else {
            std::thread::sleep(LONG_EVERY);
            continue;
        };
        record.on.lock().expect("lock")[i] = Some(backend.clone());
        loop {
            std::thread::sleep(LONG_EVERY);
            if stop.load(Ordering::Acquire) {
                return;
            }
            let now = step.load(Ordering::Acquire);
            let why = match conn.get() {
                Ok(b) if b == backend => {
                    *record
                        .kept_answers
                        .lock()
                        .expect("lock")
                        .entry(backend.clone())
                        .or_default() += 1;
                    *record
                        .kept_by_step
                        .lock()
                        .expect("lock")
                        .entry(now)
                        .or_default() += 1;
                    continue;
                }
                Ok(other) => format!("answered by {other}"),
                Err(e) => e.to_string(),
            };
            record.on.lock().expect("lock")[i] = None;
            record.broken.lock().expect("lock").push(Broken {
                step: now,
                backend: backend.clone(),
                why,
            });
            break;
        }
    }
}

/// Backends of `vip` holding slots in the live table.
fn live(status: &serde_json::Value, vip: &str) -> usize {
    vip_of(status, vip)["backends"].as_array().map_or(0, |b| {
        b.iter().filter(|b| b["slots"].as_u64() > Some(0)).count()
    })
}

fn vip_of<'a>(status: &'a serde_json::Value, vip: &str) -> &'a serde_json::Value {
    status["vips"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == vip))
        .unwrap_or(&serde_json::Value::Null)
}

fn backend_of<'a>(
    status: &'a serde_json::Value,
    vip: &str,
    backend: &str,
) -> &'a serde_json::Value {
    vip_of(status, vip)["backends"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == backend))
        .unwrap_or(&serde_json::Value::Null)
}

fn slots(status: &serde_json::Value, backend: &str) -> u64 {
    backend_of(status, "web", backend)["slots"]
        .as_u64()
        .unwrap_or(0)
}

/// One measured step.
struct Row {
    n: usize,
    what: &'static str,
    requests: usize,
    kept: u64,
    failed: usize,
    broken: usize,
    expected: usize,
    gap_ms: u64,
    max_latency_ms: u64,
    notes: String,
    errors: BTreeMap<String, usize>,
    breaks: BTreeMap<String, usize>,
}

/// Steps whose failed new connections make `failed_requests` (the routine changes).
const ROUTINE: [usize; 7] = [1, 2, 3, 4, 5, 6, 8];

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

pub fn changes(bins: &Bins, opts: &Options) -> anyhow::Result<()> {
    let story = Story::new();
    story.chapter("changes: one vipd, b0..b2 (HTTP/1.1 keep-alive), a client");
    let mut b = Bench::setup(bins, &story)?;
    b.start_clients();
    let mut notes: BTreeMap<usize, String> = BTreeMap::new();
    let mut expected_gone: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut note = |n: usize, text: String| {
        let e = notes.entry(n).or_default();
        if !e.is_empty() {
            e.push_str("; ");
        }
        e.push_str(&text);
    };
    let begin = |b: &Bench, n: usize, title: &str| {
        b.step.store(n, Ordering::Release);
        story.chapter(&format!("step {n}: {title}"));
    };
    // 0: baseline.
    begin(&b, 0, "baseline (no change)");
    pause(Duration::from_millis(1500))?;
    note(
        0,
        format!("long-lived per backend {:?}", b.long_lived_by_backend()),
    );

    // 1: a backend added on a new server.
    begin(&b, 1, "add backend b3 by reload");
    b.servers[3].up(&b.lan);
    let t = Instant::now();
    let answer = b.reload(&["b0", "b1", "b2", "b3"], false, "1 added, 0 removed)")?;
    story.say(format!("reload: {answer}"));
    let s = b.status()?;
    let new_down = slots(&s, "b3") == 0;
    b.wait("b3's verdict up", Duration::from_secs(5), |s| {
        backend_of(s, "web", "b3")["health"] == "up"
    })?;
    let verdict = t.elapsed();
    b.wait("b3 in the table", Duration::from_secs(5), |s| {
        slots(s, "b3") > 0
    })?;
    let rose = t.elapsed();
    let first = loop {
        let seen = b
            .record
            .samples
            .lock()
            .expect("lock")
            .iter()
            .find(|s| s.at >= t && s.result.as_deref() == Ok("b3"))
            .map(|s| s.at.duration_since(t));
        if seen.is_some() {
            break seen;
        }
        if t.elapsed() > Duration::from_secs(5) {
            break None;
        }
        pause(Duration::from_millis(20))?;
    };
    pause(Duration::from_secs(1))?;
    note(
        1,
        format!(
            "b3 {} at reload; from the reload: verdict up after {} ms (rise {RISE} x {INTERVAL_MS} ms), in the table after {} ms, first new connection on it after {}",
            if new_down { "down" } else { "ALREADY UP" },
            ms(verdict),
            ms(rose),
            first.map_or("NEVER".to_owned(), |d| format!("{} ms", ms(d)))
        ),
    );

    // 2: a backend removed: the one carrying the most long-lived connections.
    begin(&b, 2, "remove a backend by reload");
    let by = b.long_lived_by_backend();
    story.say(format!("long-lived per backend: {by:?}"));
    // b0: b1 is drained in step 6, b2 crashes in step 7 and b3 flaps in step 9, each while
    // carrying the long-lived connections it has had since its start.
    let removed_static = "b0";
    let removed = removed_static.to_owned();
    let carrying = by.get(&removed).copied().unwrap_or(0);
    expected_gone.entry(2).or_default().insert(removed.clone());
    let remaining: Vec<&str> = ["b0", "b1", "b2", "b3"]
        .into_iter()
        .filter(|n| *n != removed_static)
        .collect();
    let t = Instant::now();
    let answer = b.reload(&remaining, false, "0 added, 1 removed)")?;
    story.say(format!("reload: {answer}"));
    pause(Duration::from_millis(1500))?;
    let after = b.served_since(t + Duration::from_millis(100));
    note(
        2,
        format!(
            "removed {removed}, which carried {carrying} long-lived connections (expected to move: the backend is gone); new connections answered by {removed} from 100 ms after the reload: {}",
            after.get(&removed).copied().unwrap_or(0)
        ),
    );

    // 3: a VIP added, then removed.
    begin(&b, 3, "add VIP alt by reload, then remove it by reload");
    let answer = b.reload(&remaining, true, "1 added, 0 removed")?;
    story.say(format!("reload: {answer}"));
    let up = b.wait("alt up", Duration::from_secs(5), |s| live(s, "alt") == 2)?;
    let alt = SocketAddr::new(IpAddr::V4(ALT_VIP), 80);
    let alt_answers = b.lan.hosts[b.client].ns.run(move || {
        (0..10)
            .map(|_| servers::http_get(alt).map(|(_, body)| body))
            .filter_map(Result::ok)
            .collect::<Vec<_>>()
    });
    let answer = b.reload(&remaining, false, "0 added, 1 removed")?;
    story.say(format!("reload: {answer}"));
    pause(Duration::from_secs(1))?;
    note(
        3,
        format!(
            "alt up {} ms after the reload; {}/10 requests to alt answered ({:?}); removed again",
            ms(up),
            alt_answers.len(),
            alt_answers.iter().collect::<BTreeSet<_>>()
        ),
    );

    // 4: kill -9, then a start with the removed backend back in the file.
    begin(&b, 4, "restart (kill -9, start) with a changed layout");
    pause(Duration::from_millis(300))?;
    b.write_config(&["b0", "b1", "b2", "b3"], false)?;
    let t = Instant::now();
    b.vipd.kill9();
    pause(Duration::from_millis(300))?;
    b.vipd.spawn();
    let down = t.elapsed();
    let s = b.status()?;
    let mode = s["interfaces"][0]["mode"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    let kept = live(&s, "web");
    let rose = b.wait("re-added backend up", Duration::from_secs(5), |s| {
        slots(s, &removed) > 0
    })?;
    pause(Duration::from_secs(1))?;
    note(
        4,
        format!(
            "{removed} re-added while down; vipd gone {} ms (kill -9 to control socket answering); interface {mode}; {kept} backends live at start (verdicts kept), {removed} up {} ms later{}",
            ms(down),
            ms(rose),
            if b.vipd.logs().contains("re-creating the data plane") {
                "; DATA PLANE RE-CREATED"
            } else {
                ""
            }
        ),
    );

    // 5: "upgrade": the same build from another path.
    begin(&b, 5, "upgrade: restart from a copy of the vipd binary");
    let copy = b.scratch.join("vipd-upgrade");
    std::fs::copy(&b.vipd.bin, &copy).context("copy vipd")?;
    let prog_before = b.linked_prog_id();
    pause(Duration::from_millis(300))?;
    let t = Instant::now();
    b.vipd.kill9();
    b.vipd.spawn_bin(&copy);
    let down = t.elapsed();
    let prog_after = b.linked_prog_id();
    let mode = b.status()?["interfaces"][0]["mode"]
        .as_str()
        .unwrap_or("?")
        .to_owned();
    pause(Duration::from_millis(1500))?;
    note(
        5,
        format!(
            "same code, another path and inode (not a different build); vipd gone {} ms; interface {mode}; XDP link program id {} -> {}",
            ms(down),
            prog_before.map_or("?".into(), |p| p.to_string()),
            prog_after.map_or("?".into(), |p| p.to_string()),
        ),
    );

    // 6: drain b1 for 2 s, then enable it.
    begin(&b, 6, "drain b1 for 2 s, then enable it");
    let on_b1 = b.long_lived_on("b1");
    let kept_before = b.kept_answers().get("b1").copied().unwrap_or(0);
    b.vipd
        .cli(&["backend", "drain", "web", "b1"])
        .map_err(|e| anyhow::anyhow!("drain: {e}"))?;
    let t = Instant::now();
    pause(Duration::from_secs(2))?;
    let drained_new = b.served_since(t).get("b1").copied().unwrap_or(0);
    let kept_during = b.kept_answers().get("b1").copied().unwrap_or(0) - kept_before;
    let still_on_b1 = b.long_lived_on("b1");
    b.vipd
        .cli(&["backend", "enable", "web", "b1"])
        .map_err(|e| anyhow::anyhow!("enable: {e}"))?;
    let t = Instant::now();
    pause(Duration::from_millis(1500))?;
    let back = b.served_since(t).get("b1").copied().unwrap_or(0);
    note(
        6,
        format!(
            "{on_b1} long-lived on b1 at drain, {still_on_b1} still on it after 2 s, {kept_during} requests answered on them while drained; new connections on b1 while drained: {drained_new}; after enable: {back}"
        ),
    );

    // 7: b2's service dies for ~1 s and comes back.
    begin(&b, 7, "crash b2's server for 1 s, then start it again");
    expected_gone.entry(7).or_default().insert("b2".into());
    let on_b2 = b.long_lived_on("b2");
    let t = Instant::now();
    b.servers[2].down();
    let mut detected = None;
    while t.elapsed() < Duration::from_secs(1) {
        if detected.is_none() && slots(&b.status()?, "b2") == 0 {
            detected = Some(t.elapsed());
        }
        pause(Duration::from_millis(10))?;
    }
    b.servers[2].up(&b.lan);
    let back = b.wait("b2 back", Duration::from_secs(5), |s| slots(s, "b2") > 0)?;
    pause(Duration::from_millis(500))?;
    note(
        7,
        format!(
            "{on_b2} long-lived on b2 (expected to break); b2 out of the table {} after the crash (fall {FALL} x interval {INTERVAL_MS} ms, timeout {INTERVAL_MS} ms); back in {} ms after restart (rise {RISE})",
            detected.map_or("NOT within 1 s".to_owned(), |d| format!("{} ms", ms(d))),
            ms(back)
        ),
    );

    // 8: weight change.
    begin(&b, 8, "weight b0 3");
    let before = b.served_since(Instant::now() - Duration::from_secs(1));
    let slots_before = slots(&b.status()?, "b0");
    b.vipd
        .cli(&["backend", "weight", "web", "b0", "3"])
        .map_err(|e| anyhow::anyhow!("weight: {e}"))?;
    let t = Instant::now();
    pause(Duration::from_secs(3))?;
    let after = b.served_since(t);
    let slots_after = slots(&b.status()?, "b0");
    let share = |m: &BTreeMap<String, usize>| {
        let all: usize = m.values().sum();
        100.0 * m.get("b0").copied().unwrap_or(0) as f64 / all.max(1) as f64
    };
    note(
        8,
        format!(
            "b0's slots {slots_before} -> {slots_after} of 251, its share of new connections {:.0}% before, {:.0}% after (weights 3:1:1:1 -> 50%)",
            share(&before),
            share(&after)
        ),
    );

    // 9: b3 flaps.
    begin(&b, 9, "flap: b3's server toggled every 200 ms for 20 s");
    expected_gone.entry(9).or_default().insert("b3".into());
    let publishes = |s: &serde_json::Value| vip_of(s, "web")["publishes"].as_u64().unwrap_or(0);
    let p0 = publishes(&b.status()?);
    let t = Instant::now();
    let mut toggles = 0;
    while t.elapsed() < FLAP_FOR {
        if toggles % 2 == 0 {
            b.servers[3].down();
        } else {
            b.servers[3].up(&b.lan);
        }
        toggles += 1;
        let next = t + FLAP_TOGGLE * toggles;
        pause(next.saturating_duration_since(Instant::now()))?;
    }
    let took = t.elapsed();
    let s = b.status()?;
    let p1 = publishes(&s);
    b.servers[3].up(&b.lan);
    let flap_rate = (p1 - p0) as f64 / took.as_secs_f64();
    let b3 = backend_of(&s, "web", "b3");
    note(
        9,
        format!(
            "{} publishes of web in {:.1} s = {flap_rate:.2}/s; b3 at the end: {} probe transitions, flapping={}, held >= {:.0} s, health {}",
            p1 - p0,
            took.as_secs_f64(),
            b3["transitions"],
            b3["flapping"],
            b3["held_s"].as_f64().unwrap_or(0.0),
            b3["health"]
        ),
    );
    pause(Duration::from_millis(500))?;
    b.step.store(usize::MAX, Ordering::Release);
    pause(Duration::from_millis(100))?;
    if stop_requested() {
        bail!("interrupted");
    }

    // Tally.
    b.stop_clients.store(true, Ordering::Release);
    for t in b.clients.drain(..) {
        let _ = t.join();
    }
    const TITLES: [&str; 10] = [
        "baseline (no change)",
        "add backend (reload)",
        "remove backend (reload)",
        "add + remove VIP (reload)",
        "restart, changed layout (kill -9)",
        "upgrade (restart from a copy)",
        "drain b1 2 s, enable",
        "crash b2 1 s, return",
        "weight b0 3",
        "flap b3 every 200 ms, 20 s",
    ];
    let broken = std::mem::take(&mut *b.record.broken.lock().expect("lock"));
    let kept_by_step = b.record.kept_by_step.lock().expect("lock").clone();
    let mut rows = Vec::new();
    for (n, what) in TITLES.iter().enumerate() {
        let samples = b.samples_in(n);
        let mut errors = BTreeMap::new();
        for (_, _, r) in &samples {
            if let Err(e) = r {
                *errors.entry(e.clone()).or_default() += 1;
            }
        }
        let gone = expected_gone.get(&n).cloned().unwrap_or_default();
        let mut breaks = BTreeMap::new();
        let (mut unexpected, mut expected) = (0, 0);
        for k in broken.iter().filter(|k| k.step == n) {
            if gone.contains(&k.backend) {
                expected += 1;
            } else {
                unexpected += 1;
                *breaks
                    .entry(format!("{}: {}", k.backend, k.why))
                    .or_default() += 1;
            }
        }
        rows.push(Row {
            n,
            what,
            requests: samples.len(),
            kept: kept_by_step.get(&n).copied().unwrap_or(0),
            failed: errors.values().sum(),
            broken: unexpected,
            expected,
            gap_ms: gap(&samples),
            max_latency_ms: samples.iter().map(|(_, d, _)| ms(*d)).max().unwrap_or(0),
            notes: notes.remove(&n).unwrap_or_default(),
            errors,
            breaks,
        });
    }
    let failed: usize = rows
        .iter()
        .filter(|r| ROUTINE.contains(&r.n))
        .map(|r| r.failed)
        .sum();
    let broken_conns: usize = rows.iter().map(|r| r.broken).sum();
    let restart_gap = rows
        .iter()
        .filter(|r| r.n == 4 || r.n == 5)
        .map(|r| r.gap_ms)
        .max()
        .unwrap_or(0);
    let md = report(&rows, flap_rate);
    println!("\n{md}");
    std::fs::create_dir_all(&opts.report_dir)
        .with_context(|| format!("create {}", opts.report_dir.display()))?;
    let path = opts.report_dir.join("changes.md");
    std::fs::write(&path, &md).with_context(|| format!("write {}", path.display()))?;
    let log = opts.report_dir.join("changes-vipd.log");
    let _ = std::fs::write(&log, b.vipd.logs());
    println!("report: {} (vipd's log: {})", path.display(), log.display());
    drop(b);
    println!(
        "failed_requests={failed} broken_conns={broken_conns} restart_gap_ms={restart_gap} flap_publishes_per_s={flap_rate:.1}"
    );
    Ok(())
}

/// The longest run of failing new connections: from the first failure's start to the next
/// success's start (or the last failure's end); 0 without failures.
fn gap(samples: &[(Instant, Duration, Result<String, String>)]) -> u64 {
    let mut sorted: Vec<_> = samples.iter().collect();
    sorted.sort_by_key(|(at, _, _)| *at);
    let (mut longest, mut run) = (Duration::ZERO, None::<(Instant, Instant)>);
    for (at, took, r) in sorted {
        match (r.is_err(), run) {
            (true, None) => run = Some((*at, *at + *took)),
            (true, Some((start, _))) => run = Some((start, *at + *took)),
            (false, Some((start, _))) => {
                longest = longest.max(at.duration_since(start));
                run = None;
            }
            (false, None) => {}
        }
    }
    if let Some((start, end)) = run {
        longest = longest.max(end.duration_since(start));
    }
    ms(longest)
}

fn report(rows: &[Row], flap_rate: f64) -> String {
    let mut md = format!(
        "# Day-2 changes under load\n\n`sudo cargo xtask bench changes`, {}. One vipd (single node, \
         XDP, DSR, flow table) in front of HTTP/1.1 keep-alive backends b0..b2 (b3 added in step 1), \
         all in network namespaces on one bridge. Load during every step: a new connection every \
         {} ms (HTTP/1.0, one request) and {LONG_LIVED} long-lived keep-alive connections, each \
         sending a request every {} ms that must be answered by the same backend. Health checks: \
         HTTP, interval {INTERVAL_MS} ms, timeout {INTERVAL_MS} ms, rise {RISE}, fall {FALL}, no \
         jitter.\n\n\
         - **failed**: new connections that got an error (refused, reset, timeout after 2 s).\n\
         - **long-lived requests**: requests answered on the long-lived connections (by their \
         own backend) during the step.\n\
         - **broken (surviving)**: long-lived connections broken (error, reset, 3 s timeout, or \
         answered by another backend) whose backend is still in service: the number that must be 0.\n\
         - **broken (expected)**: long-lived connections on the backend the step takes away \
         (removed in step 2, crashed in step 7, flapping in step 9): they must move, and do, by \
         a reset and a reconnect.\n\
         - **gap ms**: the longest run of failing new connections in the step (first failure's \
         start to the next success's start); `restart_gap_ms` is its maximum over steps 4 and 5.\n\
         - A broken connection is reopened at once, so every step starts with {LONG_LIVED} open.\n\n\
         | # | step | new requests | failed | long-lived requests | broken (surviving) | broken (expected) | gap ms | max latency ms | notes |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        machine(),
        NEW_EVERY.as_millis(),
        LONG_EVERY.as_millis(),
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.n,
            r.what,
            r.requests,
            r.failed,
            r.kept,
            r.broken,
            r.expected,
            r.gap_ms,
            r.max_latency_ms,
            r.notes.replace('|', "/")
        );
    }
    let failed: usize = rows
        .iter()
        .filter(|r| ROUTINE.contains(&r.n))
        .map(|r| r.failed)
        .sum();
    let _ = write!(
        md,
        "\n`failed_requests` = {failed}: the sum over the routine changes (steps 1-6 and 8). \
         Step 7 (a backend crash) and step 9 (a flapping backend) are not routine changes and \
         are reported only in the table: a direct-server-return balancer cannot retry a \
         connection that its backend refused, so new connections sent to a dead backend fail \
         until the checks take it out of the table. That window lasts until {FALL} probes in a row \
         have failed (fall {FALL}, interval {INTERVAL_MS} ms), plus the publish: {}-{} ms after \
         the crash when the dead service refuses at once (as here; step 7's notes give the \
         measured value); a host that stops answering adds up to one timeout ({INTERVAL_MS} ms). \
         Flap: {flap_rate:.2} table publishes/s of VIP web while b3 toggled every {} ms (flap \
         damping holds it down after a few transitions).\n",
        (FALL as u64 - 1) * INTERVAL_MS,
        FALL as u64 * INTERVAL_MS,
        FLAP_TOGGLE.as_millis(),
    );
    let mut details = String::new();
    for r in rows {
        for (e, k) in &r.errors {
            let _ = writeln!(details, "- step {}: {k} x new connection: {e}", r.n);
        }
        for (e, k) in &r.breaks {
            let _ = writeln!(details, "- step {}: {k} x long-lived broken on {e}", r.n);
        }
    }
    if !details.is_empty() {
        let _ = write!(md, "\nFailures and unexpected breaks:\n\n{details}");
    }
    md
}
