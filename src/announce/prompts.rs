//! The five guidance prompts: loading and validating the WAV files an
//! operator may replace, and G.711 payloads for playing them.
//!
//! Files are read once at start-up (and by `check-config`); a file that is
//! missing, unreadable or in the wrong format is an error naming the file
//! and what is wrong. Samples are kept decoded (16-bit linear) and encoded
//! to PCMU and PCMA once, so the player only copies bytes.

use crate::media::codec::{decode_alaw, decode_ulaw, encode_alaw, encode_ulaw};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The only sample rate the prompts may have (G.711 narrowband).
pub const SAMPLE_RATE: u32 = 8000;
/// Shortest accepted prompt: anything shorter is almost certainly a wrong file.
pub const MIN_DURATION: Duration = Duration::from_millis(500);
/// Longest accepted prompt: the recording waits for it to end.
pub const MAX_DURATION: Duration = Duration::from_secs(60);
/// Number of guidance prompts a contract can choose from (`guidance = 1..5`).
pub const PROMPT_COUNT: u8 = 5;

/// A G.711 codec as negotiated in SDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum G711 {
    /// Payload type 0, mu-law.
    Pcmu,
    /// Payload type 8, A-law.
    Pcma,
}

impl G711 {
    /// The codec for a static RTP payload type, if it is G.711.
    pub fn from_payload_type(pt: u8) -> Option<G711> {
        match pt {
            0 => Some(G711::Pcmu),
            8 => Some(G711::Pcma),
            _ => None,
        }
    }
    pub fn payload_type(self) -> u8 {
        match self {
            G711::Pcmu => 0,
            G711::Pcma => 8,
        }
    }
    pub fn encode(self, s: i16) -> u8 {
        match self {
            G711::Pcmu => encode_ulaw(s),
            G711::Pcma => encode_alaw(s),
        }
    }
    pub fn decode(self, b: u8) -> i16 {
        match self {
            G711::Pcmu => decode_ulaw(b),
            G711::Pcma => decode_alaw(b),
        }
    }
}

/// What is wrong with a prompt file's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WavProblem {
    NotRiffWave,
    MissingFmt,
    MissingData,
    BadFmtChunk,
    /// A chunk claims more bytes than the file has.
    Truncated {
        chunk: String,
    },
    /// Format tag not PCM (1), A-law (6), mu-law (7) or extensible with one of those.
    Encoding(u16),
    BitsPerSample {
        tag: u16,
        bits: u16,
    },
    SampleRate(u32),
    Channels(u16),
    TooShort(Duration),
    TooLong(Duration),
}

impl fmt::Display for WavProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WavProblem::NotRiffWave => write!(f, "not a RIFF/WAVE file"),
            WavProblem::MissingFmt => write!(f, "no fmt chunk"),
            WavProblem::MissingData => write!(f, "no data chunk"),
            WavProblem::BadFmtChunk => write!(f, "fmt chunk too short"),
            WavProblem::Truncated { chunk } => {
                write!(f, "{chunk} chunk runs past the end of the file")
            }
            WavProblem::Encoding(t) => write!(
                f,
                "unsupported encoding (format tag {t}); need 16-bit PCM (1), A-law (6) or mu-law (7)"
            ),
            WavProblem::BitsPerSample { tag, bits } => {
                write!(
                    f,
                    "{bits} bits per sample with format tag {tag}; need 16 for PCM, 8 for G.711"
                )
            }
            WavProblem::SampleRate(r) => write!(f, "sample rate {r} Hz; need {SAMPLE_RATE} Hz"),
            WavProblem::Channels(c) => write!(f, "{c} channels; need 1 (mono)"),
            WavProblem::TooShort(d) => {
                write!(
                    f,
                    "{:.3} s long; need at least {:.1} s",
                    d.as_secs_f64(),
                    MIN_DURATION.as_secs_f64()
                )
            }
            WavProblem::TooLong(d) => {
                write!(
                    f,
                    "{:.3} s long; need at most {} s",
                    d.as_secs_f64(),
                    MAX_DURATION.as_secs()
                )
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("guidance prompt {}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("guidance prompt {}: {problem}", path.display())]
    Format { path: PathBuf, problem: WavProblem },
    #[error("guidance prompt {id} does not exist (ids are 1..={PROMPT_COUNT})")]
    NoSuchPrompt { id: u8 },
}

impl PromptError {
    /// The file the error is about, when there is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            PromptError::Io { path, .. } | PromptError::Format { path, .. } => Some(path),
            PromptError::NoSuchPrompt { .. } => None,
        }
    }
}

