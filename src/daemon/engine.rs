//! The capture-thread half of the pipeline, shared by `run` and `replay`.
//!
//! [`Engine::on_packet`] takes one captured frame: decodes it, feeds SIP to
//! the tracker, and routes RTP of recorded calls to their shard. Call
//! events from the tracker become the call history, announcement
//! schedules and control messages for the shards. Time is the frame's
//! capture time as the capture clock places it ([`crate::daemon::clock`]:
//! a packet stamped far off the clock never moves it), and which source's
//! packets a recorded address takes is decided from evidence
//! ([`crate::daemon::routes`]).

use crate::announce::announcer::Announcer;
use crate::calls::tracker::{CallEvent, CallKey, MediaLegs, Tracker};
use crate::capture::Packet;
use crate::config::Config;
use crate::daemon::clock::{CaptureClock, HeldFrame, Offer, OutlierLog};
use crate::daemon::media::{CallSetup, MediaCtl};
use crate::daemon::routes::Route;
use crate::daemon::shard::ShardPool;
use crate::decode::{Decoder, L2Info};
use crate::delivery::SpoolUsage;
use crate::history::HistoryWriter;
use crate::media::pause::PauseControl;
use crate::recording::undecodable::MediaCheck;
use crate::time::Timestamp;
use std::collections::BTreeMap;
// Per-packet lookups: foldhash is several times cheaper than SipHash and
// still seeded per process, so colliding keys cannot be precomputed.
use foldhash::{HashMap, HashMapExt};
use std::net::SocketAddr;
use std::sync::Arc;

mod events;
mod held;
pub mod restore;
mod route;

use route::{RouteCtx, on_sip_port};

#[derive(Clone, Debug, Default)]
pub struct EngineStats {
    pub packets: u64,
    pub sip_messages: u64,
    pub sip_malformed: u64,
    pub sip_keepalives: u64,
    pub rtp_routed: u64,
    /// RTP towards a recorded call's address from a source no evidence
    /// supports as the sender (or while the supported one is alive): dropped.
    pub rtp_foreign: u64,
    /// UDP that is neither SIP nor media of a recorded call.
    pub other_udp: u64,
    pub calls: u64,
    pub recorded: u64,
    pub skipped: BTreeMap<String, u64>,
    /// Frames captured shorter than they were on the wire (snap length).
    pub frames_cut: u64,
    /// Packets stamped off the capture clock and placed by it.
    pub clock_outliers: u64,
    /// Steps of a capture point's stamps taken up by a new offset.
    pub clock_steps: u64,
    /// Forward jumps with no packet at all, taken as time passing.
    pub clock_gaps: u64,
    /// Recorded calls none of whose audio could be decoded (encrypted
    /// with keys out of sight or wrong, or codecs callrec lacks): no file
    /// delivered, the history says why.
    pub undecodable: u64,
}

/// A SIP message copied out of the frame: time, source, destination, link
/// layer (for MAC learning), bytes.
type SipCopy = (Timestamp, SocketAddr, SocketAddr, Option<L2Info>, Vec<u8>);
/// A telephone-event packet of a subscriber's leg, copied for the call's
/// pause control: call, capture time, RTP bytes.
type KeypadCopy = (CallKey, Timestamp, Vec<u8>);

/// A recorded call in progress, as the control socket lists it. No
/// numbers: a withheld caller must not reach an operator's screen either.
#[derive(Clone, Debug)]
pub struct ActiveSummary {
    pub short_id: String,
    pub contract: String,
    pub direction: &'static str,
    pub answered_at: Timestamp,
}

struct ActiveCall {
    call_id: String,
    setup: Arc<CallSetup>,
    shard: usize,
    /// Routing keys installed for this call, to remove them at the end.
    dst_routes: Vec<SocketAddr>,
    src_routes: Vec<SocketAddr>,
    /// The parties' media as last signalled (where beeps go).
    legs: MediaLegs,
    pause: PauseControl,
    /// Foreign packets counted on routes since replaced, per leg, not
    /// yet told to the shard.
    foreign: [u64; 2],
    /// Last RTP capture time of routes already replaced (see [`Route::last`]).
    last_rtp: Timestamp,
}

