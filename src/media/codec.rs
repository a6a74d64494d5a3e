//! G.711 μ-law and A-law by table lookup, and the payload kinds the
//! recorder distinguishes.
//!
//! The tables are computed at compile time from the ITU-T G.711 reference
//! algorithm (as in the classic Sun `g711.c`); a test checks every code
//! against the `audio-codec-algorithms` crate. Decoding is one indexed load
//! per sample; encoding indexes a 14-bit (μ-law) or 13-bit (A-law) table,
//! which is exactly the precision G.711 keeps.

/// What a payload type carries, as far as recording cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// G.711 μ-law (static PT 0).
    Pcmu,
    /// G.711 A-law (static PT 8).
    Pcma,
    /// Comfort noise (RFC 3389, static PT 13): recorded as silence.
    ComfortNoise,
    /// RFC 4733 telephone-event: taken out of the audio, fed to DTMF.
    TelephoneEvent,
}

impl Codec {
    /// Maps an SDP rtpmap encoding name (case-insensitive) to a kind.
    pub fn from_encoding(name: &str) -> Option<Codec> {
        let n = name.trim();
        if n.eq_ignore_ascii_case("PCMU") {
            Some(Codec::Pcmu)
        } else if n.eq_ignore_ascii_case("PCMA") {
            Some(Codec::Pcma)
        } else if n.eq_ignore_ascii_case("CN") {
            Some(Codec::ComfortNoise)
        } else if n.eq_ignore_ascii_case("telephone-event") {
            Some(Codec::TelephoneEvent)
        } else {
            None
        }
    }

    /// The static payload-type assignment of RFC 3551 for the kinds above.
    pub fn from_static_pt(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            13 => Some(Codec::ComfortNoise),
            _ => None,
        }
    }
}

const fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let mut t: i32 = (((u & 0x0f) as i32) << 3) + 0x84;
    t <<= ((u & 0x70) >> 4) as i32;
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

const fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let mut t: i32 = ((a & 0x0f) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    match seg {
        0 => t += 8,
        1 => t += 0x108,
        _ => {
            t += 0x108;
            t <<= seg - 1;
        }
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// μ-law from a 14-bit linear value (the input's top 14 bits).
const fn linear14_to_ulaw(v: i32) -> u8 {
    const SEG_END: [i32; 8] = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];
    // Negative values by ones' complement, as the ITU-T G.191 reference
    // (and the crate the tests compare with) do.
    let (mut v, mask) = if v < 0 { (-v - 1, 0x7fu8) } else { (v, 0xffu8) };
    if v > 8159 {
        v = 8159;
    }
    v += 0x21;
    let mut seg = 0;
    while seg < 8 && v > SEG_END[seg] {
        seg += 1;
    }
    if seg >= 8 {
        return 0x7f ^ mask;
    }
    ((((seg as i32) << 4) | ((v >> (seg + 1)) & 0x0f)) as u8) ^ mask
}

/// A-law from a 13-bit linear value (the input's top 13 bits).
const fn linear13_to_alaw(v: i32) -> u8 {
    const SEG_END: [i32; 8] = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];
    let (v, mask) = if v >= 0 {
        (v, 0xd5u8)
    } else {
        (-v - 1, 0x55u8)
    };
    let mut seg = 0;
    while seg < 8 && v > SEG_END[seg] {
        seg += 1;
    }
    if seg >= 8 {
        return 0x7f ^ mask;
    }
    let q = if seg < 2 {
        (v >> 1) & 0x0f
    } else {
        (v >> seg) & 0x0f
    };
    (((seg as i32) << 4) | q) as u8 ^ mask
}

const fn build_decode(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_to_linear(i as u8)
        } else {
            ulaw_to_linear(i as u8)
        };
        i += 1;
    }
    t
}

const fn build_ulaw_encode() -> [u8; 16384] {
    let mut t = [0u8; 16384];
    let mut i = 0;
    while i < 16384 {
        // Index is the 14-bit value as an unsigned bit pattern.
        let v = ((i as i32) << 18) >> 18;
        t[i] = linear14_to_ulaw(v);
        i += 1;
    }
    t
}

const fn build_alaw_encode() -> [u8; 8192] {
    let mut t = [0u8; 8192];
    let mut i = 0;
    while i < 8192 {
        let v = ((i as i32) << 19) >> 19;
        t[i] = linear13_to_alaw(v);
        i += 1;
    }
    t
}

/// μ-law code to linear sample.
pub static ULAW_DECODE: [i16; 256] = build_decode(false);
/// A-law code to linear sample.
pub static ALAW_DECODE: [i16; 256] = build_decode(true);
static ULAW_ENCODE: [u8; 16384] = build_ulaw_encode();
static ALAW_ENCODE: [u8; 8192] = build_alaw_encode();

#[inline]
pub fn decode_ulaw(code: u8) -> i16 {
    ULAW_DECODE[code as usize]
}

#[inline]
pub fn decode_alaw(code: u8) -> i16 {
    ALAW_DECODE[code as usize]
}

#[inline]
pub fn encode_ulaw(x: i16) -> u8 {
    ULAW_ENCODE[((x >> 2) as u16 & 0x3fff) as usize]
}

#[inline]
pub fn encode_alaw(x: i16) -> u8 {
    ALAW_ENCODE[((x >> 3) as u16 & 0x1fff) as usize]
}

/// Decodes `payload` into `out` (same length) with the given law table.
#[inline]
pub fn decode_into(table: &[i16; 256], payload: &[u8], out: &mut [i16]) {
    for (o, &b) in out.iter_mut().zip(payload) {
        *o = table[b as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use audio_codec_algorithms as aca;

    #[test]
    fn all_256_codes_match_the_crate() {
        for c in 0..=255u8 {
            assert_eq!(decode_ulaw(c), aca::decode_ulaw(c), "ulaw code {c:#04x}");
            assert_eq!(decode_alaw(c), aca::decode_alaw(c), "alaw code {c:#04x}");
        }
    }

    #[test]
    fn encoders_match_the_crate_for_every_sample() {
        for x in i16::MIN..=i16::MAX {
            assert_eq!(encode_ulaw(x), aca::encode_ulaw(x), "ulaw of {x}");
            assert_eq!(encode_alaw(x), aca::encode_alaw(x), "alaw of {x}");
        }
    }

    #[test]
    fn decode_encode_is_identity_on_codes() {
        for c in 0..=255u8 {
            let u = decode_ulaw(c);
            // 0x7f and 0xff are both zero in μ-law; the encoder picks 0xff.
            if u != 0 {
                assert_eq!(encode_ulaw(u), c);
            }
            assert_eq!(encode_alaw(decode_alaw(c)), c);
        }
    }

    #[test]
    fn names() {
        assert_eq!(Codec::from_encoding("pcmu"), Some(Codec::Pcmu));
        assert_eq!(
            Codec::from_encoding("telephone-event"),
            Some(Codec::TelephoneEvent)
        );
        assert_eq!(Codec::from_encoding("G729"), None);
        assert_eq!(Codec::from_static_pt(13), Some(Codec::ComfortNoise));
    }
}
