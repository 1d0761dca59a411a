//! `cargo xtask setup [--bench]`: idempotent installation of what the build and tests need.
//! Each step checks first and says whether it did anything; a step that cannot be done says
//! what is missing and how to fix it.
//!
//! Setup installs tools, it does not run or enable daemons: this may be a real controller
//! that already runs (or must not run) HAProxy, keepalived or Prometheus. The packages it
//! installs that ship services (prometheus, for promtool; haproxy and keepalived) are
//! installed with a policy-rc.d that forbids starting them, and every unit of
//! [`SERVICE_UNITS`] that the install enabled (Debian's postinst enables new services) and
//! that was not enabled before is disabled again with `systemctl disable`, which works
//! without systemd running (offline, as in a container). HAProxy, keepalived and wrk are only
//! for the lab's benches: plain `setup` (also run by `cargo xtask test` and `lab`) leaves
//! them out, `setup --bench` (run by `cargo xtask bench throughput|failover|changes|memory`)
//! adds them. The test suite needs none of them.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the build, the tests and the lab use.
const APT_PACKAGES: &[&str] = &[
    "bpftool",
    "iproute2",
    "ethtool",
    "tcpdump",
    "iputils-ping",
    "iputils-arping",
    "procps",
    "curl",
    "nftables",
    // promtool, for the metrics tests (`promtool check metrics`, `promtool test rules`).
    // Its service is neither started nor left enabled (see the module doc).
    "prometheus",
    // `cargo xtask dist` (dpkg-shlibdeps, strip) and the package test (lintian).
    "dpkg-dev",
    "binutils",
    "lintian",
    // Routed VIPs (`announce = "bgp"`, issue 18): the lab's and tests' routers and each
    // controller's BGP speaker (zebra, bgpd, bfdd), run by them in namespaces; the
    // package's own service is neither started nor left enabled.
    "frr",
];

/// Only for the lab's benches (`setup --bench`): they race vip-fabric against HAProxy +
/// keepalived, driven by wrk.
const BENCH_APT_PACKAGES: &[&str] = &["haproxy", "keepalived", "wrk"];

/// The services the packages above ship. Whichever of them an install enables and was not
/// enabled before is disabled again.
const SERVICE_UNITS: &[&str] = &[
    "prometheus.service",
    "haproxy.service",
    "keepalived.service",
    "frr.service",
];

