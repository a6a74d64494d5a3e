//! End-to-end tests of the per-call media path: generated RTP for both legs
//! goes through `CallRecorder`, and the WAV read back is checked by content
//! (tone frequency per channel, exact silence, exact sample placement).

#[path = "support/audio.rs"]
mod audio;
use audio::power;
use std::f64::consts::PI;
use std::path::Path;

use callrec::config::{AudioFormat, Channels};
use callrec::media::codec::{ALAW_DECODE, ULAW_DECODE, encode_alaw, encode_ulaw};
use callrec::media::jitter::PLAYOUT_DELAY;
use callrec::media::pause::PauseControl;
use callrec::media::rtp::build_rtp;
use callrec::recording::recorder::{CallRecorder, Leg, RecorderEvent, RecorderParams};
use callrec::recording::wav::{read_wav, recover};
use callrec::time::Timestamp;

const START: Timestamp = Timestamp(1_795_221_000_000_000);
const TE: u8 = 101;

fn params(path: &Path, channels: Channels) -> RecorderParams {
    RecorderParams {
        path: path.to_path_buf(),
        format: AudioFormat::Pcm16,
        channels,
        start: START,
        telephone_event_pt: [Some(TE), Some(TE)],
        sample_rate: 8000,
    }
}

fn at_ms(ms: i64) -> Timestamp {
    START.add_micros(ms * 1000)
}

/// G.711 payload of 20 ms of a tone whose phase follows the timeline
/// sample index `n0`, so its correct place in the file is known exactly.
fn tone(freq: f64, n0: i64, alaw: bool) -> Vec<u8> {
    (0..160)
        .map(|k| {
            let s = (8000.0 * (2.0 * PI * freq * (n0 + k) as f64 / 8000.0).sin()) as i16;
            if alaw { encode_alaw(s) } else { encode_ulaw(s) }
        })
        .collect()
}

fn dominant(x: &[i16]) -> f64 {
    (10..=350)
        .map(|k| k as f64 * 10.0)
        .max_by(|a, b| power(x, *a).total_cmp(&power(x, *b)))
        .unwrap()
}

/// One leg's packets: 20 ms μ-law (subscriber) or A-law (remote) tone
/// from `from_ms` to `to_ms`, captured `delay(i)` ms after their time.
fn leg_packets(
    leg: Leg,
    freq: f64,
    from_ms: i64,
    to_ms: i64,
    ssrc: u32,
    seq0: u16,
    ts0: u32,
) -> Vec<(Timestamp, Leg, Vec<u8>)> {
    let alaw = leg == Leg::Remote;
    let pt = if alaw { 8 } else { 0 };
    (0..((to_ms - from_ms) / 20))
        .map(|i| {
            let t = from_ms + 20 * i;
            let n0 = t * 8;
            let p = build_rtp(
                pt,
                seq0.wrapping_add(i as u16),
                ts0.wrapping_add(160 * i as u32),
                ssrc,
                i == 0,
                &tone(freq, n0, alaw),
            );
            (at_ms(t), leg, p)
        })
        .collect()
}

/// Feeds the packets in capture order. The subscriber's keys (pause `*1`,
/// resume `*2`) are watched by a `PauseControl` whose decisions reach the
/// recorder right after the deciding packet, as the engine delivers them.
/// Returns what the recorder reported.
fn run(rec: &mut CallRecorder, mut pkts: Vec<(Timestamp, Leg, Vec<u8>)>) -> Vec<RecorderEvent> {
    pkts.sort_by_key(|p| p.0);
    let mut keys = PauseControl::new(START, Some("*1"), Some("*2"), Some(TE));
    let mut events = Vec::new();
    for (t, leg, p) in &pkts {
        rec.on_rtp(*leg, *t, p);
        if *leg == Leg::Subscriber
            && let Some(c) = keys.on_rtp(*t, p)
        {
            events.extend(if c.paused {
                rec.pause(c.at)
            } else {
                rec.resume(c.at)
            });
        }
    }
    events
}

fn secs(x: &[i16], from_ms: i64, to_ms: i64) -> &[i16] {
    &x[(from_ms * 8) as usize..(to_ms * 8) as usize]
}

