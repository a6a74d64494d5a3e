//! Segments through `replay`: a transfer (an accepted REFER, or a re-INVITE
//! bringing a new P-Asserted-Identity) splits a recorded call into two
//! WAV + JSON pairs, each holding what was said on its side of the
//! transfer; `segments = "longest"` keeps only the longest; a media move
//! by the same party and a hold keep one file. Generated captures with a
//! known tone per party and per period, checked by content.
//!
//! Announcements are off here, so every recording starts at the answer
//! and each segment's length is a difference of SIP message times.

#[path = "support/audio.rs"]
mod audio;
#[path = "support/config.rs"]
mod config_text;
use audio::{files, power_norm as power};
use callrec::capture::LinkType;
use callrec::daemon::replay::{ReplayOptions, replay};
use callrec::recording::wav::read_wav;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, MidCall, Voice};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const T0: i64 = 1_795_221_000;
/// The callee as the network asserts it in the answer.
const REMOTE_ID: &str = "sip:0312349999@203.0.113.1";

fn config(dir: &Path) -> callrec::config::Config {
    let text = format!(
        r#"
[general]
timezone = "+09:00"
[recording]
spool_dir = "{spool}"
[announce]
mode = "off"
{acme}[[contract]]
id = "K-0001"
service = "mobile"
numbers = ["0312340001"]
guidance = 1
channels = "stereo"
segments = "all"
pause_dtmf = "*1"
resume_dtmf = "*2"
destination = "acme"
[[contract]]
id = "K-0003"
service = "mobile"
numbers = ["0312340003"]
guidance = 1
channels = "stereo"
segments = "longest"
destination = "acme"
"#,
        acme = config_text::ACME_UNREACHED,
        spool = dir.join("spool").display(),
    );
    callrec::config::load_str(&text, &dir.join("test.toml")).expect("test config loads")
}

/// Replays `call` as a capture; returns the spool.
fn run(dir: &Path, call: &CallSpec) -> PathBuf {
    let pcap = dir.join("in.pcap");
    let mut w = PcapWriter::create(&pcap, LinkType::Ethernet).unwrap();
    for d in call.datagrams() {
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();
    let out = dir.join("out");
    let opts = ReplayOptions {
        out: out.clone(),
        captures: vec![pcap],
        deliver: false,
        deliver_timeout: Duration::from_secs(1),
        shards: Some(2),
    };
    let report = replay(config(dir), &opts).expect("replay runs");
    assert!(
        report.capture_errors.is_empty(),
        "{:?}",
        report.capture_errors
    );
    out
}

/// One published segment: its metadata and its channels.
struct Segment {
    meta: serde_json::Value,
    /// Subscriber (left), remote (right).
    ch: Vec<Vec<i16>>,
}

impl Segment {
    fn ms(&self) -> i64 {
        self.ch[0].len() as i64 / 8
    }
    /// Samples of channel `c` from `from` to `to` ms into the segment.
    fn span(&self, c: usize, from: i64, to: i64) -> &[i16] {
        &self.ch[c][(from * 8) as usize..(to * 8) as usize]
    }
}

/// The published segments, by index, with each JSON paired to the WAV it
/// names.
fn segments(spool: &Path) -> Vec<Segment> {
    let ready = spool.join("queue/acme/ready");
    let wavs = files(&ready, "wav");
    let jsons = files(&ready, "json");
    assert_eq!(wavs.len(), jsons.len(), "{wavs:?} {jsons:?}");
    let mut out: Vec<Segment> = jsons
        .iter()
        .map(|j| {
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(j).unwrap()).unwrap();
            let wav = j.with_file_name(meta["audio"]["file"].as_str().unwrap());
            let w = read_wav(&wav).unwrap();
            assert_eq!((w.channels, w.rate), (2, 8000));
            Segment {
                meta,
                ch: w.samples,
            }
        })
        .collect();
    out.sort_by_key(|s| s.meta["segment"]["index"].as_u64());
    out
}

