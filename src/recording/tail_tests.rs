use super::*;
use crate::config::{AudioFormat, Channels};
use crate::media::codec::encode_ulaw;
use crate::media::rtp::build_rtp;
use crate::recording::recorder::{CallRecorder, Leg, RecorderParams};

const START: Timestamp = Timestamp(1_795_221_000_000_000);

fn recorder(path: &Path, format: AudioFormat, channels: Channels, live: bool) -> CallRecorder {
    recorder_at(path, format, channels, live, 8000)
}

fn recorder_at(
    path: &Path,
    format: AudioFormat,
    channels: Channels,
    live: bool,
    sample_rate: u32,
) -> CallRecorder {
    let mut r = CallRecorder::create(RecorderParams {
        path: path.to_owned(),
        format,
        channels,
        start: START,
        telephone_event_pt: [None, None],
        sample_rate,
    })
    .unwrap();
    if live {
        r.set_flush_each_block(true);
        r.keep_tail(path, START).unwrap();
    }
    r
}

/// 20 ms of a tone on `leg`, packet `i` (PCMU), captured at its own time.
fn feed(r: &mut CallRecorder, leg: Leg, i: u32, hz: f64) {
    let payload: Vec<u8> = (0..160)
        .map(|k| {
            let t = (i * 160 + k) as f64 / 8000.0;
            encode_ulaw((8000.0 * (2.0 * std::f64::consts::PI * hz * t).sin()) as i16)
        })
        .collect();
    let ssrc = 0x1000 + leg as u32;
    let pkt = build_rtp(0, i as u16, i * 160, ssrc, i == 0, &payload);
    r.on_rtp(leg, START.add_micros(i as i64 * 20_000 + 500), &pkt);
}

/// Records `packets` packets per leg, once as a process that is killed
/// (dropped unfinished, its tail restored at the "next start"), once as
/// one that finishes at the last packet's end; returns both files' samples.
fn killed_and_finished(
    format: AudioFormat,
    channels: Channels,
    packets: u32,
    pause_at: Option<u32>,
) -> (wav::WavData, wav::WavData, u64) {
    killed_and_finished_at(format, channels, packets, pause_at, 8000)
}

fn killed_and_finished_at(
    format: AudioFormat,
    channels: Channels,
    packets: u32,
    pause_at: Option<u32>,
    rate: u32,
) -> (wav::WavData, wav::WavData, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (cut, whole) = (dir.path().join("cut.wav"), dir.path().join("whole.wav"));
    let mut a = recorder_at(&cut, format, channels, true, rate);
    let mut b = recorder_at(&whole, format, channels, false, rate);
    for i in 0..packets {
        for r in [&mut a, &mut b] {
            if pause_at == Some(i) {
                r.pause(START.add_micros(i as i64 * 20_000));
            }
            feed(r, Leg::Subscriber, i, 440.0);
            feed(r, Leg::Remote, i, 1000.0);
        }
    }
    // The kill: nothing more runs in the process.
    std::mem::forget(a);
    let added = restore_tail(&cut).unwrap();
    wav::recover(&cut).unwrap();
    assert!(!tail_path(&cut).exists(), "the tail file is used once");
    b.finish(START.add_micros(packets as i64 * 20_000)).unwrap();
    (
        wav::read_wav(&cut).unwrap(),
        wav::read_wav(&whole).unwrap(),
        added,
    )
}

#[test]
fn a_killed_recording_keeps_its_jitter_window() {
    for channels in [Channels::Stereo, Channels::Mono] {
        let (cut, whole, added) = killed_and_finished(AudioFormat::Pcm16, channels, 100, None);
        // 2 s of audio sent; without the tail the file would end 200 ms
        // (the playout delay) early.
        assert_eq!(whole.samples[0].len(), 16_000);
        assert!(
            (1_600..=1_760).contains(&added),
            "{added} frames from the window"
        );
        // Packets are captured 500 µs (4 samples) into their 20 ms.
        assert_eq!(
            cut.samples[0].len(),
            16_004,
            "{channels:?}: complete to the last packet"
        );
        same_audio(&cut, &whole);
    }
}

/// A 16 kHz recording (G.711 resampled, as a contract asking for 16 kHz
/// gets it) keeps its window too: rings twice as long, 200 ms restored.
#[test]
fn a_killed_16khz_recording_keeps_its_jitter_window() {
    for channels in [Channels::Stereo, Channels::Mono] {
        let (cut, whole, added) =
            killed_and_finished_at(AudioFormat::Pcm16, channels, 100, None, 16000);
        assert_eq!((cut.rate, whole.rate), (16000, 16000));
        assert_eq!(whole.samples[0].len(), 32_000);
        assert!(
            (3_200..=3_520).contains(&added),
            "{added} frames from the window"
        );
        // Captured 500 µs (8 samples at 16 kHz) into their 20 ms.
        assert_eq!(
            cut.samples[0].len(),
            32_008,
            "{channels:?}: complete to the last packet"
        );
        same_audio(&cut, &whole);
        // The restored part is the tones, not silence.
        let tail = &cut.samples[0][28_800..32_000];
        assert!(
            tail.iter().any(|&s| s.abs() > 1000),
            "audio in the restored window"
        );
    }
}

