//! HEPv3 decoding (Sans-IO): a HEP packet from a capture agent (heplify,
//! Kamailio's siptrace, rtpengine, an SBC, `callrec forward`) becomes a
//! frame the engine already decodes: a synthesised raw-IP UDP or TCP
//! packet (`LinkType::RawIp`) with the agent's timestamp as capture time,
//! and the agent's capture id as its capture point.
//!
//! Wire format: HEP3 specification (sipcapture/HEP, "HEP3 Network
//! Protocol Specification", rev. 2): "HEP3", the total length (u16,
//! big-endian, header included), then chunks of vendor id (u16), type
//! (u16), length including the 6-byte chunk header (u16), value. Generic
//! chunks (vendor 0) used here: 0x01 IP family (2 = IPv4, 10 = IPv6),
//! 0x02 IP protocol, 0x03/0x04 IPv4 source/destination, 0x05/0x06 IPv6
//! source/destination, 0x07/0x08 ports, 0x09/0x0a timestamp seconds and
//! microseconds, 0x0b protocol type (1 SIP, 4 RTP, ...), 0x0c capture
//! agent id, 0x0e authentication key, 0x0f payload, 0x10 compressed
//! payload, 0x11 correlation id. Other generic types the specification
//! lists (0x0d keep-alive, 0x12-0x29: VLAN, node name, MACs, QoS, tags...)
//! are skipped; vendor chunks (vendor id not 0) are skipped as the
//! specification allows; a generic type beyond the list is counted
//! (`unknown_chunks`) and skipped, so an agent newer than us still works.
//!
//! Nothing here reads a socket or a clock: [`HepDecoder::decode`] takes
//! the bytes and the arrival time (used only when a packet carries no
//! timestamp) and hands back the frame or the reason it was refused.

use super::dedup::Dedup;
use super::{LinkType, Packet};
use crate::time::Timestamp;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// HEP protocol type of SIP (chunk 0x0b).
pub const TYPE_SIP: u8 = 1;
/// HEP protocol type of RTP (chunk 0x0b), the packet's UDP payload.
pub const TYPE_RTP: u8 = 4;
/// HEP protocol type of RTCP (chunk 0x0b): taken when it is the binary
/// packet (`callrec forward`, rtpengine), not heplify's JSON report.
pub const TYPE_RTCP: u8 = 5;
/// Largest HEP packet: its length field is 16 bits.
pub const MAX_PACKET: usize = 65_535;
/// TCP flows whose synthesised sequence numbers are remembered; past
/// this the table starts over (bounded memory whatever the agents send).
const MAX_TCP_FLOWS: usize = 65_536;

/// Why a HEP packet was refused, one counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HepError {
    /// Shorter than its header or its length field says.
    Truncated,
    /// Not "HEP3": HEPv1/v2 or not HEP at all.
    Version,
    /// A chunk whose length is below 6 or runs past the packet, or a
    /// fixed-size chunk (address, port, time) of the wrong size.
    BadChunk,
    /// Family, protocol, addresses, ports or payload missing.
    Missing,
    /// A capture id not in `capture.hep_capture_ids`.
    UnknownCaptureId,
    /// The authentication key differs from `capture.hep_auth_key`.
    AuthKey,
    /// Longer than a frame can carry (TCP: the length field above the limit).
    Oversized,
    /// A payload we do not record (compressed, or a protocol type other
    /// than SIP and RTP, e.g. heplify's RTCP reports as JSON).
    Unsupported,
}

impl HepError {
    /// Every reason, in the order of [`HepStats::bad`].
    pub const ALL: [HepError; 8] = [
        HepError::Truncated,
        HepError::Version,
        HepError::BadChunk,
        HepError::Missing,
        HepError::UnknownCaptureId,
        HepError::AuthKey,
        HepError::Oversized,
        HepError::Unsupported,
    ];

