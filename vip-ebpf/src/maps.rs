//! The only map statics of the program, typed from `vip_common::maps`.
use aya_ebpf::{btf_maps::PerCpuArray, macros::btf_map};
use vip_common::maps::{reason, Counter};

#[btf_map]
pub static STATS: PerCpuArray<Counter, { reason::COUNT as usize }> = PerCpuArray::new();
