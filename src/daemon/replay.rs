//! `callrec replay`: the live pipeline over capture files.
//!
//! Files are merged by time into one timeline (one file per interface or
//! capture point, or a rotated series: any order on the command line);
//! time is the packets' own, as the capture clock places it (the files
//! are one capture point: merging them by their stamps presumes that one
//! clock stamped them). A file that is cut short or corrupt is processed as far
//! as it can be read, named with the packet number in the report, and makes
//! the command exit 1 after everything else is done. So do records with
//! impossible headers (skipped), and frames cut below their length by a
//! small snap length when no call could be recorded (a warning otherwise).

use crate::capture::PacketSource;
use crate::capture::file::FileSource;
use crate::config::Config;
use crate::daemon::engine::{Engine, EngineStats};
use crate::daemon::media::MediaWorker;
use crate::daemon::shard::ShardPool;
use crate::decode::DecodeStats;
use crate::delivery::SpoolUsage;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct ReplayOptions {
    /// The spool: recordings, queues and calls.jsonl go here.
    pub out: PathBuf,
    pub captures: Vec<PathBuf>,
    pub deliver: bool,
    pub deliver_timeout: Duration,
    pub shards: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("announcements: {0}")]
    Announce(#[from] crate::announce::announcer::AnnouncerError),
}

#[derive(Debug, Default)]
pub struct ReplayReport {
    pub files: Vec<(PathBuf, u64)>,
    /// One line per capture that could not be read to its end, per record
    /// with a malformed header, and per capture whose cut frames left no
    /// call recorded: any of them makes `replay` exit 1.
    pub capture_errors: Vec<String>,
    /// Captures with frames cut below their length, calls recorded anyway.
    pub capture_warnings: Vec<String>,
    pub stats: EngineStats,
    pub decode: DecodeStats,
    pub tracker: crate::calls::tracker::TrackerStats,
    pub announce: Option<crate::announce::announcer::AnnounceStats>,
    pub elapsed: Duration,
    pub delivery_ok: bool,
    pub delivery: Option<String>,
    /// Recordings an earlier run left in tmp/, finished before this one.
    pub recovered: crate::daemon::recovery::TmpRecovery,
}

impl ReplayReport {
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let d = &self.decode;
        let st = &self.stats;
        for (f, n) in &self.files {
            let _ = writeln!(s, "capture {}: {n} packets", f.display());
        }
        let r = &self.recovered;
        if !(r.published.is_empty() && r.unclaimed.is_empty() && r.failed.is_empty()) {
            let _ = writeln!(
                s,
                "recovered from an earlier run: {} queued, {} unclaimed, {} unrepairable",
                r.published.len(),
                r.unclaimed.len(),
                r.failed.len()
            );
        }
        for e in &self.capture_errors {
            let _ = writeln!(s, "error: {e}");
        }
        for w in &self.capture_warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        let _ = writeln!(
            s,
            "packets {}  malformed {}  non-ip {}  fragments {} (reassembled {}, dropped {})  tcp-sip {}",
            d.frames,
            d.malformed,
            d.non_ip,
            d.fragments,
            d.reassembled,
            d.fragments_dropped,
            d.tcp_messages
        );
        let _ = writeln!(
            s,
            "sip messages {}  malformed sip {}  rtp routed {}  rtp from foreign sources {}  other udp {}",
            st.sip_messages, st.sip_malformed, st.rtp_routed, st.rtp_foreign, st.other_udp
        );
        if st.clock_outliers + st.clock_steps > 0 {
            let _ = writeln!(
                s,
                "clock outliers {} (stamped off the capture clock, placed by it)  clock steps {}",
                st.clock_outliers, st.clock_steps
            );
        }
        if d.sip_oversized > 0 {
            let _ = writeln!(
                s,
                "sip messages over limits.sip_message_bytes {} (dropped)",
                d.sip_oversized
            );
        }
        let t = &self.tracker;
        if t.invites_throttled + t.early_evicted > 0 {
            let _ = writeln!(
                s,
                "unanswered INVITEs not followed {} (limits.early_dialogs_per_source)  shed {} (limits.early_dialogs)",
                t.invites_throttled, t.early_evicted
            );
        }
        let skipped: u64 = st.skipped.values().sum();
        let _ = writeln!(
            s,
            "calls {}  recorded {}  skipped {}",
            st.calls, st.recorded, skipped
        );
        for (reason, n) in &st.skipped {
            let _ = writeln!(s, "  skipped {reason}: {n}");
        }
        if st.undecodable > 0 {
            let _ = writeln!(
                s,
                "  recorded but undecodable (encrypted or unsupported codec; nothing delivered): {}",
                st.undecodable
            );
        }
        if let Some(a) = &self.announce {
            let _ = writeln!(
                s,
                "announcements played {}  failed {}  packets {}  send errors {}",
                a.played, a.failed, a.packets, a.send_errors
            );
        }
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let _ = writeln!(
            s,
            "elapsed {:.3} s  ({:.0} packets/s)",
            secs,
            d.frames as f64 / secs
        );
        if let Some(dl) = &self.delivery {
            s.push_str(dl);
        }
        s
    }
}

/// Media shard threads to use: as asked, else as configured, else one per
/// core beside the capture thread.
pub fn shard_count(cfg: &Config, asked: Option<usize>) -> usize {
    let auto = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .saturating_sub(1)
        .max(1);
    asked
        .filter(|&n| n > 0)
        .or((cfg.recording.shards > 0).then_some(cfg.recording.shards))
        .unwrap_or(auto)
}

