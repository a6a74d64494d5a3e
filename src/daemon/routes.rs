//! Where a media address leads, and whose packets sent there are taken.
//!
//! The capture thread routes RTP by where it goes (the receiver's SDP
//! address), then by where it comes from (the sender's SDP address, for
//! parties behind NAT whose packets go elsewhere). A destination route must
//! also decide which *source* carries the sender's voice: anyone can send
//! a datagram to a recorded port, and a recording is evidence.
//!
//! The source is chosen from evidence, never from arrival order:
//!
//! - **strong**: the sender's own SDP address, or the address the other
//!   party sends its RTP to (symmetric RTP: a far end or media relay
//!   answering a party behind NAT sends where that party's packets come
//!   from);
//! - **weak**: the sender's signalling address (the IP its INVITE or 2xx
//!   came from) or its SDP's IP with another port (a NAT that keeps the
//!   address).
//!
//! A source no evidence supports is never taken. Once a source is latched,
//! no other is taken while it is alive (heard within [`RELATCH_US`]),
//! except that a source with strong evidence takes over from one latched
//! on weak evidence alone. Refused packets are counted per route (the
//! call's metadata) and in the engine's `rtp_foreign`.
//!
//! Each route also remembers the last RTP timestamp it passed and when:
//! the capture clock asks held packets' RTP timestamps whether the
//! capture stamps moved with the media or without it (see
//! [`crate::daemon::clock`]).

use crate::calls::tracker::CallKey;
use crate::daemon::shard::Leg;
use crate::time::Timestamp;
use std::net::{IpAddr, SocketAddr};

/// A latched source silent this long gives way to another supported one
/// (a media source that moved without signalling, or NAT rebinding).
pub const RELATCH_US: i64 = 500_000;

/// What vouches for the sender of a destination route's packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// The sender's SDP address.
    pub sdp: Option<SocketAddr>,
    /// Where the sender's signalling came from.
    pub sip_ip: Option<IpAddr>,
    /// Where the other party sends its RTP (learned from the traffic).
    pub target: Option<SocketAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Support {
    None,
    Weak,
    Strong,
}

impl Evidence {
    fn support(&self, src: SocketAddr) -> Support {
        if Some(src) == self.sdp || Some(src) == self.target {
            return Support::Strong;
        }
        let sdp_ip = self.sdp.map(|a| a.ip()).filter(|ip| !ip.is_unspecified());
        if Some(src.ip()) == self.sip_ip || Some(src.ip()) == sdp_ip {
            return Support::Weak;
        }
        Support::None
    }
}

/// A recorded call's route: whose voice packets to (or from) an address
/// carry.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub key: CallKey,
    pub leg: Leg,
    /// The call's shard, and when this route last kept the call alive:
    /// copied here so that a packet costs one table lookup, not two.
    pub shard: usize,
    pub touched: Timestamp,
    /// Subscriber routes of calls whose keys can pause the recording: the
    /// telephone-event payload type.
    pub keypad_pt: Option<u8>,
    /// The call's media is watched by the engine's media check (SRTP or
    /// codecs that may be undecodable): its packets are shown to it.
    pub check: bool,
    /// Capture time of the last packet routed here: a call ended by the
    /// RTP timeout ends at its last packet, not at the last once-a-second
    /// keep-alive (which cut up to a second of the conversation).
    pub last: Timestamp,
    /// Destination routes: what vouches for the sender, and the source
    /// latched on, how strongly, and when it was last heard.
    pub evidence: Evidence,
    latched: Option<SocketAddr>,
    strong: bool,
    seen: Timestamp,
    /// Packets refused since [`Route::take_foreign`] last ran.
    foreign: u64,
    /// Source routes: where this party was last seen sending (the other
    /// party's destination route learns its target from it).
    pub sends_to: Option<SocketAddr>,
    /// The last RTP packet passed: SSRC, RTP timestamp, capture time.
    rtp: Option<(u32, u32, Timestamp)>,
}

impl Route {
    pub fn new(key: CallKey, leg: Leg, shard: usize, evidence: Evidence) -> Route {
        Route {
            key,
            leg,
            shard,
            touched: Timestamp::ZERO,
            keypad_pt: None,
            check: false,
            last: Timestamp::ZERO,
            evidence,
            latched: None,
            strong: false,
            seen: Timestamp::ZERO,
            foreign: 0,
            sends_to: None,
            rtp: None,
        }
    }

    /// Whether a packet from `src` at `ts` carries the sender's voice;
    /// counts it as foreign when not.
    #[inline]
    pub fn admit(&mut self, src: SocketAddr, ts: Timestamp) -> bool {
        if self.latched == Some(src) {
            if ts > self.seen {
                self.seen = ts;
            }
            return true;
        }
        self.admit_new(src, ts)
    }

    #[cold]
    fn admit_new(&mut self, src: SocketAddr, ts: Timestamp) -> bool {
        let support = self.evidence.support(src);
        let alive = self.latched.is_some() && ts.since(self.seen) < RELATCH_US;
        let take = match support {
            Support::None => false,
            Support::Weak => !alive,
            Support::Strong => !alive || !self.strong,
        };
        if take {
            self.latched = Some(src);
            self.strong = support == Support::Strong;
            self.seen = ts;
        } else {
            self.foreign += 1;
        }
        take
    }

