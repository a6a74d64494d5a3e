//! The engine's side of the call-state journal ([`crate::daemon::journal`]):
//! writing a call's file at its events, and taking the calls an earlier
//! run left back at start-up. A child module, so the hooks in the engine
//! stay one line each.

use super::{ActiveCall, Engine};
use crate::calls::policy::Verdict;
use crate::calls::tracker::CallKey;
use crate::daemon::journal::{CallJournal, CallState, EnginePart, GuidanceSnap, JournalOp, Loaded};
use crate::daemon::media::{CallSetup, Guidance, MediaCtl, telephone_event_pt};
use crate::daemon::shard::Leg;
use crate::history::CallRecord;
use crate::media::pause::PauseControl;
use crate::time::Timestamp;
use std::path::Path;
use std::sync::Arc;

/// `end_reason` of a call an earlier run left that cannot be carried on
/// (its journal file damaged, its contract gone): its history line is
/// written at the restart, which is then its `ended_at`.
pub const RESTART_FAILED: &str = "restart-failed";

/// What start-up made of the journal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Calls carried on (recorded ones in a new `restart` segment).
    pub restored: usize,
    /// Calls that got their history line at once (cannot go on).
    pub ended: usize,
    /// Files moved to `state/corrupt/`.
    pub moved_aside: usize,
}

