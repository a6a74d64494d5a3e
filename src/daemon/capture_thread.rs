//! The live capture thread: frames from every interface into the one
//! engine, merged by time, and time into the engine when there are none.
//!
//! The thread never waits on the wire alone. It reads every frame that is
//! there (non-blocking), and when the ring is empty it waits on the
//! capture descriptor and its [`Waker`] together, at most [`TICK`]: a
//! signal, a control request or a reload wakes it at once, and on a
//! silent link the engine's clock still moves on with [`LiveClock`], so
//! setup, RTP and maximum-length timeouts fire by wall time.
//!
//! Several interfaces (SIP on one, RTP on another; two mirror ports) feed
//! the same engine: with one open, its frames are read where they lie;
//! with more, the earliest waiting frame goes first
//! ([`crate::capture::merge`]), so a call is one call whichever interface
//! each of its packets took.
//!
//! With `capture.threads` above one, the interfaces are read by the
//! capture threads of a `PACKET_FANOUT` group each
//! ([`crate::capture::fanout`]) and this thread reads their queues
//! instead, the earliest frame first, so the engine still sees one
//! timeline; those threads reopen their sockets themselves.
//!
//! HEP from capture agents (`capture.hep_listen`) is one more source of
//! the same engine: each agent is its own capture point (`hep:<id>`,
//! [`PacketSource::next_packet_at_point`]), merged by time with the rest.
//!
//! An interface that fails (deleted, renamed, taken down) is reopened with
//! backoff and an alarm at each failure; the engine keeps running on the
//! clock (and on the other interfaces) meanwhile, so calls end by their timeouts. After
//! `capture.retry_for` without success the thread gives up with an error
//! and the daemon exits 1, for systemd to restart it.

mod queues;
mod report;

use crate::capture::fanout::{self, Fanout};
use crate::capture::live::{REOPEN_FIRST, REOPEN_MAX};
use crate::capture::merge::Heads;
use crate::capture::ring::FrameQueue;
use crate::capture::{
    CaptureError, HepListener, LiveOptions, LiveSource, LiveStats, Packet, PacketSource, Waker,
};
use crate::config::Config;
use crate::daemon::engine::Engine;
use crate::daemon::run::Shared;
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

/// Where an interface stands.
enum Source {
    Open(LiveSource),
    /// `capture.hep_listen`: sockets, never lost (boxed: it is large).
    Hep(Box<HepListener>),
    /// One socket of a fanout (`capture.threads`), read by its own thread,
    /// which reopens it when lost.
    Queue(Box<FrameQueue>),
    /// Lost at `since`; the next attempt at `next`, after waiting `backoff`.
    Lost {
        since: Instant,
        next: Instant,
        backoff: Duration,
    },
}

/// One interface of a capture thread.
struct Input {
    name: String,
    /// Its capture point in the engine's clock.
    point: usize,
    source: Source,
    /// Drop counters of handles lost before the current one.
    carried: LiveStats,
    /// Frames read from it.
    packets: u64,
    /// Why it is lost, while it is.
    error: Option<String>,
    /// HEP: the capture point of the frame waiting in the merge.
    head_point: String,
    /// A fanout queue: the capture thread that fills it.
    thread: Option<usize>,
}

/// A HEP listener read through the merge: the capture point of each
/// frame it hands out is kept in `point`.
struct AtPoint<'a> {
    src: &'a mut HepListener,
    point: &'a mut String,
}

impl PacketSource for AtPoint<'_> {
    fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        let Some((p, at)) = self.src.next_packet_at_point()? else {
            return Ok(None);
        };
        at.unwrap_or("hep").clone_into(self.point);
        Ok(Some(p))
    }
    fn name(&self) -> &str {
        self.src.name()
    }
}

/// The thread that owns the engine: every configured interface feeds it,
/// merged by time, so a call whose SIP and RTP travel on different
/// interfaces is one call.
pub struct CaptureThread {
    pub cfg: Arc<Config>,
    pub engine: Engine,
    pub links: Links,
    inputs: Vec<Input>,
    heads: Heads,
    /// (calls in progress, recorded calls ended) when last published.
    published: (usize, u64),
    /// The capture threads of `capture.threads`, whose queues are inputs.
    fanout: Option<Fanout>,
    /// Every open input is a fanout queue: read in place, merged by time.
    only_queues: bool,
    /// The interfaces' capture point.
    point: usize,
    /// When the last turn read frames (a fanout's engine naps while busy).
    last_frames: Instant,
    /// Since when the earliest queued frame waits for another capture
    /// thread's watermark ([`crate::capture::ring::QueueShared::watermark`]).
    holding: Option<Instant>,
}

