//! Closing recordings off the media path.
//!
//! Ending a segment means rendering its last samples, patching the WAV
//! header, fsync, hashing the file, writing the metadata and publishing
//! both into the spool (more fsyncs and renames). That waits on the disk
//! for milliseconds, and a shard that waited would stop draining its ring:
//! in live capture the ring overflows and packets of every other call on
//! the shard are lost. So each shard hands finished segments to its own
//! finisher thread and goes straight back to the media.
//!
//! Each shard has a few finisher threads ([`THREADS`]): the work is mostly
//! waiting for fsync, and a disk serves several at once (one thread made
//! 500 calls ending together wait ~1.5 s in the whole-pipeline benchmark).
//! A call always goes to the same thread (by call key), fed in order over
//! a bounded channel: its segments and its end arrive in the order the
//! shard saw them, so `segments = "longest"` is decided on complete
//! information, and a disk that falls far behind slows the shard down
//! (back-pressure) instead of growing memory without bound. The channels
//! are not on the per-packet path: one message per segment.

use crate::calls::tracker::CallKey;
use crate::config::{Channels, SegmentPolicy};
use crate::daemon::media::CallSetup;
use crate::delivery::spool::{Spool, SpoolUsage};
use crate::recording::metadata::{self, AudioMeta, Metadata, PauseMeta, QualityMeta, SegmentMeta};
use crate::recording::recorder::{CallRecorder, RecordingSummary};
use crate::time::Timestamp;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Segments a shard may close ahead of each finisher thread before it waits.
const QUEUE: usize = 256;
/// Finisher threads per shard.
pub const THREADS: usize = 4;

/// How a published segment describes the end of its call.
#[derive(Clone, Debug)]
pub struct Publish {
    /// Segments of the call so far (the metadata's `segment.count`).
    pub count: u32,
    pub ended_at: Timestamp,
    pub reason: String,
}