fn history(spool: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(spool.join("calls.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The strongest frequency of `x` on a 10 Hz grid from 100 to 3500 Hz.
fn dominant(x: &[i16]) -> f64 {
    (10..=350)
        .map(|k| k as f64 * 10.0)
        .max_by(|a, b| power(x, *a).total_cmp(&power(x, *b)))
        .unwrap()
}

fn within_60ms(what: &str, got: i64, want: i64) {
    assert!(
        (got - want).abs() <= 60,
        "{what}: {got} ms recorded, signalling says {want} ms"
    );
}

/// An outbound call of `talk_ms` from the contract line `from`: the
/// subscriber says 600 Hz throughout; the remote party says 440 Hz until
/// `switch_ms` after the answer and 1000 Hz from then on, from a new
/// endpoint (new SSRC), as a transferred-to party would.
fn transferred_call(from: &str, talk_ms: u32, switch_ms: u32, event: MidCall) -> CallSpec {
    let mut c = CallSpec::simple(
        7,
        from,
        "0077260312349999",
        Timestamp::from_secs_micros(T0, 0),
        talk_ms,
    );
    c.answer_headers = vec![format!("P-Asserted-Identity: <{REMOTE_ID}>")];
    c.a_voice = Voice::tone(600.0);
    c.b_voice = Voice::tone(440.0);
    c.b_voice.tone_changes = vec![(switch_ms, 1000.0)];
    c.b_voice.new_stream_at = vec![switch_ms];
    c.mid_call = vec![event];
    c
}

#[test]
fn transfer_starts_a_second_segment() {
    // (the in-dialog event, when the segment boundary falls, its cause)
    let cases = [
        (
            MidCall::ReferFromB {
                at_ms: 4000,
                refer_to: "sip:0312348888@203.0.113.1".into(),
            },
            // The REFER's 202 Accepted, 20 ms after it.
            4020,
            "refer",
        ),
        (
            MidCall::ReinviteFromB {
                at_ms: 4000,
                identity: Some("sip:0312347777@203.0.113.1".into()),
                media: None,
            },
            // The re-INVITE itself.
            4000,
            "identity-change",
        ),
    ];
    for (event, boundary, cause) in cases {
        let dir = tempfile::tempdir().unwrap();
        let call = transferred_call("0312340001", 10_000, boundary, event);
        let spool = run(dir.path(), &call);
        let segs = segments(&spool);
        assert_eq!(segs.len(), 2, "{cause}: two segments");
        let (s1, s2) = (&segs[0], &segs[1]);

        // Lengths: answer to the transfer, and the transfer to the BYE.
        within_60ms(cause, s1.ms(), boundary as i64);
        within_60ms(cause, s2.ms(), 10_000 - boundary as i64);
        for s in &segs {
            assert_eq!(s.meta["audio"]["duration_ms"].as_i64(), Some(s.ms()));
        }

        // What was said on each side of the transfer, and only that. The
        // first and last 100 ms are left out of the spectrum (edges).
        let (a, b) = (
            s1.span(1, 100, s1.ms() - 100),
            s2.span(1, 100, s2.ms() - 100),
        );
        assert_eq!(dominant(a), 440.0, "{cause}: remote before the transfer");
        assert_eq!(dominant(b), 1000.0, "{cause}: remote after the transfer");
        assert!(
            power(a, 1000.0) < power(a, 440.0) / 1000.0,
            "{cause}: the new party leaked into segment 1"
        );
        assert!(
            power(b, 440.0) < power(b, 1000.0) / 1000.0,
            "{cause}: the old party leaked into segment 2"
        );
        for s in &segs {
            let l = s.span(0, 100, s.ms() - 100);
            assert_eq!(dominant(l), 600.0, "{cause}: subscriber");
        }

        // Metadata: numbered, caused, and contiguous in time.
        let (m1, m2) = (&s1.meta["segment"], &s2.meta["segment"]);
        assert_eq!(
            (m1["index"].as_u64(), m2["index"].as_u64()),
            (Some(1), Some(2))
        );
        assert_eq!(m1["cause"], "answer");
        assert_eq!(m2["cause"], cause);
        // Segment 1 is published at the transfer, when no later segment
        // exists yet; segment 2 knows it is the second of two.
        assert_eq!(m1["count"], 1);
        assert_eq!(m2["count"], 2);
        assert_eq!(m1["ended_at"], m2["started_at"]);
        assert_eq!(m1["started_at"], s1.meta["answered_at"]);
        assert_eq!(s1.meta["end_reason"], "transfer");
        assert_eq!(s2.meta["end_reason"], "bye-subscriber");
        assert_eq!(s1.meta["call_id"], s2.meta["call_id"]);
        assert_ne!(s1.meta["audio"]["file"], s2.meta["audio"]["file"]);
        // The new party's stream (a new SSRC) is all there.
        assert_eq!(s2.meta["quality"]["remote"]["lost"], 0);

        let h = history(&spool);
        assert_eq!(h.len(), 1);
        assert_eq!(
            (h[0]["decision"].as_str(), h[0]["segments"].as_u64()),
            (Some("record"), Some(2))
        );
    }
}

#[test]
fn longest_segment_alone_is_kept() {
    // Transfer after 6 s of 10 (the first segment is longer) and after 3 s
    // (the second is): the longest is kept whichever it is.
    for (refer_at, keep_index, keep_hz) in [(6000u32, 1u64, 440.0), (3000, 2, 1000.0)] {
        let dir = tempfile::tempdir().unwrap();
        let boundary = refer_at + 20;
        let call = transferred_call(
            "0312340003",
            10_000,
            boundary,
            MidCall::ReferFromB {
                at_ms: refer_at,
                refer_to: "sip:0312348888@203.0.113.1".into(),
            },
        );
        let spool = run(dir.path(), &call);
        let segs = segments(&spool);
        assert_eq!(segs.len(), 1, "REFER at {refer_at}: only the longest");
        let s = &segs[0];
        assert_eq!(s.meta["contract"], "K-0003");
        assert_eq!(s.meta["segment"]["index"].as_u64(), Some(keep_index));
        assert_eq!(s.meta["segment"]["count"], 2);
        let want = if keep_index == 1 {
            boundary as i64
        } else {
            10_000 - boundary as i64
        };
        within_60ms("longest", s.ms(), want);
        assert_eq!(dominant(s.span(1, 100, s.ms() - 100)), keep_hz);
        // The shorter one was not left behind anywhere in the spool.
        assert_eq!(files(&spool, "wav").len(), 1, "{:?}", files(&spool, "wav"));
        assert_eq!(history(&spool)[0]["segments"], 2);
    }
}

#[test]
fn a_pause_carries_across_a_transfer() {
    // Paused by *1 at 2 s, transferred at 4 s (REFER, boundary at its 202),
    // resumed by *2 at 6 s: segment 1 is silent from the pause to its end,
    // segment 2 from its start to the resume, so what was read out while
    // paused is in neither file.
    let dir = tempfile::tempdir().unwrap();
    let mut call = transferred_call(
        "0312340001",
        9_000,
        4020,
        MidCall::ReferFromB {
            at_ms: 4000,
            refer_to: "sip:0312348888@203.0.113.1".into(),
        },
    );
    call.a_voice.digits = vec![(2000, '*'), (2200, '1'), (6000, '*'), (6200, '2')];
    let spool = run(dir.path(), &call);
    let segs = segments(&spool);
    assert_eq!(segs.len(), 2);
    let (s1, s2) = (&segs[0], &segs[1]);
    let pause = |s: &Segment| -> Vec<(i64, i64)> {
        s.meta["pauses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["from_ms"].as_i64().unwrap(), p["to_ms"].as_i64().unwrap()))
            .collect()
    };
    let (p1, p2) = (pause(s1), pause(s2));
    assert_eq!((p1.len(), p2.len()), (1, 1), "{p1:?} {p2:?}");
    // The pause starts when "1" is keyed (its event lasts 20 ms or more).
    within_60ms("pause in segment 1", p1[0].0, 2220);
    assert_eq!(p1[0].1, s1.ms(), "segment 1 ends paused");
    assert_eq!(p2[0].0, 0, "segment 2 starts paused");
    within_60ms("resume in segment 2", p2[0].1, 6220 - 4020);
    for (s, (from, to)) in [(s1, p1[0]), (s2, p2[0])] {
        for c in 0..2 {
            let quiet = s.span(c, from + 30, to - 30);
            assert!(
                quiet.iter().all(|&v| v == 0),
                "channel {c} not silent while paused"
            );
        }
    }
    // Audible on both sides of the pause.
    assert_eq!(dominant(s1.span(0, 500, 1500)), 600.0);
    assert_eq!(dominant(s2.span(0, p2[0].1 + 300, s2.ms() - 100)), 600.0);
}

#[test]
fn media_move_and_hold_keep_one_segment() {
    let mut c = CallSpec::simple(
        8,
        "0312340001",
        "0077260312349999",
        Timestamp::from_secs_micros(T0, 0),
        11_000,
    );
    let moved: SocketAddr = "198.51.100.77:31000".parse().unwrap();
    c.answer_headers = vec![format!("P-Asserted-Identity: <{REMOTE_ID}>")];
    // A B2BUA re-anchors the remote party's media at 3 s (same asserted
    // identity); the subscriber holds from 6 s to 8 s and plays 300 Hz
    // music meanwhile; the remote party (recvonly) sends nothing then.
    c.mid_call = vec![
        MidCall::ReinviteFromB {
            at_ms: 3000,
            identity: Some(REMOTE_ID.into()),
            media: Some(moved),
        },
        MidCall::HoldByA {
            at_ms: 6000,
            for_ms: 2000,
        },
    ];
    c.a_voice.tone_changes = vec![(6000, 300.0), (8000, 440.0)];
    let datagrams = c.datagrams();
    let from_moved = datagrams.iter().filter(|d| d.src == moved).count();
    let from_remote = datagrams
        .iter()
        .filter(|d| d.src == moved || d.src == c.b_rtp)
        .count();
    assert!(from_moved > 100, "the scenario moved no media");

    let dir = tempfile::tempdir().unwrap();
    let spool = run(dir.path(), &c);
    let segs = segments(&spool);
    assert_eq!(segs.len(), 1, "a media move or a hold is not a transfer");
    let s = &segs[0];
    within_60ms("move+hold", s.ms(), 11_000);
    assert_eq!(s.meta["segment"]["index"], 1);
    assert_eq!(s.meta["segment"]["count"], 1);
    assert_eq!(history(&spool)[0]["segments"], 1);

    // The remote party before and after the move, and after the hold.
    for (from, to) in [(100, 2900), (3100, 5900), (8100, 10_900)] {
        assert_eq!(
            dominant(s.span(1, from, to)),
            1000.0,
            "remote {from}..{to} ms"
        );
    }
    // Every packet the remote party sent, from either address, was recorded.
    let q = &s.meta["quality"]["remote"];
    assert_eq!(q["packets"].as_u64(), Some(from_remote as u64), "{q}");
    assert_eq!(q["lost"], 0);
    // On hold: the remote party is silent, exactly, and the hold music the
    // subscriber's side plays is recorded.
    assert!(
        s.span(1, 6100, 7900).iter().all(|&x| x == 0),
        "remote channel not silent on hold"
    );
    assert_eq!(dominant(s.span(0, 6100, 7900)), 300.0, "hold music");
    for (from, to) in [(100, 5900), (8100, 10_900)] {
        assert_eq!(
            dominant(s.span(0, from, to)),
            440.0,
            "subscriber {from}..{to} ms"
        );
    }
}
