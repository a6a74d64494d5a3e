//! Every codec a carrier carries, end to end through `replay`: for each,
//! a capture made with an independent encoder run here (Debian's ffmpeg
//! and sox; libbcg729, libvo-amrwbenc and iLBC through `encoders.py`) carrying a
//! known tone per party. The recording must have each party's tone on its
//! own channel and the length the signalling says; a wideband tone above
//! 4 kHz must survive in a 16 kHz recording. iLBC's encoder is RFC 3951's
//! reference code as pjproject ships it in the `pjsua2-python` wheel
//! (PyPI), also driven through `encoders.py`.

#[path = "support/audio.rs"]
mod audio;
#[path = "support/codec_calls.rs"]
mod cc;
#[path = "support/config.rs"]
mod config_text;

use callrec::daemon::replay::{ReplayOptions, replay};
use callrec::recording::wav::read_wav;
use cc::{CallMedia, Stream, assert_tone};
use std::path::Path;
use std::time::Duration;

const TALK_MS: u32 = 4_000;
const SECS: f64 = 4.6;

fn config(dir: &Path, sample_rate: &str) -> callrec::config::Config {
    let text = format!(
        "[general]\ntimezone = \"+09:00\"\n[recording]\nspool_dir = \"{}\"\n[announce]\nmode = \"off\"\n{}[[contract]]\nid = \"K-0001\"\nservice = \"mobile\"\nnumbers = [\"0312340001\"]\nguidance = 1\nchannels = \"stereo\"\nsample_rate = \"{sample_rate}\"\ndestination = \"acme\"\n",
        dir.join("spool").display(),
        config_text::ACME_UNREACHED
    );
    callrec::config::load_str(&text, &dir.join("t.toml")).expect("config loads")
}

struct Recorded {
    meta: serde_json::Value,
    rate: u32,
    left: Vec<i16>,
    right: Vec<i16>,
    history: serde_json::Value,
}