pub fn replay(mut cfg: Config, opts: &ReplayOptions) -> Result<ReplayReport, ReplayError> {
    cfg.recording.spool_dir = opts.out.clone();
    let io = |path: &PathBuf| {
        let path = path.clone();
        move |source| ReplayError::Io { path, source }
    };
    std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;
    let cfg = Arc::new(cfg);
    let n = shard_count(&cfg, opts.shards);
    let spool = crate::delivery::Spool::open(&opts.out).map_err(io(&opts.out))?;
    // This run is the spool's only writer until it returns; files and
    // folders get the configured modes whatever the umask.
    let _lock = spool.lock(cfg.recording.perms()).map_err(io(&opts.out))?;
    // Recordings an earlier run left half-written go to their queues first.
    let recovered = crate::daemon::recovery::recover_tmp(&spool).map_err(io(&opts.out))?;
    // One walk of the spool now; after that the shards count what they add.
    let usage = SpoolUsage::measure(&spool).map_err(io(&opts.out))?;
    let pool = ShardPool::start(n, 16_384, true, |i| {
        MediaWorker::new(cfg.clone(), i, usage.clone())
    })
    .map_err(io(&opts.out))?;
    let announcer = crate::announce::announcer::Announcer::from_config(
        &cfg,
        &opts.out.join("announcements.pcap"),
    )?;
    let mut engine =
        Engine::new(cfg.clone(), &opts.out, pool, announcer, usage).map_err(io(&opts.out))?;
    engine.sync_shards_before_spool_checks();
    let mut report = ReplayReport {
        recovered,
        ..ReplayReport::default()
    };
    let started = Instant::now();
    // Lines about frames cut by a snap length: which ones are errors is
    // known once it is known whether anything was recorded.
    let mut cut: Vec<(String, String)> = Vec::new();
    let mut files = Vec::new();
    for path in &opts.captures {
        match FileSource::open(path) {
            Ok(src) => files.push(Capture {
                path: path.clone(),
                src,
                count: 0,
            }),
            Err(e) => report.capture_errors.push(e.to_string()),
        }
    }
    // Merging files by their stamps presumes one clock stamped them (the
    // interfaces of one host, a rotated series): they are one capture
    // point, named by their paths for the clock's messages.
    let names: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
    engine.set_capture_point(&names.join("+"));
    match files.as_mut_slice() {
        [one] => read_one(&mut engine, one, &mut report),
        many => read_merged(&mut engine, many, &mut report),
    }
    for f in files {
        report.capture_errors.extend(f.src.bad_record_lines());
        if let (Some(fatal), Some(mild)) = (f.src.cut_line(true), f.src.cut_line(false)) {
            tracing::warn!("{mild}");
            cut.push((fatal, mild));
        }
        report.files.push((f.path, f.count));
    }
    report.decode = engine.decode_stats().clone();
    report.tracker = engine.tracker_stats().clone();
    report.announce = engine.announce_stats();
    report.stats = engine.finish("capture-end");
    for (fatal, mild) in cut {
        if report.stats.recorded == 0 {
            tracing::error!("{fatal}");
            report.capture_errors.push(fatal);
        } else {
            report.capture_warnings.push(mild);
        }
    }
    report.elapsed = started.elapsed();
    report.delivery_ok = true;
    if opts.deliver {
        let (ok, text) = crate::daemon::deliver_after_replay(&cfg, &opts.out, opts.deliver_timeout);
        report.delivery_ok = ok;
        report.delivery = Some(text);
    }
    Ok(report)
}

/// A capture file being replayed.
struct Capture {
    path: PathBuf,
    src: FileSource,
    /// Frames read.
    count: u64,
}

/// One file: its frames go to the engine where they lie.
fn read_one(engine: &mut Engine, f: &mut Capture, report: &mut ReplayReport) {
    loop {
        match f.src.next_packet() {
            Ok(Some(pkt)) => {
                f.count += 1;
                engine.on_packet(&pkt);
            }
            Ok(None) => break,
            Err(e) => {
                tracing::error!(error = %e, "capture unreadable");
                report.capture_errors.push(e.to_string());
                break;
            }
        }
    }
    engine.end_capture_point();
}

/// Several files (one per interface or capture point, or a rotated
/// series): merged by time into one timeline, as `mergecap` would, so a
/// call whose SIP and RTP were captured apart is seen whole. A file that
/// becomes unreadable ends there, named, and the others go on.
fn read_merged(engine: &mut Engine, files: &mut [Capture], report: &mut ReplayReport) {
    let mut heads = crate::capture::merge::Heads::new(files.len());
    let mut open = vec![true; files.len()];
    loop {
        for (i, f) in files.iter_mut().enumerate() {
            if !open[i] {
                continue;
            }
            let more = heads.fill(i, &mut f.src).unwrap_or_else(|e| {
                tracing::error!(error = %e, "capture unreadable");
                report.capture_errors.push(e.to_string());
                false
            });
            open[i] &= more;
        }
        let Some(i) = heads.earliest() else { break };
        files[i].count += 1;
        if let Some(pkt) = heads.take(i) {
            engine.on_packet(&pkt);
        }
    }
    engine.end_capture_point();
}
