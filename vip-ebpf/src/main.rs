//! XDP programs of vip-fabric (and the cgroup programs balancing local clients). Built only for `bpfel-unknown-none` (by vip-daemon's build.rs);
//! on the host this compiles to an empty binary so `cargo build --workspace` keeps working.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod bare;
#[cfg(target_arch = "bpf")]
mod debug;
#[cfg(target_arch = "bpf")]
mod encap;
#[cfg(target_arch = "bpf")]
mod local_clients;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod pkt;
#[cfg(target_arch = "bpf")]
mod prog;
#[cfg(target_arch = "bpf")]
mod second_chance;
#[cfg(target_arch = "bpf")]
mod too_big;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never executed.
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

/// GPL-compatible licence so the verifier allows GPL-only helpers (e.g. `bpf_fib_lookup`).
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[used]
pub static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
