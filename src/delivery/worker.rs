//! Delivery workers: one thread per destination, so destinations never slow
//! each other.
//!
//! A worker takes the oldest ready recording (stems sort by time), moves it
//! to inflight, publishes it over SFTP and moves it to done. When the
//! destination cannot be reached it backs off exponentially (with jitter)
//! from `retry_initial` to `retry_max`, making ONE probe connection per
//! destination per period, not one per file; once the probe succeeds the
//! whole backlog drains, oldest first, over up to `connections` SSH
//! connections ("lanes"): lanes upload temporary files in parallel (hiding
//! each file's round trips and remote fsync) and publish the final names
//! strictly in queue order (see [`Batch`]). While the
//! destination is failing, recordings older than `hold_after` move to held
//! with an alarm (never deleted). A `retry-now` file in the destination's
//! queue folder (written by `callrec queue retry`) cuts the backoff short.
//!
//! Wall-clock time (file ages) comes from an injected [`Clock`] so tests can
//! drive `hold_after`; sleeps use real time.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::sftp::{FailureKind, Published, Remote, SftpError, SharedBucket, Staged, TokenBucket};
use super::spool::{QueueState, Spool};
use crate::config::{Config, Delivery, Destination};

/// The wall clock, injectable.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// [`SystemTime::now`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Name of the marker file that makes a worker retry at once.
pub const RETRY_NOW: &str = "retry-now";
/// Name of the persisted status file in each destination's queue folder.
pub const STATUS_FILE: &str = "status.json";

/// Live status of one destination, shared with metrics and `queue list`.
/// Counters are atomics; only the last error takes a (rarely contended) lock.
#[derive(Debug, Default)]
pub struct DestStatus {
    pub name: String,
    pub ready: AtomicU64,
    pub inflight: AtomicU64,
    pub done: AtomicU64,
    pub held: AtomicU64,
    pub quarantine: AtomicU64,
    /// Unix ms of the oldest ready recording's spool time; 0 = none.
    pub oldest_ready_unix_ms: AtomicU64,
    /// Recordings delivered by this process.
    pub delivered: AtomicU64,
    /// Recordings held or quarantined by this process.
    pub failed: AtomicU64,
    /// Failed connection attempts and uploads put back for a retry.
    pub retries: AtomicU64,
    pub connected: AtomicBool,
    /// Current backoff delay in ms (0 while connected).
    pub backoff_ms: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Unix ms of the worker's last turn of its loop (0 before the first):
    /// the watchdog's proof that delivery is not stuck.
    pub heartbeat_unix_ms: AtomicU64,
}

/// A plain copy of [`DestStatus`], as persisted in `status.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatusSnapshot {
    pub destination: String,
    pub ready: u64,
    pub inflight: u64,
    pub done: u64,
    pub held: u64,
    pub quarantine: u64,
    pub oldest_ready_unix_ms: Option<u64>,
    pub delivered: u64,
    pub failed: u64,
    pub retries: u64,
    pub connected: bool,
    pub backoff_ms: u64,
    pub last_error: Option<String>,
    pub updated_unix_ms: u64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl DestStatus {
    pub fn new(name: &str) -> DestStatus {
        DestStatus {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// How long ago the worker last turned its loop; `None` before it first did.
    pub fn heartbeat_age(&self, now: SystemTime) -> Option<Duration> {
        let at = self.heartbeat_unix_ms.load(Ordering::Relaxed);
        (at > 0).then(|| Duration::from_millis(unix_ms(now).saturating_sub(at)))
    }

    fn beat(&self) {
        self.heartbeat_unix_ms
            .store(unix_ms(SystemTime::now()), Ordering::Relaxed);
    }

    pub fn snapshot(&self, now: SystemTime) -> StatusSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let oldest = r(&self.oldest_ready_unix_ms);
        StatusSnapshot {
            destination: self.name.clone(),
            ready: r(&self.ready),
            inflight: r(&self.inflight),
            done: r(&self.done),
            held: r(&self.held),
            quarantine: r(&self.quarantine),
            oldest_ready_unix_ms: (oldest != 0).then_some(oldest),
            delivered: r(&self.delivered),
            failed: r(&self.failed),
            retries: r(&self.retries),
            connected: self.connected.load(Ordering::Relaxed),
            backoff_ms: r(&self.backoff_ms),
            last_error: self.last_error.lock().map(|g| g.clone()).unwrap_or(None),
            updated_unix_ms: unix_ms(now),
        }
    }

    fn set_error(&self, e: Option<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = e;
        }
    }
}

