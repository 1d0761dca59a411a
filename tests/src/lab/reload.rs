//! Act 8: a backend added to a VIP by `vipd reload` on every controller, under load and with
//! long-lived connections open, then drained and removed again the same way. The new
//! backend is a host that runs no vipd (an application server joining the controllers'
//! pool): the lab's services listen on the VIP's port on every controller already, and the
//! data plane never rewrites ports, so a new backend needs a host of its own.
//!
//! Two kinds of long-lived connections: talking ones (a line every 50 ms, like a busy
//! session) and quiet ones (a line before the add, one after it, one after the removal, like
//! an idle pool connection). A VIP with a backend that runs no vipd keeps connections by the
//! owner's flow table instead of second chance, and the table only knows a connection once a
//! segment of it passed after the reload: until then, during the transition after the switch,
//! a segment without an entry follows the table from before the switch (`VIP_F_PREV_TABLE`).
//! The quiet ones show that it does.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::bail;
use vip_daemon::shell::control::AdminAction;

use crate::servers::LineClient;

use super::{
    borrowed_ns,
    chatter::{Chatter, Conn},
    config::{write_configs, ExtraBackend, API_VIP},
    node::Proc,
    pause,
    running::{holders, Lab},
    scenarios::{errors, open_streams, traffic, wait_backend},
    story::Story,
    topology::{add_backend_host, remove_host},
    traffic::since,
};

const ADDED: ExtraBackend = ExtraBackend {
    service: "stream",
    name: "app1",
    address: Ipv4Addr::new(192, 0, 2, 21),
};

/// How often each talking connection asks: a few times between the reload and the new
/// backend's first table (~200 ms with the lab's checks).
const PERIOD: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
pub struct BackendAdded {
    pub service: &'static str,
    pub backend: &'static str,
    /// What the first controller's `vipd reload` answered, adding it.
    pub reload_message: String,
    /// From the first reload until every controller has it up with slots.
    pub in_tables_after: Duration,
    /// New requests of the service in the 2 s after that: answered by it, answered in all.
    pub new_on_added: u64,
    pub new_answered: u64,
    /// Failed new requests (every service) from the add's reload until 2 s after it is in.
    pub errors_add: u64,
    /// Long-lived connections open across the add, talking (a line every 50 ms) and
    /// quiet (a line before the add, one 2 s after it is in, one after the removal): how
    /// many, and how many kept answering from their first backend.
    pub talking: usize,
    pub talking_kept: usize,
    pub quiet: usize,
    pub quiet_kept_add: usize,
    pub quiet_kept_removal: usize,
    /// Connections opened while it was in, that landed on it: answered through its drain,
    /// then closed by the client before the removal.
    pub on_added: usize,
    pub on_added_through_drain: usize,
    /// Connections opened while it was in, to the others (talking and quiet), kept through
    /// its drain and removal.
    pub opened_while_in: usize,
    pub opened_while_in_kept: usize,
    /// New requests it answered from the removal's reload on (0: out of every table).
    pub new_on_added_after_removal: u64,
    /// Failed new requests (every service) from the drain until 2 s after the removal.
    pub errors_remove: u64,
    /// What broke, for the record: "backend: failure (when)".
    pub broken: Vec<String>,
}

/// The act: see the module comment. The lab's config is the original one again afterwards
/// (also when the act fails half-way), and the extra host is gone.
pub fn backend_added_by_reload(lab: &mut Lab, story: &Story) -> anyhow::Result<BackendAdded> {
    let host = ExtraHost::start(lab)?;
    story.say(format!(
        "{} ({}, runs no vipd) serves {} on :7000; no controller's config has it yet",
        ADDED.name, ADDED.address, ADDED.service
    ));
    let outcome = add_then_remove(lab, story);
    if outcome.is_err() {
        let _ = write_configs(&lab.names, &lab.bins, &[]);
        let _ = lab.reload_all();
    }
    drop(host);
    outcome
}

