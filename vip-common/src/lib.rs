//! The contract between the XDP program (`vip-ebpf`) and `vipd`: map names and sizes, the
//! `#[repr(C)]` key/value types stored in them, wire constants, and the pure functions both
//! sides must compute identically (flow hash, Maglev slot, outer headers). `no_std`, no
//! allocation, so the eBPF crate can use every item.
#![no_std]

pub mod encap;
pub mod flow;
pub mod icmp;
pub mod maps;
pub mod wire;
