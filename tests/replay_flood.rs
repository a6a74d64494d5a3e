//! The issue's bad RTP, through the whole pipeline: a flood towards both
//! media ports of a recorded call, replayed. Every malformed kind (wrong
//! version, truncated header, CSRC count and extension past the end,
//! padding length past the end) plus RTCP towards the remote leg's port,
//! and valid RTP with a new SSRC and a random timestamp (2^31 jumps)
//! every packet towards the subscriber leg's port.
//!
//! Compared with the same call replayed without the flood: the malformed
//! packets are counted exactly in the metadata and change not one sample;
//! the SSRC flood only takes the subscriber channel while it lasts; the
//! file is a valid WAV of the signalled length; and the heap never holds
//! more than with the clean capture, although it carries 20 times as many
//! packets. Heap use is measured by a counting global allocator, so this
//! file holds a single test (tests in one binary share the allocator).

#[path = "support/audio.rs"]
mod audio;
#[path = "support/config.rs"]
mod config_text;
use audio::files;
use callrec::capture::LinkType;
use callrec::daemon::replay::{ReplayOptions, ReplayReport, replay};
use callrec::media::rtp::build_rtp;
use callrec::recording::wav::read_wav;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::CallSpec;
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Live heap bytes and their high-water mark, all threads together.
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

const T0: i64 = 1_795_221_000;
const TALK_MS: u32 = 20_000;
/// The flood runs from 5 s to 15 s after the answer, a packet to each
/// port every 100 µs (10,000 packets/s per port).
const FLOOD: (i64, i64) = (5_000, 15_000);
const FLOOD_STEP_US: i64 = 100;

fn config(dir: &Path) -> callrec::config::Config {
    let text = format!(
        r#"
[recording]
spool_dir = "{spool}"
[announce]
mode = "off"
{acme}[[contract]]
id = "K-0001"
service = "mobile"
numbers = ["0312340001"]
guidance = 1
channels = "stereo"
destination = "acme"
"#,
        acme = config_text::ACME_UNREACHED,
        spool = dir.join("spool").display(),
    );
    callrec::config::load_str(&text, &dir.join("test.toml")).expect("test config loads")
}

/// The malformed kinds, in turn. Each is a datagram our RTP parser must
/// refuse (none looks like RTCP).
fn malformed(i: u64) -> Vec<u8> {
    let base = build_rtp(0, i as u16, i as u32 * 160, 0x0bad, false, &[0xd5; 160]);
    match i % 5 {
        0 => {
            let mut v = base;
            v[0] = 0x40; // version 1
            v
        }
        1 => base[..7].to_vec(), // truncated header
        2 => {
            let mut v = base[..20].to_vec();
            v[0] = 0x8f; // 15 CSRCs in 20 bytes
            v
        }
        3 => {
            let mut v = base;
            v[0] |= 0x20; // padding longer than the packet
            *v.last_mut().unwrap() = 250;
            v
        }
        _ => {
            let mut v = base;
            v[0] |= 0x10; // header extension of 65535 words
            v[14] = 0xff;
            v[15] = 0xff;
            v
        }
    }
}

/// What the flood sent where.
#[derive(Default, Debug)]
struct Sent {
    malformed_to_remote_leg: u64,
    rtcp_to_remote_leg: u64,
    rtp_to_subscriber_leg: u64,
    /// Valid RTP from a source that is neither party, to both ports.
    foreign: u64,
}

