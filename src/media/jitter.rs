//! Per-leg jitter buffer: places each RTP packet's samples on the
//! recording's timeline (8 or 16 kHz) and hands them out in order.
//!
//! G.711 into an 8 kHz recording is decoded by table straight into the
//! ring (the fast path). Every other codec, and G.711 into a 16 kHz
//! recording, goes through the leg's [`LegDecoder`] (libavcodec, then
//! libswresample to the recording's rate) and is copied into place. RTP
//! timestamps are scaled from each payload type's clock (G.722 8000,
//! AMR-WB 16000, Opus 48000) to the timeline's rate; a payload type with
//! another clock than the stream's (a codec change without a new SSRC)
//! re-anchors the stream at its capture time, so the timeline holds.
//!
//! The buffer is a ring of [`RING`] samples covering the timeline positions
//! `read_pos .. read_pos + RING`; a packet is decoded straight into its
//! slot, so reordering within the window is repaired for free, a lost
//! packet leaves silence (the ring is zeroed as it is read), and a packet
//! whose slot was already read out is counted late. Memory is fixed
//! (8 KiB of samples plus a few words) whatever arrives.
//!
//! Where a packet goes: `pos = anchor_pos + (ext_ts - anchor_ts)`. The
//! anchor pairs a capture-time position with an RTP timestamp; it is set by
//! the first packet of each SSRC (or sequence restart) and reset whenever a
//! new packet's timestamp disagrees with its capture time by more than a
//! jitter buffer could explain (a 2^31 jump, a sender restart), or would
//! otherwise be played out before it arrived. So neither an SSRC change nor
//! a timestamp jump shifts the leg in time. A sender whose RTP clock drifts
//! from capture time is re-anchored the same way, but never backwards onto
//! audio it already placed: running slow costs a short silence when the
//! drift reaches the playout delay; running fast is taken up in the next
//! silence (and trimmed only when the window is full).

use crate::media::codec::{Codec, Format, Law, decode_law_into};
use crate::media::codecs::{DecodeError, LegDecoder};
use crate::media::quality::QualityTracker;
use crate::media::rtp::RtpPacket;
use crate::prefetch;
use crate::time::Timestamp;

#[path = "jitter_comfort.rs"]
mod comfort;

/// Samples held per leg at 8 kHz (512 ms); a power of two. The sample
/// counts below are at 8 kHz too and scale with the recording's rate.
pub const RING: usize = 4096;
/// How long the recorder waits for stragglers before a sample is final.
pub const PLAYOUT_DELAY: i64 = 1600;
/// A new packet more than this far ahead of its capture time means the
/// timestamps jumped (150 ms: a delayed first packet is tolerated up to it).
pub const MAX_AHEAD: i64 = 1200;
/// A new packet more than this far behind its capture time: jumped back.
pub const MAX_BEHIND: i64 = 8000;
/// Largest audio payload accepted (120 ms); more cannot fit the window.
pub const MAX_PAYLOAD: usize = 960;
/// Samples asked for ahead of a push or a playout (one 20 ms packet).
const MAX_PREFETCH: usize = 160;
/// A sequence step larger than this is a sender restart, not loss.
const MAX_SEQ_JUMP: i64 = 1000;
/// Sequence numbers remembered for duplicate detection.
const SEQ_WINDOW: i64 = 128;

/// Samples per microsecond at 8 kHz is 1/125.
#[inline]
pub fn sample_index(start: Timestamp, t: Timestamp) -> i64 {
    t.since(start).div_euclid(125)
}

/// [`sample_index`] on a timeline of `k` × 8000 samples a second.
#[inline]
pub fn sample_index_k(start: Timestamp, t: Timestamp, k: i64) -> i64 {
    (t.since(start) * k).div_euclid(125)
}

