//! G.711 μ-law and A-law by table lookup, and the payload kinds the
//! recorder distinguishes.
//!
//! The tables are computed at compile time from the ITU-T G.711 reference
//! algorithm (as in the classic Sun `g711.c`); a test checks every code
//! against the `audio-codec-algorithms` crate. Decoding is one indexed load
//! per sample; encoding indexes a 14-bit (μ-law) or 13-bit (A-law) table,
//! which is exactly the precision G.711 keeps. The media path's bulk
//! functions ([`decode_law_into`], [`encode_law_into`],
//! [`encode_law_stereo_into`]) compute the same values 16 at a time in
//! AVX2 registers where the CPU has them; tests compare every code and
//! every sample with the tables.

/// What a payload type carries, as far as recording cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Codec {
    /// G.711 μ-law (static PT 0).
    Pcmu,
    /// G.711 A-law (static PT 8).
    Pcma,
    /// Comfort noise (RFC 3389, static PT 13): synthesised (libbcg729's
    /// Annex B generator) until the sender's next audio packet.
    ComfortNoise,
    /// RFC 4733 telephone-event: taken out of the audio, fed to DTMF.
    TelephoneEvent,
    /// G.722 (static PT 9): 16 kHz audio on an 8000 Hz RTP clock (RFC 3551 4.5.2).
    G722,
    /// G.729 / Annex A / Annex B (static PT 18): 10-byte frames, 2-byte SID.
    G729,
    /// AMR-NB (RFC 4867), 8 kHz.
    AmrNb,
    /// AMR-WB (RFC 4867), 16 kHz.
    AmrWb,
    /// Opus (RFC 7587): 48000 Hz RTP clock whatever the audio bandwidth.
    Opus,
    /// GSM 06.10 full rate (static PT 3): 33-byte frames.
    Gsm,
    /// iLBC (RFC 3952): 38-byte (20 ms) or 50-byte (30 ms) frames.
    Ilbc,
    /// Linear 16-bit big-endian PCM (RFC 3551 4.5.11), rate from the rtpmap.
    L16,
    /// G.726 ADPCM (RFC 3551 4.5.4): `G726-32` etc. packed as RFC 3551
    /// says (little-endian), `AAL2-G726-32` etc. as ITU-T I.366.2 (big-endian).
    G726,
}

/// A payload type's meaning: codec plus what RTP and SDP say about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Format {
    pub codec: Codec,
    /// RTP timestamp clock, Hz (rtpmap; RFC 3551 for static types).
    pub clock: u32,
    /// Audio channels (rtpmap's third field; 1 when absent).
    pub channels: u8,
    /// Codec detail: AMR 1 = octet-aligned (fmtp `octet-align=1`), 0 =
    /// bandwidth-efficient; G.726 bits per sample (2..5), plus
    /// [`G726_AAL2`] for the big-endian AAL2 packing; iLBC frame length in
    /// ms (20 or 30, fmtp `mode`).
    pub param: u8,
}

/// [`Format::param`] flag of G.726 packed big-endian (rtpmap
/// `AAL2-G726-32`, RFC 3551 4.5.4's note on ITU-T I.366.2 packing).
pub const G726_AAL2: u8 = 0x80;

impl Format {
    /// A format with the codec's RFC 3551 defaults.
    pub fn of(codec: Codec) -> Format {
        let clock = match codec {
            Codec::Opus => 48000,
            Codec::AmrWb => 16000,
            _ => 8000,
        };
        let param = match codec {
            Codec::G726 => 4,
            Codec::Ilbc => 30,
            _ => 0,
        };
        Format {
            codec,
            clock,
            channels: 1,
            param,
        }
    }

    /// From an SDP rtpmap's name, clock rate and channels and the type's
    /// fmtp; None for encodings callrec cannot decode.
    pub fn from_sdp(name: &str, clock: u32, channels: u16, fmtp: &str) -> Option<Format> {
        let codec = Codec::from_encoding(name)?;
        let mut f = Format::of(codec);
        // G.722's rtpmap says 8000 by RFC 3551's historical error; keep it.
        f.clock = if clock == 0 { f.clock } else { clock };
        f.channels = channels.clamp(1, 2) as u8;
        let has = |key: &str, val: &str| {
            fmtp.split(';').any(|p| {
                p.split_once('=')
                    .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case(key) && v.trim() == val)
            })
        };
        match codec {
            Codec::AmrNb | Codec::AmrWb => f.param = has("octet-align", "1") as u8,
            Codec::Ilbc => f.param = if has("mode", "20") { 20 } else { 30 },
            Codec::G726 => {
                let kbit = name.rsplit('-').next().and_then(|k| k.parse::<u8>().ok());
                f.param = kbit.map_or(4, |k| (k / 8).clamp(2, 5));
                if name.trim().to_ascii_uppercase().starts_with("AAL2-") {
                    f.param |= G726_AAL2;
                }
            }
            _ => {}
        }
        Some(f)
    }

    /// Audio that is really 16 kHz or wider: worth a 16 kHz recording.
    pub fn is_wideband(&self) -> bool {
        match self.codec {
            Codec::G722 | Codec::AmrWb | Codec::Opus => true,
            Codec::L16 => self.clock >= 16000,
            _ => false,
        }
    }
}

