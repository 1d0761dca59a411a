//! haproxy.cfg sections → proxies: binds, servers and the settings that matter for a VIP
//! (mode, balance, health checks), with `defaults` applied. Everything else is reported into
//! the [`Notes`] or skipped (see [`why`]).

use std::time::Duration;

use super::lex::{self, Host, Line, Section};
use super::options::{self, ServerOpts};
use super::probe;
use super::why::{self, Fate};
use super::{Anchor, ImportError, Notes};

/// Where a directive was written.
#[derive(Debug, Clone)]
pub(crate) struct Src {
    pub line: usize,
    pub text: String,
    pub anchor: Anchor,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Mode {
    #[default]
    Tcp,
    Http,
}

/// Settings a proxy inherits from the `defaults` section before it and may override.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    pub mode: Mode,
    pub balance: Option<(String, Src)>,
    pub probe: probe::Settings,
    /// `default-server`.
    pub server: ServerOpts,
    pub timeout_check: Option<(Duration, Src)>,
    pub allbackups: Option<Src>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Listen,
    Frontend,
    Backend,
}

impl Kind {
    fn keyword(self) -> &'static str {
        match self {
            Kind::Listen => "listen",
            Kind::Frontend => "frontend",
            Kind::Backend => "backend",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Bind {
    pub src: Src,
    pub addrs: Vec<(Host, u16)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub name: String,
    pub src: Src,
    pub host: Host,
    pub port: Option<u16>,
    pub opts: ServerOpts,
}

/// A `listen`, `frontend` or `backend` section.
#[derive(Debug, Clone)]
pub(crate) struct Proxy {
    pub kind: Kind,
    pub name: String,
    pub header: Src,
    pub section: usize,
    pub settings: Settings,
    pub binds: Vec<Bind>,
    pub servers: Vec<Server>,
    /// `default_backend X` or an unconditional `use_backend X`.
    pub backend: Option<(String, Src)>,
    pub disabled: bool,
    /// Has `stats enable`/`stats uri`: haproxy's statistics page.
    pub stats: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Haproxy {
    pub proxies: Vec<Proxy>,
    /// Every `defaults` section, in file order, with its settings.
    pub defaults: Vec<(Src, Settings)>,
    /// `global` `spread-checks N` (percent).
    pub spread_checks: Option<(u32, Src)>,
}

const SWITCHING: &str = "content switching needs a proxy; only the frontend's default backend \
    is carried over";

struct Cx<'a> {
    file: &'a str,
    notes: &'a mut Notes,
    anchor: Anchor,
}

impl Cx<'_> {
    fn src(&self, line: &Line) -> Src {
        Src {
            line: line.no,
            text: line.text.clone(),
            anchor: self.anchor,
        }
    }

    fn drop_line(&mut self, line: &Line, why: &str) {
        let (anchor, file) = (self.anchor, self.file);
        self.notes.add(anchor, file, line.no, &line.text, why);
    }

    /// Dropped options of a line: reported as "KEYWORD NAME … OPTIONS".
    fn drop_options(&mut self, line: &Line, anchor: Anchor, dropped: Vec<options::Dropped>) {
        let head: Vec<&str> = line.words.iter().take(2).map(String::as_str).collect();
        for d in dropped {
            let directive = format!("{} … {}", head.join(" "), d.words.join(" "));
            self.notes
                .add(anchor, self.file, line.no, &directive, d.why);
        }
    }
}

/// Interprets every section.
pub(crate) fn interpret(
    sections: &[Section],
    file: &str,
    notes: &mut Notes,
) -> Result<Haproxy, ImportError> {
    let mut out = Haproxy::default();
    let mut defaults = Settings::default();
    for (idx, s) in sections.iter().enumerate() {
        let at = |line: &Line| {
            let no = line.no;
            move |what: String| ImportError::malformed(file, no, what)
        };
        let kind = match s.keyword.as_str() {
            "global" => {
                global(s, file, notes, &mut out)?;
                continue;
            }
            "defaults" => {
                let mut cx = Cx {
                    file,
                    notes,
                    anchor: Anchor::Defaults(idx),
                };
                let mut settings = Settings::default();
                for line in &s.body {
                    directive(&mut cx, line, &mut settings, None).map_err(at(line))?;
                }
                out.defaults.push((cx.src(&s.header), settings.clone()));
                defaults = settings;
                continue;
            }
            "listen" => Kind::Listen,
            "frontend" => Kind::Frontend,
            "backend" => Kind::Backend,
            other => {
                notes.add(
                    Anchor::Top,
                    file,
                    s.header.no,
                    &s.header.text,
                    why::section(other),
                );
                continue;
            }
        };
        if s.name.is_empty() {
            let what = format!(
                "`{}` needs a name, e.g. `{} keystone`",
                s.keyword, s.keyword
            );
            return Err(ImportError::malformed(file, s.header.no, what));
        }
        let mut cx = Cx {
            file,
            notes,
            anchor: Anchor::Section(idx),
        };
        let mut proxy = Proxy {
            kind,
            name: s.name.clone(),
            header: cx.src(&s.header),
            section: idx,
            settings: defaults.clone(),
            binds: Vec::new(),
            servers: Vec::new(),
            backend: None,
            disabled: false,
            stats: false,
        };
        // Old syntax: `listen NAME ADDR:PORT[,...]`.
        if let (Kind::Listen, Some(addrs)) = (kind, s.header.words.get(2)) {
            let list = lex::bind_addrs(addrs).map_err(at(&s.header))?;
            for why in &list.skipped {
                cx.drop_line(&s.header, why);
            }
            let src = cx.src(&s.header);
            proxy.binds.push(Bind {
                src,
                addrs: list.addrs,
            });
        }
        for line in &s.body {
            let mut settings = std::mem::take(&mut proxy.settings);
            let result = directive(&mut cx, line, &mut settings, Some(&mut proxy));
            proxy.settings = settings;
            result.map_err(at(line))?;
        }
        out.proxies.push(proxy);
    }
    Ok(out)
}

/// `global`: only `spread-checks` (probe jitter) and Lua (reported) matter.
fn global(
    s: &Section,
    file: &str,
    notes: &mut Notes,
    out: &mut Haproxy,
) -> Result<(), ImportError> {
    for line in &s.body {
        match line.word(0) {
            "spread-checks" => {
                let pct = lex::number("spread-checks", line.word(1), 0..=50)
                    .map_err(|what| ImportError::malformed(file, line.no, what))?;
                let src = Src {
                    line: line.no,
                    text: line.text.clone(),
                    anchor: Anchor::Top,
                };
                out.spread_checks = Some((pct, src));
            }
            w if w.starts_with("lua-") => {
                notes.add(Anchor::Top, file, line.no, &line.text, why::LUA)
            }
            _ => {}
        }
    }
    Ok(())
}

/// One directive of a `defaults` (`proxy` None) or proxy section.
fn directive(
    cx: &mut Cx,
    line: &Line,
    st: &mut Settings,
    mut proxy: Option<&mut Proxy>,
) -> Result<(), String> {
    let kind = proxy.as_ref().map(|p| p.kind);
    let only = |allowed: [Kind; 2], what: &str| match kind {
        Some(k) if allowed.contains(&k) => Ok(()),
        _ => {
            let [a, b] = allowed.map(Kind::keyword);
            Err(format!("`{what}` is only allowed in {a} and {b} sections"))
        }
    };
    let src = cx.src(line);
    match line.word(0) {
        "mode" => {
            st.mode = match line.word(1) {
                "tcp" => Mode::Tcp,
                "http" => Mode::Http,
                m => return Err(format!("bad mode `{m}`: expected tcp or http")),
            }
        }
        "balance" => {
            let algo = line.word(1);
            let name = algo.split('(').next().unwrap_or(algo);
            match name {
                "roundrobin" | "static-rr" | "leastconn" | "first" | "source" | "random" => {}
                "uri" | "url_param" | "hdr" | "rdp-cookie" | "hash" => {
                    cx.drop_line(line, why::L7_BALANCE);
                }
                _ => {
                    let what = format!(
                        "bad balance algorithm `{algo}`: expected e.g. roundrobin, leastconn or \
                         source"
                    );
                    return Err(what);
                }
            }
            st.balance = Some((name.to_owned(), src));
        }
        "bind" => {
            only([Kind::Listen, Kind::Frontend], "bind")?;
            let list = lex::bind_addrs(line.word(1))?;
            if list.addrs.is_empty() && list.skipped.is_empty() {
                return Err("bind needs an address, e.g. bind 192.0.2.100:5000".to_owned());
            }
            // Noted at the section: its notes are printed whether or not a VIP comes of it.
            for why in &list.skipped {
                cx.drop_line(line, why);
            }
            let addrs = list.addrs;
            let dropped = options::bind(line.words.get(2..).unwrap_or_default())?;
            cx.drop_options(line, Anchor::Bind(line.no), dropped);
            proxy.iter_mut().for_each(|p| {
                p.binds.push(Bind {
                    src: src.clone(),
                    addrs: addrs.clone(),
                })
            });
        }
        "server" => {
            only([Kind::Listen, Kind::Backend], "server")?;
            let (name, addr) = (line.word(1), line.word(2));
            if name.is_empty() || addr.is_empty() {
                return Err(format!(
                    "server `{name}` needs an address: server NAME ADDR[:PORT] [options]"
                ));
            }
            let (host, port) = lex::host_port(addr)?;
            if matches!(host, Host::AnyV4 | Host::Any) {
                return Err(format!("server `{name}` has no address in `{addr}`"));
            }
            let port = match port {
                Some(p) if p.starts_with(['+', '-']) => {
                    let what = format!(
                        "server `{name}`: port offset `{p}` is not supported (with DSR packets \
                         keep the VIP port)"
                    );
                    return Err(what);
                }
                Some(p) => Some(lex::port(p)?),
                None => None,
            };
            let mut opts = st.server.clone();
            let dropped = options::server(line.words.get(3..).unwrap_or_default(), &mut opts)?;
            cx.drop_options(line, Anchor::Server(line.no), dropped);
            let server = Server {
                name: name.to_owned(),
                src,
                host,
                port,
                opts,
            };
            proxy
                .iter_mut()
                .for_each(|p| p.servers.push(server.clone()));
        }
        "default-server" => {
            if kind == Some(Kind::Frontend) {
                return Err("`default-server` is not allowed in a frontend section".to_owned());
            }
            let dropped = options::server(line.words.get(1..).unwrap_or_default(), &mut st.server)?;
            cx.drop_options(line, cx.anchor, dropped);
        }
        "default_backend" | "use_backend" => {
            only([Kind::Listen, Kind::Frontend], line.word(0))?;
            let target = line.word(1);
            if target.is_empty() {
                return Err(format!("`{}` needs a backend name", line.word(0)));
            }
            let conditional = line.words.len() > 2;
            if conditional {
                cx.drop_line(line, SWITCHING);
            } else if let Some(p) = proxy.as_deref_mut() {
                // An unconditional use_backend always wins over default_backend.
                let keep = line.word(0) == "default_backend"
                    && p.backend
                        .as_ref()
                        .is_some_and(|(_, s)| s.text.starts_with("use_backend"));
                if !keep {
                    p.backend = Some((target.to_owned(), src));
                }
            }
        }
        "timeout" if line.word(1) == "check" => {
            st.timeout_check = Some((lex::time(line.word(2))?, src));
        }
        "option" if line.word(1) == "allbackups" => st.allbackups = Some(src),
        "disabled" => proxy.iter_mut().for_each(|p| p.disabled = true),
        "stats" if matches!(line.word(1), "enable" | "uri") => {
            proxy.iter_mut().for_each(|p| p.stats = true)
        }
        _ => match probe::directive(line, &mut st.probe, &src)? {
            probe::Outcome::Handled => {}
            probe::Outcome::Dropped(why) => cx.drop_line(line, why),
            probe::Outcome::NotMine => match why::fate(&line.words) {
                Fate::Silent => {}
                Fate::Unsupported(why) => cx.drop_line(line, why),
            },
        },
    }
    Ok(())
}
