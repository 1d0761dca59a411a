//! Builds the XDP object (crate `vip-ebpf`) with aya-build and the machine's own stable
//! toolchain, so that the eBPF bitcode and bpf-linker share one LLVM. The object is embedded
//! into vipd with `include_bytes_aligned!`.
use std::{env, path::Path};

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
    if which_bpf_linker().is_none() {
        anyhow::bail!(
            "bpf-linker is not on PATH: run `cargo xtask setup` (it installs bpf-linker) and \
             build through `cargo xtask build|test`, or add its bin directory to PATH"
        );
    }
    // -Z build-std=core on the stable toolchain; aya-build scopes it to the inner eBPF build.
    // SAFETY: build scripts are single-threaded.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    let toolchain = env::var("VIP_EBPF_TOOLCHAIN").unwrap_or_else(|_| "stable".to_owned());
    println!("cargo:rerun-if-env-changed=VIP_EBPF_TOOLCHAIN");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "vip-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )?;
    object_hash(&object)
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

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join("bpf-linker"))
        .find(|p| p.is_file())
}
