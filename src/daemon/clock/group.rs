//! A capture point's held packets: the group the clock keeps while the
//! traffic has not yet said what they were, with how it tells a quiet
//! stretch from outliers inside it. Apart from the clock so the clock's
//! offer and resolution read as steps over a group.

use super::GROUP;
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
pub(super) const MAX_HELD: usize = 4 * GROUP;

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
