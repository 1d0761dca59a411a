//! The operator commands that need no root: `vipd validate` on the shipped examples and on a
//! broken file, and `vipd import-haproxy` whose output `vipd validate` accepts.
use std::process::Command;

const VIPD: &str = env!("CARGO_BIN_EXE_vipd");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn vipd(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(VIPD).args(args).output().expect("run vipd");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_examples_and_a_broken_file() {
    for example in ["minimal.toml", "openstack-controllers.toml"] {
        let (ok, out, err) = vipd(&["validate", &format!("{ROOT}/examples/{example}")]);
        assert!(ok && out.contains("valid"), "{example}: {out}{err}");
    }
    let bad = std::env::temp_dir().join(format!("vipd-cli-{}.toml", std::process::id()));
    std::fs::write(
        &bad,
        "[[vip]]\nname = \"x\"\naddress = \"192.0.2.1\"\nport = 80\ntable_size = 100\n",
    )
    .unwrap();
    let (ok, _, err) = vipd(&["validate", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(":5: vip[0].table_size") && err.contains("101"),
        "{err}"
    );
    let _ = std::fs::remove_file(bad);
}

#[test]
fn import_haproxy_output_validates() {
    let fixtures = format!("{ROOT}/vip-daemon/tests/fixtures/import");
    let (ok, toml, warnings) = vipd(&[
        "import-haproxy",
        &format!("{fixtures}/openstack-haproxy.cfg"),
        "--keepalived",
        &format!("{fixtures}/keepalived.conf"),
    ]);
    assert!(ok, "{warnings}");
    assert!(
        warnings.contains("not carried over:") && warnings.contains("openstack-haproxy.cfg:"),
        "{warnings}"
    );
    let file = std::env::temp_dir().join(format!("vipd-import-{}.toml", std::process::id()));
    std::fs::write(&file, toml).unwrap();
    let (ok, out, err) = vipd(&["validate", file.to_str().unwrap()]);
    assert!(ok && out.contains("16 VIPs"), "{out}{err}");
    let _ = std::fs::remove_file(file);
}
