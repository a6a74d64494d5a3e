//! Issue 18, findings 1 and 2: capture stamps that step or jump.
//!
//! A capture whose packets from some point on are stamped earlier or later
//! (merged captures, a capture agent with a wrong clock), a single packet
//! stamped far in the future, a random byte flip in a record's time: each
//! replayed beside the clean capture. Every call keeps its audio (it may
//! lose the shifted packets, nothing more), no call ends early or by
//! RTP timeout, and no recording is padded with the time the clock
//! jumped.

#[path = "support/hostile.rs"]
mod hostile;
use callrec::time::Timestamp;
use callrec_testkit::scenario::{CallSpec, Datagram, Voice, merge};
use hostile::{Rng, Run, T0, config, replay_datagrams, tone_ms};

/// Two overlapping recorded calls: A (outbound, stereo: 440 Hz
/// subscriber, 1000 Hz remote, 6 s) and B (inbound, mono: 600 and
/// 1300 Hz, 3 s).
fn two_calls() -> Vec<CallSpec> {
    let t = |ms: i64| Timestamp::from_millis(T0 * 1000 + ms);
    let mut a = CallSpec::simple(1, "0312340001", "0077260312349999", t(0), 6_000);
    a.ring_ms = 1_000;
    let mut b = CallSpec::simple(2, "0398765432", "0612340002", t(1_500), 3_000);
    b.ring_ms = 500;
    b.bye_from_a = false;
    b.a_voice = Voice::tone(600.0);
    b.b_voice = Voice::tone(1300.0);
    vec![a, b]
}

/// (Call-ID, channel, tone) of every tone the two calls record.
const TONES: [(&str, usize, f64); 4] = [
    ("call-1@callrec.test", 0, 440.0),
    ("call-1@callrec.test", 1, 1000.0),
    ("call-2@callrec.test", 0, 600.0),
    ("call-2@callrec.test", 0, 1300.0),
];

fn ms_between(a: &serde_json::Value, b: &serde_json::Value) -> i64 {
    let p = |v: &serde_json::Value| {
        callrec::report::parse_rfc3339(v.as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("bad time {v}"))
    };
    (p(b) - p(a)) / 1000
}

/// The disturbed run keeps every call: each tone within `lost_ms` of the
/// clean run, each recording at most `longer_ms` longer, the same end
/// reasons, and no call ending before its answer.
fn assert_kept(what: &str, clean: &Run, run: &Run, lost_ms: i64, longer_ms: i64) {
    for h in &run.history {
        if let (Some(_), Some(_)) = (h["answered_at"].as_str(), h["ended_at"].as_str()) {
            assert!(
                ms_between(&h["answered_at"], &h["ended_at"]) >= 0,
                "{what}: {} ended before its answer: {h}",
                h["call_id"]
            );
        }
    }
    for (call, ch, hz) in TONES {
        let c = clean.recording(call).expect("clean recording");
        let Some(r) = run.recording(call) else {
            panic!(
                "{what}: {call} not recorded; history {:?}",
                run.history_of(call)
            );
        };
        let (want, got) = (tone_ms(&c.ch[ch], hz), tone_ms(&r.ch[ch], hz));
        assert!(
            got >= want - lost_ms,
            "{what}: {call} channel {ch} holds {got} ms of {hz} Hz, the clean run {want} ms; history {:?}",
            run.history_of(call)
        );
        assert!(
            r.duration_ms() <= c.duration_ms() + longer_ms,
            "{what}: {call} lasts {} ms, the clean run {} ms",
            r.duration_ms(),
            c.duration_ms()
        );
        assert_eq!(
            run.history_of(call).unwrap()["end_reason"],
            clean.history_of(call).unwrap()["end_reason"],
            "{what}: {call}"
        );
    }
}

fn clean_run(dir: &std::path::Path) -> Run {
    let run = replay_datagrams(dir, "clean", config(dir, ""), &merge(&two_calls()));
    for (call, ch, hz) in TONES {
        let r = run.recording(call).expect("clean run records both calls");
        assert!(tone_ms(&r.ch[ch], hz) > 2_500, "{call} {hz}");
    }
    run
}

/// Finding 1: from the middle on every packet is stamped an hour earlier.
/// Both calls used to end with 0 ms of audio, `ended_at` an hour before
/// `answered_at`.
#[test]
fn a_step_back_of_an_hour_keeps_both_recordings() {
    let dir = tempfile::tempdir().unwrap();
    let clean = clean_run(dir.path());
    let step_at = Timestamp::from_millis(T0 * 1000 + 3_300);
    let all: Vec<Datagram> = merge(&two_calls())
        .into_iter()
        .map(|mut d| {
            if d.ts >= step_at {
                d.ts = d.ts.add_micros(-3_600_000_000);
            }
            d
        })
        .collect();
    let run = replay_datagrams(dir.path(), "step", config(dir.path(), ""), &all);
    assert_kept("a step of -1 h at 3.3 s", &clean, &run, 60, 60);
    assert!(run.report.stats.clock_steps >= 1, "{:?}", run.report.stats);
}

