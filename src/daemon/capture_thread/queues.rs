//! The engine's side of a fanout (`capture.threads` above one): reading
//! the capture threads' queues in capture order, and sleeping so that they
//! need not wake it for every frame.

use super::{BATCH, CONTROL_EVERY, CaptureThread, Source};
use crate::capture::fanout;
use crate::time::Timestamp;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The longest a frame waits for another capture thread's watermark.
pub const HOLD_MAX: Duration = Duration::from_millis(20);

impl CaptureThread {
    /// Before the thread waits: tells the capture threads of a fanout to
    /// wake it (unless it naps: frames came in the last [`fanout::BUSY`],
    /// so it sleeps at most [`fanout::NAP`]), then looks at their queues
    /// once more (a frame queued in between would otherwise wait for the
    /// next tick). `true`: frames wait, do not sleep.
    pub(super) fn fanout_sleeps(&self) -> bool {
        let Some(f) = &self.fanout else {
            return false;
        };
        let busy = self.last_frames.elapsed() < fanout::BUSY;
        f.engine.naps.store(busy, Ordering::SeqCst);
        f.engine.sleeps.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        let waiting = self
            .inputs
            .iter()
            .any(|i| matches!(&i.source, Source::Queue(q) if !q.is_empty()));
        if waiting {
            f.engine.sleeps.store(false, Ordering::SeqCst);
        }
        waiting
    }

    /// The queues of a fanout's capture threads: the earliest waiting
    /// frame first, read where it lies in its queue, once every other
    /// queue holds a later frame or its watermark has passed this one
    /// (`wait`; at shutdown the threads have stopped and what is queued is
    /// read as it is). A frame waits at most [`HOLD_MAX`]: then a thread
    /// the system does not schedule can no longer hold the others up.
    pub(super) fn read_queues(&mut self, wait: bool) -> u64 {
        let mut n = 0u64;
        self.engine.select_capture_point(self.point);
        while n < BATCH {
            let Some((i, lagging)) = self.next_queued() else {
                break;
            };
            if wait && let Some(j) = lagging {
                let since = match self.holding {
                    Some(t) => t,
                    None => {
                        self.wake_thread_of(j);
                        *self.holding.insert(Instant::now())
                    }
                };
                if since.elapsed() < HOLD_MAX {
                    return n;
                }
            }
            self.holding = None;
            let Source::Queue(q) = &mut self.inputs[i].source else {
                break;
            };
            let engine = &mut self.engine;
            q.front(|p| engine.on_packet(p));
            self.inputs[i].packets += 1;
            n += 1;
            if n.is_multiple_of(CONTROL_EVERY) {
                self.serve_control();
                self.engine.select_capture_point(self.point);
            }
        }
        n
    }

    /// One look at every queue: the one whose first frame is the
    /// earliest, and an empty queue (of a socket not lost) whose watermark
    /// is below that frame, so that it may still get an earlier one.
    fn next_queued(&self) -> Option<(usize, Option<usize>)> {
        let mut best: Option<(Timestamp, usize)> = None;
        let mut low: Option<(i64, usize)> = None;
        for (i, input) in self.inputs.iter().enumerate() {
            let Source::Queue(q) = &input.source else {
                continue;
            };
            match q.front_or_watermark() {
                Ok(ts) if best.is_none_or(|(b, _)| ts < b) => best = Some((ts, i)),
                Err(Some(wm)) if low.is_none_or(|(l, _)| wm < l) => low = Some((wm, i)),
                _ => {}
            }
        }
        let (ts, i) = best?;
        Some((i, low.filter(|&(wm, _)| wm < ts.0).map(|(_, j)| j)))
    }

    /// Asks the capture thread that fills queue `j` to look at its sockets
    /// now (and so move its watermark on), unless frames flow: then every
    /// capture thread looks every millisecond on its own
    /// ([`fanout::IDLE_LOOK`]), and a wake per held frame made the two
    /// threads wake each other per frame (8 µs a packet of the engine's
    /// thread at 50,000 packets/s in immediate mode).
    fn wake_thread_of(&self, j: usize) {
        if let (Some(f), Some(k)) = (&self.fanout, self.inputs[j].thread)
            && !f.engine.naps.load(Ordering::Relaxed)
        {
            f.wakers[k].wake();
        }
    }
}
