//! HEPv3 export (HEP/EEP, the protocol of Homer, heplify and captagent):
//! the SIP messages of recorded calls (with `hep.all_calls`, of every
//! call) and a per-call report are sent over UDP to `hep.collector`.
//!
//! A call's messages are held until its history line is written (only
//! then is it known whether it was recorded), then sent in capture order
//! with their packet times, each as the SIP bytes seen on the wire, then
//! one report (HEP payload type 100, JSON) carrying the Call-ID as its
//! correlation id and the call's short id, decision and outcome, so a
//! NOC finds the call in Homer by either id. For a withheld caller the
//! identity headers (P-Asserted-Identity, P-Preferred-Identity,
//! Remote-Party-ID) are replaced by `<sip:anonymous@anonymous.invalid>`
//! before anything leaves: a withheld number is never exported in clear.
//!
//! [`encode`] is Sans-IO; [`HepExporter`] owns the socket. A collector
//! that is down costs a counter and a log line now and then, never a
//! call: sends are non-blocking and failures are dropped.
//!
//! Chunk layout: HEP3 specification (sipcapture/HEP, "HEP3 Network
//! Protocol Specification"): "HEP3", total length (u16, big-endian),
//! then chunks of vendor id (u16), type (u16), length including the
//! 6-byte chunk header (u16), value.

use super::CallRecord;
use crate::time::Timestamp;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// HEP payload type of SIP (chunk 0x000b).
pub const PROTO_SIP: u8 = 1;
/// HEP payload type of a log / JSON report (chunk 0x000b).
pub const PROTO_LOG: u8 = 100;

/// Messages held per call, and calls held at once: a call past these
/// sends what it had (bounded memory whatever the traffic).
const MAX_MESSAGES_PER_CALL: usize = 64;
const MAX_CALLS: usize = 200_000;

/// How long after its end a call's late messages are still exported
/// (microseconds of packet time: 32 s, RFC 3261 Timer F/H).
const LINGER_US: i64 = 32_000_000;

/// One HEP packet's fields.
#[derive(Clone, Debug)]
pub struct HepPacket<'a> {
    pub ts: Timestamp,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// IP protocol number of the transport (17 UDP, 6 TCP).
    pub transport: u8,
    /// [`PROTO_SIP`] or [`PROTO_LOG`].
    pub proto: u8,
    /// Capture agent id (`hep.node_id`).
    pub node_id: u32,
    /// Correlation id (chunk 0x0011), if any.
    pub correlation: Option<&'a str>,
    pub payload: &'a [u8],
}

fn chunk(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&((value.len() + 6) as u16).to_be_bytes());
    out.extend_from_slice(value);
}

/// The HEPv3 datagram for `p`; None if it would exceed 65,535 bytes.
pub fn encode(p: &HepPacket) -> Option<Vec<u8>> {
    let mut o = Vec::with_capacity(p.payload.len() + 128);
    o.extend_from_slice(b"HEP3\0\0");
    let v6 = p.src.is_ipv6() || p.dst.is_ipv6();
    chunk(&mut o, 0x0001, &[if v6 { 10 } else { 2 }]);
    chunk(&mut o, 0x0002, &[p.transport]);
    match (p.src.ip(), p.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            chunk(&mut o, 0x0003, &s.octets());
            chunk(&mut o, 0x0004, &d.octets());
        }
        (s, d) => {
            let six = |a: IpAddr| match a {
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                IpAddr::V6(a) => a.octets(),
            };
            chunk(&mut o, 0x0005, &six(s));
            chunk(&mut o, 0x0006, &six(d));
        }
    }
    chunk(&mut o, 0x0007, &p.src.port().to_be_bytes());
    chunk(&mut o, 0x0008, &p.dst.port().to_be_bytes());
    let us = p.ts.micros();
    chunk(
        &mut o,
        0x0009,
        &(us.div_euclid(1_000_000) as u32).to_be_bytes(),
    );
    chunk(
        &mut o,
        0x000a,
        &(us.rem_euclid(1_000_000) as u32).to_be_bytes(),
    );
    chunk(&mut o, 0x000b, &[p.proto]);
    chunk(&mut o, 0x000c, &p.node_id.to_be_bytes());
    if let Some(c) = p.correlation {
        chunk(&mut o, 0x0011, c.as_bytes());
    }
    chunk(&mut o, 0x000f, p.payload);
    let len = u16::try_from(o.len()).ok()?;
    o[4..6].copy_from_slice(&len.to_be_bytes());
    Some(o)
}

