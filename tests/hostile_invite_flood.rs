//! Issue 18, finding 3: unanswered INVITEs must not take the recording
//! capacity. INVITEs to recordable numbers that are never answered,
//! from one source and from many, beside real calls: every real call is
//! recorded, the flood's dialogs stay within `limits.early_dialogs` and
//! `limits.early_dialogs_per_source`, and a source over its bound is
//! throttled (counted, alarmed) rather than followed.

#[path = "support/hostile.rs"]
mod hostile;
use callrec::time::Timestamp;
use callrec_testkit::scenario::{CallSpec, Datagram, merge};
use hostile::{Run, T0, config, replay_datagrams};
use std::net::SocketAddr;

/// An INVITE from a contract line (K-0001) dialling a recordable number
/// with the mobile prefix, never answered.
pub fn flood_invite(n: u64, src: SocketAddr, ts: Timestamp) -> Datagram {
    let ip = src.ip();
    let sdp = format!(
        "v=0\r\no=- {n} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\n",
        20_000 + n % 20_000
    );
    let text = format!(
        "INVITE sip:0077260312349999@203.0.113.1 SIP/2.0\r\nVia: SIP/2.0/UDP {src};branch=z9hG4bKf{n}\r\nFrom: <sip:0312340001@{ip}>;tag=f{n}\r\nTo: <sip:0077260312349999@203.0.113.1>\r\nCall-ID: flood-{n}@attacker.test\r\nCSeq: 1 INVITE\r\nContact: <sip:0312340001@{src}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    Datagram {
        ts,
        src,
        dst: "203.0.113.1:5060".parse().unwrap(),
        payload: text.into_bytes(),
    }
}

/// `count` INVITEs from `sources` addresses (round robin), `step_us` apart
/// from `from`.
pub fn flood(count: u64, sources: u64, from: Timestamp, step_us: i64) -> Vec<Datagram> {
    (0..count)
        .map(|n| {
            let s = n % sources.max(1);
            let src = SocketAddr::from(([198, 18, (s >> 8) as u8, s as u8], 5060));
            flood_invite(n, src, from.add_micros(n as i64 * step_us))
        })
        .collect()
}

/// `n` real recorded calls, `every_ms` apart from `first_ms`, each
/// ringing `ring_ms` and talking 2 s.
pub fn real_calls(n: u32, first_ms: i64, every_ms: i64, ring_ms: u32) -> Vec<CallSpec> {
    (0..n)
        .map(|i| {
            let at = Timestamp::from_millis(T0 * 1000 + first_ms + i as i64 * every_ms);
            let mut c = CallSpec::simple(100 + i, "0312340001", "0077260312349999", at, 2_000);
            c.call_id = format!("real-{i}@callrec.test");
            c.ring_ms = ring_ms;
            c
        })
        .collect()
}

fn merged(flood: Vec<Datagram>, calls: &[CallSpec]) -> Vec<Datagram> {
    let mut all = flood;
    all.extend(merge(calls));
    all.sort_by_key(|d| d.ts);
    all
}

fn assert_all_recorded(what: &str, run: &Run, calls: &[CallSpec]) {
    for c in calls {
        let h = run.history_of(&c.call_id);
        assert!(
            h.is_some_and(|h| h["decision"] == "record"),
            "{what}: {} not recorded: {h:?}",
            c.call_id
        );
        let r = run
            .recording(&c.call_id)
            .unwrap_or_else(|| panic!("{what}: no recording of {}", c.call_id));
        assert!(
            hostile::tone_ms(&r.ch[0], 440.0) >= 1_900,
            "{what}: {} lacks its audio",
            c.call_id
        );
    }
}

/// The finding itself, with the default configuration: 20,000 INVITEs
/// within the setup timeout used to make the real calls after them go
/// unrecorded as `overload`.
#[test]
fn unanswered_invites_do_not_use_the_recording_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let start = Timestamp::from_secs_micros(T0, 0);
    let calls = real_calls(3, 25_000, 1_000, 2_000);
    let all = merged(flood(20_000, 1, start, 1_000), &calls);
    let run = replay_datagrams(dir.path(), "flood", config(dir.path(), ""), &all);
    assert_all_recorded("20,000 unanswered INVITEs first", &run, &calls);
    assert_eq!(run.report.stats.recorded, 3);
}

