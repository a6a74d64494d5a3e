//! Delivery workers: one thread per destination, so destinations never slow
//! each other.
//!
//! A worker takes the oldest ready recording (stems sort by time), moves it
//! to inflight, publishes it over SFTP and moves it to done. When the
//! destination cannot be reached it backs off exponentially (with jitter)
//! from `retry_initial` to `retry_max`, making ONE probe connection per
//! destination per period, not one per file; once the probe succeeds the
//! whole backlog drains on that connection, oldest first. While the
//! destination is failing, recordings older than `hold_after` move to held
//! with an alarm (never deleted). A `retry-now` file in the destination's
//! queue folder (written by `callrec queue retry`) cuts the backoff short.
//!
//! Wall-clock time (file ages) comes from an injected [`Clock`] so tests can
//! drive `hold_after`; sleeps use real time.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::sftp::{FailureKind, Published, Remote, SftpError};
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
    pub contracts: Option<HashSet<String>>,
    pub clock: Arc<dyn Clock>,
    pub status: Arc<DestStatus>,
    pub stop: Arc<AtomicBool>,
    /// How often an idle worker looks for new recordings.
    pub poll: Duration,
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

enum Outcome {
    Delivered,
    Gone,
    Failed(SftpError),
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
            && std::fs::write(&tmp, bytes).is_ok()
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

