//! SWIM membership and cluster broadcasts over UDP: foca (sans-IO) driven by one task, every
//! datagram sealed with the cluster key (`core::seal`). The daemon's loop sees only
//! [`GossipEvent`]s and sends [`GossipCmd`]s.
use std::{
    collections::HashMap,
    collections::VecDeque,
    net::SocketAddr,
    time::{Duration, Instant, SystemTime},
};

use foca::{
    AccumulatingRuntime, BroadcastHandler, Foca, Invalidates, OwnedNotification, PostcardCodec,
    Timer,
};
use rand::{rngs::StdRng, SeedableRng as _};
use rand_foca::SeedableRng as _;
use serde::{Deserialize, Serialize};
use tokio::{net::UdpSocket, sync::mpsc};

pub use crate::core::wire::{Item, ItemBody};
use crate::core::{
    seal::{Opener, Rejected, Sealer},
    swim::{foca_config, LocalHealth, SwimTuning},
    wire::{self, Decoded},
};

/// A member: node name, gossip address, and a bump that a restart raises (renewed identity).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeId {
    pub name: String,
    pub addr: SocketAddr,
    pub bump: u64,
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemKey {
    subject: String,
    version: u64,
}

impl Invalidates for ItemKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.subject == other.subject && self.version >= other.version
    }
}

