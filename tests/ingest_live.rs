//! Live capture on the loopback interface through libpcap. Skips with a
//! message where capturing is not permitted (no CAP_NET_RAW).

use callrec::capture::{LiveSource, PacketSource};
use callrec::decode::{Decoder, Transport};
use std::time::{Duration, Instant};

#[test]
fn live_loopback_sees_a_sip_datagram() {
    let mut src = match LiveSource::open("lo", 65_535, false, 4 << 20) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKIP live_loopback_sees_a_sip_datagram: {e}");
            return;
        }
    };
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dst = rx.local_addr().unwrap();
    let msg = format!(
        "OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\nCall-ID: live-{}\r\nContent-Length: 0\r\n\r\n",
        dst.port()
    );
    let limits = callrec::config::Limits {
        fragment_bytes: 1 << 20,
        fragment_timeout: Duration::from_secs(30),
        tcp_stream_bytes: 1 << 16,
        tcp_streams: 16,
        tcp_idle_timeout: Duration::from_secs(60),
        max_dialogs: 16,
        sip_message_bytes: 1 << 16,
        ..Default::default()
    };
    let mut dec = Decoder::new(&limits, &[5060]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut found = false;
    let mut sent = Instant::now() - Duration::from_secs(1);
    while !found && Instant::now() < deadline {
        if sent.elapsed() > Duration::from_millis(200) {
            sock.send_to(msg.as_bytes(), dst).unwrap();
            sent = Instant::now();
        }
        // Ok(None) is the read timeout: loop and check the deadline.
        if let Some(p) = src.next_packet().unwrap() {
            dec.decode(&p, &mut |pl| {
                if pl.transport == Transport::Udp && pl.dst == dst && pl.data == msg.as_bytes() {
                    found = true;
                }
            });
        }
    }
    assert!(found, "datagram not captured on lo");
    let stats = src.stats().unwrap();
    assert!(stats.received > 0);
}
