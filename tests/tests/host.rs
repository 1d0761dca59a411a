//! `vipd host setup|check|undo` on a backend host (issue 14, item 8), in a scratch network
//! namespace (the `net.*` sysctls and `lo` are per namespace): check lists what is missing
//! (exit code 4), setup makes it so and records it, check then passes, undo restores exactly
//! the previous values and leaves a value someone changed since.
use std::process::{Command, Output};

use vip_tests::{privileged, unique, vipd_bin, NetNs};

/// This host is 10.79.0.11 on `e0`: a backend of `web` (l2) and of `far` (encap), not of
/// `other`.
const CONFIG: &str = r#"
[cluster]
encap_source_v4 = "10.254.0.0"
encap_source_v6 = "fd00:feed::"

[[vip]]
name = "web"
address = "10.79.0.100"
port = 80
  [[vip.backend]]
  name = "me"
  address = "10.79.0.11"
  [[vip.backend]]
  name = "peer"
  address = "10.79.0.12"

[[vip]]
name = "far"
address = "10.79.0.101"
port = 80
  [[vip.backend]]
  name = "me"
  address = "10.79.0.11"
  forward = "encap"

[[vip]]
name = "other"
address = "10.79.0.102"
port = 80
  [[vip.backend]]
  name = "peer"
  address = "10.79.0.12"
"#;

struct Host {
    ns: NetNs,
    dir: std::path::PathBuf,
    pins: String,
}

