//! Early dialogs (an INVITE seen, no 2xx yet) by signalling source.
//!
//! An INVITE costs its sender one datagram and the tracker a dialog, so
//! unanswered INVITEs are bounded apart from answered calls: per source
//! address (`limits.early_dialogs_per_source`: an address over it is not
//! followed, and alarmed once) and in total (`limits.early_dialogs`: over
//! it, the oldest early dialog of the source holding the most is shed, so
//! that a flood from many addresses sheds its own dialogs before the few
//! of a real caller's). None of them holds recording capacity: the
//! congestion rule is applied at the answer.
//!
//! Per source, the dialogs are kept in INVITE order by (key, Call-ID);
//! entries of dialogs answered or ended meanwhile are dropped lazily,
//! and a queue is compacted when stale entries outnumber live ones.

use super::tracker::CallKey;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;

#[derive(Default)]
struct Source {
    live: usize,
    /// Early dialogs of this source in INVITE order; some may be stale.
    queue: VecDeque<(CallKey, String)>,
    /// The flood alarm was raised for this source (cleared when it has
    /// no early dialog left).
    alarmed: bool,
}

#[derive(Default)]
pub struct EarlyDialogs {
    sources: HashMap<IpAddr, Source>,
    /// (live early dialogs, source): the heaviest source is the last.
    by_load: BTreeSet<(usize, IpAddr)>,
    total: usize,
}

impl EarlyDialogs {
    /// Early dialogs from `ip`.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.sources.get(&ip).map_or(0, |s| s.live)
    }

    pub fn total(&self) -> usize {
        self.total
    }

    fn set_live(&mut self, ip: IpAddr, from: usize, to: usize) {
        if from > 0 {
            self.by_load.remove(&(from, ip));
        }
        if to > 0 {
            self.by_load.insert((to, ip));
        }
    }

    /// A new early dialog from `ip`. `live` says which queued entries
    /// are still early (for compaction).
    pub fn add(
        &mut self,
        ip: IpAddr,
        key: CallKey,
        call_id: &str,
        live: &dyn Fn(CallKey, &str) -> bool,
    ) {
        let s = self.sources.entry(ip).or_default();
        let before = s.live;
        s.live += 1;
        s.queue.push_back((key, call_id.to_owned()));
        if s.queue.len() > 2 * s.live + 16 {
            s.queue.retain(|(k, c)| live(*k, c));
            // The new entry is live by definition (its dialog is about to
            // be inserted by the caller, so `live` may not know it yet).
            if s.queue.back().is_none_or(|(k, _)| *k != key) {
                s.queue.push_back((key, call_id.to_owned()));
            }
        }
        let after = s.live;
        self.set_live(ip, before, after);
        self.total += 1;
    }

    /// One early dialog of `ip` was answered, ended or shed.
    pub fn remove(&mut self, ip: IpAddr) {
        let Some(s) = self.sources.get_mut(&ip) else {
            return;
        };
        let before = s.live;
        s.live = s.live.saturating_sub(1);
        let after = s.live;
        if after == 0 {
            self.sources.remove(&ip);
        }
        self.set_live(ip, before, after);
        self.total = self.total.saturating_sub(1);
    }

    /// The oldest still-early dialog of the source holding the most, to be
    /// shed (the caller ends it, which calls [`EarlyDialogs::remove`]).
    pub fn heaviest_oldest(
        &mut self,
        live: &dyn Fn(CallKey, &str) -> bool,
    ) -> Option<(CallKey, String)> {
        let &(_, ip) = self.by_load.last()?;
        let s = self.sources.get_mut(&ip)?;
        while let Some((k, c)) = s.queue.pop_front() {
            if live(k, &c) {
                return Some((k, c));
            }
        }
        None
    }

    /// Whether `ip` is alarmed; marks it alarmed.
    pub fn alarm_once(&mut self, ip: IpAddr) -> bool {
        match self.sources.get_mut(&ip) {
            Some(s) if !s.alarmed => {
                s.alarmed = true;
                true
            }
            _ => false,
        }
    }

    pub fn clear(&mut self) {
        self.sources.clear();
        self.by_load.clear();
        self.total = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heaviest_source_sheds_its_oldest_first() {
        let mut e = EarlyDialogs::default();
        let (a, b): (IpAddr, IpAddr) =
            ("192.0.2.1".parse().unwrap(), "198.18.0.1".parse().unwrap());
        let all = |_: CallKey, _: &str| true;
        e.add(a, 1, "a1", &all);
        for k in 2..6 {
            e.add(b, k, &format!("b{k}"), &all);
        }
        assert_eq!((e.count(a), e.count(b), e.total()), (1, 4, 5));
        assert_eq!(e.heaviest_oldest(&all), Some((2, "b2".into())));
        e.remove(b);
        // Entries no longer early are skipped.
        let not3 = |k: CallKey, _: &str| k != 3;
        assert_eq!(e.heaviest_oldest(&not3), Some((4, "b4".into())));
        e.remove(b);
        e.remove(b);
        assert_eq!((e.count(b), e.total()), (1, 2));
        assert!(e.alarm_once(b));
        assert!(!e.alarm_once(b));
        e.remove(b);
        assert_eq!(e.count(b), 0);
        assert!(
            !e.alarm_once(b),
            "a source with nothing early is not alarmed"
        );
    }

    #[test]
    fn stale_entries_are_compacted() {
        let mut e = EarlyDialogs::default();
        let ip: IpAddr = "198.18.0.1".parse().unwrap();
        for k in 0..1000 {
            e.add(ip, k, "x", &|kk, _| kk == k);
            e.remove(ip);
            e.add(ip, 10_000 + k, "y", &|kk, _| kk == 10_000 + k);
            e.remove(ip);
        }
        assert_eq!(e.total(), 0);
        assert!(e.sources.is_empty());
        e.add(ip, 1, "z", &|_, _| true);
        for k in 2..1000 {
            e.add(ip, k, "z", &|kk, _| kk == 1 || kk == k);
            // Only the first and the newest stay early.
            e.remove(ip);
        }
        assert!(
            e.sources[&ip].queue.len() <= 24,
            "{}",
            e.sources[&ip].queue.len()
        );
    }
}
