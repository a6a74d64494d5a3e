//! Streaming WAV (RIFF) writer, crash repair and a small reader.
//!
//! Files are 8 kHz, 1 or 2 channels, PCM 16-bit (format tag 1), A-law
//! (tag 6) or μ-law (tag 7). The header is written first with placeholder
//! sizes (0xFFFFFFFF, which lenient readers take as "to the end"), samples
//! are encoded straight into a small buffer, and [`WavWriter::finish`]
//! pads or cuts to the exact length, patches the sizes and returns
//! the SHA-256 of the final bytes. [`recover`] turns a file left with
//! placeholder sizes (and perhaps half a frame) into a valid one in place.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::config::AudioFormat;
use crate::media::codec::{
    ALAW_DECODE, Law, ULAW_DECODE, encode_alaw, encode_law_into, encode_law_stereo_into,
    encode_ulaw,
};

pub const SAMPLE_RATE: u32 = 8000;
const PLACEHOLDER: u32 = 0xffff_ffff;
/// Write buffer per file: small, since thousands of calls write at once.
const BUF_BYTES: usize = 8192;

fn format_tag(f: AudioFormat) -> u16 {
    match f {
        AudioFormat::Pcm16 => 1,
        AudioFormat::Alaw => 6,
        AudioFormat::Ulaw => 7,
    }
}

fn bytes_per_sample(f: AudioFormat) -> u16 {
    if f == AudioFormat::Pcm16 { 2 } else { 1 }
}

/// The encoded byte of digital silence (pcm16 uses two zero bytes).
fn silence_byte(f: AudioFormat) -> u8 {
    match f {
        AudioFormat::Pcm16 => 0,
        AudioFormat::Ulaw => encode_ulaw(0),
        AudioFormat::Alaw => encode_alaw(0),
    }
}

/// Header bytes; returns them and the offsets of the fact sample count
/// (non-PCM only) and the data size.
fn header(format: AudioFormat, channels: u16, rate: u32) -> (Vec<u8>, Option<usize>, usize) {
    let bps = bytes_per_sample(format);
    let block = channels * bps;
    let mut h = Vec::with_capacity(58);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&PLACEHOLDER.to_le_bytes());
    h.extend_from_slice(b"WAVE");
    h.extend_from_slice(b"fmt ");
    let pcm = format == AudioFormat::Pcm16;
    h.extend_from_slice(&(if pcm { 16u32 } else { 18 }).to_le_bytes());
    h.extend_from_slice(&format_tag(format).to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&(rate * block as u32).to_le_bytes());
    h.extend_from_slice(&block.to_le_bytes());
    h.extend_from_slice(&(bps * 8).to_le_bytes());
    let mut fact = None;
    if !pcm {
        // Non-PCM formats carry cbSize and a fact chunk (the frame count).
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(b"fact");
        h.extend_from_slice(&4u32.to_le_bytes());
        fact = Some(h.len());
        h.extend_from_slice(&PLACEHOLDER.to_le_bytes());
    }
    h.extend_from_slice(b"data");
    let data_size_at = h.len();
    h.extend_from_slice(&PLACEHOLDER.to_le_bytes());
    (h, fact, data_size_at)
}

/// What [`WavWriter::finish`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WavSummary {
    pub frames: u64,
    /// Final file size.
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the whole file.
    pub sha256: String,
}

pub struct WavWriter {
    file: File,
    /// Encoded bytes not yet written. The mixer encodes straight into it
    /// (no intermediate sample buffers): on the media path every copy of a
    /// sample costs as much as the decoding.
    buf: Box<[u8; BUF_BYTES]>,
    buffered: usize,
    format: AudioFormat,
    channels: u16,
    header_len: u64,
    fact_at: Option<usize>,
    data_size_at: usize,
    /// Samples written (all channels).
    samples: u64,
}

impl WavWriter {
    /// Creates (truncates) `path` and writes the header (8 kHz).
    pub fn create(path: &Path, format: AudioFormat, channels: u16) -> io::Result<WavWriter> {
        Self::create_at(path, format, channels, SAMPLE_RATE)
    }

