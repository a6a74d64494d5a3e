//! Pause control: decides when a call's recording pauses and resumes.
//!
//! Three things can ask: the subscriber keying the contract's `pause_dtmf`
//! or `resume_dtmf` (RFC 4733 events on their media leg, or SIP INFO), and
//! the control interface. The decision is made on the capture thread, which
//! sees all three in capture order and owns the announcer. So the beeps
//! that tell both parties go out at the keypress, and a replay decides at
//! the same packet every time. The shard worker learns the decision from a
//! message that follows the deciding packet in its ring. It mutes from the
//! same sample as it would have if it had decided itself.
//!
//! Privacy: keys are compared against the configured sequences in a
//! private buffer that is cleared at every pause and resume. No key is
//! ever returned, logged or stored: a [`PauseChange`] only says which way
//! the recording went and when. The type has no `Debug`, for that reason.

use crate::media::dtmf::{DtmfDetector, TelephoneEvent};
use crate::media::rtp::{RtpPacket, is_rtcp};
use crate::time::Timestamp;

/// Longest pause or resume sequence compared (longer ones keep their tail).
const TAIL: usize = 16;

/// What asked for a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseSource {
    /// The subscriber's keypad: RFC 4733 or SIP INFO.
    Keypad,
    /// The control interface (a library call).
    Control,
}

/// The recording paused (`paused`) or resumed at `at`. Carries no key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PauseChange {
    pub paused: bool,
    pub at: Timestamp,
    pub source: PauseSource,
}

/// The last few keys of the subscriber; private (see the module doc).
struct KeyTail {
    buf: [u8; TAIL],
    len: usize,
}

impl KeyTail {
    fn push(&mut self, d: char) {
        if self.len == TAIL {
            self.buf.copy_within(1.., 0);
            self.len -= 1;
        }
        self.buf[self.len] = d as u8;
        self.len += 1;
    }
    fn ends_with(&self, seq: &[u8]) -> bool {
        !seq.is_empty() && self.buf[..self.len].ends_with(seq)
    }
    fn clear(&mut self) {
        self.buf = [0; TAIL];
        self.len = 0;
    }
}

/// One recorded call's pause state.
pub struct PauseControl {
    paused: bool,
    /// Keys before this are not the subscriber's doing in the recording
    /// (the announcement is still playing): ignored.
    from: Timestamp,
    keys: KeyTail,
    pause_seq: Vec<u8>,
    resume_seq: Vec<u8>,
    dtmf: DtmfDetector,
    /// The RFC 4733 payload type on the subscriber's leg, when the call
    /// negotiated one.
    event_pt: Option<u8>,
}

fn sequence(s: Option<&str>) -> Vec<u8> {
    let v: Vec<u8> = s
        .unwrap_or_default()
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    // A longer one could never match the tail; keep its end.
    v[v.len().saturating_sub(TAIL)..].to_vec()
}