/// The decodable payload types of an SDP media section, with their
/// formats (rtpmap or RFC 3551 static assignment, fmtp).
pub fn formats_from_sdp(m: &crate::sip::sdp::Media) -> Vec<(u8, Format)> {
    m.formats
        .iter()
        .filter_map(|&pt| {
            let name = m.encoding(pt)?;
            let ch = m
                .rtpmaps
                .iter()
                .find(|r| r.pt == pt)
                .and_then(|r| r.channels)
                .unwrap_or(1);
            Some((
                pt,
                Format::from_sdp(name, m.clock_rate(pt), ch, m.fmtp(pt))?,
            ))
        })
        .collect()
}

impl Codec {
    /// Maps an SDP rtpmap encoding name (case-insensitive) to a kind.
    pub fn from_encoding(name: &str) -> Option<Codec> {
        let n = name.trim().to_ascii_uppercase();
        Some(match n.as_str() {
            "PCMU" => Codec::Pcmu,
            "PCMA" => Codec::Pcma,
            "CN" => Codec::ComfortNoise,
            "TELEPHONE-EVENT" => Codec::TelephoneEvent,
            "G722" => Codec::G722,
            "G729" | "G729A" | "G729B" | "G729AB" => Codec::G729,
            "AMR" => Codec::AmrNb,
            "AMR-WB" => Codec::AmrWb,
            "OPUS" => Codec::Opus,
            "GSM" => Codec::Gsm,
            "ILBC" => Codec::Ilbc,
            "L16" => Codec::L16,
            "G726-16" | "G726-24" | "G726-32" | "G726-40" | "G721" | "AAL2-G726-16"
            | "AAL2-G726-24" | "AAL2-G726-32" | "AAL2-G726-40" => Codec::G726,
            _ => return None,
        })
    }

    /// The static payload-type assignment of RFC 3551 for the kinds above.
    pub fn from_static_pt(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            3 => Some(Codec::Gsm),
            8 => Some(Codec::Pcma),
            9 => Some(Codec::G722),
            13 => Some(Codec::ComfortNoise),
            18 => Some(Codec::G729),
            _ => None,
        }
    }

    /// The name metadata and history use (`codec-unsupported:NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::ComfortNoise => "CN",
            Codec::TelephoneEvent => "telephone-event",
            Codec::G722 => "G722",
            Codec::G729 => "G729",
            Codec::AmrNb => "AMR",
            Codec::AmrWb => "AMR-WB",
            Codec::Opus => "opus",
            Codec::Gsm => "GSM",
            Codec::Ilbc => "iLBC",
            Codec::L16 => "L16",
            Codec::G726 => "G726",
        }
    }

    /// Audio codecs (not CN or events).
    pub fn is_audio(self) -> bool {
        !matches!(self, Codec::ComfortNoise | Codec::TelephoneEvent)
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

/// The two G.711 laws (ITU-T G.711 tables 1a and 2a).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Law {
    Ulaw,
    Alaw,
}

/// Decodes G.711 `payload` into `out` (as many samples as both hold):
/// the same values as [`ULAW_DECODE`] / [`ALAW_DECODE`], 16 at a time in
/// AVX2 registers where the CPU has them, by table otherwise. (On the
/// 50-call capture the vector path takes 2.5x fewer instructions than the
/// table loop; `cargo bench --bench media -- g711`: 12 against 33 ns per
/// 160-byte packet.)
#[inline]
pub fn decode_law_into(law: Law, payload: &[u8], out: &mut [i16]) {
    let n = payload.len().min(out.len());
    let (payload, out) = (&payload[..n], &mut out[..n]);
    #[cfg(target_arch = "x86_64")]
    if n >= 16 && std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        let done = unsafe { x86::decode_avx2(law, payload, out) };
        return decode_into(table(law), &payload[done..], &mut out[done..]);
    }
    decode_into(table(law), payload, out)
}

/// Encodes `samples` into G.711 codes in `out` (as many as both hold):
/// the same codes as [`encode_ulaw`] / [`encode_alaw`], 16 at a time in
/// AVX2 registers where the CPU has them, by table otherwise. The WAV
/// writer encodes every mixed sample of a μ-law or A-law recording here.
#[inline]
pub fn encode_law_into(law: Law, samples: &[i16], out: &mut [u8]) {
    let n = samples.len().min(out.len());
    let (samples, out) = (&samples[..n], &mut out[..n]);
    // Whole blocks in vector registers first, where the CPU has AVX2.
    #[cfg(target_arch = "x86_64")]
    let done = if n >= 16 && std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { x86::encode_avx2(law, samples, out) }
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    let enc = match law {
        Law::Ulaw => encode_ulaw,
        Law::Alaw => encode_alaw,
    };
    for (o, &x) in out[done..].iter_mut().zip(&samples[done..]) {
        *o = enc(x);
    }
}