/// Writes the call, with the flood when `flood` is set, frame by frame
/// (a flood held in memory would dwarf what is measured).
fn write_capture(path: &Path, call: &CallSpec, flood: bool) -> Sent {
    let mut w = PcapWriter::create(path, LinkType::Ethernet).unwrap();
    let rogue: SocketAddr = "203.0.113.66:40000".parse().unwrap();
    let answer = call.answer_at();
    let (from, to) = (
        answer.add_micros(FLOOD.0 * 1000),
        answer.add_micros(FLOOD.1 * 1000),
    );
    let mut next = from;
    let mut n = 0u64;
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut sent = Sent::default();
    for d in call.datagrams() {
        while flood && next < to && next <= d.ts {
            // Towards the subscriber's address: the remote leg's port.
            let junk = if n % 50 == 49 {
                sent.rtcp_to_remote_leg += 1;
                vec![0x81, 201, 0, 1, 0, 0, 0, 1]
            } else {
                sent.malformed_to_remote_leg += 1;
                malformed(n)
            };
            // Spoofed from the remote party's own address: it passes the
            // source latch and reaches the recorder.
            w.write(next, &udp_frame(call.b_rtp, call.a_rtp, &junk))
                .unwrap();
            // Towards the remote party's address: the subscriber leg's
            // port. Valid RTP, a new SSRC and a random timestamp each.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let payload: Vec<u8> = (0..160).map(|k| (x >> (k % 56)) as u8).collect();
            let rtp = build_rtp(
                0,
                x as u16,
                (x >> 16) as u32,
                (x >> 32) as u32,
                false,
                &payload,
            );
            w.write(next, &udp_frame(call.a_rtp, call.b_rtp, &rtp))
                .unwrap();
            sent.rtp_to_subscriber_leg += 1;
            if n.is_multiple_of(4) {
                // The same from a third address: dropped at the latch.
                let to = if n.is_multiple_of(8) {
                    call.a_rtp
                } else {
                    call.b_rtp
                };
                w.write(next, &udp_frame(rogue, to, &rtp)).unwrap();
                sent.foreign += 1;
            }
            next = next.add_micros(FLOOD_STEP_US);
            n += 1;
        }
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();
    sent
}

struct Run {
    report: ReplayReport,
    meta: serde_json::Value,
    wav: PathBuf,
    /// Subscriber (left), remote (right).
    ch: Vec<Vec<i16>>,
    /// Heap high-water mark during the replay, above the heap before it.
    peak: usize,
}

fn replay_once(dir: &Path, call: &CallSpec, flood: bool) -> (Run, Sent) {
    let pcap = dir.join("in.pcap");
    let sent = write_capture(&pcap, call, flood);
    let out = dir.join("out");
    let opts = ReplayOptions {
        out: out.clone(),
        captures: vec![pcap],
        deliver: false,
        deliver_timeout: Duration::from_secs(1),
        shards: Some(2),
    };
    let cfg = config(dir);
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let report = replay(cfg, &opts).expect("replay runs");
    let peak = PEAK.load(Ordering::Relaxed) - before;
    assert!(
        report.capture_errors.is_empty(),
        "{:?}",
        report.capture_errors
    );
    let mut jsons = files(&out.join("queue/acme/ready"), "json");
    assert_eq!(jsons.len(), 1, "{jsons:?}");
    let json = jsons.pop().unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let wav = json.with_file_name(meta["audio"]["file"].as_str().unwrap());
    let w = read_wav(&wav).unwrap();
    assert_eq!((w.channels, w.rate), (2, 8000));
    (
        Run {
            report,
            meta,
            wav,
            ch: w.samples,
            peak,
        },
        sent,
    )
}

#[test]
fn flood_towards_recorded_ports_is_counted_bounded_and_harmless() {
    let call = CallSpec::simple(
        3,
        "0312340001",
        "0077260312349999",
        Timestamp::from_secs_micros(T0, 0),
        TALK_MS,
    );
    let dir_clean = tempfile::tempdir().unwrap();
    let dir_flood = tempfile::tempdir().unwrap();
    let (clean, _) = replay_once(dir_clean.path(), &call, false);
    let (flood, sent) = replay_once(dir_flood.path(), &call, true);
    let flood_packets =
        sent.malformed_to_remote_leg + sent.rtcp_to_remote_leg + sent.rtp_to_subscriber_leg;
    assert_eq!(flood_packets, 200_000, "{sent:?}");

    // Every spoofed flood packet reached the recorder, and each malformed
    // one was counted on the leg it was aimed at; every packet from the
    // third address was dropped at the source latch.
    assert_eq!(
        flood.report.stats.rtp_routed,
        clean.report.stats.rtp_routed + flood_packets
    );
    assert_eq!(sent.foreign, 25_000);
    assert_eq!(flood.report.stats.rtp_foreign, sent.foreign);
    assert_eq!(clean.report.stats.rtp_foreign, 0);
    let (qs, qr) = (
        &flood.meta["quality"]["subscriber"],
        &flood.meta["quality"]["remote"],
    );
    let (cs, cr) = (
        &clean.meta["quality"]["subscriber"],
        &clean.meta["quality"]["remote"],
    );
    assert_eq!(
        qr["malformed"].as_u64(),
        Some(sent.malformed_to_remote_leg),
        "{qr}"
    );
    assert_eq!(qr["packets"], cr["packets"], "remote leg packets");
    assert_eq!(qr["lost"], 0);
    assert_eq!(qs["malformed"], 0);
    // Each SSRC-flood packet is a packet of its own one-packet stream.
    assert_eq!(
        qs["packets"].as_u64().unwrap(),
        cs["packets"].as_u64().unwrap() + sent.rtp_to_subscriber_leg,
        "{qs}"
    );

    // A valid file of the signalled length (answer to BYE; announcements
    // are off), whose header sizes match the file.
    let len_ms = flood.ch[0].len() as i64 / 8;
    assert!((len_ms - TALK_MS as i64).abs() <= 60, "{len_ms} ms");
    assert_eq!(flood.meta["audio"]["duration_ms"].as_i64(), Some(len_ms));
    let bytes = std::fs::read(&flood.wav).unwrap();
    assert_eq!(
        u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize + 8,
        bytes.len()
    );
    assert_eq!(
        flood.meta["audio"]["bytes"].as_u64(),
        Some(bytes.len() as u64)
    );

    // The malformed flood changed nothing: the remote channel is the clean
    // run's, sample for sample. The SSRC flood took the subscriber channel
    // only while it lasted: before it and from 100 ms after it, identical.
    assert!(
        flood.ch[1] == clean.ch[1],
        "remote channel changed by malformed packets"
    );
    let (a, b) = ((FLOOD.0 * 8) as usize, ((FLOOD.1 + 100) * 8) as usize);
    assert!(
        flood.ch[0][..a] == clean.ch[0][..a],
        "subscriber channel changed before the flood"
    );
    assert!(
        flood.ch[0][b..] == clean.ch[0][b..],
        "subscriber channel not back after the flood"
    );
    assert!(
        flood.ch[0][a..b] != clean.ch[0][a..b],
        "the SSRC flood should have reached the subscriber channel"
    );

    // Memory: 200,000 more packets, no more heap than the clean replay
    // (fixed rings, fixed per-call buffers; nothing per packet or per
    // SSRC). The margin covers allocation timing between threads.
    eprintln!(
        "heap high-water mark: clean {} KiB, flooded {} KiB",
        clean.peak / 1024,
        flood.peak / 1024
    );
    assert!(
        flood.peak <= clean.peak + (1 << 20),
        "heap grew with the flood: clean {} B, flooded {} B",
        clean.peak,
        flood.peak
    );
}
