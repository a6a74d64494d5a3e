//! Call events from the tracker turned into the engine's work: recorded
//! calls started and ended, their media and segment changes sent to the
//! shards, the call history written, and pauses carried out. Apart from
//! the per-packet path, which only feeds the tracker.

use super::{ActiveCall, Engine};
use crate::announce::BeepKind;
use crate::calls::tracker::{CallEvent, CallKey, MediaLegs};
use crate::daemon::media::{CallSetup, MediaCtl, telephone_event_pt};
use crate::daemon::shard::Leg;
use crate::history::CallRecord;
use crate::media::pause::{PauseChange, PauseControl, PauseSource};
use crate::time::Timestamp;
use std::sync::Arc;

/// Audio one RTP packet is assumed to carry past its capture time when a
/// call ends on the RTP timeout (the RFC 3551 default packet time, 20 ms).
const LAST_PACKET_US: i64 = 20_000;

impl Engine {
    /// Carries out a pause or resume the call's [`PauseControl`] decided:
    /// the shard mutes or unmutes the recording from `change.at` (the
    /// message follows the deciding packet in its ring), and both parties
    /// hear the beep.
    pub(super) fn apply_pause(&mut self, key: CallKey, change: PauseChange) {
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

    pub(super) fn flush_events(&mut self) {
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
            } => self.on_answered(key, invite_at, at, legs),
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
                at,
                recorded,
                record,
            } => self.on_ended(key, at, recorded, record),
        }
    }

    /// A recorded call answered: the announcement starts, the call is
    /// set up with its shard and routes, and the shard starts recording.
    fn on_answered(&mut self, key: CallKey, invite_at: Timestamp, at: Timestamp, legs: MediaLegs) {
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

    /// A call ended: its billing start, routes and shard closed, counted,
    /// logged and written to the history.
    fn on_ended(
        &mut self,
        key: CallKey,
        mut at: Timestamp,
        recorded: bool,
        mut record: CallRecord,
    ) {
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

    fn tracker_call_id(&self, key: CallKey) -> String {
        self.call_ids.get(&key).cloned().unwrap_or_default()
    }

    pub(super) fn write_history(&mut self, record: &CallRecord) {
        if let Err(e) = self.history.append(record) {
            tracing::error!(error = %e, path = %self.history.path().display(), "cannot write call history");
        }
        if let Some(h) = self.hep.as_mut() {
            h.call_ended(record);
        }
    }
}
