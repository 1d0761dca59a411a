//! Health checks: duration strings, the three layers a check is built from
//! (`[defaults.check]` < the VIP's `check` < the backend's `check`) and their validation.
//!
//! Timing keys (interval, timeout, rise, fall, jitter, and the flap damping keys
//! flap_suppress, flap_reuse, flap_half_life, flap_max_hold) fall through the layers one by
//! one.
//! Kind keys (kind, path, expect, host, tls_verify, command) do too, except that a table that
//! sets `kind` starts afresh: a backend `check = { kind = "tcp" }` under an http VIP check is
//! a plain TCP check, while `check = { path = "/healthz" }` keeps the VIP's kind and host.

use std::time::Duration;

use super::diag::Ctx;
use super::locate::FieldPath;
use super::raw::{RawCheck, RawTiming};
use super::types::{defaults, Check, CheckKind};
use crate::core::health::Damping;

/// Parses `"250ms"`, `"2s"` or `"1m"`: a non-negative integer and a unit (ms, s, m).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let hint = "expected an integer followed by ms, s or m, e.g. \"250ms\", \"2s\", \"1m\"";
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: {hint}"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        _ => return Err(format!("invalid duration {s:?}: {hint}")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("duration {s:?} is too long"))
}

/// Formats a duration the way it would be written in the file.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms != 0 && ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// A key of some layer: where it was set (None: built in) and its value (None: invalid,
/// already reported; it still hides the layers below, as the file intended).
#[derive(Debug, Clone)]
struct Setting<T = Duration> {
    value: Option<T>,
    at: Option<FieldPath>,
}

impl<T: Copy> Setting<T> {
    fn builtin(value: T) -> Option<Self> {
        Some(Self {
            value: Some(value),
            at: None,
        })
    }

    /// How specific the layer that set it is (deeper wins when reporting a conflict).
    fn depth(&self) -> usize {
        self.at.as_ref().map_or(0, FieldPath::len)
    }

    fn origin(&self) -> String {
        match &self.at {
            Some(p) => format!("set at {p}"),
            None => "built-in default".to_owned(),
        }
    }
}

/// Timing keys of one layer (None: not set in this layer).
#[derive(Debug, Clone, Default)]
pub(crate) struct Timing {
    interval: Option<Setting>,
    timeout: Option<Setting>,
    rise: Option<u32>,
    fall: Option<u32>,
    jitter: Option<f64>,
    flap_suppress: Option<Setting<u32>>,
    flap_reuse: Option<Setting<u32>>,
    flap_half_life: Option<Setting>,
    flap_max_hold: Option<Setting>,
}

impl Timing {
    /// The built-in defaults.
    pub fn builtin() -> Self {
        Self {
            interval: Setting::builtin(defaults::INTERVAL),
            timeout: Setting::builtin(defaults::TIMEOUT),
            rise: Some(defaults::RISE),
            fall: Some(defaults::FALL),
            jitter: Some(defaults::JITTER),
            flap_suppress: Setting::builtin(defaults::FLAP_SUPPRESS),
            flap_reuse: Setting::builtin(defaults::FLAP_REUSE),
            flap_half_life: Setting::builtin(defaults::FLAP_HALF_LIFE),
            flap_max_hold: Setting::builtin(defaults::FLAP_MAX_HOLD),
        }
    }

