//! `cargo xtask setup`: idempotent installation of what the build and tests need. Each step
//! checks first and says whether it did anything; a step that cannot be done says what is
//! missing and how to fix it.
use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests and the lab use.
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
    // The lab's benches race vip-fabric against these, driven by wrk.
    "haproxy",
    "keepalived",
    "wrk",
    // promtool, for the metrics tests (`promtool check metrics`, `promtool test rules`).
    // Its service is not started: see `NoServiceStarts`.
    "prometheus",
    // `cargo xtask dist` (dpkg-shlibdeps, strip) and the package test (lintian).
    "dpkg-dev",
    "binutils",
    "lintian",
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

pub fn run() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    step("rust-src component", ensure_rust_src)?;
    step("apt packages", ensure_apt_packages)?;
    step("bpf-linker", ensure_bpf_linker)?;
    step("bpffs on /sys/fs/bpf", ensure_bpffs)?;
    eprintln!("setup: done in {:.1?}", started.elapsed());
    Ok(())
}

fn step(name: &str, f: fn() -> anyhow::Result<String>) -> anyhow::Result<()> {
    let outcome = f().with_context(|| format!("setup step `{name}` failed"))?;
    eprintln!("setup: {name}: {outcome}");
    Ok(())
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
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

fn ensure_apt_packages() -> anyhow::Result<String> {
    let missing: Vec<&str> = APT_PACKAGES
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
        return Ok(format!("all {} present", APT_PACKAGES.len()));
    }
    if !is_root() {
        bail!(
            "missing {}: run `cargo xtask setup` as root, or `apt-get install {}`",
            missing.join(" "),
            missing.join(" ")
        );
    }
    run_loud(Command::new("apt-get").args(["update", "-q"]))?;
    let _no_starts = NoServiceStarts::new()?;
    run_loud(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing),
    )?;
    Ok(format!("installed {}", missing.join(" ")))
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
