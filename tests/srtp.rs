//! Encrypted media, through `replay`:
//! - SRTP made by an independent implementation (pylibsrtp, its own
//!   libsrtp build) with SDES keys in the SDP (`a=crypto`) decrypts to
//!   each party's tone, for AES-CM (80- and 32-bit tags) and AES-GCM;
//! - a wrong key gives a `media-encrypted` history line and no WAV;
//! - keys out of sight (DTLS-SRTP: `a=fingerprint`) likewise;
//! - a codec callrec cannot decode gives `codec-unsupported:NAME` and no WAV.

#[path = "support/audio.rs"]
mod audio;
#[path = "support/codec_calls.rs"]
mod cc;
#[path = "support/config.rs"]
mod config_text;

use base64::Engine as _;
use callrec::daemon::replay::{ReplayOptions, replay};
use callrec::recording::wav::read_wav;
use cc::{CallMedia, Stream, assert_tone};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn pylibsrtp_present() -> bool {
    if !cc::tools_present() {
        return false;
    }
    let ok = Command::new("python3")
        .args(["-c", "import pylibsrtp"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP: pylibsrtp not installed (scripts/setup.sh installs it with pip)");
    }
    ok
}

/// Protects a stream's packets with pylibsrtp.
fn protect(dir: &Path, s: &Stream, profile: &str, key: &[u8]) -> Stream {
    let (src, dst) = (dir.join("plain.bin"), dir.join("srtp.bin"));
    let mut buf = Vec::new();
    for p in &s.packets {
        buf.extend((p.len() as u16).to_be_bytes());
        buf.extend(p);
    }
    std::fs::write(&src, buf).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/srtp_protect.py");
    let out = Command::new("python3")
        .arg(script)
        .args([profile, &hex::encode(key)])
        .arg(&src)
        .arg(&dst)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data = std::fs::read(&dst).unwrap();
    let mut packets = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let n = u16::from_be_bytes([data[i], data[i + 1]]) as usize;
        packets.push(data[i + 2..i + 2 + n].to_vec());
        i += 2 + n;
    }
    assert_eq!(packets.len(), s.packets.len());
    assert_ne!(
        packets[5][12..30],
        s.packets[5][12..30],
        "payload encrypted"
    );
    Stream {
        pt: s.pt,
        rtpmap: s.rtpmap.clone(),
        fmtp: s.fmtp.clone(),
        clock: s.clock,
        packets,
    }
}

fn crypto_line(suite: &str, key: &[u8]) -> String {
    format!(
        "a=crypto:1 {suite} inline:{}|2^31\r\n",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

fn config(dir: &Path) -> callrec::config::Config {
    let text = format!(
        "[recording]\nspool_dir = \"{}\"\n[announce]\nmode = \"off\"\n{}{}",
        dir.join("spool").display(),
        config_text::ACME_UNREACHED,
        config_text::K0001_STEREO
    );
    callrec::config::load_str(&text, &dir.join("t.toml")).expect("config loads")
}

/// Replays the call; returns the spool and its one history line.
fn run(dir: &Path, m: &CallMedia<'_>) -> (PathBuf, serde_json::Value) {
    let (dg, _) = cc::call(m);
    let pcap = dir.join("in.pcap");
    cc::write_pcap(&pcap, &dg);
    let out = dir.join("out");
    let opts = ReplayOptions {
        out: out.clone(),
        captures: vec![pcap],
        deliver: false,
        deliver_timeout: Duration::from_secs(1),
        shards: Some(1),
    };
    replay(config(dir), &opts).expect("replay runs");
    let h = std::fs::read_to_string(out.join("calls.jsonl")).unwrap();
    (
        out.clone(),
        serde_json::from_str(h.lines().next().unwrap()).unwrap(),
    )
}

fn g711(hz: u32) -> Stream {
    // 20 ms packets, as phones send.
    cc::ffmpeg_rtp_sized(
        &[
            "-f",
            "lavfi",
            "-i",
            &format!("sine=frequency={hz}:sample_rate=8000:duration=4.6"),
            "-ac",
            "1",
            "-af",
            "volume=0.5",
        ],
        &["-c:a", "pcm_mulaw", "-ar", "8000"],
        Some(172),
    )
}

/// Sequence numbers from `first` on, so the stream crosses 65535 → 0 and
/// the SRTP rollover counter must advance (RFC 3711 section 3.3.1).
fn renumber(mut s: Stream, first: u16) -> Stream {
    for (i, p) in s.packets.iter_mut().enumerate() {
        p[2..4].copy_from_slice(&first.wrapping_add(i as u16).to_be_bytes());
    }
    s
}

fn decrypts(suite: &str, profile: &str, key_len: usize) {
    decrypts_from(suite, profile, key_len, None)
}

fn decrypts_from(suite: &str, profile: &str, key_len: usize, first_seq: Option<u16>) {
    let dir = tempfile::tempdir().unwrap();
    let (ka, kb) = (vec![0x11; key_len], vec![0x22; key_len]);
    let plain = |hz| match first_seq {
        Some(f) => renumber(g711(hz), f),
        None => g711(hz),
    };
    let a = protect(dir.path(), &plain(440), profile, &ka);
    let b = protect(dir.path(), &plain(1000), profile, &kb);
    let m = CallMedia {
        a: &a,
        b: &b,
        proto: "RTP/SAVP",
        a_extra: crypto_line(suite, &ka),
        b_extra: crypto_line(suite, &kb),
        talk_ms: 4000,
    };
    let (out, h) = run(dir.path(), &m);
    assert_eq!(h["decision"], "record");
    assert!(h["reason"].is_null(), "{h}");
    let json = audio::files(&out.join("queue/acme/ready"), ".json");
    assert_eq!(json.len(), 1, "one recording");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json[0]).unwrap()).unwrap();
    let w = read_wav(&json[0].with_file_name(meta["audio"]["file"].as_str().unwrap())).unwrap();
    let mid = |x: &[i16]| x[2400..x.len() - 800].to_vec();
    assert_tone("subscriber", &mid(&w.samples[0]), 440.0, 1000.0, 8000);
    assert_tone("remote", &mid(&w.samples[1]), 1000.0, 440.0, 8000);
    assert_eq!(meta["quality"]["subscriber"]["undecodable"], 0);
    let log = std::fs::read_to_string(out.join("calls.jsonl")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&ka);
    assert!(
        !log.contains(&b64) && !std::fs::read_to_string(&json[0]).unwrap().contains(&b64),
        "a key reached a file"
    );
}

