//! What became of one call's prompt, per party: how many packets carried
//! it, when the first reached the party, and whether it travelled in the
//! party's own RTP stream or why not. Written by whoever sends (the
//! announcer on the capture thread, or the inline worker's queue thread)
//! and read when the call's metadata and history line are written, so it
//! is shared (`Arc`) and made of atomics.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Index of the subscriber (the contract's side) in [`Outcome`]'s arrays.
pub const TO_SUBSCRIBER: usize = 0;
/// Index of the remote party.
pub const TO_REMOTE: usize = 1;

/// How the prompt reached one call's parties. `mode` is the configured
/// `announce.mode` ("inline", "inject", "udp", "pcap").
#[derive(Debug)]
pub struct Outcome {
    pub mode: &'static str,
    /// What a party's packets are when nothing went wrong: "in-stream"
    /// (inline: the party's own SSRC, sequence and timestamps) or
    /// "separate-stream" (injection: a second SSRC from the other party's
    /// address, which the phones tested do not play).
    placement: &'static str,
    sent: [AtomicU64; 2],
    /// Capture-clock microseconds (Unix epoch) of the first packet sent.
    first_us: [AtomicI64; 2],
    /// Why a party's prompt was not (or not wholly) placed; first reason wins.
    why_not: [OnceLock<String>; 2],
}

impl Outcome {
    pub fn new(mode: &'static str, placement: &'static str) -> Outcome {
        Outcome {
            mode,
            placement,
            sent: Default::default(),
            first_us: [AtomicI64::new(i64::MAX), AtomicI64::new(i64::MAX)],
            why_not: Default::default(),
        }
    }

    /// One more packet of the prompt went to `party` at `at_us`.
    pub fn sent_one(&self, party: usize, at_us: i64) {
        self.sent[party].fetch_add(1, Ordering::Relaxed);
        self.first_us[party].fetch_min(at_us, Ordering::Relaxed);
    }

    /// Records why `party` did not hear (all of) the prompt in its stream.
    pub fn fail(&self, party: usize, why: &str) {
        let _ = self.why_not[party].set(why.to_owned());
    }

    pub fn sent(&self, party: usize) -> u64 {
        self.sent[party].load(Ordering::Relaxed)
    }

    /// When the prompt first reached either party (µs since the epoch).
    pub fn first_sent_us(&self) -> Option<i64> {
        let t = self.first_us[0]
            .load(Ordering::Relaxed)
            .min(self.first_us[1].load(Ordering::Relaxed));
        (t != i64::MAX).then_some(t)
    }

    /// "in-stream" (or the mode's placement) when packets reached the
    /// party and nothing failed; otherwise the reason.
    pub fn placement(&self, party: usize) -> String {
        if let Some(why) = self.why_not[party].get() {
            return why.clone();
        }
        if self.sent(party) == 0 {
            return "no packets reached this party".into();
        }
        self.placement.into()
    }

    /// Whether the prompt went in the parties' own streams to both.
    pub fn heard_by_both(&self) -> bool {
        self.placement == "in-stream"
            && (0..2).all(|p| self.why_not[p].get().is_none() && self.sent(p) > 0)
    }
}

/// The metadata's `guidance` object for a segment of a call whose prompt
/// was `g` (None: announcements off).
pub fn guidance_meta(
    id: u8,
    g: Option<&crate::daemon::media::Guidance>,
    off: i32,
) -> crate::recording::metadata::GuidanceMeta {
    let o = g.and_then(|g| g.outcome.as_deref());
    let placement = |party| match o {
        Some(o) => o.placement(party),
        None => "announcements off".to_owned(),
    };
    let played = g.filter(|g| g.played);
    crate::recording::metadata::GuidanceMeta {
        id,
        played: played.is_some(),
        started_at: played.map(|g| g.started_at.rfc3339(off)),
        ended_at: played.map(|g| g.ended_at.rfc3339(off)),
        mode: o.map_or("off", |o| o.mode).to_owned(),
        sent: crate::recording::metadata::SentMeta {
            subscriber: o.map_or(0, |o| o.sent(TO_SUBSCRIBER)),
            remote: o.map_or(0, |o| o.sent(TO_REMOTE)),
        },
        to_subscriber: placement(TO_SUBSCRIBER),
        to_remote: placement(TO_REMOTE),
    }
}

/// When billing starts: the first prompt packet that reached a party, else
/// the prompt's planned start, else the answer.
pub fn billing_start(
    answered_at: crate::time::Timestamp,
    g: Option<&crate::daemon::media::Guidance>,
) -> crate::time::Timestamp {
    let reached = g
        .and_then(|g| g.outcome.as_ref())
        .and_then(|o| o.first_sent_us());
    match (reached, g.filter(|g| g.played)) {
        (Some(us), _) => crate::time::Timestamp(us),
        (None, Some(g)) => g.started_at,
        (None, None) => answered_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_says_why_not() {
        let o = Outcome::new("inline", "in-stream");
        assert_eq!(o.placement(TO_SUBSCRIBER), "no packets reached this party");
        o.sent_one(TO_SUBSCRIBER, 2_000);
        o.sent_one(TO_SUBSCRIBER, 1_000);
        assert_eq!(o.placement(TO_SUBSCRIBER), "in-stream");
        assert_eq!(o.first_sent_us(), Some(1_000));
        assert!(!o.heard_by_both());
        o.sent_one(TO_REMOTE, 3_000);
        assert!(o.heard_by_both());
        o.fail(TO_REMOTE, "media moved (re-INVITE) during the prompt");
        o.fail(TO_REMOTE, "later reason");
        assert_eq!(
            o.placement(TO_REMOTE),
            "media moved (re-INVITE) during the prompt"
        );
        assert!(!o.heard_by_both());
    }
}
