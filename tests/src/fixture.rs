//! A balancer loaded with private maps, mirrored into the host model: every change is applied
//! to both, and every frame can be run through BPF_PROG_TEST_RUN and compared with the model.
use aya::programs::{TestRun as _, TestRunOptions};
use vip_common::{
    encap::encap_source_key,
    maps::{
        peer_filter, vip_filter, Backend, EncapSourceKey, Lease, LeaseKey, PeerFilter, Settings,
        VipFilter, VipInfo, VipKey, MAP_PEER_FILTER, MAP_VIP_FILTER,
    },
    wire::{FAMILY_V4, FAMILY_V6},
};
use vip_daemon::{
    core::model::{self, ModelState, Outcome},
    shell::dataplane::{Dataplane, Sizing, TablePublisher, TableRegion},
};

/// Kernel result of one BPF_PROG_TEST_RUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub action: u32,
    pub output: Vec<u8>,
}

pub struct Balancer {
    pub dp: Dataplane,
    pub tables: TablePublisher,
    pub model: ModelState,
    pub sizing: Sizing,
    /// What the kernel's `VIP_FILTER` holds: the bits of `model.vips`' addresses, as vipd
    /// writes it. The model itself has no filter: a VIP packet the filter wrongly stopped
    /// would show as a kernel/model disagreement.
    pub vip_filter: VipFilter,
    /// What the kernel's `PEER_FILTER` holds: the bits of `model.peers`, likewise.
    pub peer_filter: PeerFilter,
}

impl Balancer {
    /// A balancer on private maps (for BPF_PROG_TEST_RUN).
    pub fn new(sizing: Sizing, settings: Settings) -> Self {
        let dp = Dataplane::load_private(&sizing).expect("load object");
        Self::with_dataplane(dp, sizing, settings)
    }

    /// A balancer around an already loaded (e.g. pinned and attached) data plane.
    pub fn with_dataplane(mut dp: Dataplane, sizing: Sizing, settings: Settings) -> Self {
        dp.program().expect("program verifies");
        dp.set_settings(&settings).expect("settings");
        let tables = dp.table_publisher().expect("mmap tables");
        let model = ModelState {
            settings,
            backends: vec![Backend::default(); sizing.backends as usize],
            active: vec![0; (sizing.vips + sizing.fallbacks) as usize],
            slots: vec![0; sizing.slot_capacity() as usize],
            now_ns: monotonic_ns(),
            ..Default::default()
        };
        let mut b = Self {
            dp,
            tables,
            model,
            sizing,
            vip_filter: [0; vip_common::maps::VIP_FILTER_WORDS as usize],
            peer_filter: [0; vip_common::maps::PEER_FILTER_WORDS as usize],
        };
        // Like vipd: the balancers' own encapsulation sources are known (second chance).
        b.set_encap_sources(&own_encap_sources(&settings));
        b
    }

    /// Makes `ENCAP_SOURCES` hold exactly `keys`, in the kernel and in the model.
    pub fn set_encap_sources(&mut self, keys: &[EncapSourceKey]) {
        self.dp.set_encap_sources(keys).expect("set encap sources");
        self.model.encap_sources = keys.iter().copied().collect();
    }

    pub fn set_vip(&mut self, key: VipKey, info: VipInfo) {
        let words = vip_filter(self.model.vips.keys().chain([&key]).map(|k| &k.addr));
        self.dp
            .set_filter(MAP_VIP_FILTER, &words, Some(&self.vip_filter))
            .expect("set vip filter");
        self.vip_filter = words;
        self.dp.set_vip(&key, &info).expect("set vip");
        self.model.vips.insert(key, info);
        if key.port == 0 {
            self.add_settings_flags(vip_common::maps::SETTINGS_F_ALL_PORTS);
        }
    }

    fn add_settings_flags(&mut self, flags: u32) {
        self.model.settings.flags |= flags;
        self.dp
            .set_settings(&self.model.settings)
            .expect("settings");
    }

