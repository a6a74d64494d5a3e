//! G.729 (Annex A and B) and RFC 3389 comfort noise through Belledonne's
//! libbcg729 (Debian `libbcg729-0`), whose decoder implements Annex B's
//! comfort noise generator: a 2-byte SID frame (G.729 Annex B 4.1) sets
//! the noise's level and spectrum, and every later frame the sender did
//! not transmit (DTX) is synthesised from it (Annex B 4.4), as a phone
//! would play it. FFmpeg's G.729 decoder has no Annex B: it would render
//! SID frames as silence. The same generator takes an RFC 3389 comfort
//! noise payload's level (-dBov). Its reflection coefficients (the noise's
//! spectral shape) are not passed on: bcg729 1.1.1's conversion of them
//! to LSPs divides by zero on some inputs (SIGFPE, found by
//! `fuzz/comfort_noise`), so RFC 3389 noise is spectrally flat at the
//! level sent, as RFC 3389 section 3.2 allows a receiver to make it.
//!
//! A plain state machine over bytes, like the libavcodec decoders: no
//! clock, file or socket.

use super::DecodeError;
use super::av::Resampler;

/// Samples in one 10 ms G.729 frame at 8 kHz (ITU-T G.729 3.0).
pub const FRAME_SAMPLES: usize = 80;
/// Coded bytes of a G.729 speech frame (80 bits) and of an Annex B SID
/// frame (15 bits, padded to 2 bytes; RFC 3551 4.5.6).
pub const SPEECH_BYTES: usize = 10;
pub const SID_BYTES: usize = 2;
/// Most speech frames decoded from one payload: 120 ms, what the jitter
/// window takes from one packet; a longer payload is refused undecoded.
const MAX_FRAMES: usize = 12;
/// The loudest RFC 3389 level passed to bcg729, -dBov: its generator
/// caps the noise near -40 dBov anyway, and a louder level (a smaller
/// number) overflows its fixed-point energy to silence (bcg729 1.1.1).
const RFC3389_LOUDEST: u8 = 42;
/// dB by which bcg729 1.1.1 renders an RFC 3389 level louder than the
/// level says (0 dBov = a full-scale square wave, RMS 32768; RFC 3389
/// 3.1): measured at -50..-90 dBov as +5.0..+5.6 dB; taken off the level
/// passed to it.
const RFC3389_BCG729_GAIN: u8 = 5;

#[repr(C)]
struct Bcg729Ctx {
    _opaque: [u8; 0],
}

#[link(name = "bcg729")]
unsafe extern "C" {
    fn initBcg729DecoderChannel() -> *mut Bcg729Ctx;
    fn closeBcg729DecoderChannel(ctx: *mut Bcg729Ctx);
    fn bcg729Decoder(
        ctx: *mut Bcg729Ctx,
        bitstream: *const u8,
        len: u8,
        erased: u8,
        sid: u8,
        rfc3389: u8,
        signal: *mut i16,
    );
}

