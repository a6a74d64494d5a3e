//! Decode + SIP parse throughput over generated frames: an RTP-sized UDP
//! frame (the hot path: no allocation), a SIP INVITE, and an INVITE in
//! three IPv4 fragments (reassembly allocates).

use callrec::capture::{LinkType, Packet};
use callrec::config::Limits;
use callrec::decode::Decoder;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{self, FrameOpts};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

fn limits() -> Limits {
    Limits {
        fragment_bytes: 16 << 20,
        fragment_timeout: Duration::from_secs(30),
        tcp_stream_bytes: 256 << 10,
        tcp_streams: 65_536,
        tcp_idle_timeout: Duration::from_secs(300),
        max_dialogs: 200_000,
        sip_message_bytes: 64 << 10,
        ..Limits::default()
    }
}

fn invite() -> Vec<u8> {
    let sdp = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
               m=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\n";
    format!(
        "INVITE sip:0312345678@198.51.100.20;user=phone SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds\r\nMax-Forwards: 70\r\n\
         From: \"Caller\" <sip:0900000001@192.0.2.10>;tag=1928301774\r\nTo: <sip:0312345678@198.51.100.20>\r\n\
         Call-ID: a84b4c76e66710@192.0.2.10\r\nCSeq: 314159 INVITE\r\nContact: <sip:0900000001@192.0.2.10:5060>\r\n\
         Allow: INVITE, ACK, CANCEL, BYE, UPDATE, PRACK\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let (s, d): (SocketAddr, SocketAddr) = (
        "192.0.2.10:5060".parse().unwrap(),
        "198.51.100.20:5060".parse().unwrap(),
    );
    let mut rtp = vec![0x80, 8, 0, 1, 0, 0, 0, 160, 0, 0, 0, 1];
    rtp.resize(12 + 160, 0xd5);
    let rtp_frame = pcapgen::udp_frame(
        "192.0.2.10:40000".parse().unwrap(),
        "198.51.100.20:50000".parse().unwrap(),
        &rtp,
    );
    let invite_frame = pcapgen::udp_frame(s, d, &invite());
    let mut g = c.benchmark_group("decode_sip");

    g.throughput(Throughput::Elements(1));
    g.bench_function("rtp_udp_frame", |b| {
        let mut dec = Decoder::new(&limits(), &[5060]);
        let p = Packet {
            index: 1,
            ts: Timestamp(0),
            link: LinkType::Ethernet,
            data: &rtp_frame,
            orig_len: 0,
        };
        b.iter(|| {
            let mut n = 0;
            dec.decode(black_box(&p), &mut |pl| n += pl.data.len());
            n
        })
    });
    g.bench_function("sip_invite_frame", |b| {
        let mut dec = Decoder::new(&limits(), &[5060]);
        let p = Packet {
            index: 1,
            ts: Timestamp(0),
            link: LinkType::Ethernet,
            data: &invite_frame,
            orig_len: 0,
        };
        b.iter(|| {
            let mut ok = false;
            dec.decode(black_box(&p), &mut |pl| {
                ok = callrec::sip::parse(pl.data).is_ok()
            });
            assert!(ok);
        })
    });
    g.bench_function("sip_invite_3_fragments", |b| {
        let mut dec = Decoder::new(&limits(), &[5060]);
        let mut id = 0u32;
        b.iter(|| {
            // A fresh datagram id each time so every run reassembles.
            id = id.wrapping_add(1);
            let frags = pcapgen::udp_fragments(
                s,
                d,
                &invite(),
                3,
                &FrameOpts {
                    ip_id: id & 0xffff,
                    ..Default::default()
                },
            );
            let mut ok = false;
            for f in &frags {
                let p = Packet {
                    index: 1,
                    ts: Timestamp(0),
                    link: LinkType::Ethernet,
                    data: f,
                    orig_len: 0,
                };
                dec.decode(&p, &mut |pl| ok = callrec::sip::parse(pl.data).is_ok());
            }
            assert!(ok);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
