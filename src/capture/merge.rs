//! Several sources as one timeline: the earliest frame first.
//!
//! A call's SIP may travel on one interface (a signalling VLAN, a mirror
//! port) and its RTP on another; one engine sees both only if the frames
//! of every source reach it in time order. [`Heads`] keeps the next frame
//! of each source (a copy, since a source's frame is borrowed only until
//! its next read) and hands out the earliest, like `mergecap` does with
//! files: ties go to the source listed first, so a replay of the same
//! files gives the same order every time.
//!
//! Files: every source has a next frame until its end, so the merge is
//! exact. Live interfaces: a source with nothing in its ring now has no
//! head; the merge orders what has arrived, which is all anyone can do
//! without waiting (a frame still in flight on another interface comes
//! after). A single source never goes through here: it is read in place.

use super::{CaptureError, LinkType, Packet, PacketSource};
use crate::time::Timestamp;

/// One source's next frame, owned.
#[derive(Debug)]
struct Head {
    index: u64,
    ts: Timestamp,
    link: LinkType,
    data: Vec<u8>,
    orig_len: u32,
    /// A frame is waiting here (the buffer is kept between frames).
    full: bool,
}

impl Head {
    fn empty() -> Head {
        Head {
            index: 0,
            ts: Timestamp(0),
            link: LinkType::Ethernet,
            data: Vec::new(),
            orig_len: 0,
            full: false,
        }
    }
}

/// The next frame of each of N sources (numbered as the caller numbers
/// them), and which of them comes first.
#[derive(Debug)]
pub struct Heads {
    heads: Vec<Head>,
}

impl Heads {
    pub fn new(sources: usize) -> Heads {
        Heads {
            heads: (0..sources).map(|_| Head::empty()).collect(),
        }
    }

    /// Reads source `i`'s next frame into its head if the head is empty.
    /// `Ok(false)`: the source has nothing now (live) or ever again (a
    /// file at its end); an error is the source's, passed on.
    pub fn fill(&mut self, i: usize, src: &mut dyn PacketSource) -> Result<bool, CaptureError> {
        let h = &mut self.heads[i];
        if h.full {
            return Ok(true);
        }
        let Some(p) = src.next_packet()? else {
            return Ok(false);
        };
        h.index = p.index;
        h.ts = p.ts;
        h.link = p.link;
        h.orig_len = p.orig_len;
        h.data.clear();
        h.data.extend_from_slice(p.data);
        h.full = true;
        Ok(true)
    }

    /// The source whose waiting frame is the earliest (the lowest number
    /// among equal times), if any frame is waiting.
    pub fn earliest(&self) -> Option<usize> {
        let mut best: Option<(Timestamp, usize)> = None;
        for (i, h) in self.heads.iter().enumerate() {
            if h.full && best.is_none_or(|(ts, _)| h.ts < ts) {
                best = Some((h.ts, i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// Whether any frame is waiting.
    pub fn any(&self) -> bool {
        self.heads.iter().any(|h| h.full)
    }

    /// Source `i`'s waiting frame, which is then taken: the next
    /// [`Heads::fill`] of `i` reads a new one.
    pub fn take(&mut self, i: usize) -> Option<Packet<'_>> {
        let h = &mut self.heads[i];
        if !h.full {
            return None;
        }
        h.full = false;
        Some(Packet {
            index: h.index,
            ts: h.ts,
            link: h.link,
            data: &h.data,
            orig_len: h.orig_len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source of frames at the given times (µs); `None` = nothing now.
    struct Script {
        items: Vec<Option<i64>>,
        at: usize,
        buf: [u8; 8],
    }

    impl PacketSource for Script {
        fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
            let Some(item) = self.items.get(self.at).copied() else {
                return Ok(None);
            };
            self.at += 1;
            Ok(item.map(|t| {
                self.buf = t.to_le_bytes();
                Packet {
                    index: self.at as u64,
                    ts: Timestamp(t),
                    link: LinkType::RawIp,
                    data: &self.buf,
                    orig_len: 8,
                }
            }))
        }
        fn name(&self) -> &str {
            "script"
        }
    }

    fn script(items: &[Option<i64>]) -> Script {
        Script {
            items: items.to_vec(),
            at: 0,
            buf: [0; 8],
        }
    }

    /// Drains the sources through the heads: (source, time, payload time).
    fn drain(srcs: &mut [Script]) -> Vec<(usize, i64, i64)> {
        let mut heads = Heads::new(srcs.len());
        let mut out = Vec::new();
        loop {
            for (i, s) in srcs.iter_mut().enumerate() {
                heads.fill(i, s).unwrap();
            }
            let Some(i) = heads.earliest() else { break };
            let p = heads.take(i).unwrap();
            let carried = i64::from_le_bytes(p.data.try_into().unwrap());
            out.push((i, p.ts.0, carried));
        }
        out
    }

    #[test]
    fn frames_of_two_files_come_out_in_time_order_ties_to_the_first() {
        let mut srcs = [
            script(&[Some(1), Some(5), Some(5), Some(9)]),
            script(&[Some(2), Some(5), Some(7)]),
        ];
        let got = drain(&mut srcs);
        let order: Vec<(usize, i64)> = got.iter().map(|g| (g.0, g.1)).collect();
        assert_eq!(
            order,
            [(0, 1), (1, 2), (0, 5), (0, 5), (1, 5), (1, 7), (0, 9)]
        );
        // Each frame's bytes travel with it (the buffer is reused).
        assert!(got.iter().all(|g| g.1 == g.2));
    }

    #[test]
    fn files_that_do_not_overlap_keep_their_order() {
        let mut srcs = [script(&[Some(10), Some(11)]), script(&[Some(1), Some(2)])];
        let got: Vec<i64> = drain(&mut srcs).iter().map(|g| g.1).collect();
        assert_eq!(got, [1, 2, 10, 11]);
    }

    #[test]
    fn a_live_source_with_nothing_now_does_not_hold_the_others_up() {
        // Source 1 has nothing at first, then a frame older than source
        // 0's second: what has arrived is handed out, nothing waits.
        let mut srcs = [script(&[Some(3), Some(8)]), script(&[None, Some(4)])];
        let mut heads = Heads::new(2);
        let mut out = Vec::new();
        for _ in 0..3 {
            for (i, s) in srcs.iter_mut().enumerate() {
                heads.fill(i, s).unwrap();
            }
            let i = heads.earliest().unwrap();
            out.push(heads.take(i).unwrap().ts.0);
        }
        assert_eq!(out, [3, 4, 8]);
        assert!(!heads.any());
    }
}
