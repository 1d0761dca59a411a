//! Three gossip agents on loopback: membership converges, broadcasts reach everyone, forged
//! datagrams are rejected and counted, and a silent node is declared down in well under 1 s.
use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;
use vip_daemon::core::swim::SwimTuning;
use vip_daemon::shell::gossip::{self, GossipCmd, GossipConfig, GossipEvent, Item, ItemBody};

const KEY: [u8; 32] = [7; 32];

fn free_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

async fn wait_for(
    rx: &mut mpsc::Receiver<GossipEvent>,
    limit: Duration,
    mut want: impl FnMut(&GossipEvent) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while let Ok(Some(ev)) =
        tokio::time::timeout(limit.saturating_sub(start.elapsed()), rx.recv()).await
    {
        if want(&ev) {
            return Some(start.elapsed());
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_converge_broadcast_reject_forgeries_and_detect_death() {
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_port()).collect();
    let names = ["ctl1", "ctl2", "ctl3"];
    let mut agents = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let cfg = GossipConfig {
            me: name.to_string(),
            listen: addrs[i],
            peers: addrs.clone(),
            keys: (KEY, None),
            tuning: SwimTuning {
                probe_period: Duration::from_millis(150),
                probe_rtt: Duration::from_millis(60),
                suspect_to_down: Duration::from_millis(300),
            },
            cluster_size: 3,
            secondary: None,
        };
        agents.push(gossip::spawn(cfg).await.expect("spawn"));
    }
    // Everyone sees the other two.
    for (i, (_, rx)) in agents.iter_mut().enumerate() {
        let mut up = std::collections::BTreeSet::new();
        let got = wait_for(rx, Duration::from_secs(5), |ev| {
            if let GossipEvent::Up(n) = ev {
                up.insert(n.clone());
            }
            up.len() == 2
        })
        .await;
        assert!(got.is_some(), "{} saw only {up:?}", names[i]);
    }
    // A broadcast from ctl1 reaches ctl2 and ctl3.
    let item = Item {
        origin: "ctl1".into(),
        version: 1,
        body: ItemBody::Claim {
            vip: "keystone".into(),
            owner: "ctl1".into(),
            epoch: 1,
        },
    };
    agents[0]
        .0
        .send(GossipCmd::Broadcast(item.clone()))
        .await
        .expect("send");
    for (_, rx) in agents.iter_mut().skip(1) {
        let got = wait_for(rx, Duration::from_secs(3), |ev| {
            *ev == GossipEvent::Item(item.clone())
        })
        .await;
        assert!(got.is_some(), "broadcast not received");
    }
    // Forged and garbage datagrams are rejected and reported, not processed.
    let attacker = UdpSocket::bind("127.0.0.1:0").expect("bind");
    attacker
        .send_to(b"not a vip-fabric datagram", addrs[0])
        .expect("send");
    let mut forged = vec![b'V', b'F', 1, 0];
    forged.extend_from_slice(&[0u8; 80]);
    attacker.send_to(&forged, addrs[0]).expect("send");
    let mut rejected = 0;
    let got = wait_for(&mut agents[0].1, Duration::from_secs(2), |ev| {
        rejected += matches!(ev, GossipEvent::Rejected(_)) as u32;
        rejected == 2
    })
    .await;
    assert!(got.is_some(), "forgeries were not rejected");
    // ctl3 goes silent: ctl1 and ctl2 declare it down in well under a second.
    agents[2].0.send(GossipCmd::Stop).await.expect("stop");
    let died = Instant::now();
    for (_, rx) in agents.iter_mut().take(2) {
        let got = wait_for(rx, Duration::from_secs(3), |ev| {
            *ev == GossipEvent::Down("ctl3".into())
        })
        .await;
        assert!(got.is_some(), "ctl3 never declared down");
    }
    let detection = died.elapsed();
    eprintln!("dead node detected in {detection:?}");
    // Typically ~0.75 s here (probe period 150 ms, one indirect probe, 300 ms suspicion);
    // the bound leaves room for a loaded CI machine.
    assert!(
        detection < Duration::from_millis(1200),
        "detection took {detection:?}"
    );
}
