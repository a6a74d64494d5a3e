//! The capture clock: packet time that a single packet cannot move.
//!
//! Every frame carries the time its capture point stamped on it. Stamps
//! can be wrong: merged captures and capture agents with a wrong clock
//! step back or forward, a corrupt record carries any time at all. The
//! engine used to take the largest stamp seen as its time, so one packet
//! from the future expired every other call, and a step back ended calls
//! before their answer.
//!
//! Here a stamp is mapped through its capture point's *offset* (0, or one
//! learned from a step, or one set through [`CaptureClock::set_offset`] for
//! agents that report their own clock) and then accepted when it falls
//! within `limits.clock_tolerance` of the clock, either way. A packet
//! outside is held back (a copy, by the engine) with the ones that follow
//! it consistently, until the traffic decides what it was:
//!
//! - a packet back near the clock: the held ones were **outliers**. They
//!   are placed by the clock (at the next packet's time), counted, and
//!   never move the clock;
//! - [`GROUP`] packets in a row that agree with each other: a **step** or a
//!   **gap**. Backwards it is a step: the point gets a new offset that
//!   places its packets where they belong. Forwards it is a gap (a quiet
//!   link: time passed) unless the media says otherwise: the engine looks
//!   for RTP of recorded calls among the held packets and compares their
//!   RTP timestamps with what it saw before (*votes*); a stream that moved
//!   20 ms of audio while its stamps moved an hour is a step. A gap moves
//!   the clock (setup timeouts do not count it, see
//!   [`crate::calls::tracker::Tracker::skip_setup_time`]);
//! - the end of the capture point (or, live, the wall clock on a silent
//!   link): as above with what there is.
//!
//! At the start the first [`START`] packets are held, and one that a later
//! one shows to be ahead of them is an outlier: a first packet from the
//! future does not set the clock.
//!
//! Sans-IO: the clock sees only stamps, and the votes the engine hands it.
//! In live capture the engine also gives it the wall clock on a silent
//! link ([`CaptureClock::advance`]), which it trusts.

use crate::time::Timestamp;
use std::time::Duration;

/// Packets in a row that make a step or a gap.
pub const GROUP: usize = 16;
/// Packets held before the clock starts.
pub const START: usize = 3;
/// Offsets remembered per capture point (the clock's own and steps seen).
const MAX_LANES: usize = 4;
/// The least the media must disagree with a forward jump for it to be a
/// step: a sender that stalls and sends on late without catching up (a
/// loaded host, a live capture in bursts) disagrees by its stall, and that
/// is better taken as time (a short silence in the recording).
const MIN_STEP_US: i64 = 500_000;

/// What to do with an offered packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Process it at this time.
    At(Timestamp),
    /// Keep it (the engine holds a copy) until [`CaptureClock::resolve`].
    Hold,
    /// Keep it, then resolve the held packets at once (it completed them).
    HoldAndResolve,
    /// Resolve the held packets first, then offer this one again.
    ResolveFirst,
}

/// What the held packets were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The first packets: placed from the earliest one no later packet
    /// contradicts; `outliers` of them were ahead of the rest.
    Start { outliers: usize, gap_us: i64 },
    /// Off the clock, alone or a few: placed by the clock.
    Outliers,
    /// The clock moved forward this far with no packet at all.
    Gap { gap_us: i64 },
    /// The capture point's stamps moved: `offset_us` is added to them
    /// from now on.
    Step { offset_us: i64 },
}

/// How the held packets are to be processed: at `times`, in order;
/// `outlier` marks those placed by the clock rather than by their stamp.
/// When `times` is shorter than what was held, the rest stays held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub kind: Kind,
    pub times: Vec<Timestamp>,
    pub outlier: Vec<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClockStats {
    /// Packets stamped off the clock and placed by it.
    pub outliers: u64,
    /// Steps of a capture point's stamps taken up by a new offset.
    pub steps: u64,
    /// Forward jumps taken as time passing with no packet.
    pub gaps: u64,
}

mod frame;
mod group;
mod resolve;

pub use frame::{HeldFrame, OutlierLog};
use group::{End, Group, offer_held};

#[derive(Clone, Debug)]
struct Point {
    name: String,
    /// Offsets, the most recently used first.
    lanes: Vec<i64>,
    held: Option<Group>,
}

