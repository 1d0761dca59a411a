//! The operator docs stay true to the code (issue 7: "every command shown in the docs is
//! exercised"). Over README.md and docs/*.md:
//! - every ```toml block is a whole config that `config::parse` accepts, or, marked with
//!   `<!-- fragment -->` on the line before, a part that uses only keys the config has;
//! - the config reference in docs/operations.md lists exactly the keys of the raw config
//!   structs (`src/config/raw.rs`), with the defaults the code applies;
//! - every `vipd ...` line in a shell block (docs/*.md) parses with the real binary's CLI, and
//!   every subcommand is shown in docs/operations.md;
//! - the metrics list in docs/operations.md is exactly what src/shell/metrics.rs registers.
//!
//! Unprivileged and side-effect free: no BPF is loaded. Commands that would touch the system
//! (`run`, `attach`, `detach`) are parsed with `--help`; the daemon's clients (`status`,
//! `trace`, `backend`, `reload`, `leave`) are pointed at a control socket that does not exist
//! and must get as far as trying to connect. Those clients are exercised against a live vipd
//! by the root-only tests: `status`, `trace`, `backend drain|enable|weight|promote` and `reload` in
//! tests/tests/daemon.rs, cluster `status` in tests/tests/cluster.rs, `attach` in
//! tests/tests/skeleton.rs; `validate` and `import-haproxy` run for real in tests/cli.rs.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use vip_daemon::config::{self, CheckKind, Config};

const VIPD: &str = env!("CARGO_BIN_EXE_vipd");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const FRAGMENT_MARK: &str = "<!-- fragment";

struct Doc {
    /// Relative to the repository root, for messages.
    name: String,
    text: String,
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// README.md and every docs/*.md.
fn docs() -> Vec<Doc> {
    let mut names: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    names.sort();
    names.insert(0, "README.md".into());
    let docs: Vec<Doc> = names
        .into_iter()
        .map(|name| Doc {
            text: read(&name),
            name,
        })
        .collect();
    for must in [
        "docs/architecture.md",
        "docs/operations.md",
        "docs/migration.md",
    ] {
        assert!(docs.iter().any(|d| d.name == must), "{must} is missing");
    }
    docs
}

fn doc(name: &str) -> Doc {
    Doc {
        text: read(name),
        name: name.into(),
    }
}

/// A fenced code block.
struct Block {
    /// `file:line` of the opening fence.
    at: String,
    /// Line number of the opening fence.
    line: usize,
    lang: String,
    text: String,
    /// The last non-blank line before the fence is `<!-- fragment ... -->`.
    fragment: bool,
}

fn blocks(doc: &Doc) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    let mut last_text = "";
    for (i, line) in doc.text.lines().enumerate() {
        let t = line.trim_start();
        match open.take() {
            Some(b) if t.starts_with("```") => out.push(b),
            Some(mut b) => {
                b.text.push_str(line);
                b.text.push('\n');
                open = Some(b);
            }
            None if t.starts_with("```") => {
                open = Some(Block {
                    at: format!("{}:{}", doc.name, i + 1),
                    line: i + 1,
                    lang: t[3..].trim().to_owned(),
                    text: String::new(),
                    fragment: last_text.starts_with(FRAGMENT_MARK),
                })
            }
            None => {}
        }
        if !t.is_empty() {
            last_text = t;
        }
    }
    assert!(open.is_none(), "{}: unterminated code block", doc.name);
    out
}