/// Finding 2: one packet stamped 120 s ahead used to end the other call
/// by RTP timeout, losing its last 4 s.
#[test]
fn one_packet_from_the_future_ends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clean = clean_run(dir.path());
    let mut all = merge(&two_calls());
    // An RTP packet of call B, 2 s into call A's conversation.
    let i = all
        .iter()
        .position(|d| {
            d.ts >= Timestamp::from_millis(T0 * 1000 + 3_000) && d.src.port() != 5060 && {
                d.src.ip().to_string().ends_with(".3")
            }
        })
        .unwrap();
    all[i].ts = all[i].ts.add_micros(120_000_000);
    let run = replay_datagrams(dir.path(), "future", config(dir.path(), ""), &all);
    assert_kept("one packet +120 s", &clean, &run, 20, 60);
    assert_eq!(run.report.stats.clock_outliers, 1, "{:?}", run.report.stats);
}

/// The kind: steps of ±1 s, ±1 min and ±1 h at random points (in the
/// ringing, mid-call, near the end), each replayed beside the clean run.
#[test]
fn steps_of_a_second_a_minute_an_hour_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    let clean = clean_run(dir.path());
    let base = merge(&two_calls());
    let (first, last) = (base[0].ts, base[base.len() - 1].ts);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut n = 0;
    for shift_s in [1i64, -1, 60, -60, 3600, -3600] {
        for _ in 0..3 {
            let at = first.add_micros(rng.below(last.since(first) as u64) as i64);
            let all: Vec<Datagram> = base
                .iter()
                .cloned()
                .map(|mut d| {
                    if d.ts >= at {
                        d.ts = d.ts.add_micros(shift_s * 1_000_000);
                    }
                    d
                })
                .collect();
            n += 1;
            let run = replay_datagrams(
                dir.path(),
                &format!("step{n}"),
                config(dir.path(), ""),
                &all,
            );
            let what = format!("a step of {shift_s} s at {} ms", at.since(first) / 1000);
            // A step while only ringing calls are on the link cannot be
            // told from a quiet pause: it may lengthen the ringing, never
            // a recording. Mid-call, at most the packets at the step.
            assert_kept(&what, &clean, &run, 100, 100);
        }
    }
}

/// One record whose time has a random byte flipped (the same corruption
/// that once ended calls): placed by the clock, whatever the flip did.
#[test]
fn byte_flips_in_a_record_time_change_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let clean = clean_run(dir.path());
    let base = merge(&two_calls());
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for n in 0..12 {
        let mut all = base.clone();
        // Past the first second, so that the flip lands in a busy link.
        let i = 60 + rng.below(all.len() as u64 - 120) as usize;
        let us = all[i].ts.micros();
        let (secs, frac) = (us.div_euclid(1_000_000) as u32, us.rem_euclid(1_000_000));
        let byte = rng.below(4) as u32;
        let flip = 1 + rng.below(255) as u32;
        let secs = secs ^ (flip << (8 * byte));
        all[i].ts = Timestamp::from_secs_micros(secs as i64, frac);
        let run = replay_datagrams(
            dir.path(),
            &format!("flip{n}"),
            config(dir.path(), ""),
            &all,
        );
        let what = format!("packet {i}: byte {byte} of its seconds ^ {flip:#x}");
        assert_kept(&what, &clean, &run, 20, 60);
    }
}

/// Live capture on a silent link: the engine is ticked with the wall
/// clock, which it trusts, so timeouts still fire with no packet at all.
#[test]
fn a_silent_link_still_times_calls_out_through_on_idle() {
    use callrec::capture::{LinkType, Packet};
    use callrec::daemon::engine::Engine;
    use callrec::daemon::media::MediaWorker;
    use callrec::daemon::shard::ShardPool;
    use callrec_testkit::pcapgen::udp_frame;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let mut cfg = config(dir.path(), "");
    cfg.recording.spool_dir = spool.clone();
    let cfg = std::sync::Arc::new(cfg);
    std::fs::create_dir_all(&spool).unwrap();
    let s = callrec::delivery::Spool::open(&spool).unwrap();
    let usage = callrec::delivery::SpoolUsage::measure(&s).unwrap();
    let pool = ShardPool::start(1, 1024, false, |i| {
        MediaWorker::new(cfg.clone(), i, usage.clone())
    })
    .unwrap();
    let mut engine = Engine::new(cfg.clone(), &spool, pool, None, usage).unwrap();
    // A call answered at 1 s whose parties stop sending after 3 s: then
    // nothing at all on the link.
    let mut call = two_calls().remove(0);
    call.talk_ms = Some(60_000);
    let datagrams: Vec<Datagram> = call
        .datagrams()
        .into_iter()
        .filter(|d| d.ts <= call.answer_at().add_micros(3_000_000))
        .collect();
    for (i, d) in datagrams.iter().enumerate() {
        let frame = udp_frame(d.src, d.dst, &d.payload);
        engine.on_packet(&Packet {
            index: i as u64 + 1,
            ts: d.ts,
            link: LinkType::Ethernet,
            data: &frame,
            orig_len: frame.len() as u32,
        });
    }
    let last = datagrams.last().unwrap().ts;
    for s in 1..=70 {
        engine.on_idle(last.add_micros(s * 1_000_000));
    }
    assert_eq!(engine.active_recorded(), 0, "the call timed out");
    engine.finish("capture-end");
    let history = std::fs::read_to_string(spool.join("calls.jsonl")).unwrap();
    assert!(history.contains("\"rtp-timeout\""), "{history}");
}
