//! MP3, Opus (Ogg) and FLAC recordings: the files `replay` queues decode
//! with the ffmpeg command line to each party's tone on its channel (and
//! both in mono) and to the length the signalling says; the metadata names
//! the format and the file, whose hash it carries; the stem is the WAV's;
//! and the same capture gives the same bytes twice (bit-exact encoders).

#[path = "support/audio.rs"]
mod audio;
#[path = "support/codec_calls.rs"]
mod cc;
#[path = "support/config.rs"]
mod config_text;

use callrec::daemon::replay::{ReplayOptions, replay};
use callrec::time::Timestamp;
use callrec_testkit::scenario::{CallSpec, Voice};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const TALK_MS: u32 = 3_000;

fn config(dir: &Path, format: &str, channels: &str) -> callrec::config::Config {
    let text = format!(
        "[recording]\nspool_dir = \"{}\"\nformat = \"{format}\"\n[announce]\nmode = \"off\"\n{}[[contract]]\nid = \"K-0001\"\nservice = \"mobile\"\nnumbers = [\"0312340001\"]\nguidance = 1\nchannels = \"{channels}\"\ndestination = \"acme\"\n",
        dir.join("spool").display(),
        config_text::ACME_UNREACHED
    );
    callrec::config::load_str(&text, &dir.join("t.toml")).expect("config loads")
}

/// Replays one G.711 call (subscriber 440 Hz, remote 1000 Hz) into `out`;
/// returns the queued audio file and its metadata.
fn record(dir: &Path, out: &str, format: &str, channels: &str) -> (PathBuf, serde_json::Value) {
    let mut c = CallSpec::simple(
        4,
        "0312340001",
        "0077260312349999",
        Timestamp::from_secs_micros(cc::T0, 0),
        TALK_MS,
    );
    c.a_voice = Voice::tone(440.0);
    c.b_voice = Voice::tone(1000.0);
    let pcap = dir.join("in.pcap");
    cc::write_pcap(&pcap, &c.datagrams());
    let out = dir.join(out);
    let opts = ReplayOptions {
        out: out.clone(),
        captures: vec![pcap],
        deliver: false,
        deliver_timeout: Duration::from_secs(1),
        shards: Some(1),
    };
    replay(config(dir, format, channels), &opts).expect("replay runs");
    let json = audio::files(&out.join("queue/acme/ready"), ".json");
    assert_eq!(json.len(), 1);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json[0]).unwrap()).unwrap();
    let file = json[0].with_file_name(meta["audio"]["file"].as_str().unwrap());
    assert_eq!(
        file.with_extension(""),
        json[0].with_extension(""),
        "same stem"
    );
    assert_eq!(file.extension().unwrap(), format);
    assert!(
        audio::files(&out.join("queue"), ".wav").is_empty(),
        "no WAV left beside it"
    );
    (file, meta)
}

/// ffmpeg decodes `file` to interleaved s16 at `rate`; returns channels.
fn decode(file: &Path, rate: u32, channels: usize) -> Vec<Vec<i16>> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-i"])
        .arg(file)
        .args([
            "-f",
            "s16le",
            "-acodec",
            "pcm_s16le",
            "-ar",
            &rate.to_string(),
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg cannot decode {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Vec<i16> = out
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    (0..channels)
        .map(|c| s.iter().skip(c).step_by(channels).copied().collect())
        .collect()
}

fn check(format: &str) {
    if !cc::tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for channels in ["stereo", "mono"] {
        let (file, meta) = record(dir.path(), channels, format, channels);
        assert_eq!(meta["audio"]["format"], format);
        let (bytes, sha) = callrec::recording::wav::sha256_file(&file).unwrap();
        assert_eq!(meta["audio"]["sha256"], sha.as_str());
        assert_eq!(meta["audio"]["bytes"], bytes);
        let n = if channels == "stereo" { 2 } else { 1 };
        let ch = decode(&file, 8000, n);
        let ms = ch[0].len() as i64 / 8;
        assert!(
            (ms - TALK_MS as i64).abs() <= 30,
            "{format} {channels}: decodes to {ms} ms, signalling says {TALK_MS}"
        );
        let mid = |x: &[i16]| x[1600..x.len() - 800].to_vec();
        if n == 2 {
            cc::assert_tone("subscriber", &mid(&ch[0]), 440.0, 1000.0, 8000);
            cc::assert_tone("remote", &mid(&ch[1]), 1000.0, 440.0, 8000);
        } else {
            let m = mid(&ch[0]);
            for hz in [440.0, 1000.0] {
                assert!(
                    cc::power(&m, hz, 8000) > 60_000.0,
                    "{format} mono: no {hz} Hz"
                );
            }
        }
    }
    // The same capture again: the same bytes.
    let (a, _) = record(dir.path(), "stereo", format, "stereo");
    let first = std::fs::read(&a).unwrap();
    let (b, _) = record(dir.path(), "again", format, "stereo");
    assert!(
        first == std::fs::read(&b).unwrap(),
        "{format}: replay not byte-identical"
    );
}

#[test]
fn mp3() {
    check("mp3");
}

#[test]
fn opus_in_ogg() {
    check("opus");
}

#[test]
fn flac() {
    check("flac");
}

#[path = "support/sshd.rs"]
mod sshd;

/// An MP3 recording goes through the real SFTP delivery (a local OpenSSH
/// server) as `STEM.mp3` beside `STEM.json`, the JSON last, with the hash
/// the metadata names.
#[test]
fn mp3_is_delivered_under_the_same_stem() {
    if !cc::tools_present() {
        return;
    }
    let Some(srv) = sshd::Sshd::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[recording]\nspool_dir = \"{}\"\nformat = \"mp3\"\n[announce]\nmode = \"off\"\n[delivery]\nallowed_networks = [\"127.0.0.0/8\"]\n[[destination]]\nname = \"acme\"\nurl = {:?}\nidentity = {:?}\nhost_key = {:?}\n[[contract]]\nid = \"K-0001\"\nservice = \"mobile\"\nnumbers = [\"0312340001\"]\nguidance = 1\nchannels = \"stereo\"\ndestination = \"acme\"\n",
        dir.path().join("spool").display(),
        srv.url(),
        srv.client_key.display().to_string(),
        srv.host_pub
    );
    let cfg = callrec::config::load_str(&text, &dir.path().join("t.toml")).expect("config loads");
    let mut c = CallSpec::simple(
        5,
        "0312340001",
        "0077260312349999",
        Timestamp::from_secs_micros(cc::T0, 0),
        TALK_MS,
    );
    c.a_voice = Voice::tone(440.0);
    c.b_voice = Voice::tone(1000.0);
    let pcap = dir.path().join("in.pcap");
    cc::write_pcap(&pcap, &c.datagrams());
    let out = dir.path().join("out");
    let opts = ReplayOptions {
        out,
        captures: vec![pcap],
        deliver: true,
        deliver_timeout: Duration::from_secs(60),
        shards: Some(1),
    };
    replay(cfg, &opts).expect("replay delivers");
    let json = audio::files(&srv.incoming, ".json");
    assert_eq!(json.len(), 1, "one recording delivered");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json[0]).unwrap()).unwrap();
    let mp3 = json[0].with_extension("mp3");
    assert_eq!(
        meta["audio"]["file"],
        mp3.file_name().unwrap().to_str().unwrap()
    );
    let (_, sha) = callrec::recording::wav::sha256_file(&mp3).unwrap();
    assert_eq!(meta["audio"]["sha256"], sha.as_str());
    assert!(audio::files(&srv.incoming, ".wav").is_empty());
    let ch = decode(&mp3, 8000, 2);
    cc::assert_tone(
        "delivered, left",
        &ch[0][1600..ch[0].len() - 800],
        440.0,
        1000.0,
        8000,
    );
}

