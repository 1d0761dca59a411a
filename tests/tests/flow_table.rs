//! The flow table through BPF_PROG_TEST_RUN: for a `VIP_F_FLOWS` VIP an established flow stays
//! on its backend when the table is republished, a SYN is picked afresh, an entry whose
//! backend gave up its flows (KEEP_FLOWS clear) or whose index now holds another backend
//! (serial changed) is ignored, and a VIP without the flag never makes entries. Every packet
//! is also checked against the host model byte for byte, and the flow counters and the
//! entries per backend are compared with the model's at the end.
use vip_common::{
    maps::{
        flow_stat::{self, HIT, MISS_MIDSTREAM, MISS_NEW, PREVIOUS, STALE},
        reason::*,
        Backend, Counter, Settings, VipInfo, VipKey, BACKEND_F_KEEP_FLOWS, FWD_ENCAP, FWD_L2,
        NO_BACKEND, VIP_F_FLOWS, VIP_F_FLOWS_EXIT, VIP_F_PREV_TABLE,
    },
    wire::{FAMILY_V4, IPPROTO_TCP, IPPROTO_UDP, XDP_TX},
};
use vip_daemon::shell::dataplane::{possible_cpus, Sizing, TableRegion};
use vip_tests::{
    fixture::Balancer,
    packet::{self, Flow, Frame},
    privileged,
};

const M: u32 = 251;
const CLIENT: [u8; 4] = [198, 18, 0, 7];
const VIP_L2: [u8; 4] = [192, 0, 2, 20];
const VIP_ENCAP: [u8; 4] = [192, 0, 2, 21];
const VIP_PLAIN: [u8; 4] = [192, 0, 2, 22];
const VIP_UDP: [u8; 4] = [192, 0, 2, 23];
/// L2 backends of `VIP_L2`, `VIP_PLAIN` and `VIP_UDP`.
const A: u32 = 0;
const B: u32 = 1;
/// Encapsulated backends of `VIP_ENCAP`.
const EA: u32 = 2;
const EB: u32 = 3;
/// Entries of FLOWS: far more than any test makes, so the kernel's LRU never evicts and
/// the model (which never does) stays exact.
const FLOWS: u32 = 1024;

fn a4(a: [u8; 4]) -> [u8; 16] {
    let mut x = [0; 16];
    x[..4].copy_from_slice(&a);
    x
}

fn mac_of(index: u32) -> [u8; 6] {
    [2, 0xbe, 0, 0, 0, index as u8]
}

fn backend_addr(index: u32) -> [u8; 4] {
    [10, 0, 0, 1 + index as u8]
}

/// A backend as vipd writes it: serial index + 1, keeping its flows.
fn backend(index: u32, mode: u8) -> Backend {
    Backend {
        addr: a4(backend_addr(index)),
        mac: mac_of(index),
        family: FAMILY_V4,
        mode,
        serial: index + 1,
        flags: BACKEND_F_KEEP_FLOWS,
        ..Backend::default()
    }
}

/// A whole table on one backend: any flow's slot picks it.
fn all(index: u32) -> Vec<u32> {
    vec![index; M as usize]
}

struct Fixture {
    b: Balancer,
    regions: Vec<TableRegion>,
    /// Sum of the model's `flow_stats` over every packet checked: (packets, bytes).
    expected: [(u64, u64); flow_stat::COUNT as usize],
}

impl Fixture {
    fn new(flows: u32) -> Self {
        let regions: Vec<TableRegion> = (0..4)
            .map(|i| TableRegion {
                vip_index: i,
                base: i * 2 * M,
                size: M,
            })
            .collect();
        let sizing = Sizing {
            vips: 4,
            // One second region (`PREV`): VIP_L2's previous table in the transition tests.
            fallbacks: 1,
            backends: 5,
            slots: 10 * M,
            peers: 1,
            interfaces: 1,
            flows,
        };
        let settings = Settings {
            hash_seed: 11,
            encap_src_v4: [10, 255, 0, 0],
            layout_id: 0,
            flags: 0,
            encap_src_v6: [0; 16],
            ..Default::default()
        };
        let mut b = Balancer::new(sizing, settings);
        for i in [A, B] {
            b.set_backend(i, backend(i, FWD_L2));
        }
        for i in [EA, EB] {
            b.set_backend(i, backend(i, FWD_ENCAP));
        }
        let vips = [
            (VIP_L2, IPPROTO_TCP, VIP_F_FLOWS, A),
            (VIP_ENCAP, IPPROTO_TCP, VIP_F_FLOWS, EA),
            (VIP_PLAIN, IPPROTO_TCP, 0, A),
            (VIP_UDP, IPPROTO_UDP, VIP_F_FLOWS, A),
        ];
        for (index, (addr, proto, flags, first)) in vips.into_iter().enumerate() {
            let key = VipKey {
                addr: a4(addr),
                port: 80,
                proto,
                family: FAMILY_V4,
            };
            let info = VipInfo {
                index: index as u32,
                table_size: M,
                flags,
                fallback: 0,
            };
            b.set_vip(key, info);
            b.publish(&regions[index], &all(first));
        }
        Self {
            b,
            regions,
            expected: [(0, 0); flow_stat::COUNT as usize],
        }
    }

