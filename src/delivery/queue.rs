//! `callrec queue list|retry|hold|release` and `callrec replay --deliver`.
//!
//! The commands work on the spool folders directly (rename only), so they
//! are safe while the daemon runs: a worker that loses a race for a file
//! simply skips it. `retry` also drops a `retry-now` marker that makes the
//! destination's worker end its backoff at once.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::DeliveryError;
use super::spool::{QueueState, Spool};
use super::worker::{DestStatus, RETRY_NOW, STATUS_FILE, StatusSnapshot, SystemClock, Workers};
use crate::config::Config;

/// A queue command; `None` as destination means every destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueueCmd {
    List,
    /// held -> ready, and end the backoff now.
    Retry {
        destination: Option<String>,
    },
    /// ready -> held.
    Hold {
        destination: Option<String>,
    },
    /// held -> ready.
    Release {
        destination: Option<String>,
    },
}

fn spool_err(spool: &Spool) -> impl Fn(std::io::Error) -> DeliveryError + '_ {
    move |source| DeliveryError::Spool {
        path: spool.root().to_path_buf(),
        source,
    }
}

fn selected(cfg: &Config, dest: &Option<String>) -> Result<Vec<String>, DeliveryError> {
    match dest {
        Some(d) => {
            cfg.destination(d)
                .ok_or_else(|| DeliveryError::UnknownDestination(d.clone()))?;
            Ok(vec![d.clone()])
        }
        None => Ok(cfg.destinations.iter().map(|d| d.name.clone()).collect()),
    }
}