    /// [`WavWriter::create`] at `rate` Hz (8000 or 16000).
    pub fn create_at(
        path: &Path,
        format: AudioFormat,
        channels: u16,
        rate: u32,
    ) -> io::Result<WavWriter> {
        if !(1..=2).contains(&channels) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{channels} channels: 1 or 2 supported"),
            ));
        }
        // Read access too: finish() hashes the file it just wrote.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        crate::recording::perms::apply_file(&file)?;
        let (h, fact_at, data_size_at) = header(format, channels, rate);
        let mut buf = Box::new([0u8; BUF_BYTES]);
        buf[..h.len()].copy_from_slice(&h);
        Ok(WavWriter {
            file,
            buf,
            buffered: h.len(),
            format,
            channels,
            header_len: h.len() as u64,
            fact_at,
            data_size_at,
            samples: 0,
        })
    }

    pub fn channels(&self) -> u16 {
        self.channels
    }

    /// Whole frames written so far.
    pub fn frames(&self) -> u64 {
        self.samples / self.channels as u64
    }

    /// Appends interleaved samples (left, right, left, ... in stereo).
    pub fn write_samples(&mut self, samples: &[i16]) -> io::Result<()> {
        let format = self.format;
        self.put(samples.len(), |dst, i| match format {
            AudioFormat::Pcm16 => {
                for (d, s) in dst.chunks_exact_mut(2).zip(&samples[i..]) {
                    d.copy_from_slice(&s.to_le_bytes());
                }
            }
            AudioFormat::Ulaw => encode_law_into(Law::Ulaw, &samples[i..], dst),
            AudioFormat::Alaw => encode_law_into(Law::Alaw, &samples[i..], dst),
        })
    }

    /// Appends stereo frames from the two channels' samples (same length),
    /// interleaving as it encodes.
    pub fn write_stereo(&mut self, left: &[i16], right: &[i16]) -> io::Result<()> {
        debug_assert_eq!(self.channels, 2);
        let n = left.len().min(right.len());
        let format = self.format;
        self.put(2 * n, |dst, i| {
            let (l, r) = (&left[i / 2..], &right[i / 2..]);
            match format {
                AudioFormat::Pcm16 => {
                    for ((d, a), b) in dst.chunks_exact_mut(4).zip(l).zip(r) {
                        d[..2].copy_from_slice(&a.to_le_bytes());
                        d[2..].copy_from_slice(&b.to_le_bytes());
                    }
                }
                AudioFormat::Ulaw => encode_law_stereo_into(Law::Ulaw, l, r, dst),
                AudioFormat::Alaw => encode_law_stereo_into(Law::Alaw, l, r, dst),
            }
        })
    }

    /// Encodes `samples` samples into the buffer in pieces that fit,
    /// writing the buffer out whenever it is full. `fill(dst, i)` encodes
    /// samples from index `i` on into `dst` (whole frames).
    fn put(&mut self, samples: usize, mut fill: impl FnMut(&mut [u8], usize)) -> io::Result<()> {
        let bps = bytes_per_sample(self.format) as usize;
        let frame = bps * self.channels as usize;
        let mut i = 0;
        while i < samples {
            let room = (BUF_BYTES - self.buffered) / frame * frame;
            if room == 0 {
                self.flush_buf()?;
                continue;
            }
            let bytes = room.min((samples - i) * bps);
            fill(&mut self.buf[self.buffered..self.buffered + bytes], i);
            self.buffered += bytes;
            i += bytes / bps;
        }
        self.samples += samples as u64;
        Ok(())
    }

    /// Asks for the buffer space the next `frames` frames will be
    /// encoded into (at most one 20 ms packet's worth).
    pub fn prefetch_tail(&self, frames: usize) {
        let frame = (bytes_per_sample(self.format) * self.channels) as usize;
        let bytes = (frames.min(160) * frame).min(BUF_BYTES - self.buffered);
        crate::prefetch::range(self.buf[self.buffered..].as_ptr(), bytes);
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        let n = std::mem::take(&mut self.buffered);
        self.file.write_all(&self.buf[..n])
    }

    /// Hands what is buffered to the kernel (one `write`, no fsync): a
    /// process killed afterwards loses none of it; a power cut still can.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buffered == 0 {
            return Ok(());
        }
        self.flush_buf()
    }

    /// Pads with silence or cuts to exactly `frames` frames (when given),
    /// patches the header, and hashes the final file.
    pub fn finish(mut self, frames: Option<u64>) -> io::Result<WavSummary> {
        let block = (self.channels * bytes_per_sample(self.format)) as u64;
        let have = self.samples / self.channels as u64;
        let frames = frames.unwrap_or(have);
        self.flush_buf()?;
        let file = &mut self.file;
        if frames > have {
            let fill = [silence_byte(self.format); 1024];
            let mut left = (frames - have) * block;
            while left > 0 {
                let n = left.min(fill.len() as u64) as usize;
                file.write_all(&fill[..n])?;
                left -= n as u64;
            }
        }
        let data_len = frames * block;
        file.set_len(self.header_len + data_len)?;
        if data_len % 2 == 1 {
            // RIFF chunks are word aligned: a pad byte follows odd data.
            file.seek(SeekFrom::End(0))?;
            file.write_all(&[0])?;
        }
        patch(
            file,
            self.header_len,
            self.fact_at,
            self.data_size_at,
            data_len,
            frames,
        )?;
        // No fsync here: the file is not anyone's until `Spool::publish`,
        // which fsyncs it before renaming it into the queue; a crash before
        // that leaves it in tmp/ for `recover`.
        let (bytes, sha256) = hash_file(file)?;
        Ok(WavSummary {
            frames,
            bytes,
            sha256,
        })
    }
}