/// A wideband call (G.722 from ffmpeg, the remote party at 6 kHz) in each
/// compressed format: the file is 16 kHz and decodes to both tones, the
/// 6 kHz one intact, at the signalling's length.
#[test]
fn wideband_stays_wideband_in_every_format() {
    if !cc::tools_present() {
        return;
    }
    let g722 = |hz: u32| {
        cc::ffmpeg_rtp_sized(
            &[
                "-f",
                "lavfi",
                "-i",
                &format!("sine=frequency={hz}:sample_rate=48000:duration=3.6"),
                "-ac",
                "1",
                "-af",
                "volume=0.5",
            ],
            &["-c:a", "g722", "-ar", "16000"],
            Some(172),
        )
    };
    let (a, b) = (g722(440), g722(6000));
    for format in ["mp3", "opus", "flac"] {
        let dir = tempfile::tempdir().unwrap();
        let (dg, _) = cc::call(&cc::CallMedia {
            a: &a,
            b: &b,
            proto: "RTP/AVP",
            a_extra: String::new(),
            b_extra: String::new(),
            talk_ms: TALK_MS,
        });
        let pcap = dir.path().join("in.pcap");
        cc::write_pcap(&pcap, &dg);
        let out = dir.path().join("out");
        let opts = ReplayOptions {
            out: out.clone(),
            captures: vec![pcap],
            deliver: false,
            deliver_timeout: Duration::from_secs(1),
            shards: Some(1),
        };
        let text = config_text_for(dir.path(), format).replace(
            "channels = \"stereo\"\n",
            "channels = \"stereo\"\nsample_rate = \"auto\"\n",
        );
        let cfg = callrec::config::load_str(&text, &dir.path().join("t.toml")).unwrap();
        replay(cfg, &opts).expect("replay runs");
        let json = audio::files(&out.join("queue/acme/ready"), ".json");
        assert_eq!(json.len(), 1, "{format}");
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json[0]).unwrap()).unwrap();
        assert_eq!(meta["audio"]["sample_rate"], 16000, "{format}: {meta}");
        let file = json[0].with_file_name(meta["audio"]["file"].as_str().unwrap());
        let ch = decode(&file, 16000, 2);
        let ms = ch[0].len() as i64 / 16;
        assert!(
            (ms - TALK_MS as i64).abs() <= 60,
            "{format}: decodes to {ms} ms, signalling says {TALK_MS}"
        );
        let mid = |x: &[i16]| x[4800..x.len() - 1600].to_vec();
        cc::assert_tone("subscriber", &mid(&ch[0]), 440.0, 6000.0, 16000);
        cc::assert_tone("remote (6 kHz)", &mid(&ch[1]), 6000.0, 440.0, 16000);
    }
}

/// The stereo contract's configuration in `format`.
fn config_text_for(dir: &Path, format: &str) -> String {
    format!(
        "[recording]\nspool_dir = \"{}\"\nformat = \"{format}\"\n[announce]\nmode = \"off\"\n{}[[contract]]\nid = \"K-0001\"\nservice = \"mobile\"\nnumbers = [\"0312340001\"]\nguidance = 1\nchannels = \"stereo\"\ndestination = \"acme\"\n",
        dir.join("spool").display(),
        config_text::ACME_UNREACHED
    )
}
