//! What a shard worker does with a recorded call: a recorder per segment,
//! fed the call's RTP; closed segments go to the shard's
//! [finisher](crate::daemon::finisher) for the file work.

use crate::calls::policy::Verdict;
use crate::calls::tracker::Endpoint;
use crate::calls::tracker::{CallKey, MediaLegs};
use crate::config::{AudioFormat, Contract};
use crate::config::{Config, SegmentPolicy};
use crate::daemon::finisher::{FinishJob, Finisher, Publish};
use crate::daemon::shard::{Leg, ShardHandler};
use crate::delivery::spool::{Spool, SpoolUsage};
use crate::recording::recorder::{CallRecorder, RecorderParams, RecordingSummary};
use crate::time::Timestamp;
// Looked up per packet: see the engine on the hasher.
use foldhash::{HashMap, HashMapExt};
use std::path::PathBuf;
use std::sync::Arc;

/// Everything about a recorded call that the shard needs to write its files.
#[derive(Debug)]
pub struct CallSetup {
    pub key: CallKey,
    pub call_id: String,
    pub short_id: String,
    pub contract: Contract,
    pub verdict: Verdict,
    pub invite_at: Timestamp,
    pub answered_at: Timestamp,
    /// Where the recording starts: the end of the announcement, or the answer.
    pub record_start: Timestamp,
    pub guidance: Option<Guidance>,
    pub utc_offset_secs: i32,
    pub format: AudioFormat,
    /// MP3, Opus or FLAC instead of WAV (`[recording] format`).
    pub encoded: Option<crate::config::Encoded>,
    /// Tells the HEP collector each published recording's name (`[hep]`).
    pub hep: Option<Arc<crate::history::hep::RecordingNotifier>>,
}

#[derive(Clone, Debug)]
pub struct Guidance {
    pub id: u8,
    pub played: bool,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
    /// How the prompt reached each party (filled while it plays).
    pub outcome: Option<Arc<crate::announce::outcome::Outcome>>,
}

pub enum MediaCtl {
    Start {
        setup: Arc<CallSetup>,
        legs: MediaLegs,
    },
    Media {
        key: CallKey,
        at: Timestamp,
        legs: MediaLegs,
    },
    Segment {
        key: CallKey,
        at: Timestamp,
        cause: &'static str,
    },
    End {
        key: CallKey,
        at: Timestamp,
        reason: String,
    },
    /// Pause or resume, as the capture thread decided it
    /// ([`crate::media::pause`]): sent right after the deciding packet.
    Pause {
        key: CallKey,
        at: Timestamp,
        paused: bool,
    },
    /// A call in progress restored from the call-state journal after a
    /// crash ([`crate::daemon::journal`]): recording goes on from `at` in
    /// segment `index` (cause `restart`), muted from its first sample when
    /// the call was paused.
    Restart {
        setup: Arc<CallSetup>,
        legs: MediaLegs,
        index: u32,
        at: Timestamp,
        paused: bool,
    },
    /// Packets the capture thread dropped as foreign on `leg` since the
    /// last such message ([`crate::daemon::routes`]); sent before a
    /// segment closes.
    Foreign {
        key: CallKey,
        leg: Leg,
        packets: u64,
    },
}

struct CallMedia {
    setup: Arc<CallSetup>,
    legs: MediaLegs,
    rec: Option<CallRecorder>,
    index: u32,
    seg_start: Timestamp,
    cause: &'static str,
    /// Live daemon: when the segment's intent is next refreshed with the
    /// quality figures (capture time, every [`INTENT_REFRESH_US`]).
    next_intent: Timestamp,
}

/// How often (µs of capture time) a live segment's intent is rewritten
/// with its quality so far, so a recording cut short by a crash is
/// published with figures at most this old.
const INTENT_REFRESH_US: i64 = 1_000_000;

