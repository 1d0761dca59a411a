//! The operator commands that need no root: `vipd validate` on the shipped examples and on a
//! broken file, and `vipd import-haproxy` whose output `vipd validate` accepts.
use std::process::Command;

const VIPD: &str = env!("CARGO_BIN_EXE_vipd");
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn vipd(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(VIPD).args(args).output().expect("run vipd");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_examples_and_a_broken_file() {
    for example in ["minimal.toml", "openstack-controllers.toml"] {
        let (ok, out, err) = vipd(&["validate", &format!("{ROOT}/examples/{example}")]);
        assert!(ok && out.contains("valid"), "{example}: {out}{err}");
        // What it will cost, before it runs.
        assert!(out.contains("memory: maps") && out.contains("MiB"), "{out}");
    }
    let bad = std::env::temp_dir().join(format!("vipd-cli-{}.toml", std::process::id()));
    std::fs::write(
        &bad,
        "[[vip]]\nname = \"x\"\naddress = \"192.0.2.1\"\nport = 80\ntable_size = 100\n",
    )
    .unwrap();
    let (ok, _, err) = vipd(&["validate", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(":5: vip[0].table_size") && err.contains("101"),
        "{err}"
    );
    let _ = std::fs::remove_file(bad);
}

#[test]
fn import_haproxy_output_validates() {
    let fixtures = format!("{ROOT}/vip-daemon/tests/fixtures/import");
    let (ok, toml, warnings) = vipd(&[
        "import-haproxy",
        &format!("{fixtures}/openstack-haproxy.cfg"),
        "--keepalived",
        &format!("{fixtures}/keepalived.conf"),
    ]);
    assert!(ok, "{warnings}");
    assert!(
        warnings.contains("not carried over:") && warnings.contains("openstack-haproxy.cfg:"),
        "{warnings}"
    );
    let file = std::env::temp_dir().join(format!("vipd-import-{}.toml", std::process::id()));
    std::fs::write(&file, toml).unwrap();
    let (ok, out, err) = vipd(&["validate", file.to_str().unwrap()]);
    assert!(ok && out.contains("16 VIPs"), "{out}{err}");
    let _ = std::fs::remove_file(file);
}

/// The subcommand names listed under `Commands:` in `vipd ARGS --help`.
fn subcommands(args: &[&str]) -> Vec<String> {
    let mut argv = args.to_vec();
    argv.push("--help");
    let (ok, out, err) = vipd(&argv);
    assert!(ok, "vipd {argv:?}: {err}");
    let Some((_, list)) = out.split_once("Commands:\n") else {
        return Vec::new();
    };
    list.lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

/// Every entry under `Commands:`, `Arguments:` and `Options:` of `vipd ARGS --help` that
/// has no help text (nothing after its name, and no more-indented line below it).
fn entries_without_help(args: &[&str]) -> Vec<String> {
    let mut argv = args.to_vec();
    argv.push("--help");
    let (_, out, _) = vipd(&argv);
    let lines: Vec<&str> = out.lines().collect();
    let mut missing = Vec::new();
    let mut in_list = false;
    for (i, line) in lines.iter().enumerate() {
        if ["Commands:", "Arguments:", "Options:"].contains(line) {
            in_list = true;
            continue;
        }
        if line.trim().is_empty() || !line.starts_with(' ') {
            in_list = false;
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if !in_list || indent != 2 {
            continue;
        }
        let entry = line.trim();
        let same_line = entry.contains("  ");
        let next_line = lines
            .get(i + 1)
            .is_some_and(|n| n.len() - n.trim_start().len() > indent && !n.trim().is_empty());
        if !same_line && !next_line {
            missing.push(format!("vipd {}: {entry}", args.join(" ")));
        }
    }
    missing
}

#[test]
fn every_subcommand_and_argument_has_help() {
    let mut missing = entries_without_help(&[]);
    let mut seen = 0;
    let mut todo: Vec<Vec<String>> = subcommands(&[]).into_iter().map(|c| vec![c]).collect();
    while let Some(path) = todo.pop() {
        seen += 1;
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        missing.extend(entries_without_help(&args));
        for sub in subcommands(&args) {
            let mut deeper = path.clone();
            deeper.push(sub);
            todo.push(deeper);
        }
    }
    assert!(seen >= 19, "only {seen} subcommands found");
    assert!(missing.is_empty(), "no help text:\n{}", missing.join("\n"));
}

#[test]
fn enum_like_values_are_checked_by_clap() {
    let cases: [(&[&str], &str); 2] = [
        (
            &["trace", "198.51.100.7:40000", "192.0.2.100:5000", "icmp"],
            "[possible values: tcp, udp]",
        ),
        (&["backend", "weight", "web", "b1", "65536"], "65536"),
    ];
    for (args, says) in cases {
        let out = Command::new(VIPD)
            .args(["--control", "/nonexistent/vipd.sock"])
            .args(args)
            .output()
            .expect("run vipd");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "vipd {args:?}: {err}");
        assert!(err.contains(says), "vipd {args:?}: {err}");
    }
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for (shell, starts) in [
        ("bash", "_vipd()"),
        ("zsh", "#compdef vipd"),
        ("fish", "complete -c vipd"),
    ] {
        let (ok, script, err) = vipd(&["completions", shell]);
        assert!(ok, "{shell}: {err}");
        assert!(
            script.contains(starts),
            "{shell}: no {starts:?} in\n{script}"
        );
        for word in ["import-haproxy", "promote", "pin-dir"] {
            assert!(script.contains(word), "{shell}: {word} is not completed");
        }
    }
    // The bash script at least parses.
    let (_, script, _) = vipd(&["completions", "bash"]);
    let file = std::env::temp_dir().join(format!("vipd-completion-{}.bash", std::process::id()));
    std::fs::write(&file, script).unwrap();
    let status = Command::new("bash").arg("-n").arg(&file).status();
    let _ = std::fs::remove_file(&file);
    assert!(
        status.expect("run bash -n").success(),
        "bash -n refused the script"
    );
    // Another shell is a usage error.
    let out = Command::new(VIPD)
        .args(["completions", "powershell"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_pages_for_vipd_and_every_subcommand() {
    let dir = std::env::temp_dir().join(format!("vipd-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (ok, listed, err) = vipd(&["man", dir.join("man1").to_str().unwrap()]);
    assert!(ok, "{err}");
    let page = |name: &str| {
        std::fs::read_to_string(dir.join("man1").join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}; listed:\n{listed}"))
    };
    let main = page("vipd.1");
    assert!(main.contains(".TH vipd 1"), "{main}");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", ".SH SUBCOMMANDS"] {
        assert!(main.contains(section), "vipd.1 has no {section}");
    }
    let mut pages = 1;
    for sub in subcommands(&[]) {
        let text = page(&format!("vipd-{sub}.1"));
        assert!(
            text.contains(&format!(".TH vipd-{sub} 1")),
            "vipd-{sub}.1:\n{text}"
        );
        pages += 1;
        for action in subcommands(&[&sub]) {
            let text = page(&format!("vipd-{sub}-{action}.1"));
            assert!(
                text.contains(".SH SYNOPSIS"),
                "vipd-{sub}-{action}.1:\n{text}"
            );
            pages += 1;
        }
    }
    assert_eq!(listed.lines().count(), pages, "{listed}");
    assert!(page("vipd-trace.1").contains("tcp"));
    // A directory that cannot be made is an error (exit 1), not a panic.
    let (ok, _, err) = vipd(&["man", dir.join("man1/vipd.1/x").to_str().unwrap()]);
    assert!(!ok && err.starts_with("error: create"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn version_names_the_commit_and_the_embedded_bpf_object() {
    let (ok, out, err) = vipd(&["--version"]);
    assert!(ok, "{err}");
    let object = vip_daemon::shell::dataplane::XDP_OBJECT;
    let fnv = object.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let want_tail = format!(", bpf fnv1a64 {fnv:016x})\n");
    let version = env!("CARGO_PKG_VERSION");
    let commit = out
        .strip_prefix(&format!("vipd {version} (git "))
        .and_then(|rest| rest.strip_suffix(&want_tail))
        .unwrap_or_else(|| panic!("not `vipd {version} (git COMMIT{want_tail}`: {out:?}"));
    if commit != "unknown" {
        assert!(
            commit.len() >= 4 && commit.chars().all(|c| c.is_ascii_hexdigit()),
            "{out}"
        );
        // The commit is one of this repository's (when git is here to ask).
        if let Ok(o) = Command::new("git")
            .args([
                "-C",
                ROOT,
                "cat-file",
                "-e",
                &format!("{commit}^{{commit}}"),
            ])
            .output()
        {
            assert!(o.status.success(), "{commit} is not a commit here");
        }
    }
    // `-V` says the same.
    let (_, short, _) = vipd(&["-V"]);
    assert_eq!(short, out);
}

#[test]
fn json_output_has_a_schema_and_named_fields() {
    let file = format!("{ROOT}/examples/minimal.toml");
    // `-o json` is global: before or after the subcommand.
    for args in [
        vec!["-o", "json", "validate", &file],
        vec!["validate", &file, "--output", "json"],
    ] {
        let (ok, out, err) = vipd(&args);
        assert!(ok, "{args:?}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(v["schema"], vip_daemon::shell::status::STATUS_SCHEMA);
        assert_eq!(v["valid"], true);
        assert!(v["vips"].as_u64() > Some(0), "{v}");
        assert!(v["memory"]["maps_bytes"].as_u64() > Some(0), "{v}");
        assert!(v["memory"]["vipd_bytes"].as_u64() > Some(0), "{v}");
    }
    let (ok, _, err) = vipd(&["-o", "yaml", "validate", &file]);
    assert!(
        !ok && err.contains("json"),
        "possible values are named: {err}"
    );
}