/// The spool's limits, checked at most once per second of capture time
/// against the running byte count the shards and delivery keep.
struct SpoolGuard {
    usage: SpoolUsage,
    /// Alarm level (`spool_warn_bytes`); 0 = none.
    warn: u64,
    /// New calls go unrecorded from here (`spool_max_bytes`); 0 = no limit.
    max: u64,
    next_check: Timestamp,
    alarmed: bool,
    full: bool,
    /// Replay: let the shards finish what they were sent before each check,
    /// so the decisions fall on the same packets in every run.
    sync_shards: bool,
}

pub struct Engine {
    cfg: Arc<Config>,
    decoder: Decoder,
    tracker: Tracker,
    /// Packets are routed by where they go (the receiver's SDP address),
    /// then by where they come from (the sender's SDP address) for parties
    /// behind NAT whose packets are sent to another address than announced.
    by_dst: HashMap<SocketAddr, Route>,
    by_src: HashMap<SocketAddr, Route>,
    calls: HashMap<CallKey, ActiveCall>,
    /// Recorded calls decided but not yet answered: the verdict and the
    /// contract as configured at the decision (a reload before the answer
    /// does not change how the call is recorded).
    pending: HashMap<CallKey, (crate::calls::policy::Verdict, crate::config::Contract)>,
    short_ids: HashMap<CallKey, String>,
    call_ids: HashMap<CallKey, String>,
    shards: ShardPool<MediaCtl>,
    announcer: Option<Announcer>,
    /// Billing starts when the announcement starts (at the answer without one).
    billing: HashMap<CallKey, Timestamp>,
    history: HistoryWriter,
    events: Vec<CallEvent>,
    stats: EngineStats,
    /// Watches calls whose media may be undecodable (SRTP, odd codecs).
    check: MediaCheck,
    now: Timestamp,
    first_ts: Option<Timestamp>,
    spool_guard: SpoolGuard,
    /// Places each frame in time; frames it holds back wait in `held`.
    clock: CaptureClock,
    held: Vec<HeldFrame>,
    outlier_log: OutlierLog,
    /// Live daemon only: the call-state journal (`restore_journal`).
    journal: Option<crate::daemon::journal::CallJournal>,
    /// `[hep]`: SIP of recorded calls to a Homer collector.
    hep: Option<crate::history::hep::HepExporter>,
}

impl Engine {
    pub fn new(
        cfg: Arc<Config>,
        spool: &std::path::Path,
        shards: ShardPool<MediaCtl>,
        announcer: Option<Announcer>,
        spool_usage: SpoolUsage,
    ) -> std::io::Result<Engine> {
        Ok(Engine {
            spool_guard: SpoolGuard {
                usage: spool_usage,
                warn: cfg.recording.spool_warn_bytes,
                max: cfg.recording.spool_max_bytes,
                next_check: Timestamp::ZERO,
                alarmed: false,
                full: false,
                sync_shards: false,
            },
            decoder: Decoder::new(&cfg.limits, &cfg.capture.sip_ports),
            tracker: Tracker::new(&cfg),
            by_dst: HashMap::new(),
            by_src: HashMap::new(),
            calls: HashMap::new(),
            pending: HashMap::new(),
            short_ids: HashMap::new(),
            call_ids: HashMap::new(),
            shards,
            announcer,
            billing: HashMap::new(),
            history: HistoryWriter::open_keep(spool, cfg.history.keep, None)?,
            events: Vec::new(),
            stats: EngineStats::default(),
            check: MediaCheck::new(),
            now: Timestamp::ZERO,
            first_ts: None,
            clock: CaptureClock::new(cfg.limits.clock_tolerance),
            held: Vec::new(),
            outlier_log: OutlierLog::default(),
            journal: None,
            hep: crate::history::hep::HepExporter::from_config(&cfg.hep),
            cfg,
        })
    }