/// Everything one worker needs.
pub struct Worker {
    pub spool: Spool,
    pub dest: Destination,
    pub delivery: Delivery,
    /// Contract ids whose recordings may go to this destination (the first
    /// component of the stem); `None` disables the check.
    pub contracts: Option<ContractFilter>,
    pub clock: Arc<dyn Clock>,
    pub status: Arc<DestStatus>,
    pub stop: Arc<AtomicBool>,
    /// How often an idle worker looks for new recordings.
    pub poll: Duration,
    /// `max_rate`, one bucket for all the destination's connections.
    pub bucket: Option<SharedBucket>,
}

/// Small xorshift for backoff jitter; no need for a crypto RNG.
struct Jitter(u64);

impl Jitter {
    fn new(name: &str) -> Jitter {
        let mut seed = unix_ms(SystemTime::now()) ^ (std::process::id() as u64) << 32;
        for b in name.bytes() {
            seed = seed.rotate_left(5) ^ b as u64;
        }
        Jitter(seed | 1)
    }
    /// A delay uniformly in [d/2, d].
    fn apply(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let frac = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        d.mul_f64(0.5 + 0.5 * frac)
    }
}

/// One upload lane: an SSH connection of this destination (or a free slot).
struct Lane {
    remote: Option<Remote>,
    /// An extra connection that failed is not tried again before this.
    retry_at: Instant,
}

/// What staging a recording left for its turn.
enum Step {
    /// Settled without the server (gone, or refused and quarantined).
    Settled(Option<SftpError>),
    /// In inflight; this failure decides where it goes.
    Failed(SftpError),
    /// In inflight, both files on the server under temporary names.
    Staged(Staged),
    /// Claimed after the batch was aborted: left in ready untouched.
    Skipped,
    /// The local spool refused the move to inflight (a full or read-only
    /// disk, permissions): still in ready. The batch stops and the
    /// destination backs off, so a spool that keeps refusing is retried at
    /// the backoff pace, not in a tight loop.
    SpoolRefused,
}

/// One pass over the backlog, shared by the lanes.
///
/// Lanes claim recordings in queue order and stage them (upload to `.part`,
/// fsync, size check) in parallel, so the per-file round trips and remote
/// fsyncs of several recordings overlap. The final renames then happen
/// strictly in queue order: a lane waits for its recording's turn, so a
/// receiver sees recordings appear one at a time, oldest first, exactly as
/// with one connection. When a recording fails in a way that means the line
/// or the server is unusable, every later one goes back to ready
/// untouched: nothing overtakes a recording still waiting for its retry.
struct Batch<'a> {
    stems: &'a [String],
    next: AtomicUsize,
    /// Index of the first recording that failed with a retry; usize::MAX = none.
    abort_at: AtomicUsize,
    turn: Mutex<Turn>,
    turn_cv: Condvar,
}

struct Turn {
    /// The index whose final renames may run now.
    next: usize,
    last_persist: Instant,
}

