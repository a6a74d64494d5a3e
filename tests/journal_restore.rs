//! The call-state journal through the library, without a network: an
//! engine records calls with the live daemon's settings (journal, writes
//! through to the kernel, jitter window on disk), is abandoned mid-call as
//! a killed process would be (nothing of it runs again), and a second
//! engine starts on the same spool as `callrec run` does: `tmp/` recovery,
//! then `restore_journal`. Covers what the live test does not reach: a
//! pause that outlives the crash, a contract gone at the restart, an
//! unrecorded call's history line.

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

fn config(spool: &Path, contract: &str) -> Arc<Config> {
    let text = format!(
        r#"
[general]
timezone = "+09:00"
[recording]
spool_dir = "{spool}"
[announce]
mode = "off"
{acme}{k}"#,
        spool = spool.display(),
        acme = config_text::ACME_UNREACHED,
        k = config_text::K0001_STEREO.replace("K-0001", contract),
    );
    Arc::new(callrec::config::load_str(&text, Path::new("callrec.toml")).unwrap())
}

/// An engine as `callrec run` builds one (one shard, live media worker),
/// after the start-up recovery of `tmp/`, with its journal restored at `now`.
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

/// Feeds the calls' datagrams captured in `from..to` (ms after T0).
fn feed(e: &mut Engine, calls: &[CallSpec], from: i64, to: i64) {
    let t = |ms: i64| Timestamp::from_secs_micros(T0, 0).add_micros(ms * 1000);
    for (i, d) in merge(calls).into_iter().enumerate() {
        if d.ts >= t(from) && d.ts < t(to) {
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

/// The process dies: nothing of the engine runs again. Its shard has had
/// time to take what it was sent (as a live shard would have before the
/// kill), and its files stay as they are.
fn kill(e: Engine) {
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::mem::forget(e);
}

fn at(ms: i64) -> Timestamp {
    Timestamp::from_secs_micros(T0, 0).add_micros(ms * 1000)
}

fn history(spool: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(spool.join("calls.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn published(spool: &Path) -> Vec<(serde_json::Value, std::path::PathBuf)> {
    files(&spool.join("queue/acme/ready"), ".json")
        .into_iter()
        .map(|j| {
            let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&j).unwrap()).unwrap();
            let w = j.with_file_name(m["audio"]["file"].as_str().unwrap());
            (m, w)
        })
        .collect()
}

/// A 20 s call (answered at 2 s), the subscriber's recording paused at
/// 5 s, the process killed at 8 s, restarted at 9 s, resumed at 12 s.
#[test]
fn a_pause_outlives_the_crash_and_the_call_ends_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let cfg = config(&spool, "K-0001");
    let call = CallSpec::simple(1, "0312340001", "0077260312349999", at(0), 18_000);
    let calls = [call];
    let mut e = start(&cfg, &spool, at(0));
    feed(&mut e, &calls, 0, 5_000);
    assert!(e.set_paused("call-1@callrec.test", true).is_some());
    feed(&mut e, &calls, 5_000, 8_000);
    let journal = files(&spool.join("state/calls/eth0"), ".json");
    assert_eq!(journal.len(), 1, "one journal file per call in progress");
    kill(e);

    let mut e = start(&cfg, &spool, at(9_000));
    feed(&mut e, &calls, 9_000, 12_000);
    assert!(
        e.set_paused("call-1@callrec.test", false).is_some(),
        "the restored call answers to its Call-ID"
    );
    feed(&mut e, &calls, 12_000, 30_000);
    e.finish("capture-end");

    let h = history(&spool);
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0]["end_reason"], "bye-subscriber");
    assert_eq!(h[0]["segments"], 2);
    assert_eq!(
        h[0]["billing_start"], h[0]["answered_at"],
        "billing kept across the restart"
    );
    let mut segs = published(&spool);
    segs.sort_by_key(|(m, _)| m["segment"]["index"].as_u64());
    assert_eq!(segs.len(), 2);
    check_cut_while_paused(&segs[0].0, &segs[0].1);
    check_restart_still_paused(&segs[1].0, &segs[1].1);
    assert!(files(&spool.join("state/calls"), ".json").is_empty());
    assert!(
        files(&spool.join("tmp"), "").is_empty(),
        "{:?}",
        files(&spool.join("tmp"), "")
    );
}

