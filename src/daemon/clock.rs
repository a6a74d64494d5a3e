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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// A packet back on the clock: the held ones go at this time.
    Contrary(Timestamp),
    /// A packet neither on the clock nor with the held ones.
    Inconsistent,
    /// [`GROUP`] packets agree.
    Full,
    /// The capture point ended.
    Finish,
}

/// A held packet: its stamp, and for an outlier inside a quiet stretch
/// (found ahead of later traffic, or behind the clock), the stamp of the
/// packet it is to be placed with; `next`: the next one held by its stamp.
#[derive(Clone, Copy, Debug)]
struct Member {
    raw: Timestamp,
    with: Option<Timestamp>,
    next: bool,
}

#[derive(Clone, Debug)]
struct Group {
    forward: bool,
    /// The offset the held stamps are mapped with.
    base: i64,
    members: Vec<Member>,
    /// Held packets placed by their own stamps so far.
    regular: usize,
    /// Mapped time of the latest of those.
    last: Timestamp,
    end: Option<End>,
    /// Members from here on are the start of a step back, not outliers:
    /// they stay held as a group of their own when this one is resolved.
    split: Option<usize>,
}

/// Held packets beyond which a group is resolved whatever it holds.
const MAX_HELD: usize = 4 * GROUP;

impl Group {
    fn first(&self) -> Timestamp {
        let m = self
            .members
            .iter()
            .find(|m| m.with.is_none() && !m.next)
            .unwrap_or(&self.members[0]);
        m.raw.add_micros(self.base)
    }
    /// Outliers still waiting for a packet to be placed with go with the
    /// latest one held by its stamp.
    fn settle(&mut self) {
        let last = self
            .members
            .iter()
            .rev()
            .find(|x| x.with.is_none() && !x.next)
            .map(|x| x.raw);
        for x in self.members.iter_mut().filter(|x| x.next) {
            x.with = last.or(Some(x.raw));
            x.next = false;
        }
    }
    /// Packets at the end of the held ones that follow each other without
    /// a jump: what it takes to confirm a step or a gap is [`GROUP`] of
    /// them (a quiet stretch moves in jumps, and a run of outliers in one
    /// must not complete the stretch before it).
    fn tail(&self, tol: i64) -> usize {
        let mut n = 0;
        let mut next: Option<Timestamp> = None;
        for x in self
            .members
            .iter()
            .rev()
            .filter(|x| x.with.is_none() && !x.next)
        {
            let m = x.raw.add_micros(self.base);
            if next.is_some_and(|t| t.since(m) > tol) {
                break;
            }
            n += 1;
            next = Some(m);
        }
        n
    }
    fn push(&mut self, raw: Timestamp) {
        let m = raw.add_micros(self.base);
        for x in self.members.iter_mut().filter(|x| x.next) {
            x.with = Some(raw);
            x.next = false;
        }
        self.members.push(Member {
            raw,
            with: None,
            next: false,
        });
        self.regular += 1;
        self.last = if self.regular == 1 {
            m
        } else {
            self.last.max(m)
        };
    }
    /// Packets held so far that are ahead of `raw` (by more than `tol`)
    /// were outliers in a quiet stretch: they go with it.
    fn overtaken_by(&mut self, raw: Timestamp, tol: i64) {
        let m = raw.add_micros(self.base);
        let base = self.base;
        let mut last: Option<Timestamp> = None;
        for x in self
            .members
            .iter_mut()
            .filter(|x| x.with.is_none() && !x.next)
        {
            let xm = x.raw.add_micros(base);
            if xm.since(m) > tol {
                x.with = Some(raw);
                self.regular -= 1;
            } else {
                last = Some(last.map_or(xm, |l| l.max(xm)));
            }
        }
        if let Some(l) = last {
            self.last = l;
        }
    }
}

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