#[test]
fn a_16khz_pause_open_at_the_kill_mutes_the_restored_window() {
    let (cut, whole, _) =
        killed_and_finished_at(AudioFormat::Pcm16, Channels::Stereo, 100, Some(95), 16000);
    let from = 95 * 320;
    assert!(
        cut.samples[0][from..].iter().all(|&s| s == 0),
        "muted from the pause on"
    );
    assert!(
        cut.samples[0][from - 1600..from].iter().any(|&s| s != 0),
        "audio before it"
    );
    same_audio(&cut, &whole);
}

/// A tail file from before 16 kHz mirroring (ring length 0 in its
/// header) is read as an 8 kHz one; a header whose ring does not match
/// the file's size is refused.
#[test]
fn ring_length_in_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("x.wav");
    let mut r = recorder(&w, AudioFormat::Pcm16, Channels::Mono, true);
    for i in 0..30 {
        feed(&mut r, Leg::Subscriber, i, 440.0);
    }
    std::mem::forget(r);
    let mut b = std::fs::read(tail_path(&w)).unwrap();
    assert_eq!(b.len(), 64 + 4 * RING);
    assert_eq!(field(&b, 56), RING as i64);
    b[56..64].copy_from_slice(&0i64.to_ne_bytes());
    std::fs::write(tail_path(&w), &b).unwrap();
    assert!(restore_tail(&w).unwrap() >= 1_600, "an old file restores");
    b[56..64].copy_from_slice(&(2 * RING as i64).to_ne_bytes());
    std::fs::write(tail_path(&w), &b).unwrap();
    assert_eq!(
        restore_tail(&w).unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
}

#[test]
fn the_window_is_appended_in_the_file_s_own_g711_format() {
    for format in [AudioFormat::Ulaw, AudioFormat::Alaw] {
        for channels in [Channels::Stereo, Channels::Mono] {
            let (cut, whole, added) = killed_and_finished(format, channels, 60, None);
            assert!(added >= 1_600, "{format:?} {channels:?}: {added}");
            assert_eq!(cut.samples[0].len(), 9_604, "{format:?} {channels:?}");
            same_audio(&cut, &whole);
        }
    }
}

#[test]
fn a_pause_open_at_the_kill_mutes_the_restored_window() {
    let (cut, whole, _) = killed_and_finished(AudioFormat::Pcm16, Channels::Stereo, 100, Some(95));
    let from = 95 * 160;
    assert!(
        cut.samples[0][from..].iter().all(|&s| s == 0),
        "muted from the pause on"
    );
    assert!(
        cut.samples[0][from - 800..from].iter().any(|&s| s != 0),
        "audio before it"
    );
    same_audio(&cut, &whole);
}

/// `cut` holds what `whole` holds (it may run on a few samples).
fn same_audio(cut: &wav::WavData, whole: &wav::WavData) {
    for (c, w) in cut.samples.iter().zip(&whole.samples) {
        let n = w.len();
        let first = (0..n).find(|&i| c[i] != w[i]);
        assert_eq!(first, None, "first difference at sample {first:?} of {n}");
    }
}

#[test]
fn no_tail_file_or_a_foreign_one() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("x.wav");
    let mut r = recorder(&w, AudioFormat::Pcm16, Channels::Mono, false);
    feed(&mut r, Leg::Subscriber, 0, 440.0);
    drop(r);
    assert_eq!(restore_tail(&w).unwrap(), 0);
    std::fs::write(tail_path(&w), b"not a tail").unwrap();
    assert_eq!(
        restore_tail(&w).unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
}

#[test]
fn a_finished_recording_leaves_no_tail() {
    let dir = tempfile::tempdir().unwrap();
    let w = dir.path().join("x.wav");
    let mut r = recorder(&w, AudioFormat::Pcm16, Channels::Stereo, true);
    for i in 0..20 {
        feed(&mut r, Leg::Subscriber, i, 440.0);
    }
    assert!(tail_path(&w).exists());
    r.finish(START.add_micros(200_000)).unwrap();
    assert!(
        !tail_path(&w).exists(),
        "the window may reach past the segment's end"
    );
}
