//! Fuzzes the HEPv3 decoder: parsing, the policy, the duplicate window
//! and the synthesised frame, which must itself decode without a panic.
#![no_main]

use callrec::capture::hep::{HepDecoder, HepPolicy, frame_len};
use callrec::time::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = frame_len(data, 65_535);
    let mut d = HepDecoder::new(HepPolicy {
        capture_ids: vec![],
        auth_key: Some("k".into()),
    });
    let _ = d.decode(data, Timestamp::ZERO);
    let mut open = HepDecoder::new(HepPolicy::default());
    if let Ok(Some(out)) = open.decode(data, Timestamp::ZERO) {
        let _ = callrec::decode::peek_udp(out.packet.link, out.packet.data);
    }
});
