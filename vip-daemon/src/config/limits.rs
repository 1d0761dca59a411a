//! `[limits]`: the data plane's capacities. Each key set must leave room for what the file
//! itself needs; a key left out is derived from the file when vipd first creates its maps
//! (`Config::default_limits`) and kept from then on.
use super::diag::Ctx;
use super::locate::FieldPath;
use super::raw::RawLimits;
use super::types::{Config, LimitSettings};

/// Largest accepted values: far above any controller, low enough that a typo cannot ask the
/// kernel for gigabytes.
const MAX_VIPS: i64 = 65_536;
const MAX_BACKENDS: i64 = 1 << 20;
const MAX_TABLE_SLOTS: i64 = 1 << 27;
const MAX_FLOWS: i64 = 1 << 24;
const MAX_MEMORY_MIB: i64 = 1 << 20;

pub(crate) fn limits(raw: &RawLimits, config: &Config, cx: &mut Ctx) -> LimitSettings {
    let at = FieldPath::root().key("limits");
    let (vips, backends, slots) = config.needs();
    let mut key = |v: Option<i64>, name: &str, max: i64, needs: u32, what: &str| -> Option<u32> {
        let path = at.key(name);
        let n = cx.int(v, &path, 1..=max, &format!("an integer 1..={max}"))? as u32;
        if n < needs {
            let msg = format!(
                "{n} is less than this file needs: {needs} {what}; use at least {needs} \
                 (twice that leaves room for live changes)"
            );
            cx.error(&path, msg);
            return None;
        }
        Some(n)
    };
    LimitSettings {
        vips: key(raw.vips, "vips", MAX_VIPS, vips, "VIPs"),
        backends: key(raw.backends, "backends", MAX_BACKENDS, backends, "backends"),
        table_slots: key(
            raw.table_slots,
            "table_slots",
            MAX_TABLE_SLOTS,
            slots,
            "slots (two generations of every VIP's table, and of its fallback table)",
        ),
        flows: key(raw.flows, "flows", MAX_FLOWS, 1, "entry"),
        memory_mib: key(raw.memory_mib, "memory_mib", MAX_MEMORY_MIB, 1, "MiB"),
    }
}

/// `[limits] memory_mib`: the config's estimated cost (`core::budget`, maps made with the
/// limits of a first start) must fit.
pub(crate) fn check_memory(config: &Config, cx: &mut Ctx) {
    let Some(cap) = config.limits.memory_mib else {
        return;
    };
    let cost = crate::core::budget::estimate(config, &config.default_limits(), cpus());
    let mib = |b: u64| b.div_ceil(1 << 20);
    if mib(cost.total()) > u64::from(cap) {
        let msg = format!(
            "this file needs about {} MiB (maps {} MiB + vipd about {} MiB), over the cap of \
             {cap} MiB: raise it, or lower table_size, the VIP count or [limits]",
            mib(cost.total()),
            mib(cost.maps),
            mib(cost.vipd)
        );
        cx.error(&FieldPath::root().key("limits").key("memory_mib"), msg);
    }
}

/// CPUs the per-CPU maps are counted for (as `vipd status` counts them).
pub fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Limits};

    const BASE: &str = "[node]\nname = \"ctl1\"\ninterfaces = [\"eth0\"]\n\
        [[vip]]\nname = \"web\"\naddress = \"192.0.2.100\"\nport = 80\ntable_size = 251\n\
        [[vip.backend]]\nname = \"a\"\naddress = \"192.0.2.11\"\n";

    #[test]
    fn defaults_leave_room_and_keys_override() {
        let c = parse(BASE, "t.toml").unwrap();
        assert_eq!(
            c.default_limits(),
            Limits {
                vips: 16,
                backends: 64,
                table_slots: 502 + 4 * 65537,
                flows: 65_536
            }
        );
        let c = parse(
            &format!("[limits]\nvips = 3\nflows = 100\n{BASE}"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            (c.default_limits().vips, c.default_limits().flows),
            (3, 100)
        );
        assert!(c.fits(&c.default_limits()));
        let mut other = c.default_limits();
        other.vips = 4;
        assert!(!c.fits(&other), "an explicit key that differs does not fit");
    }

    #[test]
    fn a_limit_below_the_file_names_line_and_need() {
        let text = format!("[limits]\ntable_slots = 500\n{BASE}");
        let err = parse(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("t.toml:2"), "{err}");
        assert!(err.contains("limits.table_slots"), "{err}");
        assert!(err.contains("502"), "{err}");
    }

    #[test]
    fn a_config_over_its_memory_cap_is_refused_naming_the_cost() {
        // One VIP of the default 65537 slots: maps of at least 4 generations' slots (1 MiB)
        // plus vipd's base; a cap of 1 MiB cannot hold it, a generous one can.
        let big = BASE.replace("table_size = 251\n", "");
        let text = format!("[limits]\nmemory_mib = 1\n{big}");
        let err = parse(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("t.toml:2"), "{err}");
        assert!(err.contains("limits.memory_mib"), "{err}");
        assert!(err.contains("over the cap of 1 MiB"), "{err}");
        let text = format!("[limits]\nmemory_mib = 4096\n{big}");
        assert!(parse(&text, "t.toml").is_ok());
    }
}