    /// Parses and range-checks the timing keys of the table at `at`; invalid values are
    /// reported.
    pub fn parse(cx: &mut Ctx, raw: &RawTiming, at: &FieldPath) -> Self {
        let mut duration = |key: &str, v: &Option<String>| {
            let path = at.key(key);
            let value = match parse_duration(v.as_deref()?) {
                Ok(d) if d.is_zero() => {
                    cx.error(&path, format!("{key} must be greater than 0, e.g. \"1s\""));
                    None
                }
                Ok(d) => Some(d),
                Err(e) => {
                    cx.error(&path, e);
                    None
                }
            };
            Some(Setting {
                value,
                at: Some(path),
            })
        };
        let interval = duration("interval", &raw.interval);
        let timeout = duration("timeout", &raw.timeout);
        let flap_half_life = duration("flap_half_life", &raw.flap_half_life);
        let flap_max_hold = duration("flap_max_hold", &raw.flap_max_hold);
        let count = "an integer >= 1 (consecutive probe results needed to change state)";
        let rise = cx.int(raw.rise, &at.key("rise"), 1..=i64::from(u32::MAX), count);
        let fall = cx.int(raw.fall, &at.key("fall"), 1..=i64::from(u32::MAX), count);
        let jitter = raw.jitter.filter(|j| {
            let ok = (0.0..=0.5).contains(j);
            if !ok {
                let msg = format!(
                    "{j} is out of range: expected a fraction of the interval in 0.0..=0.5"
                );
                cx.error(&at.key("jitter"), msg);
            }
            ok
        });
        let to_u32 = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
        let mut threshold = |key: &str, v: Option<i64>, min: i64, valid: &str| {
            let path = at.key(key);
            v.map(|_| Setting {
                value: to_u32(cx.int(v, &path, min..=MAX_FLAP_THRESHOLD, valid)),
                at: Some(path),
            })
        };
        let flap_suppress = threshold(
            "flap_suppress",
            raw.flap_suppress,
            0,
            "0 (flap damping off) or the penalty at which a flapping backend is held down, \
             in transitions (each adds 1, halving every flap_half_life), e.g. 4",
        );
        let flap_reuse = threshold(
            "flap_reuse",
            raw.flap_reuse,
            1,
            "the penalty below which a held-down backend may return, an integer >= 1, e.g. 2",
        );
        let (rise, fall) = (to_u32(rise), to_u32(fall));
        Self {
            interval,
            timeout,
            rise,
            fall,
            jitter,
            flap_suppress,
            flap_reuse,
            flap_half_life,
            flap_max_hold,
        }
    }

    /// `self` layered over `base`: keys set here win.
    pub fn over(&self, base: &Timing) -> Timing {
        Timing {
            interval: self.interval.clone().or_else(|| base.interval.clone()),
            timeout: self.timeout.clone().or_else(|| base.timeout.clone()),
            rise: self.rise.or(base.rise),
            fall: self.fall.or(base.fall),
            jitter: self.jitter.or(base.jitter),
            flap_suppress: self
                .flap_suppress
                .clone()
                .or_else(|| base.flap_suppress.clone()),
            flap_reuse: self.flap_reuse.clone().or_else(|| base.flap_reuse.clone()),
            flap_half_life: self
                .flap_half_life
                .clone()
                .or_else(|| base.flap_half_life.clone()),
            flap_max_hold: self
                .flap_max_hold
                .clone()
                .or_else(|| base.flap_max_hold.clone()),
        }
    }

    /// Checks timeout <= interval once layered over the built-in defaults, reporting at the
    /// more specific of the two keys (the caller de-duplicates repeats).
    pub fn check_timeout(&self, cx: &mut Ctx) {
        let full = self.over(&Timing::builtin());
        let (Some(interval), Some(timeout)) = (full.interval, full.timeout) else {
            return;
        };
        let (Some(i), Some(t)) = (interval.value, timeout.value) else {
            return; // an invalid value: already reported
        };
        if t <= i {
            return;
        }
        let (at, other, other_origin) = if timeout.depth() >= interval.depth() {
            (timeout.at, "interval", interval.origin())
        } else {
            (interval.at, "timeout", timeout.origin())
        };
        let msg = format!(
            "timeout {} is longer than interval {} ({other}: {other_origin}); the timeout must be \
             at most the interval, e.g. timeout = \"1s\" with interval = \"2s\"",
            fmt_duration(t),
            fmt_duration(i),
        );
        if let Some(at) = at {
            cx.error(&at, msg);
        }
    }

