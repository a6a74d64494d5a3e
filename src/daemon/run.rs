//! `callrec run`: the daemon.
//!
//! Start-up, in an order that never loses a recording: the spool's queue
//! states are recovered (inflight back to ready, damaged files
//! quarantined), recordings a crash left half-written in `tmp/` are
//! repaired and queued, the delivery workers start (so the backlog drains
//! while we capture), and only then is each interface opened, with one
//! capture thread per interface owning its engine (decode, SIP, calls,
//! routes, announcer) and its shard workers, exactly as `replay` does with
//! a file. A live capture never blocks: a full shard ring drops the packet
//! and counts it. When no frame arrives within libpcap's read timeout the
//! engine is ticked with the wall clock, so timeouts and announcements go
//! on over a silent link.
//!
//! Signals: SIGTERM or SIGINT stop the capture; every open call is ended
//! with reason `shutdown` and its recording published before the process
//! exits. systemd: `READY=1` once capturing, `WATCHDOG=1` at half the
//! watchdog period while the capture threads are alive, `STOPPING=1`.
//! Status goes to the control socket (`callrec status`) and, when
//! `daemon.metrics_listen` is set, to a Prometheus text endpoint.
//!
//! Calls whose signalling and media cross different interfaces are not
//! matched: each interface's engine sees only its own traffic.

use crate::announce::announcer::Announcer;
use crate::capture::{CaptureError, LiveSource, PacketSource};
use crate::config::Config;
use crate::daemon::engine::{ActiveSummary, Engine};
use crate::daemon::media::MediaWorker;
use crate::daemon::replay::shard_count;
use crate::daemon::shard::ShardPool;
use crate::daemon::systemd::Notifier;
use crate::delivery::spool::{Spool, SpoolUsage};
use crate::delivery::worker::{DestStatus, SystemClock, Workers};
use crate::time::Timestamp;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
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
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// Ring slots per shard in live capture: about 0.3 s of 100,000 packets/s.
const LIVE_RING: usize = 32_768;

/// A control socket request for a capture thread: the calls belong to the
/// engine on that thread, so the question goes to it and the answer back.
enum ControlReq {
    Calls(mpsc::Sender<Vec<ActiveSummary>>),
    Pause {
        call: String,
        paused: bool,
        reply: mpsc::Sender<Option<String>>,
    },
}

/// Packets between two looks at the control requests on a busy link (an
/// idle one looks at every read timeout): a `pause` takes effect within
/// microseconds, before the digits it is meant to hide.
const CONTROL_EVERY: u64 = 64;
/// How long the control socket waits for a capture thread's answer.
const CONTROL_WAIT: Duration = Duration::from_secs(2);

/// What one capture thread last reported (once a second).
#[derive(Clone, Debug, Default)]
pub struct CaptureStatus {
    pub interface: String,
    pub running: bool,
    pub packets: u64,
    pub sip_messages: u64,
    pub rtp_routed: u64,
    pub rtp_foreign: u64,
    pub calls: u64,
    pub recorded: u64,
    pub active_recorded: u64,
    /// Frames libpcap lost before we read them (kernel ring full).
    pub pcap_dropped: u64,
    pub if_dropped: u64,
    /// RTP the shard rings had no room for.
    pub ring_dropped: u64,
    pub error: Option<String>,
    /// Calls not recorded, by the history's reason.
    pub skipped: std::collections::BTreeMap<String, u64>,
    /// The announcer's counters (None without announcements).
    pub announce: Option<crate::announce::announcer::AnnounceStats>,
}

pub type Shared = Arc<Mutex<Vec<CaptureStatus>>>;

