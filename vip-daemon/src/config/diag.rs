//! Diagnostics: the error types, the collector the validator reports into, and the
//! translation of toml/serde errors (syntax, unknown keys, wrong types) into diagnostics.

use std::fmt;
use std::io;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use super::locate::{FieldPath, Locator, Seg};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// Dotted path like `vip[2].backend[1].address` (0-based indices, TOML key names);
    /// `syntax` for a TOML syntax error.
    pub field: String,
    /// What is wrong and what would be valid.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file, self.line, self.field, self.message
        )
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// Every problem found, sorted by line (a syntax error stops at the first).
    #[error("{}", DiagnosticList(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The diagnostics of an `Invalid` error (empty for `Io`).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Invalid(d) => d,
            ConfigError::Io { .. } => &[],
        }
    }
}

struct DiagnosticList<'a>(&'a [Diagnostic]);

impl fmt::Display for DiagnosticList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics for one file, locating each field path.
pub(crate) struct Ctx<'a> {
    loc: &'a Locator<'a>,
    file: &'a str,
    diags: Vec<Diagnostic>,
}

impl<'a> Ctx<'a> {
    pub fn new(loc: &'a Locator<'a>, file: &'a str) -> Self {
        Self {
            loc,
            file,
            diags: Vec::new(),
        }
    }

    pub fn error(&mut self, path: &FieldPath, message: impl Into<String>) {
        let line = self.loc.line_of(path);
        let (file, field, message) = (self.file.to_owned(), path.to_string(), message.into());
        self.diags.push(Diagnostic {
            file,
            line,
            field,
            message,
        });
    }

    /// `Ok` if nothing was reported; else every distinct diagnostic, sorted by line.
    pub fn finish(self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<Diagnostic> = self
            .diags
            .into_iter()
            .filter(|d| seen.insert((d.line, d.field.clone(), d.message.clone())))
            .collect();
        out.sort_by_key(|d| d.line);
        if out.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(out))
        }
    }

    /// An optional integer in `range`; out of range is reported and gives `None`.
    pub fn int(
        &mut self,
        v: Option<i64>,
        path: &FieldPath,
        range: RangeInclusive<i64>,
        valid: &str,
    ) -> Option<i64> {
        let v = v?;
        if range.contains(&v) {
            return Some(v);
        }
        self.error(path, format!("{v} is out of range: expected {valid}"));
        None
    }

    /// One of `options` (the first is the default when the key is absent). An unknown
    /// spelling is reported and gives `None`.
    pub fn choice<T: Copy>(
        &mut self,
        v: &Option<String>,
        path: &FieldPath,
        options: &[(&str, T)],
    ) -> Option<T> {
        let Some(v) = v else {
            return Some(options[0].1);
        };
        if let Some((_, t)) = options.iter().find(|(name, _)| name == v) {
            return Some(*t);
        }
        let names: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
        self.error(
            path,
            format!("unknown value {v:?}: expected one of {}", names.join(", ")),
        );
        None
    }

    /// A required key: reports it missing.
    pub fn required<'v, T>(
        &mut self,
        v: &'v Option<T>,
        path: &FieldPath,
        example: &str,
    ) -> Option<&'v T> {
        if v.is_none() {
            let key = path.last_key().unwrap_or("?");
            self.error(
                path,
                format!("missing required key `{key}`, e.g. {key} = {example}"),
            );
        }
        v.as_ref()
    }
}

/// The diagnostic for a toml syntax or serde (unknown key, wrong type) error.
pub(crate) fn from_toml_error(loc: &Locator<'_>, file: &str, e: &toml::de::Error) -> Diagnostic {
    let offset = e.span().map_or(0, |s| s.start);
    let line = loc.line_at(offset);
    let file = file.to_owned();
    let message = e.message().trim().to_owned();
    if !loc.parsed() {
        // Quote the offending text when it is short (e.g. which key is a duplicate).
        let text = e.span().and_then(|s| loc.source().get(s)).unwrap_or("");
        let quoted = match text {
            t if t.trim().is_empty() || t.len() > 40 || t.contains('\n') => String::new(),
            t => format!(" at `{t}`"),
        };
        let message = format!("TOML syntax error: {message}{quoted}");
        return Diagnostic {
            file,
            line,
            field: "syntax".to_owned(),
            message,
        };
    }
    let (path, message) = describe(loc, e);
    Diagnostic {
        file,
        line,
        field: path.to_string(),
        message,
    }
}