impl Batch<'_> {
    fn aborted(&self) -> bool {
        self.abort_at.load(Ordering::SeqCst) != usize::MAX
    }

    fn aborted_before(&self, i: usize) -> bool {
        self.abort_at.load(Ordering::SeqCst) < i
    }

    fn wait_turn(&self, i: usize) {
        let mut t = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        while t.next != i {
            t = self.turn_cv.wait(t).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Passes the turn on when dropped, also when a lane unwinds: the others
/// must never wait forever. A turn passed without `settled` aborts the rest
/// of the batch, so nothing overtakes the unsettled recording.
struct TurnGuard<'a, 'b> {
    batch: &'a Batch<'b>,
    worker: &'a Worker,
    i: usize,
    settled: bool,
}

impl Drop for TurnGuard<'_, '_> {
    fn drop(&mut self) {
        let b = self.batch;
        if !self.settled {
            b.abort_at.fetch_min(self.i, Ordering::SeqCst);
        }
        let mut t = b.turn.lock().unwrap_or_else(|e| e.into_inner());
        if t.next == self.i {
            t.next = self.i + 1;
            self.worker
                .status
                .ready
                .store((b.stems.len() - self.i - 1) as u64, Ordering::Relaxed);
            if t.last_persist.elapsed() >= Duration::from_millis(500) {
                t.last_persist = Instant::now();
                self.worker.persist();
            }
        }
        drop(t);
        b.turn_cv.notify_all();
    }
}

impl Worker {
    fn qdir(&self) -> PathBuf {
        self.spool.queue_dir(&self.dest.name)
    }

    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stop.load(Ordering::Relaxed) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
            self.status.beat();
        }
    }

    fn take_retry_marker(&self) -> bool {
        std::fs::remove_file(self.qdir().join(RETRY_NOW)).is_ok()
    }

    /// Recounts the states from the folders and persists the status.
    fn refresh(&self, ready: &[String]) {
        let name = &self.dest.name;
        let count = |s| {
            self.spool
                .list(name, s)
                .map(|v| v.len() as u64)
                .unwrap_or(0)
        };
        self.status
            .ready
            .store(ready.len() as u64, Ordering::Relaxed);
        self.status
            .inflight
            .store(count(QueueState::Inflight), Ordering::Relaxed);
        self.status
            .done
            .store(count(QueueState::Done), Ordering::Relaxed);
        self.status
            .held
            .store(count(QueueState::Held), Ordering::Relaxed);
        self.status
            .quarantine
            .store(count(QueueState::Quarantine), Ordering::Relaxed);
        let oldest = ready
            .first()
            .and_then(|s| self.spool.stamp(name, QueueState::Ready, s).ok())
            .map(unix_ms);
        self.status
            .oldest_ready_unix_ms
            .store(oldest.unwrap_or(0), Ordering::Relaxed);
        self.persist();
    }

    fn persist(&self) {
        let snap = self.status.snapshot(self.clock.now());
        let dir = self.qdir();
        let tmp = dir.join(".status.json.tmp");
        if let Ok(bytes) = serde_json::to_vec_pretty(&snap)
            && crate::recording::perms::write(&tmp, &bytes).is_ok()
        {
            let _ = std::fs::rename(&tmp, dir.join(STATUS_FILE));
        }
    }

    fn alarm(&self, e: &SftpError) {
        if e.is_alarm() {
            tracing::error!(destination = %self.dest.name, alarm = true, "{e}");
        } else {
            tracing::warn!(destination = %self.dest.name, "{e}");
        }
        self.status.set_error(Some(e.to_string()));
    }

    /// While the destination fails: recordings older than hold_after go to held.
    fn hold_old(&self, ready: &mut Vec<String>) {
        let now = self.clock.now();
        let name = &self.dest.name;
        ready.retain(|stem| {
            let Ok(at) = self.spool.stamp(name, QueueState::Ready, stem) else { return true };
            let age = now.duration_since(at).unwrap_or(Duration::ZERO);
            if age < self.delivery.hold_after {
                return true;
            }
            match self.spool.move_to(name, stem, QueueState::Ready, QueueState::Held) {
                Ok(()) => {
                    tracing::error!(
                        destination = %name, stem = %stem, age_secs = age.as_secs(), alarm = true,
                        "recording undelivered after hold_after; held (never deleted), `callrec queue release` retries it"
                    );
                    self.status.failed.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Err(e) => {
                    tracing::warn!(destination = %name, stem = %stem, "cannot hold: {e}");
                    true
                }
            }
        });
    }

    fn bad_file(&self, stem: &str, msg: String) -> SftpError {
        SftpError::BadSpoolFile {
            dest: self.dest.name.clone(),
            path: self
                .spool
                .file(&self.dest.name, QueueState::Ready, stem, "json"),
            msg,
        }
    }

    /// Takes a recording from ready into inflight, checks it and uploads it
    /// under temporary names. Runs on several lanes at once.
    fn stage(&self, remote: &mut Remote, stem: &str) -> Step {
        let name = &self.dest.name;
        if let Some(allowed) = &self.contracts {
            let contract = stem.split('/').next().unwrap_or("");
            let known = allowed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(contract);
            if !known {
                let e = self.bad_file(
                    stem,
                    format!(
                        "recording of contract {contract:?} is not for destination {name}; refused"
                    ),
                );
                return match self.spool.move_to(
                    name,
                    stem,
                    QueueState::Ready,
                    QueueState::Quarantine,
                ) {
                    Ok(()) => Step::Settled(Some(e)),
                    Err(_) => Step::Settled(None),
                };
            }
        }
        match self
            .spool
            .shift(name, stem, QueueState::Ready, QueueState::Inflight)
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Step::Settled(None),
            Err(e) => {
                // Still in ready: retried after the backoff.
                tracing::error!(destination = %name, stem = %stem, "cannot move to inflight: {e}");
                self.status
                    .set_error(Some(format!("spool: {stem}: cannot move to inflight: {e}")));
                return Step::SpoolRefused;
            }
        }
        let staged = match self.spool.verify(name, QueueState::Inflight, stem) {
            Err(why) => Err(SftpError::BadSpoolFile {
                dest: name.clone(),
                path: self.spool.audio_file(name, QueueState::Inflight, stem),
                msg: why,
            }),
            Ok(sha) => remote.stage(
                stem,
                &self.spool.audio_file(name, QueueState::Inflight, stem),
                &self.spool.file(name, QueueState::Inflight, stem, "json"),
                &sha,
            ),
        };
        match staged {
            Ok(s) => Step::Staged(s),
            Err(e) => Step::Failed(e),
        }
    }

    /// Moves a failed recording out of inflight to where its failure sends it.
    fn settle_failure(&self, stem: &str, e: &SftpError) {
        let name = &self.dest.name;
        let r = match e.kind() {
            // Loss of this move in a power cut only means one more try.
            FailureKind::Retry => {
                self.spool
                    .shift(name, stem, QueueState::Inflight, QueueState::Ready)
            }
            FailureKind::Hold => {
                self.spool
                    .move_to(name, stem, QueueState::Inflight, QueueState::Held)
            }
            FailureKind::Quarantine => {
                self.spool
                    .move_to(name, stem, QueueState::Inflight, QueueState::Quarantine)
            }
        };
        if let Err(me) = r {
            tracing::warn!(destination = %name, stem = %stem, "cannot move out of inflight: {me}");
        }
    }

    /// Logs a recording's failure with where it went, and counts it.
    fn record_failure(&self, stem: &str, e: &SftpError) {
        let name = &self.dest.name;
        let (went, counter) = match e.kind() {
            FailureKind::Retry => ("back to ready, will retry", &self.status.retries),
            FailureKind::Hold => ("held", &self.status.failed),
            FailureKind::Quarantine => ("quarantined", &self.status.failed),
        };
        if e.is_alarm() {
            tracing::error!(destination = %name, stem = %stem, alarm = true, "{e}; {went}");
        } else {
            tracing::warn!(destination = %name, stem = %stem, "{e}; {went}");
        }
        self.status.set_error(Some(e.to_string()));
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// One lane of a batch: claim, stage, wait for the turn, publish.
    /// Returns when the backlog is claimed, the batch aborted, or this
    /// lane's connection failed (its slot is then emptied).
    fn run_lane(&self, k: usize, lane: &mut Lane, b: &Batch) {
        let name = &self.dest.name;
        if lane.remote.is_none() {
            if b.aborted() || Instant::now() < lane.retry_at {
                return;
            }
            match Remote::connect(&self.dest, &self.delivery, self.bucket.clone()) {
                Ok(r) => lane.remote = Some(r),
                Err(e) => {
                    // The first connection works: go on with fewer lanes.
                    lane.retry_at = Instant::now() + self.delivery.retry_max;
                    tracing::warn!(destination = %name, lane = k, "extra connection failed, continuing with fewer: {e}");
                    return;
                }
            }
        }
        loop {
            if self.stop.load(Ordering::Relaxed) || b.aborted() {
                return;
            }
            // Before claiming: a claimed index must always reach its turn.
            let Some(remote) = lane.remote.as_mut() else {
                return;
            };
            let i = b.next.fetch_add(1, Ordering::SeqCst);
            let Some(stem) = b.stems.get(i) else { return };
            let mut guard = TurnGuard {
                batch: b,
                worker: self,
                i,
                settled: false,
            };
            let step = if b.aborted_before(i) {
                Step::Skipped
            } else {
                self.stage(remote, stem)
            };
            b.wait_turn(i);
            let mut line_failed = false;
            let mut spool_failed = false;
            let delivered = match step {
                Step::Skipped => None,
                Step::SpoolRefused => {
                    spool_failed = true;
                    None
                }
                Step::Settled(e) => {
                    if let Some(e) = e {
                        self.record_failure(stem, &e);
                    }
                    None
                }
                Step::Staged(st) if b.aborted_before(i) => {
                    remote.discard(&st);
                    if let Err(e) =
                        self.spool
                            .shift(name, stem, QueueState::Inflight, QueueState::Ready)
                    {
                        tracing::warn!(destination = %name, stem = %stem, "cannot move back to ready: {e}");
                    }
                    None
                }
                Step::Staged(st) => match remote.commit(&st) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        self.settle_failure(stem, &e);
                        self.record_failure(stem, &e);
                        line_failed = e.kind() == FailureKind::Retry;
                        None
                    }
                },
                Step::Failed(e) => {
                    self.settle_failure(stem, &e);
                    self.record_failure(stem, &e);
                    line_failed = e.kind() == FailureKind::Retry;
                    None
                }
            };
            if line_failed || spool_failed {
                b.abort_at.fetch_min(i, Ordering::SeqCst);
            }
            guard.settled = true;
            drop(guard);
            if let Some(p) = delivered {
                // Loss of this move in a power cut only means a re-send,
                // which finds the files already there.
                if let Err(e) = self
                    .spool
                    .shift(name, stem, QueueState::Inflight, QueueState::Done)
                {
                    // Left inflight: start-up puts it back to ready, the re-send finds it delivered.
                    tracing::warn!(destination = %name, stem = %stem, "delivered but cannot move to done: {e}");
                }
                let _ = self
                    .spool
                    .touch(name, QueueState::Done, stem, self.clock.now());
                tracing::info!(destination = %name, stem = %stem, already_there = (p == Published::AlreadyThere), "delivered");
                self.status.delivered.fetch_add(1, Ordering::Relaxed);
                self.status.done.fetch_add(1, Ordering::Relaxed);
                self.status.set_error(None);
            }
            if line_failed {
                lane.remote = None;
                return;
            }
        }
    }

    /// Delivers `ready` (oldest first) over up to `connections` lanes.
    /// Returns true when the line or server failed (the rest went back to
    /// ready and the destination backs off).
    fn deliver_batch(&self, lanes: &mut [Lane], ready: &[String]) -> bool {
        // Connected lanes first; open extra ones only for a real backlog.
        lanes.sort_by_key(|l| l.remote.is_none());
        let n = lanes.len().min(ready.len()).max(1);
        let b = Batch {
            stems: ready,
            next: AtomicUsize::new(0),
            abort_at: AtomicUsize::new(usize::MAX),
            turn: Mutex::new(Turn {
                next: 0,
                last_persist: Instant::now(),
            }),
            turn_cv: Condvar::new(),
        };
        let (first, rest) = lanes[..n].split_at_mut(1);
        std::thread::scope(|s| {
            for (k, lane) in rest.iter_mut().enumerate() {
                let b = &b;
                let spawned = std::thread::Builder::new()
                    .name(format!("deliver-{}-{}", self.dest.name, k + 1))
                    .spawn_scoped(s, move || self.run_lane(k + 1, lane, b));
                if let Err(e) = spawned {
                    tracing::warn!(destination = %self.dest.name, "cannot start an upload lane: {e}");
                }
            }
            self.run_lane(0, &mut first[0], &b);
        });
        b.aborted()
    }

    /// Runs until `stop` is set.
    pub fn run(self) {
        let name = self.dest.name.clone();
        if let Err(e) = self.spool.ensure_destination(&name) {
            tracing::error!(destination = %name, "cannot create the queue folders: {e}");
            self.status.set_error(Some(format!("spool: {e}")));
            return;
        }
        let mut jitter = Jitter::new(&name);
        let mut lanes: Vec<Lane> = (0..self.dest.connections.max(1))
            .map(|_| Lane {
                remote: None,
                retry_at: Instant::now(),
            })
            .collect();
        let connected = |lanes: &[Lane]| lanes.iter().any(|l| l.remote.is_some());
        let mut backoff = self.delivery.retry_initial;
        let mut next_try = Instant::now();
        let mut last_expire = Instant::now() - Duration::from_secs(3600);
        let mut last_refresh = (Instant::now() - Duration::from_secs(3600), usize::MAX);
        while !self.stop.load(Ordering::Relaxed) {
            self.status.beat();
            if self.take_retry_marker() {
                backoff = self.delivery.retry_initial;
                next_try = Instant::now();
                for l in &mut lanes {
                    l.retry_at = Instant::now();
                }
            }
            if last_expire.elapsed() >= Duration::from_secs(60) {
                last_expire = Instant::now();
                if let Err(e) = self.spool.expire_done_for(
                    &name,
                    self.clock.now(),
                    self.delivery.keep_delivered,
                ) {
                    tracing::warn!(destination = %name, "expiring delivered recordings: {e}");
                }
            }
            let mut ready = match self.spool.list(&name, QueueState::Ready) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(destination = %name, "cannot list the ready queue: {e}");
                    self.sleep(self.poll.max(Duration::from_secs(1)));
                    continue;
                }
            };
            // Idle connections prove the line still answers (a no-op until
            // the keepalive interval has passed since their last traffic).
            for l in &mut lanes {
                if let Some(r) = l.remote.as_mut()
                    && let Err(e) = r.keepalive()
                {
                    self.alarm(&e);
                    l.remote = None;
                }
            }
            self.status
                .connected
                .store(connected(&lanes), Ordering::Relaxed);
            // Waiting (idle, or backing off): recount the folders (a walk of
            // done/, which holds a day of recordings) and rewrite status.json
            // only when the backlog changed or every few seconds, not every poll.
            let mut refresh_if_due = |ready: &[String]| {
                if ready.len() != last_refresh.1
                    || last_refresh.0.elapsed() >= Duration::from_secs(5)
                {
                    self.refresh(ready);
                    last_refresh = (Instant::now(), ready.len());
                }
            };
            if ready.is_empty() {
                refresh_if_due(&ready);
                self.sleep(self.poll);
                continue;
            }
            if !connected(&lanes) {
                let now = Instant::now();
                if now < next_try {
                    self.hold_old(&mut ready);
                    refresh_if_due(&ready);
                    self.sleep((next_try - now).min(self.poll));
                    continue;
                }
                // The one probe of this period.
                match Remote::connect(&self.dest, &self.delivery, self.bucket.clone()) {
                    Ok(r) => {
                        tracing::info!(destination = %name, backlog = ready.len(), "connected");
                        lanes[0].remote = Some(r);
                        backoff = self.delivery.retry_initial;
                        self.status.connected.store(true, Ordering::Relaxed);
                        self.status.backoff_ms.store(0, Ordering::Relaxed);
                    }
                    Err(e) => {
                        self.alarm(&e);
                        self.status.retries.fetch_add(1, Ordering::Relaxed);
                        let delay = jitter.apply(backoff);
                        self.status
                            .backoff_ms
                            .store(delay.as_millis() as u64, Ordering::Relaxed);
                        next_try = Instant::now() + delay;
                        backoff = (backoff * 2).min(self.delivery.retry_max);
                        self.hold_old(&mut ready);
                        self.refresh(&ready);
                        continue;
                    }
                }
            }
            self.refresh(&ready);
            // Recount once the batch has moved things.
            last_refresh.1 = usize::MAX;
            if self.deliver_batch(&mut lanes, &ready) {
                // The destination failed: every lane starts over after the backoff.
                for l in &mut lanes {
                    l.remote = None;
                }
                self.status.connected.store(false, Ordering::Relaxed);
                let delay = jitter.apply(backoff);
                self.status
                    .backoff_ms
                    .store(delay.as_millis() as u64, Ordering::Relaxed);
                next_try = Instant::now() + delay;
                backoff = (backoff * 2).min(self.delivery.retry_max);
            }
            self.persist();
        }
        self.persist();
    }
}

