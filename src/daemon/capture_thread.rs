//! One live capture thread: frames from an interface into its engine,
//! and time into the engine when there are no frames.
//!
//! The thread never waits on the wire alone. It reads every frame that is
//! there (non-blocking), and when the ring is empty it waits on the
//! capture descriptor and its [`Waker`] together, at most [`TICK`]: a
//! signal, a control request or a reload wakes it at once, and on a
//! silent link the engine's clock still moves on with [`LiveClock`], so
//! setup, RTP and maximum-length timeouts fire by wall time.
//!
//! An interface that fails (deleted, renamed, taken down) is reopened with
//! backoff and an alarm at each failure; the engine keeps running on the
//! clock meanwhile, so calls end by their timeouts. After
//! `capture.retry_for` without success the thread gives up with an error
//! and the daemon exits 1, for systemd to restart it.

use crate::capture::{LiveSource, PacketSource, Waker};
use crate::config::Config;
use crate::daemon::engine::Engine;
use crate::daemon::run::{CaptureStatus, Shared};
use crate::time::Timestamp;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

/// The longest a capture thread waits before looking at its timers,
/// control requests and the stop flag again.
pub const TICK: Duration = Duration::from_millis(50);
/// Packets between two looks at the control requests on a busy link: a
/// `pause` takes effect within microseconds, before the digits it hides.
const CONTROL_EVERY: u64 = 64;
/// Frames read in one go before the thread looks at the clock.
const BATCH: u64 = 4096;
/// First and longest wait between two attempts to reopen an interface.
const REOPEN_FIRST: Duration = Duration::from_millis(500);
const REOPEN_MAX: Duration = Duration::from_secs(10);

/// A request for a capture thread: the calls belong to the engine on that
/// thread, so the question goes to it and the answer comes back.
pub enum ControlReq {
    Pause {
        call: String,
        paused: bool,
        reply: mpsc::Sender<Option<String>>,
    },
    /// A new configuration for calls that start from now on.
    Reload(Arc<Config>),
}

/// The engine's clock in live capture when no frame arrives: the wall
/// time at start plus the monotonic time since, so a step of the system
/// clock (NTP) cannot make calls time out early or never.
#[derive(Clone, Copy, Debug)]
pub struct LiveClock {
    start: Instant,
    start_wall: Timestamp,
}