/// The contract of a call in progress is gone at the restart; another call,
/// not recorded, is in progress too.
#[test]
fn a_contract_gone_ends_the_call_with_its_line_and_an_unrecorded_call_keeps_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let recorded = CallSpec::simple(1, "0312340001", "0077260312349999", at(0), 18_000);
    // Not a contract's line: not recorded, but it has a history line.
    let skipped = CallSpec::simple(2, "0312345555", "0077260312349999", at(100), 18_000);
    let calls = [recorded, skipped];
    let mut e = start(&config(&spool, "K-0001"), &spool, at(0));
    feed(&mut e, &calls, 0, 6_000);
    assert_eq!(files(&spool.join("state/calls/eth0"), ".json").len(), 2);
    kill(e);

    let mut e = start(&config(&spool, "K-0002"), &spool, at(7_000));
    let h = history(&spool);
    assert_eq!(
        h.len(),
        1,
        "the call that cannot go on has its line at once: {h:?}"
    );
    assert_eq!(h[0]["call_id"], "call-1@callrec.test");
    assert_eq!(h[0]["contract"], "K-0001");
    assert_eq!(h[0]["decision"], "record");
    assert_eq!(h[0]["end_reason"], "restart-failed");
    assert_eq!(
        h[0]["ended_at"].as_str().unwrap(),
        at(7_000).rfc3339(9 * 3600)
    );
    let aside = files(&spool.join("state/corrupt"), ".json");
    assert_eq!(aside.len(), 1, "moved aside, not deleted");
    feed(&mut e, &calls, 7_000, 30_000);
    e.finish("capture-end");
    let h = history(&spool);
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[1]["call_id"], "call-2@callrec.test");
    assert_eq!(
        (h[1]["decision"].as_str(), h[1]["reason"].as_str()),
        (Some("skip"), Some("not-a-contract-number"))
    );
    assert_eq!(
        h[1]["end_reason"], "bye-subscriber",
        "ended by its own BYE after the restart"
    );
    // The recording made before the crash is still published.
    let segs = published(&spool);
    assert_eq!(segs.len(), 1);
    assert_eq!(segs[0].0["end_reason"], "recovered");
    assert!(files(&spool.join("state/calls"), ".json").is_empty());
}

/// The segment the kill cut: recovered with its quality and its pause.
fn check_cut_while_paused(m1: &serde_json::Value, w1: &Path) {
    assert_eq!(
        (m1["end_reason"].as_str(), m1["segment"]["index"].as_u64()),
        (Some("recovered"), Some(1))
    );
    assert!(
        m1["quality"]["subscriber"]["packets"].as_u64().unwrap() > 200,
        "{m1}"
    );
    // Recorded from 2 s to the kill at 8 s: 6 s, the jitter window included.
    let d1 = m1["audio"]["duration_ms"].as_u64().unwrap();
    assert!((5_980..=6_000).contains(&d1), "{d1} ms");
    // The pause as the intent last had it (refreshed once a second).
    let from = m1["pauses"][0]["from_ms"].as_u64().unwrap();
    assert!((2_960..=3_000).contains(&from), "{m1}");
    let s1 = read_wav(w1).unwrap();
    assert!(
        s1.samples[0][3 * 8000..].iter().all(|&x| x == 0),
        "muted from the pause at 5 s to the kill"
    );
    assert!(power(&s1.samples[0][8000..16000], 440.0) > 0.0);
}

/// The restart segment: muted from its first sample until the resume.
fn check_restart_still_paused(m2: &serde_json::Value, w2: &Path) {
    assert_eq!(m2["segment"]["cause"], "restart");
    assert_eq!(m2["segment"]["index"], 2);
    assert_eq!(m2["end_reason"], "bye-subscriber");
    assert_eq!(
        m2["pauses"][0]["from_ms"], 0,
        "paused from its first sample: {m2}"
    );
    // Stamped with the last packet's time before the request (20 ms steps).
    let to = m2["pauses"][0]["to_ms"].as_u64().unwrap();
    assert!((2_960..=3_000).contains(&to), "{m2}");
    let s2 = read_wav(w2).unwrap();
    assert!(
        s2.samples[0][..3 * 8000 - 800].iter().all(|&x| x == 0),
        "still muted after the restart"
    );
    let after = &s2.samples[0][3 * 8000 + 2_000..];
    assert!(
        power(after, 440.0) > 100.0 * power(after, 1000.0),
        "the subscriber after the resume"
    );
}
