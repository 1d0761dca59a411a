//! One controller: its vipd and its service processes, each started with nsenter inside the
//! controller's namespace (so the fencing hook finds and freezes them), and vipd's status
//! read from its control socket with a short timeout (a frozen vipd must not hang the lab).
use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{net::UnixStream, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use vip_daemon::shell::{
    control::{Request, Response},
    status::Status,
};

use super::{
    config::{Service, SERVICES},
    ns_cmd, pause,
    topology::Names,
    Bins,
};

/// A child process, SIGKILLed and reaped on drop.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Starts `program args` inside namespace `ns`, output appended to `log`. Its own process
    /// group: Ctrl-C in the terminal reaches only vip-lab, which then stops everything itself.
    pub fn spawn(ns: &str, program: &Path, args: &[&str], log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("open {}", log.display()))?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .arg("--")
            .arg(program)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawn {} in {ns}", program.display()))?;
        Ok(Self { child })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads vipd's status from its control socket; None when it does not answer in time.
pub fn status_of(control: &Path, timeout: Duration) -> Option<Status> {
    match ask(control, &Request::Status, timeout)? {
        Response::Status(s) => Some(*s),
        _ => None,
    }
}

/// One request on vipd's control socket; None when it does not answer in time.
pub fn ask(control: &Path, request: &Request, timeout: Duration) -> Option<Response> {
    let mut stream = UnixStream::connect(control).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let mut line = serde_json::to_vec(request).ok()?;
    line.push(b'\n');
    stream.write_all(&line).ok()?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).ok()?;
    serde_json::from_str(&answer).ok()
}

pub struct Node {
    pub name: &'static str,
    pub ns: String,
    pub control: PathBuf,
    pub vipd: Option<Proc>,
    pub services: Vec<(Service, Proc)>,
    config: PathBuf,
    dir: PathBuf,
    bins: Bins,
}

impl Node {
    pub fn new(names: &Names, bins: &Bins, name: &'static str) -> Self {
        Self {
            name,
            ns: names.ns(name),
            control: names.control(name),
            vipd: None,
            services: Vec::new(),
            config: names.config(name),
            dir: names.node_dir(name),
            bins: bins.clone(),
        }
    }

    /// Starts vipd and waits for its control socket. (vipd puts the VIPs on `lo`, which the
    /// UDP service binds to, so it comes first.)
    pub fn start_vipd(&mut self) -> anyhow::Result<()> {
        let args = ["run", "--config", self.config.to_str().context("utf-8")?];
        let log = self.dir.join("vipd.log");
        let mut proc = Proc::spawn(&self.ns, &self.bins.vipd, &args, &log)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while status_of(&self.control, Duration::from_millis(500)).is_none() {
            if proc.exited() || Instant::now() > deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                bail!("vipd on {} did not come up:\n{log}", self.name);
            }
            pause(Duration::from_millis(50))?;
        }
        self.vipd = Some(proc);
        Ok(())
    }

    /// Starts every service (`vip-lab serve ...`) not running yet.
    pub fn start_services(&mut self) -> anyhow::Result<()> {
        for s in SERVICES {
            if self.services.iter().any(|(r, _)| *r == s) {
                continue;
            }
            let (port, vip) = (s.port.to_string(), s.vip.to_string());
            let args = [
                "serve",
                s.kind.arg(),
                "--port",
                &port,
                "--name",
                self.name,
                "--vip",
                &vip,
            ];
            let log = self.dir.join(format!("{}.log", s.name));
            let proc = Proc::spawn(&self.ns, &self.bins.lab, &args, &log)?;
            self.services.push((s, proc));
        }
        Ok(())
    }

    pub fn status(&self) -> Option<Status> {
        status_of(&self.control, Duration::from_millis(300))
    }

    /// SIGKILLs one service process (a crashed backend).
    pub fn kill_service(&mut self, name: &str) {
        self.services.retain(|(s, _)| s.name != name);
    }

    /// A planned restart, as the systemd unit does it: `vipd leave` (its VIPs move to the
    /// others), stop, start again (it adopts the pinned data plane).
    pub fn restart_vipd(&mut self) -> anyhow::Result<()> {
        match ask(&self.control, &Request::Leave, Duration::from_secs(5)) {
            Some(Response::Ok { .. }) => {}
            other => bail!("vipd leave on {}: {other:?}", self.name),
        }
        self.vipd = None;
        self.start_vipd()
    }

    /// SIGKILLs vipd and cuts the link: the controller is gone for the others.
    pub fn crash(&mut self) -> anyhow::Result<()> {
        self.vipd = None;
        ns_cmd(&self.ns, &["ip", "link", "set", "eth0", "down"])?;
        Ok(())
    }
}