    /// The metric label and log word.
    pub fn as_str(self) -> &'static str {
        match self {
            HepError::Truncated => "truncated",
            HepError::Version => "version",
            HepError::BadChunk => "bad_chunk",
            HepError::Missing => "missing_chunk",
            HepError::UnknownCaptureId => "unknown_capture_id",
            HepError::AuthKey => "auth_key",
            HepError::Oversized => "oversized",
            HepError::Unsupported => "unsupported_payload",
        }
    }

    fn index(self) -> usize {
        HepError::ALL.iter().position(|&e| e == self).unwrap_or(0)
    }
}

/// The fields of one HEP packet, borrowed from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HepMessage<'a> {
    /// IP protocol number of the transport (17 UDP, 6 TCP).
    pub ip_proto: u8,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Agent time of capture, when the packet carries it.
    pub ts: Option<Timestamp>,
    /// HEP protocol type ([`TYPE_SIP`], [`TYPE_RTP`], ...).
    pub proto_type: u8,
    /// Capture agent id (0 when absent).
    pub capture_id: u32,
    pub auth_key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    /// True when the payload came in chunk 0x10 (compressed).
    pub compressed: bool,
    pub correlation: Option<&'a [u8]>,
    /// Generic chunk types we do not know, skipped.
    pub unknown_chunks: u32,
}

/// Length of the HEP packet at the start of `buf` (a TCP stream): `None`
/// until the 6-byte header is there; an error if it is not HEPv3 or its
/// length is below the header or above `max`.
pub fn frame_len(buf: &[u8], max: usize) -> Option<Result<usize, HepError>> {
    let head = buf.get(..6)?;
    if &head[..4] != b"HEP3" {
        return Some(Err(HepError::Version));
    }
    let n = usize::from(u16::from_be_bytes([head[4], head[5]]));
    Some(match n {
        0..=5 => Err(HepError::Truncated),
        n if n > max => Err(HepError::Oversized),
        n => Ok(n),
    })
}

/// Chunk values gathered while walking a packet.
#[derive(Default)]
struct Fields<'a> {
    family: Option<u8>,
    ip_proto: Option<u8>,
    src4: Option<[u8; 4]>,
    dst4: Option<[u8; 4]>,
    src6: Option<[u8; 16]>,
    dst6: Option<[u8; 16]>,
    sport: Option<u16>,
    dport: Option<u16>,
    secs: Option<u32>,
    usecs: Option<u32>,
    proto_type: Option<u8>,
    capture_id: Option<u32>,
    auth_key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    compressed: bool,
    correlation: Option<&'a [u8]>,
    unknown: u32,
}

fn fixed<const N: usize>(v: &[u8]) -> Result<[u8; N], HepError> {
    v.try_into().map_err(|_| HepError::BadChunk)
}

impl<'a> Fields<'a> {
    fn take(&mut self, kind: u16, v: &'a [u8]) -> Result<(), HepError> {
        match kind {
            0x01 => self.family = Some(fixed::<1>(v)?[0]),
            0x02 => self.ip_proto = Some(fixed::<1>(v)?[0]),
            0x03 => self.src4 = Some(fixed(v)?),
            0x04 => self.dst4 = Some(fixed(v)?),
            0x05 => self.src6 = Some(fixed(v)?),
            0x06 => self.dst6 = Some(fixed(v)?),
            0x07 => self.sport = Some(u16::from_be_bytes(fixed(v)?)),
            0x08 => self.dport = Some(u16::from_be_bytes(fixed(v)?)),
            0x09 => self.secs = Some(u32::from_be_bytes(fixed(v)?)),
            0x0a => self.usecs = Some(u32::from_be_bytes(fixed(v)?)),
            0x0b => self.proto_type = Some(fixed::<1>(v)?[0]),
            0x0c => self.capture_id = Some(u32::from_be_bytes(fixed(v)?)),
            0x0e => self.auth_key = Some(v),
            0x0f => self.payload = Some(v),
            0x10 => {
                self.payload = Some(v);
                self.compressed = true;
            }
            0x11 => self.correlation = Some(v),
            // Keep-alive, VLAN, node name/group, MACs, ethertype, TCP
            // flags, TOS, MOS, R-factor, geo, jitter, tags...: not ours.
            0x0d | 0x12..=0x29 => {}
            _ => self.unknown += 1,
        }
        Ok(())
    }

