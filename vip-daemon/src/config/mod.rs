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

mod check;
mod diag;
mod limits;
mod locate;
mod membership;
mod raw;
mod restart;
mod types;
mod validate;
mod vip;

use std::path::Path;

pub use check::{fmt_duration, parse_duration};
pub use diag::{ConfigError, Diagnostic};
pub use restart::restart_only_changes;
pub use types::*;
pub use vip::{backend_address_problem, BackendAddressProblem};

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&source, &path.display().to_string())
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
