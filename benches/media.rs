//! Per-packet cost of the recording media path: RTP parse, jitter buffer,
//! G.711 decode, mix and WAV write, through `CallRecorder` as a shard
//! worker drives it. Run: `cargo bench --bench media -- --quick`.

use std::time::{Duration, Instant};

use callrec::config::{AudioFormat, Channels};
use callrec::media::codec::{
    Law, ULAW_DECODE, decode_into, decode_law_into, encode_law_into, encode_ulaw,
};
use callrec::media::rtp::build_rtp;
use callrec::recording::recorder::{CallRecorder, Leg, RecorderParams};
use callrec::time::Timestamp;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const PER_LEG: usize = 1000;
const START: Timestamp = Timestamp(1_795_221_000_000_000);

/// 1000 packets of 160 bytes per leg (20 s), in capture order, with a
/// little deterministic jitter.
fn packets() -> Vec<(Leg, Timestamp, Vec<u8>)> {
    let payload: Vec<u8> = (0..160).map(|i| (i * 37 % 251) as u8).collect();
    let mut v = Vec::with_capacity(2 * PER_LEG);
    for i in 0..PER_LEG {
        for (leg, pt, ssrc) in [(Leg::Subscriber, 0u8, 1u32), (Leg::Remote, 8, 2)] {
            let t = START.add_micros(i as i64 * 20_000 + (i as i64 * 7919 % 5000));
            v.push((
                leg,
                t,
                build_rtp(pt, i as u16, 160 * i as u32, ssrc, false, &payload),
            ));
        }
    }
    v.sort_by_key(|p| p.1);
    v
}

fn recorder(dir: &std::path::Path, format: AudioFormat, channels: Channels) -> CallRecorder {
    CallRecorder::create(RecorderParams {
        path: dir.join("bench.wav"),
        format,
        channels,
        start: START,
        telephone_event_pt: [Some(101), Some(101)],
        sample_rate: 8000,
    })
    .expect("create")
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pkts = packets();
    let end = START.add_micros(PER_LEG as i64 * 20_000);
    let mut g = c.benchmark_group("media");
    g.throughput(Throughput::Elements(pkts.len() as u64));
    for (name, format, channels) in [
        ("stereo_pcm16", AudioFormat::Pcm16, Channels::Stereo),
        ("mono_pcm16", AudioFormat::Pcm16, Channels::Mono),
        ("stereo_ulaw", AudioFormat::Ulaw, Channels::Stereo),
    ] {
        // The packet path alone: create and finish are outside the timing.
        g.bench_function(format!("packets_{name}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut rec = recorder(dir.path(), format, channels);
                    let t0 = Instant::now();
                    for (leg, ts, p) in &pkts {
                        rec.on_rtp(*leg, *ts, p);
                    }
                    total += t0.elapsed();
                    rec.finish(end).expect("finish");
                }
                total
            })
        });
    }
    // A whole 20 s call: create, packets, finish (pad, patch, fsync, SHA-256).
    g.bench_function("call_stereo_pcm16_with_finish", |b| {
        b.iter(|| {
            let mut rec = recorder(dir.path(), AudioFormat::Pcm16, Channels::Stereo);
            for (leg, ts, p) in &pkts {
                rec.on_rtp(*leg, *ts, p);
            }
            rec.finish(end).expect("finish")
        })
    });
    g.finish();

    // G.711 decoding of one 20 ms packet: the table loop and the AVX2
    // path chosen at run time (the jitter buffer's per-packet decode).
    let payload: Vec<u8> = (0..160).map(|i| (i * 37 % 251) as u8).collect();
    let mut out = [0i16; 160];
    let mut g = c.benchmark_group("g711");
    g.throughput(Throughput::Elements(160));
    g.bench_function("ulaw_table_160", |b| {
        b.iter(|| {
            decode_into(&ULAW_DECODE, std::hint::black_box(&payload), &mut out);
            out[159]
        })
    });
    for (name, law) in [("ulaw_160", Law::Ulaw), ("alaw_160", Law::Alaw)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                decode_law_into(law, std::hint::black_box(&payload), &mut out);
                out[159]
            })
        });
    }
    // And encoding one 20 ms packet's mixed samples into a μ-law WAV.
    let samples: Vec<i16> = (0..160)
        .map(|i| (i * 2731 % 65_521 - 32_760) as i16)
        .collect();
    let mut codes = [0u8; 160];
    g.bench_function("ulaw_encode_table_160", |b| {
        b.iter(|| {
            for (c, &x) in codes.iter_mut().zip(std::hint::black_box(&samples)) {
                *c = encode_ulaw(x);
            }
            codes[159]
        })
    });
    g.bench_function("ulaw_encode_160", |b| {
        b.iter(|| {
            encode_law_into(Law::Ulaw, std::hint::black_box(&samples), &mut codes);
            codes[159]
        })
    });
    g.finish();

    // Plain figure for the report: ns per packet over many calls.
    let calls = 200;
    let mut t = Duration::ZERO;
    for _ in 0..calls {
        let mut rec = recorder(dir.path(), AudioFormat::Pcm16, Channels::Stereo);
        let t0 = Instant::now();
        for (leg, ts, p) in &pkts {
            rec.on_rtp(*leg, *ts, p);
        }
        t += t0.elapsed();
        rec.finish(end).expect("finish");
    }
    let n = (calls * pkts.len()) as f64;
    println!(
        "media packet path (stereo pcm16): {:.0} ns/packet, {:.2} M packets/s on one core",
        t.as_nanos() as f64 / n,
        n / t.as_secs_f64() / 1e6
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
