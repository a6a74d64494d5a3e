//! IPv4 and IPv6 fragment reassembly with a memory bound and a timeout.
//!
//! Each fragment set is rebuilt in etherparse's [`IpDefragBuf`] (it merges
//! ranges and copes with overlaps: later bytes win). etherparse's own
//! `IpDefragPool` has no memory bound and wants a whole `SlicedPacket`, so
//! the pool around the buffers is ours: it counts the bytes all sets hold,
//! evicts the oldest set when a new fragment would pass
//! `Limits.fragment_bytes`, and drops sets older than
//! `Limits.fragment_timeout` in packet time.

use super::DecodeStats;
use crate::time::Timestamp;
use etherparse::defrag::IpDefragBuf;
use etherparse::{IpFragOffset, IpNumber};
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// Identifies one fragmented datagram (RFC 791 / RFC 8200).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub id: u32,
    pub proto: u8,
}

struct FragSet {
    buf: IpDefragBuf,
    first_seen: Timestamp,
    generation: u64,
    /// Bytes counted against the pool for this set (its buffer length).
    bytes: usize,
}

pub struct FragPool {
    sets: HashMap<FragKey, FragSet>,
    /// Sets in order of creation, for eviction; stale entries (whose
    /// generation no longer matches) are skipped lazily.
    order: VecDeque<(FragKey, u64)>,
    next_generation: u64,
    bytes: usize,
    max_bytes: usize,
    timeout_us: i64,
}

impl FragPool {
    pub fn new(max_bytes: usize, timeout: std::time::Duration) -> Self {
        FragPool {
            sets: HashMap::new(),
            order: VecDeque::new(),
            next_generation: 0,
            bytes: 0,
            max_bytes,
            timeout_us: timeout.as_micros().min(i64::MAX as u128) as i64,
        }
    }

    /// Bytes currently held by incomplete sets.
    pub fn bytes_held(&self) -> usize {
        self.bytes
    }

    pub fn sets_held(&self) -> usize {
        self.sets.len()
    }

    /// Adds one fragment; returns the whole payload when this fragment
    /// completes its datagram.
    pub fn add(
        &mut self,
        key: FragKey,
        offset: IpFragOffset,
        more: bool,
        payload: &[u8],
        now: Timestamp,
        stats: &mut DecodeStats,
    ) -> Option<Vec<u8>> {
        stats.fragments += 1;
        let start = offset.byte_offset() as usize;
        let end = start + payload.len();
        if end > u16::MAX as usize {
            stats.fragments_dropped += 1;
            stats.malformed += 1;
            self.remove(&key);
            return None;
        }
        let mut set = match self.sets.remove(&key) {
            Some(set) if now.since(set.first_seen) > self.timeout_us => {
                // A datagram id reused after the old set timed out.
                self.bytes -= set.bytes;
                stats.fragments_dropped += 1;
                self.new_set(key, now)
            }
            Some(set) => {
                self.bytes -= set.bytes;
                set
            }
            None => self.new_set(key, now),
        };
        // The set is out of the map and its bytes out of the count: make
        // room for what it will hold after this fragment.
        let needed = set.buf.data().len().max(end);
        if needed > self.max_bytes {
            stats.fragments_dropped += 1;
            return None;
        }
        while self.bytes + needed > self.max_bytes {
            if !self.evict_oldest(stats) {
                break;
            }
        }
        if set
            .buf
            .sections()
            .iter()
            .any(|r| (r.start as usize) < end && start < r.end as usize)
        {
            stats.fragment_overlaps += 1;
        }
        if set.buf.add(offset, more, payload).is_err() {
            // Unaligned piece or conflicting ends: the datagram cannot be
            // rebuilt faithfully.
            stats.fragments_dropped += 1;
            stats.malformed += 1;
            return None;
        }
        if set.buf.is_complete() {
            stats.reassembled += 1;
            let (data, _) = set.buf.take_bufs();
            return Some(data);
        }
        set.bytes = set.buf.data().len();
        self.bytes += set.bytes;
        self.sets.insert(key, set);
        None
    }

