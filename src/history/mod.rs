//! The call history: one JSON line per call in `SPOOL/calls.jsonl`,
//! recorded or not, written by the signalling thread when a call ends.
//! The log is the record; `SPOOL/calls.sqlite` ([`index`]) is an index
//! of it that `callrec calls` answers from, kept up to date line by line
//! and rebuilt from the log whenever it is missing, corrupt or behind.

pub mod hep;
pub mod index;
pub mod pg;
pub mod pg_segments;
pub mod retention;
pub mod segments;

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One history line. Strict as it is (the call-state journal relies on
/// that); [`index::parse_line`] reads older lines with missing fields.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CallRecord {
    pub call_id: String,
    /// Short id used in log lines.
    pub short_id: String,
    pub direction: Option<String>,
    pub contract: Option<String>,
    pub service: Option<String>,
    pub caller: String,
    pub callee: String,
    pub prefix: Option<String>,
    /// "record" or "skip".
    pub decision: String,
    pub reason: Option<String>,
    pub invite_at: String,
    pub answered_at: Option<String>,
    /// When the compliance announcement started: billing starts here.
    pub billing_start: Option<String>,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
    pub segments: u32,
}

/// Appends history lines; each line is written whole and flushed so a
/// crash never leaves half a line for the next reader. Each line is then
/// added to the index; an index that cannot be written is logged and
/// caught up from the log later (the log is never held back by it).
pub struct HistoryWriter {
    path: PathBuf,
    /// The log, shared with the process's other writers and retention
    /// ([`retention::SharedLog`]): every append holds its lock.
    log: retention::SharedLog,
    index: Option<index::Index>,
    /// Appends left before the index is tried again after it failed
    /// (locked, disk full): the signalling thread never waits on it, and
    /// the catch-up adds the lines it missed.
    index_backoff: u32,
}

/// Appends between tries of an index that failed.
const INDEX_RETRY_EVERY: u32 = 64;

/// How long the writer waits for an index another process holds.
const WRITER_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(20);

impl HistoryWriter {
    /// Opens `SPOOL/calls.jsonl` for appending, with the configured mode
    /// and group ([`crate::recording::perms`]) whatever the umask: the
    /// history names every caller. Opens (or rebuilds) the index beside it.
    pub fn open(spool: &Path) -> std::io::Result<HistoryWriter> {
        Self::open_keep(spool, None, None)
    }

    /// [`HistoryWriter::open`], first dropping calls that started more than
    /// `keep` (`history.keep`) before `now_us` from the log and the index
    /// ([`retention`]; the daemon trims again every hour). Without
    /// `now_us`, "now" is the `invite_at` of the log's last line (the last
    /// call that ended): no clock, so a replay trims the same way every time.
    pub fn open_keep(
        spool: &Path,
        keep: Option<std::time::Duration>,
        now_us: Option<i64>,
    ) -> std::io::Result<HistoryWriter> {
        crate::recording::perms::create_dir_all(spool)?;
        let path = spool.join("calls.jsonl");
        let now_us = match (keep, now_us) {
            (Some(_), None) => last_invite(&path),
            _ => now_us,
        };
        if let (Some(keep), Some(now)) = (keep, now_us) {
            retention::run_once(spool, keep, now);
        }
        let log = retention::shared_log(&path, || open_log(&path))?;
        let index = match index::Index::open_and_catch_up(spool) {
            Ok(ix) => {
                ix.set_busy_timeout(WRITER_BUSY_TIMEOUT);
                Some(ix)
            }
            Err(e) => {
                tracing::error!(error = %e, "call history index unavailable; calls.jsonl is still written");
                None
            }
        };
        Ok(HistoryWriter {
            path,
            log,
            index,
            index_backoff: 0,
        })
    }

    /// Appends one line to the log, then to the index.
    pub fn append(&mut self, rec: &CallRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let (at, end) = {
            let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            log.file.write_all(&line)?;
            let at = log.len;
            log.len += line.len() as u64;
            (at, log.len)
        };
        if self.index_backoff > 0 {
            self.index_backoff -= 1;
        } else if let Some(ix) = self.index.as_mut()
            && let Err(e) = ix.add(at, end, rec)
        {
            self.index_backoff = INDEX_RETRY_EVERY;
            tracing::warn!(error = %e, "call history index not updated; it catches up from calls.jsonl");
        }
        Ok(())
    }

    pub fn sync(&mut self) -> std::io::Result<()> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.file.sync_data()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens the log for appending with the spool's modes; a line torn by a
/// crash (a full disk, a kill mid-write) is ended so it stays a line of
/// its own, skipped and named, not glued to the next.
fn open_log(path: &Path) -> std::io::Result<retention::LogFile> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    crate::recording::perms::apply_file(&file)?;
    let mut len = file.metadata()?.len();
    if len > 0 && !ends_with_newline(path)? {
        (&file).write_all(b"\n")?;
        len += 1;
    }
    Ok(retention::LogFile { file, len })
}

fn ends_with_newline(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::End(-1))?;
    let mut b = [0u8];
    f.read_exact(&mut b)?;
    Ok(b[0] == b'\n')
}

/// `invite_at` of the log's last complete line, in microseconds.
fn last_invite(path: &Path) -> Option<i64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(64 << 10))).ok()?;
    let mut tail = String::new();
    f.read_to_string(&mut tail).ok()?;
    let line = tail.trim_end().rsplit('\n').next()?;
    let rec: CallRecord = serde_json::from_str(line).ok()?;
    crate::report::parse_rfc3339(&rec.invite_at)
}