/// While alive, `/usr/sbin/policy-rc.d` answers 101 (action forbidden), so packages installed
/// meanwhile (prometheus, haproxy, keepalived) do not start or restart their services here:
/// setup installs tools, it does not run daemons. An existing policy-rc.d is left alone.
struct NoServiceStarts(Option<&'static Path>);

impl NoServiceStarts {
    fn new() -> anyhow::Result<Self> {
        let path = Path::new("/usr/sbin/policy-rc.d");
        if path.exists() {
            return Ok(Self(None));
        }
        std::fs::write(
            path,
            "#!/bin/sh\n# cargo xtask setup: no service starts\nexit 101\n",
        )
        .with_context(|| format!("write {}", path.display()))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", path.display()))?;
        Ok(Self(Some(path)))
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub fn workspace_root() -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    Ok(dir.parent().context("xtask has no parent dir")?.to_owned())
}

/// `bench`: also what the lab's benches need (HAProxy, keepalived, wrk).
pub fn run(bench: bool) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    step("rust-src component", ensure_rust_src)?;
    step("apt packages", || ensure_apt_packages(APT_PACKAGES))?;
    if bench {
        step("apt packages for the benches", || {
            ensure_apt_packages(BENCH_APT_PACKAGES)
        })?;
    }
    step("bpf-linker", ensure_bpf_linker)?;
    step("bpffs on /sys/fs/bpf", ensure_bpffs)?;
    eprintln!("setup: done in {:.1?}", started.elapsed());
    Ok(())
}

fn step(name: &str, f: impl FnOnce() -> anyhow::Result<String>) -> anyhow::Result<()> {
    let outcome = f().with_context(|| format!("setup step `{name}` failed"))?;
    eprintln!("setup: {name}: {outcome}");
    Ok(())
}

/// A command's stdout, or an error with its stderr (shared with `dist`).
pub(crate) fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("spawn {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_loud(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("setup: running {cmd:?}");
    let status = cmd.status().with_context(|| format!("spawn {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn ensure_rust_src() -> anyhow::Result<String> {
    let installed = output(Command::new("rustup").args(["component", "list", "--installed"]))
        .context("rustup is needed to add the rust-src component")?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok("already installed".into());
    }
    run_loud(Command::new("rustup").args(["component", "add", "rust-src"]))?;
    Ok("installed".into())
}

fn ensure_apt_packages(packages: &[&str]) -> anyhow::Result<String> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|pkg| {
            Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", pkg])
                .output()
                .map(|o| !String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return Ok(format!("all {} present", packages.len()));
    }
    if !is_root() {
        bail!(
            "missing {}: run `cargo xtask setup` as root, or `apt-get install {}`",
            missing.join(" "),
            missing.join(" ")
        );
    }
    run_loud(Command::new("apt-get").args(["update", "-q"]))?;
    let enabled_before = Units::enabled(None, SERVICE_UNITS);
    {
        let _no_starts = NoServiceStarts::new()?;
        run_loud(
            Command::new("apt-get")
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing),
        )?;
    }
    let disabled = disable_newly_enabled(None, SERVICE_UNITS, &enabled_before)?;
    let mut outcome = format!("installed {}", missing.join(" "));
    if !disabled.is_empty() {
        outcome += &format!(
            "; disabled the units the install enabled: {}",
            disabled.join(" ")
        );
    }
    Ok(outcome)
}

/// Which of some units are enabled, as `systemctl [--root ROOT] is-enabled` says; `None` when
/// there is no systemctl (then nothing can start them at boot either).
struct Units;

impl Units {
    fn systemctl(root: Option<&Path>) -> Command {
        let mut cmd = Command::new("systemctl");
        if let Some(root) = root {
            cmd.arg("--root").arg(root);
        }
        cmd
    }

    fn enabled(root: Option<&Path>, units: &[&str]) -> Option<Vec<String>> {
        let mut enabled = Vec::new();
        for unit in units {
            // "enabled", "disabled", "static", "masked"...; an unknown unit fails.
            let out = Self::systemctl(root)
                .args(["is-enabled", unit])
                .output()
                .ok()?;
            if String::from_utf8_lossy(&out.stdout).trim() == "enabled" {
                enabled.push((*unit).to_owned());
            }
        }
        Some(enabled)
    }
}

/// Disables each of `units` that is enabled now and was not in `before`; returns those. Works
/// without a running systemd (`systemctl disable` then edits the unit links offline).
fn disable_newly_enabled(
    root: Option<&Path>,
    units: &[&str],
    before: &Option<Vec<String>>,
) -> anyhow::Result<Vec<String>> {
    let (Some(before), Some(now)) = (before, Units::enabled(root, units)) else {
        eprintln!("setup: no systemctl: service units left as the packages installed them");
        return Ok(Vec::new());
    };
    let new: Vec<String> = now.into_iter().filter(|u| !before.contains(u)).collect();
    for unit in &new {
        output(Units::systemctl(root).args(["disable", unit.as_str()]))?;
    }
    Ok(new)
}

/// The LLVM shared library inside the active toolchain, e.g. `libLLVM.so.22.1-rust-1.95.0-stable`,
/// and its major version.
fn toolchain_llvm() -> anyhow::Result<(PathBuf, String, u32)> {
    let sysroot = output(Command::new("rustc").args(["--print", "sysroot"]))?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let name = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("read {}", lib_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
    let major = name
        .trim_start_matches("libLLVM.so.")
        .split(['.', '-'])
        .next()
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("cannot read the LLVM major version from {name}"))?;
    Ok((lib_dir, name, major))
}

/// Where bpf-linker for the active toolchain lives: outside the clone, so that later runs on
/// the same machine reuse it; keyed by the LLVM library so a toolchain change rebuilds it.
fn bpf_linker_root() -> anyhow::Result<PathBuf> {
    let (_, llvm, _) = toolchain_llvm()?;
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    Ok(cache
        .join("vip-fabric")
        .join(format!("bpf-linker-{BPF_LINKER_VERSION}-{llvm}")))
}

fn bpf_linker_works(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn ensure_bpf_linker() -> anyhow::Result<String> {
    let root = bpf_linker_root()?;
    let bin = root.join("bin/bpf-linker");
    if bpf_linker_works(&bin) {
        return Ok(format!("already built at {}", bin.display()));
    }
    let (lib_dir, llvm, major) = toolchain_llvm()?;
    // bpf-linker links against libLLVM by the plain name; point both names at the library
    // that ships inside the rust toolchain, so compiler and linker share one LLVM.
    let prefix = root.join("llvm");
    std::fs::create_dir_all(prefix.join("lib"))?;
    for link in ["libLLVM.so".to_owned(), llvm.clone()] {
        let path = prefix.join("lib").join(&link);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(lib_dir.join(&llvm), &path)
            .with_context(|| format!("symlink {}", path.display()))?;
    }
    run_loud(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                "--locked",
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
                "--root",
            ])
            .arg(&root),
    )?;
    if !bpf_linker_works(&bin) {
        bail!("{} was installed but does not run", bin.display());
    }
    Ok(format!("built against {llvm} at {}", bin.display()))
}

