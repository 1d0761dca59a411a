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
    // Check-only builds (clippy) do not need the real object: an empty stand-in saves a full
    // eBPF build. Never set this for a build that runs.
    if env::var_os("VIP_EBPF_STUB").is_some_and(|v| v == "1") {
        let out = Path::new(&env::var("OUT_DIR")?).join("vip-xdp");
        std::fs::write(out, [])?;
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
    )
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join("bpf-linker"))
        .find(|p| p.is_file())
}