#[test]
fn aes_cm_80_decrypts_to_the_tones() {
    if pylibsrtp_present() {
        decrypts("AES_CM_128_HMAC_SHA1_80", "AES128_CM_SHA1_80", 30);
    }
}

#[test]
fn aes_cm_32_decrypts_to_the_tones() {
    if pylibsrtp_present() {
        decrypts("AES_CM_128_HMAC_SHA1_32", "AES128_CM_SHA1_32", 30);
    }
}

#[test]
fn aes_cm_across_the_sequence_rollover() {
    // 65,500 + 230 packets: the rollover falls 0.7 s into the call.
    if pylibsrtp_present() {
        decrypts_from(
            "AES_CM_128_HMAC_SHA1_80",
            "AES128_CM_SHA1_80",
            30,
            Some(65_500),
        );
    }
}

#[test]
fn aes_gcm_decrypts_to_the_tones() {
    if pylibsrtp_present() {
        decrypts("AEAD_AES_128_GCM", "AEAD_AES_128_GCM", 28);
        decrypts("AEAD_AES_256_GCM", "AEAD_AES_256_GCM", 44);
    }
}

/// MKI, and a rekey by it: an SRTP sender written from RFC 3711 alone
/// (`srtp_mki.py`, on the `cryptography` package, not libsrtp) switches
/// from master key 1 to 2 after 2 s, across a sequence rollover; the SDP
/// carries both keys with their MKIs on one a=crypto line.
#[test]
fn mki_rekey_with_an_independent_sender() {
    if !pylibsrtp_present() {
        return;
    }
    let ok = Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP: python3 cryptography not installed (scripts/setup.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mki = |s: &Stream, k1: &[u8], k2: &[u8]| {
        let (src, dst) = (dir.path().join("p.bin"), dir.path().join("s.bin"));
        let mut buf = Vec::new();
        for p in &s.packets {
            buf.extend((p.len() as u16).to_be_bytes());
            buf.extend(p);
        }
        std::fs::write(&src, buf).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/srtp_mki.py");
        let out = Command::new("python3")
            .arg(script)
            .args([hex::encode(k1), hex::encode(k2), "100".into()])
            .arg(&src)
            .arg(&dst)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let data = std::fs::read(&dst).unwrap();
        let mut packets = Vec::new();
        let mut i = 0;
        while i < data.len() {
            let n = u16::from_be_bytes([data[i], data[i + 1]]) as usize;
            packets.push(data[i + 2..i + 2 + n].to_vec());
            i += 2 + n;
        }
        Stream {
            pt: s.pt,
            rtpmap: s.rtpmap.clone(),
            fmtp: None,
            clock: s.clock,
            packets,
        }
    };
    let (a1, a2, b1, b2) = ([0x31u8; 30], [0x32u8; 30], [0x41u8; 30], [0x42u8; 30]);
    let a = mki(&renumber(g711(440), 65_450), &a1, &a2);
    let b = mki(&renumber(g711(1000), 65_450), &b1, &b2);
    let b64 = |k: &[u8]| base64::engine::general_purpose::STANDARD.encode(k);
    let line = |k1: &[u8], k2: &[u8]| {
        format!(
            "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}|2^20|1:4;inline:{}|2^20|2:4\r\n",
            b64(k1),
            b64(k2)
        )
    };
    let m = CallMedia {
        a: &a,
        b: &b,
        proto: "RTP/SAVP",
        a_extra: line(&a1, &a2),
        b_extra: line(&b1, &b2),
        talk_ms: 4000,
    };
    let (out, h) = run(dir.path(), &m);
    assert!(h["reason"].is_null(), "{h}");
    let json = audio::files(&out.join("queue/acme/ready"), ".json");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json[0]).unwrap()).unwrap();
    assert_eq!(
        meta["quality"]["subscriber"]["undecodable"], 0,
        "{}",
        meta["quality"]
    );
    assert_eq!(meta["quality"]["remote"]["undecodable"], 0);
    let w = read_wav(&json[0].with_file_name(meta["audio"]["file"].as_str().unwrap())).unwrap();
    // Both keys' halves: before and after the rekey at packet 100 (2 s).
    assert_tone(
        "subscriber, key 1",
        &w.samples[0][2400..15_000],
        440.0,
        1000.0,
        8000,
    );
    assert_tone(
        "subscriber, key 2",
        &w.samples[0][17_000..31_000],
        440.0,
        1000.0,
        8000,
    );
    assert_tone(
        "remote, key 2",
        &w.samples[1][17_000..31_000],
        1000.0,
        440.0,
        8000,
    );
}