/// One playable sound: a guidance prompt or a beep.
#[derive(Clone, Debug)]
pub struct Prompt {
    name: String,
    samples: Arc<[i16]>,
    pcmu: Arc<[u8]>,
    pcma: Arc<[u8]>,
}

impl Prompt {
    /// A prompt from 8 kHz linear samples (used for beeps and tests).
    pub fn from_samples(name: impl Into<String>, samples: Vec<i16>) -> Prompt {
        let pcmu: Arc<[u8]> = samples.iter().map(|&s| encode_ulaw(s)).collect();
        let pcma: Arc<[u8]> = samples.iter().map(|&s| encode_alaw(s)).collect();
        Prompt {
            name: name.into(),
            samples: samples.into(),
            pcmu,
            pcma,
        }
    }

    /// Loads and validates one prompt file.
    pub fn load(path: &Path) -> Result<Prompt, PromptError> {
        let bytes = std::fs::read(path).map_err(|source| PromptError::Io {
            path: path.to_owned(),
            source,
        })?;
        let samples = parse_wav(&bytes).map_err(|problem| PromptError::Format {
            path: path.to_owned(),
            problem,
        })?;
        Ok(Prompt::from_samples(path.display().to_string(), samples))
    }

    /// The file it came from (or the name given to `from_samples`).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Decoded 16-bit linear samples at 8 kHz.
    pub fn samples(&self) -> &[i16] {
        &self.samples
    }
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.samples.len() as u64 * 1_000_000 / SAMPLE_RATE as u64)
    }
    /// The whole prompt encoded in `codec`, one byte per sample.
    pub fn payload(&self, codec: G711) -> Arc<[u8]> {
        match codec {
            G711::Pcmu => self.pcmu.clone(),
            G711::Pcma => self.pcma.clone(),
        }
    }
}

/// The five guidance prompts of `[announce] dir`.
#[derive(Clone, Debug)]
pub struct Prompts {
    prompts: Vec<Prompt>,
}