    /// Checks the flap damping keys against each other once layered over the built-in
    /// defaults: reuse below suppress (else a held backend would be released at once, or
    /// never be held), and a max hold no shorter than the shortest hold (the decay from
    /// suppress to reuse; a shorter one would cap the penalty below suppress and disable
    /// damping in disguise). Reported at the most specific key involved (the caller
    /// de-duplicates repeats).
    pub fn check_damping(&self, cx: &mut Ctx) {
        let full = self.over(&Timing::builtin());
        let (Some(suppress), Some(reuse), Some(half_life), Some(max_hold)) = (
            full.flap_suppress,
            full.flap_reuse,
            full.flap_half_life,
            full.flap_max_hold,
        ) else {
            return;
        };
        let (Some(s), Some(r), Some(h), Some(m)) =
            (suppress.value, reuse.value, half_life.value, max_hold.value)
        else {
            return; // an invalid value: already reported
        };
        if s == 0 {
            return; // damping off: the other keys do not matter
        }
        if r >= s {
            let (at, other, origin) = if reuse.depth() >= suppress.depth() {
                (reuse.at, format!("flap_suppress {s}"), suppress.origin())
            } else {
                (suppress.at, format!("flap_reuse {r}"), reuse.origin())
            };
            let msg = format!(
                "flap_reuse {r} must be below flap_suppress {s} ({other}: {origin}), e.g. \
                 flap_suppress = 4 with flap_reuse = 2; flap_suppress = 0 turns damping off"
            );
            if let Some(at) = at {
                cx.error(&at, msg);
            }
            return;
        }
        let shortest = h.mul_f64((f64::from(s) / f64::from(r)).log2());
        if m >= shortest {
            return;
        }
        let deepest = [
            (suppress.depth(), suppress.at),
            (reuse.depth(), reuse.at),
            (half_life.depth(), half_life.at),
            (max_hold.depth(), max_hold.at),
        ]
        .into_iter()
        // max_by_key keeps the last of equals: on a tie, max_hold, the key the message names.
        .max_by_key(|(depth, _)| *depth)
        .and_then(|(_, at)| at);
        let msg = format!(
            "flap_max_hold {} is shorter than the shortest hold {}, the time the penalty takes \
             to decay from flap_suppress {s} to flap_reuse {r} with flap_half_life {}; raise \
             flap_max_hold or lower the ratio flap_suppress / flap_reuse",
            fmt_duration(m),
            fmt_duration(shortest),
            fmt_duration(h),
        );
        if let Some(at) = deepest {
            cx.error(&at, msg);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Kind {
    #[default]
    Tcp,
    Http,
    Https,
    Exec,
}

impl Kind {
    const CHOICES: [(&'static str, Kind); 4] = [
        ("tcp", Kind::Tcp),
        ("http", Kind::Http),
        ("https", Kind::Https),
        ("exec", Kind::Exec),
    ];

    fn name(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("tcp", |(n, _)| n)
    }
}

/// The kind keys of one (layered) check; the default is a plain TCP check.
#[derive(Debug, Clone, Default)]
pub(crate) struct KindSpec {
    kind: Kind,
    path: Option<String>,
    expect: Option<u16>,
    host: Option<String>,
    tls_verify: Option<bool>,
    command: Option<Vec<String>>,
}

impl KindSpec {
    /// Validates the kind keys of the check table at `at`, layered over `inherited` (the
    /// VIP's check for a backend, the default TCP check for a VIP).
    pub fn parse(cx: &mut Ctx, raw: &RawCheck, at: &FieldPath, inherited: &KindSpec) -> Self {
        let kind = match &raw.kind {
            None => inherited.kind,
            Some(_) => match cx.choice(&raw.kind, &at.key("kind"), &Kind::CHOICES) {
                Some(k) => k,
                // Unknown kind: already reported; checking the other keys against it is noise.
                None => return inherited.clone(),
            },
        };
        let base = if raw.kind.is_some() {
            KindSpec {
                kind,
                ..KindSpec::default()
            }
        } else {
            inherited.clone()
        };
        let http = matches!(kind, Kind::Http | Kind::Https);
        let mut applies = |key: &str, present: bool, ok: bool, valid: &str| {
            if present && !ok {
                let msg = format!(
                    "`{key}` only applies to kind {valid}, but this check is kind \"{}\"; \
                     remove `{key}` or set kind = \"{}\"",
                    kind.name(),
                    valid.split('/').next().unwrap_or(valid)
                );
                cx.error(&at.key(key), msg);
            }
            present && ok
        };
        let path_ok = applies("path", raw.path.is_some(), http, "http/https");
        let expect_ok = applies("expect", raw.expect.is_some(), http, "http/https");
        let host_ok = applies("host", raw.host.is_some(), http, "http/https");
        let tls_ok = applies(
            "tls_verify",
            raw.tls_verify.is_some(),
            kind == Kind::Https,
            "https",
        );
        let command_ok = applies("command", raw.command.is_some(), kind == Kind::Exec, "exec");

        let mut spec = base;
        if path_ok {
            let path = raw.path.clone().unwrap_or_default();
            if !path.starts_with('/') {
                cx.error(
                    &at.key("path"),
                    format!("path {path:?} must start with \"/\", e.g. \"/healthz\""),
                );
            }
            spec.path = Some(path);
        }
        if expect_ok {
            let status = cx.int(
                raw.expect,
                &at.key("expect"),
                100..=599,
                "an HTTP status code 100..=599",
            );
            spec.expect = status.and_then(|s| u16::try_from(s).ok()).or(spec.expect);
        }
        if host_ok {
            let host = raw.host.clone().unwrap_or_default();
            if host.is_empty() || host.chars().any(char::is_whitespace) {
                let msg = format!(
                    "host {host:?} is not valid: expected a Host header value without spaces, \
                     e.g. \"keystone\""
                );
                cx.error(&at.key("host"), msg);
            }
            spec.host = Some(host);
        }
        if tls_ok {
            spec.tls_verify = raw.tls_verify;
        }
        if command_ok {
            let command = raw.command.clone().unwrap_or_default();
            if command.is_empty() || command.iter().any(String::is_empty) {
                let msg = "command must be a non-empty array of non-empty strings (argv), \
                           e.g. [\"/usr/bin/clustercheck\"]";
                cx.error(&at.key("command"), msg);
            }
            spec.command = Some(command);
        }
        if kind == Kind::Exec && raw.kind.is_some() && raw.command.is_none() {
            let msg = "missing required key `command`: kind \"exec\" needs the argv to run, \
                       e.g. command = [\"/usr/bin/clustercheck\"]";
            cx.error(&at.key("command"), msg);
        }
        spec
    }

    pub fn resolve(&self, timing: &Timing) -> Check {
        let kind = match self.kind {
            Kind::Tcp => CheckKind::Tcp,
            Kind::Http | Kind::Https => CheckKind::Http {
                path: self
                    .path
                    .clone()
                    .unwrap_or_else(|| defaults::HTTP_PATH.to_owned()),
                expect: self.expect.unwrap_or(defaults::HTTP_EXPECT),
                host: self.host.clone(),
                tls: self.kind == Kind::Https,
                tls_verify: self.kind == Kind::Https && self.tls_verify.unwrap_or(false),
            },
            Kind::Exec => CheckKind::Exec {
                command: self.command.clone().unwrap_or_default(),
            },
        };
        let full = timing.over(&Timing::builtin());
        let damping = full.damping();
        Check {
            kind,
            interval: full
                .interval
                .and_then(|s| s.value)
                .unwrap_or(defaults::INTERVAL),
            timeout: full
                .timeout
                .and_then(|s| s.value)
                .unwrap_or(defaults::TIMEOUT),
            rise: full.rise.unwrap_or(defaults::RISE),
            fall: full.fall.unwrap_or(defaults::FALL),
            jitter: full.jitter.unwrap_or(defaults::JITTER),
            damping,
        }
    }
}

/// Upper bound of flap_suppress/flap_reuse: far beyond any useful value, and small enough
/// that the penalty arithmetic stays exact.
const MAX_FLAP_THRESHOLD: i64 = 1_000_000;

impl Timing {
    /// The damping of a fully layered timing; invalid keys (already reported) take the
    /// built-in default.
    fn damping(&self) -> Damping {
        let value = |s: &Option<Setting<u32>>, d| s.as_ref().and_then(|s| s.value).unwrap_or(d);
        let duration = |s: &Option<Setting>, d| s.as_ref().and_then(|s| s.value).unwrap_or(d);
        let suppress = value(&self.flap_suppress, defaults::FLAP_SUPPRESS);
        if suppress == 0 {
            return Damping::OFF;
        }
        Damping {
            suppress,
            reuse: value(&self.flap_reuse, defaults::FLAP_REUSE),
            half_life: duration(&self.flap_half_life, defaults::FLAP_HALF_LIFE),
            max_hold: duration(&self.flap_max_hold, defaults::FLAP_MAX_HOLD),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "2",
            "s",
            "1.5s",
            "-1s",
            "2 s",
            "2sec",
            "1h",
            " 2s",
            "2S",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn duration_format_round_trips() {
        for s in ["250ms", "2s", "1m", "90s", "0s", "1500ms"] {
            assert_eq!(fmt_duration(parse_duration(s).unwrap()), s);
        }
    }
}
