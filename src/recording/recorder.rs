//! `CallRecorder`: everything a shard worker holds for one call segment.
//!
//! It takes raw RTP per leg with its capture time, runs each leg's jitter
//! buffer (which takes RFC 4733 events out of the audio), and streams mixed
//! frames into a WAV file with a fixed delay of [`PLAYOUT_DELAY`] samples
//! behind the newest capture time. Memory per call is fixed: two 8 KiB
//! sample rings, an 8 KiB write buffer and a few hundred bytes of state,
//! whatever the traffic does.
//!
//! Whether to pause is not decided here but on the capture thread
//! ([`crate::media::pause`]), which tells the recorder through
//! [`CallRecorder::pause`] and [`CallRecorder::resume`] right after the
//! packet that decided it.

use std::io;
use std::path::PathBuf;

use crate::config::{AudioFormat, Channels};
use crate::media::codec::{Codec, Format};
use crate::media::jitter::{JitterBuffer, PLAYOUT_DELAY, Placed, sample_index_k};
use crate::media::mixer::Mixer;
use crate::media::quality::LegQuality;
use crate::media::rtp::{RtpPacket, is_rtcp};
use crate::media::srtp::{Keys, LegCrypto};
use crate::prefetch;
use crate::recording::tail::TailMirror;
use crate::recording::wav::WavWriter;
use crate::time::Timestamp;

/// The two directions of a call. In stereo files the subscriber (the
/// contract's side) is the left channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Leg {
    Subscriber = 0,
    Remote = 1,
}

pub struct RecorderParams {
    /// Where the WAV is written (a temporary name; the caller renames it).
    pub path: PathBuf,
    pub format: AudioFormat,
    pub channels: Channels,
    /// Timeline zero: the end of the announcement (or the answer).
    pub start: Timestamp,
    /// RFC 4733 payload type per leg (subscriber, remote), from the SDP.
    pub telephone_event_pt: [Option<u8>; 2],
    /// The recording's sample rate, Hz: 8000 or 16000.
    pub sample_rate: u32,
}

