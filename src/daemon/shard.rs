//! Shard workers: the media half of the pipeline.
//!
//! The capture thread owns signalling and the map from media address to
//! call; it hands every RTP packet of a recorded call, and the call's
//! control messages, to the call's shard over a single-producer,
//! single-consumer ring (`rtrb`). A call lives on one shard for its whole
//! life, so workers share nothing and take no locks, and because control
//! and media travel in one ring their order is the order of the capture.

use crate::calls::tracker::CallKey;
use crate::time::Timestamp;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// RTP packets up to this size travel inline in the ring slot (a 30 ms
/// G.711 packet is 252 bytes); larger ones are boxed.
pub const INLINE: usize = 256;

/// Which party's voice a packet carries.
pub use crate::recording::recorder::Leg;

/// One ring slot. Slots are written and read where they lie in the ring:
/// a packet is copied once, from the capture buffer into its slot, and the
/// worker reads it there. (Moving a 300-byte message in and out of the ring
/// by value, as `push` and `pop` do, cost three copies of the whole slot per
/// packet: a sixth of the capture thread's time in the pipeline benchmark.)
struct Slot<C> {
    key: CallKey,
    ts: Timestamp,
    leg: Leg,
    len: u16,
    /// Control message, or an RTP packet too large to travel inline.
    ctl: Option<Box<C>>,
    large: Option<Box<[u8]>>,
    /// Only the first `len` bytes are written, so the rest stays uninit.
    data: [MaybeUninit<u8>; INLINE],
}

/// What a worker finds in a slot.
enum Msg<'a, C> {
    Rtp {
        key: CallKey,
        leg: Leg,
        ts: Timestamp,
        data: &'a [u8],
    },
    Ctl(Box<C>),
}

impl<C> Slot<C> {
    /// Reads the slot, taking the control message out of it.
    fn take(&mut self) -> Msg<'_, C> {
        if let Some(c) = self.ctl.take() {
            return Msg::Ctl(c);
        }
        let data = match &self.large {
            Some(b) => &b[..],
            // SAFETY: `ShardSender::write` initialised the first `len`
            // bytes of every inline slot it committed.
            None => unsafe {
                std::slice::from_raw_parts(self.data.as_ptr().cast::<u8>(), self.len as usize)
            },
        };
        Msg::Rtp {
            key: self.key,
            leg: self.leg,
            ts: self.ts,
            data,
        }
    }
}

/// What a shard does with its messages.
pub trait ShardHandler: Send + 'static {
    type Ctl: Send + 'static;
    fn on_rtp(&mut self, key: CallKey, leg: Leg, ts: Timestamp, rtp: &[u8]);
    fn on_ctl(&mut self, ctl: Self::Ctl);
    /// Hints for a packet [`PREFETCH_FAR`] places ahead: the call's state.
    fn prefetch_state(&mut self, _key: CallKey) {}
    /// Hints for a packet [`PREFETCH_NEAR`] places ahead, whose state the
    /// first hint brought in: the memory its handling will touch.
    fn prefetch_data(&mut self, _key: CallKey, _leg: Leg, _ts: Timestamp) {}
    /// The producer is gone: finish everything still open.
    fn shutdown(&mut self);
}

/// Counters a shard shares with the rest of the process (metrics, status).
#[derive(Default)]
pub struct ShardCounters {
    /// RTP packets handled, published each time the worker's batch ends.
    pub packets: AtomicU64,
    /// Packets dropped because the ring was full (live capture only).
    pub ring_drops: AtomicU64,
    /// Messages handled to the end, updated each time the ring runs empty.
    pub handled: AtomicU64,
}

/// How a producer blocked on a full ring gets woken. Replay only: live
/// capture never waits. Spinning (`yield_now`) here used to cost a fifth
/// of all CPU time in the whole-pipeline benchmark, so the producer parks
/// and the worker wakes it once it has made room.
#[derive(Default)]
struct ProducerWait {
    waiting: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
}

impl ProducerWait {
    /// Called by the worker after it freed slots.
    fn wake(&self) {
        if self.waiting.load(Ordering::Acquire)
            && self.waiting.swap(false, Ordering::AcqRel)
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
    }
}

/// Messages pushed between two looks at whether the worker sleeps. The
/// look reads a line the worker writes, so it is not done per packet; a
/// sleeping worker also wakes on its own every [`WORKER_NAP`].
const WAKE_EVERY: u64 = 512;
const WORKER_NAP: Duration = Duration::from_millis(2);
/// Slots a worker reads before handing them back to the producer.
const BATCH: usize = 256;
/// How far ahead in its batch a worker asks for a packet's call state, and
/// then for the memory that state points to (see [`crate::prefetch`]).
pub const PREFETCH_FAR: usize = 12;
pub const PREFETCH_NEAR: usize = 6;
const PREFETCH_SLOT: usize = 24;

