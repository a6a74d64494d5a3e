//! What the capture thread reports (once a second) and the control
//! socket's `status` text made from it: per engine, per interface, per
//! fanout capture thread, and the delivery queues.

use crate::daemon::engine::ActiveSummary;
use crate::delivery::worker::DestStatus;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One interface of a capture thread, as last reported.
#[derive(Clone, Debug, Default)]
pub struct SourceStatus {
    pub name: String,
    /// Open and read (false while it is being reopened, or stopped).
    pub running: bool,
    /// Frames read from it.
    pub packets: u64,
    /// Frames libpcap lost before we read them (kernel ring full).
    pub pcap_dropped: u64,
    pub if_dropped: u64,
    /// Frames cut at the snap length.
    pub truncated: u64,
    /// Frames a fanout's capture threads had no room for in their queues
    /// to the engine (`capture.thread_queue`).
    pub queue_dropped: u64,
    pub error: Option<String>,
}

impl SourceStatus {
    /// Adds another socket of the same interface (a fanout's): counters
    /// summed, running only while both are, errors kept.
    pub fn add(&mut self, o: &SourceStatus) {
        self.running &= o.running;
        self.packets += o.packets;
        self.pcap_dropped += o.pcap_dropped;
        self.if_dropped += o.if_dropped;
        self.truncated += o.truncated;
        self.queue_dropped += o.queue_dropped;
        if self.error.is_none() {
            self.error.clone_from(&o.error);
        }
    }
}

/// What the capture thread last reported (once a second): its engine's
/// counters, and per interface in `sources`. The sums over the
/// interfaces are kept here too, for `status` and the API.
#[derive(Clone, Debug, Default)]
pub struct CaptureStatus {
    /// The interfaces the engine reads, joined by `+` (one interface: its
    /// name), the `interface` label of the engine's metrics.
    pub interface: String,
    pub running: bool,
    pub packets: u64,
    pub sip_messages: u64,
    pub rtp_routed: u64,
    pub rtp_foreign: u64,
    pub calls: u64,
    pub recorded: u64,
    pub active_recorded: u64,
    /// Frames libpcap lost before we read them (kernel ring full).
    pub pcap_dropped: u64,
    pub if_dropped: u64,
    /// RTP the shard rings had no room for.
    pub ring_dropped: u64,
    /// Frames cut at the snap length.
    pub truncated: u64,
    /// Recorded calls with no decodable audio (never delivered).
    pub undecodable: u64,
    /// Frames whose time stamp the clock did not believe (placed by it).
    pub clock_outliers: u64,
    /// INVITEs not followed because their source had too many early dialogs.
    pub invites_throttled: u64,
    /// SIP messages over `limits.sip_message_bytes`, dropped.
    pub sip_oversized: u64,
    /// The recorded calls in progress, as the capture thread last
    /// published them (at once when the set changes): `status` answers
    /// from here without waiting for the capture thread.
    pub calls_in_progress: Vec<ActiveSummary>,
    pub error: Option<String>,
    /// Calls not recorded, by the history's reason.
    pub skipped: std::collections::BTreeMap<String, u64>,
    /// The announcer's counters (None without announcements).
    pub announce: Option<crate::announce::announcer::AnnounceStats>,
    /// Per interface.
    pub sources: Vec<SourceStatus>,
    /// Per capture thread of a fanout (`capture.threads` above one) and
    /// interface: frames it read, and what its queue had no room for. How
    /// the kernel's hash spread the flows: one flow flooding one thread
    /// shows here.
    pub threads: Vec<ThreadStatus>,
}

/// One fanout capture thread's socket on one interface.
#[derive(Clone, Debug, Default)]
pub struct ThreadStatus {
    pub interface: String,
    pub thread: usize,
    pub packets: u64,
    pub queue_dropped: u64,
}

pub type Shared = Arc<Mutex<Vec<CaptureStatus>>>;

pub(super) fn status_text(
    shared: &Shared,
    dests: &[Arc<DestStatus>],
    calls: &[ActiveSummary],
    utc_offset_secs: i32,
) -> String {
    let mut s = String::new();
    let caps = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let active: u64 = caps.iter().map(|c| c.active_recorded).sum();
    let _ = writeln!(s, "active recorded calls {active}");
    for c in calls {
        let _ = writeln!(
            s,
            "  call {}  contract {}  {}  answered {}",
            c.short_id,
            c.contract,
            c.direction,
            c.answered_at.rfc3339(utc_offset_secs)
        );
    }
    for c in &caps {
        let _ = writeln!(
            s,
            "capture {}: {}  packets {}  sip {}  rtp {}  calls {}  recorded {}  dropped: pcap {} interface {} queue {} ring {}  cut {}  foreign rtp {}{}",
            c.interface,
            match (c.running, c.sources.iter().any(|s| !s.running)) {
                (false, _) => "stopped",
                // An interface (or a capture thread's socket) is lost.
                (true, true) => "degraded",
                (true, false) => "running",
            },
            c.packets,
            c.sip_messages,
            c.rtp_routed,
            c.calls,
            c.recorded,
            c.pcap_dropped,
            c.if_dropped,
            c.sources.iter().map(|s| s.queue_dropped).sum::<u64>(),
            c.ring_dropped,
            c.truncated,
            c.rtp_foreign,
            c.error
                .as_deref()
                .map(|e| format!("  error: {e}"))
                .unwrap_or_default()
        );
        // Several interfaces feed the engine, or one is lost: each one's
        // own counters.
        let each = c.sources.len() > 1 || c.sources.iter().any(|s| !s.running);
        for src in c.sources.iter().filter(|_| each) {
            let _ = writeln!(
                s,
                "  interface {}: {}  packets {}  dropped: pcap {} interface {}  cut {}{}",
                src.name,
                if src.running { "running" } else { "lost" },
                src.packets,
                src.pcap_dropped,
                src.if_dropped,
                src.truncated,
                src.error
                    .as_deref()
                    .map(|e| format!("  error: {e}"))
                    .unwrap_or_default()
            );
        }
        for t in &c.threads {
            let _ = writeln!(
                s,
                "  capture thread {} on {}: packets {}  queue dropped {}",
                t.thread, t.interface, t.packets, t.queue_dropped
            );
        }
    }
    if let Some(h) = crate::capture::hep_listen::published() {
        let _ = writeln!(s, "{}", h.status_line());
    }
    let now = SystemTime::now();
    for d in dests {
        let q = d.snapshot(now);
        let _ = writeln!(
            s,
            "queue {}: ready {}  inflight {}  held {}  quarantine {}  delivered {}  oldest {}{}",
            q.destination,
            q.ready,
            q.inflight,
            q.held,
            q.quarantine,
            d.delivered.load(Ordering::Relaxed),
            q.oldest_ready_unix_ms
                .map(|ms| {
                    let now_ms = now
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_millis() as u64;
                    format!("{} s", now_ms.saturating_sub(ms) / 1000)
                })
                .unwrap_or_else(|| "-".into()),
            d.last_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .map(|e| format!("  last error: {e}"))
                .unwrap_or_default()
        );
    }
    s
}
