//! The Debian package: `cargo xtask dist` around the vipd under test, installed with dpkg into
//! a scratch root (maintainer scripts run chrootless with DPKG_ROOT, so only that root is
//! touched), every file checked, purged again, and lintian run on it.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use vip_tests::{privileged, sh, vipd_bin};

/// Lintian tags the package keeps (shown with `-I --pedantic`), each with why. Any other tag
/// fails the test.
const LINTIAN_ALLOWED: &[(&str, &str)] = &[
    (
        "hardening-no-fortify-functions",
        "Rust does not call glibc's _FORTIFY_SOURCE wrappers; the language checks bounds",
    ),
    (
        "package-supports-alternative-init-but-no-init.d-script",
        "vipd needs systemd (Type=notify, watchdog, the unit's sandbox): no sysvinit script",
    ),
    (
        "spelling-error-in-binary wTH with",
        "bytes inside the binary's data that happen to read as words, not a message",
    ),
];

/// Files the package must install (man pages are checked against `vipd man` separately).
const EXPECTED: &[&str] = &[
    "usr/sbin/vipd",
    "lib/systemd/system/vipd.service",
    "usr/share/bash-completion/completions/vipd",
    "usr/share/zsh/vendor-completions/_vipd",
    "usr/share/fish/vendor_completions.d/vipd.fish",
    "usr/share/doc/vip-fabric/copyright",
    "usr/share/doc/vip-fabric/changelog.gz",
    "usr/share/doc/vip-fabric/README.md.gz",
    "usr/share/doc/vip-fabric/operations.md.gz",
    "usr/share/doc/vip-fabric/examples/minimal.toml",
    "usr/share/doc/vip-fabric/examples/openstack-controllers.toml",
    "usr/share/vip-fabric/grafana-dashboard.json",
    "usr/share/vip-fabric/alerts.yml",
    "usr/share/vip-fabric/alerts.test.yml",
];

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// `cargo xtask dist --vipd <the binary under test>`; cargo test has released the build lock
/// by now, so the nested cargo only builds xtask (debug) if needed.
fn build_deb() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let vipd = vipd_bin();
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["run", "--quiet", "-p", "xtask", "--", "dist", "--vipd"])
        .arg(&vipd)
        .output()
        .expect("spawn cargo xtask dist");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo xtask dist failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(stdout.lines().last().expect("dist prints the .deb path"))
}

/// dpkg acting on `root` only: its own database, scripts run on the host with DPKG_ROOT
/// set (the root has no shell to chroot into), dependencies (libc6, libgcc-s1) not
/// installed there.
fn dpkg(root: &Path, args: &[&str]) -> String {
    let root_arg = format!("--root={}", root.display());
    let mut all = vec![
        "dpkg",
        &root_arg,
        "--force-script-chrootless",
        "--force-depends",
        "--log=/dev/null",
    ];
    all.extend_from_slice(args);
    sh(&all)
}

fn gunzip(path: &Path) -> String {
    sh(&["gzip", "-dc", path.to_str().unwrap()])
}

