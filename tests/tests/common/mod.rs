//! The cluster harness, shared by the cluster test binaries (it lives in the library, where
//! `vip-lab bench failover` uses it too).
#![allow(unused_imports, dead_code)] // each test binary uses its own part
pub use vip_tests::cluster::*;
pub mod services;