    /// Runs `frame` in the kernel and the model (asserting equal output bytes and action) and
    /// returns the backend MAC it was sent to, the reason and the flow counters counted.
    fn send(&mut self, frame: &[u8]) -> ([u8; 6], u32, Vec<u32>) {
        let (run, out) = self.b.check(frame);
        for &stat in &out.flow_stats {
            self.expected[stat as usize].0 += 1;
            self.expected[stat as usize].1 += frame.len() as u64;
        }
        let mac = run.output[0..6].try_into().expect("6 bytes");
        (mac, out.reason, out.flow_stats)
    }

    fn publish(&mut self, vip: usize, table: &[u32]) {
        let region = self.regions[vip];
        self.b.publish(&region, table);
    }

    /// Kernel counters == the model's, per counter, packets and bytes.
    fn assert_stats(&self) {
        let got: Vec<(u64, u64)> = self
            .b
            .dp
            .flow_stats()
            .expect("FLOW_STATS")
            .iter()
            .map(|c: &Counter| (c.packets, c.bytes))
            .collect();
        assert_eq!(
            got,
            self.expected,
            "flow counters (order: {:?})",
            flow_stat::NAMES
        );
    }

    /// Kernel entries per backend == the model's (entries of the current serial only).
    fn assert_entries(&self) -> Vec<u64> {
        let got = self.b.dp.flows_per_backend().expect("FLOWS");
        let mut want = vec![0u64; self.b.model.backends.len()];
        for e in self.b.model.flows.values() {
            if self.b.model.backends[e.backend as usize].serial == e.serial {
                want[e.backend as usize] += 1;
            }
        }
        assert_eq!(got, want, "flow entries per backend");
        got
    }
}

fn syn() -> Frame {
    Frame::default()
}

fn ack() -> Frame {
    Frame {
        tcp_flags: 0x10,
        ..Frame::default()
    }
}

/// The outer destination of an IPIP frame (no VLAN).
fn outer_dst(out: &[u8]) -> [u8; 4] {
    out[30..34].try_into().expect("4 bytes")
}