    /// The source this route takes packets from now, if any.
    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }

    /// Foreign packets counted since the last call, and resets the count.
    pub fn take_foreign(&mut self) -> u64 {
        std::mem::take(&mut self.foreign)
    }

    /// Notes a packet passed on this route (RTP timestamp continuity).
    #[inline]
    pub fn note(&mut self, data: &[u8], ts: Timestamp) {
        if let Some((ssrc, rtp_ts)) = g711_header(data) {
            self.rtp = Some((ssrc, rtp_ts, ts));
        }
    }

    /// For a packet captured at `mapped` (through its capture point's
    /// current offset) that has not been placed yet: by how much its time
    /// must move to agree with its RTP timestamp, counted from the last
    /// packet this stream passed. `None` when it is not G.711 RTP of the
    /// same stream.
    pub fn vote(&self, data: &[u8], mapped: Timestamp) -> Option<i64> {
        let (ssrc, ts, at) = self.rtp?;
        let (s, t) = g711_header(data)?;
        if s != ssrc {
            return None;
        }
        // 8 kHz: 125 µs a sample.
        let samples = t.wrapping_sub(ts) as i32 as i64;
        Some(at.add_micros(samples * 125).since(mapped))
    }
}

/// SSRC and timestamp of a G.711 RTP packet (payload types 0 and 8: the
/// 8 kHz clock is certain, and telephone events, whose timestamps stand
/// still during a key, are left out).
#[inline]
fn g711_header(data: &[u8]) -> Option<(u32, u32)> {
    let h = data.get(..12)?;
    if h[0] >> 6 != 2 || !matches!(h[1] & 0x7f, 0 | 8) {
        return None;
    }
    Some((
        u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp::from_millis(1_795_221_000_000 + ms)
    }
    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_stranger_is_never_taken() {
        let sdp = a("192.0.2.1:4000");
        let rogue = a("203.0.113.66:40000");
        let mut r = Route::new(
            1,
            Leg::Subscriber,
            0,
            Evidence {
                sdp: Some(sdp),
                ..Default::default()
            },
        );
        assert!(!r.admit(rogue, t(0)), "first, but vouched for by nothing");
        assert!(r.admit(sdp, t(10)));
        assert!(!r.admit(rogue, t(20)));
        // Even once the party falls silent.
        assert!(!r.admit(rogue, t(5_000)));
        assert_eq!(r.take_foreign(), 3);
        assert_eq!(r.take_foreign(), 0);
    }

    #[test]
    fn nat_keeps_the_address_changes_the_port() {
        let sdp = a("192.0.2.1:4000");
        let nat = a("192.0.2.1:34000");
        let neighbour = a("192.0.2.1:35000");
        let mut r = Route::new(
            1,
            Leg::Subscriber,
            0,
            Evidence {
                sdp: Some(sdp),
                ..Default::default()
            },
        );
        assert!(r.admit(nat, t(0)), "the SDP's IP vouches weakly");
        assert!(!r.admit(neighbour, t(20)), "no switch while it is alive");
        assert!(r.admit(nat, t(40)));
        // Silent for 500 ms: another supported source may take over, and
        // the old one is then the stranger.
        assert!(!r.admit(neighbour, t(539)));
        assert!(r.admit(neighbour, t(540)));
        assert!(!r.admit(nat, t(560)));
        // Until the far end answers `nat`: strong evidence wins over weak.
        r.evidence.target = Some(nat);
        assert!(r.admit(nat, t(580)));
        assert!(!r.admit(neighbour, t(600)));
    }

    #[test]
    fn strong_evidence_takes_over_from_weak() {
        let sdp = a("10.0.0.5:4000");
        let sbc = a("192.0.2.200:5060");
        let same_host = a("192.0.2.200:40000");
        let public = a("198.51.100.7:40002");
        let mut r = Route::new(
            1,
            Leg::Remote,
            0,
            Evidence {
                sdp: Some(sdp),
                sip_ip: Some(sbc.ip()),
                target: None,
            },
        );
        assert!(
            r.admit(same_host, t(0)),
            "the signalling address vouches weakly"
        );
        assert!(!r.admit(public, t(10)), "nothing vouches for it yet");
        r.evidence.target = Some(public);
        assert!(r.admit(public, t(20)), "the far end answers it: strong");
        assert!(!r.admit(same_host, t(30)), "and weak cannot take it back");
        assert_eq!(r.latched(), Some(public));
    }

    #[test]
    fn votes_compare_rtp_time_with_capture_time() {
        let mut r = Route::new(1, Leg::Remote, 0, Evidence::default());
        let pkt = |seq: u16, ts: u32| crate::media::rtp::build_rtp(0, seq, ts, 7, false, &[0; 160]);
        r.note(&pkt(1, 1000), t(0));
        // 20 ms of audio later, stamped an hour earlier: move it +1 h.
        assert_eq!(
            r.vote(&pkt(2, 1160), t(20 - 3_600_000)),
            Some(3_600_000_000)
        );
        // On time: no move.
        assert_eq!(r.vote(&pkt(2, 1160), t(20)), Some(0));
        // Another stream, or a telephone event: no word.
        let other = crate::media::rtp::build_rtp(0, 2, 1160, 8, false, &[0; 160]);
        assert_eq!(r.vote(&other, t(20)), None);
        let event = crate::media::rtp::build_rtp(101, 2, 1160, 7, false, &[1, 10, 0, 160]);
        assert_eq!(r.vote(&event, t(20)), None);
    }
}
