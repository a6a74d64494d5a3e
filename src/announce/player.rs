//! The announcement player: turns a prompt into a schedule of RTP packets,
//! 20 ms apart, towards both parties of a call.
//!
//! Sans-IO: `start` and `beep` take the time they are asked at (the capture
//! time of the 200 OK or DTMF that caused them), `poll` hands out every
//! packet due by a given time with its scheduled time, and `next_due` says
//! when to poll next. Nothing here reads a clock or touches a socket, so a
//! replayed capture produces byte-identical announcements: SSRCs and initial
//! sequence numbers and timestamps look random but are derived from the
//! call id and the player's seed.
//!
//! Each call keeps its two RTP streams (one per party) until `forget`, so a
//! beep after the prompt continues the same SSRC with the next sequence
//! number and a timestamp that has advanced with the time in between, as a
//! receiver expects from one source.

use super::prompts::{G711, Prompt, SAMPLE_RATE};
use crate::decode::L2Info;
use crate::time::Timestamp;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

/// Samples per RTP packet: 20 ms at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
/// Packet interval in microseconds.
pub const FRAME_MICROS: i64 = 20_000;

/// One party to play to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The party's media address from its SDP.
    pub to: SocketAddr,
    /// The address this party expects the other party's media from: the
    /// other side's SDP address. The prompt appears to come from there.
    pub from: SocketAddr,
    /// Negotiated payload type: 0 (PCMU) or 8 (PCMA).
    pub pt: u8,
    /// Ethernet header for frames towards `to`, learned from a captured
    /// frame of the flow `from` → `to` (source MAC, destination MAC, VLAN
    /// tags used as they are). Only raw injection needs it.
    pub l2: Option<L2Info>,
}

/// An RTP packet due to be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutPacket {
    pub call: u64,
    /// When it is due (scheduled time; for pcap output, the frame time).
    pub at: Timestamp,
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub l2: Option<L2Info>,
    /// The whole RTP packet (12-byte header + 160 payload bytes).
    pub rtp: Vec<u8>,
}