    fn finish(self) -> Result<HepMessage<'a>, HepError> {
        let (src, dst): (IpAddr, IpAddr) = match (self.family, self.src4, self.dst4) {
            (Some(2), Some(s), Some(d)) => (Ipv4Addr::from(s).into(), Ipv4Addr::from(d).into()),
            (Some(10), ..) => match (self.src6, self.dst6) {
                (Some(s), Some(d)) => (Ipv6Addr::from(s).into(), Ipv6Addr::from(d).into()),
                _ => return Err(HepError::Missing),
            },
            _ => return Err(HepError::Missing),
        };
        let (Some(ip_proto), Some(sport), Some(dport), Some(payload)) =
            (self.ip_proto, self.sport, self.dport, self.payload)
        else {
            return Err(HepError::Missing);
        };
        let ts = match (self.secs, self.usecs) {
            (Some(s), u) if u.unwrap_or(0) < 1_000_000 => Some(Timestamp::from_secs_micros(
                i64::from(s),
                i64::from(u.unwrap_or(0)),
            )),
            (Some(_), _) => return Err(HepError::BadChunk),
            (None, _) => None,
        };
        Ok(HepMessage {
            ip_proto,
            src: SocketAddr::new(src, sport),
            dst: SocketAddr::new(dst, dport),
            ts,
            proto_type: self.proto_type.unwrap_or(TYPE_SIP),
            capture_id: self.capture_id.unwrap_or(0),
            auth_key: self.auth_key,
            payload,
            compressed: self.compressed,
            correlation: self.correlation,
            unknown_chunks: self.unknown,
        })
    }
}

/// Parses one whole HEPv3 packet (bytes past its length field are
/// ignored, as a datagram may be padded).
pub fn parse(buf: &[u8]) -> Result<HepMessage<'_>, HepError> {
    let len = match frame_len(buf, MAX_PACKET) {
        None => return Err(HepError::Truncated),
        Some(r) => r?,
    };
    let body = buf.get(6..len).ok_or(HepError::Truncated)?;
    let mut f = Fields::default();
    let mut rest = body;
    while !rest.is_empty() {
        let h = rest.get(..6).ok_or(HepError::Truncated)?;
        let vendor = u16::from_be_bytes([h[0], h[1]]);
        let kind = u16::from_be_bytes([h[2], h[3]]);
        let clen = usize::from(u16::from_be_bytes([h[4], h[5]]));
        if clen < 6 {
            return Err(HepError::BadChunk);
        }
        let value = rest.get(6..clen).ok_or(HepError::Truncated)?;
        if vendor == 0 {
            f.take(kind, value)?;
        }
        rest = &rest[clen..];
    }
    f.finish()
}

/// Who may send: `capture.hep_capture_ids` and `capture.hep_auth_key`.
#[derive(Clone, Debug, Default)]
pub struct HepPolicy {
    /// When not empty, only these capture ids are accepted.
    pub capture_ids: Vec<u32>,
    /// When set, packets must carry this key (chunk 0x0e).
    pub auth_key: Option<String>,
}

/// Counters of a HEP source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HepStats {
    /// Packets turned into frames (duplicates not included).
    pub packets: u64,
    /// Bytes of those HEP packets.
    pub bytes: u64,
    /// Refused packets, per [`HepError::ALL`] reason.
    pub bad: [u64; 8],
    /// Same packet from a second capture point, dropped.
    pub duplicates: u64,
    /// Generic chunks of unknown type, skipped.
    pub unknown_chunks: u64,
}