/// The running workers of all destinations.
/// The contracts whose recordings a destination takes; shared with its
/// worker, so a reload can add contracts while it runs.
pub type ContractFilter = Arc<Mutex<HashSet<String>>>;

pub struct Workers {
    handles: Vec<JoinHandle<()>>,
    statuses: Vec<Arc<DestStatus>>,
    filters: Vec<Option<ContractFilter>>,
    stop: Arc<AtomicBool>,
    delivery: Delivery,
    poll: Duration,
}

/// The contract ids that name each destination of `cfg`.
fn contracts_of(cfg: &Config, dest: &str) -> HashSet<String> {
    cfg.contracts
        .iter()
        .filter(|c| c.destination == dest)
        .map(|c| c.id.clone())
        .collect()
}

impl Workers {
    /// One worker per configured destination; a destination only takes
    /// recordings of the contracts that name it.
    pub fn start(cfg: &Config, spool: &Spool, clock: Arc<dyn Clock>) -> io::Result<Workers> {
        let ws = cfg
            .destinations
            .iter()
            .map(|d| (d.clone(), Some(contracts_of(cfg, &d.name))))
            .collect();
        Workers::start_with(spool, &cfg.delivery, ws, clock, Duration::from_millis(200))
    }

    /// A reloaded configuration: contracts join the filter of the
    /// destination they name (none leaves one while it runs: recordings
    /// queued under the old configuration must still go out), and new
    /// destinations get their worker. Changed settings of a running
    /// destination take effect at the next start.
    pub fn reload(&mut self, cfg: &Config, spool: &Spool, clock: Arc<dyn Clock>) -> io::Result<()> {
        for d in &cfg.destinations {
            let add = contracts_of(cfg, &d.name);
            match self.statuses.iter().position(|s| s.name == d.name) {
                Some(i) => {
                    if let Some(f) = &self.filters[i] {
                        f.lock().unwrap_or_else(|e| e.into_inner()).extend(add);
                    }
                }
                None => {
                    tracing::info!(destination = %d.name, "reload: new destination, starting its worker");
                    self.spawn(spool, d.clone(), Some(add), clock.clone())?;
                }
            }
        }
        Ok(())
    }

