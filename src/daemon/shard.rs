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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// RTP packets up to this size travel inline in the ring slot (a 30 ms
/// G.711 packet is 252 bytes); larger ones are boxed.
pub const INLINE: usize = 256;

/// Which party's voice a packet carries.
pub use crate::recording::recorder::Leg;

// Small RTP travels inline on purpose: no allocation per packet on the
// capture thread; the ring's slots are sized for it.
#[allow(clippy::large_enum_variant)]
pub enum ShardMsg<C> {
    Rtp {
        key: CallKey,
        leg: Leg,
        ts: Timestamp,
        len: u16,
        data: [u8; INLINE],
    },
    RtpLarge {
        key: CallKey,
        leg: Leg,
        ts: Timestamp,
        data: Box<[u8]>,
    },
    Ctl(Box<C>),
}

impl<C> ShardMsg<C> {
    pub fn rtp(key: CallKey, leg: Leg, ts: Timestamp, payload: &[u8]) -> Self {
        if payload.len() <= INLINE {
            let mut data = [0u8; INLINE];
            data[..payload.len()].copy_from_slice(payload);
            ShardMsg::Rtp {
                key,
                leg,
                ts,
                len: payload.len() as u16,
                data,
            }
        } else {
            ShardMsg::RtpLarge {
                key,
                leg,
                ts,
                data: payload.into(),
            }
        }
    }
}

/// What a shard does with its messages.
pub trait ShardHandler: Send + 'static {
    type Ctl: Send + 'static;
    fn on_rtp(&mut self, key: CallKey, leg: Leg, ts: Timestamp, rtp: &[u8]);
    fn on_ctl(&mut self, ctl: Self::Ctl);
    /// The producer is gone: finish everything still open.
    fn shutdown(&mut self);
}

/// Counters a shard shares with the rest of the process (metrics, status).
#[derive(Default)]
pub struct ShardCounters {
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
        if self.waiting.load(Ordering::Acquire) && self.waiting.swap(false, Ordering::AcqRel) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }
}

/// The producer side, held by the capture thread.
pub struct ShardSender<C> {
    tx: rtrb::Producer<ShardMsg<C>>,
    /// Replay must lose nothing, so it waits for room; live capture must
    /// never stall the capture thread, so it drops and counts instead.
    block_when_full: bool,
    counters: Arc<ShardCounters>,
    worker: std::thread::Thread,
    wait: Arc<ProducerWait>,
    /// Messages pushed into the ring.
    sent: u64,
}

impl<C: Send + 'static> ShardSender<C> {
    pub fn send(&mut self, msg: ShardMsg<C>) {
        let mut msg = msg;
        loop {
            match self.tx.push(msg) {
                Ok(()) => {
                    self.sent += 1;
                    if self.tx.slots() < self.tx.buffer().capacity() / 2 {
                        self.worker.unpark();
                    }
                    return;
                }
                Err(rtrb::PushError::Full(m)) => {
                    // Control messages are never dropped: a lost "end" would
                    // leave a recording open forever.
                    if !self.block_when_full && !matches!(m, ShardMsg::Ctl(_)) {
                        self.counters.ring_drops.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    msg = m;
                    self.worker.unpark();
                    self.wait.thread.get_or_init(std::thread::current);
                    self.wait.waiting.store(true, Ordering::Release);
                    // Re-check after announcing: the worker may have made
                    // room in between (its wake then leaves a token, so the
                    // park below returns at once). The timeout is a guard,
                    // not the mechanism.
                    if !self.tx.is_full() {
                        self.wait.waiting.store(false, Ordering::Release);
                        continue;
                    }
                    std::thread::park_timeout(Duration::from_millis(5));
                }
            }
        }
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
            let (tx, mut rx) = rtrb::RingBuffer::<ShardMsg<C>>::new(slots);
            let counters = Arc::new(ShardCounters::default());
            let wait = Arc::new(ProducerWait::default());
            let wait2 = wait.clone();
            let mut handler = make(i);
            let done2 = done.clone();
            let counters2 = counters.clone();
            let join = std::thread::Builder::new()
                .name(format!("callrec-shard{i}"))
                .spawn(move || {
                    let mut handled = 0u64;
                    loop {
                        let mut worked = false;
                        let mut batch = 0u32;
                        while let Ok(msg) = rx.pop() {
                            worked = true;
                            batch += 1;
                            if batch % 256 == 0 {
                                wait2.wake();
                            }
                            handled += 1;
                            match msg {
                                ShardMsg::Rtp {
                                    key,
                                    leg,
                                    ts,
                                    len,
                                    data,
                                } => {
                                    counters2.packets.fetch_add(1, Ordering::Relaxed);
                                    handler.on_rtp(key, leg, ts, &data[..len as usize]);
                                }
                                ShardMsg::RtpLarge { key, leg, ts, data } => {
                                    counters2.packets.fetch_add(1, Ordering::Relaxed);
                                    handler.on_rtp(key, leg, ts, &data);
                                }
                                ShardMsg::Ctl(c) => handler.on_ctl(*c),
                            }
                        }
                        wait2.wake();
                        if worked {
                            counters2.handled.store(handled, Ordering::Release);
                        } else {
                            if done2.load(Ordering::Acquire) && rx.is_empty() {
                                break;
                            }
                            std::thread::park_timeout(Duration::from_millis(2));
                        }
                    }
                    handler.shutdown();
                })?;
            senders.push(ShardSender {
                tx,
                block_when_full,
                counters,
                worker: join.thread().clone(),
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
