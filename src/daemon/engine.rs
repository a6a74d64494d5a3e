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

use crate::announce::BeepKind;
use crate::announce::announcer::Announcer;
use crate::calls::tracker::{CallEvent, CallKey, MediaLegs, Tracker};
use crate::capture::Packet;
use crate::config::Config;
use crate::daemon::clock::{CaptureClock, HeldFrame, Kind, Offer, OutlierLog, Resolution};
use crate::daemon::media::{CallSetup, MediaCtl, telephone_event_pt};
use crate::daemon::routes::{Evidence, Route};
use crate::daemon::shard::{Leg, ShardPool};
use crate::decode::{Decoder, L2Info, Payload, Transport};
use crate::delivery::SpoolUsage;
use crate::history::{CallRecord, HistoryWriter};
use crate::media::pause::{PauseChange, PauseControl, PauseSource};
use crate::recording::undecodable::MediaCheck;
use crate::time::Timestamp;
use std::collections::BTreeMap;
// Per-packet lookups: foldhash is several times cheaper than SipHash and
// still seeded per process, so colliding keys cannot be precomputed.
use foldhash::{HashMap, HashMapExt};
use std::net::SocketAddr;
use std::sync::Arc;

pub mod restore;

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

/// Audio one RTP packet is assumed to carry past its capture time when a
/// call ends on the RTP timeout (the RFC 3551 default packet time, 20 ms).
const LAST_PACKET_US: i64 = 20_000;

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

    /// Carries out a pause or resume the call's [`PauseControl`] decided:
    /// the shard mutes or unmutes the recording from `change.at` (the
    /// message follows the deciding packet in its ring), and both parties
    /// hear the beep.
    fn apply_pause(&mut self, key: CallKey, change: PauseChange) {
        let Some(c) = self.calls.get(&key) else {
            return;
        };
        let PauseChange { paused, at, source } = change;
        let by = match source {
            PauseSource::Keypad => "keypad",
            PauseSource::Control => "control socket",
        };
        // Never the keys: only which way, when and from where.
        tracing::info!(call = %c.setup.short_id, paused, by, "recording pause state changed");
        self.shards.senders[c.shard].send_ctl(MediaCtl::Pause { key, at, paused });
        if let Some(a) = self.announcer.as_mut() {
            let kind = if paused {
                BeepKind::Pause
            } else {
                BeepKind::Resume
            };
            a.beep(key, &c.setup.short_id, at, kind, &c.legs);
        }
        self.journal_save(key);
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

    /// A frame shorter than on the wire: counted; the first is logged.
    #[cold]
    fn note_cut(&mut self, pkt: &Packet<'_>) {
        if self.stats.frames_cut == 0 {
            tracing::warn!(
                capture = self.clock.point_name(),
                packet = pkt.index,
                captured = pkt.data.len(),
                length = pkt.orig_len,
                "frames are cut below their length on the wire (snap length): what they carried beyond it is lost"
            );
        }
        self.stats.frames_cut += 1;
    }

    /// Places the frames the clock held back, as it decided, and
    /// processes them in their order, with other points' held frames the
    /// clock has now reached (in time order among them, ties to the point
    /// registered first, as a merge of files does; so a 200 OK held
    /// on the signalling point comes before the RTP a media point's
    /// resolution places after it).
    #[cold]
    fn resolve_held(&mut self) {
        let mut placed = self.resolve_point();
        if !self.held.is_empty() {
            placed.extend(self.resolve_caught_up());
            placed.sort_by_key(|p| (p.1, p.0.point));
        }
        self.process_placed(placed);
    }

    /// Other points' held frames the clock has reached since (see
    /// [`CaptureClock::caught_up_point`]): placed and processed now.
    #[cold]
    fn release_caught_up(&mut self) {
        let mut placed = self.resolve_caught_up();
        placed.sort_by_key(|p| (p.1, p.0.point));
        self.process_placed(placed);
    }

    /// Resolves, as at their end, the points other than the current one
    /// whose held frames the clock has reached; the current point stays.
    fn resolve_caught_up(&mut self) -> Vec<(HeldFrame, Timestamp, bool)> {
        let current = self.clock.select_current();
        let mut placed = Vec::new();
        // Bounded: a group the clock would not place is not tried forever.
        for _ in 0..8 {
            let Some(p) = self.clock.caught_up_point() else {
                break;
            };
            self.clock.select_index(p);
            if self.clock.finish_point() {
                placed.extend(self.resolve_point());
            }
            self.clock.select_index(current);
        }
        placed
    }

    /// The current point's held frames as the clock places them: each with
    /// its time and whether it came after a gap. The decision may rest on
    /// their RTP: each held RTP packet of a recorded stream says by how
    /// much its stamp moved from its media clock.
    fn resolve_point(&mut self) -> Vec<(HeldFrame, Timestamp, bool)> {
        let base = self.clock.held_base();
        let point = self.clock.select_current();
        let votes: Vec<i64> = self
            .held
            .iter()
            .filter(|f| f.point == point)
            .filter_map(|f| {
                let (src, dst, payload) = crate::decode::peek_udp(f.link, &f.data)?;
                let r = self
                    .by_dst
                    .get(&dst)
                    .filter(|r| r.latched() == Some(src))
                    .or_else(|| self.by_src.get(&src))?;
                r.vote(payload, f.raw.add_micros(base))
            })
            .collect();
        let res = self.clock.resolve(&votes);
        // The clock resolved the current point's frames (at the start: all
        // of them, whichever point); other points' frames stay held, and
        // so does what the clock did not place.
        let (mut frames, mut others): (Vec<HeldFrame>, Vec<HeldFrame>) = match res.kind {
            Kind::Start { .. } => (std::mem::take(&mut self.held), Vec::new()),
            _ => std::mem::take(&mut self.held)
                .into_iter()
                .partition(|f| f.point == point),
        };
        others.extend(frames.split_off(res.times.len().min(frames.len())));
        self.held = others;
        self.note_resolution(&res, &frames);
        let gap = matches!(res.kind, Kind::Gap { .. } | Kind::Start { .. });
        frames
            .into_iter()
            .zip(res.times)
            .map(|(f, ts)| (f, ts, gap))
            .collect()
    }

    fn process_placed(&mut self, placed: Vec<(HeldFrame, Timestamp, bool)>) {
        let tol = self.clock.tolerance_us();
        for (f, ts, gap) in placed {
            if gap && self.first_ts.is_some() && ts.since(self.now) > tol {
                // A silent stretch, or a step nothing could tell from one:
                // it does not count towards calls ringing across it.
                self.tracker.skip_setup_time(ts.since(self.now));
            }
            self.process(&f.packet(ts));
        }
    }

    /// Counts and logs what the clock decided about held frames.
    fn note_resolution(&mut self, res: &Resolution, frames: &[HeldFrame]) {
        let point = self.clock.point_name().to_owned();
        for ((f, &t), _) in frames
            .iter()
            .zip(&res.times)
            .zip(&res.outlier)
            .filter(|(_, o)| **o)
        {
            self.outlier_log.note(&point, f.source(), f.raw, t);
        }
        match res.kind {
            Kind::Outliers | Kind::Start { .. } => {}
            Kind::Step { offset_us } => tracing::warn!(
                capture = %point,
                offset_us,
                "the capture clock of {point} stepped: its packets are placed {:+.3} s from their stamps from now on (clock step)",
                offset_us as f64 / 1e6
            ),
            Kind::Gap { gap_us } => {
                tracing::debug!(capture = %point, gap_us, "no packet for a while: time passed")
            }
        }
        let c = self.clock.stats();
        self.stats.clock_outliers = c.outliers;
        self.stats.clock_steps = c.steps;
        self.stats.clock_gaps = c.gaps;
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

    fn flush_events(&mut self) {
        let events = std::mem::take(&mut self.events);
        for ev in events {
            let journal = crate::daemon::journal::JournalOp::of(&ev);
            self.on_event(ev);
            self.journal_event(journal);
        }
    }

    fn on_event(&mut self, ev: CallEvent) {
        match ev {
            CallEvent::Decided {
                key,
                call_id,
                short_id,
                verdict,
            } => {
                self.stats.calls += 1;
                let contract = verdict.contract.and_then(|i| self.cfg.contracts.get(i));
                if let (true, Some(contract)) = (verdict.record, contract) {
                    self.short_ids.insert(key, short_id);
                    self.call_ids.insert(key, call_id);
                    self.pending.insert(key, (verdict, contract.clone()));
                }
            }
            CallEvent::Answered {
                key,
                invite_at,
                at,
                legs,
            } => {
                let Some((verdict, contract)) = self.pending.remove(&key) else {
                    return;
                };
                let shard = (key as usize) % self.shards.len();
                let call_id = self.tracker_call_id(key);
                let short_id = self.short_ids.get(&key).cloned().unwrap_or_default();
                // The recording starts when the prompt ends, so the prompt
                // itself is never recorded.
                let played = self
                    .announcer
                    .as_mut()
                    .and_then(|a| a.start(key, &short_id, at, contract.guidance, &legs));
                let guidance = Some(crate::daemon::media::Guidance {
                    id: contract.guidance,
                    played: played.is_some(),
                    started_at: played.map_or(at, |p| p.started_at),
                    ended_at: played.map_or(at, |p| p.ended_at),
                    outcome: self.announcer.as_ref().and_then(|a| a.outcome(key)),
                });
                let record_start = played.map_or(at, |p| p.ended_at);
                self.billing
                    .insert(key, played.map_or(at, |p| p.started_at));
                let setup = Arc::new(CallSetup {
                    key,
                    call_id: call_id.clone(),
                    short_id,
                    contract,
                    verdict,
                    invite_at,
                    answered_at: at,
                    record_start,
                    guidance,
                    utc_offset_secs: self.cfg.general.utc_offset_secs,
                    format: self.cfg.recording.format,
                    encoded: self.cfg.recording.encoded,
                    hep: self.hep.as_ref().and_then(|h| h.notifier()),
                });
                let pause = PauseControl::new(
                    record_start,
                    setup.contract.pause_dtmf.as_deref(),
                    setup.contract.resume_dtmf.as_deref(),
                    telephone_event_pt(&legs, Leg::Subscriber),
                );
                self.calls.insert(
                    key,
                    ActiveCall {
                        call_id,
                        setup: setup.clone(),
                        shard,
                        dst_routes: Vec::new(),
                        src_routes: Vec::new(),
                        legs: legs.clone(),
                        pause,
                        foreign: [0; 2],
                        last_rtp: Timestamp::ZERO,
                    },
                );
                self.install_routes(key, &legs);
                self.shards.senders[shard].send_ctl(MediaCtl::Start { setup, legs });
            }
            CallEvent::MediaChanged { key, at, legs } => {
                let Some(c) = self.calls.get_mut(&key) else {
                    return;
                };
                c.pause
                    .set_event_pt(telephone_event_pt(&legs, Leg::Subscriber));
                c.legs = legs.clone();
                let shard = c.shard;
                if let Some(a) = self.announcer.as_mut() {
                    a.media_changed(key, at);
                }
                self.install_routes(key, &legs);
                self.shards.senders[shard].send_ctl(MediaCtl::Media { key, at, legs });
            }
            CallEvent::NewSegment { key, at, cause } => {
                self.flush_foreign(key);
                if let Some(c) = self.calls.get(&key) {
                    self.shards.senders[c.shard].send_ctl(MediaCtl::Segment { key, at, cause });
                }
            }
            CallEvent::Replaced { key, call_id } => {
                if let Some(c) = self.calls.get_mut(&key) {
                    c.call_id = call_id;
                }
            }
            CallEvent::InfoDigit { key, at, digit } => {
                if let Some(change) = self
                    .calls
                    .get_mut(&key)
                    .and_then(|c| c.pause.on_key(digit, at))
                {
                    self.apply_pause(key, change);
                }
            }
            CallEvent::Ended {
                key,
                mut at,
                recorded,
                mut record,
            } => {
                self.pending.remove(&key);
                if record.end_reason.as_deref() == Some("rtp-timeout")
                    && let Some(last) = self.last_rtp(key)
                {
                    // The tracker only hears of RTP once a second; the
                    // recording runs to the end of the last packet heard.
                    at = at.max(last.add_micros(LAST_PACKET_US));
                    record.ended_at = Some(at.rfc3339(self.cfg.general.utc_offset_secs));
                }
                // Billing starts when the prompt first reached a party.
                let reached = self.announcer.as_ref().and_then(|a| a.outcome(key));
                let reached = reached.and_then(|o| o.first_sent_us()).map(Timestamp);
                if let Some(a) = self.announcer.as_mut() {
                    a.forget(key);
                }
                record.billing_start = reached
                    .or(self.billing.remove(&key))
                    .map(|t| t.rfc3339(self.cfg.general.utc_offset_secs));
                self.billing.remove(&key);
                self.short_ids.remove(&key);
                self.call_ids.remove(&key);
                self.flush_foreign(key);
                if let Some(why) = self.check.verdict(key).filter(|_| recorded) {
                    // Never a file presented as good: the history says why.
                    self.stats.undecodable += 1;
                    tracing::error!(call = %record.short_id, reason = %why, "RECORDING ALARM: no audio of this call could be decoded; nothing delivered");
                    record.reason = Some(why);
                }
                if let Some(c) = self.calls.remove(&key) {
                    for a in &c.dst_routes {
                        self.by_dst.remove(a);
                    }
                    for a in &c.src_routes {
                        self.by_src.remove(a);
                    }
                    let reason = record.end_reason.clone().unwrap_or_default();
                    self.shards.senders[c.shard].send_ctl(MediaCtl::End { key, at, reason });
                }
                if recorded {
                    self.stats.recorded += 1;
                } else {
                    *self
                        .stats
                        .skipped
                        .entry(record.reason.clone().unwrap_or_default())
                        .or_default() += 1;
                }
                // The decision is final only now (a cancelled or unanswered
                // call is skipped after all); recorded calls get their
                // "call ended" line from the finisher, which knows the bytes.
                tracing::info!(call = %record.short_id, contract = record.contract.as_deref().unwrap_or("-"), direction = record.direction.as_deref().unwrap_or("-"), decision = %record.decision, reason = record.reason.as_deref().unwrap_or("-"), "final decision");
                if !recorded {
                    tracing::info!(call = %record.short_id, end_reason = record.end_reason.as_deref().unwrap_or("-"), segments = 0, bytes = 0, "call ended");
                }
                self.write_history(&record);
            }
        }
    }

    /// When the last RTP packet of a recorded call was routed, if any was.
    fn last_rtp(&self, key: CallKey) -> Option<Timestamp> {
        let c = self.calls.get(&key)?;
        let routes = c.dst_routes.iter().filter_map(|a| self.by_dst.get(a));
        let routes = routes.chain(c.src_routes.iter().filter_map(|a| self.by_src.get(a)));
        let last = routes
            .filter(|r| r.key == key)
            .map(|r| r.last)
            .fold(c.last_rtp, Timestamp::max);
        (last > Timestamp::ZERO).then_some(last)
    }

    fn tracker_call_id(&self, key: CallKey) -> String {
        self.call_ids.get(&key).cloned().unwrap_or_default()
    }

    /// Tells the call's shard the packets dropped as foreign on its
    /// routes since last told (before a segment closes).
    fn flush_foreign(&mut self, key: CallKey) {
        let Some(c) = self.calls.get_mut(&key) else {
            return;
        };
        for a in &c.dst_routes {
            if let Some(r) = self.by_dst.get_mut(a).filter(|r| r.key == key) {
                c.foreign[r.leg as usize] += r.take_foreign();
            }
        }
        for leg in [Leg::Subscriber, Leg::Remote] {
            let packets = std::mem::take(&mut c.foreign[leg as usize]);
            if packets > 0 {
                self.shards.senders[c.shard].send_ctl(MediaCtl::Foreign { key, leg, packets });
            }
        }
    }

    fn install_routes(&mut self, key: CallKey, legs: &MediaLegs) {
        let Some(call) = self.calls.get_mut(&key) else {
            return;
        };
        // What the routes being replaced learned: their last packet, the
        // foreign packets still to report, and where each party was seen
        // sending (symmetric RTP).
        let mut learned: Vec<(SocketAddr, Option<SocketAddr>, Option<SocketAddr>)> = Vec::new();
        for a in call.dst_routes.drain(..) {
            if let Some(mut r) = self.by_dst.remove(&a) {
                call.last_rtp = call.last_rtp.max(r.last);
                if r.key == key {
                    call.foreign[r.leg as usize] += r.take_foreign();
                    learned.push((a, r.evidence.target, None));
                }
            }
        }
        for a in call.src_routes.drain(..) {
            if let Some(r) = self.by_src.remove(&a) {
                call.last_rtp = call.last_rtp.max(r.last);
                if r.key == key {
                    learned.push((a, None, r.sends_to));
                }
            }
        }
        let target = |a: SocketAddr| {
            learned
                .iter()
                .find(|l| l.0 == a && l.1.is_some())
                .and_then(|l| l.1)
        };
        let sends_to = |a: SocketAddr| {
            learned
                .iter()
                .find(|l| l.0 == a && l.2.is_some())
                .and_then(|l| l.2)
        };
        // The subscriber's voice travels to the remote party's address and
        // comes from the subscriber's own; the remote voice the other way.
        // What vouches for each sender: its SDP address and signalling
        // address, and where the other party was seen sending to.
        let addr = |e: &Option<crate::calls::tracker::Endpoint>| e.as_ref().map(|e| e.addr);
        let shard = call.shard;
        let keypad_pt = call.pause.watched_pt();
        let check = self.check.set_legs(key, legs);
        let route = |leg: Leg, evidence: Evidence| {
            let mut r = Route::new(key, leg, shard, evidence);
            r.check = check;
            if leg == Leg::Subscriber {
                r.keypad_pt = keypad_pt;
            }
            r
        };
        if let Some(r) = &legs.remote {
            self.by_dst.insert(
                r.addr,
                route(
                    Leg::Subscriber,
                    Evidence {
                        sdp: addr(&legs.subscriber),
                        sip_ip: legs.subscriber_sip,
                        target: target(r.addr),
                    },
                ),
            );
            let mut src = route(Leg::Remote, Evidence::default());
            src.sends_to = sends_to(r.addr);
            self.by_src.insert(r.addr, src);
            call.dst_routes.push(r.addr);
            call.src_routes.push(r.addr);
        }
        if let Some(s) = &legs.subscriber {
            self.by_dst.insert(
                s.addr,
                route(
                    Leg::Remote,
                    Evidence {
                        sdp: addr(&legs.remote),
                        sip_ip: legs.remote_sip,
                        target: target(s.addr),
                    },
                ),
            );
            let mut src = route(Leg::Subscriber, Evidence::default());
            src.sends_to = sends_to(s.addr);
            self.by_src.insert(s.addr, src);
            call.dst_routes.push(s.addr);
            call.src_routes.push(s.addr);
        }
    }

    fn write_history(&mut self, record: &CallRecord) {
        if let Err(e) = self.history.append(record) {
            tracing::error!(error = %e, path = %self.history.path().display(), "cannot write call history");
        }
        if let Some(h) = self.hep.as_mut() {
            h.call_ended(record);
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

/// The fields the per-payload path needs while the decoder is borrowed.
struct RouteCtx<'e> {
    keypad: &'e mut Vec<KeypadCopy>,
    sip_ports: &'e [u16],
    by_dst: &'e mut HashMap<SocketAddr, Route>,
    by_src: &'e mut HashMap<SocketAddr, Route>,
    calls: &'e HashMap<CallKey, ActiveCall>,
    shards: &'e mut ShardPool<MediaCtl>,
    tracker: &'e mut Tracker,
    stats: &'e mut EngineStats,
    check: &'e mut MediaCheck,
}

impl RouteCtx<'_> {
    /// Hands a recorded call's media to its shard; false when no call
    /// claims the payload.
    fn route_rtp(&mut self, p: &Payload<'_>) -> bool {
        let r = if let Some(r) = self.by_dst.get_mut(&p.dst) {
            if !r.admit(p.src, p.ts) {
                self.stats.rtp_foreign += 1;
                return true;
            }
            r
        } else if let Some(r) = self.by_src.get_mut(&p.src) {
            if r.sends_to != Some(p.dst) {
                // Where this party sends is where the other party's packets
                // come from when it is behind NAT (symmetric RTP): evidence
                // for the route of packets sent to this party.
                r.sends_to = Some(p.dst);
                if let Some(d) = self.by_dst.get_mut(&p.src) {
                    d.evidence.target = Some(p.dst);
                }
            }
            r
        } else {
            return false;
        };
        r.note(p.data, p.ts);
        self.stats.rtp_routed += 1;
        r.last = p.ts;
        // Keep the call alive against the RTP timeout, cheaply: at most
        // once a second per route.
        if p.ts.since(r.touched) > 1_000_000 {
            r.touched = p.ts;
            if let Some(call) = self.calls.get(&r.key) {
                self.tracker.touch(&call.call_id, p.ts);
            }
        }
        if r.check {
            self.check.on_packet(r.key, r.leg, p.data);
        }
        self.shards.senders[r.shard].send_rtp(r.key, r.leg, p.ts, p.data);
        if let Some(pt) = r.keypad_pt
            && p.data.get(1).is_some_and(|b| b & 0x7f == pt)
        {
            self.keypad.push((r.key, p.ts, p.data.to_vec()));
        }
        true
    }
}

/// Stream reassembly only hands out SIP over TCP, and on a SIP port
/// anything is taken as SIP (and counted when it does not parse);
/// elsewhere only what starts like a SIP message is.
fn on_sip_port(ports: &[u16], p: &Payload<'_>) -> bool {
    p.transport == Transport::Tcp || ports.contains(&p.dst.port()) || ports.contains(&p.src.port())
}