/// Element `i` of a ring chunk, which is two slices when it wraps.
fn nth<'s, T>(a: &'s [T], b: &'s [T], i: usize) -> Option<&'s T> {
    if i < a.len() {
        a.get(i)
    } else {
        b.get(i - a.len())
    }
}

/// The producer side, held by the capture thread.
pub struct ShardSender<C> {
    tx: rtrb::Producer<Slot<C>>,
    /// Replay must lose nothing, so it waits for room; live capture must
    /// never stall the capture thread, so it drops and counts instead.
    block_when_full: bool,
    counters: Arc<ShardCounters>,
    worker: std::thread::Thread,
    /// Set by the worker before it parks on an empty ring.
    worker_sleeps: Arc<AtomicBool>,
    wait: Arc<ProducerWait>,
    /// Messages pushed into the ring.
    sent: u64,
}

impl<C: Send + 'static> ShardSender<C> {
    /// Hands one RTP packet to the worker (copied into its slot).
    pub fn send_rtp(&mut self, key: CallKey, leg: Leg, ts: Timestamp, payload: &[u8]) {
        let large = (payload.len() > INLINE).then(|| Box::<[u8]>::from(payload));
        self.write(key, leg, ts, payload, None, large);
    }

    /// Hands a control message to the worker, in order with the packets.
    /// Never dropped: a lost "end" would leave a recording open forever.
    pub fn send_ctl(&mut self, ctl: C) {
        self.write(
            0,
            Leg::Subscriber,
            Timestamp::ZERO,
            &[],
            Some(Box::new(ctl)),
            None,
        );
    }

    fn write(
        &mut self,
        key: CallKey,
        leg: Leg,
        ts: Timestamp,
        payload: &[u8],
        ctl: Option<Box<C>>,
        large: Option<Box<[u8]>>,
    ) {
        let is_ctl = ctl.is_some();
        let mut chunk = loop {
            match self.tx.write_chunk_uninit(1) {
                Ok(c) => break c,
                Err(_) => {
                    if !self.block_when_full && !is_ctl {
                        self.counters.ring_drops.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    self.wait_for_room();
                }
            }
        };
        let slot = chunk.as_mut_slices().0[0].as_mut_ptr();
        let inline = if large.is_none() { payload.len() } else { 0 };
        // SAFETY: `slot` points to one uninitialised slot of the chunk;
        // every field but the payload bytes is written whole, and the
        // payload's first `inline` bytes (at most INLINE) are copied in.
        unsafe {
            std::ptr::addr_of_mut!((*slot).key).write(key);
            std::ptr::addr_of_mut!((*slot).ts).write(ts);
            std::ptr::addr_of_mut!((*slot).leg).write(leg);
            std::ptr::addr_of_mut!((*slot).len).write(inline as u16);
            std::ptr::addr_of_mut!((*slot).ctl).write(ctl);
            std::ptr::addr_of_mut!((*slot).large).write(large);
            std::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                std::ptr::addr_of_mut!((*slot).data).cast::<u8>(),
                inline,
            );
            chunk.commit_all();
        }
        self.sent += 1;
        if is_ctl || self.sent.is_multiple_of(WAKE_EVERY) {
            self.wake_worker();
        }
    }

    fn wake_worker(&self) {
        if self.worker_sleeps.load(Ordering::Relaxed) {
            self.worker.unpark();
        }
    }

    fn wait_for_room(&mut self) {
        self.worker.unpark();
        self.wait.thread.get_or_init(std::thread::current);
        self.wait.waiting.store(true, Ordering::Release);
        // Re-check after announcing: the worker may have made room in
        // between (its wake then leaves a token, so the park below returns
        // at once). The timeout is a guard, not the mechanism.
        if !self.tx.is_full() {
            self.wait.waiting.store(false, Ordering::Release);
            return;
        }
        std::thread::park_timeout(Duration::from_millis(5));
    }

    pub fn counters(&self) -> &Arc<ShardCounters> {
        &self.counters
    }
}

pub struct ShardPool<C> {
    pub senders: Vec<ShardSender<C>>,
    joins: Vec<std::thread::JoinHandle<()>>,
    done: Arc<AtomicBool>,
}

