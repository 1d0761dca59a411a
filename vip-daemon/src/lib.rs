//! vipd as a library: pure cores (`core`) and thin IO shells (`shell`). The binary in
//! `main.rs` only parses the command line and calls into here.

pub mod app;
pub mod config;
pub mod core;
pub mod import;
pub mod shell;
