//! Decoders for every codec a carrier carries, behind one per-leg
//! [`LegDecoder`] that turns an RTP payload into mono samples at the
//! recording's rate (8 or 16 kHz).
//!
//! G.711 at 8 kHz never comes here: the jitter buffer decodes it by table
//! straight into its ring. Everything else does: G.711 and L16 when the
//! recording is 16 kHz (decoded here, then resampled), and through
//! FFmpeg's libavcodec ([`av`]) G.722, AMR-NB and AMR-WB (after [`amr`]
//! undoes RFC 4867's payload format), Opus, GSM, iLBC and G.726; G.729
//! (A/B) and RFC 3389 comfort noise through libbcg729 ([`g729`]), whose
//! Annex B generator also synthesises the noise of the frames a sender
//! leaves out after a SID ([`LegDecoder::comfort_noise`]). Every
//! decoder's output goes through libswresample to the
//! recording's rate: a narrowband leg in a 16 kHz recording is
//! interpolated by a proper filter, never by repeating samples.

pub mod amr;
pub mod av;
pub mod g729;

use crate::media::codec::{ALAW_DECODE, Codec, Format, ULAW_DECODE};
use av::{AvDecoder, Resampler};
use g729::G729Decoder;

/// Why a payload gave no audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("no decoder for {}", .0.name())]
    Unsupported(Codec),
    #[error("the {} decoder did not open", .0.name())]
    Open(Codec),
    #[error("corrupt frame")]
    Corrupt,
    #[error(transparent)]
    Amr(#[from] amr::AmrError),
    #[error("resampler failed")]
    Resampler,
    #[error("payload holds more audio than the jitter window")]
    Oversized,
}

/// Largest payload decoded (bytes): 120 ms of L16 stereo at 16 kHz.
const MAX_PAYLOAD_BYTES: usize = 7680;

enum Kind {
    Av(Box<AvDecoder>),
    /// G.711 or L16, converted here and resampled.
    Pcm(Box<Resampler>),
    /// G.729 or RFC 3389 comfort noise (libbcg729).
    G729(Box<G729Decoder>),
    /// Opening failed: every packet of this type is undecodable.
    Failed(DecodeError),
}

struct Slot {
    pt: u8,
    fmt: Format,
    kind: Kind,
}

/// One leg's decoders, one per payload type seen, opened on first use.
pub struct LegDecoder {
    rate: u32,
    slots: Vec<Slot>,
    out: Vec<i16>,
    tmp: Vec<i16>,
    frames: Vec<u8>,
    /// The payload type whose decoder is in a comfort noise period (its
    /// last payload was or ended in a SID / RFC 3389 frame).
    comfort: Option<u8>,
}

impl LegDecoder {
    /// Decoders whose output is mono at `rate` Hz.
    pub fn new(rate: u32) -> LegDecoder {
        LegDecoder {
            rate,
            slots: Vec::new(),
            out: Vec::new(),
            tmp: Vec::new(),
            frames: Vec::new(),
            comfort: None,
        }
    }

    fn slot(&mut self, pt: u8, fmt: Format) -> usize {
        if let Some(i) = self.slots.iter().position(|s| s.pt == pt && s.fmt == fmt) {
            return i;
        }
        let kind = match fmt.codec {
            Codec::Pcmu | Codec::Pcma | Codec::L16 => {
                Kind::Pcm(Box::new(Resampler::new(self.rate)))
            }
            Codec::G729 | Codec::ComfortNoise => match G729Decoder::new(self.rate) {
                Ok(d) => Kind::G729(Box::new(d)),
                Err(e) => Kind::Failed(e),
            },
            _ => match AvDecoder::open(fmt, self.rate) {
                Ok(d) => Kind::Av(Box::new(d)),
                Err(e) => Kind::Failed(e),
            },
        };
        // A payload type re-bound by a re-INVITE replaces its decoder.
        self.slots.retain(|s| s.pt != pt);
        self.slots.push(Slot { pt, fmt, kind });
        self.slots.len() - 1
    }

    /// The samples the last successful [`LegDecoder::decode`] produced.
    pub fn last(&self) -> &[i16] {
        &self.out
    }