#[test]
fn stereo_and_mono_tones_land_on_their_channels() {
    let dir = tempfile::tempdir().unwrap();
    for channels in [Channels::Stereo, Channels::Mono] {
        let path = dir.path().join("call.wav");
        let mut rec = CallRecorder::create(params(&path, channels)).unwrap();
        let mut pkts = leg_packets(Leg::Subscriber, 440.0, 0, 3000, 0x1111, 100, 5000);
        pkts.extend(leg_packets(
            Leg::Remote,
            1000.0,
            0,
            3000,
            0x2222,
            60000,
            4_000_000_000,
        ));
        // Announcement-time packets before the start must not be recorded.
        pkts.push((
            at_ms(-10),
            Leg::Remote,
            build_rtp(
                8,
                59999,
                3_999_999_840,
                0x2222,
                false,
                &tone(3000.0, 0, true),
            ),
        ));
        run(&mut rec, pkts);
        let s = rec.finish(at_ms(3000)).unwrap();
        assert_eq!(s.duration_ms, 3000);
        let w = read_wav(&path).unwrap();
        assert_eq!(w.rate, 8000);
        assert_eq!(w.samples[0].len(), 24000);
        if channels == Channels::Stereo {
            assert_eq!(w.channels, 2);
            assert_eq!(dominant(secs(&w.samples[0], 500, 2500)), 440.0);
            assert_eq!(dominant(secs(&w.samples[1], 500, 2500)), 1000.0);
            // Nothing of the remote tone on the left.
            assert!(
                power(secs(&w.samples[0], 500, 2500), 1000.0)
                    < power(secs(&w.samples[0], 500, 2500), 440.0) / 1000.0
            );
        } else {
            assert_eq!(w.channels, 1);
            let m = secs(&w.samples[0], 500, 2500);
            let (p440, p1000, p700) = (power(m, 440.0), power(m, 1000.0), power(m, 700.0));
            assert!(
                p440 > 100.0 * p700 && p1000 > 100.0 * p700,
                "{p440} {p1000} {p700}"
            );
            assert!(
                power(m, 3000.0) < p440 / 1000.0,
                "announcement-time audio leaked"
            );
        }
        assert_eq!((s.quality[0].packets, s.quality[0].lost), (150, 0));
        assert_eq!(s.quality[1].packets, 150);
        assert!(s.quality[0].mos.unwrap() > 4.0);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(s.bytes, bytes.len() as u64);
        assert_eq!(s.sha256.len(), 64);
    }
}

/// Every received packet's samples sit at exactly their timeline place
/// despite jitter, loss, reordering, duplicates, a sequence wrap, an SSRC
/// change and a 2^31 timestamp jump.
#[test]
fn impaired_leg_keeps_its_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imp.wav");
    let mut rec = CallRecorder::create(params(&path, Channels::Stereo)).unwrap();
    let mut pkts = Vec::new();
    let mut lost = Vec::new();
    let (mut ssrc, mut seq, mut ts) = (7u32, 65_480u16, 123_456u32);
    for i in 0..250i64 {
        match i {
            100 => (ssrc, seq, ts) = (8, 3, 99_999_999),
            150 => ts = ts.wrapping_add(1 << 31),
            _ => {}
        }
        let t = 20 * i;
        let p = build_rtp(0, seq, ts, ssrc, false, &tone(440.0, t * 8, false));
        (seq, ts) = (seq.wrapping_add(1), ts.wrapping_add(160));
        // Network jitter of 0..15 ms, except on the packets that anchor a
        // timeline (first, SSRC change, jump), which arrive on time.
        let jitter = if [0, 100, 150].contains(&i) {
            0
        } else {
            i * 7919 % 16
        };
        match i {
            30 | 31 | 120 => lost.push(i),
            40 => pkts.push((at_ms(t + 45), Leg::Subscriber, p)),
            50 => {
                pkts.push((at_ms(t + jitter), Leg::Subscriber, p.clone()));
                pkts.push((at_ms(t + jitter + 3), Leg::Subscriber, p));
            }
            _ => pkts.push((at_ms(t + jitter), Leg::Subscriber, p)),
        }
    }
    run(&mut rec, pkts);
    let s = rec.finish(at_ms(5000)).unwrap();
    let left = &read_wav(&path).unwrap().samples[0];
    for i in 0..250i64 {
        let got = &left[(i * 160) as usize..(i * 160 + 160) as usize];
        if lost.contains(&i) {
            assert!(got.iter().all(|&x| x == 0), "lost packet {i} not silent");
        } else {
            let want: Vec<i16> = tone(440.0, i * 160, false)
                .iter()
                .map(|&b| ULAW_DECODE[b as usize])
                .collect();
            assert_eq!(got, &want[..], "packet {i} misplaced");
        }
    }
    let q = &s.quality[0];
    assert_eq!((q.packets, q.lost, q.duplicates, q.late), (247, 3, 1, 0));
    assert!(q.jitter_ms > 1.0 && q.jitter_ms < 15.0, "{}", q.jitter_ms);
    // Packets 30 and 31 lost: 29 arrived at 583 ms, 32 at 640 ms.
    assert_eq!(q.max_gap_ms, 57);
}

