//! Fuzzes crash recovery's reading of a jitter-window tail file
//! (`recording::tail::restore_tail`) against a WAV cut by a kill: any
//! header (positions, pause, channels, ring length) and any ring bytes.
//! The restore must refuse or append a bounded, whole number of frames,
//! never panic, and leave a WAV that reads back.
//!
//! Input: `[flags][frames][header: 56 bytes after the magic][rings...]`:
//! `flags` bit 0 a stereo WAV, bit 1 sizes the file to the ring length
//! the header claims (the rings' bytes repeated), else the rest as is;
//! `frames` x 64 frames in the WAV.
#![no_main]

use callrec::config::AudioFormat;
use callrec::recording::tail::{restore_tail, tail_path};
use callrec::recording::wav::{WavWriter, read_wav};
use libfuzzer_sys::fuzz_target;
use std::sync::atomic::{AtomicU64, Ordering};

static RUN: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let [flags, frames, rest @ ..] = data else {
        return;
    };
    let channels = if flags & 1 != 0 { 2 } else { 1 };
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("callrec-fuzz-tail-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wav = dir.join("cut.wav");
    let mut w = WavWriter::create(&wav, AudioFormat::Pcm16, channels).unwrap();
    w.write_samples(&vec![7; *frames as usize * 64 * channels as usize])
        .unwrap();
    w.flush().unwrap();
    // The kill: the header still says what it said at creation (dropping
    // the writer does not finish it).
    drop(w);
    let mut file = b"CRTAIL01".to_vec();
    let mut header = [0u8; 56];
    let h = rest.len().min(56);
    header[..h].copy_from_slice(&rest[..h]);
    file.extend_from_slice(&header);
    let rings = &rest[h..];
    if flags & 2 != 0 {
        let ring = match i64::from_ne_bytes(header[48..56].try_into().unwrap()) {
            0 => 4096,
            r => (r.unsigned_abs() as usize).min(1 << 16),
        };
        let bytes = 4 * ring;
        if rings.is_empty() {
            file.resize(64 + bytes, 0);
        } else {
            file.extend(rings.iter().cycle().take(bytes));
        }
    } else {
        file.extend_from_slice(rings);
    }
    std::fs::write(tail_path(&wav), &file).unwrap();
    if let Ok(added) = restore_tail(&wav) {
        // At most one ring (6 x 4096 samples at most) of frames.
        assert!(added <= 6 * 4096, "{added} frames from a tail file");
        let _ = callrec::recording::wav::recover(&wav);
        assert!(read_wav(&wav).is_ok(), "the WAV reads back");
    }
    let _ = std::fs::remove_dir_all(&dir);
});
