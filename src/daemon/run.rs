//! `callrec run`: the daemon.

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("live capture is not available in this build")]
    Unavailable,
}

pub fn run(_cfg: Config) -> Result<(), RunError> {
    Err(RunError::Unavailable)
}
