//! `vipd.toml`: the daemon's configuration file. [`load`] reads, parses and validates it into
//! a [`Config`] with every default applied; any problem comes back as
//! [`ConfigError::Invalid`] with one [`Diagnostic`] per problem (`file:line: field: message`).
//!
//! The file has a `[node]` section (differs per controller), `[cluster]` (must be identical
//! on every controller), `[metrics]`, `[control]`, `[defaults.check]` and one `[[vip]]` table
//! per service, each with its `[[vip.backend]]` tables. `examples/minimal.toml` and
//! `examples/openstack-controllers.toml` document every key.
//!
//! Layout: `raw` (serde shapes, all keys optional), `validate` + `vip` + `check` (the rules),
//! `locate` (field path ↔ line), `diag` (diagnostics), `types` (the resolved output).

mod bgp;
mod check;
mod diag;
mod limits;
mod locate;
mod membership;
mod ops;
mod raw;
mod restart;
mod types;
mod validate;
mod vip;

use std::path::Path;

pub use bgp::Bgp;
pub use check::{fmt_duration, parse_duration};
pub use diag::{ConfigError, Diagnostic};
pub use limits::cpus as limits_cpus;
pub use ops::{Hooks, StatusSocket, Track, TrackScript};
pub use restart::restart_only_changes;
pub use types::*;
pub use vip::{backend_address_problem, BackendAddressProblem};

/// Largest config file read: far beyond any real one, small enough that reading a device or
/// a huge file by mistake cannot take the memory.
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Reads, parses and validates the config file at `path`; `-` reads standard input (named
/// `<stdin>` in diagnostics). Anything but a regular file (a FIFO, a device, a directory) is
/// refused, and so is a file over [`MAX_FILE_BYTES`].
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    };
    if path == Path::new("-") {
        let source = read_capped(std::io::stdin().lock()).map_err(io)?;
        return parse(&source, "<stdin>");
    }
    let source = read_file(path).map_err(io)?;
    parse(&source, &path.display().to_string())
}

/// A regular file's text, at most [`MAX_FILE_BYTES`]. Opened non-blocking so that opening a
/// FIFO without a writer does not hang before it is refused.
fn read_file(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    let t = meta.file_type();
    if !t.is_file() {
        let what = if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() {
            "a character device"
        } else if t.is_block_device() {
            "a block device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        let msg = format!("it is {what}: expected a regular file, or `-` to read standard input");
        return Err(Error::new(ErrorKind::InvalidInput, msg));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    read_capped(file)
}

/// All of `r` as UTF-8, refusing more than [`MAX_FILE_BYTES`].
fn read_capped(r: impl std::io::Read) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    let mut bytes = Vec::new();
    r.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| {
        let msg = format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        );
        Error::new(ErrorKind::InvalidData, msg)
    })
}

fn too_large() -> std::io::Error {
    let msg = format!(
        "larger than {} MiB: not a vipd config (the limit guards against reading a device or \
         a huge file by mistake)",
        MAX_FILE_BYTES >> 20
    );
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// Parses and validates `source`; diagnostics name `file_name`. A syntax error stops at the
/// first; unknown keys and type errors are all reported (up to [`MAX_SHAPE_ERRORS`]), and
/// when there are none, every semantic problem is.
pub fn parse(source: &str, file_name: &str) -> Result<Config, ConfigError> {
    let locator = locate::Locator::new(source);
    let raw: raw::RawConfig = match toml::from_str(source) {
        Ok(raw) => raw,
        Err(e) => {
            if !locator.parsed() {
                let syntax = diag::from_toml_error(&locator, file_name, &e);
                return Err(ConfigError::Invalid(vec![syntax]));
            }
            return Err(ConfigError::Invalid(diag::shape_errors(
                &locator, file_name, &e,
            )));
        }
    };
    let mut cx = diag::Ctx::new(&locator, file_name);
    let config = validate::validate(&raw, &mut cx);
    cx.finish().map(|()| config)
}

/// At most this many unknown-key and type errors are reported per run (each one found costs
/// a parse of the file).
pub const MAX_SHAPE_ERRORS: usize = 50;
