//! Issue 18's clock property: the 6-call demo capture (`make_capture
//! --demo`, replayed with `conf/callrec.toml`) with a random clock
//! disturbance injected, one packet or a run of consecutive packets
//! stamped ±1 s, ±1 min, ±1 h or +120 s away. The recordings of the calls
//! none of whose packets was shifted are byte-identical to the clean run's
//! (metadata too); a disturbed call loses at most the shifted packets.

#[path = "support/hostile.rs"]
mod hostile;
use callrec_testkit::scenario::{CallSpec, Datagram, demo_calls};
use hostile::{Recording, Run, replay_into, write_datagrams};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::OnceLock;

/// Every datagram of the demo, in capture order, with the index of the
/// call it belongs to (the order `scenario::merge` gives).
fn labelled() -> &'static Vec<(usize, Datagram)> {
    static ALL: OnceLock<Vec<(usize, Datagram)>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut v: Vec<(usize, Datagram)> = demo_calls()
            .iter()
            .enumerate()
            .flat_map(|(i, c)| c.datagrams().into_iter().map(move |d| (i, d)))
            .collect();
        v.sort_by_key(|(_, d)| d.ts);
        v
    })
}

fn config(out_dir: &Path) -> callrec::config::Config {
    let mut cfg =
        callrec::config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/callrec.toml"))
            .expect("the demo configuration loads");
    cfg.recording.spool_dir = out_dir.to_path_buf();
    cfg
}

fn replay(dir: &Path, all: &[Datagram]) -> Run {
    let pcap = dir.join("in.pcap");
    write_datagrams(&pcap, all);
    let out = dir.join("out");
    let run = replay_into(config(&out), &[pcap], &out);
    assert!(
        run.report.capture_errors.is_empty(),
        "{:?}",
        run.report.capture_errors
    );
    run
}

struct Clean {
    _dir: tempfile::TempDir,
    run: Run,
}

fn clean() -> &'static Clean {
    static CLEAN: OnceLock<Clean> = OnceLock::new();
    CLEAN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let all: Vec<Datagram> = labelled().iter().map(|(_, d)| d.clone()).collect();
        let run = replay(dir.path(), &all);
        let ids: BTreeSet<&str> = run.recordings.iter().map(|r| r.call_id.as_str()).collect();
        assert_eq!(ids.len(), 3, "the demo records three calls: {ids:?}");
        Clean { _dir: dir, run }
    })
}

/// Which leg's packets reach which channel: stereo subscriber left,
/// remote right; mono both.
fn channels_of(call: &CallSpec, rec: &Recording, d: &Datagram) -> Vec<usize> {
    if rec.ch.len() == 1 {
        return vec![0];
    }
    let from_a = d.src == call.a_rtp;
    let subscriber_is_a = rec.meta["direction"] == "outbound";
    vec![if from_a == subscriber_is_a { 0 } else { 1 }]
}

fn is_sip(d: &Datagram) -> bool {
    d.src.port() == 5060 || d.dst.port() == 5060
}

/// RFC 4733 events (payload type 101 in the demo) and a stream's first
/// packet move things in time (a pause, the stream's anchor), not only
/// their own samples.
fn moves_alignment(all: &[(usize, Datagram)], i: usize) -> bool {
    let d = &all[i].1;
    if is_sip(d) || d.payload.get(1).is_some_and(|b| b & 0x7f == 101) {
        return true;
    }
    !all[..i]
        .iter()
        .any(|(_, e)| e.src == d.src && e.dst == d.dst && !is_sip(e))
}

fn block_active(x: &[i16]) -> usize {
    x.chunks(160).filter(|b| b.iter().any(|&s| s != 0)).count()
}

