//! The whole pipeline over generated captures: signalling → policy →
//! announcement → media → WAV + JSON in the spool, checked by content.

#[path = "support/audio.rs"]
mod audio;
#[path = "support/config.rs"]
mod config_text;
#[path = "support/tools.rs"]
mod tools;
use audio::{files, power};
use callrec::capture::LinkType;
use callrec::daemon::replay::{ReplayOptions, replay};
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, Voice, merge};
use std::path::{Path, PathBuf};
use std::time::Duration;

const T0: i64 = 1_795_221_000;

fn config(dir: &Path, announce: &str) -> callrec::config::Config {
    let prompts = Path::new(env!("CARGO_MANIFEST_DIR")).join("guidance-audio");
    let text = format!(
        r#"
[general]
timezone = "+09:00"
[recording]
spool_dir = "{spool}"
[announce]
mode = "{announce}"
dir = "{prompts}"
{acme}[[contract]]
id = "K-0001"
service = "mobile"
numbers = ["0312340001"]
guidance = 2
channels = "stereo"
pause_dtmf = "*1"
resume_dtmf = "*2"
destination = "acme"
[[contract]]
id = "K-0002"
service = "fixed"
numbers = ["0612340002"]
guidance = 4
channels = "mono"
destination = "acme"
"#,
        acme = config_text::ACME_UNREACHED,
        spool = dir.join("spool").display(),
        prompts = prompts.display()
    );
    callrec::config::load_str(&text, &dir.join("test.toml")).expect("test config loads")
}