fn record(dir: &Path, a: &Stream, b: &Stream, sample_rate: &str) -> Option<Recorded> {
    let (dg, _) = cc::call(&CallMedia {
        a,
        b,
        proto: "RTP/AVP",
        a_extra: String::new(),
        b_extra: String::new(),
        talk_ms: TALK_MS,
    });
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
    replay(config(dir, sample_rate), &opts).expect("replay runs");
    let history: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(out.join("calls.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let json = audio::files(&out.join("queue/acme/ready"), ".json")
        .into_iter()
        .next();
    let json = json?;
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let w = read_wav(&json.with_file_name(meta["audio"]["file"].as_str().unwrap())).unwrap();
    let mut ch = w.samples.into_iter();
    Some(Recorded {
        meta,
        rate: w.rate,
        left: ch.next().unwrap(),
        right: ch.next().unwrap(),
        history,
    })
}

/// Checks one recording: length, rate, a tone per channel, the codec named.
fn check(r: &Recorded, rate: u32, (ha, hb): (f64, f64), codec: &str) {
    assert_eq!(r.rate, rate, "sample rate");
    assert_eq!(r.meta["audio"]["sample_rate"], rate);
    let ms = r.left.len() as i64 * 1000 / rate as i64;
    assert!(
        (ms - TALK_MS as i64).abs() <= 60,
        "{ms} ms recorded, signalling says {TALK_MS}"
    );
    // Skip the first 300 ms (decoders' warm-up) and the last 100 ms.
    let mid = |x: &[i16]| x[(rate as usize * 3 / 10)..x.len() - rate as usize / 10].to_vec();
    assert_tone("subscriber (left)", &mid(&r.left), ha, hb, rate);
    assert_tone("remote (right)", &mid(&r.right), hb, ha, rate);
    assert_eq!(
        r.meta["audio"]["codecs"]["subscriber"], codec,
        "{}",
        r.meta["audio"]
    );
    assert_eq!(r.meta["audio"]["codecs"]["remote"], codec);
    assert_eq!(r.history["decision"], "record");
    assert!(r.history["reason"].is_null(), "{}", r.history);
}

fn sine(hz: u32) -> String {
    format!("sine=frequency={hz}:sample_rate=48000:duration={SECS}")
}

fn ff(hz: u32, codec: &[&str]) -> Stream {
    cc::ffmpeg_rtp(
        &[
            "-f",
            "lavfi",
            "-i",
            &sine(hz),
            "-ac",
            "1",
            "-af",
            "volume=0.5",
        ],
        codec,
    )
}

#[test]
fn g722_is_wideband() {
    if !cc::tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The remote party's 6 kHz tone only exists in a 16 kHz recording.
    let a = ff(440, &["-c:a", "g722", "-ar", "16000"]);
    let b = ff(6000, &["-c:a", "g722", "-ar", "16000"]);
    let r = record(dir.path(), &a, &b, "auto").expect("a recording");
    check(&r, 16000, (440.0, 6000.0), "G722");
}

#[test]
fn opus_is_wideband() {
    if !cc::tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = ff(440, &["-c:a", "libopus", "-ar", "48000", "-b:a", "32k"]);
    let b = ff(6000, &["-c:a", "libopus", "-ar", "48000", "-b:a", "32k"]);
    let r = record(dir.path(), &a, &b, "auto").expect("a recording");
    check(&r, 16000, (440.0, 6000.0), "opus");
}

#[test]
fn l16_at_16khz() {
    if !cc::tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = ff(440, &["-c:a", "pcm_s16be", "-ar", "16000"]);
    let b = ff(5000, &["-c:a", "pcm_s16be", "-ar", "16000"]);
    let r = record(dir.path(), &a, &b, "auto").expect("a recording");
    check(&r, 16000, (440.0, 5000.0), "L16");
}

/// G.726 at every rate, in both packings an SDP can name: RFC 3551's
/// `G726-NN` (ffmpeg's `g726le`) and AAL2's `AAL2-G726-NN` (ffmpeg's
/// big-endian `g726`), each as ffmpeg's RTP muxer signals it.
#[test]
fn g726_every_rate_and_packing() {
    if !cc::tools_present() {
        return;
    }
    for (encoder, name) in [("g726le", "G726"), ("g726", "AAL2-G726")] {
        for kbit in [16, 24, 32, 40] {
            let dir = tempfile::tempdir().unwrap();
            // 20 ms packets: 160 codes of kbit/8 bits after the header.
            let g726 = |hz: u32| {
                cc::ffmpeg_rtp_sized(
                    &[
                        "-f",
                        "lavfi",
                        "-i",
                        &sine(hz),
                        "-ac",
                        "1",
                        "-af",
                        "volume=0.5",
                    ],
                    &["-c:a", encoder, "-b:a", &format!("{kbit}k"), "-ar", "8000"],
                    Some(12 + 20 * kbit as usize / 8),
                )
            };
            let (a, b) = (g726(440), g726(1000));
            assert_eq!(a.rtpmap, format!("{name}-{kbit}/8000"), "ffmpeg's rtpmap");
            assert_eq!(a.packets[0].len(), 12 + 20 * kbit as usize / 8);
            let r = record(dir.path(), &a, &b, "auto").expect("a recording");
            check(&r, 8000, (440.0, 1000.0), "G726");
        }
    }
}

/// iLBC (RFC 3951) in both frame modes, encoded by the RFC's reference
/// encoder (pjproject's copy, from the `pjsua2-python` wheel) and sent
/// one frame a packet (RFC 3952), `mode` signalled in the fmtp.
#[test]
fn ilbc_20_and_30_ms() {
    if !cc::tools_present() {
        return;
    }
    for (mode, bytes) in [(20u32, 38usize), (30, 50)] {
        let dir = tempfile::tempdir().unwrap();
        let enc = |hz: u32, ssrc: u32| {
            let raw = cc::tone_raw(dir.path(), hz, 8000, SECS);
            let bits = cc::ctypes_encode(dir.path(), &format!("ilbc{mode}"), &raw);
            assert_eq!(bits.len() % bytes, 0, "whole {mode} ms frames");
            let frames: Vec<Vec<u8>> = bits.chunks_exact(bytes).map(<[u8]>::to_vec).collect();
            Stream {
                pt: 97,
                rtpmap: "iLBC/8000".into(),
                fmtp: Some(format!("mode={mode}")),
                clock: 8000,
                packets: cc::wrap(&frames, 97, 8 * mode, ssrc),
            }
        };
        let r = record(dir.path(), &enc(440, 1), &enc(1000, 2), "auto").expect("a recording");
        check(&r, 8000, (440.0, 1000.0), "iLBC");
    }
}

/// GSM: ffmpeg's RTP muxer has no GSM; its raw frames are packetised here.
#[test]
fn gsm() {
    if !cc::tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let enc = |hz: u32, ssrc: u32| {
        let out = dir.path().join(format!("{hz}.gsm"));
        let st = std::process::Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-f",
                "lavfi",
                "-i",
                &sine(hz),
                "-ac",
                "1",
                "-af",
                "volume=0.5",
                "-ar",
                "8000",
                "-c:a",
                "libgsm",
                "-f",
                "gsm",
            ])
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success());
        let raw = std::fs::read(&out).unwrap();
        let frames: Vec<Vec<u8>> = raw.chunks_exact(33).map(<[u8]>::to_vec).collect();
        Stream {
            pt: 3,
            rtpmap: "GSM/8000".into(),
            fmtp: None,
            clock: 8000,
            packets: cc::wrap(&frames, 3, 160, ssrc),
        }
    };
    let r = record(dir.path(), &enc(440, 1), &enc(1000, 2), "auto").expect("a recording");
    check(&r, 8000, (440.0, 1000.0), "GSM");
}