fn patch(
    file: &mut File,
    header_len: u64,
    fact_at: Option<usize>,
    data_size_at: usize,
    data_len: u64,
    frames: u64,
) -> io::Result<()> {
    let riff = header_len - 8 + data_len + data_len % 2;
    let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
    file.seek(SeekFrom::Start(4))?;
    file.write_all(&clamp(riff).to_le_bytes())?;
    if let Some(at) = fact_at {
        file.seek(SeekFrom::Start(at as u64))?;
        file.write_all(&clamp(frames).to_le_bytes())?;
    }
    file.seek(SeekFrom::Start(data_size_at as u64))?;
    file.write_all(&clamp(data_len).to_le_bytes())?;
    Ok(())
}

fn hash_file(file: &mut File) -> io::Result<(u64, String)> {
    file.seek(SeekFrom::Start(0))?;
    let mut h = Sha256::new();
    let mut buf = [0u8; 16384];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, hex::encode(h.finalize())))
}

/// SHA-256 (hex) and size of a file on disk.
pub fn sha256_file(path: &Path) -> io::Result<(u64, String)> {
    hash_file(&mut File::open(path)?)
}

/// The layout found in a WAV header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    format: AudioFormat,
    channels: u16,
    rate: u32,
    block: u16,
    fact_at: Option<usize>,
    data_size_at: usize,
    data_at: usize,
    data_size: u32,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