#[test]
fn remote_leg_starting_late_is_not_shifted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.wav");
    let mut rec = CallRecorder::create(params(&path, Channels::Stereo)).unwrap();
    let mut pkts = leg_packets(Leg::Subscriber, 440.0, 0, 4000, 1, 1, 1);
    pkts.extend(leg_packets(Leg::Remote, 1000.0, 2000, 4000, 2, 1, 1));
    run(&mut rec, pkts);
    rec.finish(at_ms(4000)).unwrap();
    let w = read_wav(&path).unwrap();
    let right = &w.samples[1];
    let onset = right.iter().position(|&x| x != 0).unwrap();
    assert!(
        (onset as i64 - 16000).abs() <= 160,
        "remote starts at sample {onset}"
    );
    assert_eq!(dominant(secs(right, 2100, 3900)), 1000.0);
    // And the subscriber is intact from the start.
    assert_eq!(dominant(secs(&w.samples[0], 0, 1900)), 440.0);
    let want: Vec<i16> = tone(1000.0, 16000, true)
        .iter()
        .map(|&b| ALAW_DECODE[b as usize])
        .collect();
    assert_eq!(&right[16000..16160], &want[..]);
}

/// A keypress as an RFC 4733 sender emits it: 4 progress packets, then the
/// end packet three times, all with the keypress's start timestamp; the
/// audio packets of that time are replaced by the events.
fn key(pkts: &mut Vec<(Timestamp, Leg, Vec<u8>)>, event: u8, t_ms: i64, seq: u16) {
    let ts = 1000u32.wrapping_add(t_ms as u32 * 8);
    for k in 0..7i64 {
        let end = k >= 4;
        let dur = (160 * (k.min(4) + 1)) as u16;
        let pl = [
            event,
            if end { 0x80 | 10 } else { 10 },
            (dur >> 8) as u8,
            dur as u8,
        ];
        pkts.push((
            at_ms(t_ms + 20 * k.min(4)),
            Leg::Subscriber,
            build_rtp(TE, seq + k as u16, ts, 0x5151, k == 0, &pl),
        ));
    }
}

#[test]
fn pause_and_resume_by_dtmf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pause.wav");
    let mut rec = CallRecorder::create(params(&path, Channels::Stereo)).unwrap();
    // Subscriber: 440 Hz except during the keypresses (at 1000, 1200, 2000
    // and 2200 ms, 100 ms each); remote: 600 Hz throughout.
    let keys = [(10u8, 1000i64), (1, 1200), (10, 2000), (2, 2200)];
    let mut pkts: Vec<_> = (0..200i64)
        .filter(|i| !keys.iter().any(|&(_, t)| (t..t + 100).contains(&(20 * i))))
        .map(|i| {
            let t = 20 * i;
            (
                at_ms(t),
                Leg::Subscriber,
                build_rtp(
                    0,
                    10_000 + i as u16,
                    1000 + 160 * i as u32,
                    0x5151,
                    false,
                    &tone(440.0, t * 8, false),
                ),
            )
        })
        .collect();
    for (j, &(ev, t)) in keys.iter().enumerate() {
        key(&mut pkts, ev, t, 20_000 + 10 * j as u16);
    }
    pkts.extend(leg_packets(Leg::Remote, 600.0, 0, 4000, 0x6262, 1, 1));
    let events = run(&mut rec, pkts);
    assert_eq!(
        events,
        vec![
            RecorderEvent::Paused { at_ms: 1200 },
            RecorderEvent::Resumed { at_ms: 2200 }
        ]
    );
    let s = rec.finish(at_ms(4000)).unwrap();
    assert_eq!(s.pauses, vec![(1200, 2200)]);
    let w = read_wav(&path).unwrap();
    let (l, r) = (&w.samples[0], &w.samples[1]);
    // Exact digital silence on both channels over the pause.
    assert!(secs(l, 1200, 2200).iter().all(|&x| x == 0));
    assert!(secs(r, 1200, 2200).iter().all(|&x| x == 0));
    // Recorded around it.
    assert_eq!(dominant(secs(r, 200, 1150)), 600.0);
    assert_eq!(dominant(secs(l, 400, 950)), 440.0);
    assert_eq!(dominant(secs(l, 2400, 3900)), 440.0);
    // The beep: 1 kHz on the remote channel right after the resume, and
    // nothing of it on the subscriber channel (silent there: a keypress).
    // (The beep and the remote tone have the same level.)
    let beep = secs(r, 2200, 2400);
    assert!(
        power(beep, 1000.0) > 0.5 * power(beep, 600.0),
        "{} {}",
        power(beep, 1000.0),
        power(beep, 600.0)
    );
    assert!(power(beep, 1000.0) > 1000.0 * power(beep, 1500.0));
    assert!(secs(l, 2200, 2300).iter().all(|&x| x == 0));
    assert!(power(secs(r, 2450, 3900), 1000.0) < power(secs(r, 2450, 3900), 600.0) / 1000.0);
}

