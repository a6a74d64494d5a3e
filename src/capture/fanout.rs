//! Several capture threads per interface: one `PACKET_FANOUT` group each.
//!
//! With `capture.threads` = K above one, every interface is opened K
//! times and the K sockets join one fanout group (packet(7)), so the
//! kernel spreads the interface's frames over K capture threads. Each
//! thread reads its sockets (libpcap, the same options as a single
//! socket) and copies each frame into a queue per socket
//! ([`super::ring`]) that the engine's thread merges by time with the
//! others, as it merges interfaces ([`super::merge`]): the signalling view
//! stays one, and what the kernel ring, libpcap and the wait for frames
//! cost is spread over K threads.
//!
//! The group's mode is `PACKET_FANOUT_HASH` with
//! `PACKET_FANOUT_FLAG_DEFRAG`: the kernel reassembles IP fragments
//! before it hashes, and its flow hash is symmetric, so each RTP stream
//! (and SIP over TCP) stays on one thread, in order. The group's id is
//! picked by the kernel for the first socket (`PACKET_FANOUT_FLAG_UNIQUEID`),
//! so no other process can share it by accident: a second
//! callrec on the same interface gets a group of its own and sees every
//! frame too.
//!
//! A socket joins the group after libpcap opened it, so for a moment it
//! receives every frame, as the group's members do: a socket that joins a
//! group that already has members skips frames stamped before its join.

use super::live::{REOPEN_FIRST, REOPEN_MAX};
use super::ring::{FrameQueue, FrameSender, frame_queue};
use super::{CaptureError, LiveOptions, LiveSource, LiveStats, PacketSource, Waker};
use crate::time::Timestamp;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// `PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG`, the group's type and
/// flags as `setsockopt` takes them (above the 16-bit group id).
const MODE: u32 = libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_DEFRAG;

/// Joins the `AF_PACKET` socket `fd` to fanout group `id`, or to a new
/// group whose id the kernel picks (`None`); returns the group's id.
/// Errors: the kernel's (`EINVAL` for a group of another mode, or on a
/// kernel without fanout).
pub fn join(fd: RawFd, id: Option<u16>) -> std::io::Result<u16> {
    let arg: u32 = match id {
        Some(id) => u32::from(id) | (MODE << 16),
        None => (MODE | libc::PACKET_FANOUT_FLAG_UNIQUEID) << 16,
    };
    // SAFETY: passes a live u32 of the size given; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            (&arg as *const u32).cast(),
            4,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut val: u32 = 0;
    let mut len: libc::socklen_t = 4;
    // SAFETY: the kernel writes at most `len` (4) bytes into `val`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            (&mut val as *mut u32).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((val & 0xffff) as u16)
}

/// One interface's fanout group, shared by its capture threads: its id
/// while it has members.
#[derive(Debug, Default)]
pub struct Group {
    state: Mutex<(Option<u16>, usize)>,
}

impl Group {
    /// Opens `interface` as `o` says and joins the group. With it comes the
    /// time before which its frames are another member's (`None` for the
    /// group's first member, which saw them alone).
    pub fn open(
        &self,
        interface: &str,
        o: &LiveOptions,
    ) -> Result<(LiveSource, Option<Timestamp>), CaptureError> {
        let src = LiveSource::open_with(interface, o)?;
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let id = if st.1 == 0 { None } else { st.0 };
        let got = join(src.raw_fd(), id).map_err(|e| CaptureError::Open {
            source_name: interface.to_owned(),
            reason: format!("cannot join the PACKET_FANOUT group of capture.threads: {e}"),
        })?;
        st.0 = Some(got);
        st.1 += 1;
        let skip_before = (id.is_some()).then(wall_now);
        Ok((src, skip_before))
    }

    /// A member's socket was closed.
    pub fn leave(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.1 = st.1.saturating_sub(1);
    }

    /// The group's id, once a member joined.
    pub fn id(&self) -> Option<u16> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).0
    }
}

fn wall_now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(d.as_micros() as i64)
}

/// How the engine's thread is woken when frames wait for it: it raises
/// `sleeps` before it waits (and looks at its queues once more), a
/// capture thread that queued frames wakes it only then, and not when
/// `naps` says it wakes on its own within [`NAP`] anyway.
#[derive(Debug)]
pub struct EngineWake {
    pub sleeps: AtomicBool,
    pub naps: AtomicBool,
    /// It holds a frame until another queue's watermark passes it: a
    /// capture thread that moved its watermark wakes it.
    pub waits: AtomicBool,
    pub waker: Arc<Waker>,
}