/// When a prompt or beep plays: the first packet is sent at `started_at`,
/// the last packet's audio ends at `ended_at` (= start + packets × 20 ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlayTimes {
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BeepKind {
    /// One low tone: recording paused.
    Pause,
    /// Two high tones: recording resumed.
    Resume,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlayError {
    #[error("call {call:x}: payload type {pt} towards {to} is not G.711 (0 or 8); cannot play")]
    UnsupportedPayloadType { call: u64, pt: u8, to: SocketAddr },
}

#[derive(Clone, Copy, Debug)]
struct Stream {
    ssrc: u32,
    next_seq: u16,
    ts_base: u32,
}

#[derive(Debug)]
struct Play {
    start: Timestamp,
    frames: u64,
    next_frame: u64,
    targets: [Target; 2],
    codecs: [G711; 2],
    payloads: [Arc<[u8]>; 2],
    /// A pause or resume beep, not a guidance prompt.
    beep: bool,
}

impl Play {
    fn due(&self) -> Timestamp {
        self.start.add_micros(self.next_frame as i64 * FRAME_MICROS)
    }
}

#[derive(Debug)]
struct CallState {
    /// Time of the call's first play: RTP timestamps count from here.
    epoch: Timestamp,
    streams: [Stream; 2],
    play: Option<Play>,
}

/// Schedules prompts and beeps for many calls.
pub struct Player {
    seed: u64,
    calls: HashMap<u64, CallState>,
    /// (due time, call): the next packet of each playing call, in order.
    schedule: BTreeSet<(Timestamp, u64)>,
    pause_beep: Prompt,
    resume_beep: Prompt,
}

impl Player {
    /// `seed` makes SSRCs differ between installations while keeping a
    /// given replay reproducible.
    pub fn new(seed: u64) -> Player {
        Player {
            seed,
            calls: HashMap::new(),
            schedule: BTreeSet::new(),
            pause_beep: Prompt::from_samples("pause beep", tones(&[(425.0, 250)])),
            resume_beep: Prompt::from_samples(
                "resume beep",
                tones(&[(1000.0, 150), (0.0, 100), (1000.0, 150)]),
            ),
        }
    }

    /// Starts playing `prompt` to both targets, replacing anything the call
    /// is playing. The first packets are due at `now`.
    pub fn start(
        &mut self,
        call: u64,
        now: Timestamp,
        prompt: &Prompt,
        targets: [Target; 2],
    ) -> Result<PlayTimes, PlayError> {
        self.play(call, now, prompt, targets, false)
    }

    fn play(
        &mut self,
        call: u64,
        now: Timestamp,
        prompt: &Prompt,
        targets: [Target; 2],
        beep: bool,
    ) -> Result<PlayTimes, PlayError> {
        let codecs = [codec_of(call, &targets[0])?, codec_of(call, &targets[1])?];
        self.stop(call);
        let frames = prompt.samples().len().div_ceil(FRAME_SAMPLES) as u64;
        let seed = self.seed;
        let state = self.calls.entry(call).or_insert_with(|| CallState {
            epoch: now,
            streams: [new_stream(seed, call, 0), new_stream(seed, call, 1)],
            play: None,
        });
        let play = Play {
            start: now,
            frames,
            next_frame: 0,
            targets,
            codecs,
            payloads: [prompt.payload(codecs[0]), prompt.payload(codecs[1])],
            beep,
        };
        if frames > 0 {
            self.schedule.insert((play.due(), call));
            state.play = Some(play);
        }
        Ok(PlayTimes {
            started_at: now,
            ended_at: now.add_micros(frames as i64 * FRAME_MICROS),
        })
    }

    /// Plays the pause or resume beep to both targets, replacing a beep
    /// still playing (the newer state is the one the parties must hear).
    pub fn beep(
        &mut self,
        call: u64,
        now: Timestamp,
        targets: [Target; 2],
        kind: BeepKind,
    ) -> Result<PlayTimes, PlayError> {
        let tone = match kind {
            BeepKind::Pause => self.pause_beep.clone(),
            BeepKind::Resume => self.resume_beep.clone(),
        };
        self.play(call, now, &tone, targets, true)
    }

    /// The clip of a beep (inline mode plays it in the parties' streams).
    pub fn beep_clip(&self, kind: BeepKind) -> &Prompt {
        match kind {
            BeepKind::Pause => &self.pause_beep,
            BeepKind::Resume => &self.resume_beep,
        }
    }

    /// Stops whatever the call is playing; its streams are kept for later
    /// beeps.
    pub fn stop(&mut self, call: u64) {
        if let Some(play) = self.calls.get_mut(&call).and_then(|c| c.play.take()) {
            self.schedule.remove(&(play.due(), call));
        }
    }

    /// Drops all state of a call (call ended).
    pub fn forget(&mut self, call: u64) {
        self.stop(call);
        self.calls.remove(&call);
    }

    pub fn is_playing(&self, call: u64) -> bool {
        self.calls.get(&call).is_some_and(|c| c.play.is_some())
    }

    /// Whether the call's guidance prompt (not a beep) is still playing.
    pub fn is_prompting(&self, call: u64) -> bool {
        self.calls
            .get(&call)
            .and_then(|c| c.play.as_ref())
            .is_some_and(|p| !p.beep)
    }

    /// Number of calls currently playing something.
    pub fn playing(&self) -> usize {
        self.schedule.len()
    }

    /// When the next packet is due, if any.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.schedule.first().map(|&(t, _)| t)
    }

    /// Emits every packet due by `now`, in time order (then call id), each
    /// with its scheduled time. Both parties' packets of one frame go out
    /// together, target 0 first.
    pub fn poll(&mut self, now: Timestamp, out: &mut dyn FnMut(OutPacket)) {
        while let Some(&(due, call)) = self.schedule.first() {
            if due > now {
                break;
            }
            self.schedule.pop_first();
            let Some(state) = self.calls.get_mut(&call) else {
                continue;
            };
            let Some(play) = state.play.as_mut() else {
                continue;
            };
            let k = play.next_frame;
            let lo = (k as usize) * FRAME_SAMPLES;
            // RTP time runs with the call's clock, not per play, so streams
            // stay continuous across prompt and beeps.
            let elapsed = due.since(state.epoch).max(0) as u64;
            let ts_offset = (elapsed * SAMPLE_RATE as u64 / 1_000_000) as u32;
            for (i, stream) in state.streams.iter_mut().enumerate() {
                let payload = &play.payloads[i];
                let hi = (lo + FRAME_SAMPLES).min(payload.len());
                let mut body = payload.get(lo..hi).unwrap_or(&[]).to_vec();
                // The last frame is padded with silence to a full 20 ms.
                body.resize(FRAME_SAMPLES, play.codecs[i].encode(0));
                let target = &play.targets[i];
                let rtp = crate::media::rtp::build_rtp(
                    target.pt,
                    stream.next_seq,
                    stream.ts_base.wrapping_add(ts_offset),
                    stream.ssrc,
                    k == 0,
                    &body,
                );
                stream.next_seq = stream.next_seq.wrapping_add(1);
                out(OutPacket {
                    call,
                    at: due,
                    from: target.from,
                    to: target.to,
                    l2: target.l2,
                    rtp,
                });
            }
            play.next_frame += 1;
            if play.next_frame < play.frames {
                self.schedule.insert((play.due(), call));
            } else {
                state.play = None;
            }
        }
    }
}

fn codec_of(call: u64, t: &Target) -> Result<G711, PlayError> {
    G711::from_payload_type(t.pt).ok_or(PlayError::UnsupportedPayloadType {
        call,
        pt: t.pt,
        to: t.to,
    })
}