#[test]
fn established_flows_keep_their_backend_through_table_changes() {
    if !privileged("established_flows_keep_their_backend_through_table_changes") {
        return;
    }
    let mut f = Fixture::new(FLOWS);
    let web = Flow::tcp4(CLIENT, 40_000, VIP_L2, 80);

    // (a) Established on A, the table republished so that its slot picks B: stays on A.
    assert_eq!(
        f.send(&packet::l4_frame(&syn(), &web)),
        (mac_of(A), TX_L2, vec![MISS_NEW])
    );
    assert_eq!(
        f.send(&packet::l4_frame(&ack(), &web)),
        (mac_of(A), TX_L2, vec![HIT])
    );
    f.publish(0, &all(B));
    for _ in 0..3 {
        assert_eq!(
            f.send(&packet::l4_frame(&ack(), &web)),
            (mac_of(A), TX_L2, vec![HIT])
        );
    }
    // A flow the table never saw before the change goes to B, mid-stream or new.
    let other = Flow::tcp4(CLIENT, 40_001, VIP_L2, 80);
    assert_eq!(
        f.send(&packet::l4_frame(&ack(), &other)),
        (mac_of(B), TX_L2, vec![MISS_MIDSTREAM])
    );
    assert_eq!(
        f.send(&packet::l4_frame(&ack(), &other)),
        (mac_of(B), TX_L2, vec![HIT])
    );
    // PMTU: an ICMP error about the kept flow goes to A too.
    let reply = packet::l3_packet(&ack(), &Flow::tcp4(VIP_L2, 80, CLIENT, 40_000));
    let icmp = packet::icmp4_frag_needed(&syn(), [203, 0, 113, 1], VIP_L2, 1400, &reply[..28]);
    assert_eq!(f.send(&icmp), (mac_of(A), TX_ICMP, vec![HIT]));
    // An ICMP error about a flow without an entry follows the table and makes no entry.
    let reply = packet::l3_packet(&ack(), &Flow::tcp4(VIP_L2, 80, CLIENT, 40_002));
    let icmp = packet::icmp4_frag_needed(&syn(), [203, 0, 113, 1], VIP_L2, 1400, &reply[..28]);
    assert_eq!(f.send(&icmp), (mac_of(B), TX_ICMP, vec![]));
    assert_eq!(f.assert_entries()[..2], [1, 1], "A: web, B: other");

    // (b) A SYN of the same 4-tuple is a new connection: the table's pick, B; its entry
    // follows, and so do its next segments.
    assert_eq!(
        f.send(&packet::l4_frame(&syn(), &web)),
        (mac_of(B), TX_L2, vec![MISS_NEW])
    );
    assert_eq!(
        f.send(&packet::l4_frame(&ack(), &web)),
        (mac_of(B), TX_L2, vec![HIT])
    );
    assert_eq!(f.assert_entries()[..2], [0, 2]);

    // UDP: the first datagram makes the entry, later ones follow it through a change.
    let dns = Flow::udp4(CLIENT, 5353, VIP_UDP, 80);
    let dgram = packet::l4_frame(&syn(), &dns);
    assert_eq!(f.send(&dgram), (mac_of(A), TX_L2, vec![MISS_NEW]));
    f.publish(3, &all(B));
    assert_eq!(f.send(&dgram), (mac_of(A), TX_L2, vec![HIT]));
    f.assert_entries();
    f.assert_stats();
}

/// VIP_L2's previous-table region: `ACTIVE` word 4 (after the four VIPs'), slots after theirs.
const PREV: TableRegion = TableRegion {
    vip_index: 4,
    base: 8 * M,
    size: M,
};

impl Fixture {
    /// VIP_L2's `VipInfo`: the flow table, and with `transition` the previous table in PREV.
    fn vip_l2(&mut self, transition: bool) {
        let flags = VIP_F_FLOWS | if transition { VIP_F_PREV_TABLE } else { 0 };
        self.vip_l2_flags(flags, if transition { PREV.vip_index + 1 } else { 0 });
    }

    fn vip_l2_flags(&mut self, flags: u32, fallback: u32) {
        let key = VipKey {
            addr: a4(VIP_L2),
            port: 80,
            proto: IPPROTO_TCP,
            family: FAMILY_V4,
        };
        let info = VipInfo {
            index: 0,
            table_size: M,
            flags,
            fallback,
        };
        self.b.set_vip(key, info);
    }
}