/// G.729 Annex A by libbcg729, two 10 ms frames per packet.
#[test]
fn g729() {
    if !cc::tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let enc = |hz: u32, ssrc: u32| {
        let raw = cc::tone_raw(dir.path(), hz, 8000, SECS);
        let bits = cc::ctypes_encode(dir.path(), "g729", &raw);
        let payloads: Vec<Vec<u8>> = bits.chunks_exact(20).map(<[u8]>::to_vec).collect();
        Stream {
            pt: 18,
            rtpmap: "G729/8000".into(),
            fmtp: Some("annexb=no".into()),
            clock: 8000,
            packets: cc::wrap(&payloads, 18, 160, ssrc),
        }
    };
    let r = record(dir.path(), &enc(440, 1), &enc(1000, 2), "auto").expect("a recording");
    check(&r, 8000, (440.0, 1000.0), "G729");
}

/// AMR-NB by sox (opencore-amr), packetised by ffmpeg (octet-aligned) for
/// one party and here (bandwidth-efficient) for the other.
#[test]
fn amr_nb_both_payload_formats() {
    if !cc::tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let amr = |hz: u32| {
        let out = dir.path().join(format!("{hz}.amr"));
        let st = std::process::Command::new("sox")
            .args(["-n", "-r", "8000", "-c", "1", "-t", "amr-nb", "-C", "7"])
            .arg(&out)
            .args([
                "synth",
                &SECS.to_string(),
                "sine",
                &hz.to_string(),
                "vol",
                "0.5",
            ])
            .status()
            .unwrap();
        assert!(st.success(), "sox writes AMR-NB (libsox-fmt-all)");
        out
    };
    let a_file = amr(440);
    let a = cc::ffmpeg_rtp(&["-i", a_file.to_str().unwrap()], &["-c:a", "copy"]);
    assert_eq!(a.fmtp.as_deref(), Some("octet-align=1"));
    let frames = cc::amr_frames(&std::fs::read(amr(1000)).unwrap(), false);
    let be: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| cc::amr_bandwidth_efficient(f, false))
        .collect();
    let b = Stream {
        pt: 98,
        rtpmap: "AMR/8000".into(),
        fmtp: None,
        clock: 8000,
        packets: cc::wrap(&be, 98, 160, 2),
    };
    let r = record(dir.path(), &a, &b, "auto").expect("a recording");
    check(&r, 8000, (440.0, 1000.0), "AMR");
}

