//! Wiring: threads, the capture loop, the control socket, metrics, systemd.

pub mod control;
pub mod engine;
pub mod logging;
pub mod media;
pub mod shard;