pub struct CaptureClock {
    tol: i64,
    now: Timestamp,
    /// The latest time a packet was placed at. `now` runs ahead of it when
    /// the wall clock moves a silent link on; packets a live capture hands
    /// over late (they wait in the kernel's ring while the thread sees it
    /// empty) are still on time back to here.
    floor: Timestamp,
    started: bool,
    /// Held while the clock has not started: (point, raw stamp).
    starting: Vec<(usize, Timestamp)>,
    points: Vec<Point>,
    current: usize,
    stats: ClockStats,
}

impl CaptureClock {
    pub fn new(tolerance: Duration) -> CaptureClock {
        CaptureClock {
            tol: (tolerance.as_micros() as i64).max(1),
            now: Timestamp::ZERO,
            floor: Timestamp::ZERO,
            started: false,
            starting: Vec::new(),
            points: vec![Point {
                name: "capture".into(),
                lanes: vec![0],
                held: None,
            }],
            current: 0,
            stats: ClockStats::default(),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.now
    }

    pub fn stats(&self) -> &ClockStats {
        &self.stats
    }

    pub fn tolerance_us(&self) -> i64 {
        self.tol
    }

    /// Makes `name` the capture point of the packets offered from now on
    /// (registering it the first time); returns its number.
    pub fn select(&mut self, name: &str) -> usize {
        // Frames of one agent come in runs: the current point, no search.
        if self.points[self.current].name == name {
            return self.current;
        }
        let i = match self.points.iter().position(|p| p.name == name) {
            Some(i) => i,
            None if self.points.len() == 1
                && self.points[0].name == "capture"
                && self.points[0].held.is_none()
                && self.starting.is_empty()
                && !self.started =>
            {
                // Nothing offered yet: the default point just gets its name.
                self.points[0].name = name.to_owned();
                0
            }
            None => {
                self.points.push(Point {
                    name: name.to_owned(),
                    lanes: vec![0],
                    held: None,
                });
                self.points.len() - 1
            }
        };
        self.current = i;
        i
    }

    /// Capture points holding packets back.
    pub fn points_holding(&self) -> Vec<usize> {
        if !self.started {
            return if self.starting.is_empty() {
                Vec::new()
            } else {
                vec![self.current]
            };
        }
        (0..self.points.len())
            .filter(|&i| self.points[i].held.is_some())
            .collect()
    }

    /// The current point's number.
    pub fn select_current(&self) -> usize {
        self.current
    }

    /// Makes point `i` (from [`CaptureClock::select`]) the current one.
    pub fn select_index(&mut self, i: usize) {
        if i < self.points.len() {
            self.current = i;
        }
    }

    /// The current capture point's name (for messages).
    pub fn point_name(&self) -> &str {
        &self.points[self.current].name
    }

    /// A capture point whose own clock is known to be off (an agent that
    /// reports its time): `offset_us` is added to its stamps.
    pub fn set_offset(&mut self, point: usize, offset_us: i64) {
        if let Some(p) = self.points.get_mut(point) {
            p.lanes.retain(|&o| o != offset_us);
            p.lanes.insert(0, offset_us);
            p.lanes.truncate(MAX_LANES);
        }
    }

    /// Live capture on a silent link: the wall clock, trusted. It moves
    /// the clock on, not the last packet's time (see `floor`); before the
    /// first packets the clock has not started.
    pub fn advance(&mut self, wall: Timestamp) {
        if self.started && wall > self.now {
            self.now = wall;
        }
    }

    /// How far `t` is off the clock: ahead of `now`, or behind the last
    /// packet placed; 0 between.
    fn off(&self, t: Timestamp) -> i64 {
        if t > self.now {
            t.since(self.now)
        } else if t < self.floor {
            t.since(self.floor)
        } else {
            0
        }
    }

    fn in_window(&self, t: Timestamp) -> bool {
        self.off(t).abs() <= self.tol
    }

    fn placed(&mut self, t: Timestamp) {
        if t > self.now {
            self.now = t;
        }
        if t > self.floor {
            self.floor = t;
        }
    }

    /// Where a packet stamped `raw` at the current point goes.
    #[inline]
    pub fn offer(&mut self, raw: Timestamp) -> Offer {
        let p = &self.points[self.current];
        if self.started && p.held.is_none() {
            // The fast path: on the clock through the point's usual offset.
            let t = raw.add_micros(p.lanes[0]);
            if t.since(self.now) <= self.tol && t.since(self.floor) >= -self.tol {
                self.placed(t);
                return Offer::At(t);
            }
        }
        self.offer_slow(raw)
    }

    #[cold]
    fn offer_slow(&mut self, raw: Timestamp) -> Offer {
        if !self.started {
            self.starting.push((self.current, raw));
            return if self.starting.len() >= START {
                Offer::HoldAndResolve
            } else {
                Offer::Hold
            };
        }
        let tol = self.tol;
        let now = self.now;
        let lane = {
            let p = &self.points[self.current];
            p.lanes
                .iter()
                .position(|&o| self.in_window(raw.add_micros(o)))
        };
        let floor = self.floor;
        let off = move |t: Timestamp| {
            if t > now {
                t.since(now)
            } else if t < floor {
                t.since(floor)
            } else {
                0
            }
        };
        let p = &mut self.points[self.current];
        if let Some(g) = p.held.as_mut() {
            return offer_held(g, &p.lanes, raw, lane, tol, now, off);
        }
        if let Some(i) = lane {
            let t = raw.add_micros(p.lanes[i]);
            let o = p.lanes.remove(i);
            p.lanes.insert(0, o);
            self.placed(t);
            return Offer::At(t);
        }
        let m = raw.add_micros(p.lanes[0]);
        let forward = off(m) > 0;
        let p = &mut self.points[self.current];
        let mut g = Group {
            forward,
            base: p.lanes[0],
            members: Vec::new(),
            regular: 0,
            last: m,
            end: None,
            split: None,
        };
        g.push(raw);
        p.held = Some(g);
        Offer::Hold
    }

    /// A point other than the current one that holds packets ahead of
    /// the clock which the clock has since caught up with (other points'
    /// traffic moved it): a quiet stretch on that point, not a jump. With
    /// several points merged (interfaces of different hosts, capture
    /// agents), its packets must be placed now, not when its next packet
    /// comes, or the other points' packets would overtake them.
    pub fn caught_up_point(&self) -> Option<usize> {
        if !self.started {
            return None;
        }
        self.points.iter().enumerate().find_map(|(i, p)| {
            let g = p.held.as_ref()?;
            let first = g.members.first()?.raw.add_micros(g.base);
            (i != self.current && g.forward && first <= self.now).then_some(i)
        })
    }

    /// Whether the current point holds packets.
    pub fn holding(&self) -> bool {
        if self.started {
            self.points[self.current].held.is_some()
        } else {
            !self.starting.is_empty()
        }
    }

    /// The current point ends (end of a capture file): what it holds must
    /// be resolved now. Returns whether there is anything to resolve.
    pub fn finish_point(&mut self) -> bool {
        if !self.started {
            return !self.starting.is_empty();
        }
        match self.points[self.current].held.as_mut() {
            Some(g) => {
                g.end.get_or_insert(End::Finish);
                true
            }
            None => false,
        }
    }

    /// Live capture on a silent link, before [`CaptureClock::advance`]:
    /// the wall clock judges the held packets. Ahead of the clock: on time
    /// once the wall clock has caught up with them, outliers while still
    /// ahead of it. Behind: a step when the wall clock went back with them
    /// (the host's clock was stepped), outliers otherwise. Returns whether
    /// there is anything to resolve.
    pub fn idle(&mut self, wall: Timestamp) -> bool {
        if !self.started {
            return !self.starting.is_empty();
        }
        let (tol, now) = (self.tol, self.now);
        let Some(g) = self.points[self.current].held.as_mut() else {
            return false;
        };
        let agrees = if g.forward {
            g.first().since(wall) <= tol
        } else {
            g.first().since(wall).abs() <= tol
        };
        g.end = Some(if agrees {
            End::Finish
        } else {
            End::Contrary(now)
        });
        true
    }

    /// The mapped time of each held packet as the engine should look at
    /// it for votes (the offset the held stamps are seen through).
    pub fn held_base(&self) -> i64 {
        self.points[self.current]
            .held
            .as_ref()
            .map_or(self.points[self.current].lanes[0], |g| g.base)
    }
}

#[cfg(test)]
#[path = "clock_tests.rs"]
mod tests;
