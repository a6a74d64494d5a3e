//! Fuzzes the whole capture-thread pipeline with its time: frames with
//! time steps into an engine (decoder, capture clock, SIP, tracker,
//! policy, routes and latches, shards, recorders, history), a recorded
//! call already set up so that media, the latch and the clock's media
//! evidence are all reached.
//!
//! Input: records of `[step][kind][len][data...]` (len one byte):
//! - step 0..=199: that many ms later; 200..=255 a jump: ±1 s, ±1 min,
//!   ±1 h, ±1 day, or (252..) a stamp of any 32-bit second from the data;
//! - kind % 4 = 0: `data` is a whole Ethernet frame;
//!   1: a UDP datagram, `data[0]` picks source and destination among the
//!   call's addresses, a stranger and the SIP addresses, the rest is the
//!   payload; 2: the same with an RTP header built from `data[1..9]`;
//!   3: the same as SIP text (an in-dialog request or a new INVITE).
//!
//! Each input gets a fresh engine and spool (threads included), so a crash
//! reproduces from the input alone.
#![no_main]

use callrec::capture::{LinkType, Packet};
use callrec::daemon::engine::Engine;
use callrec::daemon::media::MediaWorker;
use callrec::daemon::shard::ShardPool;
use callrec_testkit::pcapgen::udp_frame;
use callrec_testkit::scenario::CallSpec;
use callrec::time::Timestamp;
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

const CONFIG: &str = r#"
[recording]
spool_dir = "/nonexistent"
rtp_timeout = "5s"
setup_timeout = "10s"
max_call_length = "1m"
[announce]
mode = "off"
[limits]
early_dialogs = 16
early_dialogs_per_source = 4
max_dialogs = 32
tcp_streams = 8
fragment_bytes = "64KiB"
[delivery]
allowed_networks = ["192.0.2.0/24"]
[[destination]]
name = "acme"
url = "sftp://rec@192.0.2.10:22/in"
identity = "/nonexistent/key"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5WY6hfGbgKdwr827M61Dy9fKgVJoLX3pwmoStKx7MO"
[[contract]]
id = "K-0001"
service = "mobile"
numbers = ["0312340001"]
guidance = 1
channels = "stereo"
pause_dtmf = "*1"
resume_dtmf = "*2"
destination = "acme"
"#;

static RUN: AtomicU64 = AtomicU64::new(0);

enum Step {
    By(i64),
    At(Timestamp),
}

fn step(code: u8, data: &mut &[u8]) -> Option<Step> {
    let s = 1_000_000i64;
    Some(Step::By(match code {
        0..=199 => code as i64 * 1000,
        200 => s,
        201 => -s,
        202 => 60 * s,
        203 => -60 * s,
        204 => 3600 * s,
        205 => -3600 * s,
        206 => 86_400 * s,
        207 => -86_400 * s,
        _ => {
            // Any second at all, as a corrupt record header would carry.
            let (b, rest) = data.split_first_chunk::<4>()?;
            *data = rest;
            return Some(Step::At(Timestamp::from_secs_micros(
                u32::from_le_bytes(*b) as i64,
                0,
            )));
        }
    }))
}