/// What became of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed {
    /// Decoded into the timeline at `pos` (`samples` long).
    Audio {
        pos: i64,
        samples: usize,
    },
    /// Comfort noise (synthesised, not counted as decoded audio) or an
    /// empty payload.
    Silence,
    /// RFC 4733 event: taken out of the audio. (Keys are read on the
    /// capture thread: see [`crate::media::pause`].)
    Event,
    Duplicate,
    /// Its place in the timeline was already played out.
    Late,
    /// Payload type not mapped: counted, silence.
    UnknownPt,
    /// A codec callrec cannot decode, or a frame its decoder refused:
    /// counted, silence.
    Undecodable,
    /// Captured before the recording start (announcement time): ignored.
    BeforeStart,
    /// Audio payload larger than [`MAX_PAYLOAD`]: counted as malformed.
    Oversized,
}

#[derive(Clone, Copy, Debug)]
struct Stream {
    ssrc: u32,
    max_seq: i64,
    /// Bit k set: sequence `max_seq - k` was received.
    seen: u128,
    max_ts: i64,
    anchor_pos: i64,
    anchor_ts: i64,
    /// Timeline end of the newest packet's payload.
    end: i64,
    /// RTP clock of the stream's payload type (Hz).
    clock: u32,
}

pub struct JitterBuffer {
    ring: Box<[i16]>,
    mask: i64,
    /// Timeline samples per 8 kHz sample: 1 (8 kHz) or 2 (16 kHz).
    k: i64,
    read_pos: i64,
    start: Timestamp,
    /// Payload type → 1 + index into `formats` (0: not mapped). Bytes, so
    /// the per-call state stays small enough to stay in cache.
    pt_map: [u8; 128],
    formats: Vec<Format>,
    /// Payload types the SDP bound to codecs callrec cannot decode.
    unsupported: Vec<(u8, String)>,
    /// Opened on the first packet that needs it.
    decoder: Option<Box<LegDecoder>>,
    stream: Option<Stream>,
    /// Timeline span covered by the current telephone event: kept silent.
    event_span: (i64, i64),
    /// Where the open comfort noise period's noise is still to be
    /// synthesised from: after a SID or RFC 3389 packet, what the sender
    /// leaves out (DTX) up to its next audio packet is noise.
    comfort: Option<i64>,
    /// The last payload decoded was (or ended in) comfort noise.
    last_comfort: bool,
    pub quality: QualityTracker,
    /// The last audio codec decoded, and the name of an unsupported one
    /// that arrived (for `codec-unsupported:NAME`).
    pub codec: Option<Codec>,
    pub unsupported_seen: Option<String>,
}

impl JitterBuffer {
    /// A leg whose timeline position 0 is `start`. The payload map starts
    /// with the static types (0 PCMU, 8 PCMA, 13 CN) and `telephone_event`.
    pub fn new(start: Timestamp, telephone_event: Option<u8>) -> Self {
        Self::with_rate(start, telephone_event, 8000)
    }

    /// A leg on a timeline of `rate` Hz (8000 or 16000).
    pub fn with_rate(start: Timestamp, telephone_event: Option<u8>, rate: u32) -> Self {
        let k = if rate >= 16000 { 2 } else { 1 };
        let mut jb_formats = Vec::new();
        let mut pt_map = [0u8; 128];
        for pt in 0..128u8 {
            if let Some(c) = Codec::from_static_pt(pt) {
                pt_map[pt as usize] = intern(&mut jb_formats, Format::of(c));
            }
        }
        if let Some(pt) = telephone_event {
            pt_map[(pt & 0x7f) as usize] =
                intern(&mut jb_formats, Format::of(Codec::TelephoneEvent));
        }
        JitterBuffer {
            ring: vec![0; RING * k as usize].into_boxed_slice(),
            mask: RING as i64 * k - 1,
            k,
            read_pos: 0,
            start,
            pt_map,
            formats: jb_formats,
            unsupported: Vec::new(),
            decoder: None,
            stream: None,
            event_span: (0, 0),
            comfort: None,
            last_comfort: false,
            quality: QualityTracker::default(),
            codec: None,
            unsupported_seen: None,
        }
    }