fn write_capture(path: &Path, calls: &[CallSpec]) {
    let mut w = PcapWriter::create(path, LinkType::Ethernet).unwrap();
    for d in merge(calls) {
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();
}

fn run(dir: &Path, announce: &str, pcap: &Path, out: &str) -> PathBuf {
    let out = dir.join(out);
    let opts = ReplayOptions {
        out: out.clone(),
        captures: vec![pcap.to_path_buf()],
        deliver: false,
        deliver_timeout: Duration::from_secs(1),
        shards: Some(2),
    };
    let report = replay(config(dir, announce), &opts).expect("replay runs");
    assert!(
        report.capture_errors.is_empty(),
        "{:?}",
        report.capture_errors
    );
    out
}

/// (channels, samples per channel) of a PCM16 WAV.
fn read_pcm(path: &Path) -> (usize, Vec<Vec<i16>>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[0..4], b"RIFF");
    assert_eq!(&b[8..12], b"WAVE");
    let mut i = 12;
    let mut channels = 0usize;
    while i + 8 <= b.len() {
        let id = &b[i..i + 4];
        let len = u32::from_le_bytes(b[i + 4..i + 8].try_into().unwrap()) as usize;
        if id == b"fmt " {
            assert_eq!(u16::from_le_bytes([b[i + 8], b[i + 9]]), 1, "PCM");
            channels = u16::from_le_bytes([b[i + 10], b[i + 11]]) as usize;
            assert_eq!(
                u32::from_le_bytes(b[i + 12..i + 16].try_into().unwrap()),
                8000
            );
        }
        if id == b"data" {
            let data = &b[i + 8..i + 8 + len];
            let mut ch = vec![Vec::new(); channels];
            for (n, s) in data.chunks_exact(2).enumerate() {
                ch[n % channels].push(i16::from_le_bytes([s[0], s[1]]));
            }
            return (channels, ch);
        }
        i += 8 + len + (len & 1);
    }
    panic!("no data chunk in {}", path.display());
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn ms_between(a: &str, b: &str) -> i64 {
    let p = |s: &str| callrec::report::parse_rfc3339(s).unwrap_or_else(|| panic!("bad time {s}"));
    (p(b) - p(a)) / 1000
}

fn outbound_call() -> CallSpec {
    let mut c = CallSpec::simple(
        1,
        "0312340001",
        "0077260312349999",
        Timestamp::from_secs_micros(T0, 0),
        25_000,
    );
    c.a_voice.digits = vec![(12_000, '*'), (12_200, '1'), (16_000, '*'), (16_200, '2')];
    c
}

#[test]
fn stereo_call_with_announcement_and_pause() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("in.pcap");
    let call = outbound_call();
    write_capture(&pcap, std::slice::from_ref(&call));
    let out = run(dir.path(), "pcap", &pcap, "out");

    let wavs = files(&out.join("queue/acme/ready"), "wav");
    let jsons = files(&out.join("queue/acme/ready"), "json");
    assert_eq!((wavs.len(), jsons.len()), (1, 1), "one segment: {wavs:?}");
    let meta = json(&jsons[0]);
    assert_eq!(meta["schema"], 1);
    assert_eq!(meta["direction"], "outbound");
    assert_eq!(meta["prefix"], "007726");
    assert_eq!(meta["callee"], "0312349999");
    assert_eq!(meta["audio"]["channels"], 2);
    assert_eq!(meta["guidance"]["played"], true);
    // The recording starts where the announcement ends and ends with the call.
    assert_eq!(meta["segment"]["started_at"], meta["guidance"]["ended_at"]);
    let expected_ms = ms_between(
        meta["guidance"]["ended_at"].as_str().unwrap(),
        meta["ended_at"].as_str().unwrap(),
    );
    let (ch, samples) = read_pcm(&wavs[0]);
    assert_eq!(ch, 2);
    let got_ms = samples[0].len() as i64 / 8;
    assert!(
        (got_ms - expected_ms).abs() <= 60,
        "length {got_ms} ms vs signalling {expected_ms} ms"
    );
    assert_eq!(meta["audio"]["duration_ms"].as_i64().unwrap(), got_ms);

    // Left is the subscriber (440 Hz), right the remote party (1000 Hz).
    let (l, r) = (&samples[0][..8000], &samples[1][..8000]);
    assert!(
        power(l, 440.0) > 100.0 * power(l, 1000.0),
        "left channel is not the subscriber's 440 Hz"
    );
    assert!(
        power(r, 1000.0) > 100.0 * power(r, 440.0),
        "right channel is not the remote's 1000 Hz"
    );

    // Paused from *1 (12.2 s after answer) to *2 (16.2 s): exact silence,
    // in both channels, at the place the metadata says.
    let pauses = meta["pauses"].as_array().unwrap();
    assert_eq!(pauses.len(), 1, "{pauses:?}");
    let (from, to) = (
        pauses[0]["from_ms"].as_i64().unwrap(),
        pauses[0]["to_ms"].as_i64().unwrap(),
    );
    let prompt_ms = ms_between(
        meta["answered_at"].as_str().unwrap(),
        meta["guidance"]["ended_at"].as_str().unwrap(),
    );
    assert!(
        (from - (12_200 + 20 - prompt_ms)).abs() <= 60,
        "pause starts at {from} ms"
    );
    assert!(
        (to - (16_200 + 20 - prompt_ms)).abs() <= 60,
        "pause ends at {to} ms"
    );
    for (c, ch) in samples.iter().enumerate() {
        let s = &ch[(from as usize + 30) * 8..(to as usize - 30) * 8];
        assert!(
            s.iter().all(|&v| v == 0),
            "channel {c} not silent while paused"
        );
    }
    // Both legs are back after the resume.
    let after = &samples[1][(to as usize + 500) * 8..(to as usize + 1500) * 8];
    assert!(power(after, 1000.0) > 100.0 * power(after, 440.0));

    // Billing starts when the announcement starts.
    let history = std::fs::read_to_string(out.join("calls.jsonl")).unwrap();
    let rec: serde_json::Value = serde_json::from_str(history.lines().next().unwrap()).unwrap();
    assert_eq!(rec["decision"], "record");
    assert_eq!(rec["billing_start"], meta["guidance"]["started_at"]);
}

