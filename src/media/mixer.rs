//! Mixer: combines the two legs' timelines into the recording's frames.
//!
//! Both jitter buffers are read in lockstep, so sample `p` of each leg
//! lands in frame `p` of the file whatever either leg did: a leg that
//! starts late or goes quiet contributes silence and never shifts the
//! other. Mono is the saturating sum; stereo puts the subscriber on the
//! left and the remote party on the right. Pauses (muted intervals) and
//! the resume beep are applied here, as the frames are written, so a pause
//! decided while its audio is still in the jitter window mutes it too.
//! Samples are worked on where they lie in the jitter buffers; the only
//! state is the pause list.

use std::io;

use crate::config::Channels;
use crate::media::jitter::JitterBuffer;
use crate::recording::wav::WavWriter;

/// Frames rendered per step at most.
const BLOCK: usize = 1024;
/// Resume beep: 200 ms of 1 kHz. At 8 kHz one period is exactly 8 samples,
/// so the tone is a fixed table: 8000 * sin(2πk/8), about -12 dBFS.
pub const BEEP_SAMPLES: i64 = 1600;
const BEEP: [i16; 8] = [0, 5657, 8000, 5657, 0, -5657, -8000, -5657];
/// The same 1 kHz at 16 kHz: 8000 * sin(2πk/16).
const BEEP16: [i16; 16] = [
    0, 3061, 5657, 7391, 8000, 7391, 5657, 3061, 0, -3061, -5657, -7391, -8000, -7391, -5657, -3061,
];
/// Pause intervals kept; past this, a new pause re-opens the last one so
/// that a flood of pause digits can only mute more, never less.
const MAX_PAUSES: usize = 256;

pub struct Mixer {
    channels: Channels,
    /// Closed and open muted intervals on the timeline, in order.
    pauses: Vec<(i64, Option<i64>)>,
    /// First pause that may still overlap frames not yet written.
    cursor: usize,
    beep_at: Option<i64>,
    /// Timeline samples per 8 kHz sample (1, or 2 at 16 kHz).
    k: i64,
}

impl Mixer {
    pub fn new(channels: Channels) -> Self {
        Self::with_rate(channels, 8000)
    }

    /// A mixer for a timeline of `rate` Hz (8000 or 16000).
    pub fn with_rate(channels: Channels, rate: u32) -> Self {
        Mixer {
            channels,
            pauses: Vec::new(),
            cursor: 0,
            beep_at: None,
            k: if rate >= 16000 { 2 } else { 1 },
        }
    }

    pub fn paused(&self) -> bool {
        matches!(self.pauses.last(), Some((_, None)))
    }

    /// Mutes from timeline position `pos` on. Returns false if already paused.
    pub fn pause(&mut self, pos: i64) -> bool {
        if self.paused() {
            return false;
        }
        if self.pauses.len() >= MAX_PAUSES {
            if let Some(last) = self.pauses.last_mut() {
                last.1 = None;
            }
        } else {
            let from = self
                .pauses
                .last()
                .and_then(|p| p.1)
                .map_or(pos, |end| pos.max(end));
            self.pauses.push((from, None));
        }
        true
    }

    /// Ends the pause at `pos` and schedules the beep there.
    pub fn resume(&mut self, pos: i64) -> bool {
        let Some(last) = self.pauses.last_mut() else {
            return false;
        };
        if last.1.is_some() {
            return false;
        }
        let end = pos.max(last.0);
        last.1 = Some(end);
        self.beep_at = Some(end);
        true
    }

    /// Pause intervals clipped to `0..total` (an open one ends at `total`).
    pub fn pauses(&self, total: i64) -> Vec<(i64, i64)> {
        self.pauses
            .iter()
            .map(|&(a, b)| (a.clamp(0, total), b.unwrap_or(total).clamp(0, total)))
            .filter(|(a, b)| b > a)
            .collect()
    }

    /// Writes frames from the legs' read position up to `upto` (exclusive).
    /// The samples are marked and encoded where they lie in the jitter
    /// buffers' rings, then released; nothing is copied on the way.
    pub fn render(
        &mut self,
        legs: &mut [JitterBuffer; 2],
        upto: i64,
        wav: &mut WavWriter,
    ) -> io::Result<()> {
        let stereo = self.channels == Channels::Stereo;
        loop {
            let pos = legs[0].read_pos();
            debug_assert_eq!(pos, legs[1].read_pos());
            if pos >= upto {
                return Ok(());
            }
            // Both rings wrap at the same position: they move in lockstep.
            let n = ((upto - pos) as usize).min(BLOCK).min(legs[0].contiguous());
            let [l0, l1] = legs;
            let (a, b) = (l0.window_mut(n), l1.window_mut(n));
            if let Some(at) = self.beep_at {
                // In stereo the beep goes to the remote side only, so the
                // subscriber channel stays exactly the subscriber.
                let target = if stereo { &mut *b } else { &mut *a };
                let from = at.max(pos);
                let len = BEEP_SAMPLES * self.k;
                let to = (at + len).min(pos + n as i64);
                for p in from..to {
                    let s = &mut target[(p - pos) as usize];
                    let b = if self.k == 1 {
                        BEEP[((p - at) & 7) as usize]
                    } else {
                        BEEP16[((p - at) & 15) as usize]
                    };
                    *s = s.saturating_add(b);
                }
                if at + len <= pos + n as i64 {
                    self.beep_at = None;
                }
            }
            self.mute(pos, n, a, b);
            if stereo {
                wav.write_stereo(a, b)?;
            } else {
                for (x, &y) in a.iter_mut().zip(&*b) {
                    *x = x.saturating_add(y);
                }
                wav.write_samples(a)?;
            }
            l0.advance(n);
            l1.advance(n);
        }
    }

    fn mute(&mut self, pos: i64, n: usize, a: &mut [i16], b: &mut [i16]) {
        let end = pos + n as i64;
        while let Some(&(_, Some(to))) = self.pauses.get(self.cursor) {
            if to > pos {
                break;
            }
            self.cursor += 1;
        }
        for &(from, to) in &self.pauses[self.cursor..] {
            if from >= end {
                break;
            }
            let lo = (from.max(pos) - pos) as usize;
            let hi = (to.unwrap_or(end).min(end) - pos).max(0) as usize;
            if lo < hi {
                a[lo..hi].fill(0);
                b[lo..hi].fill(0);
            }
        }
    }
}
