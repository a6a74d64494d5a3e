use super::*;

const T: i64 = 1_795_221_000_000_000;
fn ts(ms: i64) -> Timestamp {
    Timestamp(T + ms * 1000)
}
fn clock() -> CaptureClock {
    CaptureClock::new(Duration::from_millis(100))
}

/// Offers `stamps` in turn, resolving as told (with `votes`), and
/// returns the time each packet was processed at, in processing order.
fn run(c: &mut CaptureClock, stamps: &[i64], votes: &[i64]) -> Vec<i64> {
    let mut out = Vec::new();
    let mut held: Vec<i64> = Vec::new();
    let flush = |c: &mut CaptureClock, held: &mut Vec<i64>, out: &mut Vec<i64>| {
        let r = c.resolve(votes);
        assert!(r.times.len() <= held.len(), "{r:?}");
        out.extend(r.times.iter().map(|t| (t.0 - T) / 1000));
        held.drain(..r.times.len());
    };
    for &s in stamps {
        loop {
            match c.offer(ts(s)) {
                Offer::At(t) => out.push((t.0 - T) / 1000),
                Offer::Hold => held.push(s),
                Offer::HoldAndResolve => {
                    held.push(s);
                    flush(c, &mut held, &mut out);
                }
                Offer::ResolveFirst => {
                    flush(c, &mut held, &mut out);
                    continue;
                }
            }
            break;
        }
    }
    if c.finish_point() {
        flush(c, &mut held, &mut out);
    }
    out
}

#[test]
fn ordinary_traffic_keeps_its_own_times() {
    let mut c = clock();
    let s: Vec<i64> = (0..100).map(|i| i * 20).collect();
    assert_eq!(run(&mut c, &s, &[]), s);
    assert_eq!(c.stats(), &ClockStats::default());
}

#[test]
fn reordering_within_the_tolerance_is_kept() {
    let mut c = clock();
    let s = [0, 20, 40, 35, 60, 55, 80, 100];
    assert_eq!(run(&mut c, &s, &[]), s);
}

#[test]
fn one_packet_from_the_future_is_placed_by_the_clock() {
    let mut c = clock();
    let mut s: Vec<i64> = (0..50).map(|i| i * 20).collect();
    s[20] = 120_000 + 400;
    let got = run(&mut c, &s, &[]);
    // Placed at the next packet's time, and the clock never went there.
    assert_eq!(got[20], 420);
    assert_eq!(&got[21..], &s[21..]);
    assert_eq!(c.now(), ts(980));
    assert_eq!(c.stats().outliers, 1);
}

#[test]
fn a_step_back_becomes_an_offset() {
    let mut c = clock();
    let s: Vec<i64> = (0..100)
        .map(|i| i * 20 - if i >= 50 { 3_600_000 } else { 0 })
        .collect();
    let got = run(&mut c, &s, &[]);
    // Without votes the first stepped packet goes where the clock is.
    let want: Vec<i64> = (0..100)
        .map(|i| if i >= 50 { i * 20 - 20 } else { i * 20 })
        .collect();
    assert_eq!(got, want);
    assert_eq!(c.stats().steps, 1);
    // With the media's word, exactly where it belongs.
    let mut c = clock();
    let got = run(&mut c, &s, &[3_600_000_000; 3]);
    assert_eq!(got, (0..100).map(|i| i * 20).collect::<Vec<_>>());
}

#[test]
fn a_forward_jump_is_a_gap_unless_the_media_says_step() {
    // A quiet link: 16 packets after 30 s of nothing are time passing.
    let mut c = clock();
    let s: Vec<i64> = (0..10)
        .map(|i| i * 20)
        .chain((0..20).map(|i| 30_000 + i * 20))
        .collect();
    assert_eq!(run(&mut c, &s, &[]), s);
    assert_eq!(c.stats().gaps, 1);
    // The same stamps while recorded media says 20 ms passed: a step.
    let mut c = clock();
    let got = run(&mut c, &s, &[-29_800_000]);
    let want: Vec<i64> = (0..30).map(|i| i * 20).collect();
    assert_eq!(got, want);
    assert_eq!(c.stats().steps, 1);
}

#[test]
fn a_short_run_off_the_clock_is_placed_by_it() {
    let mut c = clock();
    let s: Vec<i64> = (0..60)
        .map(|i| i * 20 + if (20..25).contains(&i) { 60_000 } else { 0 })
        .collect();
    let got = run(&mut c, &s, &[]);
    assert_eq!(&got[20..25], &[500; 5]);
    assert_eq!(c.stats().outliers, 5);
    assert_eq!(c.now(), ts(59 * 20));
}

