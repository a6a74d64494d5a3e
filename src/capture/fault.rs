//! Deterministic fault injection for tests: wraps a source and drops,
//! duplicates, reorders, delays or truncates its frames.
//!
//! The random choices come from a seeded xorshift generator written here
//! (a few lines; no need for the `rand` crate), so a failing test replays
//! exactly with the same seed.

use super::{CaptureError, LinkType, Packet, PacketSource};
use crate::time::Timestamp;
use std::collections::VecDeque;

/// xorshift64*: small, fast, and good enough to pick faults.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        // Zero is the one state xorshift never leaves; mix the seed.
        XorShift(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.next_f64() < p
    }
    /// Uniform in [0, n); 0 when n is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// Probability of each fault per frame (0.0 = never).
#[derive(Clone, Debug, Default)]
pub struct FaultConfig {
    pub seed: u64,
    pub drop: f64,
    pub duplicate: f64,
    /// Swap the frame with the next one.
    pub reorder: f64,
    /// Hold the frame back until `delay_frames` later frames have passed.
    pub delay: f64,
    pub delay_frames: usize,
    /// Cut the frame to a random shorter length.
    pub truncate: f64,
}

/// What the injector did, for test assertions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub dropped: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub delayed: u64,
    pub truncated: u64,
}

#[derive(Clone, Debug)]
struct OwnedFrame {
    index: u64,
    ts: Timestamp,
    link: LinkType,
    data: Vec<u8>,
    orig_len: u32,
}

pub struct FaultInjector<S: PacketSource> {
    inner: S,
    cfg: FaultConfig,
    rng: XorShift,
    stats: FaultStats,
    /// Frames ready to hand out, in order.
    ready: VecDeque<OwnedFrame>,
    /// Frames held back: (inner frames still to pass, frame).
    held: Vec<(usize, OwnedFrame)>,
    /// The frame last handed out; the returned packet borrows it.
    current: Option<OwnedFrame>,
    inner_done: bool,
}

impl<S: PacketSource> FaultInjector<S> {
    pub fn new(inner: S, cfg: FaultConfig) -> Self {
        let rng = XorShift::new(cfg.seed);
        FaultInjector {
            inner,
            cfg,
            rng,
            stats: FaultStats::default(),
            ready: VecDeque::new(),
            held: Vec::new(),
            current: None,
            inner_done: false,
        }
    }

    pub fn stats(&self) -> &FaultStats {
        &self.stats
    }

    /// Pulls one frame from the inner source and applies the faults.
    fn pull(&mut self) -> Result<(), CaptureError> {
        let frame = match self.inner.next_packet()? {
            Some(p) => OwnedFrame {
                index: p.index,
                ts: p.ts,
                link: p.link,
                data: p.data.to_vec(),
                orig_len: p.orig_len,
            },
            None => {
                self.inner_done = true;
                // Release everything still held, in the order it was held.
                for (_, f) in self.held.drain(..) {
                    self.ready.push_back(f);
                }
                return Ok(());
            }
        };
        // One more frame passed: held frames whose wait ends follow it.
        let mut released = Vec::new();
        self.held.retain_mut(|(left, f)| {
            *left = left.saturating_sub(1);
            if *left == 0 {
                released.push(f.clone());
                false
            } else {
                true
            }
        });
        let mut frame = frame;
        if self.rng.chance(self.cfg.drop) {
            self.stats.dropped += 1;
        } else {
            if self.rng.chance(self.cfg.truncate) && !frame.data.is_empty() {
                let len = self.rng.below(frame.data.len() as u64) as usize;
                frame.data.truncate(len);
                self.stats.truncated += 1;
            }
            let dup = self.rng.chance(self.cfg.duplicate);
            if self.rng.chance(self.cfg.reorder) {
                self.stats.reordered += 1;
                self.held.push((1, frame.clone()));
            } else if self.cfg.delay_frames > 0 && self.rng.chance(self.cfg.delay) {
                self.stats.delayed += 1;
                self.held.push((self.cfg.delay_frames, frame.clone()));
            } else {
                self.ready.push_back(frame.clone());
            }
            if dup {
                self.stats.duplicated += 1;
                self.ready.push_back(frame);
            }
        }
        self.ready.extend(released);
        Ok(())
    }
}

impl<S: PacketSource> PacketSource for FaultInjector<S> {
    fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        while self.ready.is_empty() && !self.inner_done {
            self.pull()?;
        }
        self.current = self.ready.pop_front();
        Ok(self.current.as_ref().map(|f| Packet {
            index: f.index,
            ts: f.ts,
            link: f.link,
            data: &f.data,
            orig_len: f.orig_len,
        }))
    }

    fn name(&self) -> &str {
        self.inner.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source of `n` one-byte frames numbered 1..=n.
    struct Counter {
        n: u64,
        i: u64,
        buf: [u8; 1],
    }
    impl PacketSource for Counter {
        fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
            if self.i == self.n {
                return Ok(None);
            }
            self.i += 1;
            self.buf[0] = self.i as u8;
            Ok(Some(Packet {
                index: self.i,
                ts: Timestamp(self.i as i64),
                link: LinkType::RawIp,
                data: &self.buf,
                orig_len: 1,
            }))
        }
        fn name(&self) -> &str {
            "counter"
        }
    }

    fn run(cfg: FaultConfig, n: u64) -> (Vec<u64>, FaultStats) {
        let mut f = FaultInjector::new(Counter { n, i: 0, buf: [0] }, cfg);
        let mut out = Vec::new();
        while let Some(p) = f.next_packet().unwrap() {
            out.push(p.index);
        }
        (out, f.stats().clone())
    }

    #[test]
    fn no_faults_is_identity() {
        let (out, _) = run(FaultConfig::default(), 50);
        assert_eq!(out, (1..=50).collect::<Vec<_>>());
    }

    #[test]
    fn same_seed_same_faults_and_counts_add_up() {
        let cfg = FaultConfig {
            seed: 7,
            drop: 0.1,
            duplicate: 0.1,
            reorder: 0.1,
            delay: 0.1,
            delay_frames: 3,
            truncate: 0.0,
        };
        let (a, sa) = run(cfg.clone(), 500);
        let (b, _) = run(cfg, 500);
        assert_eq!(a, b);
        assert!(
            sa.dropped > 20 && sa.duplicated > 20 && sa.reordered > 20 && sa.delayed > 10,
            "{sa:?}"
        );
        assert_eq!(a.len() as u64, 500 - sa.dropped + sa.duplicated);
        assert!(
            a.windows(2).any(|w| w[0] > w[1]),
            "some frames out of order"
        );
    }

    #[test]
    fn reorder_swaps_with_next() {
        let cfg = FaultConfig {
            seed: 1,
            reorder: 1.0,
            ..Default::default()
        };
        // Every frame is held for one: each is released after the next,
        // which is itself held, so the chain shifts by one until the end.
        let (out, _) = run(cfg, 3);
        let mut sorted = out.clone();
        sorted.sort();
        assert_eq!(sorted, vec![1, 2, 3]);
    }

    #[test]
    fn truncate_shortens() {
        let cfg = FaultConfig {
            seed: 3,
            truncate: 1.0,
            ..Default::default()
        };
        let mut f = FaultInjector::new(
            Counter {
                n: 10,
                i: 0,
                buf: [0],
            },
            cfg,
        );
        while let Some(p) = f.next_packet().unwrap() {
            assert!(p.data.is_empty());
        }
        assert_eq!(f.stats().truncated, 10);
    }
}