fn ensure_bpffs() -> anyhow::Result<String> {
    let fs_type = output(Command::new("stat").args(["-f", "-c", "%T", "/sys/fs/bpf"]))?;
    if fs_type.trim() == "bpf_fs" {
        return Ok("already mounted".into());
    }
    if !is_root() {
        bail!("/sys/fs/bpf is not a bpffs; as root: mount -t bpf bpf /sys/fs/bpf");
    }
    run_loud(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    Ok("mounted".into())
}

/// Fails with a clear message when bpf-linker is not installed yet.
pub fn require_built_toolchain() -> anyhow::Result<()> {
    let bin = bpf_linker_root()?.join("bin/bpf-linker");
    if !bpf_linker_works(&bin) {
        bail!(
            "bpf-linker is not installed at {}: run `cargo xtask setup` first",
            bin.display()
        );
    }
    Ok(())
}

/// `PATH` with the bpf-linker directory in front.
pub fn path_with_bpf_linker() -> anyhow::Result<OsString> {
    let mut dirs = vec![bpf_linker_root()?.join("bin")];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    Ok(std::env::join_paths(dirs)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a scratch root: a unit enabled by an "install" is disabled again, one enabled before
    /// stays enabled, an absent one is ignored.
    #[test]
    fn units_the_install_enabled_are_disabled_and_others_left_alone() {
        if Command::new("systemctl").arg("--version").output().is_err() {
            eprintln!("SKIPPED: no systemctl");
            return;
        }
        let root = std::env::temp_dir().join(format!("xtask-units-{}", std::process::id()));
        let dir = root.join("etc/systemd/system");
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["pkg-new", "pkg-old"] {
            std::fs::write(
                dir.join(format!("{name}.service")),
                "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
            )
            .unwrap();
        }
        let units = &["pkg-new.service", "pkg-old.service", "absent.service"];
        let systemctl = |args: &[&str]| output(Units::systemctl(Some(&root)).args(args)).unwrap();
        systemctl(&["enable", "pkg-old.service"]);
        let before = Units::enabled(Some(&root), units);
        assert_eq!(before, Some(vec!["pkg-old.service".to_owned()]));
        // What a package's postinst does.
        systemctl(&["enable", "pkg-new.service"]);
        let disabled = disable_newly_enabled(Some(&root), units, &before).unwrap();
        let after = Units::enabled(Some(&root), units);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(disabled, ["pkg-new.service"]);
        assert_eq!(after, Some(vec!["pkg-old.service".to_owned()]));
    }
}
