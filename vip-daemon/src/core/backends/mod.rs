//! Every backend's runtime state and the decisions made from it, as a pure machine: the
//! shell feeds probe results, operator changes, next hops, service socket facts, the
//! cluster's verdicts and reloads with the time they were observed, and executes the
//! returned [`Action`]s (publish a VIP's table, write a BACKENDS entry, gossip, save the state
//! file, log). No IO, no clock: tests replay timelines with simulated instants.
//!
//! Its BACKENDS entry is computed from this state by `core::image::backend_value`.
//!
//! Backends are keyed by their index in the allocation plus the identity's serial
//! (`core::alloc`): a reload that gives an index to another backend changes the serial, so
//! results of the old backend's prober are recognised and dropped. The shell keeps only what
//! is IO beside it (the prober task of each index).
//!
//! # Rules
//! Each has a test in `tests.rs`.
//! * *In the table* ([`Backend::effective_weight`]): up (the cluster's verdict where there is
//!   one, else this node's), its service socket not known gone, enabled, weight > 0, and
//!   local or reachable (a resolved MAC; on-link for L2 forwarding).
//!   `listening_false_takes_a_local_backend_out_and_is_shared`,
//!   `cluster_view_overrides_the_local_verdict`.
//! * *Keeps its established flows* ([`Backend::keeps_flows`]): in the table, or out of it
//!   only for new flows (drained within its drain timeout, weight 0) while it would be
//!   serviceable. A drain's timeout passing clears it, with one BACKENDS write, and a longer
//!   `--timeout` given again restores it. `drain_then_timeout_gives_up_flows_once`.
//! * *Track faults* ([`Input::LocalFault`]): a failed `track` condition of this node takes
//!   its local backends out (no flows kept: the node itself is failing) and shares them as
//!   not serving, so every node's tables agree; recovery brings them back.
//!   `a_track_fault_takes_local_backends_out_and_back`.
//! * *Verdicts* follow rise/fall and flap damping (`core::health`); a disabled backend's
//!   results change nothing. A verdict publishes its VIP, is shared, saved at once, and
//!   logged at INFO within a burst-then-one-per-10 s limit (DEBUG beyond). Damping holds a
//!   flapping backend down, so publishes stay bounded whatever the probes do.
//!   `flap_damping_holds_a_flapping_backend_down_and_bounds_publishes`,
//!   `stale_prober_results_are_dropped`.
//! * *Reload* keeps the state of an unchanged identity (verdict, penalty, admin state, next
//!   hop; new thresholds, and the file's weight when the file's weight changed) and starts a
//!   changed one afresh, down. `reload_keeps_a_verdict_for_an_unchanged_identity_only`.
//! * *Restart* ([`restart_health`]): a verdict survives a restart of vipd; the live table
//!   read back from adopted maps is the truth, else a state file as fresh as the maps.
//!   `a_restart_keeps_verdicts_from_the_kernel_or_a_fresh_state_file`.
//! * *Operator changes* are shared (except the cluster's own register, applied as is),
//!   publish the VIP marked as an operator's change, and are saved at once.
//!   `drain_then_timeout_gives_up_flows_once`.
mod machine;
mod reach;
mod state;

pub use machine::{Action, AdminChange, Backends, Input, Level, Note, Now, Share};
pub use reach::{NextHop, NoRoute};
pub use state::{restart_health, Admin, Backend, BackendAdmin, ProbeResult, Remembered, Spec};

#[cfg(test)]
mod tests;