/// AMR-WB by libvo-amrwbenc, octet-aligned (ffmpeg) and bandwidth-efficient.
#[test]
fn amr_wb_is_wideband() {
    if !cc::tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let awb = |hz: u32| {
        let raw = cc::tone_raw(dir.path(), hz, 16000, SECS);
        let bytes = cc::ctypes_encode(dir.path(), "amrwb", &raw);
        let p = dir.path().join(format!("{hz}.awb"));
        std::fs::write(&p, &bytes).unwrap();
        p
    };
    let a_file = awb(440);
    let a = cc::ffmpeg_rtp(&["-i", a_file.to_str().unwrap()], &["-c:a", "copy"]);
    let frames = cc::amr_frames(&std::fs::read(awb(6000)).unwrap(), true);
    let be: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| cc::amr_bandwidth_efficient(f, true))
        .collect();
    let b = Stream {
        pt: 98,
        rtpmap: "AMR-WB/16000".into(),
        fmtp: None,
        clock: 16000,
        packets: cc::wrap(&be, 98, 320, 2),
    };
    let r = record(dir.path(), &a, &b, "auto").expect("a recording");
    check(&r, 16000, (440.0, 6000.0), "AMR-WB");
}

/// G.711 in a contract that asks for 16 kHz: resampled by a filter, so
/// no image of the tone appears above 4 kHz (sample repetition would put
/// one at 8000 - f).
#[test]
fn g711_upsampled_to_16khz_without_images() {
    if !cc::tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = ff(1000, &["-c:a", "pcm_mulaw", "-ar", "8000"]);
    let b = ff(440, &["-c:a", "pcm_alaw", "-ar", "8000"]);
    let r = record(dir.path(), &a, &b, "16000").expect("a recording");
    assert_eq!(r.rate, 16000);
    let mid = |x: &[i16]| x[4800..x.len() - 1600].to_vec();
    assert_tone("subscriber", &mid(&r.left), 1000.0, 440.0, 16000);
    assert_tone("remote", &mid(&r.right), 440.0, 1000.0, 16000);
    let image = cc::power(&mid(&r.left), 7000.0, 16000);
    let tone = cc::power(&mid(&r.left), 1000.0, 16000);
    assert!(
        tone > 1000.0 * image,
        "an image at 7 kHz: {image:.0} vs {tone:.0}"
    );
}