/// SplitMix64: a well-mixed 64-bit hash, enough to make SSRCs look random
/// while being a pure function of (seed, call, stream).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn new_stream(seed: u64, call: u64, index: u64) -> Stream {
    let a = mix(seed ^ mix(call) ^ mix(index.wrapping_add(0x5EED)));
    let b = mix(a);
    Stream {
        ssrc: (a >> 32) as u32,
        next_seq: a as u16,
        ts_base: (b >> 32) as u32,
    }
}

/// Sine tones (frequency Hz, milliseconds; 0 Hz = silence) at -10 dBFS with
/// 5 ms raised-cosine ramps so the beep does not click.
fn tones(parts: &[(f64, u32)]) -> Vec<i16> {
    let amp = 32767.0 * 10f64.powf(-10.0 / 20.0);
    let ramp = (SAMPLE_RATE / 200) as usize;
    let mut out = Vec::new();
    for &(freq, ms) in parts {
        let n = (SAMPLE_RATE * ms / 1000) as usize;
        for i in 0..n {
            let edge = i.min(n - 1 - i);
            let gain = if edge < ramp {
                0.5 - 0.5 * (std::f64::consts::PI * edge as f64 / ramp as f64).cos()
            } else {
                1.0
            };
            let v = if freq == 0.0 {
                0.0
            } else {
                amp * gain
                    * (2.0 * std::f64::consts::PI * freq * i as f64 / SAMPLE_RATE as f64).sin()
            };
            out.push(v.round() as i16);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(pt: u8) -> [Target; 2] {
        let a: SocketAddr = "192.0.2.10:40000".parse().unwrap();
        let b: SocketAddr = "198.51.100.20:50000".parse().unwrap();
        [
            Target {
                to: a,
                from: b,
                pt,
                l2: None,
            },
            Target {
                to: b,
                from: a,
                pt,
                l2: None,
            },
        ]
    }

    #[test]
    fn beep_continues_the_streams() {
        let mut p = Player::new(7);
        let prompt = Prompt::from_samples("p", vec![1000; 800]);
        let t0 = Timestamp::from_millis(1_000_000);
        let times = p.start(1, t0, &prompt, targets(0)).unwrap();
        assert_eq!(times.ended_at, t0.add_micros(100_000));
        let mut pkts = Vec::new();
        p.poll(Timestamp::from_millis(2_000_000), &mut |o| pkts.push(o));
        assert_eq!(pkts.len(), 10);
        let t1 = t0.add_micros(5_000_000);
        p.beep(1, t1, targets(0), BeepKind::Resume).unwrap();
        p.poll(t1, &mut |o| pkts.push(o));
        let last = &pkts[8].rtp; // last prompt packet to target 0
        let beep = &pkts[10].rtp;
        assert_eq!(beep[8..12], last[8..12], "same SSRC");
        assert_eq!(
            u16::from_be_bytes([beep[2], beep[3]]),
            u16::from_be_bytes([last[2], last[3]]).wrapping_add(1)
        );
        let ts = |r: &[u8]| u32::from_be_bytes([r[4], r[5], r[6], r[7]]);
        assert_eq!(ts(beep).wrapping_sub(ts(last)), 40_000 - 4 * 160);
        assert_ne!(beep[1] & 0x80, 0, "marker on the beep's first packet");
    }

    #[test]
    fn a_beep_is_not_a_prompt() {
        let mut p = Player::new(7);
        let prompt = Prompt::from_samples("p", vec![1000; 800]);
        p.start(1, Timestamp::ZERO, &prompt, targets(0)).unwrap();
        assert!(p.is_prompting(1));
        p.beep(2, Timestamp::ZERO, targets(8), BeepKind::Pause)
            .unwrap();
        assert!(p.is_playing(2) && !p.is_prompting(2));
        // The pause beep is 250 ms: 13 packets per party.
        let mut n = 0;
        p.poll(Timestamp::from_millis(1000), &mut |o| {
            n += usize::from(o.call == 2)
        });
        assert_eq!(n, 26);
        assert!(!p.is_playing(2) && !p.is_prompting(1));
    }

    #[test]
    fn rejects_non_g711() {
        let mut p = Player::new(0);
        let prompt = Prompt::from_samples("p", vec![0; 800]);
        assert!(matches!(
            p.start(1, Timestamp::ZERO, &prompt, targets(18)),
            Err(PlayError::UnsupportedPayloadType { pt: 18, .. })
        ));
        assert_eq!(p.next_due(), None);
    }

    #[test]
    fn stop_and_forget_clear_the_schedule() {
        let mut p = Player::new(0);
        let prompt = Prompt::from_samples("p", vec![0; 8000]);
        p.start(1, Timestamp::ZERO, &prompt, targets(8)).unwrap();
        p.start(2, Timestamp::ZERO, &prompt, targets(8)).unwrap();
        assert_eq!(p.playing(), 2);
        p.stop(1);
        p.forget(2);
        assert_eq!(p.next_due(), None);
        let mut n = 0;
        p.poll(Timestamp::from_millis(10_000), &mut |_| n += 1);
        assert_eq!(n, 0);
    }
}
