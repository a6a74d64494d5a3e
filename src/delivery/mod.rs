//! Delivery: durable per-destination queues that push finished recordings
//! to the subscribers' own servers over SFTP.
//!
//! * [`spool`]: the files-are-the-queue spool; every state change is a rename.
//! * [`sftp`]: one SFTP connection with a pinned host key and the remote
//!   publish protocol (temporary name, fsync, size check, rename, JSON last).
//! * [`worker`]: one thread per destination, with backoff, hold and status.
//! * [`queue`]: the `callrec queue` commands and `replay --deliver`.

pub mod lock;
pub mod queue;
pub mod sftp;
pub mod spool;
pub mod worker;

pub use queue::{DeliveryReport, DestinationReport, QueueCmd, deliver_until_empty, queue_command};
pub use sftp::SftpError;
pub use spool::{QueueState, Spool, SpoolUsage};
pub use worker::{Clock, DestStatus, StatusSnapshot, SystemClock, Workers};

/// Errors of the delivery commands, each naming what and where.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("spool {path}: {source}")]
    Spool {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("unknown destination {0:?}")]
    UnknownDestination(String),
    #[error("destination {name}: {reason}")]
    Destination { name: String, reason: String },
}