#[test]
fn deb_installs_every_file_purges_and_passes_lintian() {
    if !privileged("deb_installs_every_file_purges_and_passes_lintian") {
        return;
    }
    let deb = build_deb();
    let deb_arg = deb.to_str().unwrap();
    let root = Scratch(std::env::temp_dir().join(vip_tests::unique("vip-deb-root")));
    let r = &root.0;
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        fs::create_dir_all(r.join(dir)).unwrap();
    }
    fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
    let host_state = Path::new("/var/lib/systemd/deb-systemd-helper-enabled/vipd.service.dsh-also");
    let host_state_before = host_state.exists();

    dpkg(r, &["-i", deb_arg]);
    let status = sh(&[
        "dpkg-query",
        &format!("--admindir={}", r.join("var/lib/dpkg").display()),
        "-W",
        "-f=${Status} ${Version}",
        "vip-fabric",
    ]);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(status, format!("install ok installed {version}"));
    // Every file matches DEBIAN/md5sums.
    dpkg(r, &["--verify", "vip-fabric"]);

    for file in EXPECTED {
        let path = r.join(file);
        assert!(path.is_file(), "{file} not installed");
        assert!(fs::metadata(&path).unwrap().len() > 0, "{file} is empty");
    }
    let vipd = r.join("usr/sbin/vipd");
    let vipd_s = vipd.to_str().unwrap();
    let v = sh(&[vipd_s, "--version"]);
    assert!(v.starts_with(&format!("vipd {version} ")), "{v}");

    // The unit runs the packaged binary on the config path vipd defaults to.
    let unit = fs::read_to_string(r.join("lib/systemd/system/vipd.service")).unwrap();
    let config = vip_daemon::config::DEFAULT_PATH;
    assert!(
        unit.contains(&format!(
            "\nExecStart=/usr/sbin/vipd run --config {config}\n"
        )),
        "{unit}"
    );
    assert!(!unit.contains("/usr/local"), "{unit}");
    // Installed, not enabled: there is no config yet.
    assert!(!r
        .join("etc/systemd/system/multi-user.target.wants/vipd.service")
        .exists());
    assert!(r.join("etc/vip-fabric").is_dir());
    assert_eq!(
        host_state.exists(),
        host_state_before,
        "postinst touched the host"
    );

    // Example configs are valid for the packaged vipd.
    for example in ["minimal.toml", "openstack-controllers.toml"] {
        let path = r.join("usr/share/doc/vip-fabric/examples").join(example);
        let out = sh(&[vipd_s, "validate", path.to_str().unwrap()]);
        assert!(out.contains("valid"), "{out}");
    }
    // One section-8 page per page `vipd man` writes.
    let pages = Scratch(std::env::temp_dir().join(vip_tests::unique("vip-deb-man")));
    sh(&[vipd_s, "man", pages.0.to_str().unwrap()]);
    let mut count = 0;
    for entry in fs::read_dir(&pages.0).unwrap() {
        let stem = entry.unwrap().path().file_stem().unwrap().to_owned();
        let stem = stem.to_str().unwrap();
        let page = r.join(format!("usr/share/man/man8/{stem}.8.gz"));
        assert!(page.is_file(), "{} missing", page.display());
        assert!(gunzip(&page).contains(&format!(".TH {stem} 8 ")));
        count += 1;
    }
    assert!(count > 10, "only {count} man pages");
    for (file, marker) in [
        ("usr/share/bash-completion/completions/vipd", "complete -F"),
        ("usr/share/zsh/vendor-completions/_vipd", "#compdef vipd"),
        (
            "usr/share/fish/vendor_completions.d/vipd.fish",
            "complete -c vipd",
        ),
        ("usr/share/vip-fabric/alerts.yml", "groups:"),
    ] {
        let text = fs::read_to_string(r.join(file)).unwrap();
        assert!(text.contains(marker), "{file} lacks {marker:?}");
    }
    let dashboard = fs::read_to_string(r.join("usr/share/vip-fabric/grafana-dashboard.json"));
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard.unwrap()).unwrap();
    assert!(dashboard["panels"].is_array(), "dashboard has no panels");
    let changelog = gunzip(&r.join("usr/share/doc/vip-fabric/changelog.gz"));
    assert!(changelog.starts_with(&format!("vip-fabric ({version}) ")));

    // Purge leaves nothing of the package behind.
    dpkg(r, &["--purge", "vip-fabric"]);
    for file in EXPECTED {
        assert!(!r.join(file).exists(), "{file} left after purge");
    }
    assert!(!r
        .join("var/lib/systemd/deb-systemd-helper-enabled/vipd.service.dsh-also")
        .exists());

    lintian_clean(deb_arg);
}

fn lintian_clean(deb: &str) {
    let out = Command::new("lintian")
        .args([
            "--display-info",
            "--pedantic",
            "--display-experimental",
            deb,
        ])
        .output()
        .expect("spawn lintian (cargo xtask setup installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("lintian:\n{stdout}");
    let mut unexplained = Vec::new();
    for line in stdout.lines() {
        // "W: vip-fabric: tag extra [path]"
        let Some((_, tag)) = line.split_once(": vip-fabric: ") else {
            continue;
        };
        if !LINTIAN_ALLOWED.iter().any(|(t, _)| tag.starts_with(t)) {
            unexplained.push(line);
        }
    }
    assert!(
        unexplained.is_empty(),
        "lintian tags without a reason in LINTIAN_ALLOWED: {unexplained:#?}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Lintian fails on errors; those are never allowed.
    assert!(out.status.success(), "lintian failed: {stdout}");
}