/// Keeps the newest version per subject; news goes to `inbox` (shared with the driver, since
/// foca owns the handler) and on to other members.
#[derive(Default)]
struct Items {
    /// Shared with the driver, which forgets a subject before re-sending its own item: the
    /// ownership core re-gossips its records for joiners, and a record this node already has
    /// must still go out to a node that missed it (others drop the repeat as old news).
    newest: std::sync::Arc<std::sync::Mutex<HashMap<String, u64>>>,
    inbox: std::sync::Arc<std::sync::Mutex<Vec<Item>>>,
    /// Items this node did not take, by reason (`core::wire`): a kind or wire version of a
    /// newer vipd (during a rolling upgrade) is skipped, so it never costs the rest of its
    /// datagram; a malformed item is refused (foca drops the rest of that datagram).
    skipped: std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>,
    /// Test hook: this node plays a newer vipd that knows [`wire::TEST_KIND`].
    #[cfg(test)]
    knows_test_kind: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable broadcast: {0}")]
pub struct BadItem(#[from] wire::WireError);

impl BroadcastHandler<NodeId> for Items {
    type Key = ItemKey;
    type Error = BadItem;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&NodeId>,
    ) -> Result<Option<ItemKey>, BadItem> {
        let skip = |why| {
            self.skipped.lock().expect("skipped").push(why);
            Ok(None)
        };
        let item = match wire::decode(data) {
            Ok(Decoded::Item(item)) => item,
            #[cfg(test)]
            Ok(Decoded::Unknown {
                kind: wire::TEST_KIND,
            }) if self.knows_test_kind => {
                let (_, origin, version) = wire::header(data)?;
                return Ok(Some(ItemKey {
                    subject: format!("test/{origin}"),
                    version,
                }));
            }
            Ok(Decoded::Unknown { .. }) => return skip("unknown_item"),
            Ok(Decoded::Newer { .. }) => return skip("newer_wire"),
            Err(e) => {
                self.skipped.lock().expect("skipped").push("bad_item");
                return Err(BadItem(e));
            }
        };
        let subject = item.subject();
        {
            let mut newest = self.newest.lock().expect("newest");
            if newest.get(&subject).is_some_and(|v| *v >= item.version) {
                return Ok(None);
            }
            newest.insert(subject.clone(), item.version);
        }
        let key = ItemKey {
            subject,
            version: item.version,
        };
        self.inbox.lock().expect("inbox").push(item);
        Ok(Some(key))
    }
}

#[derive(Clone, Debug)]
pub struct GossipConfig {
    pub me: String,
    pub listen: SocketAddr,
    pub peers: Vec<SocketAddr>,
    pub keys: ([u8; 32], Option<[u8; 32]>),
    pub tuning: SwimTuning,
    /// Members the cluster is configured with (voters and seed peers): foca scales indirect
    /// probes and how often news is re-sent from it.
    pub cluster_size: u32,
    /// A second link (`[cluster] secondary_listen`, `secondary_peers`): see [`Links`].
    pub secondary: Option<crate::config::SecondaryLink>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GossipEvent {
    Up(String),
    Down(String),
    /// A member restarted (renewed identity) while still listed alive.
    Restarted(String),
    /// A valid datagram from this node arrived.
    Heard(String),
    /// The heartbeat detector (`core::heartbeat`): a member silent on every link for
    /// `heartbeat_timeout`, and the same member speaking again.
    Silent(String),
    Back(String),
    Item(Item),
    Rejected(&'static str),
    /// The membership as this node sees it, sent when it changes.
    Members(MembersView),
}

/// One member as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    pub name: String,
    pub addr: SocketAddr,
    pub incarnation: u16,
    /// "alive", "suspect" or "down".
    pub state: &'static str,
    /// With a second link: the links this member was not heard on lately ([`LINK_SILENT`]).
    pub silent_links: Vec<&'static str>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembersView {
    pub members: Vec<MemberView>,
    /// Lifeguard's local health score: 0 is healthy; each point stretches this node's
    /// suspicion timeout by one more multiple.
    pub local_health: u32,
    pub max_timer_lag_ms: u64,
}

impl MembersView {
    fn of<'a>(
        state: impl Iterator<Item = &'a foca::Member<NodeId>>,
        health: &LocalHealth,
        links: &Links,
    ) -> Self {
        let mut members: Vec<MemberView> = state
            .filter(|m| !m.id().name.is_empty())
            .map(|m| MemberView {
                name: m.id().name.clone(),
                addr: m.id().addr,
                incarnation: m.incarnation(),
                state: match m.state() {
                    foca::State::Alive => "alive",
                    foca::State::Suspect => "suspect",
                    foca::State::Down => "down",
                },
                silent_links: links.silent(&m.id().name),
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            members,
            local_health: health.score(),
            max_timer_lag_ms: health.max_lag_seen().as_millis() as u64,
        }
    }

    /// Members this view had as suspect that are alive now (the suspicion was refuted).
    fn wrong_suspicions_since(&self, before: &Self) -> usize {
        self.members
            .iter()
            .filter(|m| {
                m.state == "alive"
                    && before
                        .members
                        .iter()
                        .any(|b| b.name == m.name && b.state == "suspect")
            })
            .count()
    }
}

#[derive(Debug)]
pub enum GossipCmd {
    Broadcast(Item),
    /// Leave the cluster gracefully (after broadcasting handovers); answered once the
    /// leave's datagrams are sent.
    Leave(tokio::sync::oneshot::Sender<()>),
    /// Stop at once, silently (as a crashed or cut-off node would).
    Stop,
    /// Forget which ownership items about this VIP address were received, so that their next
    /// re-broadcasts are delivered again: a VIP added by a reload, whose items arrived (and
    /// were ignored) while it was not configured here.
    ForgetVip(String),
}

/// The gossip links: the first (`listen`) and, when configured, a second one on another
/// network, as Corosync's redundant rings. With two, every datagram is sealed and sent on
/// both (separately, so the replay window takes each), and both sockets feed the same foca:
/// SWIM takes the copies as the duplicates UDP may deliver anyway, so a member is suspected
/// only when silent on both links. The second link's address of a member is learnt from
/// its datagrams there (each node greets the configured `secondary_peers` every second), so
/// foca's identities (and their wire) stay as with one link. With two links each node also
/// greets on the first, so that a silent link shows within [`LINK_SILENT`] at any cluster
/// size and probe period.
struct Links {
    secondary: Option<std::sync::Arc<UdpSocket>>,
    /// A member's address on the second link, as its datagrams there came from.
    second_addr: HashMap<String, SocketAddr>,
    /// When a member was last heard on each link.
    heard: HashMap<(String, Link), Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Link {
    First,
    Second,
}

impl Link {
    fn name(self) -> &'static str {
        match self {
            Link::First => "primary",
            Link::Second => "secondary",
        }
    }
}

/// A link a member was not heard on for this long is shown silent (greetings go every
/// second).
pub const LINK_SILENT: Duration = Duration::from_millis(2500);

impl Links {
    fn heard(&mut self, name: &str, link: Link, from: SocketAddr) {
        if self.secondary.is_none() {
            return;
        }
        if link == Link::Second {
            self.second_addr.insert(name.to_owned(), from);
        }
        self.heard.insert((name.to_owned(), link), Instant::now());
    }