// One job per segment, not per packet: the recorder travels by value.
#[allow(clippy::large_enum_variant)]
pub enum FinishJob {
    /// A segment ended: finish its file; publish it now when `publish` is
    /// given, else hold it until the call's end.
    Segment {
        key: CallKey,
        setup: Arc<CallSetup>,
        rec: Box<CallRecorder>,
        path: PathBuf,
        index: u32,
        started: Timestamp,
        ended: Timestamp,
        cause: &'static str,
        publish: Option<Publish>,
    },
    /// The call ended: publish what was held (only the longest segment
    /// for `segments = "longest"`).
    CallEnd {
        key: CallKey,
        setup: Arc<CallSetup>,
        publish: Publish,
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

/// The shard's handle on its finisher threads.
pub struct Finisher {
    lanes: Vec<(SyncSender<FinishJob>, std::thread::JoinHandle<()>)>,
    /// Counts jobs in flight, so a replay can wait for the spool's size to
    /// settle before comparing it with the limits.
    usage: SpoolUsage,
}

impl Finisher {
    pub fn start(shard: usize, spool: Option<Spool>, usage: SpoolUsage) -> Finisher {
        let mut lanes = Vec::new();
        for i in 0..THREADS {
            let (tx, rx) = sync_channel(QUEUE);
            let (spool, u) = (spool.clone(), usage.clone());
            match std::thread::Builder::new()
                .name(format!("callrec-finish{shard}.{i}"))
                .spawn(move || run(rx, spool, u))
            {
                Ok(j) => lanes.push((tx, j)),
                // Fewer threads only means less overlap of fsyncs.
                Err(e) => tracing::error!(shard, error = %e, "cannot start a finisher thread"),
            }
        }
        Finisher { lanes, usage }
    }

    pub fn send(&self, job: FinishJob) {
        let key = match &job {
            FinishJob::Segment { key, .. } | FinishJob::CallEnd { key, .. } => *key,
        };
        self.usage.begin();
        let sent = match self.lanes.get(key as usize % self.lanes.len().max(1)) {
            Some((tx, _)) => tx.send(job).is_ok(),
            None => false,
        };
        if !sent {
            self.usage.end();
            tracing::error!("no finisher: segment left in tmp/ for recovery at the next start");
        }
    }

    /// Waits until every job sent so far is done.
    pub fn join(self) {
        for (tx, j) in self.lanes {
            drop(tx);
            let _ = j.join();
        }
    }
}

fn run(rx: Receiver<FinishJob>, spool: Option<Spool>, usage: SpoolUsage) {
    let mut held: HashMap<CallKey, Vec<Finished>> = HashMap::new();
    // Bytes published per call so far, for its "call ended" line.
    let mut bytes: HashMap<CallKey, u64> = HashMap::new();
    for job in rx {
        handle(job, spool.as_ref(), &mut held, &mut bytes);
        usage.end();
    }
}

fn handle(
    job: FinishJob,
    spool: Option<&Spool>,
    held: &mut HashMap<CallKey, Vec<Finished>>,
    bytes: &mut HashMap<CallKey, u64>,
) {
    match job {
        FinishJob::Segment {
            key,
            setup,
            rec,
            path,
            index,
            started,
            ended,
            cause,
            publish,
        } => {
            let summary = match rec.finish(ended) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(call = %setup.short_id, error = %e, "cannot finish the recording; left in tmp/ for recovery");
                    return;
                }
            };
            let f = Finished {
                index,
                started,
                ended,
                cause,
                path,
                summary,
            };
            match publish {
                Some(p) => *bytes.entry(key).or_default() += publish_segment(spool, &setup, &f, &p),
                None => held.entry(key).or_default().push(f),
            }
        }
        FinishJob::CallEnd {
            key,
            setup,
            publish,
        } => {
            let mut segs = held.remove(&key).unwrap_or_default();
            if setup.contract.segments == SegmentPolicy::Longest && segs.len() > 1 {
                // Keep the longest (the earliest of equals); the others
                // were never finished recordings for this contract.
                let best = segs
                    .iter()
                    .enumerate()
                    .max_by_key(|(i, f)| (f.summary.duration_ms, std::cmp::Reverse(*i)))
                    .map(|(i, _)| i)
                    .unwrap_or(0);
                for (i, f) in segs.iter().enumerate() {
                    if i != best {
                        let _ = std::fs::remove_file(&f.path);
                        crate::daemon::recovery::remove_intent(&f.path);
                    }
                }
                segs = vec![segs.swap_remove(best)];
            }
            let mut total = bytes.remove(&key).unwrap_or(0);
            for f in &segs {
                total += publish_segment(spool, &setup, f, &publish);
            }
            let duration_ms = publish.ended_at.since(setup.answered_at).max(0) / 1000;
            tracing::info!(call = %setup.short_id, contract = %setup.contract.id, duration_ms, segments = publish.count, end_reason = %publish.reason, bytes = total, "call ended");
        }
    }
}

