//! Per-packet cost of each decoder beside G.711's table, through the whole
//! recording path a shard runs per packet (`CallRecorder::on_rtp`: RTP
//! parse, jitter buffer, decode, resample, mix, WAV write). The payloads
//! are real: encoded at start by the same independent encoders the tests
//! use (ffmpeg, sox, libbcg729, libvo-amrwbenc and iLBC through encoders.py); a
//! codec whose encoder is missing is skipped with a message.
//! Run: `cargo bench --bench codecs`.

#[path = "../tests/support/codec_calls.rs"]
mod cc;

use std::time::{Duration, Instant};

use callrec::config::{AudioFormat, Channels};
use callrec::media::codec::Format;
use callrec::recording::recorder::{CallRecorder, Leg, RecorderParams};
use callrec::time::Timestamp;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const START: Timestamp = Timestamp(1_795_221_000_000_000);
const SECS: f64 = 10.0;

struct Case {
    name: &'static str,
    fmt: Format,
    rate: u32,
    stream: cc::Stream,
}

fn sine(hz: u32) -> String {
    format!("sine=frequency={hz}:sample_rate=48000:duration={SECS}")
}

fn ff(codec: &[&str], pkt: Option<usize>) -> cc::Stream {
    cc::ffmpeg_rtp_sized(&["-f", "lavfi", "-i", &sine(440), "-ac", "1"], codec, pkt)
}

fn cases(dir: &std::path::Path) -> Vec<Case> {
    let f = |name: &str, clock: u32, fmtp: &str| {
        let (enc, rest) = name.split_once('/').unwrap_or((name, ""));
        let _ = rest;
        Format::from_sdp(enc, clock, 1, fmtp).expect("decodable")
    };
    let mut v = vec![
        Case {
            name: "pcmu_8k_table",
            fmt: f("PCMU", 8000, ""),
            rate: 8000,
            stream: ff(&["-c:a", "pcm_mulaw", "-ar", "8000"], Some(172)),
        },
        Case {
            name: "pcmu_to_16k",
            fmt: f("PCMU", 8000, ""),
            rate: 16000,
            stream: ff(&["-c:a", "pcm_mulaw", "-ar", "8000"], Some(172)),
        },
        Case {
            name: "g722_16k",
            fmt: f("G722", 8000, ""),
            rate: 16000,
            stream: ff(&["-c:a", "g722", "-ar", "16000"], Some(172)),
        },
        Case {
            name: "g726_32",
            fmt: f("G726-32", 8000, ""),
            rate: 8000,
            stream: ff(&["-c:a", "g726le", "-b:a", "32k", "-ar", "8000"], Some(92)),
        },
        Case {
            name: "opus_16k",
            fmt: f("opus", 48000, ""),
            rate: 16000,
            stream: ff(&["-c:a", "libopus", "-ar", "48000", "-b:a", "32k"], None),
        },
        Case {
            name: "l16_16k",
            fmt: f("L16", 16000, ""),
            rate: 16000,
            stream: ff(&["-c:a", "pcm_s16be", "-ar", "16000"], Some(652)),
        },
    ];
    let raw8 = cc::tone_raw(dir, 440, 8000, SECS);
    let g729 = cc::ctypes_encode(dir, "g729", &raw8);
    let p: Vec<Vec<u8>> = g729.chunks_exact(20).map(<[u8]>::to_vec).collect();
    v.push(Case {
        name: "g729",
        fmt: f("G729", 8000, ""),
        rate: 8000,
        stream: cc::Stream {
            pt: 18,
            rtpmap: "G729/8000".into(),
            fmtp: None,
            clock: 8000,
            packets: cc::wrap(&p, 18, 160, 1),
        },
    });
    // iLBC 20 ms (RFC 3951 reference encoder, pjsua2-python's copy).
    let ilbc = cc::ctypes_encode(dir, "ilbc20", &raw8);
    let p: Vec<Vec<u8>> = ilbc.chunks_exact(38).map(<[u8]>::to_vec).collect();
    v.push(Case {
        name: "ilbc_20",
        fmt: f("iLBC", 8000, "mode=20"),
        rate: 8000,
        stream: cc::Stream {
            pt: 97,
            rtpmap: "iLBC/8000".into(),
            fmtp: Some("mode=20".into()),
            clock: 8000,
            packets: cc::wrap(&p, 97, 160, 1),
        },
    });
    let raw16 = cc::tone_raw(dir, 440, 16000, SECS);
    let awb = cc::ctypes_encode(dir, "amrwb", &raw16);
    let frames = cc::amr_frames(&awb, true);
    let oa: Vec<Vec<u8>> = frames
        .iter()
        .map(|fr| [vec![0xf0], fr.clone()].concat())
        .collect();
    v.push(Case {
        name: "amr_wb_octet",
        fmt: f("AMR-WB", 16000, "octet-align=1"),
        rate: 16000,
        stream: cc::Stream {
            pt: 97,
            rtpmap: "AMR-WB/16000".into(),
            fmtp: None,
            clock: 16000,
            packets: cc::wrap(&oa, 97, 320, 1),
        },
    });
    let amr = dir.join("t.amr");
    let ok = std::process::Command::new("sox")
        .args(["-n", "-r", "8000", "-c", "1", "-t", "amr-nb", "-C", "7"])
        .arg(&amr)
        .args(["synth", &SECS.to_string(), "sine", "440"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        let frames = cc::amr_frames(&std::fs::read(&amr).unwrap(), false);
        let be: Vec<Vec<u8>> = frames
            .iter()
            .map(|fr| cc::amr_bandwidth_efficient(fr, false))
            .collect();
        v.push(Case {
            name: "amr_nb_bandwidth_eff",
            fmt: f("AMR", 8000, ""),
            rate: 8000,
            stream: cc::Stream {
                pt: 97,
                rtpmap: "AMR/8000".into(),
                fmtp: None,
                clock: 8000,
                packets: cc::wrap(&be, 97, 160, 1),
            },
        });
    }
    let gsm = dir.join("t.gsm");
    let ok = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-f",
            "lavfi",
            "-i",
            &sine(440),
            "-ac",
            "1",
            "-ar",
            "8000",
            "-c:a",
            "libgsm",
            "-f",
            "gsm",
        ])
        .arg(&gsm)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        let p: Vec<Vec<u8>> = std::fs::read(&gsm)
            .unwrap()
            .chunks_exact(33)
            .map(<[u8]>::to_vec)
            .collect();
        v.push(Case {
            name: "gsm",
            fmt: f("GSM", 8000, ""),
            rate: 8000,
            stream: cc::Stream {
                pt: 3,
                rtpmap: "GSM/8000".into(),
                fmtp: None,
                clock: 8000,
                packets: cc::wrap(&p, 3, 160, 1),
            },
        });
    }
    v
}

