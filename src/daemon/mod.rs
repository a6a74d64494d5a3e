//! Wiring: threads, the capture loop, the control socket, metrics, systemd.

pub mod api;
pub mod capture_thread;
pub mod clock;
pub mod control;
pub mod engine;
pub mod finisher;
pub mod http;
pub mod journal;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod recovery;
pub mod replay;
pub mod routes;
pub mod run;
pub mod shard;
pub mod signals;
pub mod status;
pub mod systemd;

use crate::config::Config;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// The last alarm raised in this process, for systemd's `STATUS=` line.
static LAST_ALARM: Mutex<Option<String>> = Mutex::new(None);

/// Records `what` as the last alarm (the caller logs it at error level).
pub fn raise_alarm(what: String) {
    *LAST_ALARM.lock().unwrap_or_else(|e| e.into_inner()) = Some(what);
}

/// The last alarm raised, if any.
pub fn last_alarm() -> Option<String> {
    LAST_ALARM.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// `replay --deliver`: pushes what the replay recorded and waits until the
/// queues are empty or `timeout` passes. Returns (all delivered, report).
pub fn deliver_after_replay(cfg: &Config, spool: &Path, timeout: Duration) -> (bool, String) {
    match crate::delivery::queue::deliver_until_empty(cfg, spool, timeout) {
        Ok(r) => {
            let mut text = String::new();
            for d in &r.destinations {
                text.push_str(&format!(
                    "delivery {}: delivered {}  failed {}  remaining {}{}\n",
                    d.destination,
                    d.delivered,
                    d.failed,
                    d.remaining,
                    d.last_error
                        .as_deref()
                        .map(|e| format!("  last error: {e}"))
                        .unwrap_or_default()
                ));
            }
            if r.timed_out {
                text.push_str("delivery: timed out with recordings still queued\n");
            }
            let ok = !r.timed_out
                && r.destinations
                    .iter()
                    .all(|d| d.failed == 0 && d.remaining == 0);
            (ok, text)
        }
        Err(e) => (false, format!("delivery: {e}\n")),
    }
}
