//! What a shard worker does with a recorded call: recorder per segment,
//! metadata, and publication into the spool.

use crate::calls::policy::Verdict;
use crate::calls::tracker::Endpoint;
use crate::calls::tracker::{CallKey, MediaLegs};
use crate::config::{AudioFormat, Contract};
use crate::config::{Channels, Config, SegmentPolicy};
use crate::daemon::shard::{Leg, ShardHandler};
use crate::delivery::spool::{Spool, SpoolUsage};
use crate::media::codec::Codec;
use crate::recording::metadata::{
    self, AudioMeta, GuidanceMeta, Metadata, PauseMeta, QualityMeta, SegmentMeta,
};
use crate::recording::recorder::{CallRecorder, RecorderParams, RecordingSummary};
use crate::time::Timestamp;
use std::collections::HashMap;
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
}

#[derive(Clone, Debug)]
pub struct Guidance {
    pub id: u8,
    pub played: bool,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
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
    Digit {
        key: CallKey,
        at: Timestamp,
        digit: char,
    },
    End {
        key: CallKey,
        at: Timestamp,
        reason: String,
    },
}

/// A segment whose WAV is complete in `tmp/` but not yet published.
struct Finished {
    index: u32,
    started: Timestamp,
    ended: Timestamp,
    cause: &'static str,
    path: PathBuf,
    summary: RecordingSummary,
}

struct CallMedia {
    setup: Arc<CallSetup>,
    legs: MediaLegs,
    rec: Option<CallRecorder>,
    index: u32,
    seg_start: Timestamp,
    cause: &'static str,
    /// Segments kept back until the call ends (`segments = "longest"`).
    held: Vec<Finished>,
}

/// The shard handler for recorded calls.
pub struct MediaWorker {
    cfg: Arc<Config>,
    shard: usize,
    spool: Option<Spool>,
    calls: HashMap<CallKey, CallMedia>,
}

impl MediaWorker {
    /// `usage`: the spool's running byte count, which each publication adds to.
    pub fn new(cfg: Arc<Config>, shard: usize, usage: SpoolUsage) -> MediaWorker {
        let spool = match Spool::open(&cfg.recording.spool_dir) {
            Ok(s) => Some(s.with_usage(usage)),
            Err(e) => {
                tracing::error!(error = %e, spool = %cfg.recording.spool_dir.display(), "cannot open the spool: recordings will fail");
                None
            }
        };
        MediaWorker {
            cfg,
            shard,
            spool,
            calls: HashMap::new(),
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
                te_pt(c.legs.remote.as_ref(), c.legs.subscriber.as_ref()),
                te_pt(c.legs.subscriber.as_ref(), c.legs.remote.as_ref()),
            ],
            pause_dtmf: ct.pause_dtmf.clone(),
            resume_dtmf: ct.resume_dtmf.clone(),
        };
        match CallRecorder::create(params) {
            Ok(mut r) => {
                apply_payloads(&mut r, &c.legs);
                c.rec = Some(r);
                c.seg_start = start;
            }
            Err(e) => {
                tracing::error!(call = %setup.short_id, error = %e, "cannot create the recording file");
                c.rec = None;
            }
        }
    }

    fn close_segment(&self, c: &mut CallMedia, at: Timestamp) -> Option<Finished> {
        let rec = c.rec.take()?;
        let path = self.tmp_path(&c.setup, c.index);
        let end = at.max(c.seg_start);
        match rec.finish(end) {
            Ok(summary) => Some(Finished {
                index: c.index,
                started: c.seg_start,
                ended: end,
                cause: c.cause,
                path,
                summary,
            }),
            Err(e) => {
                tracing::error!(call = %c.setup.short_id, error = %e, "cannot finish the recording; left in tmp/ for recovery");
                None
            }
        }
    }

    fn publish(
        &self,
        setup: &CallSetup,
        f: &Finished,
        count: u32,
        ended_at: Timestamp,
        end_reason: &str,
    ) {
        let off = setup.utc_offset_secs;
        let v = &setup.verdict;
        let dir = match v.direction {
            Some(crate::calls::policy::Direction::Inbound) => "in",
            _ => "out",
        };
        let stem = metadata::stem(
            &setup.contract.id,
            f.started.stem_parts(off),
            dir,
            &v.caller,
            &v.callee,
            &setup.short_id,
            f.index,
        );
        let file = format!("{}.wav", stem.rsplit('/').next().unwrap_or(&stem));
        let stereo = setup.contract.channels == Channels::Stereo;
        let g = setup.guidance.as_ref();
        let meta = Metadata {
            schema: 1,
            call_id: setup.call_id.clone(),
            contract: setup.contract.id.clone(),
            service: setup.contract.service.as_str().into(),
            direction: v.direction.map(|d| d.as_str()).unwrap_or("outbound").into(),
            prefix: v.prefix.map(str::to_owned),
            caller: v.caller.clone(),
            callee: v.callee.clone(),
            invite_at: setup.invite_at.rfc3339(off),
            answered_at: setup.answered_at.rfc3339(off),
            guidance: GuidanceMeta {
                id: setup.contract.guidance,
                played: g.is_some_and(|g| g.played),
                started_at: g.filter(|g| g.played).map(|g| g.started_at.rfc3339(off)),
                ended_at: g.filter(|g| g.played).map(|g| g.ended_at.rfc3339(off)),
            },
            ended_at: ended_at.rfc3339(off),
            end_reason: end_reason.into(),
            segment: SegmentMeta {
                index: f.index,
                count,
                started_at: f.started.rfc3339(off),
                ended_at: f.ended.rfc3339(off),
                cause: f.cause.into(),
            },
            audio: AudioMeta {
                file,
                format: setup.format.as_str().into(),
                channels: if stereo { 2 } else { 1 },
                channel_map: if stereo {
                    vec!["subscriber".into(), "remote".into()]
                } else {
                    vec!["mixed".into()]
                },
                sample_rate: 8000,
                duration_ms: f.summary.duration_ms,
                sha256: f.summary.sha256.clone(),
                bytes: f.summary.bytes,
            },
            pauses: f
                .summary
                .pauses
                .iter()
                .map(|&(from_ms, to_ms)| PauseMeta { from_ms, to_ms })
                .collect(),
            quality: QualityMeta {
                subscriber: serde_json::to_value(&f.summary.quality[0]).unwrap_or_default(),
                remote: serde_json::to_value(&f.summary.quality[1]).unwrap_or_default(),
            },
        };
        let Some(spool) = &self.spool else { return };
        match spool.publish(&setup.contract.destination, &stem, &f.path, &meta.to_json()) {
            Ok(()) => {
                tracing::info!(call = %setup.short_id, segment = f.index, duration_ms = f.summary.duration_ms, destination = %setup.contract.destination, "recording queued")
            }
            Err(e) => {
                tracing::error!(call = %setup.short_id, error = %e, "cannot queue the recording; left in tmp/ for recovery")
            }
        }
    }

    fn end_call(&mut self, key: CallKey, at: Timestamp, reason: &str) {
        let Some(mut c) = self.calls.remove(&key) else {
            return;
        };
        if let Some(f) = self.close_segment(&mut c, at) {
            c.held.push(f);
        }
        let count = c.index;
        let mut segs = std::mem::take(&mut c.held);
        if c.setup.contract.segments == SegmentPolicy::Longest && segs.len() > 1 {
            // Keep the longest (the earliest of equals); the others were
            // never finished recordings for this contract.
            let best = segs
                .iter()
                .enumerate()
                .max_by_key(|(i, f)| (f.summary.duration_ms, std::cmp::Reverse(*i)))
                .map(|(i, _)| i)
                .unwrap_or(0);
            for (i, f) in segs.iter().enumerate() {
                if i != best {
                    let _ = std::fs::remove_file(&f.path);
                }
            }
            segs = vec![segs.swap_remove(best)];
        }
        for f in &segs {
            self.publish(&c.setup, f, count, at, reason);
        }
    }
}

