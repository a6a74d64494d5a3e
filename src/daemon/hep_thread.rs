//! The capture thread of `capture.hep_listen`: HEP packets from capture
//! agents into an engine of their own, the way an interface's capture
//! thread feeds its engine ([`super::capture_thread`]): non-blocking
//! reads in batches, a wait on the listener's descriptors and the
//! [`Waker`] at once, the wall clock on a silent listener, control
//! requests answered, counters published once a second.
//!
//! Each agent is its own capture point (`hep:<capture id>`), so an agent
//! whose clock is off gets its own offset and cannot move the clock of
//! the others (`Engine::set_capture_point`).

use super::capture_thread::{ControlReq, Links, TICK};
use super::engine::Engine;
use super::run::{CaptureStatus, Shared};
use crate::capture::{HepListener, PacketSource};
use crate::config::Config;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Frames read in one go before the thread looks at the clock.
const BATCH: u64 = 4096;

pub struct HepThread {
    /// Index of this thread's entry in [`Shared`].
    pub index: usize,
    pub cfg: Arc<Config>,
    pub engine: Engine,
    pub links: Links,
    /// (calls in progress, recorded calls ended) when last published.
    pub published: (usize, u64),
}

impl HepThread {
    /// Runs until the stop flag is set; open calls are then ended.
    pub fn run(mut self, mut src: HepListener) -> Result<(), String> {
        let mut last_report = Instant::now();
        let mut point = String::new();
        while !self.links.stop.load(Ordering::Relaxed) {
            self.links
                .heartbeat
                .store(self.links.clock.millis(), Ordering::Relaxed);
            let mut n = 0u64;
            while n < BATCH {
                match src.next_packet_at_point() {
                    Ok(Some((pkt, p))) => {
                        let p = p.unwrap_or("hep");
                        if p != point {
                            point = p.to_owned();
                            self.engine.set_capture_point(&point);
                        }
                        self.engine.on_packet(&pkt);
                        n += 1;
                        if n.is_multiple_of(64) {
                            self.serve_control();
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            self.serve_control();
            if n == 0 {
                self.engine.on_idle(self.links.clock.now());
                src.wait(&self.links.waker, TICK);
            }
            self.publish_calls_if_changed();
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                self.engine.on_idle(self.links.clock.now());
                self.report(&src, true);
            }
        }
        self.report(&src, false);
        let stats = self.engine.finish("shutdown");
        tracing::info!(
            packets = stats.packets,
            recorded = stats.recorded,
            "HEP capture stopped"
        );
        Ok(())
    }

    fn publish_calls_if_changed(&mut self) {
        let now = (self.engine.recording_now(), self.engine.stats().recorded);
        if now == self.published {
            return;
        }
        self.published = now;
        let calls = self.engine.active_calls();
        let mut all = self.links.shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = all.get_mut(self.index) {
            s.calls_in_progress = calls;
        }
    }

    fn serve_control(&mut self) {
        while let Ok(req) = self.links.control.try_recv() {
            match req {
                ControlReq::Pause {
                    call,
                    paused,
                    reply,
                } => {
                    let _ = reply.send(self.engine.set_paused(&call, paused));
                }
                ControlReq::Reload(cfg) => {
                    self.engine.reload(cfg.clone());
                    self.cfg = cfg;
                }
            }
        }
    }

    /// Publishes the engine's counters (as an interface's) and the listener's.
    fn report(&self, src: &HepListener, running: bool) {
        crate::capture::hep_listen::publish(src.stats());
        let e = &self.engine;
        let st = e.stats();
        let shared: &Shared = &self.links.shared;
        let mut all = shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = all.get_mut(self.index) {
            *s = CaptureStatus {
                interface: s.interface.clone(),
                running,
                packets: st.packets,
                sip_messages: st.sip_messages,
                rtp_routed: st.rtp_routed,
                rtp_foreign: st.rtp_foreign,
                calls: st.calls,
                recorded: st.recorded,
                active_recorded: e.active_recorded() as u64,
                ring_dropped: e.ring_drops(),
                undecodable: st.undecodable,
                clock_outliers: st.clock_outliers,
                invites_throttled: e.tracker_stats().invites_throttled,
                sip_oversized: e.decode_stats().sip_oversized,
                skipped: st.skipped.clone(),
                announce: e.announce_stats(),
                calls_in_progress: std::mem::take(&mut s.calls_in_progress),
                ..CaptureStatus::default()
            };
        }
    }
}

/// What `run` keeps of the HEP thread (the parts of its capture link).
pub struct Started {
    pub control: std::sync::mpsc::Sender<ControlReq>,
    pub waker: Arc<crate::capture::Waker>,
    pub heartbeat: Arc<std::sync::atomic::AtomicU64>,
    pub thread: std::thread::JoinHandle<Result<(), String>>,
}

/// Binds `capture.hep_listen` (a busy port fails the start, naming it)
/// and starts its thread with an engine of its own on `shards`; entry
/// `index` of `links.shared` is its status. No announcer: a remote
/// capture point's link is not ours to inject into.
pub fn start(
    cfg: &Arc<Config>,
    spool_dir: &std::path::Path,
    shards: super::shard::ShardPool<super::media::MediaCtl>,
    usage: crate::delivery::spool::SpoolUsage,
    index: usize,
    make_links: impl FnOnce(
        Arc<crate::capture::Waker>,
        std::sync::mpsc::Receiver<ControlReq>,
        Arc<std::sync::atomic::AtomicU64>,
    ) -> Links,
) -> Result<Started, String> {
    let h = &cfg.capture.hep;
    let policy = crate::capture::hep::HepPolicy {
        capture_ids: h.capture_ids.clone(),
        auth_key: h.auth_key.clone(),
    };
    let src =
        HepListener::bind(&h.listen, policy, Default::default()).map_err(|e| e.to_string())?;
    let mut engine = Engine::new(cfg.clone(), spool_dir, shards, None, usage)
        .map_err(|e| format!("call history: {e}"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let waker = Arc::new(crate::capture::Waker::new().map_err(|e| format!("eventfd: {e}"))?);
    let heartbeat = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let links = make_links(waker.clone(), rx, heartbeat.clone());
    heartbeat.store(links.clock.millis(), Ordering::Relaxed);
    engine.restore_journal(&spool_dir.join("state/calls/hep"), links.clock.now());
    tracing::info!(listen = ?h.listen, "HEP capture listening (UDP and TCP)");
    let t = HepThread {
        index,
        cfg: cfg.clone(),
        engine,
        links,
        published: (0, 0),
    };
    let thread = std::thread::Builder::new()
        .name("callrec-hep".into())
        .spawn(move || t.run(src))
        .map_err(|e| format!("HEP thread: {e}"))?;
    Ok(Started {
        control: tx,
        waker,
        heartbeat,
        thread,
    })
}
