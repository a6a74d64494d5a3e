//! MP3, Opus (in Ogg) and FLAC files from a finished PCM16 WAV, through
//! FFmpeg's libavformat and libavcodec (libmp3lame, libopus, FFmpeg's own
//! FLAC encoder). Runs on the finisher, once per segment.
//!
//! Output is deterministic: the muxer and the encoder run bit-exact (no
//! version strings, Ogg serial number fixed), so a replayed capture gives
//! byte-identical files. The decoded length equals the WAV's: the MP3 carries
//! a LAME/Info header with encoder delay and padding, Ogg Opus its pre-skip
//! and final granule position (RFC 7845), FLAC its sample count.

use std::ffi::CString;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;
use std::ptr;

use ffmpeg_next::ffi as av;

use crate::config::Encoded;

/// The header our WAV writer puts before PCM16 samples (RIFF, a 16-byte
/// fmt chunk, data): [`crate::recording::wav`].
const PCM16_HEADER: u64 = 44;

fn err(what: &str, code: i32) -> io::Error {
    io::Error::other(format!("{what} failed ({code})"))
}

/// Bit rate per channel, bit/s (FLAC is lossless and ignores it).
fn bit_rate(e: Encoded, rate: u32) -> i64 {
    match (e, rate) {
        (Encoded::Mp3, 8000) => 16_000,
        (Encoded::Mp3, _) => 32_000,
        (Encoded::Opus, 8000) => 16_000,
        (Encoded::Opus, _) => 24_000,
        (Encoded::Flac, _) => 0,
    }
}

/// Encodes the PCM16 WAV `wav` (`channels`, `rate` Hz) into `out`.
pub fn encode(wav: &Path, out: &Path, e: Encoded, channels: u16, rate: u32) -> io::Result<()> {
    let mut f = std::fs::File::open(wav)?;
    f.seek(SeekFrom::Start(PCM16_HEADER))?;
    let mut enc = Encoder::open(out, e, channels, rate)?;
    let mut buf = vec![0u8; 4096 * channels as usize * 2];
    let mut pending: Vec<i16> = Vec::new();
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        pending.extend(
            buf[..n - n % 2]
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]])),
        );
        enc.push(&mut pending, false)?;
    }
    enc.push(&mut pending, true)?;
    enc.finish()
}

struct Encoder {
    fmt: *mut av::AVFormatContext,
    ctx: *mut av::AVCodecContext,
    frame: *mut av::AVFrame,
    pkt: *mut av::AVPacket,
    channels: usize,
    planar: bool,
    pts: i64,
    header_written: bool,
}

impl Encoder {
    fn open(out: &Path, e: Encoded, channels: u16, rate: u32) -> io::Result<Encoder> {
        let (muxer, codec) = match e {
            Encoded::Mp3 => ("mp3", "libmp3lame"),
            Encoded::Opus => ("ogg", "libopus"),
            Encoded::Flac => ("flac", "flac"),
        };
        let path = CString::new(out.to_string_lossy().as_bytes()).map_err(io::Error::other)?;
        let muxer = CString::new(muxer).unwrap();
        let codec = CString::new(codec).unwrap();
        let mut s = Encoder {
            fmt: ptr::null_mut(),
            ctx: ptr::null_mut(),
            frame: ptr::null_mut(),
            pkt: ptr::null_mut(),
            channels: channels as usize,
            planar: e == Encoded::Mp3,
            pts: 0,
            header_written: false,
        };
        // SAFETY: FFI; every allocation is checked and freed in Drop.
        unsafe {
            let r = av::avformat_alloc_output_context2(
                &mut s.fmt,
                ptr::null(),
                muxer.as_ptr(),
                path.as_ptr(),
            );
            if r < 0 || s.fmt.is_null() {
                return Err(err("output format", r));
            }
            (*s.fmt).flags |= av::AVFMT_FLAG_BITEXACT;
            let c = av::avcodec_find_encoder_by_name(codec.as_ptr());
            if c.is_null() {
                return Err(io::Error::other(format!(
                    "no {} encoder in libavcodec",
                    e.as_str()
                )));
            }
            s.ctx = av::avcodec_alloc_context3(c);
            let ctx = &mut *s.ctx;
            ctx.sample_rate = rate as i32;
            av::av_channel_layout_default(&mut ctx.ch_layout, channels as i32);
            ctx.sample_fmt = if s.planar {
                av::AVSampleFormat::AV_SAMPLE_FMT_S16P
            } else {
                av::AVSampleFormat::AV_SAMPLE_FMT_S16
            };
            ctx.bit_rate = bit_rate(e, rate) * channels as i64;
            ctx.time_base = av::AVRational {
                num: 1,
                den: rate as i32,
            };
            ctx.flags |= av::AV_CODEC_FLAG_BITEXACT as i32;
            if (*(*s.fmt).oformat).flags & av::AVFMT_GLOBALHEADER != 0 {
                ctx.flags |= av::AV_CODEC_FLAG_GLOBAL_HEADER as i32;
            }
            let r = av::avcodec_open2(s.ctx, c, ptr::null_mut());
            if r < 0 {
                return Err(err("opening the encoder", r));
            }
            let st = av::avformat_new_stream(s.fmt, ptr::null());
            if st.is_null() {
                return Err(err("new stream", -1));
            }
            (*st).time_base = ctx.time_base;
            av::avcodec_parameters_from_context((*st).codecpar, s.ctx);
            let r = av::avio_open(&mut (*s.fmt).pb, path.as_ptr(), av::AVIO_FLAG_WRITE);
            if r < 0 {
                return Err(err("opening the output file", r));
            }
            let r = av::avformat_write_header(s.fmt, ptr::null_mut());
            if r < 0 {
                return Err(err("writing the header", r));
            }
            s.header_written = true;
            s.frame = av::av_frame_alloc();
            s.pkt = av::av_packet_alloc();
            if s.frame.is_null() || s.pkt.is_null() {
                return Err(err("allocation", -1));
            }
        }
        Ok(s)
    }