    fn silent(&self, name: &str) -> Vec<&'static str> {
        if self.secondary.is_none() {
            return Vec::new();
        }
        [Link::First, Link::Second]
            .into_iter()
            .filter(|&l| {
                self.heard
                    .get(&(name.to_owned(), l))
                    .is_none_or(|t| t.elapsed() > LINK_SILENT)
            })
            .map(Link::name)
            .collect()
    }
}

enum Input {
    /// An opened datagram, the link it came on and its source address.
    Datagram(Vec<u8>, Link, SocketAddr),
    /// A foca timer and when it was due (its lateness measures local health).
    Timer(Timer<NodeId>, Instant),
    Cmd(GossipCmd),
    Announce,
}

/// A datagram's plaintext before foca's message: the sender's name, length first.
fn plain_header(me: &str) -> Vec<u8> {
    let name = &me.as_bytes()[..me.len().min(255)];
    let mut plain = Vec::with_capacity(1 + name.len() + 1400);
    plain.push(name.len() as u8);
    plain.extend_from_slice(name);
    plain
}

fn rejected_name(r: &Rejected) -> &'static str {
    match r {
        Rejected::Truncated => "truncated",
        Rejected::BadMagic => "bad_magic",
        Rejected::BadVersion => "bad_version",
        Rejected::UnknownKey => "unknown_key",
        Rejected::Forged => "forged",
        Rejected::Replayed => "replayed",
        Rejected::Oversized => "oversized",
    }
}