/// A re-INVITE 2 s into the call moves the subscriber from G.711 to
/// G.722 (a new SSRC and clock): the timeline holds, both halves carry
/// the tone, the length is the signalling's.
#[test]
fn codec_change_by_reinvite_keeps_the_timeline() {
    if !cc::tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pcmu = |hz: u32| {
        cc::ffmpeg_rtp_sized(
            &[
                "-f",
                "lavfi",
                "-i",
                &sine(hz),
                "-ac",
                "1",
                "-af",
                "volume=0.5",
            ],
            &["-c:a", "pcm_mulaw", "-ar", "8000"],
            Some(172),
        )
    };
    let (a, b) = (pcmu(440), pcmu(1000));
    let g722 = cc::ffmpeg_rtp_sized(
        &[
            "-f",
            "lavfi",
            "-i",
            &sine(440),
            "-ac",
            "1",
            "-af",
            "volume=0.5",
        ],
        &["-c:a", "g722", "-ar", "16000"],
        Some(172),
    );
    let (mut dg, c) = cc::call(&CallMedia {
        a: &a,
        b: &b,
        proto: "RTP/AVP",
        a_extra: String::new(),
        b_extra: String::new(),
        talk_ms: TALK_MS,
    });
    let switch = c.answer_at().add_micros(2_000_000);
    // A's G.711 stops at the switch; its G.722 starts there.
    dg.retain(|d| !(d.src == c.a_rtp && d.ts >= switch));
    for (i, p) in g722.packets.iter().enumerate() {
        let at = switch.add_micros(20_000 * i as i64 + 5_000);
        if at < c.bye_at().unwrap() {
            dg.push(callrec_testkit::scenario::Datagram {
                ts: at,
                src: c.a_rtp,
                dst: c.b_rtp,
                payload: p.clone(),
            });
        }
    }
    let text =
        |d: &callrec_testkit::scenario::Datagram| String::from_utf8_lossy(&d.payload).into_owned();
    let invite = dg
        .iter()
        .find(|d| d.payload.starts_with(b"INVITE"))
        .map(text)
        .unwrap();
    let ok = dg
        .iter()
        .find(|d| text(d).starts_with("SIP/2.0 200") && text(d).contains("INVITE"))
        .map(text)
        .unwrap();
    let header = |m: &str, name: &str| m.lines().find(|l| l.starts_with(name)).unwrap().to_owned();
    let sdp = |ip: std::net::IpAddr, port: u16| {
        format!(
            "v=0\r\no=- 1 2 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 9 0\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
        )
    };
    let msg = |start: &str, body: String| {
        format!(
            "{start}\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKre\r\n{}\r\n{}\r\n{}\r\nCSeq: 2 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            c.a_sip,
            header(&invite, "From:"),
            header(&ok, "To:"),
            header(&invite, "Call-ID:"),
            body.len()
        )
        .into_bytes()
    };
    dg.push(callrec_testkit::scenario::Datagram {
        ts: switch.add_micros(-20_000),
        src: c.a_sip,
        dst: c.b_sip,
        payload: msg(
            &format!("INVITE sip:0312349999@{} SIP/2.0", c.b_sip.ip()),
            sdp(c.a_rtp.ip(), c.a_rtp.port()),
        ),
    });
    dg.push(callrec_testkit::scenario::Datagram {
        ts: switch.add_micros(-10_000),
        src: c.b_sip,
        dst: c.a_sip,
        payload: msg("SIP/2.0 200 OK", sdp(c.b_rtp.ip(), c.b_rtp.port())),
    });
    dg.sort_by_key(|d| d.ts);
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
    replay(config(dir.path(), "auto"), &opts).expect("replay runs");
    let json = audio::files(&out.join("queue/acme/ready"), ".json");
    assert_eq!(
        json.len(),
        1,
        "one segment: a codec change is not a transfer"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json[0]).unwrap()).unwrap();
    let w = read_wav(&json[0].with_file_name(meta["audio"]["file"].as_str().unwrap())).unwrap();
    assert_eq!(w.rate, 8000, "decided at the answer, by G.711");
    let left = &w.samples[0];
    let ms = left.len() as i64 / 8;
    assert!((ms - TALK_MS as i64).abs() <= 60, "{ms} ms");
    assert_tone("G.711 half", &left[2400..15_200], 440.0, 1000.0, 8000);
    assert_tone("G.722 half", &left[17_600..31_200], 440.0, 1000.0, 8000);
    assert_eq!(meta["audio"]["codecs"]["subscriber"], "G722");
    // No gap at the switch longer than a packet or two.
    let quiet = left[15_200..17_600]
        .chunks(80)
        .filter(|c| c.iter().all(|&s| s.abs() < 50))
        .count();
    assert!(quiet <= 3, "{quiet} silent 10 ms blocks around the switch");
}

