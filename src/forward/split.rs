//! Which central appliance a captured payload goes to (Sans-IO).
//!
//! With one `forward.to` everything goes there. With several, traffic is
//! split **by call**: a SIP message goes to the appliance its Call-ID
//! hashes to (so every message of a dialog, retransmissions included,
//! meets in one call table), and the media addresses its SDP offers or
//! answers (m= port and its RTCP port, at the c= address) are remembered
//! for that appliance, so the call's RTP and RTCP follow it. Media of no
//! known call goes to every appliance: each ignores media that belongs to
//! none of its calls (counted there as foreign RTP), and none misses the
//! start of a stream whose SDP it has not yet seen in our table (an
//! answer racing its first RTP packet).
//!
//! Memory: at most [`MAX_MEDIA`] media addresses; an address not seen
//! for [`MEDIA_IDLE_US`] of packet time is forgotten.
//!
//! Also classifies UDP payloads into what HEP carries: SIP, RTP or RTCP;
//! anything else is not forwarded.

use crate::time::Timestamp;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::SocketAddr;

/// Media addresses remembered at most.
pub const MAX_MEDIA: usize = 200_000;
/// Packet time after which a media address of no packet is forgotten
/// (5 minutes: longer than `recording.rtp_timeout` defaults).
pub const MEDIA_IDLE_US: i64 = 300_000_000;

/// What a payload is, for HEP's protocol type (chunk 0x0b).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// HEP type 1.
    Sip,
    /// HEP type 4.
    Rtp,
    /// HEP type 5, sent as the binary packet (RFC 3550 §6).
    Rtcp,
}

impl Kind {
    /// The HEP protocol type number.
    pub fn hep_type(self) -> u8 {
        match self {
            Kind::Sip => 1,
            Kind::Rtp => 4,
            Kind::Rtcp => 5,
        }
    }
}

/// SIP by its ports or start line; RTP and RTCP by their version 2 and
/// (RTCP) packet types 200..=204 (RFC 3550 §5.1, §6.4, RFC 5761 §4).
pub fn classify(sip_ports: &[u16], src: SocketAddr, dst: SocketAddr, data: &[u8]) -> Option<Kind> {
    let on_sip_port = sip_ports.contains(&src.port()) || sip_ports.contains(&dst.port());
    if on_sip_port || crate::sip::looks_like_sip(data) {
        return Some(Kind::Sip);
    }
    if data.len() < 8 || data[0] >> 6 != 2 {
        return None;
    }
    match data[1] {
        200..=204 => Some(Kind::Rtcp),
        _ if data.len() >= 12 => Some(Kind::Rtp),
        _ => None,
    }
}

/// Where a payload goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    One(usize),
    All,
}

/// The per-call split over `n` appliances.
pub struct Splitter {
    n: usize,
    media: HashMap<SocketAddr, (usize, Timestamp)>,
    order: VecDeque<(Timestamp, SocketAddr)>,
    hasher: foldhash::fast::FixedState,
}

impl Splitter {
    pub fn new(n: usize) -> Splitter {
        Splitter {
            n: n.max(1),
            media: HashMap::new(),
            order: VecDeque::new(),
            // Fixed: every forwarder (and every restart) splits alike.
            hasher: foldhash::fast::FixedState::with_seed(17),
        }
    }

    /// The appliance for this payload.
    pub fn route(
        &mut self,
        kind: Kind,
        src: SocketAddr,
        dst: SocketAddr,
        data: &[u8],
        ts: Timestamp,
    ) -> Route {
        if self.n == 1 {
            return Route::One(0);
        }
        self.expire(ts);
        match kind {
            Kind::Sip => self.sip(data, ts),
            Kind::Rtp | Kind::Rtcp => {
                let hit = self.media.get(&dst).or_else(|| self.media.get(&src));
                hit.map_or(Route::All, |&(i, _)| Route::One(i))
            }
        }
    }

