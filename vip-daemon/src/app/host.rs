//! `vipd host setup|check|undo`: the planner of `core::host` over the IO of `shell::host`.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::{
    core::host::{self as plan, Change},
    shell::host as io,
};

/// What a `vipd host` command did or would do.
#[derive(Debug, serde::Serialize)]
pub struct HostReport {
    /// `setup`, `check` or `undo`.
    pub command: &'static str,
    /// The VIPs this host backs (setup, check).
    pub vips: Vec<IpAddr>,
    /// Interfaces that need the decapsulation program (setup, check).
    pub decap: Vec<String>,
    /// Changes made (or, with `applied` false, that would be made / are missing).
    pub changes: Vec<Described>,
    pub applied: bool,
    /// What was left alone, and why.
    pub notes: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct Described {
    #[serde(flatten)]
    pub change: Change,
    pub description: String,
}

/// Options shared by the three commands.
pub struct HostOptions {
    /// Config whose VIPs list this host's addresses as backends (None: only `vips`).
    pub config: Option<PathBuf>,
    /// VIPs given by hand (`--vip`).
    pub vips: Vec<IpAddr>,
    /// Interfaces given by hand (`--decap`) that receive encapsulated VIP traffic.
    pub decap: Vec<String>,
    pub state_file: PathBuf,
    pub decap_pin_dir: PathBuf,
}

fn wanted(o: &HostOptions) -> anyhow::Result<plan::Wanted> {
    let mut w = match &o.config {
        Some(p) => {
            let config = crate::config::load(p)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("config {}", p.display()))?;
            plan::wanted(&config, &io::host_addresses()?, &o.vips)
        }
        None => plan::Wanted {
            vips: o.vips.iter().copied().collect(),
            encap_sources: default_encap_sources(),
            ..Default::default()
        },
    };
    w.decap.extend(o.decap.iter().cloned());
    Ok(w)
}

/// `ENCAP_SOURCES` without a config: the default `cluster.encap_source_v4/v6`.
fn default_encap_sources() -> Vec<vip_common::maps::EncapSourceKey> {
    use crate::config::defaults::{ENCAP_SOURCE_V4, ENCAP_SOURCE_V6};
    crate::core::image::encap_sources_of(
        ENCAP_SOURCE_V4.parse().expect("the default parses"),
        ENCAP_SOURCE_V6.parse().expect("the default parses"),
    )
}

fn report(
    command: &'static str,
    w: &plan::Wanted,
    changes: Vec<Change>,
    applied: bool,
) -> HostReport {
    let describe = |c: Change| Described {
        description: if command == "undo" {
            c.describe_undo()
        } else {
            c.describe()
        },
        change: c,
    };
    HostReport {
        command,
        vips: w.vips.iter().copied().collect(),
        decap: w.decap.iter().cloned().collect(),
        changes: changes.into_iter().map(describe).collect(),
        applied,
        notes: Vec::new(),
    }
}

/// `setup` (`dry_run`: only say) and `check` (`apply` false: what is missing).
pub async fn setup(
    o: &HostOptions,
    apply: bool,
    command: &'static str,
) -> anyhow::Result<HostReport> {
    let w = wanted(o)?;
    let handle = crate::shell::neighbours::connect()?;
    let observed = io::observe(&handle, &w, &[]).await?;
    let (changes, notes) = plan::plan(&w, &observed);
    if !apply {
        let mut r = report(command, &w, changes, false);
        r.notes = notes;
        return Ok(r);
    }
    let mut record = io::load_record(&o.state_file)?;
    let mut done = Vec::new();
    let mut failure = None;
    for c in changes {
        // Recorded one by one: a failure halfway still leaves `undo` the part that was done.
        match io::apply(&handle, &c, &o.decap_pin_dir, &w.encap_sources).await {
            Ok(()) => {
                record.changes.push(c.clone());
                io::save_record(&o.state_file, &record)?;
                done.push(c);
            }
            Err(e) => {
                failure = Some(anyhow::anyhow!("{}: {e}", c.describe()));
                break;
            }
        }
    }
    if let Some(e) = failure {
        return Err(e.context(format!(
            "host setup stopped after {} changes (recorded in {}; `vipd host undo` reverts them)",
            done.len(),
            o.state_file.display()
        )));
    }
    let mut r = report(command, &w, done, true);
    r.notes = notes;
    Ok(r)
}

/// `undo`: reverts what `setup` recorded and nothing else.
pub async fn undo(state_file: &Path, decap_pin_dir: &Path) -> anyhow::Result<HostReport> {
    let record = io::load_record(state_file)?;
    let handle = crate::shell::neighbours::connect()?;
    let observed = io::observe(&handle, &plan::Wanted::default(), &record.changes).await?;
    let (undo, notes) = plan::plan_undo(&record.changes, &observed);
    let (mut reverted, mut failed, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for c in undo {
        match io::revert(&handle, &c, decap_pin_dir).await {
            Ok(()) => reverted.push(c),
            Err(e) => {
                errors.push(format!("{}: {e}", c.describe_undo()));
                failed.push(c);
            }
        }
    }
    // What could not be reverted stays recorded for another try (oldest first, as setup
    // wrote it); what was left on purpose is said in the notes and forgotten.
    failed.reverse();
    io::save_record(state_file, &io::Record { changes: failed })?;
    if !errors.is_empty() {
        anyhow::bail!("host undo: {}", errors.join("; "));
    }
    let mut r = report("undo", &plan::Wanted::default(), reverted, true);
    r.notes = notes;
    Ok(r)
}

impl HostReport {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let vips: Vec<String> = self.vips.iter().map(ToString::to_string).collect();
        if self.command != "undo" {
            s.push_str(&format!(
                "backs VIPs: {}\n",
                if vips.is_empty() {
                    "none".into()
                } else {
                    vips.join(", ")
                }
            ));
        }
        let head = match (self.command, self.applied, self.changes.is_empty()) {
            ("check", _, true) => "check: ok, nothing missing".to_owned(),
            ("check", _, false) => format!("check: {} missing", self.changes.len()),
            (_, _, true) => format!("{}: nothing to do", self.command),
            (c, false, false) => {
                format!("{c} (dry run): would make {} changes", self.changes.len())
            }
            (c, true, false) => format!("{c}: made {} changes", self.changes.len()),
        };
        s.push_str(&head);
        s.push('\n');
        for c in &self.changes {
            s.push_str(&format!("  {}\n", c.description));
        }
        for n in &self.notes {
            s.push_str(&format!("  note: {n}\n"));
        }
        s
    }
}