/// The text under the `## {title}` heading, up to the next `## ` heading.
fn section<'a>(doc: &'a Doc, title: &str) -> &'a str {
    let heading = format!("\n## {title}\n");
    let start = doc
        .text
        .find(&heading)
        .unwrap_or_else(|| panic!("{}: no `## {title}` section", doc.name))
        + heading.len();
    let rest = &doc.text[start..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// Cells of the table rows whose first cell is a `code` name.
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').collect();
            cells[1..cells.len() - 1]
                .iter()
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

fn unquote(cell: &str) -> String {
    cell.trim_matches('`').to_owned()
}

// ---------------------------------------------------------------------------------------
// The config keys, from the serde structs' source.

/// Every leaf key of the config file as a dotted path (`vip.backend.check.kind`), read from
/// the `Raw*` structs in src/config/raw.rs: a field whose type names another `Raw*` struct is
/// a table (recursed into), any other field is a key. The structs deny unknown fields, so this
/// is exactly what a file may contain.
fn raw_keys() -> BTreeSet<String> {
    let src = read("vip-daemon/src/config/raw.rs");
    assert!(
        !src.contains("rename") && !src.contains("alias") && !src.contains("flatten"),
        "raw.rs uses serde renames: teach tests/docs.rs to read them"
    );
    let mut structs: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in src.lines() {
        if let Some(rest) = line.strip_prefix("pub(crate) struct ") {
            current = rest.split_whitespace().next().map(str::to_owned);
            structs.insert(current.clone().unwrap_or_default(), Vec::new());
        } else if line.starts_with('}') {
            current = None;
        } else if let (Some(s), Some(field)) = (&current, line.trim().strip_prefix("pub ")) {
            let (name, ty) = field.split_once(':').expect("`pub name: Type,`");
            let entry = structs.get_mut(s).expect("opened above");
            entry.push((name.trim().to_owned(), ty.trim().to_owned()));
        }
    }
    fn walk(
        structs: &BTreeMap<String, Vec<(String, String)>>,
        name: &str,
        prefix: &str,
        out: &mut BTreeSet<String>,
    ) {
        let fields = structs
            .get(name)
            .unwrap_or_else(|| panic!("raw.rs: no struct {name}"));
        for (field, ty) in fields {
            let path = format!("{prefix}{field}");
            let table = ty.find("Raw").map(|i| {
                let end = ty[i..]
                    .find(|c: char| !c.is_ascii_alphanumeric())
                    .map_or(ty.len(), |e| i + e);
                &ty[i..end]
            });
            match table {
                Some(t) => walk(structs, t, &format!("{path}."), out),
                None => _ = out.insert(path),
            }
        }
    }
    let mut keys = BTreeSet::new();
    walk(&structs, "RawConfig", "", &mut keys);
    // A parsing slip here must not make every check below vacuous.
    for sure in [
        "node.name",
        "cluster.fence_command",
        "vip.backend.check.kind",
    ] {
        assert!(keys.contains(sure), "raw.rs reading lost {sure}: {keys:?}");
    }
    keys
}

/// The dotted leaf keys a TOML document sets (array-of-tables elements share their path).
fn toml_keys(v: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
    let toml::Value::Table(t) = v else { return };
    for (k, v) in t {
        let path = format!("{prefix}{k}");
        match v {
            toml::Value::Table(_) => toml_keys(v, &format!("{path}."), out),
            toml::Value::Array(a) if !a.is_empty() && a.iter().all(toml::Value::is_table) => {
                for e in a {
                    toml_keys(e, &format!("{path}."), out);
                }
            }
            _ => _ = out.insert(path),
        }
    }
}

/// A documented key names a real key: exactly, as `check.KEY` for every check table, or a
/// key holding a table (`vip.check`).
fn documented_key_exists(key: &str, keys: &BTreeSet<String>) -> bool {
    let table = format!("{key}.");
    keys.contains(key)
        || (key.starts_with("check.") && keys.iter().any(|k| k.ends_with(&format!(".{key}"))))
        || keys.iter().any(|k| k.starts_with(&table))
}

/// The documented key that covers a real key: itself, or `check.KEY` for `*.check.KEY`.
fn covering_key(key: &str) -> String {
    match key.find("check.") {
        Some(i) if i == 0 || key[..i].ends_with('.') => key[i..].to_owned(),
        _ => key.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// Config blocks.

#[test]
fn config_blocks_validate_or_are_marked_fragments_with_real_keys() {
    let keys = raw_keys();
    let (mut failures, mut whole) = (Vec::new(), 0);
    for doc in docs() {
        for b in blocks(&doc).into_iter().filter(|b| b.lang == "toml") {
            let value: toml::Value = match toml::from_str(&b.text) {
                Ok(v) => v,
                Err(e) => {
                    failures.push(format!("{}: not TOML: {e}", b.at));
                    continue;
                }
            };
            let mut used = BTreeSet::new();
            toml_keys(&value, "", &mut used);
            for k in used.iter().filter(|k| !keys.contains(*k)) {
                failures.push(format!("{}: `{k}` is not a config key", b.at));
            }
            match config::parse(&b.text, &b.at) {
                Ok(_) if !b.fragment => whole += 1,
                Ok(_) => {}
                // A fragment may miss what a whole file needs (a VIP's backends, cluster
                // `listen`), but the parser must not reject its keys or their types.
                Err(e) if b.fragment => {
                    for d in e.diagnostics().iter().filter(|d| {
                        d.field == "syntax"
                            || d.message.starts_with("unknown key")
                            || d.message.starts_with("wrong type")
                    }) {
                        let line = b.line + d.line;
                        failures.push(format!("{}:{line}: {}: {}", doc.name, d.field, d.message));
                    }
                }
                Err(e) => failures.push(format!(
                    "{}: a whole config that does not validate (mark a part with \
                     `{FRAGMENT_MARK} -->` on the line before the block):\n{e}",
                    b.at
                )),
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert!(whole >= 2, "only {whole} whole configs in the docs");
}

// ---------------------------------------------------------------------------------------
// The config reference.

fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms != 0 && ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

fn quoted(s: impl std::fmt::Display) -> String {
    format!("`\"{s}\"`")
}

fn code(s: impl std::fmt::Display) -> String {
    format!("`{s}`")
}

fn parse_ok(src: &str) -> Config {
    config::parse(src, "docs.rs").unwrap_or_else(|e| panic!("{e}"))
}

/// What the reference's default column must say, computed by loading configs that leave the
/// keys out.
fn expected_defaults() -> Vec<(&'static str, String)> {
    let c = parse_ok(
        "[node]\nname = \"n\"\n\
         [[vip]]\nname = \"a\"\naddress = \"192.0.2.1\"\n\
         [[vip.backend]]\nname = \"b\"\naddress = \"192.0.2.2\"\nport = 1\n\
         [[vip]]\nname = \"h\"\naddress = \"192.0.2.3\"\nport = 443\ncheck = { kind = \"https\" }\n\
         [[vip.backend]]\nname = \"b\"\naddress = \"192.0.2.2\"\n",
    );
    let cluster = parse_ok(
        "[node]\nname = \"n\"\n[cluster]\nlisten = \"192.0.2.1:7946\"\nkey_file = \"/k\"\n",
    );
    let m = cluster.cluster.membership.expect("cluster mode");
    assert_eq!(m.voters, ["n"], "voters default to [node.name]");
    let (vip, b) = (&c.vips[0], &c.vips[0].backends[0]);
    let lower = |d: &dyn std::fmt::Debug| quoted(format!("{d:?}").to_lowercase());
    let kind = match b.check.kind {
        CheckKind::Tcp => "tcp",
        CheckKind::Http { .. } => "http",
        CheckKind::Exec { .. } => "exec",
    };
    let CheckKind::Http {
        path,
        expect,
        tls_verify,
        ..
    } = &c.vips[1].backends[0].check.kind
    else {
        panic!("https check expected");
    };
    let list = |empty: bool| {
        if empty {
            code("[]")
        } else {
            "non-empty".into()
        }
    };
    vec![
        ("node.interfaces", list(c.node.interfaces.is_empty())),
        ("node.addresses", list(c.node.addresses.is_empty())),
        ("node.pin_dir", quoted(c.node.pin_dir.display())),
        (
            "cluster.hash_seed",
            code(format!("{:#x}", c.cluster.hash_seed)),
        ),
        ("cluster.encap_source_v4", quoted(c.cluster.encap_source_v4)),
        ("cluster.encap_source_v6", quoted(c.cluster.encap_source_v6)),
        ("cluster.peers", list(m.peers.is_empty())),
        ("cluster.voters", code("[node.name]")),
        ("cluster.lease", quoted(duration(m.lease))),
        ("cluster.fence_timeout", quoted(duration(m.fence_timeout))),
        ("cluster.probe_period", quoted(duration(m.probe_period))),
        (
            "cluster.suspect_timeout",
            quoted(duration(m.suspect_timeout)),
        ),
        (
            "metrics.listen",
            quoted(c.metrics_listen.expect("on by default")),
        ),
        ("control.socket", quoted(c.control_socket.display())),
        ("vip.port", code(vip.port)),
        ("vip.protocol", lower(&vip.protocol)),
        ("vip.hash", lower(&vip.hash)),
        ("vip.selection", lower(&vip.selection)),
        ("vip.table_size", code(vip.table_size)),
        ("vip.preferences", list(vip.preferences.is_empty())),
        ("vip.fencing", code(vip.fencing)),
        ("vip.failback", code(vip.failback)),
        ("vip.drain_timeout", quoted(duration(vip.drain_timeout))),
        ("vip.backend.weight", code(b.weight)),
        ("vip.backend.priority", code(b.priority)),
        ("vip.backend.forward", lower(&b.forward)),
        ("check.kind", quoted(kind)),
        ("check.path", quoted(path)),
        ("check.expect", code(expect)),
        ("check.tls_verify", code(tls_verify)),
        ("check.interval", quoted(duration(b.check.interval))),
        ("check.timeout", quoted(duration(b.check.timeout))),
        ("check.rise", code(b.check.rise)),
        ("check.fall", code(b.check.fall)),
        ("check.jitter", code(b.check.jitter)),
        ("check.flap_suppress", code(b.check.damping.suppress)),
        ("check.flap_reuse", code(b.check.damping.reuse)),
        (
            "check.flap_half_life",
            quoted(duration(b.check.damping.half_life)),
        ),
        (
            "check.flap_max_hold",
            quoted(duration(b.check.damping.max_hold)),
        ),
    ]
}

#[test]
fn config_reference_matches_the_config_types_and_defaults() {
    let keys = raw_keys();
    let ops = doc("docs/operations.md");
    let table = rows(section(&ops, "Config reference"));
    let documented: BTreeMap<String, Vec<String>> = table
        .into_iter()
        .map(|cells| (unquote(&cells[0]), cells))
        .collect();
    let mut failures = Vec::new();
    for key in documented.keys() {
        if !documented_key_exists(key, &keys) {
            failures.push(format!("documented but not a config key: `{key}`"));
        }
    }
    for key in &keys {
        if !documented.contains_key(&covering_key(key)) {
            failures.push(format!("config key not documented: `{key}`"));
        }
    }
    for (key, want) in expected_defaults() {
        match documented.get(key) {
            Some(cells) if cells.len() >= 4 && cells[2].contains(&want) => {}
            Some(cells) => failures.push(format!(
                "`{key}`: default column {:?} should say {want}",
                cells.get(2)
            )),
            None => failures.push(format!("`{key}` missing from the reference")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------
// Command lines.

/// Words of one shell command line: quotes and backslashes honoured; stops at a comment,
/// a pipe, a redirection or a command separator (what follows is not vipd's argv).
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut chars) =
        (Vec::new(), None::<String>, None, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    word.get_or_insert_with(String::new).push(n);
                }
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, '#') if word.is_none() => break,
            (None, '|' | '>' | '<' | ';' | '&') => {
                // `2>` etc.: the fd number belongs to the redirection.
                words.extend(
                    word.take()
                        .filter(|w| !w.chars().all(|c| c.is_ascii_digit())),
                );
                return words;
            }
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// (`file:line`, argv after `vipd`) of every vipd command in the doc's shell blocks.
fn vipd_commands(doc: &Doc) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for b in blocks(doc) {
        if !["sh", "console", "bash", "shell"].contains(&b.lang.as_str()) {
            continue;
        }
        let mut logical = String::new();
        let mut start = 0;
        for (i, line) in b.text.lines().enumerate() {
            if logical.is_empty() {
                start = i;
            }
            let line = line.trim();
            if let Some(cont) = line.strip_suffix('\\') {
                logical.push_str(cont);
                logical.push(' ');
                continue;
            }
            logical.push_str(line);
            let text = std::mem::take(&mut logical);
            let text = text.trim();
            let text = text
                .strip_prefix("$ ")
                .or_else(|| text.strip_prefix("# "))
                .unwrap_or(text);
            let mut words = shell_words(text);
            if words.first().is_some_and(|w| w == "sudo") {
                words.remove(0);
            }
            if words.first().is_some_and(|w| w == "vipd") {
                let at = format!("{}:{}", doc.name, b.line + 1 + start);
                out.push((at, words[1..].to_vec()));
            }
        }
    }
    out
}

/// The subcommand of an argv (skipping the global options and their values).
fn subcommand(args: &[String]) -> Option<&str> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--control" | "--pin-dir" => _ = it.next(),
            a if a.starts_with("--") => {}
            a => return Some(a),
        }
    }
    None
}

/// Would change the machine if run: parsed with `--help` appended instead.
const TOUCHES_SYSTEM: [&str; 3] = ["run", "attach", "detach"];
/// Clients of the control socket: must fail only at connecting to it.
const DAEMON_CLIENTS: [&str; 5] = ["status", "trace", "backend", "reload", "leave"];

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn vipd(args: &[String], cwd: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(VIPD)
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .expect("run vipd");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// clap reports bad command lines with status 2 and a usage line.
fn is_usage_error(code: Option<i32>, stderr: &str) -> bool {
    code == Some(2) && (stderr.contains("Usage:") || stderr.starts_with("error:"))
}

#[test]
fn every_vipd_command_shown_parses_with_the_real_cli() {
    // A scratch working directory and paths that do not exist: relative files in the docs
    // (haproxy.cfg, vipd.toml) are not found, the control socket answers nobody, and no pin
    // directory is touched.
    let scratch = Scratch(std::env::temp_dir().join(format!("vipd-docs-{}", std::process::id())));
    std::fs::create_dir_all(&scratch.0).expect("scratch dir");
    let absent = |name: &str| scratch.0.join(name).display().to_string();
    let mut failures = Vec::new();
    let mut seen = 0;
    for doc in docs().iter().filter(|d| d.name.starts_with("docs/")) {
        for (at, args) in vipd_commands(doc) {
            seen += 1;
            let Some(sub) = subcommand(&args).map(str::to_owned) else {
                failures.push(format!("{at}: `vipd` without a subcommand"));
                continue;
            };
            let mut argv = Vec::new();
            for (opt, value) in [("--control", "absent.sock"), ("--pin-dir", "absent-pins")] {
                if !args.iter().any(|a| a.starts_with(opt)) {
                    argv.extend([opt.to_owned(), absent(value)]);
                }
            }
            argv.extend(args.iter().cloned());
            let help = TOUCHES_SYSTEM.contains(&sub.as_str());
            if help {
                argv.push("--help".into());
            }
            let (code, stdout, stderr) = vipd(&argv, &scratch.0);
            let shown = format!("{at}: vipd {}", args.join(" "));
            if is_usage_error(code, &stderr) {
                failures.push(format!("{shown}\n  rejected by the CLI: {stderr}"));
            } else if help && !(code == Some(0) && stdout.contains("Usage:")) {
                failures.push(format!("{shown}\n  --help did not print usage: {stderr}"));
            } else if DAEMON_CLIENTS.contains(&sub.as_str())
                && !stderr.contains("cannot reach vipd")
            {
                failures.push(format!(
                    "{shown}\n  expected to fail only at the control socket: {stderr}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert!(seen >= 20, "only {seen} vipd command lines found in docs/");
}

/// The subcommand names listed under `Commands:` in a `--help` output.
fn help_commands(args: &[&str]) -> Vec<String> {
    let out = Command::new(VIPD).args(args).output().expect("vipd --help");
    let text = String::from_utf8_lossy(&out.stdout);
    let list = text
        .split_once("Commands:\n")
        .unwrap_or_else(|| panic!("no Commands: in vipd {args:?}:\n{text}"))
        .1;
    list.lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_subcommand_is_shown_in_operations() {
    let shown = vipd_commands(&doc("docs/operations.md"));
    let first_two = |args: &[String]| {
        let sub = subcommand(args).unwrap_or_default().to_owned();
        let next = args
            .iter()
            .skip_while(|a| **a != sub)
            .nth(1)
            .cloned()
            .unwrap_or_default();
        (sub, next)
    };
    let pairs: BTreeSet<(String, String)> = shown.iter().map(|(_, a)| first_two(a)).collect();
    let mut missing = Vec::new();
    for cmd in help_commands(&["--help"]) {
        if !pairs.iter().any(|(s, _)| *s == cmd) {
            missing.push(format!("vipd {cmd}"));
        }
    }
    for action in help_commands(&["backend", "--help"]) {
        if !pairs.contains(&("backend".to_owned(), action.clone())) {
            missing.push(format!("vipd backend {action}"));
        }
    }
    assert!(
        missing.is_empty(),
        "not shown in a shell block of docs/operations.md: {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Metrics and maps.

/// Every registered metric family, name -> type, read from src/shell/metrics.rs: the
/// registry prefix, each `r.register("name", "help", m.field.clone())` and the type of
/// `pub field` in `struct Metrics`. (Rendering the registry alone would miss the labelled
/// families: prometheus-client prints a family only once it has a label set.)
fn registered_metrics() -> BTreeMap<String, String> {
    let src = read("vip-daemon/src/shell/metrics.rs");
    let literal = |s: &str| -> Option<String> {
        let start = s.find('"')? + 1;
        Some(s[start..start + s[start..].find('"')?].to_owned())
    };
    let prefix = src
        .split_once("Registry::with_prefix(")
        .and_then(|(_, rest)| literal(rest))
        .expect("metrics.rs: Registry::with_prefix(\"...\")");
    let fields: BTreeMap<&str, &str> = src
        .split_once("pub struct Metrics {")
        .expect("metrics.rs: pub struct Metrics")
        .1
        .lines()
        .take_while(|l| !l.starts_with('}'))
        .filter_map(|l| l.trim().strip_prefix("pub ")?.split_once(':'))
        .map(|(f, ty)| (f.trim(), ty.trim()))
        .collect();
    let mut out = BTreeMap::new();
    for call in src.split("r.register(").skip(1) {
        let call = &call[..call.find(");").expect("register(...);")];
        let name = literal(call).expect("metric name literal");
        let field = call
            .split_once("m.")
            .and_then(|(_, rest)| rest.split('.').next())
            .unwrap_or_else(|| panic!("{name}: registered value is not `m.FIELD.clone()`"));
        let ty = fields
            .get(field)
            .unwrap_or_else(|| panic!("{name}: no field {field} in struct Metrics"));
        let kind = ["Histogram", "Counter", "Gauge"]
            .into_iter()
            .find(|k| ty.contains(k))
            .unwrap_or_else(|| panic!("{name}: unknown metric type {ty}"));
        out.insert(format!("{prefix}_{name}"), kind.to_lowercase());
    }
    out
}

#[test]
fn metrics_list_matches_the_registry() {
    let registered = registered_metrics();
    // What the registry really renders (its unlabelled metrics) confirms the source reading.
    let rendered = vip_daemon::shell::metrics::Metrics::default().encode();
    for line in rendered.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, ty) = line.split_once(' ').expect("# TYPE name type");
        assert_eq!(
            registered.get(name).map(String::as_str),
            Some(ty),
            "{name}: metrics.rs was read wrongly"
        );
    }
    assert!(registered.len() >= 10, "{registered:?}");
    let ops = doc("docs/operations.md");
    let metrics = section(&ops, "Metrics");
    let documented: BTreeMap<String, String> = rows(metrics)
        .into_iter()
        .map(|cells| (unquote(&cells[0]), cells[1].clone()))
        .collect();
    let mut failures = Vec::new();
    for (name, ty) in &documented {
        match registered.get(name) {
            Some(t) if t == ty => {}
            Some(t) => failures.push(format!("{name}: documented as {ty}, registered as {t}")),
            None => failures.push(format!("{name}: documented but not registered")),
        }
    }
    for name in registered.keys().filter(|n| !documented.contains_key(*n)) {
        failures.push(format!("{name}: registered but not documented"));
    }
    // The reason label values: the data plane's counter names.
    for reason in vip_common::maps::reason::NAMES {
        if !metrics.contains(&format!("`{reason}`")) {
            failures.push(format!("reason `{reason}` not listed"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn bpftool_examples_name_real_pinned_maps() {
    let pin_dir = config::defaults::PIN_DIR;
    let mut failures = Vec::new();
    for doc in docs() {
        for (i, line) in doc.text.lines().enumerate() {
            let Some((_, path)) = line.split_once("bpftool map dump pinned ") else {
                continue;
            };
            let path = path.split_whitespace().next().unwrap_or_default();
            let path = path.trim_matches('`');
            if !path.starts_with('/') {
                continue; // a placeholder such as `...` or `<pin_dir>/<MAP>`
            }
            let name = path.rsplit('/').next().unwrap_or_default();
            let known = vip_daemon::shell::dataplane::MAP_NAMES.contains(&name);
            if !(known && path.starts_with(pin_dir)) {
                failures.push(format!("{}:{}: {path}", doc.name, i + 1));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "bpftool paths must be {pin_dir}/<a map of vip_common::maps>:\n{}",
        failures.join("\n")
    );
}
