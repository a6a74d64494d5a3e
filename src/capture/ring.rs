//! A queue of frames from one capture thread to the engine's thread.
//!
//! Single producer, single consumer (`rtrb`), slots written and read where
//! they lie (as the shard rings do, [`crate::daemon::shard`]): a frame is
//! copied once, from the kernel ring into its slot, and the engine decodes
//! it there. Frames up to [`INLINE_FRAME`] bytes (a 30 ms G.711 RTP frame
//! over IPv6 under a VLAN tag is 318) travel inline; longer ones (SIP) are
//! boxed. A full queue drops the frame and counts it: a capture thread
//! never waits, or the kernel ring behind it would fill instead.

use super::{CaptureError, LinkType, Packet, PacketSource};
use crate::time::Timestamp;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Frame bytes that travel inside a slot.
pub const INLINE_FRAME: usize = 384;

struct Slot {
    ts: Timestamp,
    index: u64,
    orig_len: u32,
    len: u32,
    link: LinkType,
    large: Option<Box<[u8]>>,
    /// Only the first `len` bytes are written when `large` is `None`.
    data: [MaybeUninit<u8>; INLINE_FRAME],
}

impl Slot {
    fn packet(&self) -> Packet<'_> {
        let data = match &self.large {
            Some(b) => &b[..],
            // SAFETY: `FrameSender::push` initialised the first `len` bytes
            // of every inline slot it committed.
            None => unsafe {
                std::slice::from_raw_parts(self.data.as_ptr().cast::<u8>(), self.len as usize)
            },
        };
        Packet {
            index: self.index,
            ts: self.ts,
            link: self.link,
            data,
            orig_len: self.orig_len,
        }
    }
}

/// What a capture thread tells about one of its sockets: counters the
/// engine's thread reports (`status`, metrics), and whether it is lost.
#[derive(Debug, Default)]
pub struct QueueShared {
    /// Frames put in the queue.
    pub pushed: AtomicU64,
    /// Frames the queue had no room for.
    pub dropped: AtomicU64,
    /// The socket's kernel counters (libpcap's), including sockets lost
    /// before the current one; updated about once a second.
    pub pcap_dropped: AtomicU64,
    pub if_dropped: AtomicU64,
    pub truncated: AtomicU64,
    /// Since when, and why, the socket is lost (being reopened).
    pub lost: Mutex<Option<(Instant, String)>>,
    /// `lost` is set: read per frame by the engine's thread, which must
    /// not wait for a lost socket's frames.
    pub is_lost: AtomicBool,
    /// Every frame of the socket stamped at or before this (µs since the
    /// epoch) is in the queue, or was dropped: the engine's thread takes a
    /// frame from another queue only once every queue has it or passed it,
    /// so the order across queues is the capture's. Published with
    /// `Release` after the frames it covers.
    pub watermark: AtomicI64,
}

impl QueueShared {
    /// When and why the socket was lost, while it is.
    pub fn lost(&self) -> Option<(Instant, String)> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn set_lost(&self, v: Option<(Instant, String)>) {
        self.is_lost.store(v.is_some(), Ordering::Release);
        *self.lost.lock().unwrap_or_else(|e| e.into_inner()) = v;
    }
}

/// The capture thread's end.
pub struct FrameSender {
    tx: rtrb::Producer<Slot>,
    pub shared: Arc<QueueShared>,
}

/// The engine's end: read in place ([`FrameQueue::front`]) or, through
/// [`PacketSource`], one frame at a time.
pub struct FrameQueue {
    rx: rtrb::Consumer<Slot>,
    name: String,
    pub shared: Arc<QueueShared>,
    /// The frame [`PacketSource::next_packet`] handed out last.
    current: Option<Slot>,
}

/// A queue of `slots` frames for interface `name`.
pub fn frame_queue(name: &str, slots: usize) -> (FrameSender, FrameQueue) {
    let (tx, rx) = rtrb::RingBuffer::new(slots.max(2));
    let shared = Arc::new(QueueShared::default());
    (
        FrameSender {
            tx,
            shared: shared.clone(),
        },
        FrameQueue {
            rx,
            name: name.to_owned(),
            shared,
            current: None,
        },
    )
}

