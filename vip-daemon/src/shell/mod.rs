//! IO adapters. Only these modules touch aya, netlink, sockets or the clock.

pub mod bpffs;
pub mod dataplane;
