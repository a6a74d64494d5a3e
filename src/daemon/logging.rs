//! Log output: `tracing` to the journal, to stderr as plain text, or to
//! stderr as JSON lines. Level from `CALLREC_LOG` (an EnvFilter), default
//! `info`.
//!
//! `auto` (the default) picks the journal's native protocol
//! (`tracing-journald`: a `PRIORITY` per level and every structured field
//! as its own journal field, `CALL`, `CONTRACT`, `DECISION`, `REASON`...)
//! when stderr *is* the journal: systemd sets `JOURNAL_STREAM` to the
//! device and inode of the stream it connected stderr to, and we compare
//! them with stderr's own (systemd.exec(5), "JOURNAL_STREAM"), so a child
//! whose stderr was redirected elsewhere does not write to the journal.
//! Otherwise plain text, coloured only when stderr is a terminal (escape
//! codes in the journal or a file are noise journald stores as blobs).
//!
//! A journal that goes away at run time (journald restarted) loses the
//! lines sent meanwhile and nothing else: every line is one datagram sent
//! to the socket's path, so the next line after the restart arrives.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where and how log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// The journal when stderr is the journal, else text.
    #[default]
    Auto,
    /// Plain text on stderr (colour only on a terminal).
    Text,
    /// One JSON object per line on stderr.
    Json,
    /// The journal's native protocol; text on stderr if it cannot be reached.
    Journal,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(LogFormat::Auto),
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            "journal" => Ok(LogFormat::Journal),
            other => Err(format!(
                "--log-format: expected auto, text, json or journal, got {other}"
            )),
        }
    }
}

/// Whether `JOURNAL_STREAM` (`DEVICE:INODE`, decimal) names the stream
/// stderr is connected to.
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on fd 2 writes into the zeroed struct we own.
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

/// The journald layer: `PRIORITY` 3 (error), 4 (warn), 6 (info), 7 (debug,
/// trace) as syslog(3) means them, fields without prefix (`call` becomes
/// `CALL`), identifier `callrec`.
pub fn journald_layer() -> std::io::Result<tracing_journald::Layer> {
    use tracing_journald::{Priority, PriorityMappings};
    let prio = PriorityMappings {
        info: Priority::Informational,
        debug: Priority::Debug,
        ..PriorityMappings::new()
    };
    Ok(tracing_journald::layer()?
        .with_field_prefix(None)
        .with_priority_mappings(prio)
        .with_syslog_identifier("callrec".into()))
}

/// Installs the global subscriber. Called once, by `main`.
pub fn init(format: LogFormat) {
    let filter =
        || EnvFilter::try_from_env("CALLREC_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let journal = match format {
        LogFormat::Journal => true,
        LogFormat::Auto => stderr_is_journal(),
        LogFormat::Text | LogFormat::Json => false,
    };
    if journal {
        match journald_layer() {
            Ok(layer) => {
                let _ = tracing_subscriber::registry()
                    .with(filter())
                    .with(layer)
                    .try_init();
                return;
            }
            Err(e) => eprintln!("callrec: the journal cannot be reached ({e}); logging to stderr"),
        }
    }
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if format == LogFormat::Json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.with_ansi(ansi).try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_unknown_ones_are_named() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("auto".parse::<LogFormat>(), Ok(LogFormat::Auto));
        let e = "yaml".parse::<LogFormat>().unwrap_err();
        assert!(e.contains("yaml") && e.contains("json"), "{e}");
    }
}