/// The history line and the absence of any delivered recording.
fn assert_not_delivered(out: &Path, h: &serde_json::Value, why: &str) {
    assert_eq!(h["reason"], why, "{h}");
    assert!(
        audio::files(&out.join("queue"), ".wav").is_empty(),
        "a WAV was queued"
    );
    assert!(audio::files(&out.join("queue"), ".json").is_empty());
    let kept = audio::files(&out.join("undecodable"), ".json");
    assert_eq!(kept.len(), 1, "the metadata is kept for the operator");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&kept[0]).unwrap()).unwrap();
    assert_eq!(meta["undecodable"], why);
    assert!(
        meta["quality"]["subscriber"].get("mos").is_none(),
        "no MOS for audio not decoded"
    );
}

#[test]
fn wrong_key_is_media_encrypted_and_no_wav() {
    if !pylibsrtp_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = protect(dir.path(), &g711(440), "AES128_CM_SHA1_80", &[0x11; 30]);
    let b = protect(dir.path(), &g711(1000), "AES128_CM_SHA1_80", &[0x22; 30]);
    // The SDP announces other keys than the ones used.
    let suite = "AES_CM_128_HMAC_SHA1_80";
    let m = CallMedia {
        a: &a,
        b: &b,
        proto: "RTP/SAVP",
        a_extra: crypto_line(suite, &[0x33; 30]),
        b_extra: crypto_line(suite, &[0x44; 30]),
        talk_ms: 4000,
    };
    let (out, h) = run(dir.path(), &m);
    assert_not_delivered(&out, &h, "media-encrypted");
}

#[test]
fn dtls_srtp_is_media_encrypted() {
    if !cc::tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // What DTLS-SRTP puts on the wire is noise to anyone without the keys.
    let noise = |s: Stream| Stream {
        packets: s
            .packets
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut p = p.clone();
                for (j, b) in p[12..].iter_mut().enumerate() {
                    *b ^= (i * 31 + j * 17) as u8 | 1;
                }
                p
            })
            .collect(),
        ..s
    };
    let (a, b) = (noise(g711(440)), noise(g711(1000)));
    let fp = "a=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3E:4B:2A:B7:1A:0C:61:A2:66:2E:1F:75\r\na=setup:actpass\r\n";
    let m = CallMedia {
        a: &a,
        b: &b,
        proto: "UDP/TLS/RTP/SAVP",
        a_extra: fp.into(),
        b_extra: fp.into(),
        talk_ms: 4000,
    };
    let (out, h) = run(dir.path(), &m);
    assert_not_delivered(&out, &h, "media-encrypted");
}

#[test]
fn unsupported_codec_is_named() {
    if !cc::tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // G.723.1 (static PT 4): callrec has no decoder for it.
    let frames = vec![vec![0x5a; 24]; 150];
    let s = |ssrc| Stream {
        pt: 4,
        rtpmap: "G723/8000".into(),
        fmtp: None,
        clock: 8000,
        packets: cc::wrap(&frames, 4, 240, ssrc),
    };
    let (a, b) = (s(1), s(2));
    let m = CallMedia {
        a: &a,
        b: &b,
        proto: "RTP/AVP",
        a_extra: String::new(),
        b_extra: String::new(),
        talk_ms: 4000,
    };
    let (out, h) = run(dir.path(), &m);
    assert_not_delivered(&out, &h, "codec-unsupported:G723");
}