/// The shard handler for recorded calls.
pub struct MediaWorker {
    cfg: Arc<Config>,
    shard: usize,
    spool: Option<Spool>,
    /// Boxed, so the table itself stays small enough to stay in cache
    /// (it is probed three times per packet: two prefetches and the packet).
    calls: HashMap<CallKey, Box<CallMedia>>,
    /// Closing a segment (fsync, hash, metadata, publication) waits on the
    /// disk; it runs on this shard's finisher so the media never does.
    finisher: Option<Finisher>,
    /// `callrec run`: audio goes to the kernel every mixed block and the
    /// intents carry fresh quality figures (crash safety). Off for
    /// `replay`, whose output and speed must not change.
    live: bool,
}

impl MediaWorker {
    /// `usage`: the spool's running byte count, which each publication adds to.
    pub fn new(cfg: Arc<Config>, shard: usize, usage: SpoolUsage) -> MediaWorker {
        let spool = match Spool::open(&cfg.recording.spool_dir) {
            Ok(s) => Some(s.with_usage(usage.clone())),
            Err(e) => {
                tracing::error!(error = %e, spool = %cfg.recording.spool_dir.display(), "cannot open the spool: recordings will fail");
                None
            }
        };
        let finisher = Finisher::start(shard, spool.clone(), usage);
        MediaWorker {
            cfg,
            shard,
            spool,
            calls: HashMap::new(),
            finisher: Some(finisher),
            live: false,
        }
    }

    /// For the live daemon (`callrec run`): each mixed block of audio
    /// (20 ms or more) is handed to the kernel as it is written, and each
    /// open segment's intent is refreshed with its quality figures once a
    /// second of capture time. A `kill -9` then loses at most one block.
    pub fn live(mut self) -> MediaWorker {
        self.live = true;
        self
    }

    fn finish(&self, job: FinishJob) {
        if let Some(f) = &self.finisher {
            f.send(job);
        }
    }

    fn tmp_path(&self, setup: &CallSetup, index: u32) -> PathBuf {
        let dir = match &self.spool {
            Some(s) => s.tmp_dir(),
            None => self.cfg.recording.spool_dir.join("tmp"),
        };
        dir.join(format!("{}_{}_{index}.wav", setup.short_id, setup.key))
    }

    fn open_segment(&self, c: &mut CallMedia, start: Timestamp) {
        let setup = &c.setup;
        let ct = &setup.contract;
        let params = RecorderParams {
            path: self.tmp_path(setup, c.index),
            format: setup.format,
            channels: ct.channels,
            start,
            telephone_event_pt: [
                telephone_event_pt(&c.legs, Leg::Subscriber),
                telephone_event_pt(&c.legs, Leg::Remote),
            ],
            sample_rate: crate::recording::formats::recording_rate(ct, &c.legs),
        };
        let path = params.path.clone();
        match CallRecorder::create(params) {
            Ok(mut r) => {
                r.set_flush_each_block(self.live);
                if self.live
                    && let Err(e) = r.keep_tail(&path, start)
                {
                    tracing::warn!(call = %setup.short_id, error = %e, "cannot keep the jitter window on disk: a crash would lose its last 200 ms");
                }
                apply_payloads(&mut r, &c.legs);
                c.rec = Some(r);
                c.seg_start = start;
                c.next_intent = start.add_micros(INTENT_REFRESH_US);
                // What the next start needs to publish this segment should
                // the process die before it closes.
                write_segment_intent(c, &path, None);
            }
            Err(e) => {
                tracing::error!(call = %setup.short_id, error = %e, "cannot create the recording file");
                c.rec = None;
            }
        }
    }

    /// Live: rewrites the open segment's intent with the quality so far.
    /// One JSON of ~1.5 kB and one in-place page write (~5 µs of system
    /// calls) per call per second.
    fn refresh_intent(&mut self, key: CallKey, ts: Timestamp) {
        let Some(c) = self.calls.get(&key) else {
            return;
        };
        let Some(summary) = c.rec.as_ref().map(CallRecorder::provisional_summary) else {
            return;
        };
        write_segment_intent(c, &self.tmp_path(&c.setup, c.index), Some(&summary));
        if let Some(c) = self.calls.get_mut(&key) {
            c.next_intent = ts.add_micros(INTENT_REFRESH_US);
        }
    }

