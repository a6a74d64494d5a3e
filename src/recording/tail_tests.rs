use super::*;
use crate::config::{AudioFormat, Channels};
use crate::media::codec::encode_ulaw;
use crate::media::rtp::build_rtp;
use crate::recording::recorder::{CallRecorder, Leg, RecorderParams};

const START: Timestamp = Timestamp(1_795_221_000_000_000);

fn recorder(path: &Path, format: AudioFormat, channels: Channels, live: bool) -> CallRecorder {
    let mut r = CallRecorder::create(RecorderParams {
        path: path.to_owned(),
        format,
        channels,
        start: START,
        telephone_event_pt: [None, None],
        sample_rate: 8000,
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
    let dir = tempfile::tempdir().unwrap();
    let (cut, whole) = (dir.path().join("cut.wav"), dir.path().join("whole.wav"));
    let mut a = recorder(&cut, format, channels, true);
    let mut b = recorder(&whole, format, channels, false);
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