/// What one coded unit is, for [`G729Decoder::frame`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Unit<'a> {
    Speech(&'a [u8]),
    Sid(&'a [u8]),
    Rfc3389(&'a [u8]),
    /// A frame the sender did not transmit: comfort noise after a SID,
    /// concealment after speech (Annex B 4.4, G.729 4.4).
    Untransmitted,
}

/// One leg's libbcg729 decoder, resampled to the recording's rate.
pub struct G729Decoder {
    ctx: *mut Bcg729Ctx,
    resampler: Resampler,
    pcm: [i16; FRAME_SAMPLES],
    /// The last unit decoded was a SID or an RFC 3389 payload: what is
    /// not transmitted next is comfort noise.
    comfort: bool,
}

// SAFETY: the context is owned and only used through &mut self.
unsafe impl Send for G729Decoder {}

impl G729Decoder {
    /// A decoder whose output is mono at `out_rate` Hz.
    pub fn new(out_rate: u32) -> Result<G729Decoder, DecodeError> {
        // SAFETY: allocates a context (null on failure, checked).
        let ctx = unsafe { initBcg729DecoderChannel() };
        if ctx.is_null() {
            return Err(DecodeError::Open(crate::media::codec::Codec::G729));
        }
        Ok(G729Decoder {
            ctx,
            resampler: Resampler::new(out_rate),
            pcm: [0; FRAME_SAMPLES],
            comfort: false,
        })
    }

    fn frame(&mut self, unit: Unit<'_>, out: &mut Vec<i16>) -> Result<(), DecodeError> {
        let (data, erased, sid, rfc3389): (&[u8], u8, u8, u8) = match unit {
            Unit::Speech(d) => (d, 0, 0, 0),
            Unit::Sid(d) => (d, 0, 1, 0),
            Unit::Rfc3389(d) => (d, 0, 1, 1),
            Unit::Untransmitted => (&[], 1, 0, 0),
        };
        let ptr = if data.is_empty() {
            std::ptr::null()
        } else {
            data.as_ptr()
        };
        // SAFETY: `data` holds `len` bytes: 10 (speech), 2 (SID) or 1 (RFC
        // 3389: the level alone, filter order 0); null with erasure set is
        // the untransmitted frame.
        // The output holds the 80 samples bcg729 writes.
        unsafe {
            bcg729Decoder(
                self.ctx,
                ptr,
                data.len() as u8,
                erased,
                sid,
                rfc3389,
                self.pcm.as_mut_ptr(),
            )
        };
        self.comfort = match unit {
            Unit::Sid(_) | Unit::Rfc3389(_) => true,
            Unit::Speech(_) => false,
            Unit::Untransmitted => self.comfort,
        };
        self.resampler.mono_s16(&self.pcm, 8000, out)
    }

    /// An RTP payload of G.729 (RFC 3551 4.5.6): any number of 10-byte
    /// speech frames, optionally ending in one 2-byte SID frame.
    pub fn payload(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), DecodeError> {
        let speech = payload.len() / SPEECH_BYTES * SPEECH_BYTES;
        let tail = payload.len() - speech;
        if payload.is_empty() || (tail != 0 && tail != SID_BYTES) {
            return Err(DecodeError::Corrupt);
        }
        if speech / SPEECH_BYTES > MAX_FRAMES {
            return Err(DecodeError::Oversized);
        }
        for f in payload[..speech].chunks_exact(SPEECH_BYTES) {
            self.frame(Unit::Speech(f), out)?;
        }
        if tail == SID_BYTES {
            self.frame(Unit::Sid(&payload[speech..]), out)?;
        }
        Ok(())
    }

    /// An RFC 3389 comfort noise payload: 10 ms of noise at its level
    /// (the first byte, 0..=127 -dBov, section 3.1, which must be there;
    /// the reflection coefficients after it are not used: see the module
    /// documentation).
    pub fn rfc3389(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<(), DecodeError> {
        match payload {
            [] => Err(DecodeError::Corrupt),
            [level, ..] if *level > 127 => Err(DecodeError::Corrupt),
            [level, ..] => {
                let level = level
                    .saturating_add(RFC3389_BCG729_GAIN)
                    .clamp(RFC3389_LOUDEST, 127);
                self.frame(Unit::Rfc3389(&[level]), out)
            }
        }
    }

    /// Whether the stream is in a comfort noise period (its last coded
    /// unit was a SID or RFC 3389 frame).
    pub fn in_comfort_noise(&self) -> bool {
        self.comfort
    }

    /// 10 ms more of the comfort noise (an untransmitted frame).
    pub fn comfort_noise(&mut self, out: &mut Vec<i16>) -> Result<(), DecodeError> {
        self.frame(Unit::Untransmitted, out)
    }
}

impl Drop for G729Decoder {
    fn drop(&mut self) {
        // SAFETY: allocated in `new`, freed once.
        unsafe { closeBcg729DecoderChannel(self.ctx) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rms(x: &[i16]) -> f64 {
        (x.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
    }

    /// RFC 3389 levels: -45 dBov is far louder than -70 dBov, and both
    /// are noise (not silence), as is a level louder than bcg729 takes;
    /// the generator keeps going after them.
    #[test]
    fn rfc3389_level_sets_the_noise_level() {
        let level = |dbov: u8| {
            let mut d = G729Decoder::new(8000).unwrap();
            let mut out = Vec::new();
            d.rfc3389(&[dbov], &mut out).unwrap();
            assert!(d.in_comfort_noise());
            for _ in 0..50 {
                d.comfort_noise(&mut out).unwrap();
            }
            assert_eq!(out.len(), 51 * FRAME_SAMPLES);
            rms(&out[800..])
        };
        let (loud, quiet) = (level(45), level(70));
        assert!(quiet > 0.0, "comfort noise is not silence");
        assert!(
            loud > 10.0 * quiet,
            "-45 dBov {loud:.1} vs -70 dBov {quiet:.1}"
        );
        // -45 dBov of full scale (32768) is an RMS of 184.
        assert!((130.0..260.0).contains(&loud), "-45 dBov is {loud:.1} RMS");
        assert!(level(10) >= loud, "a loud level is capped, not silenced");
    }

    fn hex(h: &[u8]) -> Vec<u8> {
        h.chunks(2)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
            .collect()
    }

    #[test]
    fn bad_payloads_are_refused() {
        let mut d = G729Decoder::new(8000).unwrap();
        let mut out = Vec::new();
        assert_eq!(d.payload(&[], &mut out), Err(DecodeError::Corrupt));
        assert_eq!(d.payload(&[0; 13], &mut out), Err(DecodeError::Corrupt));
        assert_eq!(d.payload(&[0; 130], &mut out), Err(DecodeError::Oversized));
        assert_eq!(d.rfc3389(&[], &mut out), Err(DecodeError::Corrupt));
        assert_eq!(d.rfc3389(&[200], &mut out), Err(DecodeError::Corrupt));
        assert!(out.is_empty());
        // Reflection coefficients bcg729 1.1.1 divides by zero on (found
        // by fuzz/comfort_noise) are not passed to it; any length works.
        d.rfc3389(&hex(b"49e102436e73240000000000"), &mut out)
            .unwrap();
        d.rfc3389(&hex(b"4902436e732400000000"), &mut out).unwrap();
        d.rfc3389(&[40; 300], &mut out).unwrap();
        assert_eq!(out.len(), 3 * FRAME_SAMPLES);
        assert!(out.iter().any(|&s| s != 0));
    }
}
