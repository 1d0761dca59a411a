//! Builds the XDP object (crate `vip-ebpf`) with the machine's own stable toolchain, so that
//! the eBPF bitcode and bpf-linker share one LLVM, the way aya-build does but quietly (see
//! `build_ebpf`). The object is embedded into vipd with `include_bytes_aligned!`.
use std::{env, path::Path, process::Command};

fn main() -> anyhow::Result<()> {
    let manifest_dir = env::var("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../vip-ebpf");
    let ebpf_dir = ebpf_dir.to_str().expect("utf-8 path");
    println!("cargo:rerun-if-changed=../vip-common/src");
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rerun-if-env-changed=VIP_EBPF_STUB");
    git_commit(&manifest_dir);
    let object = Path::new(&env::var("OUT_DIR")?).join("vip-xdp");
    // Check-only builds (clippy) do not need the real object: an empty stand-in saves a full
    // eBPF build. Never set this for a build that runs.
    if env::var_os("VIP_EBPF_STUB").is_some_and(|v| v == "1") {
        std::fs::write(&object, [])?;
        object_hash(&object)?;
        return Ok(());
    }
    if which("bpf-linker").is_none() {
        anyhow::bail!(
            "bpf-linker is not on PATH: run `cargo xtask setup` (it installs bpf-linker) and \
             build through `cargo xtask build|test`, or add its bin directory to PATH"
        );
    }
    let toolchain = env::var("VIP_EBPF_TOOLCHAIN").unwrap_or_else(|_| "stable".to_owned());
    println!("cargo:rerun-if-env-changed=VIP_EBPF_TOOLCHAIN");
    println!("cargo:rerun-if-changed={ebpf_dir}");
    build_ebpf(ebpf_dir, &toolchain, &object)?;
    object_hash(&object)
}

/// Builds the `vip-xdp` binary of `vip-ebpf` into `object`, as aya-build 0.2 does (same
/// command, flags and target dir) but quietly: aya-build forwards every line of the inner
/// cargo as a `cargo:warning`, which cargo replays on every later build, even a no-op one.
/// Here the inner cargo runs with `--quiet`; its output is shown whole when it fails, and
/// when it succeeds only what it still prints under `--quiet` (real compiler warnings) is
/// forwarded.
fn build_ebpf(ebpf_dir: &str, toolchain: &str, object: &Path) -> anyhow::Result<()> {
    let endian = env::var("CARGO_CFG_TARGET_ENDIAN")?;
    let target = match endian.as_str() {
        "little" => "bpfel-unknown-none",
        "big" => "bpfeb-unknown-none",
        other => anyhow::bail!("unsupported target endian {other}"),
    };
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    let arch = if arch.starts_with("riscv64") {
        "riscv64"
    } else {
        &arch
    };
    // `rustup run TOOLCHAIN cargo` when rustup is there (the eBPF bitcode must come from the
    // rustc whose LLVM bpf-linker uses), plain cargo otherwise.
    let mut cmd = match which("rustup") {
        Some(rustup) => {
            let mut cmd = Command::new(rustup);
            cmd.args(["run", toolchain, "cargo"]);
            cmd
        }
        None => Command::new("cargo"),
    };
    let target_dir = Path::new(&env::var("OUT_DIR")?).join("aya-build/target/vip-ebpf");
    cmd.current_dir(ebpf_dir)
        .args([
            "build",
            "--quiet",
            "--package",
            "vip-ebpf",
            "--bins",
            "--release",
        ])
        .args(["--target", target, "-Z", "build-std=core", "--target-dir"])
        .arg(&target_dir)
        // -Z build-std on the stable toolchain, for this inner build only.
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{arch}\"\x1f-Cdebuginfo=2\x1f-Clink-arg=--btf"),
        )
        // The outer build's compiler and wrapper would not be the toolchain's own.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    let out = cmd
        .output()
        .map_err(|e| anyhow::anyhow!("spawn {cmd:?}: {e}"))?;
    if !out.status.success() {
        for stream in [&out.stdout, &out.stderr] {
            eprint!("{}", String::from_utf8_lossy(stream));
        }
        anyhow::bail!("the eBPF build failed ({}): {cmd:?}", out.status);
    }
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        if !line.trim().is_empty() {
            println!("cargo:warning={line}");
        }
    }
    let built = target_dir.join(target).join("release/vip-xdp");
    std::fs::copy(&built, object)
        .map_err(|e| anyhow::anyhow!("copy {} to {}: {e}", built.display(), object.display()))?;
    Ok(())
}

/// `VIPD_GIT_COMMIT` for `vipd --version`: `git rev-parse --short HEAD` of the source tree, or
/// "unknown" (a tarball, no git). Re-run when HEAD or the branch it names moves.
fn git_commit(manifest_dir: &str) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(manifest_dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    println!(
        "cargo:rustc-env=VIPD_GIT_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
    if commit.is_some() {
        let mut watch = vec!["HEAD".to_owned()];
        watch.extend(git(&["symbolic-ref", "-q", "HEAD"]));
        for name in watch {
            // A ref only in packed-refs has no file: watching a missing path would re-run
            // this script (and the eBPF build) on every build.
            if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name])
                .filter(|p| Path::new(p).is_file())
            {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
}

/// `VIPD_BPF_FNV` for `vipd --version`: FNV-1a 64 of the XDP object embedded in vipd.
fn object_hash(object: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(object)?;
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    println!("cargo:rustc-env=VIPD_BPF_FNV={hash:016x}");
    Ok(())
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
