//! The same packet seen by two capture points (two agents mirroring the
//! same link, or a SPAN and an SBC's own HEP) is processed once.
//!
//! A packet is known by its 5-tuple and a hash of its payload: for RTP
//! the payload holds SSRC and sequence number (RFC 3550 §5.1), so two
//! packets of one stream never share a key; for SIP it is the message's
//! bytes. A key seen from *another* capture point within [`WINDOW_US`] of
//! packet time is a duplicate. The same point sending the same bytes
//! again is not: that is a retransmission, or the capture as it is, and a
//! single agent's traffic goes through unchanged.
//!
//! Why 200 ms: a SIP retransmission is byte-identical on the same
//! 5-tuple and comes no sooner than T1 = 500 ms (RFC 3261 §17.1.1.2), so
//! a window below that never swallows one even if two agents see only
//! one copy each; and two agents stamp one wire packet within
//! milliseconds of each other when their clocks follow NTP, so 200 ms
//! leaves room for a loaded agent. An RTP sequence number comes back
//! only after 65,536 packets (21 minutes at 50 per second). Agents
//! whose clocks differ by more than the window are not deduplicated:
//! keep capture agents on NTP.
//!
//! Memory: one entry per packet of the last window, at most
//! [`MAX_ENTRIES`] (past it the oldest go first): 20 bytes an entry plus
//! the table's overhead, about 40 MB at the bound.
//!
//! Sans-IO: times are the packets' own.

use super::hep::HepMessage;
use crate::time::Timestamp;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

/// Packet time within which a second capture point's copy is a duplicate.
pub const WINDOW_US: i64 = 200_000;
/// Keys remembered at most (a 5 Mpps flood for 200 ms would need a million).
pub const MAX_ENTRIES: usize = 1 << 20;

/// The duplicate window.
pub struct Dedup {
    /// Key hash -> (first time seen, capture id that sent it first).
    seen: HashMap<u64, (Timestamp, u32)>,
    /// Keys in the order they were first seen, for expiry.
    order: VecDeque<(Timestamp, u64)>,
    hasher: foldhash::fast::FixedState,
}

impl Default for Dedup {
    fn default() -> Self {
        Dedup::new()
    }
}

impl Dedup {
    pub fn new() -> Dedup {
        Dedup {
            seen: HashMap::new(),
            order: VecDeque::new(),
            // A fixed seed: two runs over the same packets decide the same.
            hasher: foldhash::fast::FixedState::with_seed(0x4845_5033),
        }
    }

    /// Keys currently remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// False when `m` was seen from another capture point within the
    /// window before `ts`; otherwise remembers it and returns true.
    pub fn first_sighting(&mut self, m: &HepMessage<'_>, point: u32, ts: Timestamp) -> bool {
        self.expire(ts);
        let key = self.hasher.hash_one((m.ip_proto, m.src, m.dst, m.payload));
        match self.seen.get_mut(&key) {
            // The first sighting's time stays, so the entry expires in order.
            Some((t, p)) if ts.since(*t).abs() <= WINDOW_US => *p == point,
            Some(entry) => {
                *entry = (ts, point);
                self.order.push_back((ts, key));
                true
            }
            None => {
                if self.seen.len() >= MAX_ENTRIES
                    && let Some((_, k)) = self.order.pop_front()
                {
                    self.seen.remove(&k);
                }
                self.seen.insert(key, (ts, point));
                self.order.push_back((ts, key));
                true
            }
        }
    }

    /// Forgets keys first seen more than a window before `now`.
    fn expire(&mut self, now: Timestamp) {
        while let Some(&(t, k)) = self.order.front() {
            if now.since(t) <= WINDOW_US {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&k).is_some_and(|(seen, _)| *seen == t) {
                self.seen.remove(&k);
            }
        }
    }
}