/// Keys sent in SIP INFO (phones without RFC 4733) pause and resume the
/// recording exactly at the INFO's capture time, and both parties hear the
/// beeps; the keys reach no log.
#[test]
fn keys_in_sip_info_pause_and_beep() {
    use callrec::capture::PacketSource;
    use callrec_testkit::scenario::MidCall;
    let log = captured_log();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("in.pcap");
    let mut call = CallSpec::simple(
        2,
        "0312340001",
        "0077260312349999",
        Timestamp::from_secs_micros(T0, 0),
        18_000,
    );
    call.mid_call = [(10_000, '*'), (10_200, '1'), (14_000, '*'), (14_200, '2')]
        .into_iter()
        .map(|(at_ms, key)| MidCall::KeyInfoFromA { at_ms, key })
        .collect();
    write_capture(&pcap, std::slice::from_ref(&call));
    let out = run(dir.path(), "pcap", &pcap, "out");
    let wavs = files(&out.join("queue/acme/ready"), "wav");
    let meta = json(&files(&out.join("queue/acme/ready"), "json")[0]);
    // Times in the file count from the prompt's end.
    let prompt_ms = ms_between(
        meta["answered_at"].as_str().unwrap(),
        meta["guidance"]["ended_at"].as_str().unwrap(),
    );
    let pauses = meta["pauses"].as_array().unwrap();
    assert_eq!(pauses.len(), 1, "{pauses:?}");
    let (from, to) = (
        pauses[0]["from_ms"].as_i64().unwrap(),
        pauses[0]["to_ms"].as_i64().unwrap(),
    );
    assert_eq!((from, to), (10_200 - prompt_ms, 14_200 - prompt_ms));
    let (_, samples) = read_pcm(&wavs[0]);
    for (c, ch) in samples.iter().enumerate() {
        let paused = &ch[from as usize * 8..to as usize * 8];
        assert!(
            paused.iter().all(|&v| v == 0),
            "channel {c} not silent while paused"
        );
        let before = &ch[(from as usize - 1000) * 8..from as usize * 8];
        assert!(
            before.iter().any(|&v| v != 0),
            "channel {c} silent before the pause"
        );
    }
    // announcements.pcap: the prompt and both beeps (13 and 20 packets),
    // towards each party.
    let prompt = callrec::announce::Prompt::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("guidance-audio/guidance2.wav"),
    )
    .unwrap();
    let mut src = callrec::capture::FileSource::open(out.join("announcements.pcap")).unwrap();
    let mut frames = 0;
    while src.next_packet().unwrap().is_some() {
        frames += 1;
    }
    assert_eq!(frames, 2 * (prompt.samples().len().div_ceil(160) + 13 + 20));
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(text.contains("recording pause state changed"), "{text}");
    assert!(!text.contains("Signal") && !text.contains("dtmf-relay"));
}

/// What tshark reads from `announcements.pcap` for one party, in file order.
struct Sent {
    time: f64,
    ssrc: String,
    seq: u16,
    marker: bool,
    samples: Vec<i16>,
}

/// The announcement capture read back by tshark: the prompt, then the
/// pause and resume beeps, towards each party.
#[test]
fn announcements_pcap_read_by_tshark() {
    if !tools::tool_present("tshark", "-v") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("in.pcap");
    let call = outbound_call();
    write_capture(&pcap, std::slice::from_ref(&call));
    let out = run(dir.path(), "pcap", &pcap, "out");
    let o = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(out.join("announcements.pcap"))
        .args([
            "-d",
            "udp.port==10002,rtp",
            "-d",
            "udp.port==20002,rtp",
            "-T",
            "fields",
        ])
        .args(
            [
                "ip.dst",
                "udp.dstport",
                "frame.time_epoch",
                "rtp.payload",
                "rtp.ssrc",
                "rtp.seq",
                "rtp.marker",
            ]
            .iter()
            .flat_map(|f| ["-e", f]),
        )
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    let prompt = callrec::announce::Prompt::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("guidance-audio/guidance2.wav"),
    )
    .unwrap();
    // Where the recording's pause begins and ends, from its metadata.
    let meta = json(&files(&out.join("queue/acme/ready"), "json")[0]);
    let prompt_ms = ms_between(
        meta["guidance"]["started_at"].as_str().unwrap(),
        meta["guidance"]["ended_at"].as_str().unwrap(),
    );
    let pause = &meta["pauses"][0];
    let (from_ms, to_ms) = (
        pause["from_ms"].as_i64().unwrap(),
        pause["to_ms"].as_i64().unwrap(),
    );
    let prompt_packets = prompt.samples().len().div_ceil(160);
    for (to, label) in [(call.a_rtp, "subscriber"), (call.b_rtp, "remote")] {
        let sent: Vec<Sent> = text
            .lines()
            .map(|l| l.split('\t').collect::<Vec<_>>())
            .filter(|f| f[0] == to.ip().to_string() && f[1] == to.port().to_string())
            .map(|f| Sent {
                time: f[2].parse().unwrap(),
                samples: hex::decode(f[3].replace(':', ""))
                    .unwrap()
                    .iter()
                    .map(|&b| audio_codec_algorithms::decode_ulaw(b))
                    .collect(),
                ssrc: f[4].to_string(),
                seq: f[5].parse().unwrap(),
                marker: f[6] == "1" || f[6] == "True",
            })
            .collect();
        // 250 ms pause beep, 400 ms resume beep (150 on, 100 off, 150 on).
        let (pause_packets, resume_packets) = (13, 20);
        assert_eq!(
            sent.len(),
            prompt_packets + pause_packets + resume_packets,
            "{label}: packets"
        );
        let (prompt_rows, beeps) = sent.split_at(prompt_packets);
        let (pause_rows, resume_rows) = beeps.split_at(pause_packets);
        for (rows, what) in [
            (prompt_rows, "prompt"),
            (pause_rows, "pause beep"),
            (resume_rows, "resume beep"),
        ] {
            assert!(
                rows.windows(2)
                    .all(|w| ((w[1].time - w[0].time) - 0.020).abs() < 0.0005),
                "{label}: {what} not paced at 20 ms"
            );
            assert!(
                rows[0].marker,
                "{label}: no marker on the {what}'s first packet"
            );
        }
        // One RTP source throughout, as a receiver expects.
        assert!(
            sent.iter().all(|r| r.ssrc == sent[0].ssrc),
            "{label}: SSRC changed"
        );
        assert!(
            sent.windows(2)
                .all(|w| w[1].seq == w[0].seq.wrapping_add(1)),
            "{label}: sequence numbers not continuous"
        );
        let audio = |rows: &[Sent]| -> Vec<i16> {
            rows.iter()
                .flat_map(|r| r.samples.iter().copied())
                .collect()
        };
        assert_eq!(
            &audio(prompt_rows)[..prompt.samples().len()],
            prompt.samples(),
            "{label}: payload is not the prompt"
        );
        // The parties hear each beep exactly where the recording's pause
        // begins and ends (times relative to the prompt's first packet).
        let at_ms = |r: &Sent| ((r.time - sent[0].time) * 1000.0).round() as i64;
        assert_eq!(
            at_ms(&pause_rows[0]),
            prompt_ms + from_ms,
            "{label}: pause beep"
        );
        assert_eq!(
            at_ms(&resume_rows[0]),
            prompt_ms + to_ms,
            "{label}: resume beep"
        );
        let low = audio(pause_rows);
        assert!(
            power(&low[..2000], 425.0) > 100.0 * power(&low[..2000], 1000.0),
            "{label}: the pause beep is not 425 Hz"
        );
        let high = audio(resume_rows);
        for part in [&high[40..1160], &high[2040..3160]] {
            assert!(
                power(part, 1000.0) > 100.0 * power(part, 425.0),
                "{label}: the resume beep is not 1 kHz"
            );
        }
        assert!(
            high[1220..1980].iter().all(|&v| v.abs() < 16),
            "{label}: no gap between the resume beep's two tones"
        );
    }
}