fn median(v: &[i64]) -> Option<i64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
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
            let m = raw.add_micros(g.base);
            // Not before the held packets and on their side of the clock:
            // one more of them. Behind the clock it must also be nearer
            // them than the clock (a step back smaller than the held
            // packets' span catches up with the clock this way, rather
            // than leaving its last packets behind the ones placed).
            let (to_group, to_clock) = (m.since(g.last).abs(), off(m).abs());
            let along = m.since(g.last) >= -tol
                && if g.forward {
                    off(m) > tol
                } else {
                    off(m) < 0 && to_group < to_clock
                };
            // Ahead of the clock but behind some held packets: a quiet
            // stretch with outliers in it. Those ahead of this packet go
            // with it; the others and this one are the stretch.
            let overtakes = !along
                && lane.is_none()
                && g.forward
                && off(m) > tol
                && g.members.iter().any(|x| {
                    x.with.is_none() && !x.next && x.raw.add_micros(g.base).since(m) <= tol
                });
            if overtakes {
                g.overtaken_by(raw, tol);
            }
            if along || overtakes {
                g.push(raw);
                if g.tail(tol) >= GROUP || g.members.len() >= MAX_HELD {
                    g.end = Some(End::Full);
                    return Offer::HoldAndResolve;
                }
                return Offer::Hold;
            }
            if g.forward && lane.is_none() && off(m) < -tol {
                // Behind the clock while a quiet stretch is held: says
                // nothing about the stretch. An outlier of its own, placed
                // with the next packet held by its stamp; but a second one
                // that follows it is a step back starting: the stretch is
                // settled first, and they go on as a group of their own.
                let run = g.members.iter().rev().take_while(|x| x.next).count();
                if let Some(prev) = g.members.last().filter(|x| x.next)
                    && m.since(prev.raw.add_micros(g.base)) >= -tol
                {
                    g.split = Some(g.members.len() - run);
                    g.end = Some(End::Finish);
                    return Offer::ResolveFirst;
                }
                g.members.push(Member {
                    raw,
                    with: None,
                    next: true,
                });
                if g.members.len() >= MAX_HELD {
                    g.end = Some(End::Full);
                    return Offer::HoldAndResolve;
                }
                return Offer::Hold;
            }
            g.end = Some(match lane {
                // Back on the clock: the held packets were off it.
                Some(i) => {
                    let t = raw.add_micros(p.lanes[i]);
                    End::Contrary(t.max(now).min(now.add_micros(tol)))
                }
                // The traffic went on from the clock (which stood still
                // while the packets were held): they were off it.
                None if to_clock <= to_group => End::Contrary(m.max(now)),
                None => End::Inconsistent,
            });
            return Offer::ResolveFirst;
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

    /// Resolves the current point's held packets (or the start). `votes`:
    /// for held RTP of recorded calls, the offset their RTP timestamps say
    /// should be added to their mapped time (see [`CaptureClock::held_base`]).
    pub fn resolve(&mut self, votes: &[i64]) -> Resolution {
        if !self.started {
            return self.resolve_start();
        }
        let (tol, now, floor) = (self.tol, self.now, self.floor);
        let p = &mut self.points[self.current];
        let Some(mut g) = p.held.take() else {
            return Resolution {
                kind: Kind::Outliers,
                times: Vec::new(),
                outlier: Vec::new(),
            };
        };
        // A step back that started inside: held on as its own group.
        let rest = g.split.map(|i| {
            let mut r = Group {
                forward: false,
                base: g.base,
                members: Vec::new(),
                regular: 0,
                last: Timestamp::ZERO,
                end: None,
                split: None,
            };
            for x in g.members.split_off(i) {
                r.push(x.raw);
            }
            r
        });
        g.settle();
        let n = g.members.len();
        let all_at = |t: Timestamp| Resolution {
            kind: Kind::Outliers,
            times: vec![t; n],
            outlier: vec![true; n],
        };
        // Regular packets through `offset`; those found ahead of later
        // traffic with the packet that overtook them.
        let mapped = |offset: i64, kind: Kind| Resolution {
            kind,
            times: g
                .members
                .iter()
                .map(|x| x.with.unwrap_or(x.raw).add_micros(offset))
                .collect(),
            outlier: g.members.iter().map(|x| x.with.is_some()).collect(),
        };
        let res = match g.end.unwrap_or(End::Finish) {
            End::Contrary(at) => all_at(at.max(now)),
            End::Inconsistent => all_at(now),
            End::Full | End::Finish => {
                let vote = median(votes);
                let step = match (g.forward, vote) {
                    (false, Some(v)) => Some(v),
                    (false, None) => Some(floor.since(g.first())),
                    (true, Some(v)) if v.abs() > tol.max(MIN_STEP_US) => Some(v),
                    (true, _) => None,
                };
                match step {
                    Some(off) => {
                        let lane = g.base + off;
                        p.lanes.retain(|&o| (o - lane).abs() > tol);
                        p.lanes.insert(0, lane);
                        p.lanes.truncate(MAX_LANES);
                        mapped(lane, Kind::Step { offset_us: lane })
                    }
                    None => mapped(
                        g.base,
                        Kind::Gap {
                            gap_us: g.first().since(now).max(0),
                        },
                    ),
                }
            }
        };
        let outliers = res.outlier.iter().filter(|&&o| o).count() as u64;
        self.stats.outliers += outliers;
        match res.kind {
            Kind::Step { .. } => self.stats.steps += 1,
            Kind::Gap { .. } => self.stats.gaps += 1,
            Kind::Outliers | Kind::Start { .. } => {}
        }
        if let Some(&last) = res.times.iter().max() {
            self.placed(last);
        }
        if let Some(r) = rest {
            self.points[self.current].held = Some(r);
        }
        res
    }

    /// The clock starts at the earliest of the first packets that no
    /// later one contradicts (is earlier than it by more than the
    /// tolerance); the contradicted ones are outliers placed there. The
    /// last of them has nothing after it to judge it by: unless it is on
    /// the clock so started, it stays held as the clock's first group (the
    /// resolution's `times` then cover the others only).
    fn resolve_start(&mut self) -> Resolution {
        let held = std::mem::take(&mut self.starting);
        let tol = self.tol;
        let mapped: Vec<Timestamp> = held
            .iter()
            .map(|&(p, r)| r.add_micros(self.points[p].lanes[0]))
            .collect();
        let n = mapped.len();
        let bad: Vec<bool> = (0..n)
            .map(|i| mapped[i + 1..].iter().any(|&m| m.since(mapped[i]) < -tol))
            .collect();
        let empty = Resolution {
            kind: Kind::Start {
                outliers: 0,
                gap_us: 0,
            },
            times: Vec::new(),
            outlier: Vec::new(),
        };
        // The last is never contradicted, so there is a start.
        let Some(start_at) = (0..n).find(|&i| !bad[i]) else {
            return empty;
        };
        self.started = true;
        self.now = mapped[start_at];
        let mut times = Vec::with_capacity(n);
        let mut gap_us = 0;
        let mut outliers = 0;
        for (i, &m) in mapped.iter().enumerate() {
            if i == n - 1 && i != start_at && !self.in_window(m) {
                let (point, raw) = held[i];
                let p = &mut self.points[point];
                let mut g = Group {
                    forward: m > self.now,
                    base: p.lanes[0],
                    members: Vec::new(),
                    regular: 0,
                    last: m,
                    end: None,
                    split: None,
                };
                g.push(raw);
                p.held = Some(g);
                self.current = point;
                break;
            }
            let t = if bad[i] {
                outliers += 1;
                self.now
            } else {
                if m.since(self.now) > tol {
                    gap_us += m.since(self.now);
                }
                m
            };
            self.now = self.now.max(t);
            times.push(t);
        }
        self.stats.outliers += outliers as u64;
        self.floor = self.now;
        let mut outlier = bad;
        outlier.truncate(times.len());
        Resolution {
            kind: Kind::Start { outliers, gap_us },
            times,
            outlier,
        }
    }
}