pub fn run(cfg: Config) -> Result<(), RunError> {
    let notifier = Notifier::from_env();
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone()).map_err(io("signal handling"))?;
    let cfg = Arc::new(cfg);
    if cfg.capture.interfaces.is_empty() {
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
    let workers = Workers::start(
        &cfg,
        &spool.clone().with_usage(usage.clone()),
        Arc::new(SystemClock),
    )
    .map_err(io("delivery workers"))?;
    let dests: Vec<Arc<DestStatus>> = workers.statuses().to_vec();

    // Open every interface before starting anything on it: a wrong name
    // fails the start with the interface named.
    let mut sources = Vec::new();
    for name in &cfg.capture.interfaces {
        sources.push(LiveSource::open(
            name,
            cfg.capture.snaplen,
            cfg.capture.promiscuous,
            cfg.capture.buffer_bytes,
        )?);
    }
    let n_if = sources.len();
    let per_if = (shard_count(&cfg, None) / n_if).max(1);
    let shared: Shared = Arc::new(Mutex::new(
        cfg.capture
            .interfaces
            .iter()
            .map(|i| CaptureStatus {
                interface: i.clone(),
                running: true,
                ..CaptureStatus::default()
            })
            .collect(),
    ));
    let mut threads = Vec::new();
    let mut control_txs = Vec::new();
    for (i, src) in sources.into_iter().enumerate() {
        let pool = ShardPool::start(per_if, LIVE_RING, false, |k| {
            MediaWorker::new(cfg.clone(), i * per_if + k, usage.clone())
        })
        .map_err(io("shard workers"))?;
        let pcap_name = if n_if == 1 {
            "announcements.pcap".to_owned()
        } else {
            format!("announcements-{}.pcap", src.name())
        };
        let announcer = Announcer::from_config(&cfg, &spool_dir.join(pcap_name))?;
        let engine = Engine::new(cfg.clone(), &spool_dir, pool, announcer, usage.clone())
            .map_err(io("call history"))?;
        let (stop, shared) = (stop.clone(), shared.clone());
        let (ctl_tx, ctl_rx) = mpsc::channel();
        control_txs.push(ctl_tx);
        let t = std::thread::Builder::new()
            .name(format!("callrec-cap{i}"))
            .spawn(move || capture_loop(i, src, engine, &stop, &shared, &ctl_rx))
            .map_err(io("capture thread"))?;
        threads.push(t);
    }

    let control = {
        let (shared, dests) = (shared.clone(), dests.clone());
        let offset = cfg.general.utc_offset_secs;
        let txs = Mutex::new(control_txs);
        crate::daemon::control::serve(&cfg.daemon.control_socket, move |cmd| {
            let txs = txs.lock().unwrap_or_else(|e| e.into_inner()).clone();
            answer(cmd, &shared, &dests, &txs, offset)
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
            destinations: dests.clone(),
            usage: usage.clone(),
            spool_warn_bytes: cfg.recording.spool_warn_bytes,
            spool_max_bytes: cfg.recording.spool_max_bytes,
            started: SystemTime::now(),
        };
        crate::daemon::metrics::serve(addr, src).map_err(io("metrics"))?;
    }
    tracing::info!(
        interfaces = %cfg.capture.interfaces.join(","),
        shards = per_if * n_if,
        "capturing"
    );
    notifier.notify(&format!(
        "READY=1\nSTATUS=capturing on {}",
        cfg.capture.interfaces.join(",")
    ));
    let watchdog = Notifier::watchdog_interval();
    let mut last_dog = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let alive = threads.iter().any(|t| !t.is_finished());
        if !alive {
            tracing::error!("every capture thread has stopped; shutting down");
            break;
        }
        if let Some(every) = watchdog {
            // Only while capture is alive: a wedged daemon gets restarted.
            if last_dog.elapsed() >= every {
                notifier.notify("WATCHDOG=1");
                last_dog = Instant::now();
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    notifier.notify("STOPPING=1");
    tracing::info!("stopping: ending open calls and publishing their recordings");
    for t in threads {
        let _ = t.join();
    }
    workers.stop();
    let _ = std::fs::remove_file(&cfg.daemon.control_socket);
    tracing::info!("stopped");
    Ok(())
}

/// One interface: frames to the engine until told to stop.
fn capture_loop(
    i: usize,
    mut src: LiveSource,
    mut engine: Engine,
    stop: &AtomicBool,
    shared: &Shared,
    control: &mpsc::Receiver<ControlReq>,
) {
    let mut last_report = Instant::now();
    let mut error = None;
    let mut packets = 0u64;
    while !stop.load(Ordering::Relaxed) {
        match src.next_packet() {
            Ok(Some(pkt)) => {
                engine.on_packet(&pkt);
                packets += 1;
                if packets.is_multiple_of(CONTROL_EVERY) {
                    serve_control(&mut engine, control);
                }
            }
            Ok(None) => {
                engine.on_idle(wall_now());
                serve_control(&mut engine, control);
            }
            Err(e) => {
                tracing::error!(error = %e, "capture failed");
                error = Some(e.to_string());
                break;
            }
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            // A busy link never times out: keep the clock moving anyway.
            engine.on_idle(wall_now());
            report(i, &mut src, &engine, shared, true, None);
        }
    }
    report(i, &mut src, &engine, shared, false, error);
    let stats = engine.finish("shutdown");
    tracing::info!(
        interface = %src.name(),
        packets = stats.packets,
        recorded = stats.recorded,
        "capture stopped"
    );
}

/// Answers what the control socket asked this capture thread.
fn serve_control(engine: &mut Engine, control: &mpsc::Receiver<ControlReq>) {
    while let Ok(req) = control.try_recv() {
        match req {
            ControlReq::Calls(reply) => {
                let _ = reply.send(engine.active_calls());
            }
            ControlReq::Pause {
                call,
                paused,
                reply,
            } => {
                let _ = reply.send(engine.set_paused(&call, paused));
            }
        }
    }
}

fn wall_now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(d.as_micros() as i64)
}

fn report(
    i: usize,
    src: &mut LiveSource,
    engine: &Engine,
    shared: &Shared,
    running: bool,
    error: Option<String>,
) {
    let st = engine.stats();
    let pcap = src.stats().unwrap_or_default();
    let mut all = shared.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = all.get_mut(i) {
        *s = CaptureStatus {
            interface: s.interface.clone(),
            running,
            packets: st.packets,
            sip_messages: st.sip_messages,
            rtp_routed: st.rtp_routed,
            rtp_foreign: st.rtp_foreign,
            calls: st.calls,
            recorded: st.recorded,
            active_recorded: engine.active_recorded() as u64,
            pcap_dropped: pcap.dropped,
            if_dropped: pcap.if_dropped,
            ring_dropped: engine.ring_drops(),
            error: error.or(s.error.take()),
            skipped: st.skipped.clone(),
            announce: engine.announce_stats(),
        };
    }
}

/// SIGTERM and SIGINT set `stop`. A small tokio runtime on its own thread
/// waits for them: tokio runs what waits, never the packet path.
fn watch_signals(stop: Arc<AtomicBool>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Registered before returning, so a signal from now on is not missed.
    let (mut term, mut int) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("callrec-signals".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM"),
                    _ = int.recv() => tracing::info!("SIGINT"),
                }
            });
            stop.store(true, Ordering::Relaxed);
        })?;
    Ok(())
}