    /// Names the capture point the next frames come from (a capture file,
    /// an interface, a capture agent): each keeps its own clock offset.
    /// The default point is "capture".
    pub fn set_capture_point(&mut self, name: &str) -> usize {
        self.clock.select(name)
    }

    /// Makes capture point `point` (a number [`Engine::set_capture_point`]
    /// gave) the one the next frames come from, without a name lookup:
    /// for sources merged frame by frame.
    pub fn select_capture_point(&mut self, point: usize) {
        self.clock.select_index(point);
    }

    /// A capture point whose clock is known to be off: `offset_us` is
    /// added to its frames' stamps (a capture agent reporting its own time).
    pub fn set_capture_offset(&mut self, point: usize, offset_us: i64) {
        self.clock.set_offset(point, offset_us);
    }

    /// The current capture point has no more frames (end of a capture
    /// file): frames the clock held back are placed now.
    pub fn end_capture_point(&mut self) {
        if self.clock.finish_point() {
            self.resolve_held();
        }
    }

    /// Replay: before each spool check, wait for the shards to finish what
    /// they were sent (their recordings are then counted), so a replay
    /// makes the same overload decisions every time it runs.
    pub fn sync_shards_before_spool_checks(&mut self) {
        self.spool_guard.sync_shards = true;
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }
    pub fn decode_stats(&self) -> &crate::decode::DecodeStats {
        self.decoder.stats()
    }
    pub fn tracker_stats(&self) -> &crate::calls::tracker::TrackerStats {
        self.tracker.stats()
    }
    pub fn announce_stats(&self) -> Option<crate::announce::announcer::AnnounceStats> {
        self.announcer.as_ref().map(|a| a.stats().clone())
    }
    pub fn now(&self) -> Timestamp {
        self.now
    }
    pub fn first_ts(&self) -> Option<Timestamp> {
        self.first_ts
    }

    /// A reloaded configuration (SIGHUP): calls that start from now on
    /// follow it; calls already decided keep the contract they were
    /// decided under, down to their last segment.
    pub fn reload(&mut self, cfg: Arc<Config>) {
        self.tracker.reload(&cfg);
        self.spool_guard.warn = cfg.recording.spool_warn_bytes;
        self.spool_guard.max = cfg.recording.spool_max_bytes;
        self.spool_guard.next_check = Timestamp::ZERO;
        self.cfg = cfg;
    }

    /// Live capture with nothing to read: time still passes (timeouts,
    /// announcement packets due, the spool check), taken from the clock
    /// the capture timestamps come from.
    pub fn on_idle(&mut self, now: Timestamp) {
        // The wall clock is trusted: frames held as ahead of the capture
        // clock are on time once it has caught up with them.
        if self.clock.idle(now) {
            self.resolve_held();
        }
        self.clock.advance(now);
        self.advance_clock(self.clock.now().max(now));
        self.run_due();
    }

    /// Capture files can step back in time (merged captures); the core's
    /// clock never does.
    fn advance_clock(&mut self, t: Timestamp) {
        if t > self.now {
            self.now = t;
        }
        if self.now >= self.spool_guard.next_check {
            self.check_spool();
        }
    }

    /// Timeouts, their call events, and announcement packets now due.
    fn run_due(&mut self) {
        self.tracker.tick(self.now, &mut self.events);
        if !self.events.is_empty() {
            self.flush_events();
        }
        if let Some(a) = self.announcer.as_mut() {
            a.poll(self.now);
        }
    }

    /// Recorded calls in progress.
    pub fn active_recorded(&self) -> usize {
        self.tracker.active_recorded()
    }

    /// How many recorded calls are in progress (answered, not ended).
    pub fn recording_now(&self) -> usize {
        self.calls.len()
    }