/// A VIP that switched from second chance to the flow table has no entry for the
/// connections made before the switch: during the transition (`VIP_F_PREV_TABLE`) a
/// mid-stream segment without an entry goes where the previous table sent it, while that
/// backend keeps its flows; a SYN, a previous pick that gave up its flows, an empty previous
/// slot, and any segment after the transition follow the live table.
#[test]
fn midstream_misses_follow_the_previous_table_during_a_transition() {
    if !privileged("midstream_misses_follow_the_previous_table_during_a_transition") {
        return;
    }
    let mut f = Fixture::new(FLOWS);
    // Before the change every connection went to A; the live table now says B.
    f.b.publish(&PREV, &all(A));
    f.vip_l2(true);
    f.publish(0, &all(B));
    let quiet = |port| Flow::tcp4(CLIENT, port, VIP_L2, 80);

    // (a) A quiet established connection's first segment since the switch: the previous
    // table's backend, entered, so the next segments are hits there.
    let a = packet::l4_frame(&ack(), &quiet(45_000));
    assert_eq!(f.send(&a), (mac_of(A), TX_L2, vec![PREVIOUS]));
    assert_eq!(f.send(&a), (mac_of(A), TX_L2, vec![HIT]));
    // The frame leaves with only its MACs rewritten.
    let (run, _) = f.b.check(&a);
    assert_eq!(&run.output[12..], &a[12..]);
    f.expected[HIT as usize].0 += 1;
    f.expected[HIT as usize].1 += a.len() as u64;

    // (b) A SYN is a new connection: the live table.
    let syn_b = packet::l4_frame(&syn(), &quiet(45_001));
    assert_eq!(f.send(&syn_b), (mac_of(B), TX_L2, vec![MISS_NEW]));
    // (c) The previous pick gave up its flows (A down or its drain over): the live table.
    let mut down = backend(A, FWD_L2);
    down.flags = 0;
    f.b.set_backend(A, down);
    let c = packet::l4_frame(&ack(), &quiet(45_002));
    assert_eq!(f.send(&c), (mac_of(B), TX_L2, vec![MISS_MIDSTREAM]));
    f.b.set_backend(A, backend(A, FWD_L2));
    // An empty slot of the previous table (vipd empties a slot whose backend index now
    // holds another backend): the live table.
    f.b.publish(&PREV, &vec![NO_BACKEND; M as usize]);
    let d = packet::l4_frame(&ack(), &quiet(45_003));
    assert_eq!(f.send(&d), (mac_of(B), TX_L2, vec![MISS_MIDSTREAM]));
    f.b.publish(&PREV, &all(A));

    // (d) The transition is over (flag cleared): a mid-stream miss follows the live table,
    // while the entries made during it still hold.
    f.vip_l2(false);
    let e = packet::l4_frame(&ack(), &quiet(45_004));
    assert_eq!(f.send(&e), (mac_of(B), TX_L2, vec![MISS_MIDSTREAM]));
    assert_eq!(f.send(&a), (mac_of(A), TX_L2, vec![HIT]));
    assert_eq!(
        f.assert_entries()[..2],
        [1, 4],
        "A: (a); B: (b), (c), (d), (e)"
    );
    f.assert_stats();
}

/// A VIP back on second chance after the flow table (`VIP_F_FLOWS_EXIT`): a segment with a
/// usable entry follows it whatever the live table says (the node the table now picks may
/// still run the flow table and give no second chance); a SYN, a segment without an entry
/// and an entry whose backend gave up its flows follow the live table, and nothing is
/// entered. Once the flag is cleared the VIP is stateless again.
#[test]
fn leaving_the_flow_table_keeps_entries_steering_until_the_exit_ends() {
    if !privileged("leaving_the_flow_table_keeps_entries_steering_until_the_exit_ends") {
        return;
    }
    let mut f = Fixture::new(FLOWS);
    let web = Flow::tcp4(CLIENT, 48_000, VIP_L2, 80);
    let kept = packet::l4_frame(&ack(), &web);
    assert_eq!(
        f.send(&packet::l4_frame(&syn(), &web)),
        (mac_of(A), TX_L2, vec![MISS_NEW])
    );
    // The reload that removed the last backend without vipd: the table moves the slot to B
    // and the VIP leaves the flow table.
    f.publish(0, &all(B));
    f.vip_l2_flags(VIP_F_FLOWS_EXIT, 0);
    assert_eq!(f.send(&kept), (mac_of(A), TX_L2, vec![HIT]));
    // No entry: the live table, and none is made.
    let other = Flow::tcp4(CLIENT, 48_001, VIP_L2, 80);
    assert_eq!(
        f.send(&packet::l4_frame(&ack(), &other)),
        (mac_of(B), TX_L2, vec![])
    );
    // A SYN reusing the kept 4-tuple is a new connection.
    assert_eq!(
        f.send(&packet::l4_frame(&syn(), &web)),
        (mac_of(B), TX_L2, vec![])
    );
    // The entry's backend gave up its flows: the live table.
    let mut down = backend(A, FWD_L2);
    down.flags = 0;
    f.b.set_backend(A, down);
    assert_eq!(f.send(&kept), (mac_of(B), TX_L2, vec![STALE]));
    f.b.set_backend(A, backend(A, FWD_L2));
    assert_eq!(f.send(&kept), (mac_of(A), TX_L2, vec![HIT]));
    assert_eq!(
        f.assert_entries()[..2],
        [1, 0],
        "only the entry made in flow mode"
    );
    // The exit is over: stateless, the live table.
    f.vip_l2_flags(0, 0);
    assert_eq!(f.send(&kept), (mac_of(B), TX_L2, vec![]));
    f.assert_stats();
}