/// The interfaces the engine reads: opened here, or read by the capture
/// threads of a fanout.
pub enum Interfaces {
    Direct(Vec<LiveSource>),
    Fanout(Fanout),
}

impl CaptureThread {
    /// A thread for `sources` (opened interfaces). They are one capture
    /// point of the engine's clock, named by them: one kernel stamps the
    /// frames of every interface of a host.
    /// `hep`: the `capture.hep_listen` sockets, one more source whose
    /// frames name their own capture points.
    pub fn new(
        cfg: Arc<Config>,
        mut engine: Engine,
        links: Links,
        interfaces: Interfaces,
        hep: Option<HepListener>,
    ) -> Self {
        let (sources, mut fanout) = match interfaces {
            Interfaces::Direct(s) => (s, None),
            Interfaces::Fanout(f) => (Vec::new(), Some(f)),
        };
        let queues = fanout
            .as_mut()
            .map(|f| std::mem::take(&mut f.queues))
            .unwrap_or_default();
        let mut names: Vec<&str> = sources.iter().map(|s| s.name()).collect();
        for q in &queues {
            if !names.contains(&q.name()) {
                names.push(q.name());
            }
        }
        let point = match names.is_empty() {
            true => 0,
            false => engine.set_capture_point(&names.join("+")),
        };
        let per_thread = names.len().max(1);
        let input = |name: String, source| Input {
            name,
            point,
            source,
            carried: LiveStats::default(),
            packets: 0,
            error: None,
            head_point: String::new(),
            thread: None,
        };
        let mut inputs: Vec<Input> = sources
            .into_iter()
            .map(|src| input(src.name().to_owned(), Source::Open(src)))
            .collect();
        // The queues come thread by thread, an interface each.
        inputs.extend(queues.into_iter().enumerate().map(|(k, q)| Input {
            thread: Some(k / per_thread),
            ..input(q.name().to_owned(), Source::Queue(Box::new(q)))
        }));
        let only_queues = fanout.is_some() && hep.is_none();
        if let Some(h) = hep {
            inputs.push(input("hep".into(), Source::Hep(Box::new(h))));
        }
        CaptureThread {
            cfg,
            engine,
            links,
            heads: Heads::new(inputs.len()),
            inputs,
            published: (0, 0),
            fanout,
            only_queues,
            point,
            last_frames: Instant::now(),
            holding: None,
        }
    }

    /// Runs until the stop flag is set (`Ok`) or an interface is lost for
    /// longer than `capture.retry_for` (`Err` with the reason). Open calls
    /// are ended (`shutdown`) and published either way.
    pub fn run(mut self) -> Result<(), String> {
        let mut last_report = Instant::now();
        let mut failure = self
            .fanout
            .as_mut()
            .and_then(|f| f.spawn().err())
            .map(|e| format!("cannot start the capture threads: {e}"));
        while failure.is_none() && !self.links.stop.load(Ordering::Relaxed) {
            self.links
                .heartbeat
                .store(self.links.clock.millis(), Ordering::Relaxed);
            self.turn();
            self.publish_calls_if_changed();
            if let Some(f) = self.given_up() {
                tracing::error!(alarm = true, "CAPTURE ALARM: {f}");
                failure = Some(f);
                break;
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                // A busy link never waits: keep the clock moving anyway.
                self.engine.on_idle(self.links.clock.now());
                self.report(true);
            }
        }
        if let Some(mut f) = self.fanout.take() {
            // What the capture threads read before they stopped is handled.
            f.stop();
            while self.read_queues(false) > 0 {}
        }
        self.report(false);
        if let Some(f) = &failure {
            self.set_error(f.clone());
        }
        let stats = self.engine.finish("shutdown");
        tracing::info!(
            packets = stats.packets,
            recorded = stats.recorded,
            "capture stopped"
        );
        failure.map_or(Ok(()), Err)
    }

