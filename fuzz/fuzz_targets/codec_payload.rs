//! Fuzzes every decoder behind a leg (libavcodec through the payload
//! splitting, SRTP-less): the first byte picks the codec and the output
//! rate, then payloads prefixed by their length (1 byte), decoded in turn
//! by the same stateful decoder, as a leg would.
#![no_main]

use callrec::media::codec::{Codec, Format};
use callrec::media::codecs::LegDecoder;
use libfuzzer_sys::fuzz_target;

const CODECS: [Codec; 11] = [
    Codec::G722,
    Codec::G729,
    Codec::AmrNb,
    Codec::AmrWb,
    Codec::Opus,
    Codec::Gsm,
    Codec::Ilbc,
    Codec::L16,
    Codec::G726,
    Codec::Pcmu,
    Codec::Pcma,
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, mut rest)) = data.split_first() else { return };
    let mut f = Format::of(CODECS[(sel & 15) as usize % CODECS.len()]);
    f.param = match f.codec {
        Codec::AmrNb | Codec::AmrWb => (sel >> 4) & 1,
        Codec::G726 => 2 + (sel >> 4) % 4,
        Codec::Ilbc => [20, 30][((sel >> 4) & 1) as usize],
        _ => f.param,
    };
    let rate = if sel & 0x80 != 0 { 16000 } else { 8000 };
    let mut d = LegDecoder::new(rate);
    while let Some((&len, tail)) = rest.split_first() {
        let len = (len as usize).min(tail.len());
        let _ = d.decode(96, f, &tail[..len]);
        rest = &tail[len..];
    }
});
