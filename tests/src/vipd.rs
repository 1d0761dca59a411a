//! A real `vipd` process inside a network namespace, with its own config, pin directory and
//! control socket; killed (SIGKILL) on drop so a failing test leaves nothing running.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{unique, vipd_bin, NetNs, PinDir};

pub struct Vipd {
    pub ns_name: String,
    pub config: PathBuf,
    pub control: PathBuf,
    pub pins: PathBuf,
    pub log: PathBuf,
    /// The binary `spawn` starts and `cli` runs.
    pub bin: PathBuf,
    child: Option<Child>,
}

impl Vipd {
    /// Writes `config` (with `@PIN_DIR@` and `@CONTROL@` replaced) and starts vipd in `ns`.
    pub fn start(ns: &NetNs, pins: &PinDir, config: &str) -> Self {
        Self::start_bin(ns, pins, config, &vipd_bin())
    }

    /// As [`Vipd::start`], with the binary at `bin`.
    pub fn start_bin(ns: &NetNs, pins: &PinDir, config: &str, bin: &std::path::Path) -> Self {
        let dir = std::env::temp_dir().join(unique("vipd-test-"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let control = dir.join("vipd.sock");
        let mut text = config
            .replace("@PIN_DIR@", pins.path.to_str().expect("utf-8"))
            .replace("@CONTROL@", control.to_str().expect("utf-8"));
        // Each test's own state file (it survives restarts of this vipd, not the test): one
        // left in the default directory by an earlier run must not bring back its admin state.
        if !text.contains("state_dir") {
            if let Some(at) = text.find("[node]\n") {
                let line = format!("state_dir = \"{}\"\n", dir.display());
                text.insert_str(at + "[node]\n".len(), &line);
            }
        }
        let path = dir.join("vipd.toml");
        std::fs::write(&path, text).expect("write config");
        let mut v = Self {
            ns_name: ns.name.clone(),
            config: path,
            control,
            pins: pins.path.clone(),
            log: dir.join("vipd.log"),
            bin: bin.to_path_buf(),
            child: None,
        };
        v.spawn();
        v
    }

    /// (Re)starts the process and waits until its control socket answers.
    pub fn spawn(&mut self) {
        let bin = self.bin.clone();
        self.spawn_bin(&bin);
    }

    /// (Re)starts the process from the binary at `bin` (an upgrade when it is another build;
    /// `cli` uses it from then on) and waits until its control socket answers.
    pub fn spawn_bin(&mut self, bin: &std::path::Path) {
        self.bin = bin.to_path_buf();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns_name))
            .arg("--")
            .arg(bin)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn vipd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.cli(&["status", "--json"]).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("vipd exited early ({status}):\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("vipd did not come up:\n{}", self.logs());
    }

    /// Runs `vipd --control <sock> ARGS`; Ok(stdout) or Err(stderr).
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .arg("--control")
            .arg(&self.control)
            .args(args)
            .output()
            .expect("run vipd cli");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn status_json(&self) -> serde_json::Value {
        let text = self.cli(&["status", "--json"]).expect("status");
        serde_json::from_str(&text).expect("status json")
    }

    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// The running process's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, as `systemctl stop` sends it; returns how long the process took to exit
    /// (reaped), or panics if it did not within 10 s or exited with a failure.
    pub fn terminate(&mut self) -> Duration {
        let mut c = self.child.take().expect("vipd is running");
        let t0 = Instant::now();
        // SAFETY: plain kill(2) on our own, not yet reaped, child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        loop {
            if let Some(status) = c.try_wait().expect("wait vipd") {
                let took = t0.elapsed();
                assert!(
                    status.success(),
                    "vipd exited with {status}:\n{}",
                    self.logs()
                );
                return took;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = c.kill();
                let _ = c.wait();
                panic!("vipd still running 10 s after SIGTERM:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// As a reboot would: SIGKILL, the pinned program and maps gone, a fresh start.
    pub fn reboot(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.pins);
        self.spawn();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Vipd {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- vipd log ---\n{}", self.logs());
        }
    }
}
