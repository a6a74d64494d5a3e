//! Retention (`history.keep`): drops the calls that started more than
//! `keep` ago from `calls.jsonl` and from its index, at start and, in the
//! daemon, every [`EVERY`] while calls are being written.
//!
//! How the log is trimmed while the writer appends: the log is rewritten
//! into `calls.jsonl.trim` without the old lines (no lock held: the
//! writer goes on appending), then, holding the writer's log lock (the
//! one every append takes, [`SharedLog`]), the lines appended meanwhile
//! are copied over, the copy is fsynced and renamed over the log, and the
//! writer's file is reopened on it: no append can land in the old file
//! after the copy, so none is lost. The index is trimmed in one SQLite
//! transaction taken before that lock and committed inside it: the
//! dropped rows deleted, its position moved to the new file, the bytes
//! and lines dropped before it added to the shift that row keys carry
//! (kept rows are not rewritten), the new inode recorded.
//! A crash between the rename and the commit leaves an index of another
//! inode, which is rebuilt from the log at the next start (as designed).

use super::index::{Index, IndexError};
use rusqlite::params;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How often the daemon trims (and once at start).
pub const EVERY: Duration = Duration::from_secs(3600);

/// The open log and its length, shared by every writer of one process
/// (one per capture interface) and the trimmer.
pub struct LogFile {
    pub(super) file: File,
    /// Bytes in the log (O_APPEND: each line lands at the end).
    pub(super) len: u64,
}

/// One lock per log path for the whole process.
pub type SharedLog = Arc<Mutex<LogFile>>;

static LOGS: Mutex<Vec<(PathBuf, Weak<Mutex<LogFile>>)>> = Mutex::new(Vec::new());

