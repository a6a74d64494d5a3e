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
use crate::media::codec::Codec;
use crate::media::jitter::{JitterBuffer, PLAYOUT_DELAY, Placed, sample_index};
use crate::media::mixer::Mixer;
use crate::media::quality::LegQuality;
use crate::media::rtp::{RtpPacket, is_rtcp};
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
}

fn ms(samples: i64) -> u64 {
    (samples.max(0) / 8) as u64
}

impl CallRecorder {
    pub fn create(p: RecorderParams) -> io::Result<CallRecorder> {
        let channels = if p.channels == Channels::Stereo { 2 } else { 1 };
        Ok(CallRecorder {
            start: p.start,
            legs: [
                JitterBuffer::new(p.start, p.telephone_event_pt[0]),
                JitterBuffer::new(p.start, p.telephone_event_pt[1]),
            ],
            mixer: Mixer::new(p.channels),
            wav: WavWriter::create(&p.path, p.format, channels)?,
            newest: 0,
            rtcp: 0,
            error: None,
            flush_each_block: false,
            tail: None,
        })
    }

    /// Live daemon only: write each mixed block through to the kernel
    /// (one `write` per 20 ms or more of audio) instead of every 8 KiB.
    pub fn set_flush_each_block(&mut self, on: bool) {
        self.flush_each_block = on;
    }

    /// Live daemon only: keeps the jitter window in `<wav>.tail` as well
    /// (see [`crate::recording::tail`]); `wav` is this recorder's file.
    pub fn keep_tail(&mut self, wav: &std::path::Path, start: Timestamp) -> io::Result<()> {
        self.tail = Some(TailMirror::create(wav, start, self.wav.channels())?);
        Ok(())
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
        let pos = sample_index(self.start, ts);
        if pos < 0 {
            return;
        }
        if pos > self.newest {
            // Play out before placing, so the window always has room.
            if self.playout_due(pos) > 0 {
                self.render(pos - PLAYOUT_DELAY);
            }
            self.newest = pos;
        }
        let jb = &mut self.legs[leg as usize];
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
        let pos = sample_index(self.start, ts);
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
        let due = pos - PLAYOUT_DELAY - self.legs[0].read_pos();
        if pos > self.newest && due >= 160 {
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
        sample_index(self.start, ts).max(self.legs[0].read_pos())
    }

    /// Starts muting both channels at `ts` (control interface or DTMF).
    pub fn pause(&mut self, ts: Timestamp) -> Option<RecorderEvent> {
        let pos = self.pos(ts);
        let paused = self.mixer.pause(pos);
        if paused && let Some(t) = self.tail.as_mut() {
            t.paused(pos);
        }
        paused.then(|| RecorderEvent::Paused { at_ms: ms(pos) })
    }

    /// Ends the pause at `ts`; a 200 ms beep marks the spot.
    pub fn resume(&mut self, ts: Timestamp) -> Option<RecorderEvent> {
        let pos = self.pos(ts);
        let resumed = self.mixer.resume(pos);
        if resumed && let Some(t) = self.tail.as_mut() {
            t.resumed(pos);
        }
        resumed.then(|| RecorderEvent::Resumed { at_ms: ms(pos) })
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
            duration_ms: ms(written),
            sha256: String::new(),
            bytes: 0,
            pauses: self
                .mixer
                .pauses(written)
                .into_iter()
                .map(|(a, b)| (ms(a), ms(b)))
                .collect(),
            quality: [self.quality(Leg::Subscriber), self.quality(Leg::Remote)],
        }
    }

    /// RTCP packets seen on the media ports (ignored for audio).
    pub fn rtcp_packets(&self) -> u64 {
        self.rtcp
    }

    /// Writes out what is buffered, makes the file exactly `end - start`
    /// long (silence-padded or cut), patches the header and hashes (publication fsyncs).
    pub fn finish(mut self, end: Timestamp) -> io::Result<RecordingSummary> {
        let total = sample_index(self.start, end).max(0);
        self.render(total);
        if let Some(t) = self.tail.take() {
            t.discard();
        }
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let wav = self.wav.finish(Some(total as u64))?;
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
        })
    }
}
