//! `vipd import-haproxy`: converts a controller's haproxy.cfg (and, optionally, its
//! keepalived.conf) into a commented vipd config.
//!
//! One `[[vip]]` is written per (listen|frontend, bind address:port), with the servers of its
//! backend as `[[vip.backend]]` tables: `balance source` becomes `hash = "source"`, `backup`
//! servers make the VIP primary-backup, `option httpchk`/`http-check expect` become HTTP
//! checks and `inter`/`rise`/`fall`/`timeout check` their timing. A bind on `*` takes the VIP
//! addresses from keepalived's `virtual_ipaddress`; keepalived's interface becomes
//! `node.interfaces`. What an L4 balancer with direct server return cannot do (header rules,
//! TLS termination, stick tables, VRRP tracking, ...) is returned as [`Unsupported`] and
//! written into the file as `# NOT CARRIED OVER: file:line: directive — why` next to where it
//! applied. The generated text is validated with [`crate::config::parse`] before it is
//! returned.
//!
//! Layout: `lex` (haproxy.cfg words, sections, addresses, times), `haproxy` + `options` +
//! `probe` (directives → proxies), `keepalived`, `build` + `checks` (→ `plan`), `emit`
//! (→ TOML), `why` (the reasons).

mod backends;
mod build;
mod checks;
mod emit;
mod haproxy;
mod keepalived;
mod lex;
mod options;
mod plan;
mod probe;
mod why;

use std::fmt;

/// The generated config and everything that could not be carried over.
#[derive(Debug, Clone)]
pub struct ImportOutput {
    /// A complete vipd config, commented; passes [`crate::config::parse`].
    pub toml: String,
    /// haproxy.cfg first, then keepalived.conf, each by line.
    pub warnings: Vec<Unsupported>,
}

/// A directive (or part of one) with no equivalent in vip-fabric, or converted with a loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// The directive as written (comments stripped), or `KEYWORD NAME … OPTIONS` for options
    /// of a `server` or `bind` line.
    pub directive: String,
    pub why: String,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            file,
            line,
            directive,
            why,
        } = self;
        write!(f, "{file}:{line}: {directive} — {why}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input cannot be read as haproxy.cfg or keepalived.conf.
    #[error("{file}:{line}: {what}")]
    Malformed {
        file: String,
        line: usize,
        what: String,
    },
    /// The importer produced a file the config validator rejects (a bug in the importer).
    #[error(
        "the generated config does not validate (an importer bug; please report it with the \
         input files):\n{0}"
    )]
    Generated(String),
}

impl ImportError {
    pub(crate) fn malformed(file: &str, line: usize, what: impl Into<String>) -> Self {
        ImportError::Malformed {
            file: file.to_owned(),
            line,
            what: what.into(),
        }
    }
}

/// Converts `haproxy_src` (named `haproxy_name` in messages) and optionally a keepalived.conf
/// `(source, name)` into a vipd config.
pub fn import(
    haproxy_src: &str,
    haproxy_name: &str,
    keepalived: Option<(&str, &str)>,
) -> Result<ImportOutput, ImportError> {
    let mut notes = Notes::default();
    let sections = lex::sections(haproxy_src, haproxy_name)?;
    let hap = haproxy::interpret(&sections, haproxy_name, &mut notes)?;
    let ka = match keepalived {
        Some((src, name)) => Some(keepalived::parse(src, name, &mut notes)?),
        None => None,
    };
    let plan = build::build(&hap, ka.as_ref(), haproxy_name, &mut notes)?;
    if !plan.items.iter().any(|i| matches!(i, plan::Item::Vip(_))) {
        let why = "no VIP generated: the file has no listen or frontend section with a usable \
                   bind and servers (see the other notes, if any); the generated config has no \
                   [[vip]] and balances nothing";
        notes.add(Anchor::Top, haproxy_name, 1, "(whole file)", why);
    }
    let toml = emit::emit(&plan, &notes, haproxy_name, ka.as_ref());
    if let Err(e) = crate::config::parse(&toml, "generated.toml") {
        return Err(ImportError::Generated(format!(
            "{e}\n--- generated.toml ---\n{toml}"
        )));
    }
    let mut warnings: Vec<Unsupported> = notes.items.into_iter().map(|(_, u)| u).collect();
    warnings.sort_by_key(|u| (u.file != haproxy_name, u.line));
    Ok(ImportOutput { toml, warnings })
}

/// Where a note is printed in the generated file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// The file header (global section, sections with nothing to import).
    Top,
    /// Next to `[defaults.check]` (a haproxy `defaults` section, by section index).
    Defaults(usize),
    /// Above every VIP made from this haproxy section (by section index).
    Section(usize),
    /// Above every VIP made from the `bind` on this line.
    Bind(usize),
    /// Above every backend made from the `server` on this line.
    Server(usize),
    /// Above one VIP (by creation serial): problems of that VIP only.
    Vip(usize),
    /// Above one backend of one VIP: (VIP serial, `server` line).
    Backend(usize, usize),
    /// In the `[node]`/`[cluster]` notes.
    Keepalived,
}

/// The Unsupported entries found so far, each once, with where to print them.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    items: Vec<(Anchor, Unsupported)>,
}

impl Notes {
    pub fn add(&mut self, anchor: Anchor, file: &str, line: usize, directive: &str, why: &str) {
        let u = Unsupported {
            file: file.to_owned(),
            line,
            directive: directive.to_owned(),
            why: why.to_owned(),
        };
        if !self.items.iter().any(|(_, seen)| *seen == u) {
            self.items.push((anchor, u));
        }
    }

    /// Every anchor with notes, in the order of their first note.
    pub fn anchors(&self) -> Vec<Anchor> {
        let mut out: Vec<Anchor> = Vec::new();
        for (a, _) in &self.items {
            if !out.contains(a) {
                out.push(*a);
            }
        }
        out
    }

    pub fn at(&self, anchor: Anchor) -> impl Iterator<Item = &Unsupported> {
        self.items
            .iter()
            .filter(move |(a, _)| *a == anchor)
            .map(|(_, u)| u)
    }
}
