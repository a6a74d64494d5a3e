//! Resolving held packets: what the clock makes of a point's held group
//! (outliers, a step, a gap) and of the first packets at the start.
//! Apart from the offer path, which only decides what to hold.

use super::{CaptureClock, End, Group, Kind, MAX_LANES, MIN_STEP_US, Resolution};
use crate::time::Timestamp;

fn median(v: &[i64]) -> Option<i64> {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

impl CaptureClock {
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
        let rest = g.take_split();
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