/// The segment's file stem and metadata. `summary` is None for the
/// provisional copy written when the segment opens (see [`write_intent`]).
pub fn segment_metadata(
    setup: &CallSetup,
    index: u32,
    started: crate::time::Timestamp,
    ended: crate::time::Timestamp,
    cause: &str,
    p: &Publish,
    summary: Option<&RecordingSummary>,
) -> (String, Metadata) {
    let off = setup.utc_offset_secs;
    let v = &setup.verdict;
    let dir = match v.direction {
        Some(crate::calls::policy::Direction::Inbound) => "in",
        _ => "out",
    };
    let stem = metadata::stem(
        &setup.contract.id,
        started.stem_parts(off),
        dir,
        &v.caller,
        &v.callee,
        &setup.short_id,
        index,
    );
    let file = format!("{}.wav", stem.rsplit('/').next().unwrap_or(&stem));
    let stereo = setup.contract.channels == Channels::Stereo;
    let g = setup.guidance.as_ref();
    let quality = |i: usize| {
        summary
            .and_then(|s| serde_json::to_value(&s.quality[i]).ok())
            .unwrap_or_default()
    };
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
        guidance: crate::announce::outcome::guidance_meta(setup.contract.guidance, g, off),
        billing_start: Some(
            crate::announce::outcome::billing_start(setup.answered_at, g).rfc3339(off),
        ),
        ended_at: p.ended_at.rfc3339(off),
        end_reason: p.reason.clone(),
        segment: SegmentMeta {
            index,
            count: p.count,
            started_at: started.rfc3339(off),
            ended_at: ended.rfc3339(off),
            cause: cause.into(),
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
            sample_rate: summary.map_or(8000, |s| s.sample_rate),
            codecs: summary.map(|s| crate::recording::metadata::CodecsMeta {
                subscriber: s.codecs[0].map(crate::media::codec::Codec::name),
                remote: s.codecs[1].map(crate::media::codec::Codec::name),
            }),
            duration_ms: summary.map_or(0, |s| s.duration_ms),
            sha256: summary.map(|s| s.sha256.clone()).unwrap_or_default(),
            bytes: summary.map_or(0, |s| s.bytes),
        },
        pauses: summary
            .map(|s| {
                s.pauses
                    .iter()
                    .map(|&(from_ms, to_ms)| PauseMeta { from_ms, to_ms })
                    .collect()
            })
            .unwrap_or_default(),
        quality: QualityMeta {
            subscriber: quality(0),
            remote: quality(1),
        },
        undecodable: summary.and_then(|s| s.undecodable()),
    };
    (stem, meta)
}

/// Publishes one segment; returns the bytes of the WAV queued (0 when it
/// could not be).
fn publish_segment(spool: Option<&Spool>, setup: &CallSetup, f: &Finished, p: &Publish) -> u64 {
    let (stem, meta) = segment_metadata(
        setup,
        f.index,
        f.started,
        f.ended,
        f.cause,
        p,
        Some(&f.summary),
    );
    let Some(spool) = spool else { return 0 };
    let (mut meta, mut path) = (meta, f.path.clone());
    if let Some(e) = setup.encoded.filter(|_| meta.undecodable.is_none()) {
        match crate::recording::outputs::encode_segment(&f.path, e, &mut meta.audio) {
            Ok(p) => path = p,
            Err(err) => {
                // The WAV is still good: delivered as it is rather than lost.
                tracing::error!(call = %setup.short_id, format = e.as_str(), error = %err, "RECORDING ALARM: cannot encode the recording; delivered as WAV")
            }
        }
    }
    if let Some(why) = &meta.undecodable {
        crate::recording::outputs::keep_undecodable(spool, &stem, &f.path, &meta.to_json(), why);
        crate::daemon::recovery::remove_intent(&f.path);
        tracing::error!(call = %setup.short_id, segment = f.index, reason = %why, "RECORDING ALARM: segment not delivered, none of its audio could be decoded");
        return 0;
    }
    // What is delivered: the encoded file where there is one.
    let bytes = std::fs::metadata(&path).map_or(f.summary.bytes, |m| m.len());
    match spool.publish(&setup.contract.destination, &stem, &path, &meta.to_json()) {
        Ok(()) => {
            crate::daemon::recovery::remove_intent(&f.path);
            if let Some(h) = &setup.hep {
                let ext = crate::delivery::spool::audio_ext(&path);
                h.published(&crate::history::hep::Published {
                    call_id: &setup.call_id,
                    short_id: &setup.short_id,
                    segment: f.index,
                    destination: &setup.contract.destination,
                    file: &format!("{stem}.{ext}"),
                    ended: f.ended,
                });
            }
            tracing::info!(call = %setup.short_id, segment = f.index, duration_ms = f.summary.duration_ms, bytes, destination = %setup.contract.destination, "recording queued");
            bytes
        }
        Err(e) => {
            tracing::error!(call = %setup.short_id, error = %e, "cannot queue the recording; left in tmp/ for recovery");
            0
        }
    }
}