    fn new_set(&mut self, key: FragKey, now: Timestamp) -> FragSet {
        let generation = self.next_generation;
        self.next_generation += 1;
        self.order.push_back((key, generation));
        if self.order.len() > 2 * self.sets.len() + 64 {
            // Drop stale order entries so the queue stays proportional.
            let sets = &self.sets;
            self.order.retain(|(k, g)| {
                (k == &key && *g == generation) || sets.get(k).is_some_and(|s| s.generation == *g)
            });
        }
        FragSet {
            buf: IpDefragBuf::new(IpNumber(key.proto), Vec::new(), Vec::new()),
            first_seen: now,
            generation,
            bytes: 0,
        }
    }

    fn remove(&mut self, key: &FragKey) {
        if let Some(set) = self.sets.remove(key) {
            self.bytes -= set.bytes;
        }
    }

    fn evict_oldest(&mut self, stats: &mut DecodeStats) -> bool {
        while let Some((key, generation)) = self.order.pop_front() {
            if self
                .sets
                .get(&key)
                .is_some_and(|s| s.generation == generation)
            {
                self.remove(&key);
                stats.fragments_dropped += 1;
                return true;
            }
        }
        false
    }

    /// Drops sets whose first fragment is older than the timeout.
    pub fn expire(&mut self, now: Timestamp, stats: &mut DecodeStats) {
        let timeout = self.timeout_us;
        let mut freed = 0;
        self.sets.retain(|_, s| {
            let keep = now.since(s.first_seen) <= timeout;
            if !keep {
                freed += s.bytes;
                stats.fragments_dropped += 1;
            }
            keep
        });
        self.bytes -= freed;
        let sets = &self.sets;
        self.order
            .retain(|(k, g)| sets.get(k).is_some_and(|s| s.generation == *g));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(id: u32) -> FragKey {
        FragKey {
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            id,
            proto: 17,
        }
    }
    fn off(bytes: u16) -> IpFragOffset {
        IpFragOffset::try_new(bytes / 8).unwrap()
    }

    #[test]
    fn reassembles_out_of_order_with_overlap() {
        let mut p = FragPool::new(1 << 20, Duration::from_secs(30));
        let mut st = DecodeStats::default();
        let data: Vec<u8> = (0..40u8).collect();
        assert!(
            p.add(key(1), off(16), true, &data[16..32], Timestamp(0), &mut st)
                .is_none()
        );
        // Duplicate of the same piece: overlap counted, no harm done.
        assert!(
            p.add(key(1), off(16), true, &data[16..32], Timestamp(1), &mut st)
                .is_none()
        );
        assert!(
            p.add(key(1), off(32), false, &data[32..], Timestamp(2), &mut st)
                .is_none()
        );
        let whole = p
            .add(key(1), off(0), true, &data[..24], Timestamp(3), &mut st)
            .unwrap();
        assert_eq!(whole, data);
        assert_eq!(st.fragment_overlaps, 2);
        assert_eq!(st.reassembled, 1);
        assert_eq!(p.bytes_held(), 0);
    }

    #[test]
    fn bound_evicts_oldest_and_timeout_drops() {
        let mut p = FragPool::new(1000, Duration::from_secs(30));
        let mut st = DecodeStats::default();
        for id in 0..100 {
            p.add(key(id), off(0), true, &[0u8; 400], Timestamp(0), &mut st);
            assert!(p.bytes_held() <= 1000);
        }
        assert_eq!(p.sets_held(), 2);
        assert_eq!(st.fragments_dropped, 98);
        p.expire(Timestamp(31_000_000), &mut st);
        assert_eq!(p.sets_held(), 0);
        assert_eq!(p.bytes_held(), 0);
        assert_eq!(st.fragments_dropped, 100);
    }
}