#[test]
fn mono_inbound_and_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("in.pcap");
    let t = |s: i64| Timestamp::from_secs_micros(T0 + s, 0);
    let mut inbound = CallSpec::simple(2, "0398765432", "0612340002", t(0), 6_000);
    inbound.bye_from_a = false;
    inbound.b_voice = Voice::tone(700.0);
    let noprefix = CallSpec::simple(3, "0312340001", "0312349999", t(1), 3_000);
    let mut cancelled = CallSpec::simple(4, "0398765432", "0612340002", t(2), 0);
    cancelled.talk_ms = None;
    write_capture(&pcap, &[inbound, noprefix, cancelled]);
    let out = run(dir.path(), "off", &pcap, "out");
    let wavs = files(&out.join("queue/acme/ready"), "wav");
    assert_eq!(wavs.len(), 1);
    let (ch, s) = read_pcm(&wavs[0]);
    assert_eq!(ch, 1);
    // Announcements off: recorded from the answer, for the whole call.
    assert!(
        (s[0].len() as i64 / 8 - 6000).abs() <= 60,
        "{} ms",
        s[0].len() / 8
    );
    let m = &s[0][8000..16000];
    assert!(
        power(m, 440.0) > 1e3 * power(m, 1500.0) && power(m, 700.0) > 1e3 * power(m, 1500.0),
        "mono mix lacks a leg"
    );
    let history = std::fs::read_to_string(out.join("calls.jsonl")).unwrap();
    let recs: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by = |id: &str| recs.iter().find(|r| r["call_id"] == id).unwrap().clone();
    assert_eq!(by("call-2@callrec.test")["decision"], "record");
    assert_eq!(by("call-2@callrec.test")["end_reason"], "bye-subscriber");
    assert_eq!(by("call-3@callrec.test")["reason"], "no-prefix");
    assert_eq!(by("call-4@callrec.test")["reason"], "not-answered");
    assert_eq!(by("call-4@callrec.test")["end_reason"], "cancel");
}