/// A flow-table VIP's second table is its previous table, never a second chance's
/// fallback: a local backend without a socket is passed as always.
#[test]
fn the_previous_table_is_not_a_second_chance() {
    use vip_common::maps::FWD_LOCAL;
    if !privileged("the_previous_table_is_not_a_second_chance") {
        return;
    }
    let mut f = Fixture::new(FLOWS);
    f.b.set_backend(A, backend(A, FWD_LOCAL));
    f.b.model.sockets = Some(Default::default());
    f.b.publish(&PREV, &all(B));
    f.vip_l2(true);
    // A new connection to the local backend: no socket in the test's namespace for it,
    // yet it is delivered locally, not sent on to the previous table's B.
    let (run, out) = f.b.check(&packet::l4_frame(
        &syn(),
        &Flow::tcp4(CLIENT, 46_000, VIP_L2, 80),
    ));
    assert_eq!(
        (run.action, out.reason),
        (vip_common::wire::XDP_PASS, PASS_LOCAL)
    );
}

/// Kernel == model, packet by packet, for flow-table VIPs through random table changes,
/// random previous tables, transitions set and cleared, exits from the flow table, backends
/// giving up and regaining their flows: SYNs, mid-stream segments, UDP datagrams and PMTU errors over a pool of
/// flows small enough that the kernel's LRU never evicts (the model never does).
#[test]
fn property_flow_table_kernel_equals_model() {
    if !privileged("property_flow_table_kernel_equals_model") {
        return;
    }
    let mut f = Fixture::new(FLOWS);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let table = |next: &mut dyn FnMut() -> u64| -> Vec<u32> {
        (0..M)
            .map(|_| [A, B, A, B, NO_BACKEND][(next() % 5) as usize])
            .collect()
    };
    let flags = [0x02u8, 0x10, 0x12, 0x18, 0x04, 0x11];
    let mut seen = [0u64; flow_stat::COUNT as usize];
    for i in 0..20_000u32 {
        if i % 400 == 0 {
            let live = table(&mut next);
            f.publish(0, &live);
            let live = table(&mut next);
            f.publish(3, &live);
            let prev = table(&mut next);
            f.b.publish(&PREV, &prev);
            match next() % 4 {
                0 => f.vip_l2(false),
                1 => f.vip_l2_flags(VIP_F_FLOWS_EXIT, 0),
                _ => f.vip_l2(true),
            }
            for index in [A, B] {
                let mut b = backend(index, FWD_L2);
                if next() % 4 == 0 {
                    b.flags = 0;
                }
                f.b.set_backend(index, b);
            }
        }
        let r = next();
        let port = 47_000 + (r % 100) as u16;
        let frame = match (r >> 8) % 10 {
            0 => packet::l4_frame(&syn(), &Flow::udp4(CLIENT, port, VIP_UDP, 80)),
            1 => {
                let reply = packet::l3_packet(&ack(), &Flow::tcp4(VIP_L2, 80, CLIENT, port));
                packet::icmp4_frag_needed(&syn(), [203, 0, 113, 1], VIP_L2, 1400, &reply[..28])
            }
            _ => {
                let fr = Frame {
                    tcp_flags: flags[((r >> 16) % flags.len() as u64) as usize],
                    ..Frame::default()
                };
                packet::l4_frame(&fr, &Flow::tcp4(CLIENT, port, VIP_L2, 80))
            }
        };
        let (_, _, stats) = f.send(&frame);
        for s in stats {
            seen[s as usize] += 1;
        }
    }
    eprintln!(
        "flow counters over the run: {seen:?} ({:?})",
        flow_stat::NAMES
    );
    assert!(
        seen.iter().all(|&n| n > 0),
        "every path exercised: {seen:?}"
    );
    f.assert_entries();
    f.assert_stats();
}