/// Starts gossip: binds `listen`, announces to the peers, and runs until the returned
/// command sender is dropped.
pub async fn spawn(
    config: GossipConfig,
) -> std::io::Result<(mpsc::Sender<GossipCmd>, mpsc::Receiver<GossipEvent>)> {
    let socket = std::sync::Arc::new(UdpSocket::bind(config.listen).await?);
    let secondary = match &config.secondary {
        Some(s) => Some(std::sync::Arc::new(UdpSocket::bind(s.listen).await?)),
        None => None,
    };
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<GossipCmd>(256);
    let (ev_tx, ev_rx) = mpsc::channel::<GossipEvent>(1024);
    let (in_tx, mut in_rx) = mpsc::channel::<Input>(1024);

    let bump = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let me = NodeId {
        name: config.me.clone(),
        addr: config.listen,
        bump,
    };
    let mut rng = StdRng::from_entropy();
    let mut sealer = Sealer::new(config.keys.0, config.keys.1, rand::Rng::gen(&mut rng));
    let opener = Opener::new(
        &[Some(config.keys.0), config.keys.1]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>(),
    );

    // Receivers: open, then hand to the driver. Rejections are counted, never fatal. One
    // opener for both links: a datagram replayed from one link onto the other is refused.
    let opener = std::sync::Arc::new(std::sync::Mutex::new(opener));
    let receive = |socket: std::sync::Arc<UdpSocket>, link: Link| {
        let (in_tx, ev_tx, opener) = (in_tx.clone(), ev_tx.clone(), opener.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let opened = opener.lock().expect("opener").open(&buf[..n]);
                match opened {
                    Ok(plain) => {
                        if in_tx
                            .send(Input::Datagram(plain, link, from))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(r) => {
                        let _ = ev_tx.try_send(GossipEvent::Rejected(rejected_name(&r)));
                    }
                }
            }
        })
    };
    let receivers: Vec<tokio::task::JoinHandle<()>> =
        std::iter::once(receive(socket.clone(), Link::First))
            .chain(secondary.clone().map(|s| receive(s, Link::Second)))
            .collect();
    {
        let in_tx = in_tx.clone();
        tokio::spawn(async move {
            while let Some(cmd) = cmd_rx.recv().await {
                if in_tx.send(Input::Cmd(cmd)).await.is_err() {
                    return;
                }
            }
        });
    }
    let _ = in_tx.send(Input::Announce).await;

    let fconfig = foca_config(&config.tuning, config.cluster_size);
    tokio::spawn(async move {
        let items = Items::default();
        let inbox = items.inbox.clone();
        let skipped = items.skipped.clone();
        let newest = items.newest.clone();
        let foca_rng =
            rand_foca::rngs::SmallRng::seed_from_u64(rand::Rng::gen(&mut StdRng::from_entropy()));
        let mut foca = Foca::with_custom_broadcast(
            me.clone(),
            fconfig.clone(),
            foca_rng,
            PostcardCodec,
            items,
        );
        let mut runtime = AccumulatingRuntime::new();
        let mut announce_tick = tokio::time::interval(Duration::from_secs(1));
        let origin = Instant::now();
        let mut health = LocalHealth::new(config.tuning.probe_period);
        let mut applied_score = 0;
        let mut last_view = MembersView::default();
        let mut links = Links {
            secondary,
            second_addr: HashMap::new(),
            heard: HashMap::new(),
        };
        let mut pending = VecDeque::new();
        // The caller of a leave, answered once its datagrams are on the wire.
        let mut left: Option<tokio::sync::oneshot::Sender<()>> = None;
        loop {
            let input = match pending.pop_front() {
                Some(i) => i,
                None => {
                    let input = tokio::select! {
                        i = in_rx.recv() => match i { Some(i) => i, None => return },
                        _ = announce_tick.tick() => Input::Announce,
                    };
                    // A late-firing timer must not beat the ack that is already waiting:
                    // handle queued datagrams first (a starved node would otherwise
                    // suspect peers whose answers it simply had not read yet).
                    if matches!(input, Input::Timer(..)) {
                        let mut datagrams = Vec::new();
                        while let Ok(i) = in_rx.try_recv() {
                            if matches!(i, Input::Datagram(..)) {
                                datagrams.push(i);
                            } else {
                                pending.push_back(i);
                            }
                        }
                        if !datagrams.is_empty() {
                            for d in datagrams.into_iter().rev() {
                                pending.push_front(d);
                            }
                            let at = pending
                                .iter()
                                .take_while(|i| matches!(i, Input::Datagram(..)))
                                .count();
                            pending.insert(at, input);
                            continue;
                        }
                    }
                    input
                }
            };
            let result = match input {
                Input::Datagram(plain, link, from) => {
                    // Plaintext: sender name length, name, foca message (none: a greeting).
                    let Some((&len, rest)) = plain.split_first() else {
                        continue;
                    };
                    let len = len as usize;
                    if rest.len() < len {
                        continue;
                    }
                    let name = String::from_utf8_lossy(&rest[..len]).into_owned();
                    links.heard(&name, link, from);
                    let _ = ev_tx.send(GossipEvent::Heard(name)).await;
                    match &rest[len..] {
                        [] => Ok(()),
                        data => foca.handle_data(data, &mut runtime),
                    }
                }
                Input::Timer(t, due) => {
                    health.timer_fired(due - origin, origin.elapsed());
                    foca.handle_timer(t, &mut runtime)
                }
                Input::Cmd(GossipCmd::Broadcast(item)) => {
                    newest.lock().expect("newest").remove(&item.subject());
                    match wire::encode(&item) {
                        Ok(data) => foca
                            .add_broadcast(&data)
                            .map(|_| ())
                            .and_then(|_| foca.broadcast(&mut runtime)),
                        Err(e) => {
                            tracing::warn!(error = %e, subject = item.subject(), "item not sent");
                            Ok(())
                        }
                    }
                }
                Input::Cmd(GossipCmd::Leave(ack)) => {
                    left = Some(ack);
                    foca.leave_cluster(&mut runtime)
                }
                Input::Cmd(GossipCmd::Stop) => {
                    receivers.iter().for_each(|r| r.abort());
                    return;
                }
                Input::Cmd(GossipCmd::ForgetVip(vip)) => {
                    let prefix = format!("vip/{vip}/"); // see `Item::subject`
                    let mut newest = newest.lock().expect("newest");
                    newest.retain(|subject, _| !subject.starts_with(&prefix));
                    Ok(())
                }
                Input::Announce => {
                    if let (Some(second), Some(s)) = (&links.secondary, &config.secondary) {
                        let hello = plain_header(&config.me);
                        let first = config.peers.iter().filter(|&&p| p != config.listen);
                        let to_second = s.peers.iter().filter(|&&p| p != s.listen);
                        for (sock, &peer) in first
                            .map(|p| (&socket, p))
                            .chain(to_second.map(|p| (second, p)))
                        {
                            if let Ok(sealed) = sealer.seal(&hello, &mut rng) {
                                let _ = sock.send_to(&sealed, peer).await;
                            }
                        }
                    }
                    // Seeds that are not members yet (start-up, or after a partition heals).
                    let known: Vec<SocketAddr> = foca.iter_members().map(|m| m.id().addr).collect();
                    let mut r = Ok(());
                    for &peer in &config.peers {
                        if peer != config.listen && !known.contains(&peer) {
                            let seed = NodeId {
                                name: String::new(),
                                addr: peer,
                                bump: 0,
                            };
                            r = r.and(foca.announce(seed, &mut runtime));
                        }
                    }
                    r
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "gossip input ignored");
            }
            let why: Vec<&'static str> = skipped.lock().expect("skipped").drain(..).collect();
            for why in why {
                let _ = ev_tx.try_send(GossipEvent::Rejected(why));
            }
            let news: Vec<Item> = inbox.lock().expect("inbox").drain(..).collect();
            for item in news {
                let _ = ev_tx.send(GossipEvent::Item(item)).await;
            }
            while let Some((dst, data)) = runtime.to_send() {
                let mut plain = plain_header(&config.me);
                plain.extend_from_slice(&data);
                if let Ok(sealed) = sealer.seal(&plain, &mut rng) {
                    let _ = socket.send_to(&sealed, dst.addr).await;
                }
                let second = (links.secondary.as_ref())
                    .and_then(|s| Some((s, *links.second_addr.get(&dst.name)?)));
                if let Some((second, to)) = second {
                    if let Ok(sealed) = sealer.seal(&plain, &mut rng) {
                        let _ = second.send_to(&sealed, to).await;
                    }
                }
            }
            if let Some(ack) = left.take() {
                let _ = ack.send(());
            }
            while let Some((delay, timer)) = runtime.to_schedule() {
                let in_tx = in_tx.clone();
                let due = Instant::now() + delay;
                tokio::spawn(async move {
                    tokio::time::sleep_until(due.into()).await;
                    let _ = in_tx.send(Input::Timer(timer, due)).await;
                });
            }
            while let Some(n) = runtime.to_notify() {
                let ev = match n {
                    OwnedNotification::MemberUp(id) => GossipEvent::Up(id.name),
                    OwnedNotification::MemberDown(id) => GossipEvent::Down(id.name),
                    // A member restarted before anyone declared it down: same name, renewed
                    // identity, no MemberUp.
                    OwnedNotification::Rename(_, id) => GossipEvent::Restarted(id.name),
                    OwnedNotification::Rejoin(_) => {
                        tracing::warn!("this node was declared down while running; rejoined");
                        health.suspicion_was_wrong(origin.elapsed());
                        continue;
                    }
                    _ => continue,
                };
                let _ = ev_tx.send(ev).await;
            }
            let view = MembersView::of(foca.iter_membership_state(), &health, &links);
            if view.wrong_suspicions_since(&last_view) > 0 {
                health.suspicion_was_wrong(origin.elapsed());
            }
            // Lifeguard: a struggling node stretches its own suspicion timeout.
            if health.score() != applied_score {
                let mut c = fconfig.clone();
                c.suspect_to_down_after = health.suspect_to_down(config.tuning.suspect_to_down);
                if foca.set_config(c).is_ok() {
                    applied_score = health.score();
                }
            }
            let view = MembersView::of(foca.iter_membership_state(), &health, &links);
            if view != last_view {
                let _ = ev_tx.send(GossipEvent::Members(view.clone())).await;
                last_view = view;
            }
        }
    });
    Ok((cmd_tx, ev_rx))
}

#[cfg(test)]
mod tests;