    /// The timeline's rate, Hz.
    pub fn rate(&self) -> u32 {
        8000 * self.k as u32
    }

    /// Adds or replaces payload-type meanings (codecs with RFC 3551 defaults).
    pub fn set_payload_map(&mut self, map: &[(u8, Codec)]) {
        for &(pt, c) in map {
            self.pt_map[(pt & 0x7f) as usize] = intern(&mut self.formats, Format::of(c));
        }
    }

    /// Adds or replaces payload-type meanings from SDP (rtpmap, fmtp), and
    /// names the types bound to codecs callrec cannot decode.
    pub fn set_formats(&mut self, map: &[(u8, Format)], unsupported: &[(u8, String)]) {
        for &(pt, f) in map {
            self.pt_map[(pt & 0x7f) as usize] = intern(&mut self.formats, f);
        }
        for (pt, name) in unsupported {
            self.pt_map[(pt & 0x7f) as usize] = 0;
            self.unsupported.retain(|(p, _)| p != pt);
            self.unsupported.push((*pt, name.clone()));
        }
    }

    /// Asks for what [`JitterBuffer::push`] of a packet captured at
    /// timeline position `cap_pos` will touch: the ring where its audio
    /// lands (a sender in step with capture time puts it there).
    pub fn prefetch_push(&self, cap_pos: i64) {
        let a = (cap_pos & self.mask) as usize;
        let len = self.ring.len();
        prefetch::range(self.ring[a..].as_ptr(), (len - a).min(MAX_PREFETCH) * 2);
    }

    /// Asks for the next `n` samples to be played out.
    pub fn prefetch_playout(&self, n: usize) {
        let a = (self.read_pos & self.mask) as usize;
        let len = self.ring.len();
        prefetch::range(
            self.ring[a..].as_ptr(),
            (len - a).min(n).min(MAX_PREFETCH) * 2,
        );
    }

    /// Copies the window's samples at timeline positions `from..to`
    /// (clipped to the window) to the same ring places of `dst`: the live
    /// daemon keeps such a copy in a file mapping, so a killed process
    /// leaves its jitter window behind ([`crate::recording::tail`]).
    /// `dst` must be as long as this buffer's ring ([`RING`] samples at
    /// 8 kHz, twice that at 16 kHz); nothing is copied otherwise.
    pub fn mirror_into(&self, from: i64, to: i64, dst: &mut [i16]) {
        let len = self.ring.len();
        if dst.len() != len {
            return;
        }
        let from = from.max(self.read_pos);
        let to = to.min(self.read_pos + len as i64);
        let mut p = from;
        while p < to {
            let a = (p & self.mask) as usize;
            let n = ((to - p) as usize).min(len - a);
            dst[a..a + n].copy_from_slice(&self.ring[a..a + n]);
            p += n as i64;
        }
    }

    /// Timeline span of the current telephone event (kept silent).
    pub fn event_span(&self) -> (i64, i64) {
        self.event_span
    }

    /// Timeline position of the next sample [`JitterBuffer::pop`] returns.
    pub fn read_pos(&self) -> i64 {
        self.read_pos
    }

    pub fn start(&self) -> Timestamp {
        self.start
    }