/// How long the engine's thread sleeps while frames flow (it had some in
/// the last [`BUSY`]), so that the capture threads need not wake it. A
/// wake per frame (immediate mode hands frames over one by one) cost the
/// engine's thread an eventfd read and a poll per frame: 2,461 ns a packet
/// at 100,000 packets/s with two threads (`scripts/bench-live.sh`). On a
/// quiet link the first frame wakes it at once.
pub const NAP: Duration = Duration::from_micros(200);
pub const BUSY: Duration = Duration::from_millis(10);

impl EngineWake {
    /// A capture thread queued frames: wakes the engine's thread if it
    /// sleeps for long.
    fn queued(&self) {
        // The queue's store must be visible before the flags are read:
        // the engine's thread raises them, then looks at the queues.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeps.load(Ordering::SeqCst) && !self.naps.load(Ordering::SeqCst) {
            self.waker.wake();
        }
    }
}

/// Frames read in one go from one socket before the thread looks at the
/// others, its stop flag and its counters.
const BATCH: usize = 1024;
/// How long a frame stamped by the kernel may take to show in the ring
/// (immediate mode; the stamp and the copy into the ring are one softirq,
/// a backlog queue under load can part them): the watermark stays this
/// far behind the wall clock.
const SHOW_US: i64 = 200;
/// While frames flow, how often a capture thread with nothing to read
/// moves its watermark on anyway: the engine's thread waits for it to
/// take other threads' frames in order.
pub const IDLE_LOOK: Duration = Duration::from_millis(1);
/// The longest a capture thread waits before it looks at its stop flag.
const TICK: Duration = Duration::from_millis(50);

enum State {
    Open {
        src: LiveSource,
        skip_before: Option<Timestamp>,
    },
    Lost {
        next: Instant,
        backoff: Duration,
    },
}

/// One of a capture thread's sockets: an interface, its group, its queue.
pub struct Socket {
    name: String,
    /// The capture thread's number (in logs: each thread's socket of an
    /// interface fails and comes back on its own).
    thread: usize,
    /// How long after its stamp a frame may still be on its way into the
    /// ring (µs): [`SHOW_US`], and in block mode the block timeout.
    margin_us: i64,
    /// The queue's watermark as last published.
    watermark: i64,
    group: Arc<Group>,
    state: State,
    tx: FrameSender,
    /// Kernel counters of sockets lost before the current one.
    carried: LiveStats,
}

impl Socket {
    /// A socket of `group` on `name` (already opened and joined), queued
    /// into `tx`.
    pub fn new(
        name: &str,
        thread: usize,
        group: Arc<Group>,
        opened: (LiveSource, Option<Timestamp>),
        tx: FrameSender,
        o: &LiveOptions,
    ) -> Socket {
        Socket {
            name: name.to_owned(),
            thread,
            margin_us: SHOW_US + o.block_timeout.as_micros() as i64,
            watermark: 0,
            group,
            state: State::Open {
                src: opened.0,
                skip_before: opened.1,
            },
            tx,
            carried: LiveStats::default(),
        }
    }

    /// Queues up to [`BATCH`] frames, then moves the queue's watermark
    /// on; how many were read.
    fn read(&mut self) -> usize {
        let State::Open { src, skip_before } = &mut self.state else {
            return 0;
        };
        // What the kernel stamped before now (less the time a frame may
        // take to show in the ring) is in the ring if it is not yet read.
        let before = wall_now().add_micros(-self.margin_us);
        let (mut n, mut last, mut empty) = (0, None, false);
        while n < BATCH {
            match src.next_packet() {
                Ok(Some(p)) => {
                    n += 1;
                    last = Some(p.ts);
                    if skip_before.is_some_and(|t| p.ts < t) {
                        continue;
                    }
                    self.tx.push(&p);
                }
                Ok(None) => {
                    empty = true;
                    break;
                }
                Err(e) => {
                    let why = e.to_string();
                    self.lose(&why);
                    break;
                }
            }
        }
        if empty && let State::Open { skip_before, .. } = &mut self.state {
            // The ring is empty: what was stamped before the join is read.
            *skip_before = None;
        }
        let wm = match empty {
            true => last.map_or(before, |l| l.max(before)),
            false => last.unwrap_or(Timestamp(0)),
        };
        // Only this thread writes it: a store, not a locked read-modify-write per read.
        if wm.0 > self.watermark {
            self.watermark = wm.0;
            self.tx.shared.watermark.store(wm.0, Ordering::Release);
        }
        n
    }

