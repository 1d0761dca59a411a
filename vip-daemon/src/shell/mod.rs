//! IO adapters. Only these modules touch aya, netlink, sockets or the clock.

pub mod bpffs;
pub mod control;
pub mod dataplane;
pub mod gossip;
pub mod heartbeat;
pub mod hooks;
pub mod host;
pub mod keyfile;
pub mod metrics;
pub mod neighbours;
pub mod offload;
pub mod packet_log;
pub mod precompute;
pub mod probes;
pub mod routes;
pub mod sockwatch;
pub mod state;
pub mod status;
pub mod track;
pub mod vipaddr;