    /// Places one packet captured at `now`.
    pub fn push(&mut self, now: Timestamp, pkt: &RtpPacket<'_>) -> Placed {
        let cap_pos = sample_index_k(self.start, now, self.k);
        if cap_pos < 0 {
            return Placed::BeforeStart;
        }
        let fmt = match self.pt_map[pkt.pt as usize] {
            0 => None,
            i => self.formats.get(i as usize - 1).copied(),
        };
        let (pos, new) = match self.sequence(cap_pos, pkt, fmt) {
            Ok(v) => v,
            Err(p) => return p,
        };
        self.quality.on_packet(
            self.stream.map_or(0, |s| s.max_seq),
            now.micros(),
            pos / self.k,
        );
        if !new && self.stream.is_some_and(|s| pos >= s.end) {
            // An older packet placed after the newest one: a straggler from
            // before a timestamp jump, whose old timeline is gone.
            self.quality.late += 1;
            return Placed::Late;
        }
        let Some(fmt) = fmt else {
            return self.unmapped(pkt.pt);
        };
        self.last_comfort = false;
        if new && fmt.codec.is_audio() {
            self.end_comfort(pos);
        }
        let placed = match fmt.codec {
            Codec::Pcmu if self.k == 1 => self.audio(pos, pkt.payload, Law::Ulaw),
            Codec::Pcma if self.k == 1 => self.audio(pos, pkt.payload, Law::Alaw),
            Codec::ComfortNoise => return self.comfort_packet(pos, new, pkt.pt, fmt, pkt.payload),
            Codec::TelephoneEvent => {
                self.event(pos, pkt.payload);
                Placed::Event
            }
            _ => self.decoded(pos, pkt.pt, fmt, pkt.payload),
        };
        if let Placed::Audio { pos, samples } = placed
            && new
            && self.last_comfort
        {
            // A payload ending in a SID: what is not sent next is noise.
            self.comfort = Some(pos + samples as i64);
        }
        if let Placed::Audio { samples, .. } = placed {
            self.codec = Some(fmt.codec);
            if new && let Some(s) = self.stream.as_mut() {
                s.end = s.end.max(pos + samples as i64);
            }
        }
        placed
    }

    fn unmapped(&mut self, pt: u8) -> Placed {
        if let Some((_, name)) = self.unsupported.iter().find(|(p, _)| *p == pt) {
            self.quality.undecodable += 1;
            if self.unsupported_seen.is_none() {
                self.unsupported_seen = Some(name.clone());
            }
            return Placed::Undecodable;
        }
        self.quality.unknown_pt += 1;
        Placed::UnknownPt
    }

    /// RFC 4733: the event's span (its duration, in RTP units) stays silent.
    fn event(&mut self, pos: i64, payload: &[u8]) {
        if let [_, _, d0, d1, ..] = *payload {
            let dur = scale_ts(u16::from_be_bytes([d0, d1]) as i64, self.clock(), self.k);
            let end = pos + dur.max(1);
            self.event_span = if self.event_span.0 == pos {
                (pos, end.max(self.event_span.1))
            } else {
                (pos, end)
            };
            self.silence(pos, end);
        }
    }

    fn clock(&self) -> u32 {
        self.stream.map_or(8000, |s| s.clock)
    }

    /// Any codec but table G.711: decoded by the leg's decoder, copied in.
    fn decoded(&mut self, pos: i64, pt: u8, fmt: Format, payload: &[u8]) -> Placed {
        if payload.is_empty() {
            return Placed::Silence;
        }
        let rate = self.rate();
        let mut dec = self
            .decoder
            .take()
            .unwrap_or_else(|| Box::new(LegDecoder::new(rate)));
        let placed = match dec.decode(pt, fmt, payload).map(<[i16]>::len) {
            Ok(n) if n > MAX_PAYLOAD * self.k as usize => {
                self.quality.malformed += 1;
                Placed::Oversized
            }
            Ok(n) => {
                self.place(pos, dec.last());
                self.last_comfort = dec.in_comfort_noise();
                self.quality.decoded += 1;
                Placed::Audio { pos, samples: n }
            }
            Err(e) => {
                if matches!(e, DecodeError::Unsupported(_) | DecodeError::Open(_)) {
                    self.unsupported_seen
                        .get_or_insert_with(|| fmt.codec.name().to_owned());
                }
                tracing::debug!(codec = fmt.codec.name(), error = %e, "payload not decoded");
                self.quality.undecodable += 1;
                if e == DecodeError::Oversized {
                    Placed::Oversized
                } else {
                    Placed::Undecodable
                }
            }
        };
        self.decoder = Some(dec);
        placed
    }