/// The registry's key: the log's folder resolved (symbolic links, `..`),
/// so two spellings of one spool share one lock.
fn key(path: &Path) -> PathBuf {
    match (path.parent().map(std::fs::canonicalize), path.file_name()) {
        (Some(Ok(dir)), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// The process's shared handle of the log at `path`, opened (append,
/// spool modes) by `open` if no writer holds it yet.
pub(super) fn shared_log(
    path: &Path,
    open: impl FnOnce() -> std::io::Result<LogFile>,
) -> std::io::Result<SharedLog> {
    let path = &key(path);
    let mut logs = LOGS.lock().unwrap_or_else(|e| e.into_inner());
    logs.retain(|(_, w)| w.strong_count() > 0);
    if let Some(l) = logs
        .iter()
        .find(|(p, _)| p == path)
        .and_then(|(_, w)| w.upgrade())
    {
        return Ok(l);
    }
    let l = Arc::new(Mutex::new(open()?));
    logs.push((path.to_path_buf(), Arc::downgrade(&l)));
    Ok(l)
}

/// The writers' handle of `path`, if a writer has it open.
pub fn writers_log(path: &Path) -> Option<SharedLog> {
    let path = &key(path);
    let logs = LOGS.lock().unwrap_or_else(|e| e.into_inner());
    logs.iter()
        .find(|(p, _)| p == path)
        .and_then(|(_, w)| w.upgrade())
}

/// Whether a line is a call that started before `cutoff_us` (lines
/// without a readable `invite_at`, or torn, are kept). Only `invite_at`
/// is taken from the line (serde skips the rest without building it).
fn is_old(line: &[u8], cutoff_us: i64) -> bool {
    #[derive(serde::Deserialize)]
    struct Invite<'a> {
        #[serde(borrow)]
        invite_at: Option<std::borrow::Cow<'a, str>>,
    }
    line.ends_with(b"\n")
        && serde_json::from_slice::<Invite>(line)
            .ok()
            .and_then(|v| crate::report::parse_rfc3339(v.invite_at.as_deref()?))
            .is_some_and(|t| t < cutoff_us)
}

/// The dropped lines: (byte offset, bytes dropped up to and including
/// this line) in log order, so a position maps in O(log n).
type Dropped = Vec<(u64, u64)>;

/// Copies the first `upto` bytes of `log` into `tmp` without the old
/// lines; returns the dropped lines.
fn copy_kept(
    log: &Path,
    tmp: &Path,
    upto: u64,
    cutoff_us: i64,
) -> std::io::Result<(File, Dropped)> {
    let mut r = BufReader::with_capacity(1 << 16, File::open(log)?.take(upto));
    let mut w = std::io::BufWriter::with_capacity(1 << 16, crate::recording::perms::create(tmp)?);
    let (mut at, mut dropped, mut buf) = (0u64, Vec::new(), Vec::new());
    loop {
        buf.clear();
        let k = r.read_until(b'\n', &mut buf)? as u64;
        if k == 0 {
            break;
        }
        if is_old(&buf, cutoff_us) {
            let before = dropped.last().map_or(0, |&(_, c)| c);
            dropped.push((at, before + k));
        } else {
            w.write_all(&buf)?;
        }
        at += k;
    }
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    Ok((f, dropped))
}

/// Where byte `x` of the old log is in the new one, and how many lines
/// before it were dropped.
fn mapped(dropped: &Dropped, x: u64) -> (u64, i64) {
    let n = dropped.partition_point(|(o, _)| *o < x);
    let bytes = n.checked_sub(1).map_or(0, |i| dropped[i].1);
    (x - bytes, n as i64)
}

/// Deletes the dropped rows and moves the index's position to the new
/// file, in `tx` (not committed). The kept rows keep their keys: a key is
/// the line's offset plus `meta.log_shift`, which grows here by the bytes
/// dropped ([`super::index`]), so no row is rewritten.
fn trim_index(tx: &rusqlite::Transaction, dropped: &Dropped) -> rusqlite::Result<()> {
    let meta = |k: &str| -> rusqlite::Result<i64> {
        tx.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
            .or(Ok(0))
    };
    let (shift, line_shift) = (meta("log_shift")?, meta("line_shift")?);
    {
        let mut del = tx.prepare("DELETE FROM calls WHERE log_offset = ?1")?;
        for (o, _) in dropped {
            del.execute([*o as i64 + shift])?;
        }
    }
    let (off, lines) = (meta("log_offset")?, meta("log_lines")?);
    let (n, before) = mapped(dropped, off as u64);
    let total = dropped.last().map_or(0, |&(_, c)| c) as i64;
    tx.execute(
        "INSERT OR REPLACE INTO meta VALUES ('log_offset', ?1), ('log_lines', ?2),
         ('log_shift', ?3), ('line_shift', ?4)",
        params![
            n as i64,
            lines - before,
            shift + total,
            line_shift + dropped.len() as i64
        ],
    )?;
    super::segments::forget_trimmed(tx)?;
    Ok(())
}

/// Drops the calls that started before `cutoff_us` from the log under
/// `spool` and its index, safely while `log` (the writers' handle, if
/// any) is appended to. Returns how many calls were dropped.
pub fn trim(spool: &Path, cutoff_us: i64, log: Option<&SharedLog>) -> Result<usize, IndexError> {
    let path = spool.join("calls.jsonl");
    let io = |source| IndexError::Io {
        path: path.clone(),
        source,
    };
    let (upto, old_inode) = match std::fs::metadata(&path) {
        Ok(m) => (m.len(), m.ino() as i64),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(e)),
    };
    let mut ix = Index::open(spool)?;
    if ix.offset()? == upto && !ix.has_before(cutoff_us)? {
        // The index holds the whole log and nothing in it is old: no
        // need to read the log (the daemon asks every hour).
        return Ok(0);
    }
    let tmp = path.with_extension("jsonl.trim");
    let (mut out, dropped) = copy_kept(&path, &tmp, upto, cutoff_us).map_err(io)?;
    if dropped.is_empty() {
        let _ = std::fs::remove_file(&tmp);
        return Ok(0);
    }
    let db = ix.path().to_path_buf();
    let sql = |source| IndexError::Sql {
        path: db.clone(),
        source,
    };
    let tx = ix
        .conn_mut()
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql)?;
    let indexed: Option<i64> = tx
        .query_row("SELECT value FROM meta WHERE key='log_inode'", [], |r| {
            r.get(0)
        })
        .ok();
    if indexed == Some(old_inode) {
        trim_index(&tx, &dropped).map_err(sql)?;
    } else {
        // An index of another log: emptied, rebuilt from the new one.
        tx.execute_batch(
            "DELETE FROM calls; DELETE FROM meta WHERE key IN ('log_offset','log_lines')",
        )
        .map_err(sql)?;
    }
    let mut guard = log.map(|l| l.lock().unwrap_or_else(|e| e.into_inner()));
    // The lines appended since the copy began, then the rename.
    let swap = (|| -> std::io::Result<(u64, u64, File)> {
        let mut old = File::open(&path)?;
        old.seek(SeekFrom::Start(upto))?;
        std::io::copy(&mut old, &mut out)?;
        out.sync_all()?;
        // The writers' new handle, opened before the rename: once the
        // new file is in place nothing can fail before they use it.
        let appender = std::fs::OpenOptions::new().append(true).open(&tmp)?;
        let md = appender.metadata()?;
        // The last step that can fail: before it the writers keep the old
        // file, after it they get the new one.
        std::fs::rename(&tmp, &path)?;
        if let Some(dir) = path.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok((md.ino(), md.len(), appender))
    })();
    let (inode, len, appender) = match swap {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
    };
    if let Some(g) = guard.as_mut() {
        g.file = appender;
        g.len = len;
    }
    remap_pushed(spool, old_inode as u64, inode, &dropped);
    tx.execute(
        "INSERT OR REPLACE INTO meta VALUES ('log_inode', ?1)",
        [inode as i64],
    )
    .map_err(sql)?;
    tx.commit().map_err(sql)?;
    drop(guard);
    Ok(dropped.len())
}