const COMMANDS: &str = "commands: status, pause CALL, resume CALL (CALL: the short id from status or the logs, or the Call-ID)";

/// The control socket's answers. A failure starts with `error:`.
fn answer(
    cmd: &str,
    shared: &Shared,
    dests: &[Arc<DestStatus>],
    capture: &[mpsc::Sender<ControlReq>],
    utc_offset_secs: i32,
) -> String {
    let mut words = cmd.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("status"), None, _) => {
            let calls = ask_capture(capture, ControlReq::Calls);
            status_text(shared, dests, &calls.concat(), utc_offset_secs)
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

/// Asks every capture thread and gathers the answers that came in time.
fn ask_capture<T>(
    capture: &[mpsc::Sender<ControlReq>],
    make: impl Fn(mpsc::Sender<T>) -> ControlReq,
) -> Vec<T> {
    let (tx, rx) = mpsc::channel();
    let asked = capture
        .iter()
        .filter(|c| c.send(make(tx.clone())).is_ok())
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

fn status_text(
    shared: &Shared,
    dests: &[Arc<DestStatus>],
    calls: &[ActiveSummary],
    utc_offset_secs: i32,
) -> String {
    let mut s = String::new();
    let caps = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let active: u64 = caps.iter().map(|c| c.active_recorded).sum();
    let _ = writeln!(s, "active recorded calls {active}");
    for c in calls {
        let _ = writeln!(
            s,
            "  call {}  contract {}  {}  answered {}",
            c.short_id,
            c.contract,
            c.direction,
            c.answered_at.rfc3339(utc_offset_secs)
        );
    }
    for c in &caps {
        let _ = writeln!(
            s,
            "capture {}: {}  packets {}  sip {}  rtp {}  calls {}  recorded {}  dropped: pcap {} interface {} ring {}  foreign rtp {}{}",
            c.interface,
            if c.running { "running" } else { "stopped" },
            c.packets,
            c.sip_messages,
            c.rtp_routed,
            c.calls,
            c.recorded,
            c.pcap_dropped,
            c.if_dropped,
            c.ring_dropped,
            c.rtp_foreign,
            c.error
                .as_deref()
                .map(|e| format!("  error: {e}"))
                .unwrap_or_default()
        );
    }
    let now = SystemTime::now();
    for d in dests {
        let q = d.snapshot(now);
        let _ = writeln!(
            s,
            "queue {}: ready {}  inflight {}  held {}  quarantine {}  delivered {}  oldest {}{}",
            q.destination,
            q.ready,
            q.inflight,
            q.held,
            q.quarantine,
            d.delivered.load(Ordering::Relaxed),
            q.oldest_ready_unix_ms
                .map(|ms| {
                    let now_ms = now
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_millis() as u64;
                    format!("{} s", now_ms.saturating_sub(ms) / 1000)
                })
                .unwrap_or_else(|| "-".into()),
            d.last_error
                .lock()
                .ok()
                .and_then(|e| e.clone())
                .map(|e| format!("  last error: {e}"))
                .unwrap_or_default()
        );
    }
    s
}
