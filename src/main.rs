//! The `callrec` command line: argument parsing and exit codes only. All
//! behaviour lives in the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "callrec",
    version,
    about = "Carrier-side call recording: capture, announce, record, deliver"
)]
struct Cli {
    /// Log output: auto (the journal when stderr is the journal, else text), text, json, journal.
    #[arg(long, global = true, default_value = "auto")]
    log_format: callrec::daemon::logging::LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per process: the size of its largest variant (`calls`) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// The daemon: live capture, announcements, recording, delivery (systemd Type=notify).
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// The same pipeline over pcap/pcapng files, time taken from the packets.
    Replay {
        #[arg(long)]
        config: PathBuf,
        /// Where recordings and the call history are written (the spool).
        #[arg(long)]
        out: PathBuf,
        /// Also push the recordings to their destinations and wait until the queues are empty.
        #[arg(long)]
        deliver: bool,
        /// How long --deliver waits at most.
        #[arg(long, default_value = "10m")]
        deliver_timeout: String,
        /// Media shard threads (default: from the configuration).
        #[arg(long)]
        shards: Option<usize>,
        #[arg(required = true)]
        captures: Vec<PathBuf>,
    },
    /// Capture agent: sends what this host's mirror port sees to the central appliance(s) as HEPv3 ([forward]).
    Forward {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validates the configuration and prints the effective contracts and destinations.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// The call history, newest first, from its index beside the spool's calls.jsonl.
    Calls {
        /// The spool holding calls.jsonl (default: the configuration's).
        #[arg(long, required_unless_present_any = ["config", "db"])]
        spool: Option<PathBuf>,
        /// The configuration: its spool, and its zone for bare dates (without it,
        /// the zone the newest call was written in).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        contract: Option<String>,
        /// inbound or outbound.
        #[arg(long)]
        direction: Option<String>,
        /// record or skip.
        #[arg(long)]
        decision: Option<String>,
        #[arg(long)]
        reason: Option<String>,
        /// Matches caller or callee.
        #[arg(long)]
        number: Option<String>,
        /// A Call-ID or short id.
        #[arg(long)]
        call: Option<String>,
        /// RFC 3339 instant (inclusive) or a date (from its midnight in the zone).
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339 instant (exclusive) or a date (that day included).
        #[arg(long)]
        until: Option<String>,
        /// newest (default), oldest, or ended (the order calls ended in).
        #[arg(long)]
        sort: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        /// table, csv (RFC 4180, safe for spreadsheets) or json.
        #[arg(long, default_value = "table")]
        format: String,
        /// Rebuilds the index from calls.jsonl (and the segment rows from the spool's queue) first.
        #[arg(long)]
        reindex: bool,
        /// One row per recorded segment of the matching calls: file, destination, delivery state.
        #[arg(long, conflicts_with = "db")]
        segments: bool,
        /// Asks the fleet database (PostgreSQL URL) instead of this spool: every appliance's calls.
        #[arg(long, value_name = "URL")]
        db: Option<String>,
        /// Pushes this spool's rows not yet in the fleet database (history.postgres) and exits.
        #[arg(long, requires = "config")]
        push: bool,
    },
    /// The delivery queue per destination.
    Queue {
        #[arg(long)]
        config: PathBuf,
        #[command(subcommand)]
        action: Option<QueueAction>,
    },
    /// Asks the running daemon: active calls, queues, capture drops.
    Status {
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Pauses a call's recording from now (silence is recorded until resume).
    Pause {
        /// The call's short id (from `callrec status` or the logs) or its Call-ID.
        call: String,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Resumes a paused call's recording (a beep marks the resume).
    Resume {
        /// The call's short id (from `callrec status` or the logs) or its Call-ID.
        call: String,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
}

/// How to reach the running daemon.
#[derive(clap::Args, Clone)]
struct DaemonArgs {
    /// The daemon's control socket (default: from the configuration, or /run/callrec/control.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    #[arg(long)]
    config: Option<PathBuf>,
}

impl DaemonArgs {
    /// Sends one control command; a reply starting with `error:` exits 1.
    fn ask(&self, command: &str) -> anyhow::Result<ExitCode> {
        let path = match (&self.socket, &self.config) {
            (Some(s), _) => s.clone(),
            (None, Some(c)) => load_config(c)?.daemon.control_socket,
            (None, None) => "/run/callrec/control.sock".into(),
        };
        let reply = callrec::daemon::control::query(&path, command)
            .with_context(|| format!("asking the daemon at {}", path.display()))?;
        if reply.starts_with("error:") {
            eprint!("{reply}");
            return Ok(ExitCode::from(1));
        }
        print!("{reply}");
        Ok(ExitCode::SUCCESS)
    }
}

#[derive(Subcommand, Clone)]
enum QueueAction {
    List,
    /// Moves held recordings back to ready and retries now.
    Retry {
        #[arg(long)]
        destination: Option<String>,
    },
    /// Holds ready recordings.
    Hold {
        #[arg(long)]
        destination: Option<String>,
    },
    /// Releases held recordings.
    Release {
        #[arg(long)]
        destination: Option<String>,
    },
}

/// Exit 2: the user asked for something we cannot do as asked.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    callrec::daemon::logging::init(cli.log_format);
    match dispatch(cli.cmd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("callrec: {e:#}");
            if e.downcast_ref::<callrec::config::ConfigError>().is_some()
                || e.downcast_ref::<UsageError>().is_some()
                || e.downcast_ref::<callrec::daemon::run::RunError>()
                    .is_some_and(refused_at_start)
            {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Start-up failures that are the host's setup, not a fault at run time
/// (exit 2): a port or control socket another process holds, a spool
/// another daemon writes, a spool folder we may not write.
fn refused_at_start(e: &callrec::daemon::run::RunError) -> bool {
    use std::io::ErrorKind::{AddrInUse, PermissionDenied, ResourceBusy};
    matches!(e, callrec::daemon::run::RunError::Io { source, .. }
        if matches!(source.kind(), AddrInUse | ResourceBusy | PermissionDenied))
}

fn load_config(path: &std::path::Path) -> anyhow::Result<callrec::config::Config> {
    Ok(callrec::config::load(path)?)
}

fn dispatch(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Run { config } => {
            let cfg = load_config(&config)?;
            callrec::daemon::run::run(cfg, &config)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Replay {
            config,
            out,
            deliver,
            deliver_timeout,
            shards,
            captures,
        } => {
            let cfg = load_config(&config)?;
            let timeout = callrec::config::parse_duration(&deliver_timeout).ok_or_else(|| {
                UsageError(format!(
                    "--deliver-timeout: not a duration: {deliver_timeout}"
                ))
            })?;
            let opts = callrec::daemon::replay::ReplayOptions {
                out,
                captures,
                deliver,
                deliver_timeout: timeout,
                shards,
            };
            let report = callrec::daemon::replay::replay(cfg, &opts)?;
            print!("{}", report.summary());
            Ok(if report.capture_errors.is_empty() && report.delivery_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Forward { config } => {
            let cfg = load_config(&config)?;
            callrec::forward::run(cfg, &config)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::CheckConfig { config } => {
            let cfg = load_config(&config)?;
            callrec::announce::check_prompts(&cfg).map_err(|e| {
                callrec::config::ConfigError::Invalid {
                    path: cfg.source.clone(),
                    line: 0,
                    key: "announce.dir".into(),
                    reason: e.to_string(),
                }
            })?;
            print!("{}", callrec::report::check_config_report(&cfg));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Calls {
            spool,
            config,
            contract,
            direction,
            decision,
            reason,
            number,
            call,
            since,
            until,
            sort,
            limit,
            format,
            reindex,
            segments,
            db,
            push,
        } => {
            let q = callrec::report::CallsQuery {
                contract,
                direction,
                decision,
                reason,
                number,
                call,
                since,
                until,
                sort,
                limit,
            };
            if push {
                return push_command(&config.expect("clap requires --config"));
            }
            if let Some(url) = db {
                return fleet_command(&url, config, q, &format);
            }
            calls_command(spool, config, q, &format, (reindex, segments))
        }
        Cmd::Queue { config, action } => {
            let cfg = load_config(&config)?;
            // Folders and files it creates get the daemon's modes and group.
            callrec::recording::perms::configure(cfg.recording.perms());
            use callrec::delivery::queue::QueueCmd;
            let cmd = match action.unwrap_or(QueueAction::List) {
                QueueAction::List => QueueCmd::List,
                QueueAction::Retry { destination } => QueueCmd::Retry { destination },
                QueueAction::Hold { destination } => QueueCmd::Hold { destination },
                QueueAction::Release { destination } => QueueCmd::Release { destination },
            };
            print!("{}", callrec::delivery::queue::queue_command(&cfg, cmd)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { daemon } => daemon.ask("status"),
        Cmd::Pause { call, daemon } => daemon.ask(&format!("pause {call}")),
        Cmd::Resume { call, daemon } => daemon.ask(&format!("resume {call}")),
    }
}

/// `callrec calls --push`: the fleet database catches up with this spool.
fn push_command(config: &std::path::Path) -> anyhow::Result<ExitCode> {
    let cfg = load_config(config)?;
    callrec::recording::perms::configure(cfg.recording.perms());
    let url =
        cfg.history.postgres.clone().ok_or_else(|| {
            UsageError(format!("{}: history.postgres is not set", config.display()))
        })?;
    let mut c = callrec::history::pg::connect(&url)?;
    let spool = &cfg.recording.spool_dir;
    let n = callrec::history::pg::push(spool, &mut c, &cfg.history.appliance)?;
    let s = callrec::history::pg_segments::push_segments(spool, &mut c, &cfg.history.appliance)?;
    eprintln!(
        "callrec: {n} rows pushed as appliance {} ({s} segment rows)",
        cfg.history.appliance
    );
    Ok(ExitCode::SUCCESS)
}

/// `callrec calls --db URL`: the same filters over every appliance's rows.
fn fleet_command(
    url: &str,
    config: Option<PathBuf>,
    q: callrec::report::CallsQuery,
    format: &str,
) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let f = out_format(format)?;
    let offset = match &config {
        Some(c) => load_config(c)?.general.utc_offset_secs,
        None => 0,
    };
    let filter = q.validate(offset).map_err(|e| UsageError(e.to_string()))?;
    let mut c = callrec::history::pg::connect(url)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    callrec::report::write_rows(f, &mut out, true, &mut |each| {
        callrec::history::pg::query(&mut c, &filter, |a, r| each(Some(a), r))
    })?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn out_format(format: &str) -> anyhow::Result<callrec::report::OutFormat> {
    use callrec::report::OutFormat;
    Ok(match format {
        "table" => OutFormat::Table,
        "csv" => OutFormat::Csv,
        "json" => OutFormat::Json,
        other => {
            return Err(UsageError(format!(
                "--format: expected table, csv or json, got {other}"
            ))
            .into());
        }
    })
}

/// `callrec calls`: validates, catches the index up (or rebuilds it),
/// streams the rows to stdout. A bad filter exits 2 naming it.
fn calls_command(
    spool: Option<PathBuf>,
    config: Option<PathBuf>,
    q: callrec::report::CallsQuery,
    format: &str,
    (reindex, segments): (bool, bool),
) -> anyhow::Result<ExitCode> {
    use callrec::report::ReportError;
    use std::io::Write;
    let f = out_format(format)?;
    let cfg = config.as_deref().map(load_config).transpose()?;
    if let Some(c) = &cfg {
        callrec::recording::perms::configure(c.recording.perms());
    }
    let spool = match (spool, &cfg) {
        (Some(s), _) => s,
        (None, Some(c)) => c.recording.spool_dir.clone(),
        (None, None) => unreachable!("clap requires --spool, --config or --db"),
    };
    let usage = |e: ReportError| -> anyhow::Error {
        match e {
            e @ ReportError::BadFilter { .. } => UsageError(e.to_string()).into(),
            e => anyhow::Error::new(e).context("reading the call history"),
        }
    };
    // Refuse a bad filter before touching anything.
    q.validate(0).map_err(usage)?;
    if !spool.join("calls.jsonl").exists() && !spool.join("calls.sqlite").exists() {
        // No history yet: an empty answer, and no index created for it.
        let mut out = Vec::new();
        callrec::report::write_empty(f, &mut out).map_err(usage)?;
        std::io::stdout().write_all(&out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let (mut ix, warnings) = if reindex {
        let mut ix = callrec::history::index::Index::open(&spool).map_err(|e| usage(e.into()))?;
        let w = ix.reindex().map_err(|e| usage(e.into()))?;
        eprintln!(
            "callrec: index {} rebuilt from calls.jsonl",
            ix.path().display()
        );
        (ix, w)
    } else {
        callrec::report::open_index(&spool).map_err(usage)?
    };
    for w in &warnings {
        eprintln!("callrec: {w}");
    }
    if reindex || segments {
        // The segment rows follow the spool's delivery folders; a reader
        // that may not write the index still gets the daemon's last sync.
        if let Err(e) = callrec::history::segments::sync(&mut ix, &spool) {
            eprintln!(
                "callrec: segment states as of the daemon's last sync (a minute at most): {e}"
            );
        }
    }
    let offset = cfg
        .as_ref()
        .map(|c| c.general.utc_offset_secs)
        .unwrap_or_else(|| callrec::report::history_offset(&ix));
    let filter = q.validate(offset).map_err(usage)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let r = if segments {
        callrec::report::write_segments(&ix, &filter, f, &mut out)
    } else {
        callrec::report::write_calls(&ix, &filter, f, &mut out)
    }
    .and_then(|_| Ok(out.flush()?));
    match r {
        // `| head` closed the pipe: not an error.
        Err(ReportError::Out(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(usage(e)),
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}
