//! A 16 kHz recording killed mid-call keeps its jitter window: the live
//! daemon mirrors the two legs' 16 kHz rings beside the WAV
//! (`recording::tail`), and the next start appends the last 200 ms the
//! WAV did not have yet. Through the library as `callrec run` wires it
//! (live media worker, journal, `tmp/` recovery), without a network.

#[path = "support/audio.rs"]
mod audio;
#[path = "support/config.rs"]
mod config_text;
use audio::{files, power};
use callrec::capture::{LinkType, Packet};
use callrec::config::Config;
use callrec::daemon::engine::Engine;
use callrec::daemon::media::MediaWorker;
use callrec::daemon::shard::ShardPool;
use callrec::delivery::spool::{Spool, SpoolUsage};
use callrec::recording::wav::read_wav;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::udp_frame;
use callrec_testkit::scenario::{CallSpec, merge};
use std::path::Path;
use std::sync::Arc;

const T0: i64 = 1_795_221_000;

fn config(spool: &Path) -> Arc<Config> {
    let text = format!(
        "[general]\ntimezone = \"+09:00\"\n[recording]\nspool_dir = \"{}\"\n[announce]\nmode = \"off\"\n{}{}sample_rate = \"16000\"\n",
        spool.display(),
        config_text::ACME_UNREACHED,
        config_text::K0001_STEREO,
    );
    Arc::new(callrec::config::load_str(&text, Path::new("callrec.toml")).unwrap())
}

/// An engine as `callrec run` builds one, after the start-up recovery.
fn start(cfg: &Arc<Config>, spool: &Path, now: Timestamp) -> Engine {
    std::fs::create_dir_all(spool).unwrap();
    let s = Spool::open(spool).unwrap();
    callrec::daemon::recovery::recover_tmp(&s).unwrap();
    let usage = SpoolUsage::measure(&s).unwrap();
    let pool = ShardPool::start(1, 4096, true, |i| {
        MediaWorker::new(cfg.clone(), i, usage.clone()).live()
    })
    .unwrap();
    let mut e = Engine::new(cfg.clone(), spool, pool, None, usage).unwrap();
    e.restore_journal(&spool.join("state/calls/eth0"), now);
    e
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_secs_micros(T0, 0).add_micros(ms * 1000)
}

/// Feeds the calls' datagrams captured in `from..to` (ms after T0).
fn feed(e: &mut Engine, calls: &[CallSpec], from: i64, to: i64) {
    for (i, d) in merge(calls).into_iter().enumerate() {
        if d.ts >= at(from) && d.ts < at(to) {
            let frame = udp_frame(d.src, d.dst, &d.payload);
            e.on_packet(&Packet {
                index: i as u64 + 1,
                ts: d.ts,
                link: LinkType::Ethernet,
                data: &frame,
                orig_len: frame.len() as u32,
            });
        }
    }
}

/// Every other sample: the tones (440 and 1000 Hz) seen at 8 kHz.
fn at_8k(x: &[i16]) -> Vec<i16> {
    x.iter().step_by(2).copied().collect()
}

/// A call answered at 2 s, the process killed at 8 s (nothing of it runs
/// again), restarted at 9 s: the cut segment holds the 6 s up to the kill,
/// its last 200 ms (the jitter window) included, at 16 kHz.
#[test]
fn a_killed_16khz_recording_keeps_its_jitter_window() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let cfg = config(&spool);
    let calls = [CallSpec::simple(
        1,
        "0312340001",
        "0077260312349999",
        at(0),
        18_000,
    )];
    let mut e = start(&cfg, &spool, at(0));
    feed(&mut e, &calls, 0, 8_000);
    let tails = files(&spool.join("tmp"), ".tail");
    assert_eq!(tails.len(), 1, "the window is mirrored: {tails:?}");
    // The shard takes what it was sent, then the process dies.
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::mem::forget(e);

    let mut e = start(&cfg, &spool, at(9_000));
    feed(&mut e, &calls, 9_000, 30_000);
    e.finish("capture-end");
    let json = files(&spool.join("queue/acme/ready"), ".json");
    let cut = json
        .iter()
        .map(|j| serde_json::from_slice::<serde_json::Value>(&std::fs::read(j).unwrap()).unwrap())
        .zip(&json)
        .find(|(m, _)| m["end_reason"] == "recovered")
        .expect("the cut segment is published");
    let (m, j) = cut;
    assert_eq!(m["audio"]["sample_rate"], 16000, "{m}");
    // Without the window the file would end 200 ms early (5.8 s).
    let ms = m["audio"]["duration_ms"].as_u64().unwrap();
    assert!((5_980..=6_000).contains(&ms), "{ms} ms");
    let w = read_wav(&j.with_file_name(m["audio"]["file"].as_str().unwrap())).unwrap();
    assert_eq!(w.rate, 16000);
    let n = w.samples[0].len();
    assert!((95_680..=96_000).contains(&n), "{n} samples");
    // The restored window carries each party's tone on its channel.
    let window = |ch: usize| at_8k(&w.samples[ch][n - 3_000..n - 200]);
    let (l, r) = (window(0), window(1));
    assert!(
        power(&l, 440.0) > 100.0 * power(&l, 1000.0),
        "subscriber in the window"
    );
    assert!(
        power(&r, 1000.0) > 100.0 * power(&r, 440.0),
        "remote in the window"
    );
    assert!(
        files(&spool.join("tmp"), ".tail").is_empty(),
        "the tail file is used once"
    );
}
