//! Issue 18's INVITE-flood proof: 100,000 unanswered INVITEs beside 10
//! real calls, from one source and from 1,000 sources. All 10 calls are
//! recorded, and the heap is bounded by the configuration: it does not
//! grow from a 30,000-INVITE flood (already three times the early-dialog
//! bound's worth within the setup timeout) to a 100,000-INVITE one, and it
//! stays within a few KiB per configured early dialog above the clean
//! replay.
//! Heap use is measured by a counting global allocator, so this file holds
//! a single test (tests in one binary share the allocator).

#[path = "support/hostile.rs"]
mod hostile;
use callrec::capture::LinkType;
use callrec::daemon::replay::{ReplayOptions, replay};
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, Datagram, merge};
use hostile::{T0, config};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            LIVE.fetch_sub(l.size(), Ordering::Relaxed);
            grew(new);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const EARLY: usize = 2_000;
const LIMITS: &str = "[limits]\nearly_dialogs = 2000\nearly_dialogs_per_source = 500\n";

/// An unanswered INVITE from a contract line to a recordable number.
fn flood_invite(n: u64, src: SocketAddr, ts: Timestamp) -> Datagram {
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

/// Ten real calls over the flood's 10 s, each ringing 2 s (while some
/// 20,000 flood INVITEs arrive) and talking 2 s.
fn real_calls() -> Vec<CallSpec> {
    (0..10)
        .map(|i| {
            let at = Timestamp::from_millis(T0 * 1000 + 500 + i * 900);
            let mut c =
                CallSpec::simple(100 + i as u32, "0312340001", "0077260312349999", at, 2_000);
            c.call_id = format!("real-{i}@callrec.test");
            c.ring_ms = 2_000;
            c
        })
        .collect()
}

/// Writes the real calls with `count` flood INVITEs from `sources`
/// addresses spread over 10 s, generated as they are written.
fn write_capture(path: &Path, count: u64, sources: u64) {
    let mut w = PcapWriter::create(path, LinkType::Ethernet).unwrap();
    let real = merge(&real_calls());
    let step = 10_000_000 / count.max(1) as i64;
    let start = Timestamp::from_secs_micros(T0, 0);
    let mut n = 0u64;
    for d in real {
        while n < count && start.add_micros(n as i64 * step) <= d.ts {
            let s = n % sources;
            let src = SocketAddr::from(([198, 18, (s >> 8) as u8, s as u8], 5060));
            let f = flood_invite(n, src, start.add_micros(n as i64 * step));
            w.write(f.ts, &udp_frame(f.src, f.dst, &f.payload)).unwrap();
            n += 1;
        }
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();
}

struct Measured {
    peak: usize,
    recorded: Vec<String>,
    tracker: callrec::calls::tracker::TrackerStats,
}

fn measure(dir: &Path, name: &str, count: u64, sources: u64) -> Measured {
    let pcap = dir.join(format!("{name}.pcap"));
    write_capture(&pcap, count, sources);
    let cfg = config(dir, LIMITS);
    let out = dir.join(name);
    let opts = ReplayOptions {
        out: out.clone(),
        captures: vec![pcap],
        deliver: false,
        deliver_timeout: Duration::from_secs(1),
        shards: Some(2),
    };
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let started = std::time::Instant::now();
    let report = replay(cfg, &opts).expect("replay runs");
    let peak = PEAK.load(Ordering::Relaxed) - before;
    eprintln!(
        "{name}: {count} INVITEs from {sources} sources: heap high-water mark {} KiB, {:.1} s, {:?}",
        peak / 1024,
        started.elapsed().as_secs_f64(),
        report.tracker
    );
    // The history holds a line per INVITE followed: read it line by line.
    let history = std::io::BufReader::new(std::fs::File::open(out.join("calls.jsonl")).unwrap());
    let recorded = std::io::BufRead::lines(history)
        .map(|l| serde_json::from_str::<serde_json::Value>(&l.unwrap()).unwrap())
        .filter(|h| h["decision"] == "record")
        .map(|h| h["call_id"].as_str().unwrap().to_owned())
        .collect();
    Measured {
        peak,
        recorded,
        tracker: report.tracker.clone(),
    }
}

#[test]
fn a_flood_of_100000_invites_beside_10_calls() {
    let dir = tempfile::tempdir().unwrap();
    let want: Vec<String> = real_calls().iter().map(|c| c.call_id.clone()).collect();
    let clean = measure(dir.path(), "clean", 0, 1);
    assert_eq!(clean.recorded, want);
    let small = measure(dir.path(), "many30k", 30_000, 1_000);
    for (name, sources) in [("one100k", 1u64), ("many100k", 1_000)] {
        let m = measure(dir.path(), name, 100_000, sources);
        assert_eq!(m.recorded, want, "{name}: all 10 calls recorded");
        assert!(m.tracker.early_peak <= EARLY, "{name}: {:?}", m.tracker);
        if sources == 1 {
            assert_eq!(m.tracker.invites_throttled, 100_000 - 500, "{name}");
        }
        // Flat in the flood's size ...
        assert!(
            m.peak <= small.peak + (2 << 20),
            "{name}: heap grew with the flood: 30,000 INVITEs {} KiB, 100,000 {} KiB",
            small.peak / 1024,
            m.peak / 1024
        );
        // ... and within the configured bound's worth above the clean run.
        assert!(
            m.peak <= clean.peak + EARLY * 6 * 1024 + (2 << 20),
            "{name}: {} KiB above the clean replay's {} KiB, for {EARLY} early dialogs",
            (m.peak - clean.peak) / 1024,
            clean.peak / 1024
        );
    }
}
