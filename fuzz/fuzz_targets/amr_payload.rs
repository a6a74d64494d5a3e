//! Fuzzes RFC 4867 AMR / AMR-WB depacketising (both layouts): the first
//! byte picks wideband and octet alignment, the rest is the RTP payload.
#![no_main]

use callrec::media::codecs::amr::{MAX_FRAMES, depacketize, frame_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, payload)) = data.split_first() else { return };
    let (wb, oa) = (sel & 1 == 1, sel & 2 == 2);
    let mut out = Vec::new();
    if let Ok(n) = depacketize(payload, wb, oa, &mut out) {
        assert!(n <= MAX_FRAMES);
        // The output is exactly n whole storage frames.
        let mut s = &out[..];
        for _ in 0..n {
            let len = frame_len(s[0], wb);
            assert!(len <= s.len());
            s = &s[len..];
        }
        assert!(s.is_empty());
    } else {
        assert!(out.is_empty());
    }
});
