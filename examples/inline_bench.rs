//! The inline path's throughput through the kernel, driven by
//! `scripts/bench-inline.sh` in the namespaces of `tests/phones/lab.sh`:
//!
//! - `inline_bench worker SECS FLOWS [divert]` (in the bridge's namespace):
//!   starts the inline worker (NFQUEUE 14, nft table `callrec`); with
//!   `divert`, puts FLOWS flows 192.0.2.11:20000+i → 192.0.2.12:40000+i in
//!   a 60 s prompt; prints the packets diverted and rewritten each second.
//! - `inline_bench recv SECS FLOWS` (phone B): counts the RTP packets
//!   that arrive, and how many carry the prompt (payload rewritten).
//! - `inline_bench send SECS FLOWS` (phone A): sends 172-byte RTP packets
//!   round-robin over the flows as fast as it can.

use callrec::announce::Prompt;
use callrec::announce::inline::{Cmd, InlineConfig, start};
use callrec::announce::rewrite::FlowKey;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let flows: u16 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100);
    match args.get(1).map(String::as_str) {
        Some("worker") => worker(secs, flows, args.get(4).is_some_and(|s| s == "divert")),
        Some("recv") => recv(secs, flows),
        Some("send") => send(secs, flows),
        _ => eprintln!("usage: inline_bench worker|recv|send SECS FLOWS [divert]"),
    }
}

fn worker(secs: u64, flows: u16, divert: bool) {
    let cfg = InlineConfig {
        queue: 14,
        mark: 0x0014_0000,
        nft_table: "callrec".into(),
        setup: true,
    };
    let h = start(&cfg).expect("inline worker");
    if divert {
        // A prompt of 60 s of a ramp: never silence (0xff in μ-law).
        let clip = Prompt::from_samples(
            "bench",
            (0..480_000).map(|i| (i % 4000) as i16 + 1000).collect(),
        );
        let keys = (0..flows)
            .map(|i| {
                let k = FlowKey {
                    src: SocketAddr::from(([192, 0, 2, 11], 20_000 + i)),
                    dst: SocketAddr::from(([192, 0, 2, 12], 40_000 + i)),
                };
                (k, 0)
            })
            .collect();
        h.send(Cmd::Divert {
            call: 1,
            flows: keys,
            clip,
            outcome: None,
        });
    }
    println!("worker ready");
    let mut last = (0, 0);
    for s in 1..=secs {
        std::thread::sleep(Duration::from_secs(1));
        let d = h.stats.diverted.load(Ordering::Relaxed);
        let r = h.stats.rewritten.load(Ordering::Relaxed);
        println!(
            "worker second {s}: diverted {} rewritten {} packets/s",
            d - last.0,
            r - last.1
        );
        last = (d, r);
    }
    println!("worker total: diverted {} rewritten {}", last.0, last.1);
}

fn recv(secs: u64, flows: u16) {
    let socks: Vec<UdpSocket> = (0..flows)
        .map(|i| {
            let s = UdpSocket::bind(("192.0.2.12", 40_000 + i)).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut n, mut prompt) = (0u64, 0u64);
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        let mut idle = true;
        for s in &socks {
            while let Ok(len) = s.recv(&mut buf) {
                idle = false;
                n += 1;
                prompt += u64::from(len > 12 && buf[12] != 0xff);
            }
        }
        if idle {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    println!("recv: {n} packets, {prompt} carrying the prompt");
}

fn send(secs: u64, flows: u16) {
    let socks: Vec<UdpSocket> = (0..flows)
        .map(|i| {
            let s = UdpSocket::bind(("192.0.2.11", 20_000 + i)).unwrap();
            s.connect(("192.0.2.12", 40_000 + i)).unwrap();
            s
        })
        .collect();
    let mut pkt = vec![0xffu8; 172];
    pkt[..2].copy_from_slice(&[0x80, 0]);
    let start = Instant::now();
    let mut n = 0u64;
    'out: for seq in 0u32.. {
        pkt[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
        pkt[4..8].copy_from_slice(&(seq * 160).to_be_bytes());
        for s in &socks {
            let _ = s.send(&pkt);
            n += 1;
        }
        if start.elapsed().as_secs() >= secs {
            break 'out;
        }
    }
    let t = start.elapsed().as_secs_f64();
    println!(
        "send: {n} packets in {t:.2} s, {:.0} packets/s",
        n as f64 / t
    );
}