#[test]
fn a_first_packet_from_the_future_does_not_start_the_clock() {
    let mut c = clock();
    let mut s: Vec<i64> = (0..20).map(|i| i * 20).collect();
    s[0] = 3_600_000;
    let got = run(&mut c, &s, &[]);
    assert_eq!(got[0], 20);
    assert_eq!(&got[1..], &s[1..]);
    // A first packet from the past starts it, and the jump to the
    // rest is a gap, not an expiry.
    let mut c = clock();
    let mut s: Vec<i64> = (0..20).map(|i| i * 20).collect();
    s[0] = -3_600_000;
    let mut out = Vec::new();
    assert_eq!(c.offer(ts(s[0])), Offer::Hold);
    assert_eq!(c.offer(ts(s[1])), Offer::Hold);
    assert_eq!(c.offer(ts(s[2])), Offer::HoldAndResolve);
    let r = c.resolve(&[]);
    assert_eq!(
        r.kind,
        Kind::Start {
            outliers: 0,
            gap_us: 3_600_020_000
        }
    );
    out.extend(r.times);
    assert_eq!(out[1], ts(20));
}

#[test]
fn a_start_packet_from_the_future_is_placed_whichever_it_is() {
    for bad in 0..4 {
        let mut c = clock();
        let mut s: Vec<i64> = (0..20).map(|i| i * 20).collect();
        s[bad] += 3_600_000;
        let got = run(&mut c, &s, &[]);
        let mut want = s.clone();
        // Placed by the clock: among the first packets where it
        // starts or stands, later at the next packet's time.
        want[bad] = [20, 0, 60, 80][bad];
        assert_eq!(got, want, "packet {bad}");
        assert_eq!(c.stats().outliers, 1);
    }
}

#[test]
fn behind_the_clock_inside_a_quiet_stretch() {
    // A quiet stretch (ringing: 200 ms, then 1 s) with one packet from
    // an hour back among it: placed with the next one, the stretch
    // keeps its times.
    let mut c = clock();
    let s = [
        0,
        30,
        200,
        1000,
        1030,
        1200,
        2000 - 3_600_000,
        2000,
        2020,
        2040,
    ];
    let got = run(&mut c, &s, &[]);
    assert_eq!(got, [0, 30, 200, 1000, 1030, 1200, 2000, 2000, 2020, 2040]);
    assert_eq!(c.stats().outliers, 1);
    // The same, but everything from the 2 s on an hour back: a step.
    let mut c = clock();
    let s: Vec<i64> = [0, 30, 200, 1000, 1030, 1200]
        .into_iter()
        .chain((0..30).map(|i| 2000 + 20 * i - 3_600_000))
        .collect();
    let got = run(&mut c, &s, &[]);
    assert_eq!(&got[..6], &[0, 30, 200, 1000, 1030, 1200]);
    // Without the media's word it goes on from where the clock was.
    let want: Vec<i64> = (0..30).map(|i| 1200 + 20 * i).collect();
    assert_eq!(&got[6..], &want[..]);
    assert_eq!(c.stats().steps, 1);
}

#[test]
fn two_capture_points_keep_their_own_offsets() {
    let mut c = clock();
    let a = c.select("agent-a");
    let b = c.select("agent-b");
    assert_eq!((a, b), (0, 1));
    c.set_offset(b, -3_600_000_000);
    c.select("agent-a");
    assert_eq!(run(&mut c, &[0, 20, 40], &[]), vec![0, 20, 40]);
    c.select("agent-b");
    assert_eq!(run(&mut c, &[3_600_060, 3_600_080], &[]), vec![60, 80]);
}

#[test]
fn the_wall_clock_moves_a_silent_link() {
    let mut c = clock();
    run(&mut c, &[0, 20, 40], &[]);
    c.advance(ts(60_000));
    assert_eq!(c.now(), ts(60_000));
    assert_eq!(c.offer(ts(60_010)), Offer::At(ts(60_010)));
    // A packet from the future waits; the wall clock shows it was one.
    assert_eq!(c.offer(ts(999_999)), Offer::Hold);
    assert!(c.idle(ts(61_000)));
    let r = c.resolve(&[]);
    assert_eq!(r.kind, Kind::Outliers);
    c.advance(ts(61_000));
    assert_eq!(c.now(), ts(61_000));
}