#[test]
fn control_pause_in_mono_beeps_in_the_mix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ctl.wav");
    let mut rec = CallRecorder::create(params(&path, Channels::Mono)).unwrap();
    let pkts = leg_packets(Leg::Subscriber, 440.0, 0, 3000, 1, 1, 1);
    let mut pkts2 = leg_packets(Leg::Remote, 600.0, 0, 3000, 2, 1, 1);
    let mut all = pkts;
    all.append(&mut pkts2);
    all.sort_by_key(|p| p.0);
    for (t, leg, p) in &all {
        if *t == at_ms(1000) && *leg == Leg::Subscriber {
            assert_eq!(rec.pause(*t), Some(RecorderEvent::Paused { at_ms: 1000 }));
            assert_eq!(rec.pause(*t), None);
        }
        if *t == at_ms(2000) && *leg == Leg::Subscriber {
            assert!(rec.resume(*t).is_some());
            assert!(rec.resume(*t).is_none());
        }
        rec.on_rtp(*leg, *t, p);
    }
    let s = rec.finish(at_ms(2900)).unwrap();
    assert_eq!(
        (s.duration_ms, s.pauses.clone()),
        (2900, vec![(1000, 2000)])
    );
    let m = &read_wav(&path).unwrap().samples[0];
    assert_eq!(m.len(), 2900 * 8);
    assert!(secs(m, 1000, 2000).iter().all(|&x| x == 0));
    let b = secs(m, 2000, 2200);
    // Beep, subscriber and remote tones all have the same level here.
    assert!(power(b, 1000.0) > 0.5 * power(b, 440.0) && power(b, 1000.0) > 0.5 * power(b, 600.0));
    let after = secs(m, 2300, 2900);
    assert!(power(after, 1000.0) < power(after, 440.0) / 1000.0);
}

#[test]
fn length_is_end_minus_start_whatever_the_packets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("len.wav");
    // No packets at all: pure silence of the right length.
    let rec = CallRecorder::create(params(&path, Channels::Stereo)).unwrap();
    assert_eq!(rec.finish(at_ms(1234)).unwrap().duration_ms, 1234);
    assert_eq!(read_wav(&path).unwrap().samples[1].len(), 1234 * 8);
    // Packets running past the end are cut.
    let mut rec = CallRecorder::create(params(&path, Channels::Mono)).unwrap();
    run(
        &mut rec,
        leg_packets(Leg::Subscriber, 440.0, 0, 3000, 1, 1, 1),
    );
    assert_eq!(rec.finish(at_ms(1500)).unwrap().duration_ms, 1500);
    assert_eq!(read_wav(&path).unwrap().samples[0].len(), 1500 * 8);
}

