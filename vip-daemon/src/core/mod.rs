//! Pure cores: plain functions of (state, input, now) returning actions; no IO, no clock.

pub mod admin;
pub mod alloc;
pub mod announce;
pub mod backends;
pub mod budget;
pub mod drain;
pub mod flap;
pub mod health;
pub mod heartbeat;
pub mod host;
pub mod image;
pub mod layout;
pub mod log_limit;
pub mod maglev;
pub mod model;
pub mod ownership;
pub mod plan;
pub mod precompute;
pub mod seal;
pub mod selfcheck;
pub mod shared_health;
pub mod swim;
pub mod wire;
pub mod writer;
