//! `callrec run`: the daemon.
//!
//! Start-up, in an order that never loses a recording: the spool's queue
//! states are recovered (inflight back to ready, damaged files
//! quarantined), recordings a crash left half-written in `tmp/` are
//! repaired and queued, the delivery workers start (so the backlog drains
//! while we capture), and only then are the interfaces opened, all read
//! by one capture thread ([`crate::daemon::capture_thread`]) owning the
//! engine (decode, SIP, calls, routes, announcer) and its shard workers,
//! exactly as `replay` does with files: frames of several interfaces are
//! merged by time, so a call whose SIP and RTP take different interfaces
//! is one call. A live capture never blocks: a full shard ring drops the
//! packet and counts it.
//!
//! Signals: SIGTERM or SIGINT stop the capture within one
//! [`TICK`](crate::daemon::capture_thread::TICK) even on a silent link;
//! every open call is ended with reason `shutdown` and its recording
//! published before the process exits. SIGHUP re-reads the configuration
//! file: a valid one applies to calls that start afterwards (calls in
//! progress keep the contract they started with), an invalid one is
//! refused with the same error as `check-config` and the old one stays.
//!
//! systemd: `READY=1` once capturing, `RELOADING=1` around a reload,
//! `WATCHDOG=1` at half the watchdog period only while every capture
//! thread turns its loop and every delivery worker makes progress,
//! `STATUS=` with active calls, queues and the last alarm, `STOPPING=1`.
//! An interface that cannot be captured for `capture.retry_for` makes the
//! process exit 1, so `Restart=on-failure` restarts it.

