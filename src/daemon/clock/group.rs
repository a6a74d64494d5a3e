//! A capture point's held packets: the group the clock keeps while the
//! traffic has not yet said what they were, how it takes each further
//! packet offered (or ends), and how it tells a quiet stretch from
//! outliers inside it. Apart from the clock so the clock's offer and
//! resolution read as steps over a group.

use super::{GROUP, Offer};
use crate::time::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
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
pub(super) struct Member {
    pub(super) raw: Timestamp,
    pub(super) with: Option<Timestamp>,
    pub(super) next: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Group {
    pub(super) forward: bool,
    /// The offset the held stamps are mapped with.
    pub(super) base: i64,
    pub(super) members: Vec<Member>,
    /// Held packets placed by their own stamps so far.
    pub(super) regular: usize,
    /// Mapped time of the latest of those.
    pub(super) last: Timestamp,
    pub(super) end: Option<End>,
    /// Members from here on are the start of a step back, not outliers:
    /// they stay held as a group of their own when this one is resolved.
    pub(super) split: Option<usize>,
}

/// Held packets beyond which a group is resolved whatever it holds.
const MAX_HELD: usize = 4 * GROUP;

impl Group {
    pub(super) fn first(&self) -> Timestamp {
        let m = self
            .members
            .iter()
            .find(|m| m.with.is_none() && !m.next)
            .unwrap_or(&self.members[0]);
        m.raw.add_micros(self.base)
    }
    /// Outliers still waiting for a packet to be placed with go with the
    /// latest one held by its stamp.
    pub(super) fn settle(&mut self) {
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
    pub(super) fn tail(&self, tol: i64) -> usize {
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
    pub(super) fn push(&mut self, raw: Timestamp) {
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
    /// The members from `split` on (a step back that started inside), as
    /// a group of their own.
    pub(super) fn take_split(&mut self) -> Option<Group> {
        self.split.map(|i| {
            let mut r = Group {
                forward: false,
                base: self.base,
                members: Vec::new(),
                regular: 0,
                last: Timestamp::ZERO,
                end: None,
                split: None,
            };
            for x in self.members.split_off(i) {
                r.push(x.raw);
            }
            r
        })
    }
    /// Packets held so far that are ahead of `raw` (by more than `tol`)
    /// were outliers in a quiet stretch: they go with it.
    pub(super) fn overtaken_by(&mut self, raw: Timestamp, tol: i64) {
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

/// A packet offered while the current point holds packets (`g`): one
/// more of them, or the end of the group. `lanes`: the point's offsets;
/// `lane`: the one that puts the packet on the clock, if any; `off`: how
/// far a time is off the clock.
pub(super) fn offer_held(
    g: &mut Group,
    lanes: &[i64],
    raw: Timestamp,
    lane: Option<usize>,
    tol: i64,
    now: Timestamp,
    off: impl Fn(Timestamp) -> i64,
) -> Offer {
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
        && g.members
            .iter()
            .any(|x| x.with.is_none() && !x.next && x.raw.add_micros(g.base).since(m) <= tol);
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
            let t = raw.add_micros(lanes[i]);
            End::Contrary(t.max(now).min(now.add_micros(tol)))
        }
        // The traffic went on from the clock (which stood still
        // while the packets were held): they were off it.
        None if to_clock <= to_group => End::Contrary(m.max(now)),
        None => End::Inconsistent,
    });
    Offer::ResolveFirst
}
