//! The engine's side of held packets: the copy of a frame the clock
//! holds back, and the log of packets placed by the clock. Apart from
//! the clock, which sees only stamps (sans-IO).

use crate::time::Timestamp;

/// A frame the clock holds back, copied out of the capture buffer.
pub struct HeldFrame {
    /// The capture point it came from: points hold and resolve apart.
    pub point: usize,
    pub index: u64,
    /// Its stamp as captured.
    pub raw: Timestamp,
    pub link: crate::capture::LinkType,
    pub data: Vec<u8>,
    pub orig_len: u32,
}

impl HeldFrame {
    pub fn copy(p: &crate::capture::Packet<'_>, point: usize) -> HeldFrame {
        HeldFrame {
            point,
            index: p.index,
            raw: p.ts,
            link: p.link,
            data: p.data.to_vec(),
            orig_len: p.orig_len,
        }
    }

    /// The frame as placed at `ts`.
    pub fn packet(&self, ts: Timestamp) -> crate::capture::Packet<'_> {
        crate::capture::Packet {
            index: self.index,
            ts,
            link: self.link,
            data: &self.data,
            orig_len: self.orig_len,
        }
    }

    /// Its UDP source, where it has one.
    pub fn source(&self) -> Option<std::net::IpAddr> {
        crate::decode::peek_udp(self.link, &self.data).map(|(s, _, _)| s.ip())
    }
}

/// Logs packets placed by the clock once per capture point and source
/// address (a corrupt capture or a hostile agent would otherwise write a
/// line per packet); they are all counted in
/// [`ClockStats::outliers`](super::ClockStats::outliers).
#[derive(Default)]
pub struct OutlierLog {
    seen: std::collections::HashSet<(String, Option<std::net::IpAddr>)>,
}

/// Sources remembered for [`OutlierLog`]; beyond, nothing more is logged.
const MAX_LOGGED_SOURCES: usize = 1024;

impl OutlierLog {
    pub fn note(
        &mut self,
        point: &str,
        src: Option<std::net::IpAddr>,
        raw: Timestamp,
        placed: Timestamp,
    ) {
        if self.seen.len() >= MAX_LOGGED_SOURCES || !self.seen.insert((point.to_owned(), src)) {
            return;
        }
        let off = raw.since(placed) as f64 / 1e6;
        let from = src.map_or_else(|| "?".to_owned(), |s| s.to_string());
        tracing::warn!(
            capture = point,
            source = %from,
            stamped = %raw,
            placed = %placed,
            "a packet from {from} is stamped {off:+.3} s off the capture clock: placed by the clock, it moves nothing; further ones from this source are only counted (clock outliers)"
        );
    }
}