fn move_all(
    spool: &Spool,
    dest: &str,
    from: QueueState,
    to: QueueState,
    now: SystemTime,
) -> Result<usize, DeliveryError> {
    let mut n = 0;
    for stem in spool.list(dest, from).map_err(spool_err(spool))? {
        match spool.move_to(dest, &stem, from, to) {
            Ok(()) => {
                if to == QueueState::Ready {
                    // Restart the hold_after clock, or it would be held again at once.
                    let _ = spool.touch(dest, to, &stem, now);
                }
                n += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(spool_err(spool)(e)),
        }
    }
    Ok(n)
}

/// Runs a queue command against `cfg.recording.spool_dir`; returns the text to print.
pub fn queue_command(cfg: &Config, cmd: QueueCmd) -> Result<String, DeliveryError> {
    let spool = Spool::open(&cfg.recording.spool_dir).map_err(|source| DeliveryError::Spool {
        path: cfg.recording.spool_dir.clone(),
        source,
    })?;
    let now = SystemTime::now();
    let mut out = String::new();
    match cmd {
        QueueCmd::List => {
            let _ = writeln!(
                out,
                "{:<16} {:>7} {:>8} {:>7} {:>6} {:>10} {:>10} {:>7}  last error",
                "destination",
                "ready",
                "inflight",
                "done",
                "held",
                "quarantine",
                "oldest",
                "retries"
            );
            let mut names: Vec<String> = cfg.destinations.iter().map(|d| d.name.clone()).collect();
            // Queues left from destinations no longer configured still hold recordings.
            for d in spool.destinations().map_err(spool_err(&spool))? {
                if !names.contains(&d) {
                    names.push(d);
                }
            }
            for name in names {
                let count = |s| {
                    spool
                        .list(&name, s)
                        .map(|v| v.len())
                        .map_err(spool_err(&spool))
                };
                let ready = spool
                    .list(&name, QueueState::Ready)
                    .map_err(spool_err(&spool))?;
                let oldest = ready
                    .first()
                    .and_then(|s| spool.stamp(&name, QueueState::Ready, s).ok())
                    .map(|t| human(now.duration_since(t).unwrap_or(Duration::ZERO)))
                    .unwrap_or_else(|| "-".into());
                let status: Option<StatusSnapshot> =
                    std::fs::read(spool.queue_dir(&name).join(STATUS_FILE))
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok());
                let _ = writeln!(
                    out,
                    "{:<16} {:>7} {:>8} {:>7} {:>6} {:>10} {:>10} {:>7}  {}",
                    name,
                    ready.len(),
                    count(QueueState::Inflight)?,
                    count(QueueState::Done)?,
                    count(QueueState::Held)?,
                    count(QueueState::Quarantine)?,
                    oldest,
                    status.as_ref().map(|s| s.retries).unwrap_or(0),
                    status
                        .and_then(|s| s.last_error)
                        .unwrap_or_else(|| "-".into()),
                );
            }
        }
        QueueCmd::Retry { destination } => {
            for name in selected(cfg, &destination)? {
                spool.ensure_destination(&name).map_err(spool_err(&spool))?;
                let n = move_all(&spool, &name, QueueState::Held, QueueState::Ready, now)?;
                crate::recording::perms::write(&spool.queue_dir(&name).join(RETRY_NOW), b"")
                    .map_err(spool_err(&spool))?;
                let _ = writeln!(
                    out,
                    "{name}: {n} held recording(s) back to ready; retrying now"
                );
            }
        }
        QueueCmd::Hold { destination } => {
            for name in selected(cfg, &destination)? {
                spool.ensure_destination(&name).map_err(spool_err(&spool))?;
                let n = move_all(&spool, &name, QueueState::Ready, QueueState::Held, now)?;
                let _ = writeln!(out, "{name}: {n} recording(s) held");
            }
        }
        QueueCmd::Release { destination } => {
            for name in selected(cfg, &destination)? {
                spool.ensure_destination(&name).map_err(spool_err(&spool))?;
                let n = move_all(&spool, &name, QueueState::Held, QueueState::Ready, now)?;
                let _ = writeln!(out, "{name}: {n} recording(s) released to ready");
            }
        }
    }
    Ok(out)
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Per destination result of [`deliver_until_empty`].
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DestinationReport {
    pub destination: String,
    /// Delivered during this run.
    pub delivered: u64,
    /// Held or quarantined during this run.
    pub failed: u64,
    /// Still in ready or inflight when the run ended.
    pub remaining: u64,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DeliveryReport {
    pub destinations: Vec<DestinationReport>,
    /// True when the timeout passed with recordings still queued.
    pub timed_out: bool,
}

/// Runs the delivery workers over `spool` until every destination's ready
/// and inflight queues are empty, or `timeout` passes. Start-up recovery
/// runs first (inflight back to ready, damaged files quarantined).
pub fn deliver_until_empty(
    cfg: &Config,
    spool: &Path,
    timeout: Duration,
) -> Result<DeliveryReport, DeliveryError> {
    let spool = Spool::open(spool).map_err(|source| DeliveryError::Spool {
        path: spool.to_path_buf(),
        source,
    })?;
    for d in &cfg.destinations {
        spool
            .ensure_destination(&d.name)
            .map_err(spool_err(&spool))?;
    }
    spool
        .recover_at_startup(SystemTime::now())
        .map_err(spool_err(&spool))?;
    let workers = Workers::start(cfg, &spool, Arc::new(SystemClock)).map_err(spool_err(&spool))?;
    let deadline = Instant::now() + timeout;
    let pending = |name: &str| -> u64 {
        [QueueState::Ready, QueueState::Inflight]
            .iter()
            .map(|s| spool.list(name, *s).map(|v| v.len() as u64).unwrap_or(0))
            .sum()
    };
    let names: HashSet<String> = cfg.destinations.iter().map(|d| d.name.clone()).collect();
    let mut timed_out = false;
    loop {
        if names.iter().all(|n| pending(n) == 0) {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut report = DeliveryReport {
        destinations: Vec::new(),
        timed_out,
    };
    // A worker moves a file out of ready/inflight before it updates its
    // counters: read them only once every worker has stopped.
    let statuses: Vec<Arc<DestStatus>> = workers.statuses().to_vec();
    workers.stop();
    for st in &statuses {
        let snap = st.snapshot(SystemTime::now());
        report.destinations.push(DestinationReport {
            destination: snap.destination.clone(),
            delivered: snap.delivered,
            failed: snap.failed,
            remaining: 0,
            last_error: snap.last_error,
        });
    }
    for r in &mut report.destinations {
        r.remaining = pending(&r.destination);
    }
    Ok(report)
}
