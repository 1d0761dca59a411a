//! Rolling upgrade through real foca instances, in process: nodes of "version N" (this
//! build) and "version N+1" (this build plus a kind only it knows, [`wire::TEST_KIND`], and a
//! trailing field on a known kind) gossip in one cluster; the known items in a datagram that
//! also carries the unknown kind still arrive, and every node ends with the same ownership
//! and health.
use std::collections::BTreeMap;

use super::*;

type TestFoca = Foca<NodeId, PostcardCodec, rand_foca::rngs::SmallRng, Items>;

struct Node {
    foca: TestFoca,
    rt: AccumulatingRuntime<NodeId>,
    inbox: std::sync::Arc<std::sync::Mutex<Vec<Item>>>,
    skipped: std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>,
    /// Every item this node took, newest per subject.
    seen: BTreeMap<String, Item>,
}

fn id(i: usize) -> NodeId {
    NodeId {
        name: format!("n{i}"),
        addr: SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
        bump: 1,
    }
}

fn node(i: usize, newer: bool) -> Node {
    let items = Items {
        knows_test_kind: newer,
        ..Items::default()
    };
    let (inbox, skipped) = (items.inbox.clone(), items.skipped.clone());
    let tuning = SwimTuning {
        probe_period: Duration::from_millis(500),
        probe_rtt: Duration::from_millis(200),
        suspect_to_down: Duration::from_secs(2),
    };
    let mut config = foca_config(&tuning, 4);
    // Enough sends per item that one broadcast reaches all three members.
    config.max_transmissions = std::num::NonZeroU8::new(12).unwrap();
    Node {
        foca: Foca::with_custom_broadcast(
            id(i),
            config,
            rand_foca::rngs::SmallRng::seed_from_u64(i as u64),
            PostcardCodec,
            items,
        ),
        rt: AccumulatingRuntime::new(),
        inbox,
        skipped,
        seen: BTreeMap::new(),
    }
}

impl Node {
    /// Moves news from the handler's inbox into `seen`; returns it.
    fn take_news(&mut self) -> Vec<Item> {
        let news: Vec<Item> = self.inbox.lock().unwrap().drain(..).collect();
        for item in &news {
            self.seen.insert(item.subject(), item.clone());
        }
        news
    }

    fn take_skipped(&mut self) -> Vec<&'static str> {
        self.skipped.lock().unwrap().drain(..).collect()
    }

    fn outbox(&mut self) -> Vec<(usize, Vec<u8>)> {
        while self.rt.to_schedule().is_some() {} // no timers: the test drives every step
        while self.rt.to_notify().is_some() {}
        let mut out = Vec::new();
        while let Some((dst, data)) = self.rt.to_send() {
            out.push((usize::from(dst.addr.port() - 7000), data.to_vec()));
        }
        out
    }

    fn send(&mut self, item: &Item, trailing: &[u8]) {
        let mut data = wire::encode(item).unwrap();
        data.extend_from_slice(trailing);
        assert!(self.foca.add_broadcast(&data).unwrap());
    }
}

/// Delivers datagrams until none is left; every one must be taken whole.
fn settle(nodes: &mut [Node]) {
    loop {
        let sent: Vec<(usize, Vec<u8>)> = nodes.iter_mut().flat_map(Node::outbox).collect();
        if sent.is_empty() {
            return;
        }
        for (to, data) in sent {
            let n = &mut nodes[to];
            n.foca
                .handle_data(&data, &mut n.rt)
                .expect("datagram taken");
        }
    }
}

fn claim(origin: usize, vip: &str, epoch: u64) -> Item {
    Item {
        origin: format!("n{origin}"),
        version: Item::ownership_version(epoch, false),
        body: ItemBody::Claim {
            vip: vip.into(),
            owner: format!("n{origin}"),
            epoch,
        },
    }
}

fn health(origin: usize, vip: &str, backend: &str, up: bool) -> Item {
    Item {
        origin: format!("n{origin}"),
        version: 1,
        body: ItemBody::Health {
            vip: vip.into(),
            backend: backend.into(),
            up,
        },
    }
}

/// Who owns each VIP (the highest claimed epoch) and each node's health views, as the
/// ownership and health cores would be fed them.
#[allow(clippy::type_complexity)]
fn views(
    seen: &BTreeMap<String, Item>,
) -> (
    BTreeMap<String, (u64, String)>,
    BTreeMap<(String, String, String), bool>,
) {
    let (mut owners, mut health) = (BTreeMap::new(), BTreeMap::new());
    for item in seen.values() {
        match &item.body {
            ItemBody::Claim { vip, owner, epoch } => {
                let e = owners.entry(vip.clone()).or_insert((0, String::new()));
                if *epoch > e.0 {
                    *e = (*epoch, owner.clone());
                }
            }
            ItemBody::Health { vip, backend, up } => {
                health.insert((item.origin.clone(), vip.clone(), backend.clone()), *up);
            }
            _ => {}
        }
    }
    (owners, health)
}