impl Host {
    fn vipd(&self, args: &[&str]) -> Output {
        let cfg = self.dir.join("vipd.toml");
        let state = self.dir.join("host.json");
        let (cfg, state) = (cfg.to_str().unwrap(), state.to_str().unwrap());
        let mut full: Vec<&str> = args.to_vec();
        // The target options belong to setup/check; undo takes only the files.
        if args.contains(&"undo") {
            full.extend(["--state-file", state, "--decap-pin-dir", &self.pins]);
        } else {
            full.extend(["--config", cfg, "--vip", "fd00:79::100"]);
            full.extend(["--state-file", state, "--decap-pin-dir", &self.pins]);
        }
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns.name))
            .arg("--")
            .arg(vipd_bin())
            .args(&full)
            .output()
            .expect("run vipd")
    }

    fn sysctl(&self, key: &str) -> String {
        self.ns.exec(&["sysctl", "-n", key]).trim().to_owned()
    }

    fn lo(&self) -> String {
        self.ns.exec(&["ip", "addr", "show", "dev", "lo"])
    }

    fn xdp_on_e0(&self) -> bool {
        self.ns
            .exec(&["ip", "link", "show", "dev", "e0"])
            .contains("xdp")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn host_setup_check_undo() {
    if !privileged("host_setup_check_undo") {
        return;
    }
    vip_daemon::shell::bpffs::ensure_mounted().expect("bpffs");
    let dir = std::env::temp_dir().join(unique("vipd-host-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("vipd.toml"), CONFIG).unwrap();
    let h = Host {
        ns: vip_tests::veth_namespace("vho", "10.79.0.11/24"),
        dir,
        pins: format!("/sys/fs/bpf/{}", unique("vip-decap-")),
    };
    for (k, v) in [
        ("net.ipv4.conf.all.arp_ignore", "0"),
        ("net.ipv4.conf.all.arp_announce", "0"),
        ("net.ipv4.conf.all.rp_filter", "1"),
        ("net.ipv4.conf.e0.rp_filter", "1"),
    ] {
        h.ns.exec(&["sysctl", "-qw", &format!("{k}={v}")]);
    }

    // Check: everything missing, listed, exit code 4.
    let out = h.vipd(&["host", "check"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let said = text(&out);
    for want in [
        "set net.ipv4.conf.all.arp_ignore = 1 (was 0)",
        "set net.ipv4.conf.all.arp_announce = 2 (was 0)",
        "set net.ipv4.conf.all.rp_filter = 2 (was 1)",
        "set net.ipv4.conf.e0.rp_filter = 2 (was 1)",
        "add VIP 10.79.0.100 to lo",
        "add VIP 10.79.0.101 to lo",
        "add VIP fd00:79::100 to lo",
        "attach the vip_decap XDP program to e0",
    ] {
        assert!(said.contains(want), "missing {want:?} in:\n{said}");
    }
    assert!(!said.contains("10.79.0.102"), "{said}");

    // A dry run changes nothing.
    let out = h.vipd(&["host", "setup", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(h.sysctl("net.ipv4.conf.all.arp_ignore"), "0");
    assert!(!h.lo().contains("10.79.0.100"));

    // Setup, as JSON.
    let out = h.vipd(&["-o", "json", "host", "setup"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["applied"], true, "{v}");
    assert_eq!(v["changes"].as_array().unwrap().len(), 8, "{v}");
    assert!(v["schema"].is_number(), "{v}");
    assert_eq!(h.sysctl("net.ipv4.conf.all.arp_ignore"), "1");
    assert_eq!(h.sysctl("net.ipv4.conf.all.arp_announce"), "2");
    assert_eq!(h.sysctl("net.ipv4.conf.all.rp_filter"), "2");
    assert_eq!(h.sysctl("net.ipv4.conf.e0.rp_filter"), "2");
    let lo = h.lo();
    for a in ["10.79.0.100/32", "10.79.0.101/32", "fd00:79::100/128"] {
        assert!(lo.contains(a), "{a} not on lo:\n{lo}");
    }
    assert!(h.xdp_on_e0(), "no XDP program on e0");
    let e0 = h.ns.exec(&["ip", "-d", "link", "show", "dev", "e0"]);
    assert!(e0.contains("name vip_decap"), "{e0}");
    // The decap program knows where the config's balancers send from, and nothing else.
    let pinned = aya::maps::MapData::from_pin(
        std::path::Path::new(&h.pins).join(vip_common::maps::MAP_ENCAP_SOURCES),
    )
    .expect("pinned ENCAP_SOURCES");
    let map: aya::maps::HashMap<_, vip_common::maps::EncapSourceKey, u32> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(pinned)).expect("hash map");
    let mut listed: Vec<_> = map.keys().map(|k| k.expect("key")).collect();
    let mut want = vip_daemon::core::image::encap_sources_of(
        "10.254.0.0".parse().unwrap(),
        "fd00:feed::".parse().unwrap(),
    );
    listed.sort();
    want.sort();
    assert_eq!(listed, want, "ENCAP_SOURCES of the decap program");
    assert!(h.dir.join("host.json").exists());

    // Check passes; a second setup has nothing to do.
    let out = h.vipd(&["host", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("nothing missing"), "{}", text(&out));
    let out = h.vipd(&["host", "setup"]);
    assert!(text(&out).contains("nothing to do"), "{}", text(&out));

    // Someone else changes arp_announce after setup: undo leaves it.
    h.ns.exec(&["sysctl", "-qw", "net.ipv4.conf.all.arp_announce=1"]);
    let out = h.vipd(&["host", "undo"]);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("arp_announce is 1 now"), "{said}");
    assert_eq!(h.sysctl("net.ipv4.conf.all.arp_ignore"), "0");
    assert_eq!(h.sysctl("net.ipv4.conf.all.arp_announce"), "1");
    assert_eq!(h.sysctl("net.ipv4.conf.all.rp_filter"), "1");
    assert_eq!(h.sysctl("net.ipv4.conf.e0.rp_filter"), "1");
    let lo = h.lo();
    assert!(!lo.contains("10.79.0.10"), "{lo}");
    assert!(!lo.contains("fd00:79::100"), "{lo}");
    assert!(!h.xdp_on_e0(), "XDP program left on e0");
    assert!(!h.dir.join("host.json").exists());
    // Nothing recorded: a second undo does nothing.
    let out = h.vipd(&["host", "undo"]);
    assert!(text(&out).contains("nothing to do"), "{}", text(&out));
}