fn add_then_remove(lab: &mut Lab, story: &Story) -> anyhow::Result<BackendAdded> {
    let client = lab.names.ns("client");
    let stream = SocketAddr::new(IpAddr::V4(API_VIP), 7000);
    let mut r = BackendAdded {
        service: ADDED.service,
        backend: ADDED.name,
        ..Default::default()
    };
    let talking = Chatter::open(&client, stream, 12, PERIOD)?;
    let quiet = Quiet::open(lab, stream)?;
    story.say(format!(
        "24 long-lived connections through {stream}: 12 talking every {PERIOD:?} (to {}), 12 quiet (to {})",
        talking.firsts().join(" "),
        quiet.firsts()
    ));

    let before = traffic(lab);
    write_configs(&lab.names, &lab.bins, &[ADDED])?;
    let added_at = Instant::now();
    // The owner first, then the others one by one: for a while the owner runs another
    // mode (flow table or second chance) than the nodes it forwards to.
    let owner = api_owner(lab)?;
    r.reload_message = lab.reload_one_by_one(&owner, RELOAD_GAP)?;
    story.say(format!(
        "every config file gains {}/{}; vipd reload on {owner} (the owner), then on each other controller {RELOAD_GAP:?} apart ({:.0?}): {}",
        ADDED.service,
        ADDED.name,
        added_at.elapsed(),
        r.reload_message
    ));
    r.in_tables_after = wait_backend(lab, ADDED.service, ADDED.name, true, added_at)?;
    story.say(format!(
        "{} up with slots on every controller {:.0?} after the first reload",
        ADDED.name, r.in_tables_after
    ));
    let at = traffic(lab);
    pause(Duration::from_secs(2))?;
    let now = traffic(lab);
    let new = since(&now, &at).remove(ADDED.service).unwrap_or_default();
    r.new_on_added = new.by_backend.get(ADDED.name).copied().unwrap_or(0);
    r.new_answered = new.answered();
    r.errors_add = errors(&since(&now, &before));
    let quiet = quiet.ask(lab);
    r.quiet = quiet.0.len();
    r.quiet_kept_add = quiet.kept();
    story.say(format!(
        "new {} requests in the next 2 s: {} of {} answered by {}; failed new requests since the reload: {}; quiet connections kept: {}/{}, talking: {}/12",
        ADDED.service, r.new_on_added, r.new_answered, ADDED.name, r.errors_add,
        r.quiet_kept_add, r.quiet, talking.snapshot().iter().filter(|c| c.kept()).count()
    ));

    story.say(flow_counters(lab));

    let mut during = Chatter::open(&client, stream, 12, PERIOD)?;
    let quiet_during = Quiet::open(lab, stream)?;
    story.say(format!(
        "24 more long-lived connections: talking (to {}), quiet (to {})",
        during.firsts().join(" "),
        quiet_during.firsts()
    ));
    let before = traffic(lab);
    lab.admin_all(AdminAction::Drain, ADDED.service, ADDED.name)?;
    story.say(format!(
        "{}/{} drained on every controller",
        ADDED.service, ADDED.name
    ));
    pause(Duration::from_millis(500))?;
    // Its sessions end (the client closes them), as an operator waits for before removing.
    let on_added = during.close_where(|c| c.first == ADDED.name);
    let (quiet_on_added, quiet_during) = quiet_during.ask(lab).split(ADDED.name);
    r.on_added = on_added.len() + quiet_on_added.0.len();
    r.on_added_through_drain = on_added.iter().filter(|c| c.kept()).count() + quiet_on_added.kept();
    drop(quiet_on_added);
    write_configs(&lab.names, &lab.bins, &[])?;
    let removed_at = Instant::now();
    let owner = api_owner(lab)?;
    let message = lab.reload_one_by_one(&owner, RELOAD_GAP)?;
    story.say(format!(
        "its {} connections closed by the client (answered through the drain: {}); config restored, vipd reload on {owner} (the owner), then on each other controller {RELOAD_GAP:?} apart: {message}",
        r.on_added, r.on_added_through_drain
    ));
    wait_removed(lab, removed_at)?;
    let at = traffic(lab);
    pause(Duration::from_secs(2))?;
    let now = traffic(lab);
    r.new_on_added_after_removal = since(&now, &at)
        .get(ADDED.service)
        .and_then(|c| c.by_backend.get(ADDED.name).copied())
        .unwrap_or(0);
    r.errors_remove = errors(&since(&now, &before));
    let quiet = quiet.ask(lab);
    r.quiet_kept_removal = quiet.kept();
    let quiet_during = quiet_during.ask(lab);

    let talking = talking.finish();
    let during: Vec<Conn> = during
        .finish()
        .into_iter()
        .filter(|c| c.first != ADDED.name)
        .collect();
    r.talking = talking.len();
    r.talking_kept = talking.iter().filter(|c| c.kept()).count();
    r.opened_while_in = during.len() + quiet_during.0.len();
    r.opened_while_in_kept = during.iter().filter(|c| c.kept()).count() + quiet_during.kept();
    let when = |at: &Instant| {
        if *at < removed_at {
            format!(
                "{:.0?} after the add's reload",
                at.saturating_duration_since(added_at)
            )
        } else {
            format!(
                "{:.0?} after the removal's reload",
                at.saturating_duration_since(removed_at)
            )
        }
    };
    r.broken = talking
        .iter()
        .chain(&during)
        .filter_map(|c| {
            let (at, why) = c.broken.as_ref()?;
            Some(format!("talking, {}: {why} ({})", c.first, when(at)))
        })
        .chain(quiet.broken("quiet, opened before the add"))
        .chain(quiet_during.broken("quiet, opened while it was in"))
        .collect();
    story.say(format!(
        "after the removal: {} new requests to {}, failed new requests {}; long-lived connections kept: opened before the add {}/{} talking, {}/{} quiet; opened while it was in {}/{}",
        r.new_on_added_after_removal,
        ADDED.name,
        r.errors_remove,
        r.talking_kept,
        r.talking,
        r.quiet_kept_removal,
        r.quiet,
        r.opened_while_in_kept,
        r.opened_while_in
    ));
    for b in &r.broken {
        story.say(format!("!! long-lived connection broken: {b}"));
    }
    Ok(r)
}