impl HepStats {
    /// Refused packets for one reason.
    pub fn bad(&self, e: HepError) -> u64 {
        self.bad[e.index()]
    }
}

/// A decoded packet: the synthesised frame and the capture point name.
pub struct Decoded<'a> {
    pub packet: Packet<'a>,
    /// "hep:<capture id>", one capture point (clock offset) per agent.
    pub capture_point: &'a str,
    pub capture_id: u32,
}

/// Turns HEP packets into engine frames; owns the counters, the
/// duplicate window and the TCP sequence numbers it invents.
pub struct HepDecoder {
    policy: HepPolicy,
    stats: HepStats,
    dedup: Dedup,
    /// Next sequence number per synthesised TCP flow (src, dst): the
    /// engine's TCP reassembly sees the payloads of a flow back to back.
    tcp_seq: HashMap<(SocketAddr, SocketAddr), u32>,
    frame: Vec<u8>,
    point: String,
    point_id: Option<u32>,
    index: u64,
    /// Time of the frame last decoded.
    last_ts: Timestamp,
}

impl HepDecoder {
    pub fn new(policy: HepPolicy) -> HepDecoder {
        HepDecoder {
            policy,
            stats: HepStats::default(),
            dedup: Dedup::new(),
            tcp_seq: HashMap::new(),
            frame: Vec::with_capacity(2048),
            point: String::new(),
            point_id: None,
            index: 0,
            last_ts: Timestamp::ZERO,
        }
    }

    pub fn stats(&self) -> &HepStats {
        &self.stats
    }

    /// Counts a refusal found outside [`HepDecoder::decode`] (TCP framing).
    pub fn count_bad(&mut self, e: HepError) {
        self.stats.bad[e.index()] += 1;
    }

    /// One HEP packet in: `Ok(Some)` a frame for the engine, `Ok(None)` a
    /// duplicate (counted), `Err` the reason it was refused (counted).
    /// `arrival` stands in for a missing timestamp.
    pub fn decode(
        &mut self,
        buf: &[u8],
        arrival: Timestamp,
    ) -> Result<Option<Decoded<'_>>, HepError> {
        let (ts, capture_id) = match self.check(buf, arrival) {
            Ok(Some(v)) => v,
            Ok(None) => {
                self.stats.duplicates += 1;
                return Ok(None);
            }
            Err(e) => {
                self.count_bad(e);
                return Err(e);
            }
        };
        self.stats.packets += 1;
        self.stats.bytes += buf.len() as u64;
        self.index += 1;
        self.last_ts = ts;
        Ok(Some(Decoded {
            packet: Packet {
                index: self.index,
                ts,
                link: LinkType::RawIp,
                data: &self.frame,
                orig_len: self.frame.len() as u32,
            },
            capture_point: &self.point,
            capture_id,
        }))
    }

    /// Parses, applies the policy and the duplicate window, and builds the
    /// frame; `Ok(None)` for a duplicate, else its time and capture id.
    fn check(
        &mut self,
        buf: &[u8],
        arrival: Timestamp,
    ) -> Result<Option<(Timestamp, u32)>, HepError> {
        let m = parse(buf)?;
        self.stats.unknown_chunks += u64::from(m.unknown_chunks);
        if !self.policy.capture_ids.is_empty() && !self.policy.capture_ids.contains(&m.capture_id) {
            return Err(HepError::UnknownCaptureId);
        }
        if let Some(k) = &self.policy.auth_key
            && m.auth_key.map(trim_nul) != Some(k.as_bytes())
        {
            return Err(HepError::AuthKey);
        }
        let binary_rtcp =
            m.proto_type == TYPE_RTCP && m.payload.first().is_some_and(|b| b >> 6 == 2);
        if m.compressed || !(matches!(m.proto_type, TYPE_SIP | TYPE_RTP) || binary_rtcp) {
            return Err(HepError::Unsupported);
        }
        if !matches!(m.ip_proto, 6 | 17) {
            return Err(HepError::Unsupported);
        }
        let ts = m.ts.unwrap_or(arrival);
        if !self.dedup.first_sighting(&m, m.capture_id, ts) {
            return Ok(None);
        }
        if self.point_id != Some(m.capture_id) {
            self.point = format!("hep:{}", m.capture_id);
            self.point_id = Some(m.capture_id);
        }
        let seq = match m.ip_proto {
            6 => self.next_seq(&m),
            _ => 0,
        };
        synthesise(&mut self.frame, &m, seq)?;
        Ok(Some((ts, m.capture_id)))
    }

    /// The frame the last successful [`HepDecoder::decode`] made, again.
    pub fn last(&self) -> Decoded<'_> {
        Decoded {
            packet: Packet {
                index: self.index,
                ts: self.last_ts,
                link: LinkType::RawIp,
                data: &self.frame,
                orig_len: self.frame.len() as u32,
            },
            capture_point: &self.point,
            capture_id: self.point_id.unwrap_or(0),
        }
    }

    fn next_seq(&mut self, m: &HepMessage<'_>) -> u32 {
        if self.tcp_seq.len() >= MAX_TCP_FLOWS && !self.tcp_seq.contains_key(&(m.src, m.dst)) {
            self.tcp_seq.clear();
        }
        let s = self.tcp_seq.entry((m.src, m.dst)).or_insert(1);
        let seq = *s;
        *s = s.wrapping_add(m.payload.len() as u32);
        seq
    }
}

