//! Per-leg jitter buffer: places each RTP packet's samples on the
//! recording's 8 kHz timeline and hands them out in order.
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

use crate::media::codec::{ALAW_DECODE, Codec, ULAW_DECODE, decode_into};
use crate::media::quality::QualityTracker;
use crate::media::rtp::RtpPacket;
use crate::prefetch;
use crate::time::Timestamp;

/// Samples held per leg (512 ms at 8 kHz); a power of two.
pub const RING: usize = 4096;
const MASK: i64 = RING as i64 - 1;
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

/// What became of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placed {
    /// Decoded into the timeline at `pos` (`samples` long).
    Audio {
        pos: i64,
        samples: usize,
    },
    /// Comfort noise or an empty payload: silence.
    Silence,
    /// RFC 4733 event: taken out of the audio. (Keys are read on the
    /// capture thread: see [`crate::media::pause`].)
    Event,
    Duplicate,
    /// Its place in the timeline was already played out.
    Late,
    /// Payload type not mapped: counted, silence.
    UnknownPt,
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
}

pub struct JitterBuffer {
    ring: Box<[i16; RING]>,
    read_pos: i64,
    start: Timestamp,
    pt_map: [Option<Codec>; 128],
    stream: Option<Stream>,
    /// Timeline span covered by the current telephone event: kept silent.
    event_span: (i64, i64),
    pub quality: QualityTracker,
}

impl JitterBuffer {
    /// A leg whose timeline position 0 is `start`. The payload map starts
    /// with the static types (0 PCMU, 8 PCMA, 13 CN) and `telephone_event`.
    pub fn new(start: Timestamp, telephone_event: Option<u8>) -> Self {
        let mut pt_map = [None; 128];
        for pt in 0..128u8 {
            pt_map[pt as usize] = Codec::from_static_pt(pt);
        }
        if let Some(pt) = telephone_event {
            pt_map[(pt & 0x7f) as usize] = Some(Codec::TelephoneEvent);
        }
        JitterBuffer {
            ring: Box::new([0; RING]),
            read_pos: 0,
            start,
            pt_map,
            stream: None,
            event_span: (0, 0),
            quality: QualityTracker::default(),
        }
    }

    /// Adds or replaces payload-type meanings (from SDP rtpmap lines).
    pub fn set_payload_map(&mut self, map: &[(u8, Codec)]) {
        for &(pt, c) in map {
            self.pt_map[(pt & 0x7f) as usize] = Some(c);
        }
    }

    /// Asks for what [`JitterBuffer::push`] of a packet captured at
    /// timeline position `cap_pos` will touch: the ring where its audio
    /// lands (a sender in step with capture time puts it there).
    pub fn prefetch_push(&self, cap_pos: i64) {
        let a = (cap_pos & MASK) as usize;
        prefetch::range(self.ring[a..].as_ptr(), (RING - a).min(MAX_PREFETCH) * 2);
    }

    /// Asks for the next `n` samples to be played out.
    pub fn prefetch_playout(&self, n: usize) {
        let a = (self.read_pos & MASK) as usize;
        prefetch::range(
            self.ring[a..].as_ptr(),
            (RING - a).min(n).min(MAX_PREFETCH) * 2,
        );
    }

