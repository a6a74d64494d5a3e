//! Fuzzes the SDP parser and the media accessors.
#![no_main]

use callrec::sip::sdp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = sdp::parse(data) else { return };
    let _ = (s.audio(), s.t38());
    for m in &s.media {
        let _ = (m.is_hold(), m.effective_direction(), m.rtcp(), m.encoding(0));
    }
});