    fn lose(&mut self, why: &str) {
        self.publish_stats();
        let name = &self.name;
        if let State::Open { src, .. } = &mut self.state {
            let st = src.stats().unwrap_or_default();
            self.carried.dropped += st.dropped;
            self.carried.if_dropped += st.if_dropped;
            self.carried.truncated += st.truncated;
        }
        tracing::error!(alarm = true, interface = %name, thread = self.thread, error = why, "CAPTURE ALARM: capture on {name} failed (capture thread {}): {why}; reopening it (for up to capture.retry_for)", self.thread);
        crate::daemon::raise_alarm(format!("capture {name} failed: {why}"));
        self.tx
            .shared
            .set_lost(Some((Instant::now(), why.to_owned())));
        self.group.leave();
        self.state = State::Lost {
            next: Instant::now() + REOPEN_FIRST,
            backoff: REOPEN_FIRST,
        };
    }

    /// Tries to reopen a lost socket when due; how long until the next try.
    fn reopen_due(&mut self, o: &LiveOptions) -> Option<Duration> {
        let State::Lost { next, backoff } = self.state else {
            return None;
        };
        let now = Instant::now();
        if now < next {
            return Some(next - now);
        }
        match self.group.open(&self.name, o) {
            Ok((src, skip_before)) => {
                let after_s = self.tx.shared.lost().map_or(0, |l| l.0.elapsed().as_secs());
                tracing::warn!(interface = %self.name, thread = self.thread, after_s, group = self.group.id(), "capture on {} works again (capture thread {})", self.name, self.thread);
                self.tx.shared.set_lost(None);
                self.state = State::Open { src, skip_before };
                None
            }
            Err(e) => {
                let backoff = (backoff * 2).min(REOPEN_MAX);
                tracing::error!(alarm = true, interface = %self.name, thread = self.thread, error = %e, retry_in_ms = backoff.as_millis() as u64, "CAPTURE ALARM: cannot reopen {} (capture thread {})", self.name, self.thread);
                self.state = State::Lost {
                    next: Instant::now() + backoff,
                    backoff,
                };
                Some(backoff)
            }
        }
    }

    /// Puts the kernel's counters where the engine's thread reads them.
    fn publish_stats(&mut self) {
        let now = match &mut self.state {
            State::Open { src, .. } => src.stats().unwrap_or_default(),
            State::Lost { .. } => LiveStats::default(),
        };
        let s = &self.tx.shared;
        let c = &self.carried;
        s.pcap_dropped
            .store(c.dropped + now.dropped, Ordering::Relaxed);
        s.if_dropped
            .store(c.if_dropped + now.if_dropped, Ordering::Relaxed);
        s.truncated
            .store(c.truncated + now.truncated, Ordering::Relaxed);
    }

    fn fd(&self) -> Option<RawFd> {
        match &self.state {
            State::Open { src, .. } => Some(src.raw_fd()),
            State::Lost { .. } => None,
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if matches!(self.state, State::Open { .. }) {
            self.group.leave();
        }
    }
}

/// A capture thread of a fanout: one socket per interface.
pub struct Reader {
    pub sockets: Vec<Socket>,
    pub options: LiveOptions,
    pub stop: Arc<AtomicBool>,
    /// Wakes this thread (to stop).
    pub waker: Arc<Waker>,
    pub engine: Arc<EngineWake>,
}

impl Reader {
    /// Reads until `stop`: frames into the queues, the engine's thread
    /// woken when it sleeps, lost sockets reopened with backoff.
    pub fn run(mut self) {
        let mut last_stats = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let n: usize = self.sockets.iter_mut().map(Socket::read).sum();
            if n > 0 {
                self.engine.queued();
            } else if self.engine.waits.load(Ordering::SeqCst) {
                // Nothing here, which the engine's thread waits to know.
                self.engine.waker.wake();
            }
            if last_stats.elapsed() >= Duration::from_secs(1) {
                last_stats = Instant::now();
                self.sockets.iter_mut().for_each(Socket::publish_stats);
            }
            let retry = self
                .sockets
                .iter_mut()
                .filter_map(|s| s.reopen_due(&self.options))
                .min();
            if n == 0 {
                let fds: Vec<RawFd> = self.sockets.iter().filter_map(Socket::fd).collect();
                let look = match self.engine.naps.load(Ordering::Relaxed) {
                    true => IDLE_LOOK,
                    false => TICK,
                };
                self.waker
                    .wait_with(&fds, retry.map_or(look, |r| r.min(look)));
            }
        }
        self.sockets.iter_mut().for_each(Socket::publish_stats);
    }
}