    /// The recorded calls in progress, oldest answer first.
    pub fn active_calls(&self) -> Vec<ActiveSummary> {
        let mut v: Vec<ActiveSummary> = self
            .calls
            .values()
            .map(|c| ActiveSummary {
                short_id: c.setup.short_id.clone(),
                contract: c.setup.contract.id.clone(),
                direction: c.setup.verdict.direction.map_or("outbound", |d| d.as_str()),
                answered_at: c.setup.answered_at,
            })
            .collect();
        v.sort_by(|a, b| (a.answered_at, &a.short_id).cmp(&(b.answered_at, &b.short_id)));
        v
    }

    /// Pauses (or resumes) the recording of a call in progress from the
    /// current capture time: the library call behind the control socket's
    /// `pause` and `resume`, for systems that know when a card number is
    /// about to be read out. `call` is the short id (as in the logs and
    /// `callrec status`) or the Call-ID. Returns the short id, or `None`
    /// when no recorded call in progress matches.
    pub fn set_paused(&mut self, call: &str, paused: bool) -> Option<String> {
        let (&key, c) = self
            .calls
            .iter_mut()
            .find(|(_, c)| c.setup.short_id == call || c.call_id == call)?;
        let short_id = c.setup.short_id.clone();
        match c.pause.set(paused, self.now) {
            Some(change) => self.apply_pause(key, change),
            None => {
                tracing::info!(call = %short_id, paused, by = "control socket", "recording already in that state")
            }
        }
        Some(short_id)
    }