    /// Hands the open segment, if any, to the finisher; `publish` says
    /// whether it is published at once (and as what) or held until the
    /// call ends.
    fn close_segment(&self, c: &mut CallMedia, at: Timestamp, publish: Option<Publish>) {
        let Some(rec) = c.rec.take() else { return };
        self.finish(FinishJob::Segment {
            key: c.setup.key,
            setup: c.setup.clone(),
            rec: Box::new(rec),
            path: self.tmp_path(&c.setup, c.index),
            index: c.index,
            started: c.seg_start,
            ended: at.max(c.seg_start),
            cause: c.cause,
            publish,
        });
    }

    fn end_call(&mut self, key: CallKey, at: Timestamp, reason: &str) {
        let Some(mut c) = self.calls.remove(&key) else {
            return;
        };
        self.close_segment(&mut c, at, None);
        self.finish(FinishJob::CallEnd {
            key,
            setup: c.setup.clone(),
            publish: Publish {
                count: c.index,
                ended_at: at,
                reason: reason.to_owned(),
            },
        });
    }
}

/// Writes the intent of `c`'s open segment at `path`: its metadata as
/// far as known, with the quality of `summary` (None when it opens).
fn write_segment_intent(c: &CallMedia, path: &std::path::Path, summary: Option<&RecordingSummary>) {
    let setup = &c.setup;
    let start = c.seg_start;
    let provisional = Publish {
        count: c.index,
        ended_at: start,
        reason: "recovered".to_owned(),
    };
    let (stem, meta) = crate::daemon::finisher::segment_metadata(
        setup,
        c.index,
        start,
        start,
        c.cause,
        &provisional,
        summary,
    );
    crate::daemon::recovery::write_intent(
        path,
        &setup.contract.destination,
        &stem,
        start,
        setup.utc_offset_secs,
        &serde_json::to_value(&meta).unwrap_or_default(),
    );
}

/// The telephone-event PT of the packets `leg` sends: the one the
/// receiver's SDP names, falling back to the sender's.
pub fn telephone_event_pt(legs: &MediaLegs, leg: Leg) -> Option<u8> {
    let (sender, receiver) = match leg {
        Leg::Subscriber => (&legs.subscriber, &legs.remote),
        Leg::Remote => (&legs.remote, &legs.subscriber),
    };
    receiver
        .as_ref()
        .and_then(Endpoint::telephone_event_pt)
        .or_else(|| sender.as_ref().and_then(Endpoint::telephone_event_pt))
}

/// Packets a party sends are labelled with the payload types the *other*
/// party declared (it is the receiver's SDP that binds dynamic types).
fn apply_payloads(r: &mut CallRecorder, legs: &MediaLegs) {
    for leg in [Leg::Subscriber, Leg::Remote] {
        let (map, unsupported) = crate::recording::formats::leg_formats(legs, leg);
        r.set_formats(leg, &map, &unsupported);
        let (sender, receiver) = crate::recording::formats::leg_keys(legs, leg);
        r.set_keys(leg, &sender, &receiver);
    }
}

impl ShardHandler for MediaWorker {
    type Ctl = MediaCtl;

    fn on_rtp(&mut self, key: CallKey, leg: Leg, ts: Timestamp, rtp: &[u8]) {
        let Some(c) = self.calls.get_mut(&key) else {
            return;
        };
        if let Some(r) = c.rec.as_mut() {
            r.on_rtp(leg, ts, rtp);
        }
        if self.live && ts >= c.next_intent {
            self.refresh_intent(key, ts);
        }
    }

    fn prefetch_state(&mut self, key: CallKey) {
        if let Some(r) = self.calls.get(&key).and_then(|c| c.rec.as_ref()) {
            r.prefetch_state();
        }
    }