/// G.729 Annex B (libbcg729 with VAD): talk spurts of the tone over a
/// quiet background noise (about -50 dBov), which the encoder sends as
/// 2-byte SID frames and then not at all (DTX). The tone comes through;
/// the pauses hold comfort noise at roughly the background's level (not
/// silence, not loud), also where nothing was sent; no SID frame counts
/// as undecodable; the length is the signalling's.
#[test]
fn g729_annex_b_comfort_noise() {
    if !cc::tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // White noise of RMS ~100 throughout, a 440 Hz tone 0.8 s on, 0.8 s off.
    let mut seed = 12345u32;
    let noise_rms = 100.0;
    let pcm: Vec<u8> = (0..38_400)
        .flat_map(|i: i32| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            // Uniform in [-1, 1): RMS 1/sqrt(3).
            let u = (seed >> 8) as f64 / (1u32 << 23) as f64 - 1.0;
            let mut v = u * noise_rms * 3f64.sqrt();
            if (i / 6400) % 2 == 0 {
                v += 8000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 8000.0).sin();
            }
            (v as i16).to_le_bytes()
        })
        .collect();
    let raw = dir.path().join("talk.raw");
    std::fs::write(&raw, pcm).unwrap();
    let enc = cc::ctypes_encode(dir.path(), "g729b", &raw);
    // 10 ms frames (length-prefixed), two to a 20 ms packet; a packet
    // whose frames were all left out is not sent.
    let mut frames = Vec::new();
    let mut s = &enc[..];
    while let Some((&n, rest)) = s.split_first() {
        frames.push(rest[..n as usize].to_vec());
        s = &rest[n as usize..];
    }
    let mut packets = Vec::new();
    let (mut seq, mut sid, mut unsent) = (0u16, 0, 0);
    for (k, pair) in frames.chunks(2).enumerate() {
        let payload: Vec<u8> = pair.concat();
        sid += pair.iter().filter(|f| f.len() == 2).count();
        unsent += pair.iter().filter(|f| f.is_empty()).count();
        if !payload.is_empty() {
            packets.push(callrec::media::rtp::build_rtp(
                18,
                seq,
                160 * k as u32,
                7,
                false,
                &payload,
            ));
            seq += 1;
        }
    }
    assert!(sid > 0, "the encoder sent SID frames");
    assert!(unsent > 50, "the encoder left frames out ({unsent})");
    let stream = |ssrc: u32| Stream {
        pt: 18,
        rtpmap: "G729/8000".into(),
        fmtp: None,
        clock: 8000,
        packets: packets
            .iter()
            .map(|p| {
                let mut p = p.clone();
                p[8..12].copy_from_slice(&ssrc.to_be_bytes());
                p
            })
            .collect(),
    };
    let r = record(dir.path(), &stream(7), &stream(8), "auto").expect("a recording");
    assert_eq!(
        r.meta["quality"]["subscriber"]["undecodable"], 0,
        "{}",
        r.meta["quality"]
    );
    let ms = r.left.len() as i64 / 8;
    assert!(
        (ms - TALK_MS as i64).abs() <= 60,
        "{ms} ms recorded, signalling says {TALK_MS}"
    );
    for ch in [&r.left, &r.right] {
        // Talk spurt 2 (1.6..2.4 s of the source) and the pause after it.
        let talk = &ch[13_600..18_400];
        let quiet = &ch[20_000..25_000];
        assert!(
            cc::power(talk, 440.0, 8000) > 60_000.0,
            "no tone in a talk spurt"
        );
        let rms =
            (quiet.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / quiet.len() as f64).sqrt();
        assert!(
            (noise_rms / 4.0..noise_rms * 4.0).contains(&rms),
            "comfort noise RMS {rms:.1}, background {noise_rms}"
        );
        eprintln!("comfort noise RMS {rms:.1} (background {noise_rms})");
        let silent = quiet
            .chunks(80)
            .filter(|b| b.iter().all(|&s| s == 0))
            .count();
        assert_eq!(silent, 0, "10 ms blocks of digital silence in the pause");
        assert!(
            cc::power(quiet, 440.0, 8000) < cc::power(talk, 440.0, 8000) / 1000.0,
            "the tone lingers in the pause"
        );
    }
}

