//! What a shard worker does with a recorded call: recorder per segment,
//! metadata, and publication into the spool.

use crate::calls::policy::Verdict;
use crate::calls::tracker::{CallKey, MediaLegs};
use crate::config::{AudioFormat, Contract};
use crate::time::Timestamp;
use std::sync::Arc;

/// Everything about a recorded call that the shard needs to write its files.
#[derive(Debug)]
pub struct CallSetup {
    pub key: CallKey,
    pub call_id: String,
    pub short_id: String,
    pub contract: Contract,
    pub verdict: Verdict,
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
    Start { setup: Arc<CallSetup>, legs: MediaLegs },
    Media { key: CallKey, at: Timestamp, legs: MediaLegs },
    Segment { key: CallKey, at: Timestamp, cause: &'static str },
    Digit { key: CallKey, at: Timestamp, digit: char },
    End { key: CallKey, at: Timestamp, reason: String },
}

/// The shard handler for recorded calls (first cut: counts packets).
pub struct MediaWorker {
    _cfg: Arc<crate::config::Config>,
    _shard: usize,
}

impl MediaWorker {
    pub fn new(cfg: Arc<crate::config::Config>, shard: usize) -> MediaWorker {
        MediaWorker { _cfg: cfg, _shard: shard }
    }
}

impl crate::daemon::shard::ShardHandler for MediaWorker {
    type Ctl = MediaCtl;
    fn on_rtp(&mut self, _key: CallKey, _leg: crate::daemon::shard::Leg, _ts: Timestamp, _rtp: &[u8]) {}
    fn on_ctl(&mut self, _ctl: MediaCtl) {}
    fn shutdown(&mut self) {}
}
