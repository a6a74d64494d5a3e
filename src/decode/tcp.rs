//! TCP stream reassembly for SIP, and framing of the stream into messages.
//!
//! Only streams that carry SIP are followed: those on a configured SIP port
//! and those whose first payload starts with a SIP start line. Each
//! direction is its own stream. Segments are put in sequence order
//! (retransmissions and overlaps trimmed, early segments held), and the
//! in-order bytes are cut into messages at the blank line after the
//! headers plus Content-Length (RFC 3261 18.3).
//!
//! A message longer than `Limits.sip_message_bytes` is skipped whole (its
//! Content-Length says where the next one starts) and counted in
//! `DecodeStats::sip_oversized`.
//!
//! Memory is bounded three ways: `Limits.tcp_stream_bytes` per stream
//! (a stream that exceeds it, or whose buffer does not start with a SIP
//! start line, is reset and resynchronised on the next start line),
//! `Limits.tcp_streams` streams (oldest evicted) and an idle timeout.
//! Hand-written because etherparse parses headers but keeps no stream state.

use super::{DecodeStats, Payload, Transport};
use crate::time::Timestamp;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

/// Longest start line we wait for before calling the buffer garbage.
const MAX_START_LINE: usize = 2048;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct StreamKey {
    src: SocketAddr,
    dst: SocketAddr,
}

struct Stream {
    /// Sequence number of the next in-order byte.
    next_seq: u32,
    /// In-order bytes not yet framed into a message.
    buf: Vec<u8>,
    /// Segments that arrived ahead of `next_seq`: (sequence, bytes).
    early: Vec<(u32, Vec<u8>)>,
    early_bytes: usize,
    /// In-order bytes still to drop: the rest of an oversized message.
    discard: usize,
    last_seen: Timestamp,
    generation: u64,
}

/// One TCP segment as the decoder hands it over.
pub struct Segment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub payload: &'a [u8],
    pub ts: Timestamp,
    pub packet_index: u64,
}

pub struct TcpReassembler {
    streams: HashMap<StreamKey, Stream>,
    order: VecDeque<(StreamKey, u64)>,
    next_generation: u64,
    sip_ports: Vec<u16>,
    max_stream_bytes: usize,
    /// Largest SIP message handed out (`Limits.sip_message_bytes`).
    max_message: usize,
    max_streams: usize,
    idle_us: i64,
}

/// What the front of a stream buffer holds.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// A whole message of this many bytes.
    Message(usize),
    /// A message of this many bytes (header and body), over the size
    /// limit: skipped whole.
    Oversized(usize),
    /// A header block already over the size limit without its end: drop
    /// this many bytes to reach the next start line.
    OversizedHead(usize),
    /// Keep-alive CR/LF bytes to drop (RFC 5626 3.5.1).
    Skip(usize),
    /// Not a SIP start line: drop this many bytes to reach the next one.
    Garbage(usize),
    NeedMore,
}

impl TcpReassembler {
    pub fn new(limits: &crate::config::Limits, sip_ports: &[u16]) -> Self {
        TcpReassembler {
            streams: HashMap::new(),
            order: VecDeque::new(),
            next_generation: 0,
            sip_ports: sip_ports.to_vec(),
            max_stream_bytes: limits.tcp_stream_bytes.max(1),
            max_message: limits.sip_message_bytes.max(1),
            max_streams: limits.tcp_streams.max(1),
            idle_us: limits.tcp_idle_timeout.as_micros().min(i64::MAX as u128) as i64,
        }
    }

    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Bytes buffered in all streams (in order and early).
    pub fn bytes_held(&self) -> usize {
        self.streams
            .values()
            .map(|s| s.buf.len() + s.early_bytes)
            .sum()
    }