fn parse_layout(h: &[u8], path: &Path) -> io::Result<Layout> {
    let p = path.display();
    if h.len() < 12 || &h[0..4] != b"RIFF" || &h[8..12] != b"WAVE" {
        return Err(invalid(format!("{p}: not a RIFF/WAVE file")));
    }
    let mut at = 12;
    let mut fmt: Option<(AudioFormat, u16, u32, u16)> = None;
    let mut fact_at = None;
    while at + 8 <= h.len() {
        let id = &h[at..at + 4];
        let size = u32::from_le_bytes([h[at + 4], h[at + 5], h[at + 6], h[at + 7]]);
        let body = at + 8;
        match id {
            b"fmt " => {
                if size < 16 || body + 16 > h.len() {
                    return Err(invalid(format!("{p}: fmt chunk at byte {at} is short")));
                }
                let f = &h[body..body + 16];
                let tag = u16::from_le_bytes([f[0], f[1]]);
                let format = match tag {
                    1 => AudioFormat::Pcm16,
                    6 => AudioFormat::Alaw,
                    7 => AudioFormat::Ulaw,
                    t => return Err(invalid(format!("{p}: format tag {t} not supported"))),
                };
                let channels = u16::from_le_bytes([f[2], f[3]]);
                let rate = u32::from_le_bytes([f[4], f[5], f[6], f[7]]);
                let block = u16::from_le_bytes([f[12], f[13]]);
                let bits = u16::from_le_bytes([f[14], f[15]]);
                if channels == 0
                    || block != channels * bits / 8
                    || bits != bytes_per_sample(format) * 8
                {
                    return Err(invalid(format!(
                        "{p}: inconsistent fmt chunk (channels {channels}, block {block}, bits {bits})"
                    )));
                }
                fmt = Some((format, channels, rate, block));
            }
            b"fact" => fact_at = Some(body),
            b"data" => {
                let Some((format, channels, rate, block)) = fmt else {
                    return Err(invalid(format!("{p}: data chunk before fmt")));
                };
                return Ok(Layout {
                    format,
                    channels,
                    rate,
                    block,
                    fact_at,
                    data_size_at: at + 4,
                    data_at: body,
                    data_size: size,
                });
            }
            _ => {}
        }
        at = body + size as usize + size as usize % 2;
    }
    Err(invalid(format!(
        "{p}: no data chunk in the first {} bytes",
        h.len()
    )))
}

fn read_head(file: &mut File) -> io::Result<Vec<u8>> {
    let mut h = Vec::with_capacity(4096);
    file.take(4096).read_to_end(&mut h)?;
    Ok(h)
}

/// What [`recover`] left on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredInfo {
    pub format: AudioFormat,
    pub channels: u16,
    pub frames: u64,
    pub duration_ms: u64,
    pub bytes: u64,
    /// Bytes of a partial frame (or stale trailer) cut off the end.
    pub trimmed: u64,
}

/// Repairs in place a WAV whose writer never finished: keeps the whole
/// frames present, drops a partial one, and writes the true sizes. A file
/// that is already complete comes out unchanged.
pub fn recover(path: &Path) -> io::Result<RecoveredInfo> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let head = read_head(&mut file)?;
    let l = parse_layout(&head, path)?;
    let len = file.metadata()?.len();
    let avail = len.saturating_sub(l.data_at as u64);
    let block = l.block as u64;
    let data_len = avail / block * block;
    let frames = data_len / block;
    let keep = l.data_at as u64 + data_len + data_len % 2;
    file.set_len(keep)?;
    patch(
        &mut file,
        l.data_at as u64,
        l.fact_at,
        l.data_size_at,
        data_len,
        frames,
    )?;
    file.sync_all()?;
    Ok(RecoveredInfo {
        format: l.format,
        channels: l.channels,
        frames,
        duration_ms: frames * 1000 / l.rate.max(1) as u64,
        bytes: keep,
        trimmed: len.saturating_sub(keep),
    })
}

/// Whole frames after the header of a WAV being written (whatever its
/// header says), and its channel count.
pub fn whole_frames(path: &Path) -> io::Result<(u64, u16)> {
    let mut file = File::open(path)?;
    let l = parse_layout(&read_head(&mut file)?, path)?;
    let len = file.metadata()?.len();
    Ok((
        len.saturating_sub(l.data_at as u64) / l.block as u64,
        l.channels,
    ))
}

/// Appends interleaved `samples` (encoded in the file's format) after its
/// first `frames` whole frames, dropping anything beyond them first. The
/// header is left as it is: [`recover`] patches it.
pub fn append_samples(path: &Path, frames: u64, samples: &[i16]) -> io::Result<()> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let l = parse_layout(&read_head(&mut file)?, path)?;
    let end = l.data_at as u64 + frames * l.block as u64;
    file.set_len(end)?;
    let bytes: Vec<u8> = match l.format {
        AudioFormat::Pcm16 => samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
        AudioFormat::Ulaw => samples.iter().map(|&s| encode_ulaw(s)).collect(),
        AudioFormat::Alaw => samples.iter().map(|&s| encode_alaw(s)).collect(),
    };
    file.seek(SeekFrom::Start(end))?;
    file.write_all(&bytes)
}