#[test]
fn mixed_wire_versions_agree() {
    // n0, n1: version N; n2, n3: version N+1.
    let mut nodes: Vec<Node> = (0..4).map(|i| node(i, i >= 2)).collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        for j in (0..4).filter(|&j| j != i) {
            n.foca.announce(id(j), &mut n.rt).unwrap();
        }
    }
    settle(&mut nodes);
    for n in &nodes {
        assert_eq!(n.foca.num_members(), 3);
    }

    // n2 queues a new-kind item, a claim, and a health view with a field N+1 appended; one
    // broadcast carries all three in each datagram.
    let n2 = &mut nodes[2];
    n2.foca
        .add_broadcast(&wire::encode_test_kind("n2", 1, b"new in N+1"))
        .unwrap();
    n2.send(&claim(2, "vip2", 1), &[]);
    n2.send(&health(2, "vip1", "be1", false), &[0x01, 0x2a]);
    n2.take_news();
    n2.foca.broadcast(&mut n2.rt).unwrap();
    let datagrams = n2.outbox();
    assert_eq!(datagrams.len(), 3, "one datagram to each member");
    for (to, data) in datagrams {
        let n = &mut nodes[to];
        n.foca
            .handle_data(&data, &mut n.rt)
            .expect("datagram taken");
        let mut news: Vec<String> = n.take_news().iter().map(Item::subject).collect();
        news.sort();
        assert_eq!(news, ["health/n2/vip1/be1", "vip/vip2/n2"], "at n{to}");
        let skipped = n.take_skipped();
        if to < 2 {
            assert_eq!(skipped, ["unknown_item"], "version N skips the new kind");
        } else {
            assert!(skipped.is_empty(), "version N+1 knows it");
        }
    }

    // Everyone else gossips too, in both wire dialects.
    nodes[0].send(&claim(0, "vip1", 1), &[]);
    nodes[0].send(&health(0, "vip1", "be1", true), &[]);
    nodes[1].send(&claim(1, "vip1", 2), &[]);
    nodes[1].send(&health(1, "vip2", "be2", true), &[]);
    nodes[3]
        .foca
        .add_broadcast(&wire::encode_test_kind("n3", 1, b""))
        .unwrap();
    nodes[3].send(&health(3, "vip2", "be2", false), &[0x00]);
    // A newer wire version in the same round: skipped everywhere, nothing else lost.
    let mut newer = wire::encode(&claim(3, "vip2", 9)).unwrap();
    newer[0] = wire::VERSION + 1;
    assert!(!nodes[3].foca.add_broadcast(&newer).unwrap());
    assert_eq!(nodes[3].take_skipped(), ["newer_wire"]);
    for _ in 0..8 {
        for n in nodes.iter_mut() {
            n.foca.broadcast(&mut n.rt).unwrap();
        }
        settle(&mut nodes);
        for n in nodes.iter_mut() {
            n.take_news();
        }
    }

    let (owners, health) = views(&nodes[0].seen);
    let want_owners: BTreeMap<String, (u64, String)> = [
        ("vip1".to_string(), (2, "n1".to_string())),
        ("vip2".to_string(), (1, "n2".to_string())),
    ]
    .into();
    assert_eq!(owners, want_owners);
    assert_eq!(health.len(), 4);
    assert!(!health[&("n2".into(), "vip1".into(), "be1".into())]);
    assert!(!health[&("n3".into(), "vip2".into(), "be2".into())]);
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n.seen.len(), 7, "n{i} has every known item");
        assert_eq!(
            views(&n.seen),
            (owners.clone(), health.clone()),
            "n{i} agrees"
        );
        assert_eq!(n.seen, nodes[0].seen);
    }
    // The new kind reached only the N+1 nodes, and the N nodes skipped it (counted).
    let skipped: Vec<Vec<&'static str>> = nodes.iter_mut().map(Node::take_skipped).collect();
    assert!(skipped[0]
        .iter()
        .chain(&skipped[1])
        .all(|w| *w == "unknown_item"));
    assert!(skipped[2].is_empty() && skipped[3].is_empty());
}

#[test]
fn wire_malformed_item_is_refused_and_counted() {
    let mut items = Items::default();
    assert!(items.receive_item(&[1, 1, 200], None).is_err());
    assert!(items.receive_item(&[], None).is_err());
    assert_eq!(*items.skipped.lock().unwrap(), ["bad_item", "bad_item"]);
    assert!(items.inbox.lock().unwrap().is_empty());
}