/// Moves the fleet push's position (`state/pg_pushed`, [`super::pg`])
/// to the new file, so a trim does not make it push the whole log again.
/// A push running meanwhile that then stores the old file's position
/// makes the next one start over, its rows ignored as duplicates.
fn remap_pushed(spool: &Path, old_inode: u64, new_inode: u64, dropped: &Dropped) {
    let state = spool.join("state/pg_pushed");
    let Ok(text) = std::fs::read_to_string(&state) else {
        return;
    };
    let Some((ino, off)) = text
        .trim()
        .split_once(' ')
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
    else {
        return;
    };
    if ino != old_inode {
        return;
    }
    let tmp = state.with_extension("tmp");
    let line = format!("{new_inode} {}\n", mapped(dropped, off).0);
    if crate::recording::perms::write(&tmp, line.as_bytes()).is_ok() {
        let _ = std::fs::rename(&tmp, &state);
    }
}

/// One retention pass at `now_us` (`keep` before it is dropped), logged.
pub fn run_once(spool: &Path, keep: Duration, now_us: i64) -> usize {
    let path = spool.join("calls.jsonl");
    let cutoff = now_us - keep.as_micros() as i64;
    match trim(spool, cutoff, writers_log(&path).as_ref()) {
        Ok(0) => 0,
        Ok(n) => {
            tracing::info!(path = %path.display(), dropped = n, keep = %crate::report::fmt_duration(keep), "call history trimmed");
            n
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot trim the call history; nothing was lost, it is tried again later");
            0
        }
    }
}

/// Microseconds since the epoch by the wall clock (retention in the
/// daemon is about calendar age, not packet time).
pub fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The daemon's history housekeeping thread: retention every `trim_every`
/// ([`EVERY`] in the daemon; when `keep` is set) at the wall clock's
/// time, and the segment rows ([`super::segments::sync`]) every
/// `sync_every`. Ends with the process.
pub fn spawn(
    spool: PathBuf,
    keep: Option<Duration>,
    sync_every: Duration,
    trim_every: Duration,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("callrec-history".into())
        .spawn(move || {
            let mut next_trim = std::time::Instant::now() + trim_every;
            loop {
                std::thread::sleep(sync_every);
                match Index::open(&spool) {
                    Ok(mut ix) => {
                        if let Err(e) = super::segments::sync(&mut ix, &spool) {
                            tracing::warn!(error = %e, "segment rows not synced with the spool; tried again later");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "call history index unavailable"),
                }
                if let Some(keep) = keep
                    && std::time::Instant::now() >= next_trim
                {
                    next_trim += trim_every;
                    run_once(&spool, keep, wall_us());
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_move_down_by_the_bytes_dropped_before_them() {
        // Lines at 0 (10 bytes, dropped), 10 (5, kept), 15 (7, dropped), 22 (3, kept).
        let dropped: Dropped = vec![(0, 10), (15, 17)];
        assert_eq!(mapped(&dropped, 0), (0, 0));
        assert_eq!(mapped(&dropped, 10), (0, 1));
        assert_eq!(mapped(&dropped, 22), (5, 2));
        assert_eq!(mapped(&dropped, 25), (8, 2));
        assert_eq!(mapped(&Vec::new(), 25), (25, 0));
    }
}