    /// Packets the shard rings had no room for (live capture drops them).
    pub fn ring_drops(&self) -> u64 {
        self.shards
            .senders
            .iter()
            .map(|s| {
                s.counters()
                    .ring_drops
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum()
    }

    pub fn on_packet(&mut self, pkt: &Packet<'_>) {
        self.stats.packets += 1;
        if (pkt.data.len() as u64) < u64::from(pkt.orig_len) {
            self.note_cut(pkt);
        }
        loop {
            match self.clock.offer(pkt.ts) {
                Offer::At(ts) => {
                    self.process(&Packet { ts, ..*pkt });
                    if !self.held.is_empty() {
                        self.release_caught_up();
                    }
                    return;
                }
                Offer::Hold => {
                    let point = self.clock.select_current();
                    return self.held.push(HeldFrame::copy(pkt, point));
                }
                Offer::HoldAndResolve => {
                    let point = self.clock.select_current();
                    self.held.push(HeldFrame::copy(pkt, point));
                    return self.resolve_held();
                }
                Offer::ResolveFirst => self.resolve_held(),
            }
        }
    }

    /// One frame at the time the clock placed it.
    fn process(&mut self, pkt: &Packet<'_>) {
        self.first_ts.get_or_insert(pkt.ts);
        self.advance_clock(pkt.ts);
        // The decoder borrows itself mutably while handing out payloads, so
        // the per-payload work happens in a function over the other fields.
        let mut sip_payloads: Vec<SipCopy> = Vec::new();
        let mut keypad: Vec<KeypadCopy> = Vec::new();
        let mut ctx = RouteCtx {
            keypad: &mut keypad,
            sip_ports: &self.cfg.capture.sip_ports,
            by_dst: &mut self.by_dst,
            by_src: &mut self.by_src,
            calls: &self.calls,
            shards: &mut self.shards,
            tracker: &mut self.tracker,
            stats: &mut self.stats,
            check: &mut self.check,
        };
        self.decoder.decode(pkt, &mut |p| {
            // Media of recorded calls is most of the traffic: the route
            // lookup comes before the text sniffing, which only looks at
            // what no call claims.
            let sip = on_sip_port(ctx.sip_ports, &p)
                || !ctx.route_rtp(&p) && {
                    let sip = crate::sip::looks_like_sip(p.data);
                    ctx.stats.other_udp += u64::from(!sip);
                    sip
                };
            if sip {
                sip_payloads.push((p.ts, p.src, p.dst, p.l2, p.data.to_vec()));
            }
        });
        // After the frame's media went to the shards, so that a pause
        // follows the keypress that decided it in the shard's ring.
        for (key, ts, data) in keypad {
            if let Some(change) = self
                .calls
                .get_mut(&key)
                .and_then(|c| c.pause.on_rtp(ts, &data))
            {
                self.apply_pause(key, change);
            }
        }
        for (ts, src, dst, l2, data) in sip_payloads {
            if let (Some(a), Some(l2)) = (self.announcer.as_mut(), l2) {
                a.learn(&l2, src.ip(), dst.ip());
            }
            if let Some(h) = self.hep.as_mut() {
                h.observe(ts, src, dst, &data);
            }
            self.on_sip(ts, src, &data);
        }
        self.run_due();
    }

    /// Compares the spool with its limits: above the alarm level an alarm
    /// is logged; at the limit new calls go unrecorded ("overload") until
    /// deliveries and expiry bring it down. Nothing is ever deleted here.
    fn check_spool(&mut self) {
        let g = &mut self.spool_guard;
        g.next_check = self.now.add_micros(1_000_000);
        if g.warn == 0 && g.max == 0 {
            return;
        }
        if g.sync_shards {
            self.shards.sync();
            // The shards have handed every ended segment to their
            // finishers; wait until those are published and counted.
            while g.usage.in_flight() > 0 {
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
        let used = g.usage.bytes();
        let alarm = g.warn > 0 && used >= g.warn;
        if alarm && !g.alarmed {
            tracing::error!(
                alarm = true,
                spool_bytes = used,
                spool_warn_bytes = g.warn,
                spool_max_bytes = g.max,
                "SPOOL ALARM: the spool holds {used} bytes, over recording.spool_warn_bytes ({}); at recording.spool_max_bytes new calls go unrecorded",
                g.warn
            );
        }
        g.alarmed = alarm;
        let full = g.max > 0 && used >= g.max;
        if full != g.full {
            if full {
                tracing::error!(
                    alarm = true,
                    spool_bytes = used,
                    spool_max_bytes = g.max,
                    "SPOOL FULL: the spool holds {used} bytes, at recording.spool_max_bytes ({}); new calls go unrecorded with reason \"overload\" (nothing undelivered is deleted)",
                    g.max
                );
            } else {
                tracing::warn!(
                    spool_bytes = used,
                    spool_max_bytes = g.max,
                    "spool below recording.spool_max_bytes again; new calls are recorded"
                );
            }
            g.full = full;
            self.tracker.set_spool_full(full);
        }
    }

    fn on_sip(&mut self, ts: Timestamp, src: SocketAddr, data: &[u8]) {
        // RFC 5626 keep-alives (CRLF, or a few NULs from older phones).
        if data.len() <= 4 && data.iter().all(|b| matches!(b, b'\r' | b'\n' | 0 | b' ')) {
            self.stats.sip_keepalives += 1;
            return;
        }
        match crate::sip::parse(data) {
            Ok(msg) => {
                self.stats.sip_messages += 1;
                self.tracker.on_message(ts, src, &msg, &mut self.events);
                self.journal_sip(&msg);
            }
            Err(e) => {
                self.stats.sip_malformed += 1;
                tracing::debug!(error = %e, %src, "malformed SIP message skipped");
            }
        }
    }

    /// Ends every open call at the last packet time and waits for the
    /// shards to write their recordings.
    pub fn finish(mut self, reason: &str) -> EngineStats {
        let current = self.clock.select_current();
        for i in self.clock.points_holding() {
            self.clock.select_index(i);
            self.end_capture_point();
        }
        self.clock.select_index(current);
        let at = self.now;
        self.tracker.finish(at, reason, &mut self.events);
        self.flush_events();
        if let Some(a) = self.announcer.as_mut() {
            a.finish(at);
        }
        let _ = self.history.sync();
        self.shards.join();
        self.stats
    }
}