impl Engine {
    /// Live daemon only (`callrec run`), before the first packet: opens the
    /// call-state journal in `dir` and carries on every call an earlier
    /// run left there, at `now` (the wall clock). From then on each call
    /// event rewrites its call's file. A file that is cut or corrupt, or
    /// whose contract is gone, is logged as an error naming it and moved
    /// to `state/corrupt/`; its call gets its history line when the file
    /// still holds one. Never fails: without a journal the daemon runs as
    /// before.
    pub fn restore_journal(&mut self, dir: &Path, now: Timestamp) -> RestoreReport {
        let mut report = RestoreReport::default();
        let journal = match CallJournal::open(dir, now) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(path = %dir.display(), error = %e, "cannot open the call-state journal: calls in progress will not survive a crash");
                return report;
            }
        };
        if now > self.now {
            self.now = now;
        }
        let files = journal.load_all();
        self.journal = Some(journal);
        for (path, loaded) in files {
            self.restore_file(&path, loaded, now, &mut report);
        }
        if report != RestoreReport::default() {
            tracing::warn!(
                restored = report.restored,
                ended = report.ended,
                moved_aside = report.moved_aside,
                journal = %dir.display(),
                "calls in progress at the last stop taken back"
            );
        }
        report
    }

    fn restore_file(
        &mut self,
        path: &Path,
        loaded: Loaded,
        now: Timestamp,
        report: &mut RestoreReport,
    ) {
        let (record, why) = match loaded {
            Loaded::Whole(record, state) => match self.restore_call(&state, now) {
                Ok(key) => {
                    report.restored += 1;
                    self.adopt_file(path, key, &state.dialog.call_id);
                    return;
                }
                Err(why) => (Some(record), why),
            },
            Loaded::HistoryOnly(record, why) => (Some(record), why),
            Loaded::Unreadable(why) => (None, why),
        };
        let aside = self.journal.as_ref().and_then(|j| j.move_aside(path));
        report.moved_aside += usize::from(aside.is_some());
        tracing::error!(
            path = %path.display(),
            moved_to = %aside.as_deref().map_or("(left in place)".into(), |p| p.display().to_string()),
            reason = %why,
            "call-state journal file cannot be carried on"
        );
        if let Some(mut r) = record {
            r.ended_at = Some(now.rfc3339(self.cfg.general.utc_offset_secs));
            r.end_reason = Some(RESTART_FAILED.to_owned());
            self.write_history(&r);
            report.ended += 1;
        }
    }

    /// The restored call `key` takes over the earlier run's file, which is
    /// then rewritten with its new state.
    fn adopt_file(&mut self, old: &Path, key: CallKey, call_id: &str) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        j.track(key, call_id.to_owned());
        if let Err(e) = j.adopt(old, key) {
            tracing::warn!(path = %old.display(), error = %e, "cannot rename a journal file; it is written anew");
        }
        self.journal_save(key);
    }

    /// Takes one call back into the tracker and, when it is recorded and
    /// answered, goes on recording it in a new segment from `now`.
    fn restore_call(&mut self, s: &CallState, now: Timestamp) -> Result<CallKey, String> {
        let (key, verdict) = self
            .tracker
            .restore(&s.dialog, now)
            .map_err(|e| e.to_string())?;
        let d = &s.dialog;
        tracing::info!(call = %d.short_id, record = verdict.record, answered = d.answered_at_us.is_some(), "call carried on after a restart");
        if !verdict.record {
            return Ok(key);
        }
        self.short_ids.insert(key, d.short_id.clone());
        self.call_ids.insert(key, d.history_call_id.clone());
        match (&s.engine, d.answered_at_us) {
            (_, None) => {
                // Pending again under the contract configured now (the
                // journal keeps its id; the tracker checked it exists).
                match verdict.contract.and_then(|i| self.cfg.contracts.get(i)) {
                    Some(c) => {
                        let c = c.clone();
                        self.pending.insert(key, (verdict, c));
                    }
                    None => {
                        tracing::error!(call = %d.short_id, "restored unanswered call whose contract is no longer configured: not recorded");
                    }
                }
            }
            (Some(e), Some(answered)) => {
                self.resume_recording(key, verdict, s, e, Timestamp(answered), now)
            }
            (None, Some(_)) => {
                // Killed between the answer and its journal write: the
                // call still ends with its line, unrecorded from here.
                tracing::error!(call = %d.short_id, "answered call without its recording state in the journal: not recorded after the restart");
            }
        }
        Ok(key)
    }

    fn resume_recording(
        &mut self,
        key: CallKey,
        verdict: Verdict,
        s: &CallState,
        e: &EnginePart,
        answered_at: Timestamp,
        now: Timestamp,
    ) {
        let d = &s.dialog;
        let Some(setup) = self.restored_setup(key, verdict, s, e, answered_at) else {
            return;
        };
        let legs = self.tracker.legs_of(&d.call_id).unwrap_or_default();
        let index = self
            .tracker
            .segments_of(&d.call_id)
            .unwrap_or(e.segment + 1);
        if let Some(b) = e.billing_start_us {
            self.billing.insert(key, Timestamp(b));
        }
        let mut pause = PauseControl::new(
            setup.record_start,
            setup.contract.pause_dtmf.as_deref(),
            setup.contract.resume_dtmf.as_deref(),
            telephone_event_pt(&legs, Leg::Subscriber),
        );
        if e.paused {
            // Silently: both parties heard the pause beep before the crash.
            let _ = pause.set(true, now);
        }
        let shard = (key as usize) % self.shards.len();
        self.calls.insert(
            key,
            ActiveCall {
                call_id: d.call_id.clone(),
                setup: setup.clone(),
                shard,
                dst_routes: Vec::new(),
                src_routes: Vec::new(),
                legs: legs.clone(),
                pause,
                last_rtp: now,
                foreign: [0; 2],
            },
        );
        self.install_routes(key, &legs);
        tracing::info!(call = %d.short_id, segment = index, paused = e.paused, "recording goes on in a restart segment");
        self.shards.senders[shard].send_ctl(MediaCtl::Restart {
            setup,
            legs,
            index,
            at: now,
            paused: e.paused,
        });
    }

    /// The recording's setup as the earlier run had it, under the
    /// contract as configured now (None when it is gone).
    fn restored_setup(
        &self,
        key: CallKey,
        verdict: Verdict,
        s: &CallState,
        e: &EnginePart,
        answered_at: Timestamp,
    ) -> Option<Arc<CallSetup>> {
        let d = &s.dialog;
        let contract = verdict
            .contract
            .and_then(|i| self.cfg.contracts.get(i))
            .cloned()?;
        Some(Arc::new(CallSetup {
            key,
            call_id: d.history_call_id.clone(),
            short_id: d.short_id.clone(),
            contract,
            verdict,
            invite_at: Timestamp(d.invite_at_us),
            answered_at,
            record_start: Timestamp(e.record_start_us),
            guidance: e.guidance.as_ref().map(|g| Guidance {
                id: g.id,
                played: g.played,
                started_at: Timestamp(g.started_at_us),
                ended_at: Timestamp(g.ended_at_us),
                // How the prompt reached the parties died with the process.
                outcome: None,
            }),
            utc_offset_secs: self.cfg.general.utc_offset_secs,
            encoded: self.cfg.recording.encoded,
            format: self.cfg.recording.format,
            hep: self.hep.as_ref().and_then(|h| h.notifier()),
        }))
    }

    /// After each call event: what it means for the call's journal file.
    pub(super) fn journal_event(&mut self, op: JournalOp) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        match op {
            JournalOp::None => {}
            JournalOp::Track(key, call_id) => {
                j.track(key, call_id);
                self.journal_save(key);
            }
            JournalOp::Save(key) => self.journal_save(key),
            JournalOp::Remove(key) => j.remove(key),
        }
    }

    /// After each SIP message: a response to an INVITE can change a call
    /// without a call event (the answer of a call that is not recorded, an
    /// early answer's SDP and tag), so the call's file is written again.
    pub(super) fn journal_sip(&mut self, msg: &crate::sip::Message<'_>) {
        let Some(j) = self.journal.as_ref() else {
            return;
        };
        let invite = msg
            .cseq()
            .is_some_and(|(_, m)| m.eq_ignore_ascii_case("INVITE"));
        // 100 Trying changes nothing a restart needs.
        if msg.status().is_none_or(|c| c <= 100) || !invite {
            return;
        }
        if let Some(key) = msg.call_id().and_then(|c| j.key_of(c.trim())) {
            self.journal_save(key);
        }
    }

    /// Rewrites call `key`'s journal file from the tracker and the engine.
    pub(super) fn journal_save(&mut self, key: CallKey) {
        let Some(j) = self.journal.as_ref() else {
            return;
        };
        let Some(call_id) = j.dialog_of(key) else {
            return;
        };
        let (Some(dialog), Some(mut record)) = (
            self.tracker.snapshot(call_id),
            self.tracker.history_template(call_id),
        ) else {
            return;
        };
        let off = self.cfg.general.utc_offset_secs;
        let billing = self.billing.get(&key).copied();
        record.billing_start = billing.map(|t| t.rfc3339(off));
        let engine = self.calls.get(&key).map(|c| EnginePart {
            contract: c.setup.contract.id.clone(),
            short_id: c.setup.short_id.clone(),
            billing_start_us: billing.map(|t| t.0),
            record_start_us: c.setup.record_start.0,
            guidance: c.setup.guidance.as_ref().map(|g| GuidanceSnap {
                id: g.id,
                played: g.played,
                started_at_us: g.started_at.0,
                ended_at_us: g.ended_at.0,
            }),
            segment: dialog.segments,
            paused: c.pause.is_paused(),
        });
        let state = CallState {
            saved_at_us: self.now.0,
            dialog,
            engine,
        };
        write_or_log(self.journal.as_mut(), key, &record, &state);
    }
}

fn write_or_log(j: Option<&mut CallJournal>, key: CallKey, record: &CallRecord, s: &CallState) {
    let Some(j) = j else { return };
    if let Err(e) = j.save(key, record, s) {
        tracing::error!(path = %j.file_of(key).display(), error = %e, call = %s.dialog.short_id, "cannot write the call-state journal: this call would not survive a crash");
    }
}