/// [`encode_law_into`] for stereo: frames of `left` and `right` (as many
/// as all three hold) into interleaved codes, left first.
#[inline]
pub fn encode_law_stereo_into(law: Law, left: &[i16], right: &[i16], out: &mut [u8]) {
    let n = left.len().min(right.len()).min(out.len() / 2);
    let (left, right, out) = (&left[..n], &right[..n], &mut out[..2 * n]);
    // Whole blocks in vector registers first, where the CPU has AVX2.
    #[cfg(target_arch = "x86_64")]
    let done = if n >= 16 && std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        unsafe { x86::encode_stereo_avx2(law, left, right, out) }
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    let enc = match law {
        Law::Ulaw => encode_ulaw,
        Law::Alaw => encode_alaw,
    };
    for ((d, &a), &b) in out[2 * done..]
        .chunks_exact_mut(2)
        .zip(&left[done..])
        .zip(&right[done..])
    {
        d[0] = enc(a);
        d[1] = enc(b);
    }
}

fn table(law: Law) -> &'static [i16; 256] {
    match law {
        Law::Ulaw => &ULAW_DECODE,
        Law::Alaw => &ALAW_DECODE,
    }
}

/// The AVX2 paths of the bulk functions above.
#[cfg(target_arch = "x86_64")]
mod x86;

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
    fn vector_decoding_equals_the_tables() {
        // Every code at every position of a block, and lengths that leave
        // a tail for the table (0..=40 bytes).
        let codes: Vec<u8> = (0..=255u8).chain(0..=255u8).rev().collect();
        for (law, table) in [(Law::Ulaw, &ULAW_DECODE), (Law::Alaw, &ALAW_DECODE)] {
            for off in 0..16 {
                let p = &codes[off..];
                let mut out = vec![0i16; p.len()];
                decode_law_into(law, p, &mut out);
                let want: Vec<i16> = p.iter().map(|&b| table[b as usize]).collect();
                assert_eq!(out, want, "{law:?} from offset {off}");
            }
            for len in 0..=40 {
                let mut out = vec![7i16; len + 3];
                decode_law_into(law, &codes[..len], &mut out);
                let want: Vec<i16> = codes[..len].iter().map(|&b| table[b as usize]).collect();
                assert_eq!(&out[..len], &want[..], "{law:?} length {len}");
                assert_eq!(&out[len..], &[7; 3], "{law:?} wrote past {len}");
            }
        }
    }

    #[test]
    fn vector_encoding_equals_the_tables_for_every_sample() {
        let all: Vec<i16> = (i16::MIN..=i16::MAX).collect();
        for (law, enc) in [
            (Law::Ulaw, encode_ulaw as fn(i16) -> u8),
            (Law::Alaw, encode_alaw),
        ] {
            let mut out = vec![0u8; all.len()];
            encode_law_into(law, &all, &mut out);
            for (&x, &c) in all.iter().zip(&out) {
                assert_eq!(c, enc(x), "{law:?} of {x}");
            }
            // Stereo: the left channel is every sample, the right one the
            // same samples reversed.
            let rev: Vec<i16> = all.iter().rev().copied().collect();
            let mut out2 = vec![0u8; 2 * all.len()];
            encode_law_stereo_into(law, &all, &rev, &mut out2);
            for ((&l, &r), c) in all.iter().zip(&rev).zip(out2.chunks_exact(2)) {
                assert_eq!(c, [enc(l), enc(r)], "{law:?} stereo of {l}, {r}");
            }
            for len in 0..=40 {
                let mut out = vec![7u8; 2 * len + 3];
                encode_law_stereo_into(law, &all[..len], &rev[..len], &mut out);
                for i in 0..len {
                    assert_eq!(out[2 * i..2 * i + 2], [enc(all[i]), enc(rev[i])]);
                }
                assert_eq!(&out[2 * len..], &[7; 3], "{law:?} stereo wrote past {len}");
            }
            // Tails shorter than a block, and no write past the end.
            for len in 0..=40 {
                let mut out = vec![7u8; len + 3];
                encode_law_into(law, &all[30_000..30_000 + len], &mut out);
                let want: Vec<u8> = all[30_000..30_000 + len].iter().map(|&x| enc(x)).collect();
                assert_eq!(&out[..len], &want[..], "{law:?} length {len}");
                assert_eq!(&out[len..], &[7; 3], "{law:?} wrote past {len}");
            }
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
        assert_eq!(Codec::from_encoding("G729"), Some(Codec::G729));
        assert_eq!(Codec::from_encoding("G723"), None);
        let amr = Format::from_sdp("AMR-WB", 16000, 1, "octet-align=1; mode-set=2").unwrap();
        assert_eq!((amr.codec, amr.clock, amr.param), (Codec::AmrWb, 16000, 1));
        assert_eq!(Format::from_sdp("G726-24", 8000, 1, "").unwrap().param, 3);
        assert_eq!(
            Format::from_sdp("AAL2-G726-40", 8000, 1, "").unwrap().param,
            5 | G726_AAL2
        );
        assert_eq!(
            Format::from_sdp("iLBC", 8000, 1, "mode=20").unwrap().param,
            20
        );
        assert_eq!(Codec::from_static_pt(13), Some(Codec::ComfortNoise));
    }
}