/// The field path and message of a serde error (unknown key, wrong type) in a document
/// that parses.
fn describe(loc: &Locator<'_>, e: &toml::de::Error) -> (FieldPath, String) {
    let offset = e.span().map_or(0, |s| s.start);
    let message = e.message().trim().to_owned();
    let path = loc.path_at(offset);
    let message = if let Some(rest) = message.strip_prefix("unknown field ") {
        let suggestion = suggest(rest)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        let rest = rest.replacen(", expected one of ", "; valid keys here: ", 1);
        let rest = rest.replacen(", expected ", "; the only valid key here is ", 1);
        match rest.split_once("; ") {
            Some((key, list)) => format!("unknown key {key}{suggestion}; {list}"),
            None => format!("unknown key {rest}{suggestion}"),
        }
    } else if let Some(rest) = message.strip_prefix("invalid type: ") {
        let (found, serde_expected) = rest.rsplit_once(", expected ").unwrap_or((rest, "?"));
        let expected = expectation(&path).unwrap_or(serde_expected);
        format!("wrong type: found {found}, expected {expected}")
    } else {
        message
    };
    (path, message)
}

/// For serde's "`key`, expected one of `a`, `b`": the valid key closest to `key`, if close
/// enough to be a likely typo.
fn suggest(serde_rest: &str) -> Option<String> {
    let mut names = serde_rest.split('`').skip(1).step_by(2);
    let key = names.next()?;
    names
        .map(|n| (strsim::jaro_winkler(key, n), n))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| n.to_owned())
}

/// Every unknown key and type error of a syntactically valid file, `first` (serde's first)
/// included: each offending key is removed and the file parsed again, so that the next one
/// shows, up to [`super::MAX_SHAPE_ERRORS`]. Lines come from the original file.
pub(crate) fn shape_errors(
    orig: &Locator<'_>,
    file: &str,
    first: &toml::de::Error,
) -> Vec<Diagnostic> {
    let mut out = vec![from_toml_error(orig, file, first)];
    let Ok(mut doc) = orig.source().parse::<toml_edit::DocumentMut>() else {
        return out;
    };
    let mut path = orig.path_at(first.span().map_or(0, |s| s.start));
    while out.len() < super::MAX_SHAPE_ERRORS {
        if path.len() == 0 || !remove(doc.as_item_mut(), path.segs()) {
            break;
        }
        let text = doc.to_string();
        let Err(e) = toml::from_str::<super::raw::RawConfig>(&text) else {
            break;
        };
        let cur = Locator::new(&text);
        if !cur.parsed() {
            break;
        }
        let (next, message) = describe(&cur, &e);
        if next.len() == 0 {
            break;
        }
        out.push(Diagnostic {
            file: file.to_owned(),
            line: orig.line_of(&next),
            field: next.to_string(),
            message,
        });
        path = next;
    }
    out.sort_by_key(|d| d.line);
    out
}

/// Removes the key at `segs` (its innermost key: an offending array element takes its
/// array with it, so that indices of tables stay those of the original file).
fn remove(item: &mut toml_edit::Item, segs: &[Seg]) -> bool {
    let Some(end) = segs.iter().rposition(|s| matches!(s, Seg::Key(_))) else {
        return false;
    };
    let Seg::Key(key) = &segs[end] else {
        return false;
    };
    remove_in_item(item, &segs[..end], key)
}