    pub fn segment(
        &mut self,
        seg: &Segment<'_>,
        stats: &mut DecodeStats,
        out: &mut dyn FnMut(Payload<'_>),
    ) {
        stats.tcp_segments += 1;
        let key = StreamKey {
            src: seg.src,
            dst: seg.dst,
        };
        if seg.rst {
            self.streams.remove(&key);
            return;
        }
        let data_seq = if seg.syn {
            seg.seq.wrapping_add(1)
        } else {
            seg.seq
        };
        if !self.streams.contains_key(&key) {
            let on_port = self.sip_ports.contains(&seg.src.port())
                || self.sip_ports.contains(&seg.dst.port());
            let follow = if seg.payload.is_empty() {
                seg.syn && on_port
            } else {
                on_port || crate::sip::looks_like_sip(seg.payload)
            };
            if !follow || seg.fin && seg.payload.is_empty() {
                return;
            }
            self.insert(key, data_seq, seg.ts, stats);
        }
        let max = self.max_stream_bytes;
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        stream.last_seen = seg.ts;
        if seg.syn {
            stream.next_seq = data_seq;
            stream.buf.clear();
            stream.early.clear();
            stream.early_bytes = 0;
        }
        stream.accept(data_seq, seg.payload, max, stats);
        stream.frame(&key, seg, max.min(self.max_message), stats, out);
        if seg.fin {
            self.streams.remove(&key);
        }
    }

    fn insert(&mut self, key: StreamKey, next_seq: u32, ts: Timestamp, stats: &mut DecodeStats) {
        while self.streams.len() >= self.max_streams {
            match self.order.pop_front() {
                Some((k, g)) => {
                    if self.streams.get(&k).is_some_and(|s| s.generation == g) {
                        self.streams.remove(&k);
                        stats.tcp_evicted += 1;
                    }
                }
                None => break,
            }
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.order.push_back((key, generation));
        if self.order.len() > 2 * self.max_streams.min(self.streams.len() + 1) + 64 {
            let streams = &self.streams;
            self.order.retain(|(k, g)| {
                (*k == key && *g == generation)
                    || streams.get(k).is_some_and(|s| s.generation == *g)
            });
        }
        self.streams.insert(
            key,
            Stream {
                next_seq,
                buf: Vec::new(),
                early: Vec::new(),
                early_bytes: 0,
                discard: 0,
                last_seen: ts,
                generation,
            },
        );
    }

    /// Forgets streams idle for longer than the idle timeout.
    pub fn expire(&mut self, now: Timestamp) {
        let idle = self.idle_us;
        self.streams.retain(|_, s| now.since(s.last_seen) <= idle);
        let streams = &self.streams;
        self.order
            .retain(|(k, g)| streams.get(k).is_some_and(|s| s.generation == *g));
    }
}

impl Stream {
    fn reset(&mut self, stats: &mut DecodeStats) {
        self.buf.clear();
        self.early.clear();
        self.early_bytes = 0;
        self.discard = 0;
        stats.tcp_resets += 1;
    }

    /// Puts a segment's bytes in sequence order.
    fn accept(&mut self, seq: u32, data: &[u8], max: usize, stats: &mut DecodeStats) {
        if data.is_empty() {
            return;
        }
        let rel = seq.wrapping_sub(self.next_seq) as i32;
        if rel > 0 {
            // Ahead of what we have: hold it until the gap fills.
            stats.tcp_out_of_order += 1;
            if self.buf.len() + self.early_bytes + data.len() > max {
                self.reset(stats);
                // The gap will never fill now: continue from this segment.
                self.next_seq = seq;
                self.append(data, max, stats);
            } else {
                self.early_bytes += data.len();
                self.early.push((seq, data.to_vec()));
            }
            return;
        }
        let skip = rel.unsigned_abs() as usize;
        if skip >= data.len() {
            stats.tcp_retransmissions += 1;
            return;
        }
        if skip > 0 {
            stats.tcp_retransmissions += 1;
        }
        self.append(&data[skip..], max, stats);
        // Early segments the new bytes reached now follow in order.
        loop {
            let next = self.next_seq;
            let Some(i) = self
                .early
                .iter()
                .position(|(s, _)| s.wrapping_sub(next) as i32 <= 0)
            else {
                break;
            };
            let (s, bytes) = self.early.swap_remove(i);
            self.early_bytes -= bytes.len();
            let skip = next.wrapping_sub(s) as usize;
            if skip < bytes.len() {
                self.append(&bytes[skip..], max, stats);
            }
        }
    }

    fn append(&mut self, data: &[u8], max: usize, stats: &mut DecodeStats) {
        self.next_seq = self.next_seq.wrapping_add(data.len() as u32);
        // The rest of an oversized message goes before anything is kept.
        let skip = self.discard.min(data.len());
        self.discard -= skip;
        let data = &data[skip..];
        if self.buf.len() + data.len() > max {
            // Endless message or a flood: start over from these bytes and
            // let framing resynchronise on the next start line.
            self.reset(stats);
            if data.len() > max {
                return;
            }
        }
        self.buf.extend_from_slice(data);
    }

    /// Cuts every whole message off the front of the buffer; `max` is the
    /// largest message handed out.
    fn frame(
        &mut self,
        key: &StreamKey,
        seg: &Segment<'_>,
        max: usize,
        stats: &mut DecodeStats,
        out: &mut dyn FnMut(Payload<'_>),
    ) {
        let mut start = 0;
        loop {
            match next_frame(&self.buf[start..], max) {
                Frame::Message(n) => {
                    stats.tcp_messages += 1;
                    out(Payload {
                        ts: seg.ts,
                        packet_index: seg.packet_index,
                        transport: Transport::Tcp,
                        src: key.src,
                        dst: key.dst,
                        data: &self.buf[start..start + n],
                        l2: None,
                    });
                    start += n;
                }
                Frame::Skip(n) => start += n,
                Frame::Oversized(n) => {
                    stats.sip_oversized += 1;
                    tracing::debug!(src = %key.src, bytes = n, "SIP message over limits.sip_message_bytes skipped");
                    let have = self.buf.len() - start;
                    if n <= have {
                        start += n;
                    } else {
                        self.discard = n - have;
                        start = self.buf.len();
                    }
                }
                Frame::OversizedHead(n) => {
                    stats.sip_oversized += 1;
                    tracing::debug!(src = %key.src, "SIP header block over limits.sip_message_bytes skipped");
                    start += n;
                }
                Frame::Garbage(n) => {
                    stats.tcp_resets += 1;
                    start += n;
                }
                Frame::NeedMore => break,
            }
        }
        self.buf.drain(..start);
    }
}

/// Decides what the front of `buf` is.
fn next_frame(buf: &[u8], max: usize) -> Frame {
    let crlf = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if crlf > 0 {
        return Frame::Skip(crlf);
    }
    if buf.is_empty() {
        return Frame::NeedMore;
    }
    let Some(eol) = buf.iter().take(MAX_START_LINE).position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_START_LINE {
            Frame::Garbage(resync(buf))
        } else {
            Frame::NeedMore
        };
    };
    if !crate::sip::looks_like_sip(&buf[..eol + 1]) {
        return Frame::Garbage(resync(buf));
    }
    let Some((head_end, content_length)) = head(buf) else {
        // A header block longer than any message we take: skip to the
        // next start line.
        return if buf.len() > max {
            Frame::OversizedHead(resync(buf))
        } else {
            Frame::NeedMore
        };
    };
    let Some(total) = content_length.and_then(|cl| head_end.checked_add(cl)) else {
        // An unreadable Content-Length: the message boundary is unknown.
        return Frame::Garbage(resync(buf));
    };
    if total > max {
        return Frame::Oversized(total);
    }
    if buf.len() >= total {
        Frame::Message(total)
    } else {
        Frame::NeedMore
    }
}

/// Finds the end of the header block (just past the blank line) and the
/// Content-Length (full or compact `l:` form; absent means 0, `None` in
/// the inner option means present but unreadable).
fn head(buf: &[u8]) -> Option<(usize, Option<usize>)> {
    let mut content_length = Some(0);
    let mut line_start = 0;
    while let Some(rel) = buf[line_start..].iter().position(|&b| b == b'\n') {
        let line_end = line_start + rel;
        let mut line = &buf[line_start..line_end];
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        if line.is_empty() {
            return Some((line_end + 1, content_length));
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = line[..colon].trim_ascii();
            if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
                content_length = std::str::from_utf8(line[colon + 1..].trim_ascii())
                    .ok()
                    .and_then(|v| v.parse::<usize>().ok());
            }
        }
        line_start = line_end + 1;
    }
    None
}

/// Offset of the next line that is a SIP start line, or of the trailing
/// incomplete line (it may become one), or the whole buffer.
fn resync(buf: &[u8]) -> usize {
    let mut pos = 0;
    while let Some(rel) = buf[pos..].iter().position(|&b| b == b'\n') {
        let line_start = pos + rel + 1;
        let rest = &buf[line_start..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(eol) if crate::sip::looks_like_sip(&rest[..eol + 1]) => return line_start,
            Some(_) => pos = line_start,
            None if rest.len() < MAX_START_LINE => return line_start,
            None => return buf.len(),
        }
    }
    buf.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] =
        b"INVITE sip:b@198.51.100.2 SIP/2.0\r\nCall-ID: x\r\nContent-Length: 4\r\n\r\nv=0\n";
    const OK: &[u8] = b"SIP/2.0 200 OK\r\nl: 0\r\n\r\n";