#[test]
fn encapsulated_flows_keep_their_backend_through_table_changes() {
    if !privileged("encapsulated_flows_keep_their_backend_through_table_changes") {
        return;
    }
    let mut f = Fixture::new(FLOWS);
    let web = Flow::tcp4(CLIENT, 41_000, VIP_ENCAP, 80);
    let (run, out) = f.b.check(&packet::l4_frame(&syn(), &web));
    assert_eq!((run.action, out.reason), (XDP_TX, TX_ENCAP));
    assert_eq!(outer_dst(&run.output), backend_addr(EA));
    f.expected[MISS_NEW as usize].0 += 1;
    f.expected[MISS_NEW as usize].1 += packet::l4_frame(&syn(), &web).len() as u64;

    f.publish(1, &all(EB));
    let segment = packet::l4_frame(&ack(), &web);
    let (run, out) = f.b.check(&segment);
    assert_eq!(
        (out.reason, out.flow_stats.as_slice()),
        (TX_ENCAP, &[HIT][..])
    );
    assert_eq!(outer_dst(&run.output), backend_addr(EA), "kept on EA");
    assert_eq!(&run.output[34..], &segment[14..], "inner packet untouched");
    f.expected[HIT as usize].0 += 1;
    f.expected[HIT as usize].1 += segment.len() as u64;

    // EA is taken down: its flows move to the table's pick.
    let mut down = backend(EA, FWD_ENCAP);
    down.flags = 0;
    f.b.set_backend(EA, down);
    let (run, out) = f.b.check(&segment);
    assert_eq!(out.flow_stats, [STALE, MISS_MIDSTREAM]);
    assert_eq!(outer_dst(&run.output), backend_addr(EB));
    for stat in [STALE, MISS_MIDSTREAM] {
        f.expected[stat as usize].0 += 1;
        f.expected[stat as usize].1 += segment.len() as u64;
    }
    f.assert_entries();
    f.assert_stats();
}

#[test]
fn entries_of_backends_that_gave_up_their_flows_are_ignored() {
    if !privileged("entries_of_backends_that_gave_up_their_flows_are_ignored") {
        return;
    }
    let mut f = Fixture::new(FLOWS);
    let flows: Vec<Flow> = (0..4)
        .map(|i| Flow::tcp4(CLIENT, 42_000 + i, VIP_L2, 80))
        .collect();
    for flow in &flows {
        assert_eq!(f.send(&packet::l4_frame(&syn(), flow)).0, mac_of(A));
    }
    f.publish(0, &all(B));
    assert_eq!(f.assert_entries()[..2], [4, 0]);

    // (c) A down (KEEP_FLOWS clear): the flow moves to the table's pick, B; the entry
    // follows it there, so the next segment is a hit on B.
    let mut down = backend(A, FWD_L2);
    down.flags = 0;
    f.b.set_backend(A, down);
    let first = packet::l4_frame(&ack(), &flows[0]);
    assert_eq!(
        f.send(&first),
        (mac_of(B), TX_L2, vec![STALE, MISS_MIDSTREAM])
    );
    assert_eq!(f.send(&first), (mac_of(B), TX_L2, vec![HIT]));
    // A draining (KEEP_FLOWS set again, still out of the table): its flows stay.
    f.b.set_backend(A, backend(A, FWD_L2));
    let second = packet::l4_frame(&ack(), &flows[1]);
    assert_eq!(f.send(&second), (mac_of(A), TX_L2, vec![HIT]));

    // (d) Index A reused by another backend (a new serial, keeping flows): the old entries
    // are not its flows.
    let reused = Backend {
        serial: 100,
        ..backend(A, FWD_L2)
    };
    f.b.set_backend(A, reused);
    assert_eq!(
        f.assert_entries()[..2],
        [0, 1],
        "A's entries are an old serial's"
    );
    f.publish(0, &all(A));
    let third = packet::l4_frame(&ack(), &flows[2]);
    // The table now picks A again, yet the entry is stale: re-entered with the new serial.
    assert_eq!(
        f.send(&third),
        (mac_of(A), TX_L2, vec![STALE, MISS_MIDSTREAM])
    );
    assert_eq!(f.send(&third), (mac_of(A), TX_L2, vec![HIT]));
    // Moved elsewhere by the table: the stale entry is replaced by one on B.
    f.publish(0, &all(B));
    let fourth = packet::l4_frame(&ack(), &flows[3]);
    assert_eq!(
        f.send(&fourth),
        (mac_of(B), TX_L2, vec![STALE, MISS_MIDSTREAM])
    );
    assert_eq!(f.assert_entries()[..2], [1, 2]);
    f.assert_stats();
}