/// The kind: floods of 10 and 1,000 INVITEs, from one source and from
/// many, before and among 10 real calls, with small bounds. The 100,000
/// case with its memory is `hostile_flood_memory.rs`.
#[test]
fn floods_from_one_and_from_many_sources() {
    let limits = "[limits]\nearly_dialogs = 500\nearly_dialogs_per_source = 100\n";
    for (count, sources) in [
        (10u64, 1u64),
        (10, 10),
        (1_000, 1),
        (1_000, 100),
        (1_000, 1_000),
    ] {
        let dir = tempfile::tempdir().unwrap();
        // The flood runs over 1 s from 0.5 s; the real calls ring 2 s
        // each, the first from 1 s: every one of them is ringing while
        // the flood goes on or has just filled the early dialogs.
        let start = Timestamp::from_secs_micros(T0, 500_000);
        let calls = real_calls(10, 1_000, 150, 2_000);
        let all = merged(
            flood(count, sources, start, 1_000_000 / count as i64),
            &calls,
        );
        let run = replay_datagrams(dir.path(), "flood", config(dir.path(), limits), &all);
        let what = format!("{count} INVITEs from {sources} sources");
        assert_all_recorded(&what, &run, &calls);
        let t = &run.report.tracker;
        let per_source = count.div_ceil(sources);
        // One source over its bound is throttled: its INVITEs beyond
        // 100 are counted, never followed.
        let over = sources * per_source.saturating_sub(100);
        assert_eq!(t.invites_throttled, over, "{what}: {t:?}");
        // Never more early dialogs than the bound: the rest were shed,
        // the heaviest sources' oldest first.
        let followed = count - over;
        assert!(t.early_peak <= 500, "{what}: {t:?}");
        if followed > 500 {
            assert!(
                t.early_evicted >= followed - 500 && t.early_evicted <= followed,
                "{what}: {t:?}"
            );
        } else {
            assert_eq!(t.early_evicted, 0, "{what}: {t:?}");
        }
    }
}

/// A source over its bound is alarmed once, naming it.
#[test]
fn a_flooding_source_is_alarmed_once() {
    use std::sync::{Arc, Mutex};
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    let w = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || Writer(w.clone()))
        .with_ansi(false)
        .finish();
    let dir = tempfile::tempdir().unwrap();
    let start = Timestamp::from_secs_micros(T0, 0);
    let all = flood(300, 1, start, 1_000);
    let limits = "[limits]\nearly_dialogs_per_source = 100\n";
    tracing::subscriber::with_default(subscriber, || {
        replay_datagrams(dir.path(), "flood", config(dir.path(), limits), &all);
    });
    let log = String::from_utf8_lossy(&buf.lock().unwrap()).into_owned();
    let alarms: Vec<&str> = log.lines().filter(|l| l.contains("INVITE FLOOD")).collect();
    assert_eq!(alarms.len(), 1, "{log}");
    assert!(alarms[0].contains("198.18.0.0"), "{}", alarms[0]);
    assert!(alarms[0].contains("ERROR"), "{}", alarms[0]);
}

struct Writer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
impl std::io::Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Overload and priority are decided at the answer: with one recording
/// slot, the call answered first takes it, whichever INVITE came first.
#[test]
fn the_answer_decides_overload() {
    let dir = tempfile::tempdir().unwrap();
    let t = |ms: i64| Timestamp::from_millis(T0 * 1000 + ms);
    let mut slow = CallSpec::simple(1, "0312340001", "0077260312349999", t(0), 3_000);
    slow.ring_ms = 4_000;
    slow.call_id = "slow@callrec.test".into();
    let mut quick = CallSpec::simple(2, "0312340001", "0077260312348888", t(500), 5_000);
    quick.ring_ms = 1_000;
    quick.call_id = "quick@callrec.test".into();
    let mut cfg = config(dir.path(), "");
    cfg.recording.max_active_calls = 1;
    let run = replay_datagrams(dir.path(), "answer", cfg, &merge(&[slow, quick]));
    let (s, q) = (
        run.history_of("slow@callrec.test").unwrap(),
        run.history_of("quick@callrec.test").unwrap(),
    );
    assert_eq!(q["decision"], "record", "{q}");
    assert_eq!(s["decision"], "skip", "{s}");
    assert_eq!(s["reason"], "overload", "{s}");
}