fn remove_in_item(item: &mut toml_edit::Item, segs: &[Seg], key: &str) -> bool {
    use toml_edit::Item;
    match segs.split_first() {
        None => item
            .as_table_like_mut()
            .is_some_and(|t| t.remove(key).is_some()),
        Some((Seg::Key(k), rest)) => item
            .as_table_like_mut()
            .and_then(|t| t.get_mut(k))
            .is_some_and(|child| remove_in_item(child, rest, key)),
        Some((Seg::Index(n), rest)) => match item {
            Item::ArrayOfTables(a) => a.get_mut(*n).is_some_and(|t| {
                let mut tmp = Item::Table(std::mem::take(t));
                let ok = remove_in_item(&mut tmp, rest, key);
                if let Item::Table(back) = tmp {
                    *t = back;
                }
                ok
            }),
            Item::Value(v) => remove_in_value(v, &[Seg::Index(*n)], rest, key),
            _ => false,
        },
    }
}

fn remove_in_value(v: &mut toml_edit::Value, index: &[Seg], rest: &[Seg], key: &str) -> bool {
    let Some(Seg::Index(n)) = index.first() else {
        return false;
    };
    let Some(elem) = v.as_array_mut().and_then(|a| a.get_mut(*n)) else {
        return false;
    };
    let Some(t) = elem.as_inline_table_mut() else {
        return false;
    };
    let mut tmp = toml_edit::Item::Value(toml_edit::Value::InlineTable(std::mem::take(t)));
    let ok = remove_in_item(&mut tmp, rest, key);
    if let toml_edit::Item::Value(toml_edit::Value::InlineTable(back)) = tmp {
        *t = back;
    }
    ok
}

/// What the key at `path` takes, in words (for type errors).
fn expectation(path: &FieldPath) -> Option<&'static str> {
    let key = path.last_key()?;
    let element = path.is_element();
    Some(match (key, element) {
        ("interfaces", true) => "an interface name string like \"eth0\"",
        ("addresses", true) => "an IP address string like \"192.0.2.11\"",
        ("command", true) => "a string (one argv element)",
        ("vip", true) => "a [[vip]] table",
        ("backend", true) => "a [[vip.backend]] table",
        ("interfaces", _) => "an array of interface names, e.g. [\"eth0\"]",
        ("addresses", _) => "an array of IP address strings, e.g. [\"192.0.2.11\"]",
        ("command", _) => "an array of strings (argv), e.g. [\"/usr/bin/clustercheck\"]",
        ("vip", _) => "[[vip]] tables",
        ("backend", _) => "[[vip.backend]] tables",
        ("node" | "cluster" | "metrics" | "control" | "defaults", _) => "a table",
        ("check", _) => "a table such as { kind = \"http\", path = \"/\" }",
        ("name", _) => "a string like \"keystone\"",
        ("address" | "encap_source_v4" | "encap_source_v6", _) => {
            "an IP address string like \"192.0.2.100\""
        }
        ("pin_dir" | "socket", _) => "an absolute path string",
        ("listen", _) => "a string like \"127.0.0.1:9478\", or \"off\"",
        ("hash_seed", _) => "an integer 0..=4294967295",
        ("port", _) => "an integer port 0..=65535",
        ("weight", _) => "an integer 0..=65535",
        ("priority", _) => "an integer 0..=255",
        ("table_size", _) => "a prime integer such as 65537",
        ("rise" | "fall", _) => "an integer >= 1",
        ("expect", _) => "an HTTP status code 100..=599",
        ("jitter", _) => "a number in 0.0..=0.5",
        ("tls_verify", _) => "true or false",
        ("interval" | "timeout", _) => "a duration string like \"2s\", \"250ms\" or \"1m\"",
        ("protocol", _) => "\"tcp\" or \"udp\"",
        ("hash", _) => "\"flow\" or \"source\"",
        ("selection", _) => "\"maglev\" or \"primary-backup\"",
        ("forward", _) => "\"l2\", \"encap\" or \"local\"",
        ("kind", _) => "\"tcp\", \"http\", \"https\" or \"exec\"",
        ("path" | "host", _) => "a string",
        _ => return None,
    })
}