impl<C: Send + 'static> ShardPool<C> {
    /// Starts `n` workers, each with its own handler and a ring of `slots`.
    pub fn start<H, F>(
        n: usize,
        slots: usize,
        block_when_full: bool,
        mut make: F,
    ) -> std::io::Result<ShardPool<C>>
    where
        H: ShardHandler<Ctl = C>,
        F: FnMut(usize) -> H,
    {
        let done = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        let mut joins = Vec::new();
        for i in 0..n.max(1) {
            let (tx, mut rx) = rtrb::RingBuffer::<Slot<C>>::new(slots);
            let counters = Arc::new(ShardCounters::default());
            let wait = Arc::new(ProducerWait::default());
            let wait2 = wait.clone();
            let sleeps = Arc::new(AtomicBool::new(false));
            let sleeps2 = sleeps.clone();
            let mut handler = make(i);
            let done2 = done.clone();
            let counters2 = counters.clone();
            let join = std::thread::Builder::new()
                .name(format!("callrec-shard{i}"))
                .spawn(move || {
                    let (mut handled, mut packets) = (0u64, 0u64);
                    let half = rx.buffer().capacity() / 2;
                    loop {
                        let n = rx.slots().min(BATCH);
                        if n > 0 {
                            let Ok(mut chunk) = rx.read_chunk(n) else {
                                continue;
                            };
                            let (a, b) = chunk.as_mut_slices();
                            let (la, lb) = (a.len(), b.len());
                            let peek = |a: &[Slot<C>], b: &[Slot<C>], i: usize| {
                                let s = nth(a, b, i)?;
                                s.ctl.is_none().then_some((s.key, s.leg, s.ts))
                            };
                            for i in 0..PREFETCH_FAR.min(la + lb) {
                                if let Some((key, _, _)) = peek(a, b, i) {
                                    handler.prefetch_state(key);
                                }
                            }
                            for i in 0..la + lb {
                                if let Some(s) = nth(a, b, i + PREFETCH_SLOT) {
                                    crate::prefetch::range(
                                        s as *const Slot<C>,
                                        std::mem::size_of::<Slot<C>>(),
                                    );
                                }
                                if let Some((key, _, _)) = peek(a, b, i + PREFETCH_FAR) {
                                    handler.prefetch_state(key);
                                }
                                if let Some((key, leg, ts)) = peek(a, b, i + PREFETCH_NEAR) {
                                    handler.prefetch_data(key, leg, ts);
                                }
                                let slot = if i < la { &mut a[i] } else { &mut b[i - la] };
                                match slot.take() {
                                    Msg::Rtp { key, leg, ts, data } => {
                                        packets += 1;
                                        handler.on_rtp(key, leg, ts, data);
                                    }
                                    Msg::Ctl(c) => handler.on_ctl(*c),
                                }
                            }
                            chunk.commit_all();
                            handled += n as u64;
                            counters2.packets.store(packets, Ordering::Relaxed);
                            counters2.handled.store(handled, Ordering::Release);
                            // A blocked producer is woken once half the ring
                            // is free, not after every batch: each wake is a
                            // futex call and two context switches, and waking
                            // per batch did one every 256 packets.
                            if rx.slots() <= half {
                                wait2.wake();
                            }
                            continue;
                        }
                        if done2.load(Ordering::Acquire) && rx.is_empty() {
                            break;
                        }
                        sleeps2.store(true, Ordering::Relaxed);
                        if rx.is_empty() {
                            std::thread::park_timeout(WORKER_NAP);
                        }
                        sleeps2.store(false, Ordering::Relaxed);
                    }
                    handler.shutdown();
                })?;
            senders.push(ShardSender {
                tx,
                block_when_full,
                counters,
                worker: join.thread().clone(),
                worker_sleeps: sleeps,
                wait,
                sent: 0,
            });
            joins.push(join);
        }
        Ok(ShardPool {
            senders,
            joins,
            done,
        })
    }

    pub fn len(&self) -> usize {
        self.senders.len()
    }
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Waits until every worker has handled everything sent so far (a
    /// replay uses this to take decisions that depend on the workers'
    /// output, such as the spool's size, at the same point every time).
    pub fn sync(&self) {
        for (s, j) in self.senders.iter().zip(&self.joins) {
            // A worker that died will never catch up.
            while s.counters.handled.load(Ordering::Acquire) < s.sent && !j.is_finished() {
                s.worker.unpark();
                std::thread::park_timeout(std::time::Duration::from_micros(200));
            }
        }
    }

    /// Lets every worker drain its ring and finish, then waits for them.
    pub fn join(self) {
        self.done.store(true, Ordering::Release);
        for s in &self.senders {
            s.worker.unpark();
        }
        for j in self.joins {
            let _ = j.join();
        }
    }
}
