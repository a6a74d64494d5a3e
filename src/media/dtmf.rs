//! RFC 4733 telephone events: payload parsing and a per-leg detector that
//! reports each keypress once.
//!
//! A sender repeats an event's packets while the key is held and sends the
//! end packet three times; all of them carry the RTP timestamp of the
//! event's start, which is what identifies one keypress.

use crate::time::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// 0-9, 10 = '*', 11 = '#', 12-15 = A-D, others are tones/flash.
    pub event: u8,
    pub end: bool,
    pub volume: u8,
    pub duration: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("telephone-event payload of {0} bytes, need 4")]
pub struct EventError(pub usize);

impl TelephoneEvent {
    pub fn parse(payload: &[u8]) -> Result<TelephoneEvent, EventError> {
        // Several events may be stacked (RFC 4733 2.5.1.5 redundancy is via
        // RED, not here); the first 4 bytes are the current one.
        let [event, b1, d0, d1, ..] = *payload else {
            return Err(EventError(payload.len()));
        };
        Ok(TelephoneEvent {
            event,
            end: b1 & 0x80 != 0,
            volume: b1 & 0x3f,
            duration: u16::from_be_bytes([d0, d1]),
        })
    }

    /// The keypad character, if the event is a DTMF key.
    pub fn digit(&self) -> Option<char> {
        Some(match self.event {
            0..=9 => (b'0' + self.event) as char,
            10 => '*',
            11 => '#',
            12..=15 => (b'A' + self.event - 12) as char,
            _ => return None,
        })
    }
}

/// One keypress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digit {
    pub digit: char,
    /// Capture time of the first packet seen for this keypress.
    pub at: Timestamp,
}

/// Per-leg detector. Keeps the last few (SSRC, timestamp) keys so repeated
/// and reordered packets of a keypress already reported stay silent;
/// constant memory.
#[derive(Debug, Default)]
pub struct DtmfDetector {
    recent: [Option<(u32, u32)>; 4],
    next: usize,
}

impl DtmfDetector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one telephone-event packet; returns the digit the first time a
    /// keypress (its SSRC and RTP timestamp) is seen.
    pub fn on_event(
        &mut self,
        at: Timestamp,
        ssrc: u32,
        rtp_ts: u32,
        ev: &TelephoneEvent,
    ) -> Option<Digit> {
        let key = (ssrc, rtp_ts);
        if self.recent.contains(&Some(key)) {
            return None;
        }
        // An event older than the newest one of this SSRC is a straggler of
        // a keypress whose key slot was already recycled: ignore it.
        let newest = self.recent[(self.next + self.recent.len() - 1) % self.recent.len()];
        if let Some((s, t)) = newest
            && s == ssrc
            && (rtp_ts.wrapping_sub(t) as i32) < 0
        {
            return None;
        }
        let digit = ev.digit()?;
        self.recent[self.next] = Some(key);
        self.next = (self.next + 1) % self.recent.len();
        Some(Digit { digit, at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: u8, end: bool, duration: u16) -> Vec<u8> {
        let mut v = vec![event, if end { 0x80 } else { 0 } | 10];
        v.extend_from_slice(&duration.to_be_bytes());
        v
    }

    #[test]
    fn one_digit_per_keypress() {
        let mut d = DtmfDetector::new();
        let mut got = Vec::new();
        let t = Timestamp::from_millis(1000);
        // '*' at ts 1000: 3 progress packets, 3 end packets; then '1' at 3000.
        for (i, (e, end, ts)) in [
            (10, false, 1000),
            (10, false, 1000),
            (10, false, 1000),
            (10, true, 1000),
            (10, true, 1000),
            (10, true, 1000),
            (1, false, 3000),
            (1, true, 3000),
            (1, true, 3000),
            (1, true, 3000),
        ]
        .into_iter()
        .enumerate()
        {
            let p = TelephoneEvent::parse(&ev(e, end, 800)).unwrap();
            if let Some(dg) = d.on_event(t.add_micros(i as i64 * 20_000), 7, ts, &p) {
                got.push(dg);
            }
        }
        assert_eq!(got.iter().map(|d| d.digit).collect::<String>(), "*1");
        assert_eq!(got[0].at, t);
        assert_eq!(got[1].at, t.add_micros(6 * 20_000));
        // Same key pressed again is a new timestamp, hence a new digit.
        let p = TelephoneEvent::parse(&ev(1, true, 800)).unwrap();
        assert!(d.on_event(t, 7, 5000, &p).is_some());
        // A straggler of an old keypress is not.
        assert!(d.on_event(t, 7, 2000, &p).is_none());
    }

    #[test]
    fn short_payload_is_an_error() {
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), Err(EventError(3)));
    }
}
