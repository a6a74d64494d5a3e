//! libavcodec decoders and libswresample, through `ffmpeg-next`'s raw
//! bindings (FFmpeg 5.1's channel-layout API). One [`AvDecoder`] per leg
//! and payload type; one [`Resampler`] per decoder, to the recording rate.
//!
//! Both are plain state machines over bytes: no clock, file or socket.
//! libavcodec's own log is silenced (corrupt frames are counted by the
//! caller, never printed).

use std::ptr;
use std::sync::Once;

use ffmpeg_next::ffi as av;

use super::DecodeError;
use crate::media::codec::{Codec, Format, G726_AAL2};

static QUIET: Once = Once::new();

fn quiet() {
    // SAFETY: sets a global integer in libavutil.
    QUIET.call_once(|| unsafe { av::av_log_set_level(av::AV_LOG_QUIET) });
}

/// libswresample from any input (format, layout, rate) to mono signed
/// 16-bit at a fixed output rate: a windowed-sinc filter, never sample
/// repetition.
pub struct Resampler {
    swr: *mut av::SwrContext,
    key: (i32, i32, i32),
    out_rate: i32,
}

// SAFETY: the context is owned and only used through &mut self.
unsafe impl Send for Resampler {}

impl Resampler {
    pub fn new(out_rate: u32) -> Resampler {
        quiet();
        Resampler {
            swr: ptr::null_mut(),
            key: (-1, -1, -1),
            out_rate: out_rate as i32,
        }
    }

    /// (Re)configures for an input; a change of input drops the filter state.
    fn configure(
        &mut self,
        fmt: i32,
        layout: &av::AVChannelLayout,
        rate: i32,
    ) -> Result<(), DecodeError> {
        let key = (fmt, layout.nb_channels, rate);
        if key == self.key && !self.swr.is_null() {
            return Ok(());
        }
        // SAFETY: FFI calls with valid pointers; the old context is freed first.
        unsafe {
            av::swr_free(&mut self.swr);
            let mut mono: av::AVChannelLayout = std::mem::zeroed();
            av::av_channel_layout_default(&mut mono, 1);
            let fmt_in: av::AVSampleFormat = std::mem::transmute(fmt);
            let r = av::swr_alloc_set_opts2(
                &mut self.swr,
                &mut mono,
                av::AVSampleFormat::AV_SAMPLE_FMT_S16,
                self.out_rate,
                layout as *const av::AVChannelLayout as *mut av::AVChannelLayout,
                fmt_in,
                rate,
                0,
                ptr::null_mut(),
            );
            if r < 0 || self.swr.is_null() || av::swr_init(self.swr) < 0 {
                av::swr_free(&mut self.swr);
                return Err(DecodeError::Resampler);
            }
        }
        self.key = key;
        Ok(())
    }

    /// Resamples interleaved/planar `planes` of `count` samples per channel.
    ///
    /// # Safety
    /// `planes` must point at `count` samples of format `fmt` per channel.
    unsafe fn convert(
        &mut self,
        fmt: i32,
        layout: &av::AVChannelLayout,
        rate: i32,
        planes: *const *const u8,
        count: i32,
        out: &mut Vec<i16>,
    ) -> Result<(), DecodeError> {
        self.configure(fmt, layout, rate)?;
        // SAFETY: swr is initialised; out has room for `cap` samples.
        unsafe {
            let cap = av::swr_get_out_samples(self.swr, count).max(0) as usize + 16;
            let at = out.len();
            out.resize(at + cap, 0);
            let mut dst = out[at..].as_mut_ptr() as *mut u8;
            let n = av::swr_convert(
                self.swr,
                &mut dst,
                cap as i32,
                planes as *mut *const u8,
                count,
            );
            out.truncate(at + n.max(0) as usize);
            if n < 0 {
                return Err(DecodeError::Resampler);
            }
        }
        Ok(())
    }

    /// Mono signed 16-bit samples at `rate` Hz to the output rate.
    pub fn mono_s16(
        &mut self,
        input: &[i16],
        rate: u32,
        out: &mut Vec<i16>,
    ) -> Result<(), DecodeError> {
        if rate as i32 == self.out_rate {
            out.extend_from_slice(input);
            return Ok(());
        }
        let plane = input.as_ptr() as *const u8;
        // SAFETY: plain FFI on a layout we own; `plane` holds input.len() samples.
        unsafe {
            let mut mono: av::AVChannelLayout = std::mem::zeroed();
            av::av_channel_layout_default(&mut mono, 1);
            self.convert(
                av::AVSampleFormat::AV_SAMPLE_FMT_S16 as i32,
                &mono,
                rate as i32,
                &plane,
                input.len() as i32,
                out,
            )
        }
    }
}

impl Drop for Resampler {
    fn drop(&mut self) {
        // SAFETY: frees what configure allocated (null is fine).
        unsafe { av::swr_free(&mut self.swr) }
    }
}

/// One libavcodec audio decoder.
pub struct AvDecoder {
    ctx: *mut av::AVCodecContext,
    pkt: *mut av::AVPacket,
    frame: *mut av::AVFrame,
    resampler: Resampler,
}

// SAFETY: the contexts are owned and only used through &mut self.
unsafe impl Send for AvDecoder {}