use crate::announce::announcer::Announcer;
use crate::capture::fanout::Fanout;
use crate::capture::{CaptureError, LiveSource, Waker};
use crate::config::Config;
use crate::daemon::capture_thread::{CaptureThread, ControlReq, Interfaces, Links, LiveClock};
use crate::daemon::engine::{ActiveSummary, Engine};
use crate::daemon::media::MediaWorker;
use crate::daemon::replay::shard_count;
use crate::daemon::shard::ShardPool;
use crate::daemon::signals::Signals;
use crate::daemon::status::status_text;
pub use crate::daemon::status::{CaptureStatus, Shared, SourceStatus, ThreadStatus};
use crate::daemon::systemd::Notifier;
use crate::delivery::spool::{Spool, SpoolUsage};
use crate::delivery::worker::{DestStatus, SystemClock, Workers};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("capture.interfaces is empty: nothing to capture")]
    NoInterface,
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("announcements: {0}")]
    Announce(#[from] crate::announce::announcer::AnnouncerError),
    #[error(transparent)]
    Inline(#[from] crate::announce::inline::InlineError),
    /// A capture thread gave up (its interface stayed unusable).
    #[error("{0}")]
    CaptureLost(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// Ring slots per shard in live capture: about 0.3 s of 100,000 packets/s.
const LIVE_RING: usize = 32_768;

/// How long the control socket waits for a capture thread's answer (a
/// capture thread wakes for it at once; this bounds a wedged one).
const CONTROL_WAIT: Duration = Duration::from_secs(2);
/// A capture thread that has not turned its loop for this long is stuck
/// (it turns at least every tick): the watchdog goes unfed.
const CAPTURE_STALL: Duration = Duration::from_secs(5);
/// A delivery worker silent this long is stuck: every SSH operation has a
/// shorter timeout, so a healthy one always comes back to its loop.
const DELIVERY_STALL: Duration = Duration::from_secs(300);

/// A capture thread as the rest of the daemon reaches it.
struct CaptureLink {
    interface: String,
    control: mpsc::Sender<ControlReq>,
    waker: Arc<Waker>,
    heartbeat: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

/// Runs the daemon with `cfg`, read from `path` (re-read on SIGHUP).
pub fn run(cfg: Config, path: &Path) -> Result<(), RunError> {
    let notifier = Notifier::from_env();
    let signals = Signals::default();
    crate::daemon::signals::watch(&signals, "reloading the configuration")
        .map_err(io("signal handling"))?;
    let mut cfg = Arc::new(cfg);
    if cfg.capture.interfaces.is_empty()
        && (cfg.capture.hep.listen.is_empty()
            || cfg.announce.mode == crate::config::AnnounceMode::Inject)
    {
        return Err(RunError::NoInterface);
    }
    let spool_dir = cfg.recording.spool_dir.clone();
    std::fs::create_dir_all(&spool_dir).map_err(io(spool_dir.display().to_string()))?;
    let spool = Spool::open(&spool_dir).map_err(io(spool_dir.display().to_string()))?;
    let _lock = spool.lock(cfg.recording.perms()).map_err(io("spool"))?;
    let rec = spool
        .recover_at_startup(SystemTime::now())
        .map_err(io("spool recovery"))?;
    tracing::info!(?rec, "spool recovered");
    let tmp = crate::daemon::recovery::recover_tmp(&spool).map_err(io("tmp/ recovery"))?;
    if !(tmp.published.is_empty() && tmp.unclaimed.is_empty()) {
        tracing::warn!(
            queued = tmp.published.len(),
            unclaimed = tmp.unclaimed.len(),
            "recordings cut short by the last stop were repaired"
        );
    }
    let usage = SpoolUsage::measure(&spool).map_err(io("spool size"))?;
    let spool = spool.with_usage(usage.clone());
    let mut workers =
        Workers::start(&cfg, &spool, Arc::new(SystemClock)).map_err(io("delivery workers"))?;
    let shared: Shared = Arc::new(Mutex::new(vec![CaptureStatus {
        // The sources the engine reads: interfaces, and "hep" for agents.
        interface: cfg
            .capture
            .interfaces
            .iter()
            .map(String::as_str)
            .chain((!cfg.capture.hep.listen.is_empty()).then_some("hep"))
            .collect::<Vec<_>>()
            .join("+"),
        running: true,
        ..CaptureStatus::default()
    }]));
    let clock = LiveClock::start();
    let mut links = start_capture(&cfg, &spool_dir, &usage, &shared, &signals.stop, clock)?;
    let control = {
        let (shared, dests) = (shared.clone(), workers.statuses().to_vec());
        let offset = cfg.general.utc_offset_secs;
        let reach: Vec<(mpsc::Sender<ControlReq>, Arc<Waker>)> = links
            .iter()
            .map(|l| (l.control.clone(), l.waker.clone()))
            .collect();
        let reach = Mutex::new(reach);
        crate::daemon::control::serve(&cfg.daemon.control_socket, move |cmd| {
            let reach = reach.lock().unwrap_or_else(|e| e.into_inner()).clone();
            answer(cmd, &shared, &dests, &reach, offset)
        })
        .map_err(io(format!(
            "control socket {}",
            cfg.daemon.control_socket.display()
        )))?
    };
    drop(control);
    if let Some(addr) = cfg.daemon.metrics_listen {
        let src = crate::daemon::metrics::Sources {
            capture: shared.clone(),
            destinations: workers.statuses().to_vec(),
            usage: usage.clone(),
            spool_warn_bytes: cfg.recording.spool_warn_bytes,
            spool_max_bytes: cfg.recording.spool_max_bytes,
            started: SystemTime::now(),
            api: cfg.api.token.clone().map(|token| {
                Arc::new(crate::daemon::api::ApiConfig {
                    token,
                    spool: cfg.recording.spool_dir.clone(),
                    utc_offset_secs: cfg.general.utc_offset_secs,
                })
            }),
        };
        crate::daemon::metrics::serve(addr, src).map_err(io("metrics"))?;
    }
    // Segment rows follow the spool's folders each minute; retention
    // (`history.keep`) runs hourly while calls are written.
    crate::history::retention::spawn(
        cfg.recording.spool_dir.clone(),
        cfg.history.keep,
        Duration::from_secs(60),
        crate::history::retention::EVERY,
    )
    .map_err(io("history housekeeping"))?;
    if let Some(url) = cfg.history.postgres.clone() {
        crate::history::pg::spawn(
            cfg.recording.spool_dir.clone(),
            url,
            cfg.history.appliance.clone(),
        );
    }
    tracing::info!(
        interfaces = %cfg.capture.interfaces.join(","),
        "capturing"
    );
    notifier.notify(&format!(
        "READY=1\nSTATUS=capturing on {}",
        cfg.capture.interfaces.join(",")
    ));
    let failed = supervise(
        &notifier,
        &signals,
        &mut links,
        &mut workers,
        &mut cfg,
        path,
        &spool,
        &shared,
        clock,
    );
    signals.stop.store(true, Ordering::Relaxed);
    notifier.notify("STOPPING=1");
    tracing::info!("stopping: ending open calls and publishing their recordings");
    let mut failures: Vec<String> = failed.into_iter().collect();
    for l in &mut links {
        l.waker.wake();
        if let Some(Err(e)) = l.thread.take().and_then(|t| t.join().ok()) {
            failures.push(e);
        }
    }
    workers.stop();
    let _ = std::fs::remove_file(&cfg.daemon.control_socket);
    tracing::info!("stopped");
    match failures.is_empty() {
        true => Ok(()),
        false => Err(RunError::CaptureLost(failures.join("; "))),
    }
}

/// Opens every interface (a wrong name fails the start, naming it), then
/// starts the capture thread: one engine (decode, SIP, calls, routes,
/// announcer) for all of them, with the shard workers.
fn start_capture(
    cfg: &Arc<Config>,
    spool_dir: &Path,
    usage: &SpoolUsage,
    shared: &Shared,
    stop: &Arc<AtomicBool>,
    clock: LiveClock,
) -> Result<Vec<CaptureLink>, RunError> {
    let c = &cfg.capture;
    let opts = crate::capture::LiveOptions::from_config(c);
    let waker = Arc::new(Waker::new().map_err(io("eventfd"))?);
    let interfaces = match c.threads {
        // Several capture threads per interface (PACKET_FANOUT).
        2.. if !c.interfaces.is_empty() => Interfaces::Fanout(Fanout::start(
            &c.interfaces,
            c.threads,
            &opts,
            c.thread_queue,
            waker.clone(),
        )?),
        _ => Interfaces::Direct(
            c.interfaces
                .iter()
                .map(|name| LiveSource::open_with(name, &opts))
                .collect::<Result<_, _>>()?,
        ),
    };
    // Inline announcements: one worker (NFQUEUE) for the engine.
    let inline = match cfg.announce.mode {
        crate::config::AnnounceMode::Inline => {
            Some(crate::announce::inline::start(&cfg.announce.inline)?)
        }
        // Mirror: the prompt goes in the parties' own streams, ahead of them.
        crate::config::AnnounceMode::Inject => Some(crate::announce::mirror::start(
            &c.interfaces[0],
            cfg.announce
                .interface
                .as_deref()
                .unwrap_or(&c.interfaces[0]),
        )?),
        _ => None,
    };
    if let Some(w) = cfg.announce.warning() {
        tracing::warn!("{w}");
    }
    let shards = shard_count(cfg, None);
    let pool = ShardPool::start(shards, LIVE_RING, false, |k| {
        MediaWorker::new(cfg.clone(), k, usage.clone()).live()
    })
    .map_err(io("shard workers"))?;
    let announcer =
        Announcer::from_config(cfg, &spool_dir.join("announcements.pcap"))?.map(
            |a| match &inline {
                Some(h) => a.with_inline(h.clone()),
                None => a,
            },
        );
    let mut engine = Engine::new(cfg.clone(), spool_dir, pool, announcer, usage.clone())
        .map_err(io("call history"))?;
    // One interface: the journal folder is the one releases that ran an
    // engine per interface used, so an upgrade takes its calls back.
    let name: Vec<&str> = c.interfaces.iter().map(String::as_str).collect();
    let name = match name.is_empty() {
        // HEP only.
        true => "hep".to_owned(),
        false => name.join("+"),
    };
    engine.restore_journal(&spool_dir.join("state/calls").join(&name), clock.now());
    let (tx, rx) = mpsc::channel();
    let heartbeat = Arc::new(AtomicU64::new(clock.millis()));
    let links = Links {
        stop: stop.clone(),
        shared: shared.clone(),
        waker: waker.clone(),
        control: rx,
        heartbeat: heartbeat.clone(),
        clock,
    };
    let thread = CaptureThread::new(
        cfg.clone(),
        engine,
        links,
        interfaces,
        crate::capture::HepListener::from_config(cfg)?,
    );
    let t = std::thread::Builder::new()
        .name("callrec-capture".into())
        .spawn(move || thread.run())
        .map_err(io("capture thread"))?;
    Ok(vec![CaptureLink {
        interface: name,
        control: tx,
        waker,
        heartbeat,
        thread: Some(t),
    }])
}

/// The main thread's loop: signals, reloads, the watchdog and `STATUS=`.
/// Returns the reason when a capture thread gave up.
#[allow(clippy::too_many_arguments)]
fn supervise(
    notifier: &Notifier,
    signals: &Signals,
    links: &mut [CaptureLink],
    workers: &mut Workers,
    cfg: &mut Arc<Config>,
    path: &Path,
    spool: &Spool,
    shared: &Shared,
    clock: LiveClock,
) -> Option<String> {
    let watchdog = Notifier::watchdog_interval();
    let mut last_dog = Instant::now();
    let mut last_status = String::new();
    while !signals.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if signals.reload.swap(false, Ordering::Relaxed) {
            reload(notifier, path, cfg, links, workers, spool);
        }
        for l in links.iter_mut() {
            if l.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let why = match l.thread.take().map(|t| t.join()) {
                    // Told to stop (a signal since our last look).
                    Some(Ok(Ok(()))) if signals.stop.load(Ordering::Relaxed) => return None,
                    Some(Ok(Err(e))) => e,
                    _ => format!("capture thread for {} ended", l.interface),
                };
                tracing::error!(alarm = true, "{why}; shutting down (exit 1)");
                return Some(why);
            }
        }
        let healthy = stalled(links, workers, clock).is_none();
        if let Some(every) = watchdog
            && healthy
            && last_dog.elapsed() >= every
        {
            notifier.notify("WATCHDOG=1");
            last_dog = Instant::now();
        }
        let status = status_line(shared, workers.statuses(), stalled(links, workers, clock));
        if status != last_status {
            notifier.notify(&format!("STATUS={status}"));
            last_status = status;
        }
    }
    None
}

/// What is stuck, if anything: a capture thread that has not turned its
/// loop, or a delivery worker that has not come back to its own.
fn stalled(links: &[CaptureLink], workers: &Workers, clock: LiveClock) -> Option<String> {
    let now = clock.millis();
    for l in links {
        let since = now.saturating_sub(l.heartbeat.load(Ordering::Relaxed));
        if since > CAPTURE_STALL.as_millis() as u64 {
            return Some(format!("capture {} stalled {} ms", l.interface, since));
        }
    }
    let now = SystemTime::now();
    for d in workers.statuses() {
        if let Some(age) = d.heartbeat_age(now)
            && age > DELIVERY_STALL
        {
            return Some(format!("delivery {} stalled {} s", d.name, age.as_secs()));
        }
    }
    None
}

/// systemd's one-line status: calls, queues, the last alarm.
fn status_line(shared: &Shared, dests: &[Arc<DestStatus>], stall: Option<String>) -> String {
    let caps = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let active: u64 = caps.iter().map(|c| c.active_recorded).sum();
    let now = SystemTime::now();
    let ready: u64 = dests.iter().map(|d| d.snapshot(now).ready).sum();
    let held: u64 = dests.iter().map(|d| d.snapshot(now).held).sum();
    let mut s = format!("{active} recorded calls in progress; queued {ready}, held {held}");
    if let Some(st) = stall {
        let _ = write!(s, "; STALLED: {st}");
    }
    if let Some(a) = crate::daemon::last_alarm() {
        let _ = write!(s, "; last alarm: {a}");
    }
    s
}

/// SIGHUP: re-reads `path`. A valid configuration goes to every capture
/// thread (for calls that start from now on) and to the delivery workers
/// (new destinations start, contracts join theirs); an invalid one is
/// refused with the same error as `check-config` and nothing changes.
fn reload(
    notifier: &Notifier,
    path: &Path,
    cfg: &mut Arc<Config>,
    links: &[CaptureLink],
    workers: &mut Workers,
    spool: &Spool,
) {
    notifier.notify("RELOADING=1");
    match crate::config::load(path) {
        Err(e) => {
            tracing::error!(
                alarm = true,
                "configuration reload refused, the running configuration stays: {e}"
            );
            crate::daemon::raise_alarm(format!("reload refused: {e}"));
        }
        Ok(new) => {
            for key in restart_only_changes(cfg, &new) {
                tracing::warn!(key, "{key} changed: takes effect at the next restart");
            }
            let new = Arc::new(new);
            if let Err(e) = workers.reload(&new, spool, Arc::new(SystemClock)) {
                tracing::error!(error = %e, "reload: cannot start the new destinations' workers");
            }
            for l in links {
                let _ = l.control.send(ControlReq::Reload(new.clone()));
                l.waker.wake();
            }
            tracing::info!(contracts = new.contracts.len(), destinations = new.destinations.len(), path = %path.display(), "configuration reloaded: new calls follow it, calls in progress keep theirs");
            *cfg = new;
        }
    }
    notifier.notify("READY=1");
}

/// Keys a running daemon cannot change (its interfaces, spool, sockets,
/// shards, announcer): named in a warning at reload.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let d = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let mut v = Vec::new();
    if d(&old.capture, &new.capture) {
        v.push("[capture]");
    }
    if old.recording.spool_dir != new.recording.spool_dir {
        v.push("recording.spool_dir");
    }
    if d(&old.announce, &new.announce) {
        v.push("[announce]");
    }
    if d(&old.daemon, &new.daemon) {
        v.push("[daemon]");
    }
    if d(&old.limits, &new.limits) {
        v.push("[limits]");
    }
    let changed = |o: &crate::config::Destination| {
        new.destinations.iter().any(|n| n.name == o.name && d(n, o))
    };
    if old.destinations.iter().any(changed) {
        v.push("[[destination]] settings of an existing destination");
    }
    v
}

const COMMANDS: &str = "commands: status, pause CALL, resume CALL (CALL: the short id from status or the logs, or the Call-ID)";

/// A capture thread's request channel and the waker that makes it look.
type Reach = (mpsc::Sender<ControlReq>, Arc<Waker>);

/// The control socket's answers. A failure starts with `error:`.
fn answer(
    cmd: &str,
    shared: &Shared,
    dests: &[Arc<DestStatus>],
    capture: &[Reach],
    utc_offset_secs: i32,
) -> String {
    let mut words = cmd.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("status"), None, _) => {
            let calls: Vec<ActiveSummary> = shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .flat_map(|c| c.calls_in_progress.clone())
                .collect();
            status_text(shared, dests, &calls, utc_offset_secs)
        }
        (Some(verb @ ("pause" | "resume")), Some(call), None) => {
            let paused = verb == "pause";
            let found = ask_capture(capture, |reply| ControlReq::Pause {
                call: call.to_owned(),
                paused,
                reply,
            });
            match found.into_iter().flatten().next() {
                Some(id) => {
                    tracing::info!(call = %id, paused, "pause/resume asked on the control socket");
                    format!("{verb} call {id}: done\n")
                }
                None => format!("error: no recorded call in progress is {call:?}\n"),
            }
        }
        _ => format!("error: unknown command {cmd:?}; {COMMANDS}\n"),
    }
}

/// Asks every capture thread (waking it) and gathers the answers that
/// came in time.
fn ask_capture<T>(capture: &[Reach], make: impl Fn(mpsc::Sender<T>) -> ControlReq) -> Vec<T> {
    let (tx, rx) = mpsc::channel();
    let asked = capture
        .iter()
        .filter(|(c, w)| {
            let sent = c.send(make(tx.clone())).is_ok();
            w.wake();
            sent
        })
        .count();
    drop(tx);
    let deadline = Instant::now() + CONTROL_WAIT;
    (0..asked)
        .map_while(|_| {
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .ok()
        })
        .collect()
}
