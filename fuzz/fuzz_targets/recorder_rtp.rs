//! Fuzzes one recorder with arbitrary RTP: the jitter buffers (sequence
//! and timestamp bookkeeping, SSRC changes, reordering, duplicates, late
//! and oversized packets), RFC 4733 events, the mixer, pauses and the WAV
//! writer, with capture times that step back and forth.
//!
//! Input: records of `[flags][step][len][rtp...]`: `flags` bit 0 picks
//! the leg, bit 1 pauses, bit 2 resumes, bits 3-4 the format (of the first
//! record), bit 5 a 16 kHz recording (the first record); `step` is
//! the capture time's move in ms (128 and up: back by `256 - step`).
//! The recording must come out exactly as long as asked, its header
//! matching the file.
#![no_main]

use callrec::config::{AudioFormat, Channels};
use callrec::recording::recorder::{CallRecorder, Leg, RecorderParams};
use callrec::time::Timestamp;
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicU64, Ordering};

static RUN: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|input: &[u8]| {
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    let path =
        std::env::temp_dir().join(format!("callrec-fuzz-rec-{}-{n}.wav", std::process::id()));
    let format = match input.first().map(|f| f >> 3 & 3) {
        Some(1) => AudioFormat::Ulaw,
        Some(2) => AudioFormat::Alaw,
        _ => AudioFormat::Pcm16,
    };
    let start = Timestamp::from_secs_micros(1_795_221_000, 0);
    let mut rec = CallRecorder::create(RecorderParams {
        path: path.clone(),
        format,
        channels: if input.len() % 2 == 0 {
            Channels::Stereo
        } else {
            Channels::Mono
        },
        start,
        telephone_event_pt: [Some(101), Some(101)],
        sample_rate: if input.first().is_some_and(|f| f & 0x20 != 0) {
            16_000
        } else {
            8_000
        },
    })
    .expect("recorder");
    let mut now = start;
    let mut data = input;
    while let [flags, step, len, rest @ ..] = data {
        let len = (*len as usize).min(rest.len());
        let (rtp, rest) = rest.split_at(len);
        data = rest;
        let dt = if *step < 128 {
            *step as i64
        } else {
            -(256 - *step as i64)
        };
        now = now.add_micros(dt * 1000);
        let leg = if flags & 1 == 0 {
            Leg::Subscriber
        } else {
            Leg::Remote
        };
        rec.on_rtp(leg, now, rtp);
        if flags & 2 != 0 {
            rec.pause(now);
        }
        if flags & 4 != 0 {
            rec.resume(now);
        }
    }
    let end = now.max(start).add_micros(20_000);
    let summary = rec.finish(end).expect("finish");
    assert_eq!(summary.duration_ms as i64, end.since(start) / 1000);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(summary.bytes, bytes.len() as u64);
    assert_eq!(
        u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize + 8,
        bytes.len()
    );
    let _ = std::fs::remove_file(&path);
});