impl FrameSender {
    /// Copies `pkt` into the queue; `false` (and counted) when it is full.
    pub fn push(&mut self, pkt: &Packet<'_>) -> bool {
        let Ok(mut chunk) = self.tx.write_chunk_uninit(1) else {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let large = (pkt.data.len() > INLINE_FRAME).then(|| Box::<[u8]>::from(pkt.data));
        let inline = if large.is_none() { pkt.data.len() } else { 0 };
        let slot = chunk.as_mut_slices().0[0].as_mut_ptr();
        // SAFETY: `slot` points to one uninitialised slot of the chunk;
        // every field but the data bytes is written whole, and the frame's
        // first `inline` bytes (at most INLINE_FRAME) are copied in.
        unsafe {
            std::ptr::addr_of_mut!((*slot).ts).write(pkt.ts);
            std::ptr::addr_of_mut!((*slot).index).write(pkt.index);
            std::ptr::addr_of_mut!((*slot).orig_len).write(pkt.orig_len);
            std::ptr::addr_of_mut!((*slot).len).write(inline as u32);
            std::ptr::addr_of_mut!((*slot).link).write(pkt.link);
            std::ptr::addr_of_mut!((*slot).large).write(large);
            std::ptr::copy_nonoverlapping(
                pkt.data.as_ptr(),
                std::ptr::addr_of_mut!((*slot).data).cast::<u8>(),
                inline,
            );
            chunk.commit_all();
        }
        self.shared.pushed.fetch_add(1, Ordering::Relaxed);
        true
    }
}

impl FrameQueue {
    /// The capture time of the frame waiting first, if any.
    pub fn front_ts(&self) -> Option<Timestamp> {
        self.rx.peek().ok().map(|s| s.ts)
    }

    /// The capture time of the frame waiting first; when the queue is
    /// empty, its watermark (µs), or `None` when its socket is lost (it
    /// holds up no one).
    pub fn front_or_watermark(&self) -> Result<Timestamp, Option<i64>> {
        // The watermark first: the frames it covers are then visible.
        let wm = self.shared.watermark.load(Ordering::Acquire);
        match self.front_ts() {
            Some(ts) => Ok(ts),
            None if self.shared.is_lost.load(Ordering::Acquire) => Err(None),
            None => Err(Some(wm)),
        }
    }

    /// Hands the first waiting frame to `f` where it lies, then frees
    /// its slot; `None` when the queue is empty.
    pub fn front<R>(&mut self, f: impl FnOnce(&Packet<'_>) -> R) -> Option<R> {
        let chunk = self.rx.read_chunk(1).ok()?;
        let r = f(&chunk.as_slices().0[0].packet());
        chunk.commit_all();
        Some(r)
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

impl PacketSource for FrameQueue {
    fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        self.current = self.rx.pop().ok();
        Ok(self.current.as_ref().map(Slot::packet))
    }
    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(ts: i64, data: &[u8]) -> Packet<'_> {
        Packet {
            index: ts as u64,
            ts: Timestamp(ts),
            link: LinkType::Ethernet,
            data,
            orig_len: data.len() as u32,
        }
    }

    #[test]
    fn frames_come_out_whole_in_order_and_a_full_queue_counts_its_drops() {
        let (mut tx, mut rx) = frame_queue("eth1", 4);
        let big = vec![7u8; 1500];
        assert!(tx.push(&pkt(1, b"small")));
        assert!(tx.push(&pkt(2, &big)));
        assert!(tx.push(&pkt(3, b"")));
        assert!(tx.push(&pkt(4, b"four")));
        assert!(!tx.push(&pkt(5, b"no room")));
        assert_eq!(tx.shared.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(rx.front_ts(), Some(Timestamp(1)));
        let got = rx.front(|p| (p.ts, p.data.to_vec())).unwrap();
        assert_eq!(got, (Timestamp(1), b"small".to_vec()));
        let got = rx.front(|p| (p.data.len(), p.orig_len, p.index)).unwrap();
        assert_eq!(got, (1500, 1500, 2));
        let p = rx.next_packet().unwrap().unwrap();
        assert_eq!((p.ts, p.data.len()), (Timestamp(3), 0));
        assert_eq!(rx.next_packet().unwrap().unwrap().data, b"four");
        assert!(rx.next_packet().unwrap().is_none());
        assert!(rx.front(|_| ()).is_none());
        assert_eq!(tx.shared.pushed.load(Ordering::Relaxed), 4);
    }
}