/// Long-lived connections silent but when the act asks (idle sessions): the client, the
/// backend of its first answer, and the first failure (an error or another backend).
struct Quiet(Vec<(LineClient, String, Option<String>)>);

impl Quiet {
    fn open(lab: &Lab, to: SocketAddr) -> anyhow::Result<Self> {
        let open = open_streams(lab, to)?;
        Ok(Self(open.into_iter().map(|(c, w)| (c, w, None)).collect()))
    }

    fn firsts(&self) -> String {
        let firsts: Vec<&str> = self.0.iter().map(|c| c.1.as_str()).collect();
        firsts.join(" ")
    }

    /// One line on each connection still whole.
    fn ask(self, lab: &Lab) -> Self {
        borrowed_ns(&lab.names.ns("client")).run(move || {
            let mut conns = self.0;
            for (c, who, broken) in conns.iter_mut().filter(|c| c.2.is_none()) {
                *broken = match c.ask() {
                    Ok(again) if again == *who => None,
                    Ok(other) => Some(format!("answered by {other}")),
                    Err(e) => Some(e.to_string()),
                };
            }
            Self(conns)
        })
    }

    /// (those on `backend`, the others).
    fn split(self, backend: &str) -> (Self, Self) {
        let (on, off) = self.0.into_iter().partition(|c| c.1 == backend);
        (Self(on), Self(off))
    }

    fn kept(&self) -> usize {
        self.0.iter().filter(|c| c.2.is_none()).count()
    }

    fn broken(&self, what: &'static str) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|(_, who, b)| Some(format!("{what}, {who}: {}", b.as_ref()?)))
            .collect()
    }
}

/// The flow table counters of the VIP's owner: with a backend that runs no vipd the VIP keeps
/// connections by the flow table, which only knows connections that sent a segment since.
/// Between two nodes' reloads in this act: long enough that every talking connection
/// sends segments while the owner and the others run different configs.
const RELOAD_GAP: Duration = Duration::from_millis(300);

fn api_owner(lab: &Lab) -> anyhow::Result<String> {
    let all = lab.statuses(Duration::from_millis(300));
    holders(&all, API_VIP)
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no controller holds {API_VIP}"))
}

fn flow_counters(lab: &Lab) -> String {
    let all = lab.statuses(Duration::from_millis(300));
    let owner = holders(&all, API_VIP);
    let counters = all
        .iter()
        .flatten()
        .find(|s| owner.first() == Some(&s.node))
        .map(|s| {
            s.flow_table
                .iter()
                .map(|c| format!("{}={}", c.name, c.count))
                .collect::<Vec<_>>()
        });
    format!(
        "flow table of the owner {}: {}",
        owner.first().map_or("?", String::as_str),
        counters.map_or("?".into(), |c| c.join(" "))
    )
}

/// Until no controller lists the added backend any more.
fn wait_removed(lab: &Lab, from: Instant) -> anyhow::Result<Duration> {
    loop {
        let all = lab.statuses(Duration::from_millis(300));
        let gone = all.iter().all(|s| {
            s.as_ref().is_some_and(|s| {
                s.vips
                    .iter()
                    .filter(|v| v.name == ADDED.service)
                    .all(|v| v.backends.iter().all(|b| b.name != ADDED.name))
            })
        });
        if gone {
            return Ok(from.elapsed());
        }
        if from.elapsed() > Duration::from_secs(10) {
            bail!("{} still listed 10 s after the reload", ADDED.name);
        }
        pause(Duration::from_millis(20))?;
    }
}

/// The added backend's host and its service; dropping it removes both.
struct ExtraHost {
    service: Option<Proc>,
    names: super::Names,
}

impl ExtraHost {
    fn start(lab: &Lab) -> anyhow::Result<Self> {
        let host = ADDED.address.octets()[3];
        let mut me = Self {
            service: None,
            names: lab.names.clone(),
        };
        add_backend_host(&lab.names, ADDED.name, host, &API_VIP.to_string())?;
        let log = lab.names.state_dir().join(format!("{}.log", ADDED.name));
        let vip = API_VIP.to_string();
        let args = [
            "serve", "tcp", "--port", "7000", "--name", ADDED.name, "--vip", &vip,
        ];
        me.service = Some(Proc::spawn(
            &lab.names.ns(ADDED.name),
            &lab.bins.lab,
            &args,
            &log,
        )?);
        Ok(me)
    }
}

impl Drop for ExtraHost {
    fn drop(&mut self) {
        self.service = None;
        let _ = remove_host(&self.names, ADDED.name);
    }
}