    /// Decodes one payload of type `pt` (meaning `fmt`; an RFC 3389
    /// comfort noise payload gives 10 ms of its noise) to samples at the
    /// leg's rate.
    pub fn decode(&mut self, pt: u8, fmt: Format, payload: &[u8]) -> Result<&[i16], DecodeError> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(DecodeError::Oversized);
        }
        let i = self.slot(pt, fmt);
        self.out.clear();
        let rate = self.rate;
        let Slot { kind, .. } = &mut self.slots[i];
        match kind {
            Kind::Failed(e) => return Err(*e),
            Kind::Pcm(r) => {
                self.tmp.clear();
                pcm(fmt, payload, &mut self.tmp)?;
                r.mono_s16(&self.tmp, fmt.clock, &mut self.out)?;
            }
            Kind::G729(d) => {
                if fmt.codec == Codec::ComfortNoise {
                    d.rfc3389(payload, &mut self.out)?;
                } else {
                    d.payload(payload, &mut self.out)?;
                }
                self.comfort = d.in_comfort_noise().then_some(pt);
                return Ok(&self.out);
            }
            Kind::Av(d) => frames(fmt, payload, d, &mut self.frames, &mut self.out, rate)?,
        }
        // Speech of another codec ends a comfort noise period.
        self.comfort = None;
        Ok(&self.out)
    }

    /// Whether the last payload decoded was (or ended in) comfort noise:
    /// what the sender leaves out next is that noise, not silence
    /// (G.729 Annex B 4.4, RFC 3389 section 4).
    pub fn in_comfort_noise(&self) -> bool {
        self.comfort.is_some()
    }

    /// `n` samples more of the current comfort noise, at the leg's rate
    /// (generated in whole 10 ms frames; the rest of the last is dropped);
    /// empty outside a comfort noise period.
    pub fn comfort_noise(&mut self, n: usize) -> &[i16] {
        self.out.clear();
        let slot = self
            .comfort
            .and_then(|pt| self.slots.iter_mut().find(|s| s.pt == pt));
        if let Some(Slot {
            kind: Kind::G729(d),
            ..
        }) = slot
        {
            while self.out.len() < n {
                if d.comfort_noise(&mut self.out).is_err() {
                    break;
                }
            }
        }
        self.out.truncate(n);
        &self.out
    }
}

/// G.711 by table, L16 from big-endian (stereo averaged).
fn pcm(fmt: Format, payload: &[u8], out: &mut Vec<i16>) -> Result<(), DecodeError> {
    match fmt.codec {
        Codec::Pcmu => out.extend(payload.iter().map(|&b| ULAW_DECODE[b as usize])),
        Codec::Pcma => out.extend(payload.iter().map(|&b| ALAW_DECODE[b as usize])),
        _ => {
            let ch = fmt.channels.max(1) as usize;
            if !payload.len().is_multiple_of(2 * ch) {
                return Err(DecodeError::Corrupt);
            }
            out.extend(payload.chunks_exact(2 * ch).map(|f| {
                let sum: i32 = f
                    .chunks_exact(2)
                    .map(|s| i16::from_be_bytes([s[0], s[1]]) as i32)
                    .sum();
                (sum / ch as i32) as i16
            }));
        }
    }
    Ok(())
}