    fn sip(&mut self, data: &[u8], ts: Timestamp) -> Route {
        let Ok(m) = crate::sip::parse(data) else {
            return Route::All;
        };
        let Some(call_id) = m.call_id() else {
            return Route::All;
        };
        let i = (self.hasher.hash_one(call_id.trim()) % self.n as u64) as usize;
        if let Some(sdp) = m.sdp().and_then(|b| crate::sip::sdp::parse(b).ok()) {
            for media in &sdp.media {
                let Some(ip) = media.addr.or(sdp.connection) else {
                    continue;
                };
                if media.port == 0 {
                    continue;
                }
                self.remember(SocketAddr::new(ip, media.port), i, ts);
                if let Some((a, p)) = media.rtcp() {
                    self.remember(SocketAddr::new(a.unwrap_or(ip), p), i, ts);
                }
            }
        }
        Route::One(i)
    }

    fn remember(&mut self, a: SocketAddr, i: usize, ts: Timestamp) {
        if self.media.len() >= MAX_MEDIA
            && !self.media.contains_key(&a)
            && let Some((_, old)) = self.order.pop_front()
        {
            self.media.remove(&old);
        }
        self.media.insert(a, (i, ts));
        self.order.push_back((ts, a));
    }

    fn expire(&mut self, now: Timestamp) {
        while let Some(&(t, a)) = self.order.front() {
            if now.since(t) <= MEDIA_IDLE_US {
                break;
            }
            self.order.pop_front();
            if self.media.get(&a).is_some_and(|(_, seen)| *seen == t) {
                self.media.remove(&a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(call_id: &str, port: u16) -> Vec<u8> {
        let sdp = format!(
            "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
        );
        format!(
            "INVITE sip:b@198.51.100.2 SIP/2.0\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        )
        .into_bytes()
    }

    #[test]
    fn a_call_and_its_media_go_to_one_appliance_and_calls_spread() {
        let mut s = Splitter::new(2);
        let (a, b): (SocketAddr, SocketAddr) = (
            "192.0.2.1:5060".parse().unwrap(),
            "198.51.100.2:5060".parse().unwrap(),
        );
        let mut seen = [0; 2];
        for k in 0..40u16 {
            let ts = Timestamp::from_secs_micros(100 + i64::from(k), 0);
            let port = 20_000 + 2 * k;
            let Route::One(i) = s.route(Kind::Sip, a, b, &invite(&format!("call-{k}"), port), ts)
            else {
                panic!("SIP goes to one appliance")
            };
            seen[i] += 1;
            let media: SocketAddr = format!("192.0.2.1:{port}").parse().unwrap();
            let far: SocketAddr = "198.51.100.9:30000".parse().unwrap();
            assert_eq!(
                s.route(Kind::Rtp, far, media, &[0x80; 12], ts),
                Route::One(i)
            );
            assert_eq!(
                s.route(Kind::Rtp, media, far, &[0x80; 12], ts),
                Route::One(i)
            );
            let rtcp: SocketAddr = format!("192.0.2.1:{}", port + 1).parse().unwrap();
            assert_eq!(
                s.route(Kind::Rtcp, far, rtcp, &[0x80, 200, 0, 1, 0, 0, 0, 0], ts),
                Route::One(i)
            );
        }
        assert!(seen[0] > 5 && seen[1] > 5, "{seen:?}");
        let unknown: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        assert_eq!(
            s.route(Kind::Rtp, unknown, unknown, &[0x80; 12], Timestamp::ZERO),
            Route::All
        );
    }

    #[test]
    fn classifies_sip_rtp_rtcp_and_nothing_else() {
        let p = [5060];
        let (x, y): (SocketAddr, SocketAddr) = (
            "192.0.2.1:4000".parse().unwrap(),
            "192.0.2.2:4002".parse().unwrap(),
        );
        assert_eq!(
            classify(&p, x, y, b"OPTIONS sip:a SIP/2.0\r\n\r\n"),
            Some(Kind::Sip)
        );
        assert_eq!(
            classify(&p, x, y, &[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]),
            Some(Kind::Rtp)
        );
        assert_eq!(
            classify(&p, x, y, &[0x81, 200, 0, 6, 0, 0, 0, 0]),
            Some(Kind::Rtcp)
        );
        assert_eq!(classify(&p, x, y, b"\x01\x02dns"), None);
    }
}