/// Every kind of bad RTP from the issue, interleaved with a good stream:
/// no panic, each counted, the good audio intact, the WAV valid.
#[test]
fn bad_rtp_is_counted_and_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.wav");
    let mut rec = CallRecorder::create(params(&path, Channels::Stereo)).unwrap();
    let good = leg_packets(Leg::Subscriber, 440.0, 0, 2000, 1, 1, 1);
    let base = build_rtp(0, 5, 5, 1, false, &[0xff; 160]);
    let mut bad: Vec<Vec<u8>> = Vec::new();
    let mut v = base.clone();
    v[0] = 0x40; // version 1
    bad.push(v);
    bad.push(base[..7].to_vec()); // truncated header
    bad.push(Vec::new());
    let mut v = base[..20].to_vec();
    v[0] = 0x8f; // 15 CSRCs in 20 bytes
    bad.push(v);
    let mut v = base.clone();
    v[0] |= 0x20; // padding past the end
    *v.last_mut().unwrap() = 250;
    bad.push(v);
    let mut v = base.clone();
    v[0] |= 0x10; // extension past the end
    v[14] = 0xff;
    v[15] = 0xff;
    bad.push(v);
    let n_bad = bad.len() as u64;
    for (i, (t, leg, p)) in good.iter().enumerate() {
        rec.on_rtp(*leg, *t, p);
        if i % 10 == 0 {
            for b in &bad {
                rec.on_rtp(Leg::Subscriber, *t, b);
            }
            rec.on_rtp(Leg::Subscriber, *t, &[0x81, 200, 0, 1, 0, 0, 0, 0]); // RTCP RR
        }
    }
    // Random bytes on the remote leg (deterministic generator).
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..5000 {
        let len = (i % 200) as usize;
        let p: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        rec.on_rtp(Leg::Remote, at_ms(i as i64 * 2000 / 5000), &p);
    }
    assert_eq!(rec.quality(Leg::Subscriber).malformed, n_bad * 10);
    // 10 RR packets, plus random ones that happen to look like RTCP.
    assert!(rec.rtcp_packets() >= 10);
    let s = rec.finish(at_ms(2000)).unwrap();
    assert_eq!(s.quality[0].packets, 100);
    assert_eq!(s.quality[0].lost, 0);
    let w = read_wav(&path).unwrap();
    assert_eq!(w.samples[0].len(), 16000);
    assert_eq!(dominant(secs(&w.samples[0], 200, 1700)), 440.0);
}

#[test]
fn flood_of_new_ssrcs_and_jumps_keeps_length_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flood.wav");
    let mut rec = CallRecorder::create(params(&path, Channels::Mono)).unwrap();
    // 200,000 packets over 10 s: a new SSRC and random timestamp each.
    let mut x = 88172645463325252u64;
    let payload = [0x55u8; 160];
    for i in 0..200_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = build_rtp(
            0,
            x as u16,
            (x >> 16) as u32,
            (x >> 48) as u32 | i as u32,
            false,
            &payload,
        );
        rec.on_rtp(
            if i % 2 == 0 {
                Leg::Subscriber
            } else {
                Leg::Remote
            },
            at_ms(i as i64 / 20),
            &p,
        );
    }
    let s = rec.finish(at_ms(10_000)).unwrap();
    assert_eq!(s.duration_ms, 10_000);
    let q = &s.quality;
    assert_eq!(
        q[0].packets + q[1].packets + q[0].duplicates + q[1].duplicates,
        200_000
    );
    assert_eq!(read_wav(&path).unwrap().samples[0].len(), 80_000);
}

#[test]
fn crashed_recording_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.wav");
    let mut rec = CallRecorder::create(params(&path, Channels::Stereo)).unwrap();
    run(
        &mut rec,
        leg_packets(Leg::Subscriber, 440.0, 0, 3000, 1, 1, 1),
    );
    // The process dies: finish() never runs (dropping flushes the buffer,
    // as the page cache would have kept what was written).
    drop(rec);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - 3).unwrap(); // a partial frame at the end
    drop(f);
    let info = recover(&path).unwrap();
    assert_eq!(info.channels, 2);
    assert!(info.frames > 8000, "{info:?}");
    let w = read_wav(&path).unwrap();
    assert_eq!(w.samples[0].len() as u64, info.frames);
    assert_eq!(dominant(secs(&w.samples[0], 100, 900)), 440.0);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize + 8,
        bytes.len()
    );
}

/// 160 distinct μ-law bytes for packet `i` (so each packet can be found in
/// the recording by content; a pure tone repeats every few packets).
fn noise(i: u32) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64 + 1).wrapping_mul(0xff51_afd7_ed55_8ccd);
    (0..160)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Avoid the two codes that decode to 0, so silence is never audio.
            match x as u8 {
                0xff | 0x7f => 0x80,
                b => b,
            }
        })
        .collect()
}