fuzz_target!(|input: &[u8]| {
    let n = RUN.fetch_add(1, Ordering::Relaxed);
    let spool = std::env::temp_dir().join(format!("callrec-fuzz-{}-{n}", std::process::id()));
    let mut cfg =
        callrec::config::load_str(CONFIG, std::path::Path::new("fuzz.toml")).expect("config");
    cfg.recording.spool_dir = spool.clone();
    let cfg = Arc::new(cfg);
    std::fs::create_dir_all(&spool).unwrap();
    let usage =
        callrec::delivery::SpoolUsage::measure(&callrec::delivery::Spool::open(&spool).unwrap())
            .unwrap();
    let pool = ShardPool::start(1, 256, true, |i| {
        MediaWorker::new(cfg.clone(), i, usage.clone())
    })
    .unwrap();
    let mut engine = Engine::new(cfg.clone(), &spool, pool, None, usage).unwrap();

    // A recorded call, answered, its media flowing for a second.
    let t0 = Timestamp::from_secs_micros(1_795_221_000, 0);
    let call = CallSpec::simple(1, "0312340001", "0077260312349999", t0, 1_000);
    let bye_at = call.bye_at().unwrap();
    let setup: Vec<_> = call
        .datagrams()
        .into_iter()
        .filter(|d| d.ts < bye_at)
        .collect();
    let mut index = 0u64;
    let mut now = t0;
    for d in &setup {
        index += 1;
        now = d.ts;
        let f = udp_frame(d.src, d.dst, &d.payload);
        engine.on_packet(&Packet {
            index,
            ts: d.ts,
            link: LinkType::Ethernet,
            data: &f,
            orig_len: f.len() as u32,
        });
    }
    let stranger: SocketAddr = "203.0.113.66:40000".parse().unwrap();
    let addrs = [
        call.a_rtp,
        call.b_rtp,
        stranger,
        call.a_sip,
        call.b_sip,
        SocketAddr::new(call.a_rtp.ip(), 40_000),
        "198.18.0.1:5060".parse().unwrap(),
    ];

    let mut data = input;
    while let [code, kind, len, rest @ ..] = data {
        data = rest;
        let ts = match step(*code, &mut data) {
            Some(Step::By(dt)) => now.add_micros(dt),
            Some(Step::At(t)) => t,
            None => break,
        };
        now = ts;
        let len = (*len as usize).min(data.len());
        let (body, rest) = data.split_at(len);
        data = rest;
        let frame = match kind % 4 {
            0 => body.to_vec(),
            k => {
                let (sel, payload) = body.split_first().unwrap_or((&0, &[]));
                let (src, dst) = (
                    addrs[*sel as usize % addrs.len()],
                    addrs[(*sel as usize / 7) % addrs.len()],
                );
                if src.is_ipv4() != dst.is_ipv4() {
                    continue;
                }
                let payload = match k {
                    2 if payload.len() >= 8 => {
                        let pt = [0u8, 8, 101, 13][payload[0] as usize % 4];
                        let seq = u16::from_le_bytes([payload[1], payload[2]]);
                        let rts =
                            u32::from_le_bytes([payload[3], payload[4], payload[5], payload[6]]);
                        let ssrc = payload[7] as u32;
                        callrec::media::rtp::build_rtp(pt, seq, rts, ssrc, false, &payload[8..])
                    }
                    3 => {
                        let method = [
                            "BYE",
                            "INFO",
                            "INVITE",
                            "CANCEL",
                            "UPDATE",
                            "SIP/2.0 200 OK",
                        ][payload.first().copied().unwrap_or(0) as usize % 6];
                        let call_id = if payload.get(1).is_some_and(|b| b & 1 == 0) {
                            call.call_id.clone()
                        } else {
                            format!("f{}@x", payload.get(2).copied().unwrap_or(0))
                        };
                        let body = String::from_utf8_lossy(payload.get(3..).unwrap_or(&[]));
                        let start = if method.starts_with("SIP/") {
                            method.to_owned()
                        } else {
                            format!("{method} sip:0077260312349999@203.0.113.1 SIP/2.0")
                        };
                        format!("{start}\r\nCall-ID: {call_id}\r\nCSeq: 9 {method}\r\nFrom: <sip:0312340001@192.0.2.2>;tag=x\r\nTo: <sip:0077260312349999@203.0.113.1>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
                    }
                    _ => payload.to_vec(),
                };
                udp_frame(src, dst, &payload)
            }
        };
        index += 1;
        engine.on_packet(&Packet {
            index,
            ts,
            link: LinkType::Ethernet,
            data: &frame,
            orig_len: frame.len() as u32,
        });
        if kind & 0x80 != 0 {
            engine.on_idle(now);
        }
    }
    let stats = engine.finish("capture-end");
    assert!(stats.recorded + stats.skipped.values().sum::<u64>() <= stats.calls);
    let _ = std::fs::remove_dir_all(&spool);
});