    /// Copies decoded samples to `pos`, clipped to the window.
    fn place(&mut self, pos: i64, samples: &[i16]) {
        let end = pos + samples.len() as i64;
        if end <= self.read_pos {
            self.quality.late += 1;
            return;
        }
        let from = pos.max(self.read_pos);
        let to = end.min(self.read_pos + self.ring.len() as i64);
        for p in from..to {
            self.ring[(p & self.mask) as usize] = samples[(p - pos) as usize];
        }
        if from > pos {
            self.quality.late += 1;
        }
        let (ef, et) = self.event_span;
        if ef < to && from < et {
            self.silence(ef.max(from), et.min(to));
        }
    }

    /// Sequence and timestamp bookkeeping: the packet's timeline position
    /// and whether it is the newest of its stream so far.
    fn sequence(
        &mut self,
        cap_pos: i64,
        pkt: &RtpPacket<'_>,
        fmt: Option<Format>,
    ) -> Result<(i64, bool), Placed> {
        let clock = fmt.map_or(8000, |f| f.clock);
        // G.711 at 8 kHz: one sample per byte; others learn their length
        // when decoded.
        let g711_len = match fmt.map(|f| f.codec) {
            Some(Codec::Pcmu | Codec::Pcma) => pkt.payload.len() as i64 * self.k,
            _ => 0,
        };
        let restart = match &self.stream {
            None => true,
            Some(s) if s.ssrc != pkt.ssrc => true,
            // A codec of another clock on the same SSRC: its timestamps
            // cannot be compared with the old ones.
            Some(s) if s.clock != clock && fmt.is_some_and(|f| f.codec.is_audio()) => true,
            Some(s) => (pkt.seq.wrapping_sub(s.max_seq as u16) as i16 as i64).abs() > MAX_SEQ_JUMP,
        };
        if restart {
            // Extended sequence numbers start high enough never to go
            // negative through reordering.
            let seq = 1 << 20 | pkt.seq as i64;
            let ts = 1 << 40 | pkt.ts as i64;
            self.stream = Some(Stream {
                ssrc: pkt.ssrc,
                max_seq: seq,
                seen: 1,
                max_ts: ts,
                anchor_pos: cap_pos,
                anchor_ts: ts,
                end: cap_pos + g711_len,
                clock,
            });
            self.quality.new_stream(seq);
            return Ok((cap_pos, true));
        }
        let (read_pos, k) = (self.read_pos, self.k);
        let scaled = |s: &Stream, ts: i64| s.anchor_pos + scale_ts(ts - s.anchor_ts, s.clock, k);
        let Some(s) = self.stream.as_mut() else {
            return Ok((cap_pos, true));
        };
        let delta = pkt.seq.wrapping_sub(s.max_seq as u16) as i16 as i64;
        let ts = s.max_ts + pkt.ts.wrapping_sub(s.max_ts as u32) as i32 as i64;
        if delta > 0 {
            s.seen = if delta >= 128 { 1 } else { s.seen << delta | 1 };
            s.max_seq += delta;
            s.max_ts = ts;
            let mut pos = scaled(s, ts);
            // The newest packet would be (partly) late: its stream's RTP
            // clock fell behind capture time by the whole playout delay. A
            // sender whose clock runs slow does that steadily, and waiting
            // for MAX_BEHIND dropped every packet in between as late (148
            // of 206 on isa_inbound_call.pcap, a sender 16% slow).
            let behind_playout = pos < read_pos;
            if pos - cap_pos > MAX_AHEAD * k || cap_pos - pos > MAX_BEHIND * k || behind_playout {
                // Back to capture time; but when moving back, never onto
                // samples this stream placed and the window still holds:
                // a sender whose clock runs fast gets ahead by the drift
                // mid-talkspurt, and jumping back there overwrote speech
                // (seen on heplify_rtp_rtcp_sip_ipv4_udp.pcap, 1.2% fast).
                // The drift is then taken up at the next silence, or as far
                // as the window forces.
                let target = if pos > cap_pos {
                    let window_end = read_pos + (RING as i64 - MAX_PAYLOAD as i64) * k;
                    cap_pos.max(s.end.min(window_end))
                } else {
                    cap_pos
                };
                if target != pos {
                    s.anchor_pos = target;
                    s.anchor_ts = ts;
                    pos = target;
                    self.quality.reset_transit();
                }
            }
            s.end = pos + g711_len;
            return Ok((pos, true));
        }
        let k = -delta;
        if k >= SEQ_WINDOW {
            // Received (so counted) but far too late to place.
            self.quality.packets += 1;
            self.quality.late += 1;
            return Err(Placed::Late);
        }
        if s.seen >> k & 1 == 1 {
            self.quality.duplicates += 1;
            return Err(Placed::Duplicate);
        }
        s.seen |= 1 << k;
        Ok((scaled(s, ts), false))
    }