    /// Copies the window's samples at timeline positions `from..to`
    /// (clipped to the window) to the same ring places of `dst`: the live
    /// daemon keeps such a copy in a file mapping, so a killed process
    /// leaves its jitter window behind ([`crate::recording::tail`]).
    pub fn mirror_into(&self, from: i64, to: i64, dst: &mut [i16; RING]) {
        let from = from.max(self.read_pos);
        let to = to.min(self.read_pos + RING as i64);
        let mut p = from;
        while p < to {
            let a = (p & MASK) as usize;
            let n = ((to - p) as usize).min(RING - a);
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
        let cap_pos = sample_index(self.start, now);
        if cap_pos < 0 {
            return Placed::BeforeStart;
        }
        let (pos, new) = match self.sequence(cap_pos, pkt) {
            Ok(v) => v,
            Err(p) => return p,
        };
        self.quality
            .on_packet(self.stream.map_or(0, |s| s.max_seq), now.micros(), pos);
        if !new && self.stream.is_some_and(|s| pos >= s.end) {
            // An older packet placed after the newest one: a straggler from
            // before a timestamp jump, whose old timeline is gone.
            self.quality.late += 1;
            return Placed::Late;
        }
        match self.pt_map[pkt.pt as usize] {
            Some(Codec::Pcmu) => self.audio(pos, pkt.payload, &ULAW_DECODE),
            Some(Codec::Pcma) => self.audio(pos, pkt.payload, &ALAW_DECODE),
            Some(Codec::ComfortNoise) => Placed::Silence,
            Some(Codec::TelephoneEvent) => {
                if let [_, _, d0, d1, ..] = *pkt.payload {
                    let dur = u16::from_be_bytes([d0, d1]) as i64;
                    let end = pos + dur.max(1);
                    self.event_span = if self.event_span.0 == pos {
                        (pos, end.max(self.event_span.1))
                    } else {
                        (pos, end)
                    };
                    self.silence(pos, end);
                }
                Placed::Event
            }
            None => {
                self.quality.unknown_pt += 1;
                Placed::UnknownPt
            }
        }
    }

    /// Sequence and timestamp bookkeeping: the packet's timeline position
    /// and whether it is the newest of its stream so far.
    fn sequence(&mut self, cap_pos: i64, pkt: &RtpPacket<'_>) -> Result<(i64, bool), Placed> {
        let restart = match &self.stream {
            None => true,
            Some(s) if s.ssrc != pkt.ssrc => true,
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
                end: cap_pos + pkt.payload.len() as i64,
            });
            self.quality.new_stream(seq);
            return Ok((cap_pos, true));
        }
        let Some(s) = self.stream.as_mut() else {
            return Ok((cap_pos, true));
        };
        let delta = pkt.seq.wrapping_sub(s.max_seq as u16) as i16 as i64;
        let ts = s.max_ts + pkt.ts.wrapping_sub(s.max_ts as u32) as i32 as i64;
        if delta > 0 {
            s.seen = if delta >= 128 { 1 } else { s.seen << delta | 1 };
            s.max_seq += delta;
            s.max_ts = ts;
            let mut pos = s.anchor_pos + (ts - s.anchor_ts);
            // The newest packet would be (partly) late: its stream's RTP
            // clock fell behind capture time by the whole playout delay. A
            // sender whose clock runs slow does that steadily, and waiting
            // for MAX_BEHIND dropped every packet in between as late (148
            // of 206 on isa_inbound_call.pcap, a sender 16% slow).
            let behind_playout = pos < self.read_pos;
            if pos - cap_pos > MAX_AHEAD || cap_pos - pos > MAX_BEHIND || behind_playout {
                // Back to capture time; but when moving back, never onto
                // samples this stream placed and the window still holds:
                // a sender whose clock runs fast gets ahead by the drift
                // mid-talkspurt, and jumping back there overwrote speech
                // (seen on heplify_rtp_rtcp_sip_ipv4_udp.pcap, 1.2% fast).
                // The drift is then taken up at the next silence, or as far
                // as the window forces.
                let target = if pos > cap_pos {
                    let window_end = self.read_pos + RING as i64 - MAX_PAYLOAD as i64;
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
            s.end = pos + pkt.payload.len() as i64;
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
        Ok((s.anchor_pos + (ts - s.anchor_ts), false))
    }

    fn audio(&mut self, pos: i64, payload: &[u8], table: &[i16; 256]) -> Placed {
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
            let a = (from & MASK) as usize;
            let first = src.len().min(RING - a);
            decode_into(table, &src[..first], &mut self.ring[a..a + first]);
            decode_into(table, &src[first..], &mut self.ring[..src.len() - first]);
        }
        if from > pos {
            // Partly played out already: the head is lost, the tail kept.
            self.quality.late += 1;
        }
        let (ef, et) = self.event_span;
        if ef < to && from < et {
            self.silence(ef.max(from), et.min(to));
        }
        Placed::Audio { pos, samples: n }
    }

    /// Zeroes the timeline span `from..to` where it is still in the window.
    fn silence(&mut self, from: i64, to: i64) {
        let from = from.max(self.read_pos);
        let to = to.min(self.read_pos + RING as i64);
        for p in from..to {
            self.ring[(p & MASK) as usize] = 0;
        }
    }

    /// The next `n` samples from the read position, in place, for the
    /// mixer to read (and mark: beep, mute) without copying them out. `n`
    /// must not reach past the end of the ring: see [`JitterBuffer::contiguous`].
    pub fn window_mut(&mut self, n: usize) -> &mut [i16] {
        let a = (self.read_pos & MASK) as usize;
        &mut self.ring[a..a + n]
    }

    /// How many samples from the read position lie before the ring wraps.
    pub fn contiguous(&self) -> usize {
        RING - (self.read_pos & MASK) as usize
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
        let mut done = 0;
        while done < out.len() {
            let a = (self.read_pos & MASK) as usize;
            let n = (out.len() - done).min(RING - a);
            let slot = &mut self.ring[a..a + n];
            out[done..done + n].copy_from_slice(slot);
            slot.fill(0);
            done += n;
            self.read_pos += n as i64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::encode_ulaw;
    use crate::media::rtp::build_rtp;

    const START: Timestamp = Timestamp(1_000_000_000);

    /// A 20 ms μ-law packet whose samples all decode to `level`.
    fn pkt(seq: u16, ts: u32, ssrc: u32, level: i16) -> Vec<u8> {
        build_rtp(0, seq, ts, ssrc, false, &[encode_ulaw(level); 160])
    }

    fn push(jb: &mut JitterBuffer, at_ms: i64, data: &[u8]) -> String {
        let p = RtpPacket::parse(data).unwrap();
        format!("{:?}", jb.push(START.add_micros(at_ms * 1000), &p))
    }

    /// Plays out everything and returns, per 20 ms block, the block's
    /// level (or None when it is silent); asserts blocks are uniform.
    fn blocks(jb: &mut JitterBuffer, n: usize) -> Vec<Option<i16>> {
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
            push(&mut jb, 0, &build_rtp(18, 2, 160, 1, false, &[1; 20])),
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
        assert_eq!(blocks(&mut jb, 4), vec![None, None, None, Some(lv(0))]);
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