impl Prompts {
    /// Loads `guidance1.wav` .. `guidance5.wav`; fails on the first file
    /// that is missing or wrong, naming it.
    pub fn load(dir: &Path) -> Result<Prompts, PromptError> {
        let prompts = (1..=PROMPT_COUNT)
            .map(|id| Prompt::load(&crate::config::guidance_file(dir, id)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Prompts { prompts })
    }

    /// Prompt `id` (1..=5).
    pub fn get(&self, id: u8) -> Result<&Prompt, PromptError> {
        (id as usize)
            .checked_sub(1)
            .and_then(|i| self.prompts.get(i))
            .ok_or(PromptError::NoSuchPrompt { id })
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

const TAG_PCM: u16 = 1;
const TAG_ALAW: u16 = 6;
const TAG_ULAW: u16 = 7;
const TAG_EXTENSIBLE: u16 = 0xFFFE;

/// Parses a WAV file and returns its samples as 16-bit linear, checking
/// everything callrec needs (encoding, 8 kHz, mono, 0.5..60 s). Unknown
/// chunks (fact, LIST, ...) are skipped.
pub fn parse_wav(bytes: &[u8]) -> Result<Vec<i16>, WavProblem> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavProblem::NotRiffWave);
    }
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    let mut data: Option<&[u8]> = None;
    let mut at = 12usize;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let size = le32(bytes, at + 4) as usize;
        let body_start = at + 8;
        let name = String::from_utf8_lossy(id).into_owned();
        let body = bytes
            .get(body_start..body_start.saturating_add(size))
            .ok_or(WavProblem::Truncated {
                chunk: name.clone(),
            })?;
        match id {
            b"fmt " => {
                if body.len() < 16 {
                    return Err(WavProblem::BadFmtChunk);
                }
                let mut tag = le16(body, 0);
                if tag == TAG_EXTENSIBLE {
                    // WAVEFORMATEXTENSIBLE: the real tag is the first two
                    // bytes of the subformat GUID at offset 24.
                    if body.len() < 26 {
                        return Err(WavProblem::BadFmtChunk);
                    }
                    tag = le16(body, 24);
                }
                fmt = Some((tag, le16(body, 2), le32(body, 4), le16(body, 14)));
            }
            b"data" => {
                data = Some(body);
                if fmt.is_some() {
                    break;
                }
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        at = body_start + size + (size & 1);
    }
    let (tag, channels, rate, bits) = fmt.ok_or(WavProblem::MissingFmt)?;
    let data = data.ok_or(WavProblem::MissingData)?;
    let samples: Vec<i16> = match (tag, bits) {
        (TAG_PCM, 16) => data
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect(),
        (TAG_ULAW, 8) => data.iter().map(|&b| decode_ulaw(b)).collect(),
        (TAG_ALAW, 8) => data.iter().map(|&b| decode_alaw(b)).collect(),
        (TAG_PCM | TAG_ULAW | TAG_ALAW, _) => return Err(WavProblem::BitsPerSample { tag, bits }),
        _ => return Err(WavProblem::Encoding(tag)),
    };
    if rate != SAMPLE_RATE {
        return Err(WavProblem::SampleRate(rate));
    }
    if channels != 1 {
        return Err(WavProblem::Channels(channels));
    }
    let duration = Duration::from_micros(samples.len() as u64 * 1_000_000 / SAMPLE_RATE as u64);
    if duration < MIN_DURATION {
        return Err(WavProblem::TooShort(duration));
    }
    if duration > MAX_DURATION {
        return Err(WavProblem::TooLong(duration));
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        let mut v = b"RIFF\0\0\0\0WAVE".to_vec();
        v.extend_from_slice(b"fmt \x10\0\0\0");
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        let block = channels * bits / 8;
        v.extend_from_slice(&(rate * block as u32).to_le_bytes());
        v.extend_from_slice(&block.to_le_bytes());
        v.extend_from_slice(&bits.to_le_bytes());
        // An odd-sized unknown chunk, to exercise padding.
        v.extend_from_slice(b"LIST\x03\0\0\0abc\0");
        v.extend_from_slice(b"data");
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        let len = (v.len() - 8) as u32;
        v[4..8].copy_from_slice(&len.to_le_bytes());
        v
    }

    #[test]
    fn accepts_the_three_encodings() {
        let pcm: Vec<u8> = (0..8000i16).flat_map(|i| (i * 3).to_le_bytes()).collect();
        let s = parse_wav(&wav(1, 1, 8000, 16, &pcm)).unwrap();
        assert_eq!(s.len(), 8000);
        assert_eq!(s[100], 300);
        let ulaw = vec![0x80u8; 8000];
        assert_eq!(
            parse_wav(&wav(7, 1, 8000, 8, &ulaw)).unwrap()[0],
            decode_ulaw(0x80)
        );
        let alaw = vec![0xd5u8; 8000];
        assert_eq!(
            parse_wav(&wav(6, 1, 8000, 8, &alaw)).unwrap()[0],
            decode_alaw(0xd5)
        );
    }

    #[test]
    fn names_each_problem() {
        let ulaw = vec![0xffu8; 8000];
        assert_eq!(
            parse_wav(&wav(7, 2, 8000, 8, &ulaw)),
            Err(WavProblem::Channels(2))
        );
        assert_eq!(
            parse_wav(&wav(7, 1, 16000, 8, &ulaw)),
            Err(WavProblem::SampleRate(16000))
        );
        assert_eq!(
            parse_wav(&wav(3, 1, 8000, 32, &ulaw)),
            Err(WavProblem::Encoding(3))
        );
        assert_eq!(
            parse_wav(&wav(1, 1, 8000, 8, &ulaw)),
            Err(WavProblem::BitsPerSample { tag: 1, bits: 8 })
        );
        assert!(matches!(
            parse_wav(&wav(7, 1, 8000, 8, &ulaw[..100])),
            Err(WavProblem::TooShort(_))
        ));
        assert!(matches!(
            parse_wav(&wav(7, 1, 8000, 8, &vec![0xff; 8000 * 61])),
            Err(WavProblem::TooLong(_))
        ));
        assert_eq!(parse_wav(b"garbage garbage"), Err(WavProblem::NotRiffWave));
        let mut cut = wav(7, 1, 8000, 8, &ulaw);
        cut.truncate(cut.len() - 10);
        assert_eq!(
            parse_wav(&cut),
            Err(WavProblem::Truncated {
                chunk: "data".into()
            })
        );
    }

    #[test]
    fn g711_round_trip_is_exact_on_decoded_samples() {
        for b in 0..=255u8 {
            let s = decode_ulaw(b);
            assert_eq!(decode_ulaw(G711::Pcmu.encode(s)), s);
            let s = decode_alaw(b);
            assert_eq!(decode_alaw(G711::Pcma.encode(s)), s);
        }
    }
}