    fn audio(&mut self, pos: i64, payload: &[u8], law: Law) -> Placed {
        let n = payload.len();
        if n == 0 {
            return Placed::Silence;
        }
        if n > MAX_PAYLOAD {
            self.quality.malformed += 1;
            return Placed::Oversized;
        }
        let end = pos + n as i64;
        if end <= self.read_pos {
            self.quality.late += 1;
            return Placed::Late;
        }
        // Clip to the window; the recorder plays out before pushing, so
        // the far end only clips for hostile timestamps.
        let from = pos.max(self.read_pos);
        let to = end.min(self.read_pos + RING as i64);
        if from < to {
            let src = &payload[(from - pos) as usize..(to - pos) as usize];
            let a = (from & self.mask) as usize;
            let first = src.len().min(RING - a);
            decode_law_into(law, &src[..first], &mut self.ring[a..a + first]);
            decode_law_into(law, &src[first..], &mut self.ring[..src.len() - first]);
        }
        if from > pos {
            // Partly played out already: the head is lost, the tail kept.
            self.quality.late += 1;
        }
        self.quality.decoded += 1;
        let (ef, et) = self.event_span;
        if ef < to && from < et {
            self.silence(ef.max(from), et.min(to));
        }
        Placed::Audio { pos, samples: n }
    }

    /// Zeroes the timeline span `from..to` where it is still in the window.
    fn silence(&mut self, from: i64, to: i64) {
        let from = from.max(self.read_pos);
        let to = to.min(self.read_pos + self.ring.len() as i64);
        for p in from..to {
            self.ring[(p & self.mask) as usize] = 0;
        }
    }

    /// The next `n` samples from the read position, in place, for the
    /// mixer to read (and mark: beep, mute) without copying them out. `n`
    /// must not reach past the end of the ring: see [`JitterBuffer::contiguous`].
    pub fn window_mut(&mut self, n: usize) -> &mut [i16] {
        self.fill_comfort(n);
        let a = (self.read_pos & self.mask) as usize;
        &mut self.ring[a..a + n]
    }

    /// How many samples from the read position lie before the ring wraps.
    pub fn contiguous(&self) -> usize {
        self.ring.len() - (self.read_pos & self.mask) as usize
    }

    /// Plays out `n` samples already read through [`JitterBuffer::window_mut`]:
    /// they become silence for the next lap of the ring.
    pub fn advance(&mut self, n: usize) {
        self.window_mut(n).fill(0);
        self.read_pos += n as i64;
    }

    /// Plays out the next `out.len()` samples (silence where nothing
    /// arrived) and advances the window.
    pub fn pop(&mut self, out: &mut [i16]) {
        self.fill_comfort(out.len());
        let mut done = 0;
        while done < out.len() {
            let a = (self.read_pos & self.mask) as usize;
            let n = (out.len() - done).min(self.ring.len() - a);
            let slot = &mut self.ring[a..a + n];
            out[done..done + n].copy_from_slice(slot);
            slot.fill(0);
            done += n;
            self.read_pos += n as i64;
        }
    }
}