/// RFC 3389 comfort noise with G.711 (payload type 13, as phones with
/// VAD send it): 0.8 s talk spurts of a tone, then one CN packet at
/// -50 dBov and nothing until the next spurt. The pauses hold noise at
/// about the level the CN packet gave, never silence; the spurts the tone.
#[test]
fn rfc3389_comfort_noise_with_g711() {
    let dir = tempfile::tempdir().unwrap();
    let ulaw = |i: u32| {
        let t = i as f64 / 8000.0;
        callrec::media::codec::encode_ulaw(
            (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16,
        )
    };
    // 20 ms steps for 4.6 s: talk in even 0.8 s periods, CN at the start
    // of each odd one.
    let mut packets = Vec::new();
    let mut seq = 0u16;
    for k in 0..230u32 {
        let period = k / 40;
        let ts = 160 * k;
        let payload: Vec<u8> = if period % 2 == 0 {
            (ts..ts + 160).map(ulaw).collect()
        } else if k % 40 == 0 {
            vec![50]
        } else {
            continue;
        };
        let pt = if payload.len() == 1 { 13 } else { 0 };
        packets.push(callrec::media::rtp::build_rtp(
            pt, seq, ts, 9, false, &payload,
        ));
        seq += 1;
    }
    let stream = |ssrc: u32| Stream {
        pt: 0,
        rtpmap: "PCMU/8000".into(),
        fmtp: None,
        clock: 8000,
        packets: packets
            .iter()
            .map(|p| {
                let mut p = p.clone();
                p[8..12].copy_from_slice(&ssrc.to_be_bytes());
                p
            })
            .collect(),
    };
    let r = record(dir.path(), &stream(9), &stream(10), "auto").expect("a recording");
    assert_eq!(r.rate, 8000);
    let ms = r.left.len() as i64 / 8;
    assert!(
        (ms - TALK_MS as i64).abs() <= 60,
        "{ms} ms recorded, signalling says {TALK_MS}"
    );
    for ch in [&r.left, &r.right] {
        let talk = &ch[13_600..18_400];
        let quiet = &ch[20_000..25_000];
        assert!(
            cc::power(talk, 440.0, 8000) > 60_000.0,
            "no tone in a talk spurt"
        );
        let rms =
            (quiet.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / quiet.len() as f64).sqrt();
        // -50 dBov of a full scale of 32768: an RMS of 104.
        eprintln!("RFC 3389 comfort noise RMS {rms:.1} (asked: 104)");
        assert!((70.0..150.0).contains(&rms), "comfort noise RMS {rms:.1}");
        let silent = quiet
            .chunks(80)
            .filter(|b| b.iter().all(|&s| s == 0))
            .count();
        assert_eq!(silent, 0, "10 ms blocks of digital silence in the pause");
    }
    assert_eq!(
        r.meta["audio"]["codecs"]["subscriber"], "PCMU",
        "{}",
        r.meta["audio"]
    );
}

/// A payload type that changes codec on the same SSRC without a
/// re-INVITE (a phone switching from PCMU, static type 0, to the G.722 it
/// offered, timestamps running on): both halves decode, the timeline
/// holds (no gap at the switch, the signalling's length), the recording is
/// 16 kHz as the offered G.722 asks.
#[test]
fn payload_type_changes_codec_without_reinvite() {
    if !cc::tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let g722 = |hz: u32| {
        cc::ffmpeg_rtp_sized(
            &[
                "-f",
                "lavfi",
                "-i",
                &sine(hz),
                "-ac",
                "1",
                "-af",
                "volume=0.5",
            ],
            &["-c:a", "g722", "-ar", "16000"],
            Some(172),
        )
    };
    let (a722, b) = (g722(440), g722(1000));
    // A: 2 s of PCMU (type 0), then its G.722 (type 9), one stream.
    let mut packets = Vec::new();
    for k in 0..a722.packets.len() as u32 {
        let ts = 160 * k;
        let (pt, payload): (u8, Vec<u8>) = if k < 100 {
            let tone = |i: u32| {
                let t = i as f64 / 8000.0;
                callrec::media::codec::encode_ulaw(
                    (8000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as i16,
                )
            };
            (0, (ts..ts + 160).map(tone).collect())
        } else {
            (9, a722.packets[k as usize][12..].to_vec())
        };
        packets.push(callrec::media::rtp::build_rtp(
            pt, k as u16, ts, 21, false, &payload,
        ));
    }
    let a = Stream {
        pt: a722.pt,
        rtpmap: a722.rtpmap.clone(),
        fmtp: a722.fmtp.clone(),
        clock: a722.clock,
        packets,
    };
    let r = record(dir.path(), &a, &b, "auto").expect("a recording");
    assert_eq!(r.rate, 16000, "G.722 offered: a 16 kHz recording");
    let ms = r.left.len() as i64 / 16;
    assert!(
        (ms - TALK_MS as i64).abs() <= 60,
        "{ms} ms recorded, signalling says {TALK_MS}"
    );
    let left = &r.left;
    assert_tone("PCMU half", &left[4_800..30_400], 440.0, 1000.0, 16000);
    assert_tone("G.722 half", &left[35_200..62_400], 440.0, 1000.0, 16000);
    let quiet = left[30_400..35_200]
        .chunks(160)
        .filter(|c| c.iter().all(|&s| s.abs() < 50))
        .count();
    assert!(quiet <= 3, "{quiet} silent 10 ms blocks around the switch");
    assert_eq!(r.meta["audio"]["codecs"]["subscriber"], "G722");
    assert_eq!(r.meta["quality"]["subscriber"]["undecodable"], 0);
}
