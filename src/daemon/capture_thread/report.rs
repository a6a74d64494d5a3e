//! What the capture thread publishes: the calls in progress for `status`
//! (when they change), and once a second the engine's and each
//! interface's (and each fanout capture thread's) counters for `status`
//! and the metrics. Apart from the loop that reads frames, which is
//! what the parent module is about.

use super::{CaptureThread, Input, Source};
use crate::capture::LiveStats;
use crate::daemon::run::{CaptureStatus, SourceStatus, ThreadStatus};
use std::sync::atomic::{AtomicU64, Ordering};

impl CaptureThread {
    /// Puts the list of recorded calls in progress where `status` reads
    /// it, whenever a call was answered or ended since the last look (the
    /// count of calls in progress, or of recorded calls ended, moved), so
    /// the control socket never waits for this thread to be scheduled.
    pub(super) fn publish_calls_if_changed(&mut self) {
        let now = (self.engine.recording_now(), self.engine.stats().recorded);
        if now == self.published {
            return;
        }
        self.published = now;
        let calls = self.engine.active_calls();
        let mut all = self.links.shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = all.first_mut() {
            s.calls_in_progress = calls;
        }
    }

    pub(super) fn set_error(&self, e: String) {
        let mut all = self.links.shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = all.first_mut() {
            s.error = Some(e);
        }
    }

    /// Publishes the engine's and each interface's counters for `status`
    /// and the metrics.
    pub(super) fn report(&mut self, running: bool) {
        let mut sources: Vec<SourceStatus> = Vec::new();
        let mut threads = Vec::new();
        for i in &mut self.inputs {
            let s = source_status(i, running);
            if let Some(thread) = i.thread {
                threads.push(ThreadStatus {
                    interface: s.name.clone(),
                    thread,
                    packets: s.packets,
                    queue_dropped: s.queue_dropped,
                });
            }
            // A fanout's sockets of one interface are one interface.
            match sources.iter_mut().find(|o| o.name == s.name) {
                Some(o) => o.add(&s),
                None => sources.push(s),
            }
        }
        let engine = &self.engine;
        let st = engine.stats();
        let sum = |f: fn(&SourceStatus) -> u64| sources.iter().map(f).sum::<u64>();
        let error = sources
            .iter()
            // A capture error names its interface ([`crate::capture::CaptureError`]).
            .filter_map(|s| s.error.clone())
            .collect::<Vec<_>>();
        let mut all = self.links.shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = all.first_mut() {
            *s = CaptureStatus {
                interface: s.interface.clone(),
                running,
                packets: st.packets,
                sip_messages: st.sip_messages,
                rtp_routed: st.rtp_routed,
                rtp_foreign: st.rtp_foreign,
                calls: st.calls,
                recorded: st.recorded,
                active_recorded: engine.active_recorded() as u64,
                pcap_dropped: sum(|s| s.pcap_dropped),
                if_dropped: sum(|s| s.if_dropped),
                ring_dropped: engine.ring_drops(),
                truncated: sum(|s| s.truncated),
                undecodable: st.undecodable,
                clock_outliers: st.clock_outliers,
                invites_throttled: engine.tracker_stats().invites_throttled,
                sip_oversized: engine.decode_stats().sip_oversized,
                error: (!error.is_empty()).then(|| error.join("; ")),
                skipped: st.skipped.clone(),
                announce: engine.announce_stats(),
                calls_in_progress: std::mem::take(&mut s.calls_in_progress),
                sources,
                threads,
            };
        }
    }
}

/// Where one input stands, for `status` and the metrics.
fn source_status(i: &mut Input, running: bool) -> SourceStatus {
    let (open, now, queue_dropped) = match &mut i.source {
        Source::Open(s) => (true, s.stats().unwrap_or_default(), 0),
        Source::Hep(h) => {
            crate::capture::hep_listen::publish(h.stats());
            (true, LiveStats::default(), 0)
        }
        Source::Lost { .. } => (false, LiveStats::default(), 0),
        Source::Queue(q) => {
            let sh = &q.shared;
            let lost = sh.lost();
            i.error = lost.map(|l| l.1);
            let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
            let st = LiveStats {
                received: n(&sh.pushed),
                dropped: n(&sh.pcap_dropped),
                if_dropped: n(&sh.if_dropped),
                truncated: n(&sh.truncated),
            };
            (i.error.is_none(), st, n(&sh.dropped))
        }
    };
    SourceStatus {
        name: i.name.clone(),
        running: running && open,
        packets: i.packets,
        pcap_dropped: i.carried.dropped + now.dropped,
        if_dropped: i.carried.if_dropped + now.if_dropped,
        truncated: i.carried.truncated + now.truncated,
        queue_dropped,
        error: i.error.clone(),
    }
}
