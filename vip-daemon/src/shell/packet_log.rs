//! The reading end of `vipd debug packets`: the records the XDP program writes to its
//! `AYA_LOGS` ring buffer (aya-log), read from the attached program by its id and printed one
//! line each, with the verdict's integers turned into names.
use std::{
    io::Write,
    os::fd::{AsFd as _, AsRawFd as _},
    time::Duration,
};

use aya_log::EbpfLogger;
use vip_common::maps::reason;

/// Prints each record to stdout as one line.
struct Lines;

impl log::Log for Lines {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }

    fn log(&self, record: &log::Record) {
        let line = named(&record.args().to_string());
        // A closed stdout (`| head`) ends the stream at the next write check.
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }

    fn flush(&self) {
        let _ = std::io::stdout().flush();
    }
}

/// The program's record made readable: `verdict N` as the XDP action and the reason's name
/// (`verdict TX tx_l2`), IPv4-mapped addresses as plain IPv4 (`10.0.0.1:40000`).
pub fn named(record: &str) -> String {
    let words: Vec<String> = record.split(' ').map(plain_v4).collect();
    let mut out: Vec<String> = Vec::with_capacity(words.len() + 1);
    for (i, w) in words.iter().enumerate() {
        let verdict = (i > 0 && words[i - 1] == "verdict")
            .then(|| w.parse::<u32>().ok())
            .flatten();
        match verdict {
            Some(v) => {
                let action = ["ABORTED", "DROP", "PASS", "TX", "REDIRECT"].get((v >> 8) as usize);
                let reason = reason::NAMES.get((v & 0xff) as usize);
                match (action, reason) {
                    (Some(a), Some(r)) => out.push(format!("{a} {r}")),
                    _ => out.push(w.clone()),
                }
            }
            None => out.push(w.clone()),
        }
    }
    out.join(" ")
}

/// `[::ffff:10.0.0.1]:80` as `10.0.0.1:80`; anything else as it is.
fn plain_v4(word: &str) -> String {
    match word
        .strip_prefix("[::ffff:")
        .and_then(|w| w.split_once(']'))
    {
        Some((v4, rest)) if v4.parse::<std::net::Ipv4Addr>().is_ok() => format!("{v4}{rest}"),
        _ => word.to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PacketLogError {
    #[error("the log ring buffer of XDP program {id}: {source}")]
    Attach { id: u32, source: aya_log::Error },
    #[error("waiting for log records: {0}")]
    Poll(std::io::Error),
}

/// The log records of the XDP program `program_id`, printed as they come.
pub struct PacketLog {
    logger: EbpfLogger<Lines>,
}

impl PacketLog {
    pub fn open(program_id: u32) -> Result<Self, PacketLogError> {
        let logger = EbpfLogger::init_from_id_with_logger(program_id, Lines).map_err(|source| {
            PacketLogError::Attach {
                id: program_id,
                source,
            }
        })?;
        Ok(Self { logger })
    }

    /// Waits up to `wait` for records and prints those there are.
    pub fn print_for(&mut self, wait: Duration) -> Result<(), PacketLogError> {
        let mut fd = libc::pollfd {
            fd: self.logger.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut fd, 1, wait.as_millis() as i32) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(PacketLogError::Poll(e));
            }
        }
        self.logger.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_and_mapped_addresses_become_readable() {
        let tx = (reason::NAMES.iter())
            .position(|n| *n == "tx_l2")
            .expect("tx_l2");
        let verdict = (3 << 8) | tx;
        let record = format!(
            "[::ffff:10.0.0.1]:40000 > [::ffff:192.0.2.100]:80 vip 0 slot 12 backend 3 verdict {verdict}"
        );
        assert_eq!(
            named(&record),
            "10.0.0.1:40000 > 192.0.2.100:80 vip 0 slot 12 backend 3 verdict TX tx_l2"
        );
        // IPv6 stays bracketed; numbers after other words stay; an unknown verdict stays a
        // number.
        assert_eq!(
            named("[fd00::1]:5 > [fd00::2]:80 vip 3 verdict 99999"),
            "[fd00::1]:5 > [fd00::2]:80 vip 3 verdict 99999"
        );
    }
}
