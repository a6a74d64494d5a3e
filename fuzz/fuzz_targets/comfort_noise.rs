//! Fuzzes comfort noise end to end on one leg: G.729 payloads (speech
//! frames, SID frames, wrong sizes) and RFC 3389 CN payloads (PT 13)
//! pushed into a jitter buffer at stepping capture times, with playouts
//! in between, so SID-opened comfort noise periods are synthesised at
//! playout and closed by speech, across reordering and timestamp jumps.
//!
//! Input: records of `[flags][len][payload...]`: `flags` bit 0 picks CN
//! (PT 13) over G.729 (PT 18), bits 1-3 the capture time's step (x 10 ms),
//! bits 4-6 the RTP timestamp's step (x 80), bit 7 a playout of 20 ms
//! before the packet; the first record's bit 7 also picks a 16 kHz leg.
#![no_main]

use callrec::media::codec::{Codec, Format};
use callrec::media::jitter::JitterBuffer;
use callrec::media::rtp::{RtpPacket, build_rtp};
use callrec::time::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let start = Timestamp(1_795_221_000_000_000);
    let rate = if data.first().is_some_and(|f| f & 0x80 != 0) {
        16000
    } else {
        8000
    };
    let mut jb = JitterBuffer::with_rate(start, None, rate);
    jb.set_formats(
        &[
            (18, Format::of(Codec::G729)),
            (13, Format::of(Codec::ComfortNoise)),
        ],
        &[],
    );
    let mut out = vec![0i16; (rate / 50) as usize];
    let (mut t, mut ts, mut seq) = (0i64, 0u32, 0u16);
    let mut rest = data;
    while let [flags, len, tail @ ..] = rest {
        let len = (*len as usize).min(tail.len());
        let (payload, next) = tail.split_at(len);
        rest = next;
        t += ((flags >> 1) & 7) as i64 * 10_000;
        ts = ts.wrapping_add(((flags >> 4) & 7) as u32 * 80);
        seq = seq.wrapping_add(1);
        if flags & 0x80 != 0 {
            jb.pop(&mut out);
        }
        let pt = if flags & 1 != 0 { 13 } else { 18 };
        let pkt = build_rtp(pt, seq, ts, 7, false, payload);
        if let Ok(p) = RtpPacket::parse(&pkt) {
            let _ = jb.push(start.add_micros(t), &p);
        }
    }
    for _ in 0..40 {
        jb.pop(&mut out);
    }
});