/// What the caller may log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecorderEvent {
    Paused { at_ms: u64 },
    Resumed { at_ms: u64 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct RecordingSummary {
    /// Exactly `end - start`, rounded down to a sample (125 µs).
    pub duration_ms: u64,
    pub sha256: String,
    pub bytes: u64,
    /// Pause intervals, in milliseconds from the recording start.
    pub pauses: Vec<(u64, u64)>,
    /// Subscriber, remote.
    pub quality: [LegQuality; 2],
    /// Hz.
    pub sample_rate: u32,
    /// The audio codec last decoded on each leg (subscriber, remote).
    pub codecs: [Option<Codec>; 2],
    /// A codec that arrived and could not be decoded, per leg.
    pub unsupported: [Option<String>; 2],
    /// Per leg: encrypted with keys out of sight, or SRTP none of whose
    /// packets authenticated.
    pub encrypted: [bool; 2],
}

impl RecordingSummary {
    /// Why none of the recording's audio could be decoded, if so: a leg
    /// that gave packets and no audio, and no leg that gave audio.
    pub fn undecodable(&self) -> Option<String> {
        let q = &self.quality;
        let heard = |i: usize| q[i].decoded + q[i].undecodable > 0;
        if q.iter().any(|l| l.decoded > 0) || !(heard(0) || heard(1)) {
            return None;
        }
        if (0..2).any(|i| heard(i) && self.encrypted[i]) {
            return Some("media-encrypted".into());
        }
        let name = self.unsupported.iter().flatten().next();
        Some(format!(
            "codec-unsupported:{}",
            name.map_or("unknown", |n| n.as_str())
        ))
    }
}

pub struct CallRecorder {
    start: Timestamp,
    legs: [JitterBuffer; 2],
    mixer: Mixer,
    wav: WavWriter,
    /// Newest capture position seen on either leg.
    newest: i64,
    rtcp: u64,
    /// First write error; the recording is then failed at `finish`.
    error: Option<io::Error>,
    /// Live daemon: each mixed block (20 ms of audio or more) goes to the
    /// kernel at once, so a killed process loses at most the block being
    /// mixed. Off for `replay`, whose speed rests on 8 KiB writes.
    flush_each_block: bool,
    /// Live daemon: a copy of the jitter window in a file mapping, so the
    /// 200 ms not yet written survive a kill ([`crate::recording::tail`]).
    tail: Option<TailMirror>,
    /// Timeline samples per 8 kHz sample (1, or 2 at 16 kHz).
    k: i64,
    /// Per leg: how its packets are protected, and the SDP keys that
    /// session was made from (a re-INVITE with the same keys keeps it,
    /// and with it the rollover counter and replay window).
    crypto: [LegCrypto; 2],
    keys: [Option<(Keys, Keys)>; 2],
}

impl CallRecorder {
    pub fn create(p: RecorderParams) -> io::Result<CallRecorder> {
        let channels = if p.channels == Channels::Stereo { 2 } else { 1 };
        let rate = if p.sample_rate >= 16000 { 16000 } else { 8000 };
        Ok(CallRecorder {
            start: p.start,
            legs: [
                JitterBuffer::with_rate(p.start, p.telephone_event_pt[0], rate),
                JitterBuffer::with_rate(p.start, p.telephone_event_pt[1], rate),
            ],
            mixer: Mixer::with_rate(p.channels, rate),
            wav: WavWriter::create_at(&p.path, p.format, channels, rate)?,
            newest: 0,
            rtcp: 0,
            error: None,
            flush_each_block: false,
            tail: None,
            k: (rate / 8000) as i64,
            crypto: Default::default(),
            keys: Default::default(),
        })
    }

    /// Live daemon only: write each mixed block through to the kernel
    /// (one `write` per 20 ms or more of audio) instead of every 8 KiB.
    pub fn set_flush_each_block(&mut self, on: bool) {
        self.flush_each_block = on;
    }

    /// Live daemon only: keeps the jitter window in `<wav>.tail` as well
    /// (see [`crate::recording::tail`]); `wav` is this recorder's file.
    /// 8 kHz recordings only: a 16 kHz one keeps its window in memory and
    /// loses it (up to 200 ms) to a kill.
    pub fn keep_tail(&mut self, wav: &std::path::Path, start: Timestamp) -> io::Result<()> {
        if self.k == 1 {
            self.tail = Some(TailMirror::create(wav, start, self.wav.channels())?);
        }
        Ok(())
    }

    /// The SRTP keys of a leg: its sender's SDP keys and the receiver's
    /// (whose answer names the line used). Unchanged keys keep the session.
    pub fn set_keys(&mut self, leg: Leg, sender: &Keys, receiver: &Keys) {
        let i = leg as usize;
        let pair = (sender.clone(), receiver.clone());
        if self.keys[i].as_ref() == Some(&pair) {
            return;
        }
        self.crypto[i] = LegCrypto::for_sender(sender, receiver);
        self.keys[i] = Some(pair);
    }

    /// Timeline samples to milliseconds.
    fn ms(&self, samples: i64) -> u64 {
        (samples.max(0) / (8 * self.k)) as u64
    }

    /// The recording's sample rate, Hz.
    pub fn sample_rate(&self) -> u32 {
        8000 * self.k as u32
    }

    /// Payload types from one leg's SDP with clock and fmtp, and those
    /// bound to codecs callrec cannot decode (call again after a re-INVITE).
    pub fn set_formats(&mut self, leg: Leg, map: &[(u8, Format)], unsupported: &[(u8, String)]) {
        self.legs[leg as usize].set_formats(map, unsupported);
    }

    /// Payload-type meanings for one leg, from its SDP (adds to the
    /// static ones; call again after a re-INVITE).
    pub fn set_payload_map(&mut self, leg: Leg, map: &[(u8, Codec)]) {
        self.legs[leg as usize].set_payload_map(map);
    }

    /// One UDP payload received on `leg`, captured at `ts`. Packets
    /// captured before the start (the announcement) and RTCP are ignored;
    /// malformed ones are counted in the leg's quality.
    pub fn on_rtp(&mut self, leg: Leg, ts: Timestamp, rtp: &[u8]) {
        if is_rtcp(rtp) {
            self.rtcp += 1;
            return;
        }
        let pos = sample_index_k(self.start, ts, self.k);
        if pos < 0 {
            return;
        }
        if pos > self.newest {
            // Play out before placing, so the window always has room.
            if self.playout_due(pos) > 0 {
                self.render(pos - PLAYOUT_DELAY * self.k);
            }
            self.newest = pos;
        }
        let jb = &mut self.legs[leg as usize];
        let rtp = match &mut self.crypto[leg as usize] {
            LegCrypto::Clear => rtp,
            LegCrypto::Srtp(s) => match s.unprotect(rtp) {
                Ok(plain) => plain,
                Err(crate::media::srtp::SrtpError::Replay) => {
                    jb.quality.duplicates += 1;
                    return;
                }
                Err(_) => {
                    // Wrong key or tag: never decoded as if it were audio.
                    jb.quality.undecodable += 1;
                    return;
                }
            },
            LegCrypto::Opaque(_) => {
                jb.quality.undecodable += 1;
                return;
            }
        };
        let pkt = match RtpPacket::parse(rtp) {
            Ok(p) => p,
            Err(e) => {
                jb.quality.malformed += 1;
                tracing::debug!(leg = ?leg, error = %e, "RTP packet skipped");
                return;
            }
        };
        let placed = jb.push(ts, &pkt);
        if let Some(t) = self.tail.as_mut() {
            let span = match placed {
                Placed::Audio { pos, samples } => Some((pos, pos + samples as i64)),
                Placed::Event => Some(jb.event_span()),
                _ => None,
            };
            if let Some((from, to)) = span {
                t.placed(leg as usize, jb, from, to);
            }
        }
    }

    /// First of two prefetch steps for a packet a few places ahead in the
    /// shard's ring: the recorder's own state, whose fields
    /// [`CallRecorder::prefetch_audio`] then reads.
    pub fn prefetch_state(&self) {
        prefetch::range(self as *const Self, std::mem::size_of::<Self>());
    }

    /// Second step: the ring samples the packet on `leg` captured at `ts`
    /// will be written to, and, if it moves playout on, the samples and
    /// the file buffer that the mix will read and write.
    pub fn prefetch_audio(&self, leg: Leg, ts: Timestamp) {
        let pos = sample_index_k(self.start, ts, self.k);
        if pos < 0 {
            return;
        }
        self.legs[leg as usize].prefetch_push(pos);
        let n = self.playout_due(pos);
        if n > 0 {
            self.legs[0].prefetch_playout(n);
            self.legs[1].prefetch_playout(n);
            self.wav.prefetch_tail(n);
        }
    }

    /// How many samples a packet captured at timeline position `pos`
    /// plays out before it is placed: none unless it is the newest so far
    /// and moves playout on by at least a 20 ms block (mixing in blocks
    /// keeps the per-call overhead down).
    fn playout_due(&self, pos: i64) -> usize {
        let due = pos - PLAYOUT_DELAY * self.k - self.legs[0].read_pos();
        if pos > self.newest && due >= 160 * self.k {
            due as usize
        } else {
            0
        }
    }

    fn render(&mut self, upto: i64) {
        if self.error.is_some() {
            // Keep the window moving so memory stays bounded; the file is
            // failed anyway.
            let mut sink = [0i16; 256];
            while self.legs[0].read_pos() < upto {
                let n = ((upto - self.legs[0].read_pos()) as usize).min(256);
                self.legs[0].pop(&mut sink[..n]);
                self.legs[1].pop(&mut sink[..n]);
            }
            return;
        }
        let mut r = self.mixer.render(&mut self.legs, upto, &mut self.wav);
        if r.is_ok() && self.flush_each_block {
            r = self.wav.flush();
        }
        // Only once the kernel has the samples may their copy go.
        if r.is_ok()
            && let Some(t) = self.tail.as_mut()
        {
            t.committed(self.legs[0].read_pos());
        }
        if let Err(e) = r {
            self.error = Some(e);
        }
    }

    fn pos(&self, ts: Timestamp) -> i64 {
        // A pause cannot reach back into frames already written.
        sample_index_k(self.start, ts, self.k).max(self.legs[0].read_pos())
    }

    /// Starts muting both channels at `ts` (control interface or DTMF).
    pub fn pause(&mut self, ts: Timestamp) -> Option<RecorderEvent> {
        let pos = self.pos(ts);
        let at_ms = self.ms(pos);
        let paused = self.mixer.pause(pos);
        if paused && let Some(t) = self.tail.as_mut() {
            t.paused(pos);
        }
        paused.then_some(RecorderEvent::Paused { at_ms })
    }

    /// Ends the pause at `ts`; a 200 ms beep marks the spot.
    pub fn resume(&mut self, ts: Timestamp) -> Option<RecorderEvent> {
        let pos = self.pos(ts);
        let at_ms = self.ms(pos);
        let resumed = self.mixer.resume(pos);
        if resumed && let Some(t) = self.tail.as_mut() {
            t.resumed(pos);
        }
        resumed.then_some(RecorderEvent::Resumed { at_ms })
    }

    pub fn is_paused(&self) -> bool {
        self.mixer.paused()
    }

    pub fn quality(&self, leg: Leg) -> LegQuality {
        self.legs[leg as usize].quality.snapshot()
    }

    /// What the metadata would say if the segment ended now (audio
    /// written so far; no hash): kept in the segment's intent so that a
    /// recording cut short by a crash is published with its quality.
    pub fn provisional_summary(&self) -> RecordingSummary {
        let written = self.legs[0].read_pos();
        RecordingSummary {
            duration_ms: self.ms(written),
            sha256: String::new(),
            bytes: 0,
            pauses: self
                .mixer
                .pauses(written)
                .into_iter()
                .map(|(a, b)| (self.ms(a), self.ms(b)))
                .collect(),
            quality: [self.quality(Leg::Subscriber), self.quality(Leg::Remote)],
            sample_rate: self.sample_rate(),
            codecs: [self.legs[0].codec, self.legs[1].codec],
            unsupported: [
                self.legs[0].unsupported_seen.clone(),
                self.legs[1].unsupported_seen.clone(),
            ],
            encrypted: [self.crypto[0].encrypted(), self.crypto[1].encrypted()],
        }
    }

    /// Packets towards `leg`'s address that the capture thread dropped as
    /// foreign (see [`crate::daemon::routes`]): counted in its quality.
    pub fn add_foreign(&mut self, leg: Leg, packets: u64) {
        self.legs[leg as usize].quality.foreign += packets;
    }

    /// RTCP packets seen on the media ports (ignored for audio).
    pub fn rtcp_packets(&self) -> u64 {
        self.rtcp
    }

    /// Writes out what is buffered, makes the file exactly `end - start`
    /// long (silence-padded or cut), patches the header and hashes (publication fsyncs).
    pub fn finish(mut self, end: Timestamp) -> io::Result<RecordingSummary> {
        let total = sample_index_k(self.start, end, self.k).max(0);
        self.render(total);
        if let Some(t) = self.tail.take() {
            t.discard();
        }
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let wav = self.wav.finish(Some(total as u64))?;
        let k = self.k;
        let ms = |s: i64| (s.max(0) / (8 * k)) as u64;
        Ok(RecordingSummary {
            duration_ms: ms(total),
            sha256: wav.sha256,
            bytes: wav.bytes,
            pauses: self
                .mixer
                .pauses(total)
                .into_iter()
                .map(|(a, b)| (ms(a), ms(b)))
                .collect(),
            quality: [
                self.legs[0].quality.snapshot(),
                self.legs[1].quality.snapshot(),
            ],
            sample_rate: 8000 * k as u32,
            codecs: [self.legs[0].codec, self.legs[1].codec],
            unsupported: [
                self.legs[0].unsupported_seen.take(),
                self.legs[1].unsupported_seen.take(),
            ],
            encrypted: [self.crypto[0].encrypted(), self.crypto[1].encrypted()],
        })
    }
}