/// A decoded WAV file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WavData {
    pub format: AudioFormat,
    pub channels: u16,
    pub rate: u32,
    /// One vector of linear samples per channel.
    pub samples: Vec<Vec<i16>>,
}

/// Reads a PCM16/A-law/μ-law WAV into linear samples per channel. A
/// placeholder data size reads to the end of the file.
pub fn read_wav(path: &Path) -> io::Result<WavData> {
    let mut file = File::open(path)?;
    let mut all = Vec::new();
    file.read_to_end(&mut all)?;
    let l = parse_layout(&all[..all.len().min(4096)], path)?;
    let avail = all.len() - l.data_at;
    let size = if l.data_size == PLACEHOLDER {
        avail
    } else {
        (l.data_size as usize).min(avail)
    };
    let data = &all[l.data_at..l.data_at + size / l.block as usize * l.block as usize];
    let ch = l.channels as usize;
    let mut samples = vec![Vec::with_capacity(data.len() / l.block as usize); ch];
    match l.format {
        AudioFormat::Pcm16 => {
            for (i, b) in data.chunks_exact(2).enumerate() {
                samples[i % ch].push(i16::from_le_bytes([b[0], b[1]]));
            }
        }
        AudioFormat::Ulaw | AudioFormat::Alaw => {
            let t = if l.format == AudioFormat::Ulaw {
                &ULAW_DECODE
            } else {
                &ALAW_DECODE
            };
            for (i, &b) in data.iter().enumerate() {
                samples[i % ch].push(t[b as usize]);
            }
        }
    }
    Ok(WavData {
        format: l.format,
        channels: l.channels,
        rate: l.rate,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize, ch: usize) -> Vec<i16> {
        (0..n * ch)
            .map(|i| ((i * 37) % 20000) as i16 - 10000)
            .collect()
    }

    /// The mixer's direct stereo path writes the same bytes as interleaved
    /// samples would, across buffer boundaries (odd piece sizes force
    /// partial frames of room at the end of the buffer).
    #[test]
    fn stereo_frames_equal_interleaved_samples() {
        let dir = tempfile::tempdir().unwrap();
        for format in [AudioFormat::Pcm16, AudioFormat::Ulaw, AudioFormat::Alaw] {
            let (l, r) = (
                ramp(20_011, 1),
                ramp(20_011, 1).iter().map(|s| s / 3).collect::<Vec<_>>(),
            );
            let a = dir.path().join("a.wav");
            let b = dir.path().join("b.wav");
            let mut wa = WavWriter::create(&a, format, 2).unwrap();
            let mut wb = WavWriter::create(&b, format, 2).unwrap();
            let mut i = 0;
            for piece in [1usize, 7, 1023, 4096, 333].iter().cycle() {
                if i >= l.len() {
                    break;
                }
                let j = (i + piece).min(l.len());
                wa.write_stereo(&l[i..j], &r[i..j]).unwrap();
                let inter: Vec<i16> = (i..j).flat_map(|k| [l[k], r[k]]).collect();
                wb.write_samples(&inter).unwrap();
                i = j;
            }
            let (sa, sb) = (wa.finish(None).unwrap(), wb.finish(None).unwrap());
            assert_eq!(sa, sb, "{format:?}");
            assert_eq!(sa.frames, l.len() as u64);
            let rd = read_wav(&a).unwrap();
            if format == AudioFormat::Pcm16 {
                assert_eq!((&rd.samples[0], &rd.samples[1]), (&l, &r));
            }
        }
    }

    #[test]
    fn round_trip_all_formats() {
        let dir = tempfile::tempdir().unwrap();
        for format in [AudioFormat::Pcm16, AudioFormat::Ulaw, AudioFormat::Alaw] {
            for ch in [1u16, 2] {
                let path = dir.path().join(format!("{}_{ch}.wav", format.as_str()));
                let mut w = WavWriter::create(&path, format, ch).unwrap();
                let s = ramp(1001, ch as usize);
                w.write_samples(&s).unwrap();
                let sum = w.finish(Some(1001)).unwrap();
                let bytes = std::fs::read(&path).unwrap();
                assert_eq!(sum.bytes, bytes.len() as u64);
                assert_eq!(sum.sha256, hex::encode(Sha256::digest(&bytes)));
                let r = read_wav(&path).unwrap();
                assert_eq!((r.format, r.channels, r.rate), (format, ch, 8000));
                assert_eq!(r.samples[0].len(), 1001);
                for (i, &v) in r.samples[ch as usize - 1].iter().enumerate() {
                    let want = s[i * ch as usize + ch as usize - 1];
                    match format {
                        AudioFormat::Pcm16 => assert_eq!(v, want),
                        _ => assert!(
                            (v as i32 - want as i32).abs() <= (want as i32).abs() / 16 + 16,
                            "{v} vs {want}"
                        ),
                    }
                }
                // The RIFF size says exactly the file length.
                let riff = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
                assert_eq!(riff + 8, bytes.len());
            }
        }
    }

    #[test]
    fn finish_pads_and_cuts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.wav");
        let mut w = WavWriter::create(&p, AudioFormat::Pcm16, 2).unwrap();
        w.write_samples(&ramp(100, 2)).unwrap();
        assert_eq!(w.finish(Some(40)).unwrap().frames, 40);
        assert_eq!(read_wav(&p).unwrap().samples[1].len(), 40);
        let mut w = WavWriter::create(&p, AudioFormat::Ulaw, 1).unwrap();
        w.write_samples(&ramp(100, 1)).unwrap();
        w.finish(Some(301)).unwrap();
        let r = read_wav(&p).unwrap();
        assert_eq!(r.samples[0].len(), 301);
        assert!(r.samples[0][100..].iter().all(|&s| s == 0));
        assert_eq!(std::fs::metadata(&p).unwrap().len() % 2, 0);
    }

    #[test]
    fn recover_a_cut_file() {
        let dir = tempfile::tempdir().unwrap();
        for format in [AudioFormat::Pcm16, AudioFormat::Alaw] {
            let p = dir.path().join("cut.wav");
            let mut w = WavWriter::create(&p, format, 2).unwrap();
            w.write_samples(&ramp(5000, 2)).unwrap();
            // Simulate the crash: the buffered bytes reach the disk but
            // finish() never runs; then half a frame is cut off.
            w.flush_buf().unwrap();
            let file = w.file;
            let len = file.metadata().unwrap().len();
            file.set_len(len - 1).unwrap();
            drop(file);
            let info = recover(&p).unwrap();
            assert_eq!((info.frames, info.channels, info.format), (4999, 2, format));
            assert_eq!(info.trimmed, bytes_per_sample(format) as u64 * 2 - 1);
            let r = read_wav(&p).unwrap();
            assert_eq!(r.samples[0].len(), 4999);
            let bytes = std::fs::read(&p).unwrap();
            let riff = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
            assert_eq!(riff + 8, bytes.len());
            // Recovering again changes nothing.
            let again = recover(&p).unwrap();
            assert_eq!(again, RecoveredInfo { trimmed: 0, ..info });
            assert_eq!(std::fs::read(&p).unwrap(), bytes);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.wav");
        for junk in [
            &b""[..],
            b"RIFF",
            b"RIFF\0\0\0\0WAVEfmt \x02\0\0\0",
            b"RIFF\xff\xff\xff\xffWAVEdata\0\0\0\0",
        ] {
            std::fs::write(&p, junk).unwrap();
            assert!(recover(&p).is_err());
            assert!(read_wav(&p).is_err());
        }
    }
}