/// The telephone-event PT used by packets going *to* `receiver` (the
/// receiver's SDP names it), falling back to the sender's.
fn te_pt(receiver: Option<&Endpoint>, sender: Option<&Endpoint>) -> Option<u8> {
    receiver
        .and_then(Endpoint::telephone_event_pt)
        .or_else(|| sender.and_then(Endpoint::telephone_event_pt))
}

fn codec_map(primary: Option<&Endpoint>, other: Option<&Endpoint>) -> Vec<(u8, Codec)> {
    let mut map: Vec<(u8, Codec)> = Vec::new();
    for ep in [primary, other].into_iter().flatten() {
        for (pt, enc) in &ep.payloads {
            let c = match enc.as_str() {
                "PCMU" => Codec::Pcmu,
                "PCMA" => Codec::Pcma,
                "CN" => Codec::ComfortNoise,
                "TELEPHONE-EVENT" => Codec::TelephoneEvent,
                _ => continue,
            };
            if !map.iter().any(|(p, _)| p == pt) {
                map.push((*pt, c));
            }
        }
    }
    map
}

/// Packets a party sends are labelled with the payload types the *other*
/// party declared (it is the receiver's SDP that binds dynamic types).
fn apply_payloads(r: &mut CallRecorder, legs: &MediaLegs) {
    r.set_payload_map(
        Leg::Subscriber,
        &codec_map(legs.remote.as_ref(), legs.subscriber.as_ref()),
    );
    r.set_payload_map(
        Leg::Remote,
        &codec_map(legs.subscriber.as_ref(), legs.remote.as_ref()),
    );
}

impl ShardHandler for MediaWorker {
    type Ctl = MediaCtl;

    fn on_rtp(&mut self, key: CallKey, leg: Leg, ts: Timestamp, rtp: &[u8]) {
        let Some(c) = self.calls.get_mut(&key) else {
            return;
        };
        if let Some(r) = c.rec.as_mut()
            && let Some(ev) = r.on_rtp(leg, ts, rtp)
        {
            tracing::info!(call = %c.setup.short_id, event = ?ev, "recording pause state changed");
        }
    }

    fn on_ctl(&mut self, ctl: MediaCtl) {
        match ctl {
            MediaCtl::Start { setup, legs } => {
                let key = setup.key;
                let start = setup.record_start;
                let mut c = CallMedia {
                    setup,
                    legs,
                    rec: None,
                    index: 1,
                    seg_start: start,
                    cause: "answer",
                    held: Vec::new(),
                };
                self.open_segment(&mut c, start);
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
                    if let Some(f) = self.close_segment(&mut c, at) {
                        if c.setup.contract.segments == SegmentPolicy::All {
                            let count = f.index;
                            self.publish(&c.setup, &f, count, at, "transfer");
                        } else {
                            c.held.push(f);
                        }
                    }
                    c.index += 1;
                    c.cause = cause;
                    self.open_segment(&mut c, at);
                }
                self.calls.insert(key, c);
            }
            MediaCtl::Digit { key, at, digit } => {
                if let Some(r) = self.calls.get_mut(&key).and_then(|c| c.rec.as_mut()) {
                    r.on_signalled_digit(digit, at);
                }
            }
            MediaCtl::End { key, at, reason } => self.end_call(key, at, &reason),
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
    }
}