    /// An interface lost for longer than `capture.retry_for`, named.
    fn given_up(&self) -> Option<String> {
        self.inputs.iter().find_map(|i| {
            let since = match &i.source {
                Source::Lost { since, .. } => *since,
                Source::Queue(q) => q.shared.lost()?.0,
                _ => return None,
            };
            (since.elapsed() >= self.cfg.capture.retry_for).then(|| {
                format!(
                    "capture on {} lost for {} s (capture.retry_for): giving up",
                    i.name,
                    since.elapsed().as_secs()
                )
            })
        })
    }

    /// One turn: what the rings hold (up to a batch), control requests,
    /// lost interfaces tried again when due; with nothing read, time
    /// passes and the thread waits for frames, a wake or the next timer.
    fn turn(&mut self) {
        let open = self.open_inputs();
        let n = match open.as_slice() {
            [] => 0,
            _ if self.only_queues => self.read_queues(true),
            [one] => self.read_one(*one),
            _ => self.read_merged(),
        };
        self.serve_control();
        let retry_in = self.reopen_due();
        if n > 0 {
            self.last_frames = Instant::now();
        }
        let holding = self.holding.is_some();
        if n == 0 && (holding || !self.fanout_sleeps()) {
            // Nothing arrived this turn: time passes all the same (frames
            // move the clock themselves, and a busy link gets the
            // once-a-second tick in `run`). Not while a frame is held for
            // another thread's watermark: it is older than the wall clock.
            if !holding {
                self.engine.on_idle(self.links.clock.now());
            }
            let fds: Vec<_> = self
                .inputs
                .iter()
                .flat_map(|i| match &i.source {
                    Source::Open(s) => vec![s.raw_fd()],
                    Source::Hep(h) => h.fds(),
                    Source::Lost { .. } | Source::Queue(_) => Vec::new(),
                })
                .collect();
            let mut wait = retry_in.map_or(TICK, |d| d.min(TICK));
            if let Some(f) = &self.fanout {
                if holding {
                    // Frames flow: the capture threads look at their
                    // sockets often, and the one that moves its watermark
                    // wakes this thread.
                    f.engine.naps.store(true, Ordering::SeqCst);
                    f.engine.waits.store(true, Ordering::SeqCst);
                    f.engine.sleeps.store(true, Ordering::SeqCst);
                }
                if holding || f.engine.naps.load(Ordering::Relaxed) {
                    wait = wait.min(fanout::NAP);
                }
            }
            self.links.waker.wait_with(&fds, wait);
            if let Some(f) = &self.fanout {
                f.engine.waits.store(false, Ordering::SeqCst);
                f.engine.sleeps.store(false, Ordering::SeqCst);
            }
        }
    }

    fn open_inputs(&self) -> Vec<usize> {
        (0..self.inputs.len())
            .filter(|&i| {
                matches!(
                    self.inputs[i].source,
                    Source::Open(_) | Source::Hep(_) | Source::Queue(_)
                )
            })
            .collect()
    }