#[test]
fn replay_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("in.pcap");
    let calls: Vec<CallSpec> = (0..6)
        .map(|i| {
            CallSpec::simple(
                i,
                "0312340001",
                "0077260312349999",
                Timestamp::from_secs_micros(T0 + i as i64, 0),
                9_000,
            )
        })
        .collect();
    write_capture(&pcap, &calls);
    let a = run(dir.path(), "pcap", &pcap, "a");
    let b = run(dir.path(), "pcap", &pcap, "b");
    let list = |root: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut v: Vec<PathBuf> = files(root, "wav");
        v.extend(files(root, "json"));
        v.extend(files(root, "jsonl"));
        v.extend(files(root, "pcap"));
        v.sort();
        v.into_iter()
            .map(|p| {
                (
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect()
    };
    let (la, lb) = (list(&a), list(&b));
    assert_eq!(la.len(), 6 * 2 + 2);
    assert_eq!(la.len(), lb.len());
    for ((pa, da), (pb, db)) in la.iter().zip(&lb) {
        assert_eq!(pa, pb);
        assert!(da == db, "{} differs between two replays", pa.display());
    }
}

/// Log lines of every test in this binary (only the spool test asserts on them).
fn captured_log() -> &'static std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        #[derive(Clone)]
        struct W(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for W {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = W(buf.clone());
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || w.clone())
                .finish(),
        );
        buf
    })
}

/// A spool over its alarm level logs an alarm; at its limit new calls go
/// unrecorded with reason "overload" in the history, and nothing already
/// recorded is touched. The same capture gives the same decisions every
/// time (the replay lets the shards finish before each spool check).
#[test]
fn full_spool_alarms_then_new_calls_go_unrecorded() {
    let log = captured_log();
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("in.pcap");
    // Eight 3 s stereo calls, one every 8 s: each recording is about 97 kB.
    let calls: Vec<CallSpec> = (0..8)
        .map(|i| {
            CallSpec::simple(
                i,
                "0312340001",
                "0077260312349999",
                Timestamp::from_secs_micros(T0 + 8 * i as i64, 0),
                3_000,
            )
        })
        .collect();
    write_capture(&pcap, &calls);
    let limited = |out: &str| {
        let mut cfg = config(dir.path(), "off");
        cfg.recording.spool_warn_bytes = 50_000;
        cfg.recording.spool_max_bytes = 150_000;
        let out = dir.path().join(out);
        let opts = ReplayOptions {
            out: out.clone(),
            captures: vec![pcap.clone()],
            deliver: false,
            deliver_timeout: Duration::from_secs(1),
            shards: Some(2),
        };
        let report = replay(cfg, &opts).expect("replay runs");
        (out, report)
    };
    let (out, report) = limited("a");
    assert_eq!(report.stats.recorded, 2, "{:?}", report.stats);
    assert_eq!(report.stats.skipped.get("overload"), Some(&6));

    // The history: the first two recorded, every later call "overload".
    let history = std::fs::read_to_string(out.join("calls.jsonl")).unwrap();
    let recs: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 8);
    for i in 0..8 {
        let r = recs
            .iter()
            .find(|r| r["call_id"] == format!("call-{i}@callrec.test"))
            .unwrap();
        if i < 2 {
            assert_eq!(r["decision"], "record", "{r}");
        } else {
            assert_eq!(
                (&r["decision"], &r["reason"]),
                (&"skip".into(), &"overload".into()),
                "{r}"
            );
        }
    }

    // Nothing recorded was deleted: both recordings are queued, whole.
    let spool = callrec::delivery::Spool::open(&out).unwrap();
    let ready = spool
        .list("acme", callrec::delivery::QueueState::Ready)
        .unwrap();
    assert_eq!(ready.len(), 2, "{ready:?}");
    for stem in &ready {
        spool
            .verify("acme", callrec::delivery::QueueState::Ready, stem)
            .expect("recording intact");
    }
    assert!(spool.bytes_used().unwrap() >= 150_000);

    // The alarm came first, then the overload, each once.
    let text = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    let alarm = text
        .lines()
        .position(|l| l.contains("ERROR") && l.contains("SPOOL ALARM"));
    let full = text
        .lines()
        .position(|l| l.contains("ERROR") && l.contains("SPOOL FULL"));
    assert!(
        alarm.is_some() && full.is_some(),
        "alarm lines missing:\n{text}"
    );
    assert!(alarm < full, "alarm before overload");
    assert_eq!(text.matches("SPOOL FULL").count(), 1, "once per crossing");

    // Deterministic: a second replay decides the same.
    let (out_b, _) = limited("b");
    assert_eq!(
        std::fs::read_to_string(out_b.join("calls.jsonl")).unwrap(),
        history
    );
}