/// Headers that carry the caller's identity (RFC 3325, RFC 3323 and the
/// draft Remote-Party-ID).
const IDENTITY_HEADERS: &[&str] = &[
    "p-asserted-identity",
    "p-preferred-identity",
    "remote-party-id",
];

/// The message with its identity headers' values replaced (folded
/// continuation lines of those headers dropped); the body is untouched.
pub fn mask_withheld(msg: &[u8]) -> Vec<u8> {
    let end = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 2)
        .unwrap_or(msg.len());
    let (head, body) = msg.split_at(end);
    let mut out = Vec::with_capacity(msg.len());
    let mut masking = false;
    for line in head.split_inclusive(|&b| b == b'\n') {
        if masking && matches!(line.first(), Some(b' ' | b'\t')) {
            continue;
        }
        masking = false;
        let name = line.iter().position(|&b| b == b':').map(|i| {
            String::from_utf8_lossy(&line[..i])
                .trim()
                .to_ascii_lowercase()
        });
        if name
            .as_deref()
            .is_some_and(|n| IDENTITY_HEADERS.contains(&n))
        {
            let colon = line.iter().position(|&b| b == b':').unwrap_or(0);
            out.extend_from_slice(&line[..=colon]);
            out.extend_from_slice(b" <sip:anonymous@anonymous.invalid>\r\n");
            masking = true;
        } else {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(body);
    out
}

struct Held {
    ts: Timestamp,
    src: SocketAddr,
    dst: SocketAddr,
    data: Vec<u8>,
}

/// Sends calls' SIP to a HEP collector (`[hep]`).
pub struct HepExporter {
    sock: UdpSocket,
    /// The recordings' notices, for the finisher threads (same socket).
    notifier: Option<std::sync::Arc<RecordingNotifier>>,
    collector: SocketAddr,
    all_calls: bool,
    node_id: u32,
    held: HashMap<String, Vec<Held>>,
    /// Exported calls that ended lately, until when their late messages
    /// (the 200 OK to a BYE, retransmissions) follow, and whether withheld.
    ended: HashMap<String, (Timestamp, bool)>,
    /// The latest packet time seen.
    now: Timestamp,
    /// Datagrams sent, and datagrams the socket refused.
    pub sent: u64,
    pub failed: u64,
}

impl HepExporter {
    /// From the configuration; None when `hep.collector` is not set or
    /// no socket can be had (logged: recording goes on without export).
    pub fn from_config(cfg: &crate::config::Hep) -> Option<HepExporter> {
        let collector = cfg.collector?;
        let bind: SocketAddr = if collector.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .ok()?;
        let sock = match UdpSocket::bind(bind).and_then(|s| s.set_nonblocking(true).map(|_| s)) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, %collector, "HEP export off: no UDP socket");
                return None;
            }
        };
        let notifier = sock.try_clone().ok().map(|s| {
            std::sync::Arc::new(RecordingNotifier {
                sock: s,
                collector,
                node_id: cfg.node_id,
            })
        });
        Some(HepExporter {
            notifier,
            sock,
            collector,
            all_calls: cfg.all_calls,
            node_id: cfg.node_id,
            held: HashMap::new(),
            ended: HashMap::new(),
            now: Timestamp::ZERO,
            sent: 0,
            failed: 0,
        })
    }

    /// The handle the finisher threads announce published recordings with.
    pub fn notifier(&self) -> Option<std::sync::Arc<RecordingNotifier>> {
        self.notifier.clone()
    }

    /// A SIP message as captured; held under its Call-ID until the call ends.
    pub fn observe(&mut self, ts: Timestamp, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
        let Ok(msg) = crate::sip::parse(data) else {
            return;
        };
        let Some(id) = msg.call_id() else { return };
        self.now = self.now.max(ts);
        if let Some(&(until, withheld)) = self.ended.get(id) {
            if ts <= until {
                let data = if withheld {
                    mask_withheld(data)
                } else {
                    data.to_vec()
                };
                self.send_sip(ts, src, dst, &data);
            }
            return;
        }
        if let Some(v) = self.held.get_mut(id) {
            if v.len() < MAX_MESSAGES_PER_CALL {
                v.push(Held {
                    ts,
                    src,
                    dst,
                    data: data.to_vec(),
                });
            }
        } else if self.held.len() < MAX_CALLS {
            self.held.insert(
                id.to_string(),
                vec![Held {
                    ts,
                    src,
                    dst,
                    data: data.to_vec(),
                }],
            );
        }
    }

    /// The call's history line was written: send its messages and report
    /// if it was recorded (or `all_calls`), else forget them.
    pub fn call_ended(&mut self, rec: &CallRecord) {
        let Some(msgs) = self.held.remove(&rec.call_id) else {
            return;
        };
        if rec.decision != "record" && !self.all_calls {
            return;
        }
        let withheld = rec.caller == crate::calls::policy::ANONYMOUS;
        let (mut src, mut dst) = (self.collector, self.collector);
        for m in &msgs {
            let data = if withheld {
                mask_withheld(&m.data)
            } else {
                m.data.clone()
            };
            self.send_sip(m.ts, m.src, m.dst, &data);
            (src, dst) = (m.src, m.dst);
        }
        let now = self.now;
        self.ended.retain(|_, (until, _)| *until >= now);
        if self.ended.len() < MAX_CALLS {
            self.ended
                .insert(rec.call_id.clone(), (now.add_micros(LINGER_US), withheld));
        }
        let report = serde_json::json!({
            "callrec": {
                "short_id": rec.short_id, "call_id": rec.call_id, "decision": rec.decision,
                "reason": rec.reason, "contract": rec.contract, "direction": rec.direction,
                "caller": rec.caller, "callee": rec.callee, "invite_at": rec.invite_at,
                "answered_at": rec.answered_at, "ended_at": rec.ended_at,
                "end_reason": rec.end_reason, "segments": rec.segments,
            }
        })
        .to_string();
        let ts = rec
            .ended_at
            .as_deref()
            .and_then(crate::report::parse_rfc3339)
            .map(Timestamp)
            .unwrap_or(msgs.last().map_or(Timestamp::ZERO, |m| m.ts));
        self.send(&HepPacket {
            ts,
            src,
            dst,
            transport: 17,
            proto: PROTO_LOG,
            node_id: self.node_id,
            correlation: Some(&rec.call_id),
            payload: report.as_bytes(),
        });
    }

    fn send_sip(&mut self, ts: Timestamp, src: SocketAddr, dst: SocketAddr, data: &[u8]) {
        self.send(&HepPacket {
            ts,
            src,
            dst,
            transport: 17,
            proto: PROTO_SIP,
            node_id: self.node_id,
            correlation: None,
            payload: data,
        });
    }

    fn send(&mut self, p: &HepPacket) {
        let Some(d) = encode(p) else { return };
        match self.sock.send_to(&d, self.collector) {
            Ok(_) => self.sent += 1,
            Err(e) => {
                self.failed += 1;
                if self.failed.is_power_of_two() {
                    tracing::warn!(error = %e, collector = %self.collector, failed = self.failed, "HEP export: datagram not sent");
                }
            }
        }
    }
}