/// Where each packet's samples sit in `ch`: whole, in order, not overlapping.
/// Panics naming the first packet that is missing or cut.
fn find_in_order(ch: &[i16], payloads: &[Vec<u8>]) -> Vec<usize> {
    let mut floor = 0;
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let want: Vec<i16> = p.iter().map(|&b| ULAW_DECODE[b as usize]).collect();
            let at = (floor..=ch.len().saturating_sub(want.len()))
                .find(|&q| ch[q..q + want.len()] == want[..])
                .unwrap_or_else(|| panic!("packet {i} is not in the recording whole"));
            floor = at + want.len();
            at
        })
        .collect()
}

/// A sender whose RTP clock runs 16% slow (isa_inbound_call.pcap has one):
/// 160 samples of audio per 23.2 ms of capture time. Its RTP time falls
/// behind capture by the playout delay every 1.25 s; every packet must
/// still be recorded whole (the buffer used to drop them as late until the
/// leg was a full second behind), each within the playout delay of its
/// capture time.
#[test]
fn slow_sender_clock_loses_no_packets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.wav");
    let mut rec = CallRecorder::create(params(&path, Channels::Stereo)).unwrap();
    let payloads: Vec<Vec<u8>> = (0..250).map(noise).collect();
    let cap_us = |i: usize| i as i64 * 23_200;
    for (i, p) in payloads.iter().enumerate() {
        let pkt = build_rtp(0, 100 + i as u16, 9000 + 160 * i as u32, 7, i == 0, p);
        rec.on_rtp(Leg::Subscriber, START.add_micros(cap_us(i)), &pkt);
    }
    let s = rec.finish(START.add_micros(cap_us(250) + 100_000)).unwrap();
    let q = &s.quality[0];
    assert_eq!((q.packets, q.lost, q.late), (250, 0, 0), "{q:?}");
    let left = &read_wav(&path).unwrap().samples[0];
    let at = find_in_order(left, &payloads);
    for (i, &a) in at.iter().enumerate() {
        let cap = cap_us(i) / 125;
        assert!(
            a as i64 <= cap && cap - a as i64 <= PLAYOUT_DELAY,
            "packet {i} at sample {a}, captured at {cap}"
        );
    }
}

/// A sender whose RTP clock runs 4% fast, talking in 4 s talkspurts with
/// 600 ms pauses (timestamps advance over the pauses as they should). It
/// gets 160 ms ahead of capture time in each talkspurt, past MAX_AHEAD.
/// No packet may be overwritten and none moved apart from the previous
/// one inside a talkspurt (the buffer used to jump back mid-talkspurt onto
/// speech not yet played out, as on heplify_rtp_rtcp_sip_ipv4_udp.pcap);
/// the drift is taken up in the pauses, so every talkspurt starts at its
/// capture time.
#[test]
fn fast_sender_clock_overwrites_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fast.wav");
    let mut rec = CallRecorder::create(params(&path, Channels::Stereo)).unwrap();
    let mut payloads = Vec::new();
    let mut spurt_starts = Vec::new();
    let (mut cap_us, mut rtp) = (0i64, 5000u32);
    for spurt in 0..3 {
        spurt_starts.push((payloads.len(), cap_us));
        for k in 0..200 {
            let i = payloads.len() as u32;
            let p = noise(i);
            let pkt = build_rtp(0, i as u16, rtp, 9, k == 0, &p);
            rec.on_rtp(Leg::Remote, START.add_micros(cap_us), &pkt);
            payloads.push(p);
            rtp = rtp.wrapping_add(160);
            cap_us += 19_200; // 20 ms of audio every 19.2 ms
        }
        if spurt < 2 {
            rtp = rtp.wrapping_add(600 * 8);
            cap_us += 600_000;
        }
    }
    let s = rec.finish(START.add_micros(cap_us + 500_000)).unwrap();
    let q = &s.quality[1];
    assert_eq!((q.packets, q.lost, q.late), (600, 0, 0), "{q:?}");
    let right = &read_wav(&path).unwrap().samples[1];
    let at = find_in_order(right, &payloads);
    for (n, &(first, cap)) in spurt_starts.iter().enumerate() {
        assert_eq!(at[first] as i64, cap / 125, "talkspurt {n} start");
        for i in first + 1..first + 200 {
            assert_eq!(
                at[i],
                at[i - 1] + 160,
                "packet {i} moved within talkspurt {n}"
            );
        }
    }
}