/// Splits a payload into the frames its codec's decoder takes one at a time.
fn frames(
    fmt: Format,
    payload: &[u8],
    d: &mut AvDecoder,
    buf: &mut Vec<u8>,
    out: &mut Vec<i16>,
    rate: u32,
) -> Result<(), DecodeError> {
    let fixed = |n: usize, d: &mut AvDecoder, out: &mut Vec<i16>| {
        if payload.is_empty() || !payload.len().is_multiple_of(n) {
            return Err(DecodeError::Corrupt);
        }
        payload.chunks_exact(n).try_for_each(|f| d.decode(f, out))
    };
    match fmt.codec {
        Codec::Gsm => fixed(33, d, out),
        Codec::Ilbc => fixed(if fmt.param == 20 { 38 } else { 50 }, d, out),
        Codec::AmrNb | Codec::AmrWb => {
            let wb = fmt.codec == Codec::AmrWb;
            buf.clear();
            amr::depacketize(payload, wb, fmt.param == 1, buf)?;
            let mut s = &buf[..];
            while let Some(&h) = s.first() {
                let n = amr::frame_len(h, wb).min(s.len());
                let ft = h >> 3 & 15;
                if (wb && ft >= 9) || (!wb && ft >= 8) {
                    // SID, lost or no data: silence for the frame's 20 ms.
                    out.extend(std::iter::repeat_n(0, (rate / 50) as usize));
                } else {
                    d.decode(&s[..n], out)?;
                }
                s = &s[n..];
            }
            Ok(())
        }
        _ if payload.is_empty() => Err(DecodeError::Corrupt),
        _ => d.decode(payload, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(codec: Codec) -> Format {
        Format::of(codec)
    }

    /// Corrupt input of every kind gives an error or bounded output, never
    /// a panic, and never more audio than the payload could hold.
    #[test]
    fn corrupt_frames_are_refused_or_bounded() {
        let junk: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xff],
            vec![0x00; 3],
            (0..=255u8).collect(),
            vec![0xa5; 7000],
            vec![0x5a; MAX_PAYLOAD_BYTES + 1],
        ];
        let mut amr_oa = fmt(Codec::AmrNb);
        amr_oa.param = 1;
        let mut wb_oa = fmt(Codec::AmrWb);
        wb_oa.param = 1;
        let formats = [
            fmt(Codec::G722),
            fmt(Codec::G729),
            fmt(Codec::AmrNb),
            amr_oa,
            fmt(Codec::AmrWb),
            wb_oa,
            fmt(Codec::Opus),
            fmt(Codec::Gsm),
            fmt(Codec::Ilbc),
            Format {
                param: 20,
                ..fmt(Codec::Ilbc)
            },
            Format {
                clock: 16000,
                channels: 2,
                ..fmt(Codec::L16)
            },
            fmt(Codec::G726),
            Format {
                param: 5 | crate::media::codec::G726_AAL2,
                ..fmt(Codec::G726)
            },
            fmt(Codec::ComfortNoise),
            fmt(Codec::Pcmu),
        ];
        for rate in [8000, 16000] {
            for f in formats {
                let mut d = LegDecoder::new(rate);
                for j in &junk {
                    // At most 8 samples a byte (G.729 at 8 kHz, doubled at
                    // 16 kHz), or one 120 ms Opus/AMR frame from a few
                    // bytes; the jitter buffer refuses what passes its window.
                    if let Ok(s) = d.decode(96, f, j) {
                        assert!(
                            s.len() <= j.len() * 16 + 4000,
                            "{f:?}: {} samples from {} bytes",
                            s.len(),
                            j.len()
                        );
                    }
                }
                assert_eq!(d.decode(96, f, &junk[5]), Err(DecodeError::Oversized));
            }
        }
    }

    #[test]
    fn wrong_sizes_for_framed_codecs() {
        let mut d = LegDecoder::new(8000);
        assert_eq!(
            d.decode(18, fmt(Codec::G729), &[0; 15]),
            Err(DecodeError::Corrupt)
        );
        assert_eq!(
            d.decode(3, fmt(Codec::Gsm), &[0xd0; 34]),
            Err(DecodeError::Corrupt)
        );
        assert_eq!(
            d.decode(97, fmt(Codec::Ilbc), &[0; 38]),
            Err(DecodeError::Corrupt)
        );
        // A G.729B SID frame alone: 10 ms of comfort noise, and more of
        // it for the frames not sent after it.
        assert_eq!(
            d.decode(18, fmt(Codec::G729), &[0x12, 0x34])
                .map(<[i16]>::len),
            Ok(80)
        );
        assert!(d.in_comfort_noise());
        assert_eq!(d.comfort_noise(200).len(), 200);
        assert!(d.decode(18, fmt(Codec::G729), &[0x5a; 10]).is_ok());
        assert!(!d.in_comfort_noise(), "speech ends it");
        assert!(d.comfort_noise(200).is_empty());
        // AMR with a reserved frame type.
        assert!(matches!(
            d.decode(97, fmt(Codec::AmrNb), &[0xf0, 0x60]),
            Err(DecodeError::Amr(_))
        ));
    }

    #[test]
    fn a_rebound_payload_type_gets_its_new_decoder() {
        let mut d = LegDecoder::new(8000);
        assert_eq!(
            d.decode(96, fmt(Codec::Pcmu), &[0xff; 160])
                .map(<[i16]>::len),
            Ok(160)
        );
        // The same type now says L16 (a re-INVITE): 2 bytes a sample.
        let l16 = Format {
            clock: 8000,
            ..fmt(Codec::L16)
        };
        assert_eq!(d.decode(96, l16, &[0; 320]).map(<[i16]>::len), Ok(160));
    }
}