fn check(start: usize, len: usize, shift_us: i64) -> Result<(), TestCaseError> {
    let all = labelled();
    let calls = demo_calls();
    let end = (start + len).min(all.len());
    let shifted = start..end;
    let disturbed: Vec<Datagram> = all
        .iter()
        .enumerate()
        .map(|(i, (_, d))| {
            let mut d = d.clone();
            if shifted.contains(&i) {
                d.ts = d.ts.add_micros(shift_us);
            }
            d
        })
        .collect();
    let hit: BTreeSet<usize> = shifted.clone().map(|i| all[i].0).collect();
    let dir = tempfile::tempdir().unwrap();
    let run = replay(dir.path(), &disturbed);
    let clean = &clean().run;
    let what = format!("packets {start}..{end} shifted by {shift_us} µs (calls {hit:?})");

    // Every call is decided as in the clean run.
    for h in &clean.history {
        let id = h["call_id"].as_str().unwrap();
        let got = run.history_of(id);
        prop_assert!(got.is_some(), "{what}: {id} missing from the history");
        let got = got.unwrap();
        prop_assert_eq!(&got["decision"], &h["decision"], "{}: {}", what, id);
        prop_assert_eq!(&got["reason"], &h["reason"], "{}: {}", what, id);
        prop_assert_eq!(&got["end_reason"], &h["end_reason"], "{}: {}", what, id);
    }
    let ids = |r: &Run| -> Vec<(String, u64)> {
        r.recordings
            .iter()
            .map(|x| {
                (
                    x.call_id.clone(),
                    x.meta["segment"]["index"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    prop_assert_eq!(ids(&run), ids(clean), "{}", what);

    for (c, rec) in clean.recordings.iter().zip(&run.recordings) {
        let n = calls.iter().position(|s| s.call_id == c.call_id).unwrap();
        if !hit.contains(&n) {
            // Untouched: byte for byte, metadata included.
            prop_assert!(
                rec.bytes == c.bytes,
                "{}: {} changed although none of its packets moved",
                what,
                c.call_id
            );
            prop_assert_eq!(&rec.meta, &c.meta, "{}: {}", what, c.call_id);
            continue;
        }
        // Disturbed: what may be lost is the shifted packets' audio.
        let mine: Vec<usize> = shifted.clone().filter(|&i| all[i].0 == n).collect();
        let mut lost_allowed = vec![0usize; c.ch.len()];
        let mut loose = false;
        let start_at =
            callrec::report::parse_rfc3339(c.meta["segment"]["started_at"].as_str().unwrap())
                .unwrap();
        for &i in &mine {
            let d = &all[i].1;
            // A packet placed later than it was sent may also be the first
            // the recording gets (the recording starts where the prompt
            // ends): its place anchors the stream.
            let near_start = (d.ts.micros() - start_at).abs() < 1_000_000;
            loose |= moves_alignment(all, i) || near_start;
            if !is_sip(d) {
                for ch in channels_of(&calls[n], c, d) {
                    lost_allowed[ch] += 2;
                }
            }
        }
        prop_assert!(
            (rec.duration_ms() - c.duration_ms()).abs() <= 100,
            "{}: {} lasts {} ms, clean {} ms",
            what,
            c.call_id,
            rec.duration_ms(),
            c.duration_ms()
        );
        for (ch, allowed) in lost_allowed.iter().enumerate() {
            let (want, got) = (block_active(&c.ch[ch]), block_active(&rec.ch[ch]));
            prop_assert!(
                got + allowed + if loose { 3 } else { 0 } >= want,
                "{}: {} channel {} has {} blocks of audio, clean {} (allowed loss {})",
                what,
                c.call_id,
                ch,
                got,
                want,
                allowed
            );
        }
        if !loose {
            // Only audio packets moved: every differing sample lies in the
            // slot of one of them (one block either side).
            let slots: Vec<(i64, usize)> = mine
                .iter()
                .map(|&i| {
                    let d = &all[i].1;
                    (
                        (d.ts.micros() - start_at) / 125,
                        channels_of(&calls[n], c, d)[0],
                    )
                })
                .collect();
            for ch in 0..c.ch.len() {
                let (a, b) = (&c.ch[ch], &rec.ch[ch]);
                for k in 0..a.len().min(b.len()) {
                    if a[k] != b[k] {
                        let ok = slots.iter().any(|&(pos, sc)| {
                            sc == ch && (k as i64) >= pos - 160 && (k as i64) < pos + 320
                        });
                        prop_assert!(
                            ok,
                            "{}: {} channel {} differs at sample {} outside the shifted packets",
                            what,
                            c.call_id,
                            ch,
                            k
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

fn shift() -> impl Strategy<Value = i64> {
    let s = 1_000_000i64;
    prop_oneof![
        Just(s),
        Just(-s),
        Just(60 * s),
        Just(-60 * s),
        Just(3600 * s),
        Just(-3600 * s),
        Just(120 * s),
    ]
}

/// Runs up to this long are disturbances: the clock holds them back and,
/// once the traffic goes on from where it was, places them by itself.
/// Longer consistent runs are what a step looks like, and are taken up as
/// one; with the media's evidence (`a_longer_run_during_the_calls...`)
/// they cost nothing either. While only ringing calls are on the link
/// nothing can tell them from a step, nor can anything tell a run of
/// several packets at the very start of a capture (before the clock has
/// seen [`callrec::daemon::clock::GROUP`] packets) from the capture's own
/// clock: `hostile_clock.rs` tests those for kept audio. A single packet
/// is an outlier anywhere, the first one included.
const SHORT: usize = callrec::daemon::clock::GROUP - 1;

/// Where the demo's recorded media flows from end to end: from 1 s after
/// the first answer (2 s) to 1 s before the last recorded call's media
/// stops (the withheld call's, at 20 s).
fn busy() -> std::ops::Range<usize> {
    let all = labelled();
    let at = |s: i64| {
        all.iter()
            .position(|(_, d)| d.ts.micros() >= (1_795_221_000 + s) * 1_000_000)
            .unwrap()
    };
    at(3)..at(19)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 40,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn one_packet_anywhere_costs_at_most_itself(
        start in 0usize..labelled().len(),
        shift_us in shift(),
    ) {
        check(start, 1, shift_us)?;
    }

    #[test]
    fn a_short_run_costs_at_most_the_shifted_packets(
        start in callrec::daemon::clock::GROUP..labelled().len(),
        len in 2usize..=SHORT,
        shift_us in shift(),
    ) {
        check(start, len, shift_us)?;
    }

    #[test]
    fn a_longer_run_during_the_calls_costs_at_most_the_shifted_packets(
        start in busy(),
        len in (SHORT + 1)..=80usize,
        shift_us in shift(),
    ) {
        check(start, len, shift_us)?;
    }
}

/// A few fixed cases that once went wrong, and the edges: the first
/// packet, the last packet, runs over a call's answer and its DTMF.
#[test]
fn fixed_disturbances() {
    let n = labelled().len();
    let s = 1_000_000i64;
    let busy = busy();
    for (start, len, shift) in [
        (0, 1, 3600 * s),
        (0, 1, -3600 * s),
        (1, 1, 3600 * s),
        (2, 1, 3600 * s),
        (2, 1, -s),
        (n - 1, 1, -3600 * s),
        (n - 1, 1, 120 * s),
        (n - SHORT, SHORT, 60 * s),
        (6, 1, s),
        (5, SHORT, 60 * s),
        (n / 3, 1, 120 * s),
        (busy.start, 40, -s),
        (busy.start + 500, 17, 3600 * s),
        (busy.end - 80, 80, -60 * s),
    ] {
        if let Err(e) = check(start, len, shift) {
            panic!("{e}");
        }
    }
}

/// One case given as `HOSTILE_CASE=start,len,shift_us` (for replaying a
/// failure proptest reported); does nothing without it.
#[test]
fn case_from_the_environment() {
    let Ok(v) = std::env::var("HOSTILE_CASE") else {
        return;
    };
    let n: Vec<i64> = v.split(',').map(|x| x.trim().parse().unwrap()).collect();
    if let Err(e) = check(n[0] as usize, n[1] as usize, n[2]) {
        panic!("{e}");
    }
}