/// The capture threads of `capture.threads` (K of them, each with one
/// socket per interface) and the engine's ends of their queues.
pub struct Fanout {
    /// One queue per thread and interface, for the engine's thread.
    pub queues: Vec<FrameQueue>,
    pub engine: Arc<EngineWake>,
    stop: Arc<AtomicBool>,
    /// Each capture thread's waker, by thread number.
    pub wakers: Vec<Arc<Waker>>,
    /// Opened, not started yet ([`Fanout::spawn`]).
    readers: Vec<Reader>,
    joins: Vec<std::thread::JoinHandle<()>>,
}

impl Fanout {
    /// Opens every interface `threads` times into one fanout group each;
    /// each queue holds `slots` frames. `engine_waker` wakes the engine's
    /// thread. The threads start with [`Fanout::spawn`], when the engine
    /// is there to read their queues (until then the kernel rings hold
    /// the frames, as with one thread). Errors: an interface that cannot
    /// be opened or joined, named.
    pub fn start(
        interfaces: &[String],
        threads: usize,
        o: &LiveOptions,
        slots: usize,
        engine_waker: Arc<Waker>,
    ) -> Result<Fanout, CaptureError> {
        let engine = Arc::new(EngineWake {
            sleeps: AtomicBool::new(false),
            naps: AtomicBool::new(false),
            waits: AtomicBool::new(false),
            waker: engine_waker,
        });
        let groups: Vec<Arc<Group>> = interfaces.iter().map(|_| Arc::default()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let mut queues = Vec::new();
        let mut readers = Vec::new();
        for k in 0..threads {
            let mut sockets = Vec::new();
            for (name, group) in interfaces.iter().zip(&groups) {
                let opened = group.open(name, o)?;
                let (tx, rx) = frame_queue(name, slots);
                queues.push(rx);
                sockets.push(Socket::new(name, k, group.clone(), opened, tx, o));
            }
            let waker = Waker::new().map_err(|e| CaptureError::Open {
                source_name: interfaces.join("+"),
                reason: format!("eventfd: {e}"),
            })?;
            readers.push(Reader {
                sockets,
                options: o.clone(),
                stop: stop.clone(),
                waker: Arc::new(waker),
                engine: engine.clone(),
            });
        }
        for (name, g) in interfaces.iter().zip(&groups) {
            tracing::info!(interface = %name, threads, group = g.id(), "capture threads share the interface (PACKET_FANOUT)");
        }
        Ok(Fanout {
            queues,
            engine,
            stop,
            wakers: readers.iter().map(|r| r.waker.clone()).collect(),
            readers,
            joins: Vec::new(),
        })
    }

    /// Starts the capture threads. Errors: the system's, when it cannot
    /// start a thread.
    pub fn spawn(&mut self) -> std::io::Result<()> {
        for (k, r) in std::mem::take(&mut self.readers).into_iter().enumerate() {
            let j = std::thread::Builder::new()
                .name(format!("callrec-cap{k}"))
                .spawn(move || r.run())?;
            self.joins.push(j);
        }
        Ok(())
    }

    /// Stops the threads and waits for them; their queues keep what they
    /// read.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wakers.iter().for_each(|w| w.wake());
        for j in self.joins.drain(..) {
            let _ = j.join();
        }
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_that_is_not_a_packet_socket_cannot_join() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsRawFd;
        let e = join(s.as_raw_fd(), None).unwrap_err();
        assert!(e.raw_os_error().is_some(), "{e}");
    }
}