#[test]
fn vips_without_the_flag_never_touch_the_flow_table() {
    if !privileged("vips_without_the_flag_never_touch_the_flow_table") {
        return;
    }
    let mut f = Fixture::new(FLOWS);
    for i in 0..32 {
        let flow = Flow::tcp4(CLIENT, 43_000 + i, VIP_PLAIN, 80);
        for frame in [syn(), ack()] {
            let (mac, reason, stats) = f.send(&packet::l4_frame(&frame, &flow));
            assert_eq!((mac, reason, stats), (mac_of(A), TX_L2, vec![]));
        }
    }
    // Stateless as before: a table change moves established flows at once.
    f.publish(2, &all(B));
    let flow = Flow::tcp4(CLIENT, 43_000, VIP_PLAIN, 80);
    assert_eq!(f.send(&packet::l4_frame(&ack(), &flow)).0, mac_of(B));
    assert!(f.b.model.flows.is_empty());
    assert!(
        f.assert_entries().iter().all(|&n| n == 0),
        "FLOWS stays empty"
    );
    f.assert_stats();
    assert!(f.expected.iter().all(|&(p, _)| p == 0));
}

#[test]
fn the_kernel_bounds_the_flow_table() {
    if !privileged("the_kernel_bounds_the_flow_table") {
        return;
    }
    // Sized 0: the kernel's minimum, one entry per possible CPU.
    let cpus = possible_cpus().expect("possible CPUs");
    let mut f = Fixture::new(0);
    assert_eq!(f.b.sizing.flow_entries(cpus), cpus);
    // Many more flows than entries: all forwarded (kernel only: the model never evicts).
    for i in 0..200 {
        let flow = Flow::tcp4(CLIENT, 44_000 + i, VIP_L2, 80);
        let run = f.b.run(&packet::l4_frame(&syn(), &flow));
        assert_eq!((run.action, &run.output[0..6]), (XDP_TX, &mac_of(A)[..]));
    }
    let entries: u64 = f.b.dp.flows_per_backend().expect("FLOWS").iter().sum();
    assert!(
        entries >= 1 && entries <= u64::from(cpus),
        "{entries} entries in a table of {cpus}"
    );
    let stats = f.b.dp.flow_stats().expect("FLOW_STATS");
    assert_eq!(stats[MISS_NEW as usize].packets, 200);
}

/// A restart with another map layout builds new maps beside the pinned ones; the flow table's
/// entries are copied across before the program swap, so established flows of `VIP_F_FLOWS`
/// VIPs keep their backends (the entries' serials still guard against reused indices).
#[test]
fn flow_table_is_carried_into_a_replacing_data_plane() {
    use aya::maps::{HashMap, Map, MapData};
    use vip_common::maps::{FlowEntry, FlowKey, MAP_FLOWS};
    use vip_daemon::shell::dataplane::Dataplane;
    if !privileged("flow_table_is_carried_into_a_replacing_data_plane") {
        return;
    }
    let pins = vip_tests::PinDir::new();
    let small = Sizing {
        flows: FLOWS,
        ..Sizing::default()
    };
    let old = Dataplane::load_pinned(&pins.path, &small).expect("old data plane");
    let key = |i: u16| FlowKey {
        src: a4(CLIENT),
        dst: a4(VIP_L2),
        sport: 40_000 + i,
        dport: 80,
        proto: IPPROTO_TCP,
        family: FAMILY_V4,
        _pad: [0; 2],
    };
    let entry = |i: u16| FlowEntry {
        backend: u32::from(i % 3),
        serial: 7,
    };
    {
        let pinned = MapData::from_pin(pins.path.join(MAP_FLOWS)).expect("pinned FLOWS");
        let mut flows: HashMap<_, FlowKey, FlowEntry> =
            HashMap::try_from(Map::LruHashMap(pinned)).expect("FLOWS");
        for i in 0..100 {
            flows.insert(key(i), entry(i), 0).expect("insert");
        }
    }
    drop(old);
    let bigger = Sizing {
        backends: small.backends * 2,
        flows: FLOWS * 2,
        ..small
    };
    let mut new = Dataplane::load_beside(&pins.path, &bigger).expect("new data plane");
    assert_eq!(new.carry_flows().expect("carry"), 100);
    new.finish_replacement().expect("finish");
    let pinned = MapData::from_pin(pins.path.join(MAP_FLOWS)).expect("new pinned FLOWS");
    assert_eq!(
        pinned.info().expect("info").max_entries(),
        bigger.flow_entries(possible_cpus().expect("cpus")),
        "the replacing map took the pin's place"
    );
    let flows: HashMap<_, FlowKey, FlowEntry> =
        HashMap::try_from(Map::LruHashMap(pinned)).expect("FLOWS");
    for i in 0..100 {
        assert_eq!(flows.get(&key(i), 0).ok(), Some(entry(i)), "flow {i}");
    }
}