/// Tells the collector the name of each recording as it is published:
/// one report (payload type 100, JSON, correlation id = Call-ID) per
/// segment and destination, so the NOC sees in Homer, beside the call's
/// SIP, which file holds it. The file name never holds a withheld number
/// (the recording's caller is "anonymous" then).
#[derive(Debug)]
pub struct RecordingNotifier {
    sock: UdpSocket,
    collector: SocketAddr,
    node_id: u32,
}

/// One published recording, as [`RecordingNotifier::published`] reports it.
pub struct Published<'a> {
    pub call_id: &'a str,
    pub short_id: &'a str,
    pub segment: u32,
    pub destination: &'a str,
    /// The audio file, relative to the destination's queue folder.
    pub file: &'a str,
    /// When the segment ended (packet time).
    pub ended: Timestamp,
}

impl RecordingNotifier {
    /// Sends the report of one published recording (non-blocking; a
    /// collector that is down loses the report, never the recording).
    pub fn published(&self, p: &Published) {
        let report = serde_json::json!({
            "callrec": {
                "event": "recording", "short_id": p.short_id, "call_id": p.call_id,
                "segment": p.segment, "destination": p.destination, "file": p.file,
            }
        })
        .to_string();
        let any: SocketAddr = if self.collector.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .unwrap_or(self.collector);
        let pkt = HepPacket {
            ts: p.ended,
            src: any,
            dst: any,
            transport: 17,
            proto: PROTO_LOG,
            node_id: self.node_id,
            correlation: Some(p.call_id),
            payload: report.as_bytes(),
        };
        if let Some(d) = encode(&pkt) {
            let _ = self.sock.send_to(&d, self.collector);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_and_lengths() {
        let p = HepPacket {
            ts: Timestamp::from_secs_micros(1_795_221_000, 250_000),
            src: "192.0.2.1:5060".parse().unwrap(),
            dst: "198.51.100.2:5062".parse().unwrap(),
            transport: 17,
            proto: PROTO_SIP,
            node_id: 2001,
            correlation: Some("abc"),
            payload: b"OPTIONS sip:x SIP/2.0\r\n\r\n",
        };
        let d = encode(&p).unwrap();
        assert_eq!(&d[..4], b"HEP3");
        assert_eq!(u16::from_be_bytes([d[4], d[5]]) as usize, d.len());
        // Walk the chunks: every length adds up, the payload is the last.
        let mut i = 6;
        let mut kinds = Vec::new();
        while i < d.len() {
            let kind = u16::from_be_bytes([d[i + 2], d[i + 3]]);
            let len = u16::from_be_bytes([d[i + 4], d[i + 5]]) as usize;
            kinds.push(kind);
            if kind == 0x000f {
                assert_eq!(&d[i + 6..i + len], p.payload);
            }
            if kind == 0x000a {
                assert_eq!(&d[i + 6..i + len], &250_000u32.to_be_bytes());
            }
            i += len;
        }
        assert_eq!(i, d.len());
        assert_eq!(kinds, [1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 0x11, 0x0f]);
    }

    #[test]
    fn withheld_identity_is_masked() {
        let m = b"INVITE sip:0612340002@192.0.2.2 SIP/2.0\r\nFrom: <sip:anonymous@anonymous.invalid>;tag=1\r\nP-Asserted-Identity: <sip:0398765432@192.0.2.1>\r\n\t;x=0398765432\r\nprivacy: id\r\nremote-party-id: \"Bob\" <sip:0398765432@192.0.2.1>\r\nContent-Length: 4\r\n\r\nv=0\n";
        let out = String::from_utf8(mask_withheld(m)).unwrap();
        assert!(!out.contains("0398765432"), "{out}");
        assert!(
            out.contains(
                "P-Asserted-Identity: <sip:anonymous@anonymous.invalid>\r\nprivacy: id\r\n"
            ),
            "{out}"
        );
        assert!(out.ends_with("Content-Length: 4\r\n\r\nv=0\n"), "{out}");
    }
}