/// A frame the clock holds back, copied out of the capture buffer.
pub struct HeldFrame {
    /// The capture point it came from: points hold and resolve apart.
    pub point: usize,
    pub index: u64,
    /// Its stamp as captured.
    pub raw: Timestamp,
    pub link: crate::capture::LinkType,
    pub data: Vec<u8>,
    pub orig_len: u32,
}

impl HeldFrame {
    pub fn copy(p: &crate::capture::Packet<'_>, point: usize) -> HeldFrame {
        HeldFrame {
            point,
            index: p.index,
            raw: p.ts,
            link: p.link,
            data: p.data.to_vec(),
            orig_len: p.orig_len,
        }
    }

    /// The frame as placed at `ts`.
    pub fn packet(&self, ts: Timestamp) -> crate::capture::Packet<'_> {
        crate::capture::Packet {
            index: self.index,
            ts,
            link: self.link,
            data: &self.data,
            orig_len: self.orig_len,
        }
    }

    /// Its UDP source, where it has one.
    pub fn source(&self) -> Option<std::net::IpAddr> {
        crate::decode::peek_udp(self.link, &self.data).map(|(s, _, _)| s.ip())
    }
}

/// Logs packets placed by the clock once per capture point and source
/// address (a corrupt capture or a hostile agent would otherwise write a
/// line per packet); they are all counted in [`ClockStats::outliers`].
#[derive(Default)]
pub struct OutlierLog {
    seen: std::collections::HashSet<(String, Option<std::net::IpAddr>)>,
}

