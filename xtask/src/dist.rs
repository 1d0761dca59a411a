//! `cargo xtask dist`: the Debian package `vip-fabric_<version>_<arch>.deb` in target/dist/,
//! staged by hand and built with `dpkg-deb` (no debhelper: the layout below is the whole
//! package). `tests/tests/package.rs` installs it into a scratch root and runs lintian on it.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use crate::setup::output;
use anyhow::{bail, Context as _};

const PACKAGE: &str = "vip-fabric";

/// Where a packaged file comes from.
#[derive(Clone, Copy)]
enum Src {
    /// The vipd binary, stripped.
    Vipd,
    /// `vipd man`: every page moved to section 8 (a command in /usr/sbin), gzipped, into the
    /// directory.
    ManPages,
    /// `vipd completions SHELL`.
    Completion(&'static str),
    /// The repository's unit with the packaged binary path (it names /usr/local/sbin).
    Unit(&'static str),
    /// A repository file as is.
    Copy(&'static str),
    /// A maintainer script (0755).
    Script(&'static str),
    /// A repository file, gzipped (Debian policy: docs in /usr/share/doc over 4 KiB).
    Gzip(&'static str),
    /// A Debian-format changelog for this version, gzipped.
    Changelog,
    /// An empty directory.
    Dir,
}

/// The package layout: (source, path in the package). DEBIAN/control is generated last.
#[rustfmt::skip]
const LAYOUT: &[(Src, &str)] = &[
    (Src::Vipd,                                          "usr/sbin/vipd"),
    (Src::Unit("packaging/vipd.service"),                "lib/systemd/system/vipd.service"),
    (Src::ManPages,                                      "usr/share/man/man8"),
    (Src::Completion("bash"),                            "usr/share/bash-completion/completions/vipd"),
    (Src::Completion("zsh"),                             "usr/share/zsh/vendor-completions/_vipd"),
    (Src::Completion("fish"),                            "usr/share/fish/vendor_completions.d/vipd.fish"),
    // The admin writes vipd.toml here; no default config, so nothing starts on install.
    (Src::Dir,                                           "etc/vip-fabric"),
    (Src::Copy("examples/minimal.toml"),                 "usr/share/doc/vip-fabric/examples/minimal.toml"),
    (Src::Copy("examples/openstack-controllers.toml"),   "usr/share/doc/vip-fabric/examples/openstack-controllers.toml"),
    (Src::Copy("packaging/debian/copyright"),            "usr/share/doc/vip-fabric/copyright"),
    (Src::Changelog,                                     "usr/share/doc/vip-fabric/changelog.gz"),
    (Src::Gzip("README.md"),                             "usr/share/doc/vip-fabric/README.md.gz"),
    (Src::Gzip("docs/operations.md"),                    "usr/share/doc/vip-fabric/operations.md.gz"),
    (Src::Gzip("docs/architecture.md"),                  "usr/share/doc/vip-fabric/architecture.md.gz"),
    (Src::Gzip("docs/dataplane.md"),                     "usr/share/doc/vip-fabric/dataplane.md.gz"),
    (Src::Gzip("docs/migration.md"),                     "usr/share/doc/vip-fabric/migration.md.gz"),
    (Src::Copy("packaging/grafana-dashboard.json"),      "usr/share/vip-fabric/grafana-dashboard.json"),
    (Src::Copy("packaging/alerts.yml"),                  "usr/share/vip-fabric/alerts.yml"),
    (Src::Copy("packaging/alerts.test.yml"),             "usr/share/vip-fabric/alerts.test.yml"),
    (Src::Script("packaging/debian/postinst"),           "DEBIAN/postinst"),
    (Src::Script("packaging/debian/prerm"),              "DEBIAN/prerm"),
    (Src::Script("packaging/debian/postrm"),             "DEBIAN/postrm"),
];

const DESCRIPTION: &str = "\
eBPF/XDP VIP and health-check daemon (Maglev load balancer)
 vipd serves virtual IP addresses for bare-metal controllers, in place of
 HAProxy, keepalived and Pacemaker/Corosync. An XDP program on the NICs
 balances VIP traffic statelessly with Maglev consistent hashing straight to
 the backends (direct server return); userspace probes feed health verdicts
 into the BPF maps. In cluster mode the controllers agree by encrypted SWIM
 gossip and quorum which node owns each VIP address, with fencing hooks.
 .
 The package ships vipd, a hardened systemd unit (not enabled on install),
 man pages, shell completions, example configs, a Grafana dashboard and
 Prometheus alert rules.";

/// Builds the package (with `vipd`, or with a fresh release build) and returns its path.
pub fn dist(vipd: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let ws = crate::setup::workspace_root()?;
    let vipd = match vipd {
        Some(path) => path,
        None => {
            crate::build()?;
            ws.join("target/release/vipd")
        }
    };
    let version = env!("CARGO_PKG_VERSION");
    // A VIP_EBPF_STUB build embeds an empty XDP object (FNV-1a 64 of nothing): never ship it.
    let vipd_version = output(Command::new(&vipd).arg("--version"))?;
    if !vipd_version.starts_with(&format!("vipd {version} ")) {
        bail!("{} is not vipd {version}: {vipd_version}", vipd.display());
    }
    if vipd_version.contains("bpf fnv1a64 cbf29ce484222325") {
        bail!("{} embeds the empty VIP_EBPF_STUB object", vipd.display());
    }
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let arch = arch.trim();
    let out_dir = ws.join("target/dist");
    // dpkg-shlibdeps wants a debian/control beside the package tree it is looking at.
    let root = out_dir.join("debian").join(PACKAGE);
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("remove {}", root.display()))?;
    }
    fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
    fs::write(out_dir.join("debian/control"), "")?;

    for &(src, dest) in LAYOUT {
        let dest = root.join(dest);
        stage(src, &ws, &vipd, version, &dest)
            .with_context(|| format!("stage {}", dest.display()))?;
    }
    let depends = output(
        Command::new("dpkg-shlibdeps")
            .current_dir(&out_dir)
            .args(["-O", "--warnings=0"])
            .arg(root.join("usr/sbin/vipd")),
    )?;
    let depends = depends
        .trim()
        .strip_prefix("shlibs:Depends=")
        .with_context(|| format!("dpkg-shlibdeps printed {depends:?}"))?;
    let control = format!(
        "Package: {PACKAGE}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: {}\n\
         Installed-Size: {}\nDepends: {depends}\nSection: net\nPriority: optional\n\
         Description: {DESCRIPTION}\n",
        maintainer(),
        installed_size_kib(&root)?,
    );
    fs::write(root.join("DEBIAN/control"), control)?;
    write_md5sums(&root)?;
    fix_dir_modes(&root)?;

    let deb = out_dir.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    crate::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&root)
            .arg(&deb),
    )?;
    Ok(deb)
}

fn stage(src: Src, ws: &Path, vipd: &Path, version: &str, dest: &Path) -> anyhow::Result<()> {
    let parent = dest.parent().context("no parent")?;
    fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    let mut mode = 0o644;
    match src {
        Src::Vipd => {
            // As dh_strip does; the XDP object is data inside .rodata and keeps its BTF.
            crate::run(
                Command::new("strip")
                    .args(["--remove-section=.comment", "--remove-section=.note"])
                    .arg("--strip-unneeded")
                    .arg(vipd)
                    .arg("-o")
                    .arg(dest),
            )?;
            mode = 0o755;
        }
        Src::ManPages => {
            let tmp = ws.join("target/dist/man");
            let _ = fs::remove_dir_all(&tmp);
            output(Command::new(vipd).arg("man").arg(&tmp))?;
            fs::create_dir_all(dest)?;
            for entry in fs::read_dir(&tmp)? {
                let page = entry?.path();
                let stem = page.file_stem().context("page name")?.to_string_lossy();
                let text = section_8(&fs::read_to_string(&page)?);
                gzip(text.as_bytes(), &dest.join(format!("{stem}.8.gz")))?;
            }
            return Ok(());
        }
        Src::Completion(shell) => {
            fs::write(
                dest,
                output(Command::new(vipd).args(["completions", shell]))?,
            )?;
        }
        Src::Unit(path) => fs::write(dest, packaged_unit(&read(ws, path)?)?)?,
        Src::Copy(path) => {
            fs::copy(ws.join(path), dest).with_context(|| format!("copy {path}"))?;
        }
        Src::Script(path) => {
            fs::copy(ws.join(path), dest).with_context(|| format!("copy {path}"))?;
            mode = 0o755;
        }
        Src::Gzip(path) => gzip(read(ws, path)?.as_bytes(), dest)?,
        Src::Changelog => gzip(changelog(ws, version)?.as_bytes(), dest)?,
        Src::Dir => {
            fs::create_dir_all(dest)?;
            return Ok(());
        }
    }
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A `vipd man` page (section 1) as section 8: the `.TH` line and the `vipd-*(1)` references.
fn section_8(page: &str) -> String {
    let mut out = String::with_capacity(page.len());
    for line in page.lines() {
        let line = match line.strip_prefix(".TH ") {
            Some(rest) => format!(".TH {}", rest.replacen(" 1 ", " 8 ", 1)),
            None if line.starts_with("vipd") && line.ends_with("(1)") => {
                format!("{}(8)", &line[..line.len() - 3])
            }
            None => line.to_owned(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

fn read(ws: &Path, path: &str) -> anyhow::Result<String> {
    fs::read_to_string(ws.join(path)).with_context(|| format!("read {path}"))
}

/// packaging/vipd.service for /usr/sbin/vipd: its opening comment (manual install steps)
/// dropped, and docs pointing at what the package installs.
fn packaged_unit(unit: &str) -> anyhow::Result<String> {
    let start = unit.find("[Unit]").context("no [Unit] section")?;
    let doc = "Documentation=file:///usr/share/doc/vip-fabric/README.md\n";
    if !unit.contains("/usr/local/sbin/vipd ") || !unit.contains(doc) {
        bail!("packaging/vipd.service changed: update packaged_unit() in xtask/src/dist.rs");
    }
    Ok(unit[start..]
        .replace("/usr/local/sbin/vipd ", "/usr/sbin/vipd ")
        .replace(
            doc,
            "Documentation=man:vipd(8) file:///usr/share/doc/vip-fabric/operations.md.gz\n",
        ))
}

/// Maintainer: DEBFULLNAME/DEBEMAIL, as Debian tools read them, or the project's.
fn maintainer() -> String {
    let name = std::env::var("DEBFULLNAME").unwrap_or_else(|_| "vip-fabric maintainers".into());
    let mail =
        std::env::var("DEBEMAIL").unwrap_or_else(|_| "maintainers@vip-fabric.invalid".into());
    format!("{name} <{mail}>")
}

/// A native package's changelog: one entry for this version, dated by the commit built.
fn changelog(ws: &Path, version: &str) -> anyhow::Result<String> {
    let log = output(
        Command::new("git")
            .current_dir(ws)
            .args(["log", "-1", "--format=%h%n%aD"]),
    )?;
    let (commit, date) = log.trim().split_once('\n').context("git log output")?;
    Ok(format!(
        "{PACKAGE} ({version}) unstable; urgency=medium\n\n  \
         * Built from git commit {commit}; the changes are in the git history.\n\n \
         -- {}  {date}\n",
        maintainer()
    ))
}

fn gzip(data: &[u8], dest: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    // -n: no name or timestamp in the header, so the same input gives the same bytes.
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(fs::File::create(dest)?)
        .spawn()
        .context("spawn gzip")?;
    child.stdin.take().context("gzip stdin")?.write_all(data)?;
    if !child.wait()?.success() {
        bail!("gzip {} failed", dest.display());
    }
    fs::set_permissions(dest, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Installed-Size in KiB, as dpkg-gencontrol counts: each file rounded up, one per directory.
fn installed_size_kib(dir: &Path) -> anyhow::Result<u64> {
    let mut kib = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == "DEBIAN" {
            continue;
        }
        let meta = entry.metadata()?;
        kib += if meta.is_dir() {
            1 + installed_size_kib(&entry.path())?
        } else {
            meta.len().div_ceil(1024)
        };
    }
    Ok(kib)
}

/// DEBIAN/md5sums, as dh_md5sums writes it (dpkg --verify reads it).
fn write_md5sums(root: &Path) -> anyhow::Result<()> {
    fn files(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                files(&path, root, out)?;
            } else {
                out.push(path.strip_prefix(root)?.to_owned());
            }
        }
        Ok(())
    }
    let mut list = Vec::new();
    for entry in fs::read_dir(root)? {
        let path = entry?.path();
        if path.is_dir() && !path.ends_with("DEBIAN") {
            files(&path, root, &mut list)?;
        }
    }
    list.sort();
    let sums = output(Command::new("md5sum").current_dir(root).args(&list))?;
    fs::write(root.join("DEBIAN/md5sums"), sums)?;
    Ok(())
}

/// Directories 0755 whatever the umask (lintian checks).
fn fix_dir_modes(dir: &Path) -> anyhow::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fix_dir_modes(&entry.path())?;
        }
    }
    Ok(())
}
