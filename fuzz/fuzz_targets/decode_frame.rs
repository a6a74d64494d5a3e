//! Fuzzes frame decoding: the first byte picks the link type, the rest is
//! frames, each prefixed by its length (2 bytes, little endian), so one
//! input carries several related frames and fragment reassembly and TCP
//! stream state are exercised too.
#![no_main]

use callrec::capture::{LinkType, Packet};
use callrec::config::Limits;
use callrec::decode::Decoder;
use callrec::time::Timestamp;
use libfuzzer_sys::fuzz_target;
use std::time::Duration;

const LINKS: [LinkType; 8] = [
    LinkType::Ethernet,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::RawIp,
    LinkType::Ipv4,
    LinkType::Ipv6,
    LinkType::Null,
    LinkType::Other(147),
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let link = LINKS[sel as usize % LINKS.len()];
    // Small bounds so the fuzzer reaches eviction and reset paths.
    let limits = Limits {
        fragment_bytes: 64 * 1024,
        fragment_timeout: Duration::from_secs(2),
        tcp_stream_bytes: 16 * 1024,
        tcp_streams: 8,
        tcp_idle_timeout: Duration::from_secs(5),
        max_dialogs: 16,
        sip_message_bytes: 16 * 1024,
        ..Limits::default()
    };
    let mut dec = Decoder::new(&limits, &[5060]);
    let mut index = 0u64;
    let mut ts = Timestamp::from_millis(1_700_000_000_000);
    let mut rest = rest;
    while rest.len() >= 2 {
        let len = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let frame = &rest[2..2 + len];
        rest = &rest[2 + len..];
        index += 1;
        ts = ts.add_micros(20_000);
        let pkt = Packet { index, ts, link, data: frame, orig_len: frame.len() as u32 };
        dec.decode(&pkt, &mut |p| {
            let _ = callrec::sip::parse(p.data);
        });
        dec.expire(ts);
    }
    let _ = dec.stats();
});