/// Sources remembered for [`OutlierLog`]; beyond, nothing more is logged.
const MAX_LOGGED_SOURCES: usize = 1024;

impl OutlierLog {
    pub fn note(
        &mut self,
        point: &str,
        src: Option<std::net::IpAddr>,
        raw: Timestamp,
        placed: Timestamp,
    ) {
        if self.seen.len() >= MAX_LOGGED_SOURCES || !self.seen.insert((point.to_owned(), src)) {
            return;
        }
        let off = raw.since(placed) as f64 / 1e6;
        let from = src.map_or_else(|| "?".to_owned(), |s| s.to_string());
        tracing::warn!(
            capture = point,
            source = %from,
            stamped = %raw,
            placed = %placed,
            "a packet from {from} is stamped {off:+.3} s off the capture clock: placed by the clock, it moves nothing; further ones from this source are only counted (clock outliers)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_795_221_000_000_000;
    fn ts(ms: i64) -> Timestamp {
        Timestamp(T + ms * 1000)
    }
    fn clock() -> CaptureClock {
        CaptureClock::new(Duration::from_millis(100))
    }

    /// Offers `stamps` in turn, resolving as told (with `votes`), and
    /// returns the time each packet was processed at, in processing order.
    fn run(c: &mut CaptureClock, stamps: &[i64], votes: &[i64]) -> Vec<i64> {
        let mut out = Vec::new();
        let mut held: Vec<i64> = Vec::new();
        let flush = |c: &mut CaptureClock, held: &mut Vec<i64>, out: &mut Vec<i64>| {
            let r = c.resolve(votes);
            assert!(r.times.len() <= held.len(), "{r:?}");
            out.extend(r.times.iter().map(|t| (t.0 - T) / 1000));
            held.drain(..r.times.len());
        };
        for &s in stamps {
            loop {
                match c.offer(ts(s)) {
                    Offer::At(t) => out.push((t.0 - T) / 1000),
                    Offer::Hold => held.push(s),
                    Offer::HoldAndResolve => {
                        held.push(s);
                        flush(c, &mut held, &mut out);
                    }
                    Offer::ResolveFirst => {
                        flush(c, &mut held, &mut out);
                        continue;
                    }
                }
                break;
            }
        }
        if c.finish_point() {
            flush(c, &mut held, &mut out);
        }
        out
    }

    #[test]
    fn ordinary_traffic_keeps_its_own_times() {
        let mut c = clock();
        let s: Vec<i64> = (0..100).map(|i| i * 20).collect();
        assert_eq!(run(&mut c, &s, &[]), s);
        assert_eq!(c.stats(), &ClockStats::default());
    }

    #[test]
    fn reordering_within_the_tolerance_is_kept() {
        let mut c = clock();
        let s = [0, 20, 40, 35, 60, 55, 80, 100];
        assert_eq!(run(&mut c, &s, &[]), s);
    }

    #[test]
    fn one_packet_from_the_future_is_placed_by_the_clock() {
        let mut c = clock();
        let mut s: Vec<i64> = (0..50).map(|i| i * 20).collect();
        s[20] = 120_000 + 400;
        let got = run(&mut c, &s, &[]);
        // Placed at the next packet's time, and the clock never went there.
        assert_eq!(got[20], 420);
        assert_eq!(&got[21..], &s[21..]);
        assert_eq!(c.now(), ts(980));
        assert_eq!(c.stats().outliers, 1);
    }

    #[test]
    fn a_step_back_becomes_an_offset() {
        let mut c = clock();
        let s: Vec<i64> = (0..100)
            .map(|i| i * 20 - if i >= 50 { 3_600_000 } else { 0 })
            .collect();
        let got = run(&mut c, &s, &[]);
        // Without votes the first stepped packet goes where the clock is.
        let want: Vec<i64> = (0..100)
            .map(|i| if i >= 50 { i * 20 - 20 } else { i * 20 })
            .collect();
        assert_eq!(got, want);
        assert_eq!(c.stats().steps, 1);
        // With the media's word, exactly where it belongs.
        let mut c = clock();
        let got = run(&mut c, &s, &[3_600_000_000; 3]);
        assert_eq!(got, (0..100).map(|i| i * 20).collect::<Vec<_>>());
    }

    #[test]
    fn a_forward_jump_is_a_gap_unless_the_media_says_step() {
        // A quiet link: 16 packets after 30 s of nothing are time passing.
        let mut c = clock();
        let s: Vec<i64> = (0..10)
            .map(|i| i * 20)
            .chain((0..20).map(|i| 30_000 + i * 20))
            .collect();
        assert_eq!(run(&mut c, &s, &[]), s);
        assert_eq!(c.stats().gaps, 1);
        // The same stamps while recorded media says 20 ms passed: a step.
        let mut c = clock();
        let got = run(&mut c, &s, &[-29_800_000]);
        let want: Vec<i64> = (0..30).map(|i| i * 20).collect();
        assert_eq!(got, want);
        assert_eq!(c.stats().steps, 1);
    }

    #[test]
    fn a_short_run_off_the_clock_is_placed_by_it() {
        let mut c = clock();
        let s: Vec<i64> = (0..60)
            .map(|i| i * 20 + if (20..25).contains(&i) { 60_000 } else { 0 })
            .collect();
        let got = run(&mut c, &s, &[]);
        assert_eq!(&got[20..25], &[500; 5]);
        assert_eq!(c.stats().outliers, 5);
        assert_eq!(c.now(), ts(59 * 20));
    }

    #[test]
    fn a_first_packet_from_the_future_does_not_start_the_clock() {
        let mut c = clock();
        let mut s: Vec<i64> = (0..20).map(|i| i * 20).collect();
        s[0] = 3_600_000;
        let got = run(&mut c, &s, &[]);
        assert_eq!(got[0], 20);
        assert_eq!(&got[1..], &s[1..]);
        // A first packet from the past starts it, and the jump to the
        // rest is a gap, not an expiry.
        let mut c = clock();
        let mut s: Vec<i64> = (0..20).map(|i| i * 20).collect();
        s[0] = -3_600_000;
        let mut out = Vec::new();
        assert_eq!(c.offer(ts(s[0])), Offer::Hold);
        assert_eq!(c.offer(ts(s[1])), Offer::Hold);
        assert_eq!(c.offer(ts(s[2])), Offer::HoldAndResolve);
        let r = c.resolve(&[]);
        assert_eq!(
            r.kind,
            Kind::Start {
                outliers: 0,
                gap_us: 3_600_020_000
            }
        );
        out.extend(r.times);
        assert_eq!(out[1], ts(20));
    }

    #[test]
    fn a_start_packet_from_the_future_is_placed_whichever_it_is() {
        for bad in 0..4 {
            let mut c = clock();
            let mut s: Vec<i64> = (0..20).map(|i| i * 20).collect();
            s[bad] += 3_600_000;
            let got = run(&mut c, &s, &[]);
            let mut want = s.clone();
            // Placed by the clock: among the first packets where it
            // starts or stands, later at the next packet's time.
            want[bad] = [20, 0, 60, 80][bad];
            assert_eq!(got, want, "packet {bad}");
            assert_eq!(c.stats().outliers, 1);
        }
    }

    #[test]
    fn behind_the_clock_inside_a_quiet_stretch() {
        // A quiet stretch (ringing: 200 ms, then 1 s) with one packet from
        // an hour back among it: placed with the next one, the stretch
        // keeps its times.
        let mut c = clock();
        let s = [
            0,
            30,
            200,
            1000,
            1030,
            1200,
            2000 - 3_600_000,
            2000,
            2020,
            2040,
        ];
        let got = run(&mut c, &s, &[]);
        assert_eq!(got, [0, 30, 200, 1000, 1030, 1200, 2000, 2000, 2020, 2040]);
        assert_eq!(c.stats().outliers, 1);
        // The same, but everything from the 2 s on an hour back: a step.
        let mut c = clock();
        let s: Vec<i64> = [0, 30, 200, 1000, 1030, 1200]
            .into_iter()
            .chain((0..30).map(|i| 2000 + 20 * i - 3_600_000))
            .collect();
        let got = run(&mut c, &s, &[]);
        assert_eq!(&got[..6], &[0, 30, 200, 1000, 1030, 1200]);
        // Without the media's word it goes on from where the clock was.
        let want: Vec<i64> = (0..30).map(|i| 1200 + 20 * i).collect();
        assert_eq!(&got[6..], &want[..]);
        assert_eq!(c.stats().steps, 1);
    }

    #[test]
    fn two_capture_points_keep_their_own_offsets() {
        let mut c = clock();
        let a = c.select("agent-a");
        let b = c.select("agent-b");
        assert_eq!((a, b), (0, 1));
        c.set_offset(b, -3_600_000_000);
        c.select("agent-a");
        assert_eq!(run(&mut c, &[0, 20, 40], &[]), vec![0, 20, 40]);
        c.select("agent-b");
        assert_eq!(run(&mut c, &[3_600_060, 3_600_080], &[]), vec![60, 80]);
    }

    #[test]
    fn the_wall_clock_moves_a_silent_link() {
        let mut c = clock();
        run(&mut c, &[0, 20, 40], &[]);
        c.advance(ts(60_000));
        assert_eq!(c.now(), ts(60_000));
        assert_eq!(c.offer(ts(60_010)), Offer::At(ts(60_010)));
        // A packet from the future waits; the wall clock shows it was one.
        assert_eq!(c.offer(ts(999_999)), Offer::Hold);
        assert!(c.idle(ts(61_000)));
        let r = c.resolve(&[]);
        assert_eq!(r.kind, Kind::Outliers);
        c.advance(ts(61_000));
        assert_eq!(c.now(), ts(61_000));
    }
}