    pub fn set_backend(&mut self, index: u32, backend: Backend) {
        self.dp.set_backend(index, &backend).expect("set backend");
        self.model.backends[index as usize] = backend;
    }

    pub fn set_lease(&mut self, key: LeaseKey, lease: Lease) {
        self.dp.set_lease(&key, &lease).expect("set lease");
        self.model.leases.insert(key, lease);
    }

    pub fn set_peer(&mut self, mac: [u8; 6]) {
        let words = peer_filter(self.model.peers.iter().chain([&mac]));
        self.dp
            .set_filter(MAP_PEER_FILTER, &words, Some(&self.peer_filter))
            .expect("set peer filter");
        self.peer_filter = words;
        self.dp.set_peer(mac, 1).expect("set peer");
        self.model.peers.insert(mac);
        self.add_settings_flags(vip_common::maps::SETTINGS_F_PEERS);
    }

    /// Lists `mac` as the MAC of the interface BPF_PROG_TEST_RUN receives on (the calling
    /// thread's loopback), MTU unknown, in the kernel and in the model.
    pub fn set_own_mac(&mut self, mac: [u8; 6]) {
        self.set_own_iface(mac, 0);
    }

    /// Lists `mac` and `mtu` (0: unknown) as the receiving interface's, likewise.
    pub fn set_own_iface(&mut self, mac: [u8; 6], mtu: u16) {
        let lo = vip_daemon::shell::dataplane::if_index("lo").expect("lo");
        self.dp.set_iface(lo, mac, mtu).expect("set iface");
        self.model.own_mac = Some(mac);
        self.model.mtu = mtu;
    }

    /// Lists interface `ifindex` as egress `port` with `iface`'s MAC and MTU, in the kernel
    /// (`EGRESS`, `EGRESS_DEVS`) and in the model.
    pub fn set_egress(&mut self, port: u8, ifindex: u32, iface: vip_common::maps::Iface) {
        self.dp
            .set_egress(port.into(), ifindex, iface)
            .expect("set egress");
        self.model.egress.insert(port, iface);
    }

    /// Publishes a whole table in the kernel and in the model.
    pub fn publish(&mut self, region: &TableRegion, table: &[u32]) {
        let (gen, _) = self.tables.publish(region, table).expect("publish");
        let base = region.base + gen * region.size;
        self.model.slots[base as usize..(base + region.size) as usize].copy_from_slice(table);
        self.model.active[region.vip_index as usize] = base;
    }

    /// The balancer program on one frame, in the kernel.
    pub fn run(&mut self, frame: &[u8]) -> Run {
        run_program(&mut self.dp, vip_common::maps::PROG_XDP, frame)
    }

    /// Runs `frame` in the kernel and in the model and asserts they agree; returns both (the
    /// model's outcome carries the reason and the chosen backend).
    pub fn check(&mut self, frame: &[u8]) -> (Run, Outcome) {
        let kernel = self.run(frame);
        let expected = model::process(&mut self.model, frame);
        assert_eq!(
            (kernel.action, &kernel.output),
            (expected.action, &expected.output),
            "kernel and model disagree on frame {frame:02x?} (model reason {})",
            vip_common::maps::reason::NAMES[expected.reason as usize]
        );
        (kernel, expected)
    }
}

/// The `ENCAP_SOURCES` keys of the sources `settings` encapsulates from (as vipd lists them).
pub fn own_encap_sources(settings: &Settings) -> Vec<EncapSourceKey> {
    let mut v4 = [0u8; 16];
    v4[..4].copy_from_slice(&settings.encap_src_v4);
    vec![
        encap_source_key(v4, FAMILY_V4),
        encap_source_key(settings.encap_src_v6, FAMILY_V6),
    ]
}

/// One BPF_PROG_TEST_RUN of program `name` over `frame`.
pub fn run_program(dp: &mut Dataplane, name: &'static str, frame: &[u8]) -> Run {
    let mut out = vec![0u8; frame.len() + 256];
    let res = dp
        .named_program(name)
        .expect("program")
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    Run {
        action: res.return_value,
        output: out,
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