    #[test]
    fn frames_by_content_length_and_compact_form() {
        assert_eq!(next_frame(INVITE, 1 << 16), Frame::Message(INVITE.len()));
        assert_eq!(next_frame(OK, 1 << 16), Frame::Message(OK.len()));
        assert_eq!(
            next_frame(&INVITE[..INVITE.len() - 1], 1 << 16),
            Frame::NeedMore
        );
        assert_eq!(next_frame(b"\r\n\r\nSIP", 1 << 16), Frame::Skip(4));
    }

    #[test]
    fn garbage_resyncs_to_next_start_line() {
        let mut buf = b"xx garbage\r\nmore\r\n".to_vec();
        buf.extend_from_slice(OK);
        assert_eq!(next_frame(&buf, 1 << 16), Frame::Garbage(18));
        assert_eq!(next_frame(&buf[18..], 1 << 16), Frame::Message(OK.len()));
    }

    #[test]
    fn oversized_message_is_skipped_whole() {
        let big = b"MESSAGE sip:a@192.0.2.1 SIP/2.0\r\nContent-Length: 999999\r\n\r\n";
        assert_eq!(next_frame(big, 1000), Frame::Oversized(big.len() + 999_999));
        // Headers longer than the limit without their end: garbage.
        let mut long = b"INVITE sip:a@192.0.2.1 SIP/2.0\r\n".to_vec();
        long.extend(b"X-Pad: aaaaaaaaaaaaaaaa\r\n".repeat(100));
        assert!(matches!(next_frame(&long, 1000), Frame::OversizedHead(_)));
    }

    #[test]
    fn a_message_over_the_limit_is_skipped_and_the_next_one_framed() {
        let limits = crate::config::Limits {
            sip_message_bytes: 1024,
            ..Default::default()
        };
        let mut r = TcpReassembler::new(&limits, &[5060]);
        let mut stats = DecodeStats::default();
        let body = "v".repeat(3000);
        let mut stream = format!(
            "INVITE sip:b@198.51.100.2 SIP/2.0\r\nCall-ID: big\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        stream.extend_from_slice(INVITE);
        let mut got = Vec::new();
        for (i, chunk) in stream.chunks(700).enumerate() {
            let seg = Segment {
                src: "192.0.2.1:5060".parse().unwrap(),
                dst: "198.51.100.2:5060".parse().unwrap(),
                seq: 1 + 700 * i as u32,
                syn: false,
                fin: false,
                rst: false,
                payload: chunk,
                ts: crate::time::Timestamp(0),
                packet_index: i as u64,
            };
            r.segment(&seg, &mut stats, &mut |p| got.push(p.data.to_vec()));
        }
        assert_eq!(got, vec![INVITE.to_vec()]);
        assert_eq!(stats.sip_oversized, 1);
    }
}