    /// The only open interface: its frames go to the engine where they lie.
    fn read_one(&mut self, i: usize) -> u64 {
        if matches!(self.inputs[i].source, Source::Hep(_)) {
            return self.read_hep(i);
        }
        let mut n = 0u64;
        self.engine.select_capture_point(self.inputs[i].point);
        loop {
            let Source::Open(src) = &mut self.inputs[i].source else {
                return n;
            };
            match src.next_packet() {
                Ok(Some(pkt)) => {
                    self.engine.on_packet(&pkt);
                    n += 1;
                    if n.is_multiple_of(CONTROL_EVERY) {
                        self.serve_control();
                        self.engine.select_capture_point(self.inputs[i].point);
                    }
                    if n >= BATCH {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.lost(i, &e.to_string());
                    break;
                }
            }
        }
        self.inputs[i].packets += n;
        n
    }

    /// The HEP listener alone: each frame at its agent's capture point.
    fn read_hep(&mut self, i: usize) -> u64 {
        let mut n = 0u64;
        while n < BATCH {
            let Source::Hep(src) = &mut self.inputs[i].source else {
                break;
            };
            let Ok(Some((pkt, at))) = src.next_packet_at_point() else {
                break;
            };
            // The clock's own check: the current point's name costs no search.
            self.engine.set_capture_point(at.unwrap_or("hep"));
            self.engine.on_packet(&pkt);
            n += 1;
            if n.is_multiple_of(CONTROL_EVERY) {
                self.serve_control();
            }
        }
        self.inputs[i].packets += n;
        n
    }

    /// Several open interfaces: the earliest waiting frame first.
    fn read_merged(&mut self) -> u64 {
        let mut n = 0u64;
        while n < BATCH {
            for i in 0..self.inputs.len() {
                let input = &mut self.inputs[i];
                let r = match &mut input.source {
                    Source::Open(src) => self.heads.fill(i, src),
                    Source::Queue(q) => self.heads.fill(i, q.as_mut()),
                    Source::Hep(src) => {
                        let mut at = AtPoint {
                            src,
                            point: &mut input.head_point,
                        };
                        self.heads.fill(i, &mut at)
                    }
                    Source::Lost { .. } => continue,
                };
                if let Err(e) = r {
                    self.lost(i, &e.to_string());
                }
            }
            let Some(i) = self.heads.earliest() else {
                break;
            };
            self.inputs[i].packets += 1;
            match self.inputs[i].source {
                Source::Hep(_) => {
                    self.engine.set_capture_point(&self.inputs[i].head_point);
                }
                _ => self.engine.select_capture_point(self.inputs[i].point),
            }
            if let Some(pkt) = self.heads.take(i) {
                self.engine.on_packet(&pkt);
            }
            n += 1;
            if n.is_multiple_of(CONTROL_EVERY) {
                self.serve_control();
            }
        }
        n
    }

    /// Interface `i` failed: its counters are carried over (the next
    /// handle starts at zero) and it is reopened with backoff.
    fn lost(&mut self, i: usize, why: &str) {
        let input = &mut self.inputs[i];
        if matches!(input.source, Source::Hep(_)) {
            // Sockets: a read error is a packet's, counted by the listener.
            return;
        }
        if let Source::Open(src) = &mut input.source
            && let Ok(st) = src.stats()
        {
            input.carried.dropped += st.dropped;
            input.carried.if_dropped += st.if_dropped;
            input.carried.truncated += st.truncated;
        }
        let name = input.name.clone();
        tracing::error!(alarm = true, interface = %name, error = why, "CAPTURE ALARM: capture on {name} failed: {why}; reopening it (for up to capture.retry_for)");
        input.error = Some(why.to_owned());
        crate::daemon::raise_alarm(format!("capture {name} failed: {why}"));
        input.source = Source::Lost {
            since: Instant::now(),
            next: Instant::now() + REOPEN_FIRST,
            backoff: REOPEN_FIRST,
        };
    }

    /// Tries lost interfaces whose time has come; returns how long until
    /// the next attempt, if any interface is lost.
    fn reopen_due(&mut self) -> Option<Duration> {
        let c = self.cfg.capture.clone();
        let mut soonest: Option<Duration> = None;
        for input in &mut self.inputs {
            let Source::Lost {
                since,
                next,
                backoff,
            } = input.source
            else {
                continue;
            };
            let now = Instant::now();
            if now < next {
                soonest = Some(soonest.map_or(next - now, |s| s.min(next - now)));
                continue;
            }
            match LiveSource::open_with(&input.name, &LiveOptions::from_config(&c)) {
                Ok(src) => {
                    tracing::warn!(interface = %input.name, after_s = since.elapsed().as_secs(), "capture on {} works again", input.name);
                    input.error = None;
                    input.source = Source::Open(src);
                }
                Err(e) => {
                    let backoff = (backoff * 2).min(REOPEN_MAX);
                    tracing::error!(alarm = true, interface = %input.name, error = %e, retry_in_ms = backoff.as_millis() as u64, "CAPTURE ALARM: cannot reopen {}", input.name);
                    input.source = Source::Lost {
                        since,
                        next: Instant::now() + backoff,
                        backoff,
                    };
                    soonest = Some(soonest.map_or(backoff, |s| s.min(backoff)));
                }
            }
        }
        soonest
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