impl LiveClock {
    pub fn start() -> LiveClock {
        let d = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        LiveClock {
            start: Instant::now(),
            start_wall: Timestamp(d.as_micros() as i64),
        }
    }
    pub fn now(&self) -> Timestamp {
        self.start_wall
            .add_micros(self.start.elapsed().as_micros() as i64)
    }
    /// Milliseconds since start: the heartbeat the watchdog reads.
    pub fn millis(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// What the thread shares with the rest of the daemon.
pub struct Links {
    pub stop: Arc<AtomicBool>,
    pub shared: Shared,
    pub waker: Arc<Waker>,
    pub control: mpsc::Receiver<ControlReq>,
    /// [`LiveClock::millis`] at the thread's last turn of its loop.
    pub heartbeat: Arc<AtomicU64>,
    pub clock: LiveClock,
}

/// Where the interface stands.
enum Source {
    Open(LiveSource),
    /// Lost at `since`; the next attempt at `next`, after waiting `backoff`.
    Lost {
        since: Instant,
        next: Instant,
        backoff: Duration,
    },
}

pub struct CaptureThread {
    pub index: usize,
    pub interface: String,
    pub cfg: Arc<Config>,
    pub engine: Engine,
    pub links: Links,
    /// Drop counters of handles lost before the current one.
    pub carried: crate::capture::LiveStats,
    /// (calls in progress, recorded calls ended) when last published.
    pub published: (usize, u64),
}

impl CaptureThread {
    /// Runs until the stop flag is set (`Ok`) or the interface is lost for
    /// longer than `capture.retry_for` (`Err` with the reason). Open calls
    /// are ended (`shutdown`) and published either way.
    pub fn run(mut self, src: LiveSource) -> Result<(), String> {
        let mut source = Source::Open(src);
        let mut last_report = Instant::now();
        let mut failure = None;
        while !self.links.stop.load(Ordering::Relaxed) {
            self.links
                .heartbeat
                .store(self.links.clock.millis(), Ordering::Relaxed);
            source = match source {
                Source::Open(src) => self.read(src),
                lost @ Source::Lost { .. } => self.reopen(lost),
            };
            self.publish_calls_if_changed();
            if let Source::Lost { since, .. } = &source
                && since.elapsed() >= self.cfg.capture.retry_for
            {
                failure = Some(format!(
                    "capture on {} lost for {} s (capture.retry_for): giving up",
                    self.interface,
                    since.elapsed().as_secs()
                ));
                tracing::error!(alarm = true, interface = %self.interface, "CAPTURE ALARM: {}", failure.as_deref().unwrap_or_default());
                break;
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                // A busy link never waits: keep the clock moving anyway.
                self.engine.on_idle(self.links.clock.now());
                let src = match &mut source {
                    Source::Open(s) => Some(s),
                    Source::Lost { .. } => None,
                };
                report(
                    self.index,
                    src,
                    self.carried,
                    &self.engine,
                    &self.links.shared,
                    true,
                );
            }
        }
        let src = match &mut source {
            Source::Open(s) => Some(s),
            Source::Lost { .. } => None,
        };
        report(
            self.index,
            src,
            self.carried,
            &self.engine,
            &self.links.shared,
            false,
        );
        if let Some(f) = &failure {
            set_error(&self.links.shared, self.index, f.clone());
        }
        let stats = self.engine.finish("shutdown");
        tracing::info!(interface = %self.interface, packets = stats.packets, recorded = stats.recorded, "capture stopped");
        failure.map_or(Ok(()), Err)
    }

    /// Reads what the ring holds (up to a batch), or waits for more.
    fn read(&mut self, mut src: LiveSource) -> Source {
        let mut n = 0u64;
        loop {
            match src.next_packet() {
                Ok(Some(pkt)) => {
                    self.engine.on_packet(&pkt);
                    n += 1;
                    if n.is_multiple_of(CONTROL_EVERY) {
                        self.serve_control();
                    }
                    if n >= BATCH {
                        return Source::Open(src);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // Counters of the next handle start at zero: carry these.
                    if let Ok(st) = src.stats() {
                        self.carried.dropped += st.dropped;
                        self.carried.if_dropped += st.if_dropped;
                        self.carried.truncated += st.truncated;
                    }
                    return self.lost(&e.to_string());
                }
            }
        }
        self.serve_control();
        if n == 0 {
            // Nothing arrived this turn: time passes all the same (frames
            // move the clock themselves, and a busy link gets the
            // once-a-second tick in `run`).
            self.engine.on_idle(self.links.clock.now());
            src.wait(&self.links.waker, TICK);
        }
        Source::Open(src)
    }

    fn lost(&mut self, why: &str) -> Source {
        tracing::error!(alarm = true, interface = %self.interface, error = why, "CAPTURE ALARM: capture on {} failed: {why}; reopening it (for up to capture.retry_for)", self.interface);
        set_error(&self.links.shared, self.index, why.to_owned());
        crate::daemon::raise_alarm(format!("capture {} failed: {why}", self.interface));
        Source::Lost {
            since: Instant::now(),
            next: Instant::now() + REOPEN_FIRST,
            backoff: REOPEN_FIRST,
        }
    }

    /// While the interface is gone: the engine runs on the clock, control
    /// requests are answered, and the interface is tried again when due.
    fn reopen(&mut self, lost: Source) -> Source {
        let Source::Lost {
            since,
            next,
            backoff,
        } = lost
        else {
            return lost;
        };
        self.engine.on_idle(self.links.clock.now());
        self.serve_control();
        let now = Instant::now();
        if now < next {
            self.links.waker.sleep((next - now).min(TICK));
            return Source::Lost {
                since,
                next,
                backoff,
            };
        }
        let c = &self.cfg.capture;
        match LiveSource::open(&self.interface, c.snaplen, c.promiscuous, c.buffer_bytes) {
            Ok(src) => {
                tracing::warn!(interface = %self.interface, after_s = since.elapsed().as_secs(), "capture on {} works again", self.interface);
                set_error(&self.links.shared, self.index, String::new());
                Source::Open(src)
            }
            Err(e) => {
                let backoff = (backoff * 2).min(REOPEN_MAX);
                tracing::error!(alarm = true, interface = %self.interface, error = %e, retry_in_ms = backoff.as_millis() as u64, "CAPTURE ALARM: cannot reopen {}", self.interface);
                Source::Lost {
                    since,
                    next: Instant::now() + backoff,
                    backoff,
                }
            }
        }
    }

    /// Puts the list of recorded calls in progress where `status` reads
    /// it, whenever a call was answered or ended since the last look (the
    /// count of calls in progress, or of recorded calls ended, moved), so
    /// the control socket never waits for this thread to be scheduled.
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

    /// Answers what the control socket (or a reload) asked this thread.
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
}

fn set_error(shared: &Shared, i: usize, e: String) {
    let mut all = shared.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = all.get_mut(i) {
        s.error = (!e.is_empty()).then_some(e);
    }
}

/// Publishes this thread's counters for `status` and the metrics:
/// `carried` holds what handles lost before the current one counted.
fn report(
    i: usize,
    src: Option<&mut LiveSource>,
    carried: crate::capture::LiveStats,
    engine: &Engine,
    shared: &Shared,
    running: bool,
) {
    let st = engine.stats();
    let pcap = src.and_then(|s| s.stats().ok()).unwrap_or_default();
    let mut all = shared.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = all.get_mut(i) {
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
            pcap_dropped: carried.dropped + pcap.dropped,
            if_dropped: carried.if_dropped + pcap.if_dropped,
            ring_dropped: engine.ring_drops(),
            truncated: carried.truncated + pcap.truncated,
            undecodable: st.undecodable,
            clock_outliers: st.clock_outliers,
            invites_throttled: engine.tracker_stats().invites_throttled,
            sip_oversized: engine.decode_stats().sip_oversized,
            error: s.error.take(),
            skipped: st.skipped.clone(),
            announce: engine.announce_stats(),
            calls_in_progress: std::mem::take(&mut s.calls_in_progress),
        };
    }
}