/// Both legs send the same stream (their own SSRC), in capture order.
fn packets(c: &Case) -> Vec<(Leg, Timestamp, Vec<u8>)> {
    let s = &c.stream;
    let ts0 = u32::from_be_bytes(s.packets[0][4..8].try_into().unwrap());
    let mut v = Vec::new();
    for (leg, ssrc) in [(Leg::Subscriber, 1u8), (Leg::Remote, 2)] {
        for p in &s.packets {
            let ts = u32::from_be_bytes(p[4..8].try_into().unwrap());
            let us = ts.wrapping_sub(ts0) as i64 * 1_000_000 / s.clock as i64;
            let mut p = p.clone();
            p[11] ^= ssrc;
            v.push((leg, START.add_micros(us + 3000 * ssrc as i64), p));
        }
    }
    v.sort_by_key(|p| p.1);
    v
}

fn recorder(dir: &std::path::Path, c: &Case) -> CallRecorder {
    let mut r = CallRecorder::create(RecorderParams {
        path: dir.join("bench.wav"),
        format: AudioFormat::Pcm16,
        channels: Channels::Stereo,
        start: START,
        telephone_event_pt: [None, None],
        sample_rate: c.rate,
    })
    .expect("create");
    for leg in [Leg::Subscriber, Leg::Remote] {
        r.set_formats(leg, &[(c.stream.pt, c.fmt)], &[]);
    }
    r
}

fn bench(cr: &mut Criterion) {
    if !cc::tools_present() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = cases(dir.path());
    let mut g = cr.benchmark_group("codecs");
    let mut report = Vec::new();
    for c in &cases {
        let pkts = packets(c);
        let end = pkts.last().unwrap().1;
        g.throughput(Throughput::Elements(pkts.len() as u64));
        g.bench_function(format!("packet_{}", c.name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut rec = recorder(dir.path(), c);
                    let t0 = Instant::now();
                    for (leg, ts, p) in &pkts {
                        rec.on_rtp(*leg, *ts, p);
                    }
                    total += t0.elapsed();
                    let s = rec.finish(end).expect("finish");
                    assert!(s.quality[0].decoded > 0, "{}: nothing decoded", c.name);
                }
                total
            })
        });
        // Plain figure: ns per packet over 20 calls.
        let mut t = Duration::ZERO;
        for _ in 0..20 {
            let mut rec = recorder(dir.path(), c);
            let t0 = Instant::now();
            for (leg, ts, p) in &pkts {
                rec.on_rtp(*leg, *ts, p);
            }
            t += t0.elapsed();
            rec.finish(end).expect("finish");
        }
        report.push((c.name, t.as_nanos() as f64 / (20 * pkts.len()) as f64));
    }
    g.finish();
    let base = report[0].1;
    for (name, ns) in report {
        println!(
            "per packet {name:>22}: {ns:>7.0} ns ({:.1}x G.711 table)",
            ns / base
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