/// 1 + the index of `f` in `formats`, added if new (at most 128 distinct
/// formats: payload types are 7 bits, so the map can never need more).
fn intern(formats: &mut Vec<Format>, f: Format) -> u8 {
    let i = match formats.iter().position(|x| *x == f) {
        Some(i) => i,
        None if formats.len() < 255 => {
            formats.push(f);
            formats.len() - 1
        }
        None => return 0,
    };
    (i + 1) as u8
}

/// RTP timestamp units at `clock` Hz to samples at `k` × 8 kHz.
#[inline]
fn scale_ts(d: i64, clock: u32, k: i64) -> i64 {
    let rate = 8000 * k;
    if clock as i64 == rate || clock == 0 {
        d
    } else {
        d * rate / clock as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::{ULAW_DECODE, encode_ulaw};
    use crate::media::rtp::build_rtp;

    pub(super) const START: Timestamp = Timestamp(1_000_000_000);

    /// A 20 ms μ-law packet whose samples all decode to `level`.
    pub(super) fn pkt(seq: u16, ts: u32, ssrc: u32, level: i16) -> Vec<u8> {
        build_rtp(0, seq, ts, ssrc, false, &[encode_ulaw(level); 160])
    }

    pub(super) fn push(jb: &mut JitterBuffer, at_ms: i64, data: &[u8]) -> String {
        let p = RtpPacket::parse(data).unwrap();
        format!("{:?}", jb.push(START.add_micros(at_ms * 1000), &p))
    }

    /// Plays out everything and returns, per 20 ms block, the block's
    /// level (or None when it is silent); asserts blocks are uniform.
    pub(super) fn blocks(jb: &mut JitterBuffer, n: usize) -> Vec<Option<i16>> {
        let mut out = vec![0i16; 160];
        (0..n)
            .map(|_| {
                jb.pop(&mut out);
                assert!(
                    out.iter().all(|&s| s == out[0]),
                    "block not aligned: {:?}",
                    &out[..8]
                );
                (out[0] != 0).then_some(out[0])
            })
            .collect()
    }

    fn lv(i: usize) -> i16 {
        ULAW_DECODE[encode_ulaw(100 * (i as i16 + 1)) as usize]
    }

    #[test]
    fn loss_reorder_duplicates() {
        let mut jb = JitterBuffer::new(START, None);
        // Packets 0..10 at 20 ms spacing; 3 lost, 5 and 6 swapped, 7 twice.
        let order = [0, 1, 2, 4, 6, 5, 7, 7, 8, 9];
        for (k, &i) in order.iter().enumerate() {
            let at = 20 * k as i64 + if i == 5 { 5 } else { 0 };
            push(
                &mut jb,
                at,
                &pkt(
                    100 + i as u16,
                    5000 + 160 * i as u32,
                    1,
                    100 * (i as i16 + 1),
                ),
            );
        }
        let b = blocks(&mut jb, 10);
        let want: Vec<Option<i16>> = (0..10).map(|i| (i != 3).then(|| lv(i))).collect();
        assert_eq!(b, want);
        let q = jb.quality.snapshot();
        assert_eq!((q.packets, q.lost, q.duplicates, q.late), (9, 1, 1, 0));
    }

    #[test]
    fn late_packet_is_counted_not_written() {
        let mut jb = JitterBuffer::new(START, None);
        push(&mut jb, 0, &pkt(1, 0, 1, 500));
        push(&mut jb, 40, &pkt(3, 320, 1, 700));
        let b = blocks(&mut jb, 3);
        assert_eq!(b, vec![Some(lv(4)), None, Some(lv(6))]);
        assert_eq!(push(&mut jb, 300, &pkt(2, 160, 1, 600)), "Late");
        assert_eq!(jb.quality.snapshot().late, 1);
    }

    #[test]
    fn sequence_wrap_is_not_loss() {
        let mut jb = JitterBuffer::new(START, None);
        for i in 0..10u16 {
            push(
                &mut jb,
                20 * i as i64,
                &pkt(
                    65530u16.wrapping_add(i),
                    (u32::MAX - 800).wrapping_add(160 * i as u32),
                    9,
                    300,
                ),
            );
        }
        assert_eq!(blocks(&mut jb, 10), vec![Some(lv(2)); 10]);
        let q = jb.quality.snapshot();
        assert_eq!((q.packets, q.lost), (10, 0));
    }

    #[test]
    fn ssrc_change_and_timestamp_jump_keep_time() {
        let mut jb = JitterBuffer::new(START, None);
        // 0..5 on SSRC 1; a new SSRC with random seq/ts from 100 ms; then a
        // 2^31 timestamp jump at 200 ms; all must land at capture time.
        for i in 0..5u32 {
            push(
                &mut jb,
                20 * i as i64,
                &pkt(10 + i as u16, 1000 + 160 * i, 1, 100),
            );
        }
        for i in 0..5u32 {
            push(
                &mut jb,
                100 + 20 * i as i64,
                &pkt(40000 + i as u16, 777_777 + 160 * i, 2, 200),
            );
        }
        for i in 0..5u32 {
            let ts = 777_777u32.wrapping_add(1 << 31).wrapping_add(160 * (5 + i));
            push(
                &mut jb,
                200 + 20 * i as i64,
                &pkt(40005 + i as u16, ts, 2, 300),
            );
        }
        let b = blocks(&mut jb, 15);
        let want: Vec<Option<i16>> = (0..15)
            .map(|i| Some([lv(0), lv(1), lv(2)][i / 5]))
            .collect();
        assert_eq!(b, want);
        assert_eq!(jb.quality.snapshot().lost, 0);
    }

    #[test]
    fn before_start_unknown_cn_event() {
        let mut jb = JitterBuffer::new(START, Some(101));
        assert_eq!(push(&mut jb, -20, &pkt(1, 0, 1, 100)), "BeforeStart");
        assert_eq!(
            push(&mut jb, 0, &build_rtp(19, 2, 160, 1, false, &[1; 20])),
            "UnknownPt"
        );
        assert_eq!(
            push(&mut jb, 20, &build_rtp(13, 3, 320, 1, false, &[40])),
            "Silence"
        );
        let ev = push(
            &mut jb,
            40,
            &build_rtp(101, 4, 480, 1, true, &[1, 10, 0, 160]),
        );
        assert!(ev.starts_with("Event"), "{ev}");
        push(&mut jb, 60, &pkt(5, 640, 1, 100));
        // RFC 3389 CN at -40 dBov from 20 ms: noise (low, not constant)
        // up to the event, whose span stays silent; then the speech.
        let mut out = vec![0i16; 160];
        jb.pop(&mut out);
        assert!(out.iter().all(|&s| s == 0), "nothing before the CN");
        jb.pop(&mut out);
        let peak = out.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!((1..3000).contains(&peak), "comfort noise peak {peak}");
        assert!(out.iter().any(|&s| s != out[0]), "noise, not a level");
        assert_eq!(blocks(&mut jb, 2), vec![None, Some(lv(0))]);
        assert_eq!(jb.quality.snapshot().unknown_pt, 1);
    }

    #[test]
    fn flood_of_new_ssrcs_is_bounded() {
        let mut jb = JitterBuffer::new(START, None);
        let mut out = [0i16; 160];
        for i in 0..100_000u32 {
            let at = i as i64 / 10;
            push(
                &mut jb,
                at,
                &pkt(i as u16, i.wrapping_mul(2_654_435_761), i, 100),
            );
            let upto = sample_index(START, START.add_micros(at * 1000)) - PLAYOUT_DELAY;
            while jb.read_pos() + 160 <= upto {
                jb.pop(&mut out);
            }
        }
        assert_eq!(jb.quality.snapshot().packets, 100_000);
    }
}
