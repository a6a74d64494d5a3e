//! Fuzzes SRTP set-up from SDP keys and decryption: an `a=crypto` line
//! (any suite, key parameters, lifetime, MKI) parsed from the SDP, the
//! libsrtp2 session built from it, then arbitrary packets unprotected in
//! turn (wrong tags, truncated, replayed, MKI of any length). Bad keys
//! are refused, bad packets counted; never a panic.
//!
//! Input: `[line length][a=crypto value...][packets: [len][bytes...]]`.
#![no_main]

use callrec::media::srtp::{Keys, LegCrypto};
use callrec::sip::sdp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = (n as usize).min(rest.len());
    let (line, mut packets) = rest.split_at(n);
    let mut body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/SAVP 0\r\na=crypto:".to_vec();
    body.extend_from_slice(line);
    body.extend_from_slice(b"\r\n");
    let Ok(s) = sdp::parse(&body) else { return };
    let Some(m) = s.audio() else { return };
    let keys = Keys::from_sdp(m);
    let LegCrypto::Srtp(mut leg) = LegCrypto::for_sender(&keys, &keys) else {
        return;
    };
    while let Some((&len, tail)) = packets.split_first() {
        let len = (len as usize).min(tail.len());
        let _ = leg.unprotect(&tail[..len]);
        packets = &tail[len..];
    }
});