    fn deliver_one(&self, remote: &mut Remote, stem: &str) -> Outcome {
        let name = &self.dest.name;
        let bad = |msg: String| SftpError::BadSpoolFile {
            dest: name.clone(),
            path: self.spool.file(name, QueueState::Ready, stem, "json"),
            msg,
        };
        if let Some(allowed) = &self.contracts {
            let contract = stem.split('/').next().unwrap_or("");
            if !allowed.contains(contract) {
                let e = bad(format!(
                    "recording of contract {contract:?} is not for destination {name}; refused"
                ));
                return match self.spool.move_to(
                    name,
                    stem,
                    QueueState::Ready,
                    QueueState::Quarantine,
                ) {
                    Ok(()) => Outcome::Failed(e),
                    Err(_) => Outcome::Gone,
                };
            }
        }
        match self
            .spool
            .move_to(name, stem, QueueState::Ready, QueueState::Inflight)
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Outcome::Gone,
            Err(e) => return Outcome::Failed(bad(format!("cannot move to inflight: {e}"))),
        }
        let result = match self.spool.verify(name, QueueState::Inflight, stem) {
            Err(why) => Err(bad(why)),
            Ok(sha) => remote.publish(
                stem,
                &self.spool.file(name, QueueState::Inflight, stem, "wav"),
                &self.spool.file(name, QueueState::Inflight, stem, "json"),
                &sha,
            ),
        };
        match result {
            Ok(p) => {
                if let Err(e) =
                    self.spool
                        .move_to(name, stem, QueueState::Inflight, QueueState::Done)
                {
                    // Left inflight: start-up puts it back to ready, the re-send finds it delivered.
                    tracing::warn!(destination = %name, stem = %stem, "delivered but cannot move to done: {e}");
                }
                let _ = self
                    .spool
                    .touch(name, QueueState::Done, stem, self.clock.now());
                tracing::info!(destination = %name, stem = %stem, already_there = (p == Published::AlreadyThere), "delivered");
                Outcome::Delivered
            }
            Err(e) => {
                let to = match e.kind() {
                    FailureKind::Retry => QueueState::Ready,
                    FailureKind::Hold => QueueState::Held,
                    FailureKind::Quarantine => QueueState::Quarantine,
                };
                if let Err(me) = self.spool.move_to(name, stem, QueueState::Inflight, to) {
                    tracing::warn!(destination = %name, stem = %stem, "cannot move to {}: {me}", to.as_str());
                }
                Outcome::Failed(e)
            }
        }
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
        let mut remote: Option<Remote> = None;
        let mut backoff = self.delivery.retry_initial;
        let mut next_try = Instant::now();
        let mut last_expire = Instant::now() - Duration::from_secs(3600);
        while !self.stop.load(Ordering::Relaxed) {
            if self.take_retry_marker() {
                backoff = self.delivery.retry_initial;
                next_try = Instant::now();
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
            if ready.is_empty() {
                if let Some(r) = remote.as_mut()
                    && let Err(e) = r.keepalive()
                {
                    self.alarm(&e);
                    remote = None;
                    self.status.connected.store(false, Ordering::Relaxed);
                }
                self.refresh(&ready);
                self.sleep(self.poll);
                continue;
            }
            if remote.is_none() {
                let now = Instant::now();
                if now < next_try {
                    self.hold_old(&mut ready);
                    self.refresh(&ready);
                    self.sleep((next_try - now).min(self.poll));
                    continue;
                }
                // The one probe of this period.
                match Remote::connect(&self.dest, &self.delivery) {
                    Ok(r) => {
                        tracing::info!(destination = %name, backlog = ready.len(), "connected");
                        remote = Some(r);
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
            let mut last_persist = Instant::now();
            for (i, stem) in ready.iter().enumerate() {
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Some(r) = remote.as_mut() else { break };
                match self.deliver_one(r, stem) {
                    Outcome::Delivered => {
                        self.status.delivered.fetch_add(1, Ordering::Relaxed);
                        self.status.done.fetch_add(1, Ordering::Relaxed);
                        self.status.set_error(None);
                    }
                    Outcome::Gone => {}
                    Outcome::Failed(e) => {
                        self.alarm(&e);
                        match e.kind() {
                            FailureKind::Retry => {
                                self.status.retries.fetch_add(1, Ordering::Relaxed);
                                self.status.connected.store(false, Ordering::Relaxed);
                                remote = None;
                                let delay = jitter.apply(backoff);
                                self.status
                                    .backoff_ms
                                    .store(delay.as_millis() as u64, Ordering::Relaxed);
                                next_try = Instant::now() + delay;
                                backoff = (backoff * 2).min(self.delivery.retry_max);
                            }
                            FailureKind::Hold | FailureKind::Quarantine => {
                                self.status.failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                self.status
                    .ready
                    .store((ready.len() - i - 1) as u64, Ordering::Relaxed);
                if last_persist.elapsed() >= Duration::from_millis(500) {
                    last_persist = Instant::now();
                    self.persist();
                }
                if remote.is_none() {
                    break;
                }
            }
        }
        self.persist();
    }
}

/// The running workers of all destinations.
pub struct Workers {
    handles: Vec<JoinHandle<()>>,
    statuses: Vec<Arc<DestStatus>>,
    stop: Arc<AtomicBool>,
}

impl Workers {
    /// One worker per configured destination; a destination only takes
    /// recordings of the contracts that name it.
    pub fn start(cfg: &Config, spool: &Spool, clock: Arc<dyn Clock>) -> io::Result<Workers> {
        let mut ws = Vec::new();
        for d in &cfg.destinations {
            let contracts = cfg
                .contracts
                .iter()
                .filter(|c| c.destination == d.name)
                .map(|c| c.id.clone())
                .collect();
            ws.push((d.clone(), Some(contracts)));
        }
        Workers::start_with(spool, &cfg.delivery, ws, clock, Duration::from_millis(200))
    }

    /// Lower-level start: explicit destinations and contract filters.
    pub fn start_with(
        spool: &Spool,
        delivery: &Delivery,
        dests: Vec<(Destination, Option<HashSet<String>>)>,
        clock: Arc<dyn Clock>,
        poll: Duration,
    ) -> io::Result<Workers> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        let mut statuses = Vec::new();
        for (dest, contracts) in dests {
            spool.ensure_destination(&dest.name)?;
            let status = Arc::new(DestStatus::new(&dest.name));
            statuses.push(status.clone());
            let w = Worker {
                spool: spool.clone(),
                dest: dest.clone(),
                delivery: delivery.clone(),
                contracts,
                clock: clock.clone(),
                status,
                stop: stop.clone(),
                poll,
            };
            handles.push(
                std::thread::Builder::new()
                    .name(format!("deliver-{}", dest.name))
                    .spawn(move || w.run())?,
            );
        }
        Ok(Workers {
            handles,
            statuses,
            stop,
        })
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