    /// Samples per frame the encoder takes (0: any).
    fn frame_size(&self) -> usize {
        // SAFETY: ctx is open.
        let n = unsafe { (*self.ctx).frame_size };
        if n > 0 { n as usize } else { 1152 }
    }

    /// Encodes whole frames from `pending` (interleaved); with `last`, the
    /// remainder too, then flushes the encoder.
    fn push(&mut self, pending: &mut Vec<i16>, last: bool) -> io::Result<()> {
        let per = self.frame_size() * self.channels;
        let mut used = 0;
        while pending.len() - used >= per || (last && used < pending.len()) {
            let n = (pending.len() - used).min(per);
            self.frame(&pending[used..used + n])?;
            used += n;
        }
        pending.drain(..used);
        if last {
            self.send(ptr::null())?;
        }
        Ok(())
    }

    fn frame(&mut self, samples: &[i16]) -> io::Result<()> {
        let count = samples.len() / self.channels;
        // SAFETY: the frame is sized by av_frame_get_buffer before writing.
        unsafe {
            av::av_frame_unref(self.frame);
            let fr = &mut *self.frame;
            fr.format = (*self.ctx).sample_fmt as i32;
            fr.sample_rate = (*self.ctx).sample_rate;
            fr.nb_samples = count as i32;
            av::av_channel_layout_copy(&mut fr.ch_layout, &(*self.ctx).ch_layout);
            let r = av::av_frame_get_buffer(self.frame, 0);
            if r < 0 {
                return Err(err("frame buffer", r));
            }
            if self.planar {
                for c in 0..self.channels {
                    let dst =
                        std::slice::from_raw_parts_mut(*fr.extended_data.add(c) as *mut i16, count);
                    for (i, d) in dst.iter_mut().enumerate() {
                        *d = samples[i * self.channels + c];
                    }
                }
            } else {
                let dst =
                    std::slice::from_raw_parts_mut(*fr.extended_data as *mut i16, samples.len());
                dst.copy_from_slice(samples);
            }
            fr.pts = self.pts;
            self.pts += count as i64;
            self.send(self.frame)
        }
    }

    fn send(&mut self, frame: *const av::AVFrame) -> io::Result<()> {
        // SAFETY: contexts are open; packets are unreferenced by the muxer.
        unsafe {
            let r = av::avcodec_send_frame(self.ctx, frame);
            if r < 0 {
                return Err(err("encoding", r));
            }
            while av::avcodec_receive_packet(self.ctx, self.pkt) == 0 {
                let st = *(*self.fmt).streams;
                av::av_packet_rescale_ts(self.pkt, (*self.ctx).time_base, (*st).time_base);
                (*self.pkt).stream_index = 0;
                let r = av::av_interleaved_write_frame(self.fmt, self.pkt);
                if r < 0 {
                    return Err(err("writing a packet", r));
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        // SAFETY: the header was written; the trailer completes the file.
        let r = unsafe { av::av_write_trailer(self.fmt) };
        self.header_written = false;
        if r < 0 {
            return Err(err("writing the trailer", r));
        }
        Ok(())
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: frees what open allocated; null-safe calls.
        unsafe {
            av::av_frame_free(&mut self.frame);
            av::av_packet_free(&mut self.pkt);
            av::avcodec_free_context(&mut self.ctx);
            if !self.fmt.is_null() {
                if !(*self.fmt).pb.is_null() {
                    av::avio_closep(&mut (*self.fmt).pb);
                }
                av::avformat_free_context(self.fmt);
            }
        }
    }
}