    fn prefetch_data(&mut self, key: CallKey, leg: Leg, ts: Timestamp) {
        if let Some(r) = self.calls.get(&key).and_then(|c| c.rec.as_ref()) {
            r.prefetch_audio(leg, ts);
        }
    }

    fn on_ctl(&mut self, ctl: MediaCtl) {
        match ctl {
            MediaCtl::Start { setup, legs } => {
                let key = setup.key;
                let start = setup.record_start;
                let mut c = Box::new(CallMedia {
                    setup,
                    legs,
                    rec: None,
                    index: 1,
                    seg_start: start,
                    cause: "answer",
                    next_intent: start,
                });
                self.open_segment(&mut c, start);
                self.calls.insert(key, c);
            }
            MediaCtl::Restart {
                setup,
                legs,
                index,
                at,
                paused,
            } => {
                let key = setup.key;
                let mut c = Box::new(CallMedia {
                    setup,
                    legs,
                    rec: None,
                    index,
                    seg_start: at,
                    cause: "restart",
                    next_intent: at,
                });
                self.open_segment(&mut c, at);
                if paused && let Some(r) = c.rec.as_mut() {
                    r.pause(at);
                }
                self.calls.insert(key, c);
            }
            MediaCtl::Media { key, legs, .. } => {
                if let Some(c) = self.calls.get_mut(&key) {
                    c.legs = legs;
                    if let Some(r) = c.rec.as_mut() {
                        apply_payloads(r, &c.legs);
                    }
                }
            }
            MediaCtl::Segment { key, at, cause } => {
                let Some(mut c) = self.calls.remove(&key) else {
                    return;
                };
                // A transfer during the announcement: nothing recorded yet.
                if at > c.seg_start {
                    // With every segment kept, this one is complete as it
                    // stands; with only the longest, the call's end decides.
                    let publish =
                        (c.setup.contract.segments == SegmentPolicy::All).then(|| Publish {
                            count: c.index,
                            ended_at: at,
                            reason: "transfer".to_owned(),
                        });
                    // A pause outlives the transfer: the card number read
                    // out before it is still being read after it.
                    let paused = c.rec.as_ref().is_some_and(CallRecorder::is_paused);
                    self.close_segment(&mut c, at, publish);
                    c.index += 1;
                    c.cause = cause;
                    self.open_segment(&mut c, at);
                    if paused && let Some(r) = c.rec.as_mut() {
                        r.pause(at);
                        tracing::info!(call = %c.setup.short_id, segment = c.index, "recording still paused in the new segment");
                    }
                }
                self.calls.insert(key, c);
            }
            MediaCtl::End { key, at, reason } => self.end_call(key, at, &reason),
            MediaCtl::Foreign { key, leg, packets } => {
                if let Some(r) = self.calls.get_mut(&key).and_then(|c| c.rec.as_mut()) {
                    r.add_foreign(leg, packets);
                }
            }
            MediaCtl::Pause { key, at, paused } => {
                let Some(c) = self.calls.get_mut(&key) else {
                    return;
                };
                let Some(r) = c.rec.as_mut() else { return };
                // The capture thread logged the decision; this only says
                // where on the timeline it fell.
                let ev = if paused { r.pause(at) } else { r.resume(at) };
                tracing::debug!(call = %c.setup.short_id, event = ?ev, segment = c.index, "pause applied");
            }
        }
    }

    fn shutdown(&mut self) {
        let mut keys: Vec<CallKey> = self.calls.keys().copied().collect();
        keys.sort();
        for k in keys {
            let at = self.calls[&k].seg_start;
            tracing::warn!(
                shard = self.shard,
                call = k,
                "call still open at shutdown; recording closed"
            );
            self.end_call(k, at, "shutdown");
        }
        // Every recording is on disk and published before the shard is
        // reported done.
        if let Some(f) = self.finisher.take() {
            f.join();
        }
    }
}
