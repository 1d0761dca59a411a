//! What a config will cost in memory, before vipd runs it: the kernel's maps (from the
//! limits, `core::layout`) and vipd's own resident memory. `vipd validate` prints it and
//! `[limits] memory_mib` caps it.
//!
//! vipd's part is an estimate fitted to `cargo xtask bench memory` (50 VIPs x 10 backends at
//! 65537 slots: 39 MiB measured, 41 MiB estimated): a base for the runtime, one live copy of
//! each table (the image the shell writes from, 4 bytes a slot), the steps computed ahead
//! (`core::precompute`: every slot changes in about one "backend fewer" step, ~3 bytes) and
//! a per-backend share (prober, metrics series, status).
use crate::config::{Config, Limits, Selection};

/// Runtime, libraries, control and metrics servers, with no VIP.
const BASE_BYTES: u64 = 12 << 20;
/// Prober task, metrics series and bookkeeping of one backend.
const PER_BACKEND_BYTES: u64 = 12 << 10;
/// Steps computed ahead, per slot of a VIP that has them (see the module doc).
const STEP_BYTES_PER_SLOT: u64 = 3;
/// VIPs with more backends are not precomputed (`app::precompute`).
const PRECOMPUTE_MAX_BACKENDS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memory {
    /// Kernel memory of the maps.
    pub maps: u64,
    /// vipd's own resident memory, estimated.
    pub vipd: u64,
}

impl Memory {
    pub fn total(&self) -> u64 {
        self.maps + self.vipd
    }
}

/// The memory `config` costs with maps of `limits`, per-CPU maps counted `cpus` times.
pub fn estimate(config: &Config, limits: &Limits, cpus: u32) -> Memory {
    let maps = crate::core::plan::sizing(config, limits).map_bytes(cpus);
    let mut vipd = BASE_BYTES;
    for v in &config.vips {
        let slots = u64::from(v.table_size);
        vipd += 4 * slots + PER_BACKEND_BYTES * v.backends.len() as u64;
        if v.selection == Selection::Maglev && v.backends.len() <= PRECOMPUTE_MAX_BACKENDS {
            vipd += STEP_BYTES_PER_SLOT * slots;
        }
    }
    Memory { maps, vipd }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;

    fn config(vips: usize, backends: usize, table_size: Option<u32>) -> Config {
        let mut text = String::from("[node]\nname = \"n\"\ninterfaces = [\"eth0\"]\n");
        for i in 0..vips {
            let _ = write!(
                text,
                "[[vip]]\nname = \"v{i}\"\naddress = \"10.78.{}.{}\"\nport = 80\n",
                i / 200,
                i % 200 + 1
            );
            if let Some(m) = table_size {
                let _ = writeln!(text, "table_size = {m}");
            }
            for b in 0..backends {
                let _ = write!(
                    text,
                    "[[vip.backend]]\nname = \"b{b}\"\naddress = \"10.77.0.{}\"\n",
                    b + 10
                );
            }
        }
        crate::config::parse(&text, "t.toml").unwrap()
    }

    #[test]
    fn the_benchmark_shape_is_estimated_near_what_it_measured() {
        let c = config(50, 10, None);
        let m = estimate(&c, &c.default_limits(), 2);
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        // Measured by `bench memory`: vipd 39.4 MiB; maps 57.1 MiB.
        assert!((35.0..48.0).contains(&mib(m.vipd)), "{} MiB", mib(m.vipd));
        assert!((40.0..80.0).contains(&mib(m.maps)), "{} MiB", mib(m.maps));
    }

    #[test]
    fn smaller_tables_cost_less() {
        let big = config(10, 5, None);
        let small = config(10, 5, Some(4099));
        let cost = |c: &Config| estimate(c, &c.default_limits(), 2);
        assert!(cost(&small).vipd < cost(&big).vipd);
        assert!(cost(&small).maps < cost(&big).maps);
    }
}