fn codec_id(f: Format) -> Option<av::AVCodecID> {
    use av::AVCodecID::*;
    Some(match f.codec {
        Codec::G722 => AV_CODEC_ID_ADPCM_G722,
        Codec::AmrNb => AV_CODEC_ID_AMR_NB,
        Codec::AmrWb => AV_CODEC_ID_AMR_WB,
        Codec::Opus => AV_CODEC_ID_OPUS,
        Codec::Gsm => AV_CODEC_ID_GSM,
        Codec::Ilbc => AV_CODEC_ID_ILBC,
        // AAL2 packing (ITU-T I.366.2) is FFmpeg's big-endian G.726.
        Codec::G726 if f.param & G726_AAL2 != 0 => AV_CODEC_ID_ADPCM_G726,
        // RFC 3551's G.726 packing is what FFmpeg calls little-endian.
        Codec::G726 => AV_CODEC_ID_ADPCM_G726LE,
        _ => return None,
    })
}

impl AvDecoder {
    /// Opens FFmpeg's decoder for `f`, resampling to `out_rate`.
    pub fn open(f: Format, out_rate: u32) -> Result<AvDecoder, DecodeError> {
        quiet();
        let id = codec_id(f).ok_or(DecodeError::Unsupported(f.codec))?;
        // SAFETY: FFI; every pointer is checked before use and freed in Drop.
        unsafe {
            let codec = av::avcodec_find_decoder(id);
            if codec.is_null() {
                return Err(DecodeError::Unsupported(f.codec));
            }
            let d = AvDecoder {
                ctx: av::avcodec_alloc_context3(codec),
                pkt: av::av_packet_alloc(),
                frame: av::av_frame_alloc(),
                resampler: Resampler::new(out_rate),
            };
            if d.ctx.is_null() || d.pkt.is_null() || d.frame.is_null() {
                return Err(DecodeError::Open(f.codec));
            }
            let c = &mut *d.ctx;
            let (rate, align, bits) = match f.codec {
                Codec::G722 => (16000, 0, 8),
                Codec::AmrWb => (16000, 0, 0),
                Codec::Opus => (48000, 0, 0),
                Codec::Gsm => (8000, 33, 0),
                Codec::Ilbc => (8000, if f.param == 20 { 38 } else { 50 }, 0),
                Codec::G726 => (8000, 0, (f.param & !G726_AAL2) as i32),
                _ => (8000, 0, 0),
            };
            c.sample_rate = rate;
            c.block_align = align;
            c.bits_per_coded_sample = bits;
            av::av_channel_layout_default(&mut c.ch_layout, 1);
            if av::avcodec_open2(d.ctx, codec, ptr::null_mut()) < 0 {
                return Err(DecodeError::Open(f.codec));
            }
            Ok(d)
        }
    }

    /// Decodes one coded frame (or a packet the decoder splits itself),
    /// appending mono samples at the output rate.
    pub fn decode(&mut self, data: &[u8], out: &mut Vec<i16>) -> Result<(), DecodeError> {
        // SAFETY: packet sized (with FFmpeg's padding) before the copy;
        // frames are unreferenced after each use.
        unsafe {
            av::av_packet_unref(self.pkt);
            if av::av_new_packet(self.pkt, data.len() as i32) < 0 {
                return Err(DecodeError::Corrupt);
            }
            ptr::copy_nonoverlapping(data.as_ptr(), (*self.pkt).data, data.len());
            if av::avcodec_send_packet(self.ctx, self.pkt) < 0 {
                return Err(DecodeError::Corrupt);
            }
            let mut got = false;
            while av::avcodec_receive_frame(self.ctx, self.frame) == 0 {
                let f = &*self.frame;
                let s16 = f.format == av::AVSampleFormat::AV_SAMPLE_FMT_S16 as i32
                    || f.format == av::AVSampleFormat::AV_SAMPLE_FMT_S16P as i32;
                if s16 && f.ch_layout.nb_channels == 1 && f.sample_rate == self.resampler.out_rate {
                    // Already what the recording takes (G.722 at 16 kHz,
                    // G.726/GSM at 8 kHz): copied, not resampled.
                    let n = f.nb_samples.max(0) as usize;
                    out.extend_from_slice(std::slice::from_raw_parts(
                        *f.extended_data as *const i16,
                        n,
                    ));
                    av::av_frame_unref(self.frame);
                    got = true;
                    continue;
                }
                let r = self.resampler.convert(
                    f.format,
                    &f.ch_layout,
                    f.sample_rate,
                    f.extended_data as *const *const u8,
                    f.nb_samples,
                    out,
                );
                av::av_frame_unref(self.frame);
                r?;
                got = true;
            }
            if got {
                Ok(())
            } else {
                Err(DecodeError::Corrupt)
            }
        }
    }

    /// The resampler, for formats decoded without libavcodec.
    pub fn resampler(&mut self) -> &mut Resampler {
        &mut self.resampler
    }
}

impl Drop for AvDecoder {
    fn drop(&mut self) {
        // SAFETY: frees what open allocated (null-safe functions).
        unsafe {
            av::avcodec_free_context(&mut self.ctx);
            av::av_packet_free(&mut self.pkt);
            av::av_frame_free(&mut self.frame);
        }
    }
}