impl PauseControl {
    /// `from`: where the recording starts. `event_pt`: the subscriber's
    /// telephone-event payload type.
    pub fn new(
        from: Timestamp,
        pause_dtmf: Option<&str>,
        resume_dtmf: Option<&str>,
        event_pt: Option<u8>,
    ) -> PauseControl {
        PauseControl {
            paused: false,
            from,
            keys: KeyTail {
                buf: [0; TAIL],
                len: 0,
            },
            pause_seq: sequence(pause_dtmf),
            resume_seq: sequence(resume_dtmf),
            dtmf: DtmfDetector::new(),
            event_pt,
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The payload type whose packets on the subscriber's leg must be
    /// shown to [`PauseControl::on_rtp`]; None when keys cannot pause this
    /// call (no sequence configured, or no telephone-event negotiated).
    pub fn watched_pt(&self) -> Option<u8> {
        self.event_pt.filter(|_| !self.pause_seq.is_empty())
    }

    /// The call's media changed (re-INVITE): its telephone-event type may too.
    pub fn set_event_pt(&mut self, pt: Option<u8>) {
        self.event_pt = pt;
    }

    /// One packet of the subscriber's leg, captured at `ts`. Only
    /// telephone-event packets can change anything; the rest cost a compare.
    pub fn on_rtp(&mut self, ts: Timestamp, rtp: &[u8]) -> Option<PauseChange> {
        let pt = self.watched_pt()?;
        if rtp.len() < 2 || rtp[1] & 0x7f != pt || is_rtcp(rtp) || ts < self.from {
            return None;
        }
        let pkt = RtpPacket::parse(rtp).ok()?;
        let ev = TelephoneEvent::parse(pkt.payload).ok()?;
        let key = self.dtmf.on_event(ts, pkt.ssrc, pkt.ts, &ev)?;
        self.on_key(key.digit, key.at)
    }

    /// A key the subscriber signalled out of band (SIP INFO) at `at`.
    pub fn on_key(&mut self, key: char, at: Timestamp) -> Option<PauseChange> {
        if at < self.from {
            return None;
        }
        self.keys.push(key);
        let seq = if self.paused {
            &self.resume_seq
        } else {
            &self.pause_seq
        };
        if self.keys.ends_with(seq) {
            return self.change(!self.paused, at, PauseSource::Keypad);
        }
        None
    }

    /// Pause or resume asked for through the control interface. None when
    /// the recording is already that way.
    pub fn set(&mut self, paused: bool, at: Timestamp) -> Option<PauseChange> {
        if paused == self.paused {
            return None;
        }
        self.change(paused, at, PauseSource::Control)
    }

    fn change(&mut self, paused: bool, at: Timestamp, source: PauseSource) -> Option<PauseChange> {
        self.keys.clear();
        self.paused = paused;
        Some(PauseChange { paused, at, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtp::build_rtp;

    const TE: u8 = 101;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    /// The packets of one keypress as a sender emits them: two progress
    /// packets and the end packet three times, one RTP timestamp.
    fn keypress(event: u8, rtp_ts: u32, seq: u16) -> Vec<Vec<u8>> {
        (0..5u16)
            .map(|i| {
                let end = if i >= 2 { 0x80 } else { 0 };
                let dur = 160 * (i.min(2) + 1);
                let mut p = vec![event, end | 10];
                p.extend_from_slice(&dur.to_be_bytes());
                build_rtp(TE, seq + i, rtp_ts, 0x5151, i == 0, &p)
            })
            .collect()
    }

    fn press(pc: &mut PauseControl, event: u8, at_ms: i64) -> Vec<PauseChange> {
        keypress(event, at_ms as u32 * 8, at_ms as u16)
            .iter()
            .enumerate()
            .filter_map(|(i, p)| pc.on_rtp(t(at_ms + 20 * i as i64), p))
            .collect()
    }

    #[test]
    fn keys_pause_and_resume_once_each() {
        let mut pc = PauseControl::new(t(500), Some("*1"), Some("*2"), Some(TE));
        assert_eq!(pc.watched_pt(), Some(TE));
        // During the announcement: ignored, and not remembered either.
        assert!(press(&mut pc, 10, 100).is_empty());
        assert!(press(&mut pc, 1, 1000).is_empty());
        assert!(!pc.is_paused());
        assert!(press(&mut pc, 10, 1200).is_empty());
        let p = press(&mut pc, 1, 1400);
        assert_eq!(
            p,
            vec![PauseChange {
                paused: true,
                at: t(1400),
                source: PauseSource::Keypad
            }]
        );
        // The pause sequence again while paused does nothing.
        assert!(press(&mut pc, 10, 2000).is_empty());
        assert!(press(&mut pc, 1, 2200).is_empty());
        assert!(pc.is_paused());
        assert!(press(&mut pc, 10, 3000).is_empty());
        let r = press(&mut pc, 2, 3200);
        assert_eq!(r.len(), 1);
        assert!(!r[0].paused && r[0].at == t(3200));
        // Every change forgets the keys before it: "*" keyed before a
        // pause from the control interface and "2" after it do not resume.
        assert!(press(&mut pc, 10, 4000).is_empty());
        assert_eq!(
            pc.set(true, t(4100)).map(|c| c.source),
            Some(PauseSource::Control)
        );
        assert!(press(&mut pc, 2, 4200).is_empty());
        assert!(pc.is_paused());
        assert!(press(&mut pc, 10, 4400).is_empty());
        assert_eq!(press(&mut pc, 2, 4600).len(), 1);
        assert!(!pc.is_paused());
    }

    #[test]
    fn audio_rtcp_and_other_types_are_not_keys() {
        let mut pc = PauseControl::new(t(0), Some("*1"), Some("*2"), Some(TE));
        let audio = build_rtp(0, 1, 160, 7, false, &[0xff; 160]);
        assert_eq!(pc.on_rtp(t(10), &audio), None);
        // RTCP sender report (PT 200) and a truncated packet.
        let rtcp = [0x80u8, 200, 0, 6, 0, 0, 0, 1];
        assert_eq!(pc.on_rtp(t(10), &rtcp), None);
        assert_eq!(pc.on_rtp(t(10), &[0x80, TE]), None);
        // A telephone-event with a short payload.
        let short = build_rtp(TE, 2, 320, 7, false, &[10, 0x80]);
        assert_eq!(pc.on_rtp(t(20), &short), None);
        assert!(!pc.is_paused());
    }

    #[test]
    fn no_sequence_or_no_event_type_watches_nothing() {
        assert_eq!(
            PauseControl::new(t(0), None, None, Some(TE)).watched_pt(),
            None
        );
        let mut pc = PauseControl::new(t(0), Some("*1"), Some("*2"), None);
        assert_eq!(pc.watched_pt(), None);
        // SIP INFO keys still work without RFC 4733.
        assert!(pc.on_key('*', t(1)).is_none());
        assert!(pc.on_key('1', t(2)).is_some_and(|c| c.paused));
        pc.set_event_pt(Some(TE));
        assert_eq!(pc.watched_pt(), Some(TE));
    }

    #[test]
    fn control_interface_changes_only_what_differs() {
        let mut pc = PauseControl::new(t(0), None, None, None);
        assert_eq!(pc.set(false, t(1)), None);
        assert!(pc.set(true, t(2)).is_some_and(|c| c.paused && c.at == t(2)));
        assert_eq!(pc.set(true, t(3)), None);
        assert!(pc.set(false, t(4)).is_some_and(|c| !c.paused));
    }
}