    /// Lower-level start: explicit destinations and contract filters.
    pub fn start_with(
        spool: &Spool,
        delivery: &Delivery,
        dests: Vec<(Destination, Option<HashSet<String>>)>,
        clock: Arc<dyn Clock>,
        poll: Duration,
    ) -> io::Result<Workers> {
        let mut w = Workers {
            handles: Vec::new(),
            statuses: Vec::new(),
            filters: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            delivery: delivery.clone(),
            poll,
        };
        for (dest, contracts) in dests {
            w.spawn(spool, dest, contracts, clock.clone())?;
        }
        Ok(w)
    }

    fn spawn(
        &mut self,
        spool: &Spool,
        dest: Destination,
        contracts: Option<HashSet<String>>,
        clock: Arc<dyn Clock>,
    ) -> io::Result<()> {
        spool.ensure_destination(&dest.name)?;
        let status = Arc::new(DestStatus::new(&dest.name));
        let filter = contracts.map(|c| Arc::new(Mutex::new(c)));
        let w = Worker {
            spool: spool.clone(),
            dest: dest.clone(),
            delivery: self.delivery.clone(),
            contracts: filter.clone(),
            clock,
            status: status.clone(),
            stop: self.stop.clone(),
            poll: self.poll,
            bucket: dest.max_rate.map(TokenBucket::shared),
        };
        self.handles.push(
            std::thread::Builder::new()
                .name(format!("deliver-{}", dest.name))
                .spawn(move || w.run())?,
        );
        self.statuses.push(status);
        self.filters.push(filter);
        Ok(())
    }

    pub fn statuses(&self) -> &[Arc<DestStatus>] {
        &self.statuses
    }

    pub fn status(&self, name: &str) -> Option<&Arc<DestStatus>> {
        self.statuses.iter().find(|s| s.name == name)
    }

    /// Stops every worker (each finishes the file it is uploading, bounded by
    /// the session timeout) and waits for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            let _ = h.join();
        }
    }
}