/// Kamailio sends the key with its C string's NUL.
fn trim_nul(k: &[u8]) -> &[u8] {
    k.strip_suffix(b"\0").unwrap_or(k)
}

/// Writes the raw IP packet HEP describes into `out`: IPv4 (RFC 791) or
/// IPv6 (RFC 8200) header, then UDP (RFC 768) or TCP (RFC 9293, flags
/// PSH|ACK, sequence `seq`), then the payload. Checksums: the IPv4 header
/// checksum is computed; transport checksums are left 0 (the decoder does
/// not check them, and the frame never leaves the process).
fn synthesise(out: &mut Vec<u8>, m: &HepMessage<'_>, seq: u32) -> Result<(), HepError> {
    let l4 = if m.ip_proto == 6 { 20 } else { 8 };
    let l4_len = l4 + m.payload.len();
    out.clear();
    match (m.src.ip(), m.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = u16::try_from(20 + l4_len).map_err(|_| HepError::Oversized)?;
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&total.to_be_bytes());
            // id 0, don't fragment, TTL 64, protocol, checksum (below).
            out.extend_from_slice(&[0, 0, 0x40, 0, 64, m.ip_proto, 0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let sum = ipv4_checksum(&out[..20]);
            out[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        (s, d) => {
            let six = |a: IpAddr| match a {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            let plen = u16::try_from(l4_len).map_err(|_| HepError::Oversized)?;
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&plen.to_be_bytes());
            out.extend_from_slice(&[m.ip_proto, 64]);
            out.extend_from_slice(&six(s).octets());
            out.extend_from_slice(&six(d).octets());
        }
    }
    out.extend_from_slice(&m.src.port().to_be_bytes());
    out.extend_from_slice(&m.dst.port().to_be_bytes());
    if m.ip_proto == 6 {
        out.extend_from_slice(&seq.to_be_bytes());
        // ack 0, data offset 5 words, PSH|ACK, window, checksum, urgent.
        out.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        out.extend_from_slice(&(l4_len as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    }
    out.extend_from_slice(m.payload);
    Ok(())
}

/// The RFC 791 header checksum (ones' complement of the ones' complement
/// sum of the header's 16-bit words, with the checksum field 0).
fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
#[path = "hep_tests.rs"]
mod tests;
