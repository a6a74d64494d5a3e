//! One index row per recorded segment and destination (table `segments`
//! of `SPOOL/calls.sqlite`): its file, destination, delivery state
//! (queued, inflight, delivered, held, quarantined), sizes and times.
//!
//! The rows are *derived from the spool's delivery folders*, not written
//! by the recorder and the delivery workers as they move files: the
//! folders are the queue ([`crate::delivery::spool`]: a state change is a
//! rename, crash-safe by construction), so a second copy written beside
//! each rename could only disagree with them after a crash between the
//! rename and the row's commit. [`sync`] reads the folders and brings the
//! rows in line with them; it runs in the daemon every minute, at
//! `callrec calls --segments`, `--reindex` and `/api/calls/{id}`, so an
//! answer is never older than the folders. What the rows add to the
//! folders is memory: a delivered file expires from `done/` after
//! `delivery.keep_delivered`, its row stays (`present` false) with where
//! and when it was delivered, and is dropped with its call by retention.
//! `dirty` marks rows changed since the fleet database last took them
//! ([`super::pg_segments`]).
//! (Rows of files that expired before a first sync, e.g. when an older
//! index is upgraded, cannot be rebuilt from anything: they are absent.)

use super::index::{Index, IndexError};
use crate::delivery::spool::{QueueState, Spool};
use rusqlite::params;
use serde::Serialize;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The table (created beside `calls`; kept by `--reindex`, see above).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS segments (
  destination TEXT NOT NULL, stem TEXT NOT NULL,
  call_id TEXT NOT NULL, short_id TEXT NOT NULL, segment INTEGER NOT NULL,
  file TEXT NOT NULL, state TEXT NOT NULL, present INTEGER NOT NULL,
  audio_bytes INTEGER NOT NULL, json_bytes INTEGER NOT NULL,
  published_us INTEGER, state_us INTEGER,
  dirty INTEGER NOT NULL DEFAULT 1,
  PRIMARY KEY (destination, stem));
CREATE INDEX IF NOT EXISTS segments_call ON segments(call_id);
";

/// One segment's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SegmentRow {
    pub call_id: String,
    pub short_id: String,
    /// Segment number within the call (1, 2, ... after pauses).
    pub segment: u32,
    /// `[[destination]]` name.
    pub destination: String,
    /// The file stem, relative to the state folder.
    pub stem: String,
    /// The audio file's name (stem plus `.wav`, `.mp3`, ...).
    pub file: String,
    /// queued | inflight | delivered | held | quarantined.
    pub state: String,
    /// False once the files left the spool (a delivered file expired
    /// from `done/`, or an operator removed it).
    pub present: bool,
    /// Audio file bytes (0 when absent), JSON metadata bytes.
    pub audio_bytes: u64,
    pub json_bytes: u64,
    /// When it was queued (the JSON's time when first seen queued or
    /// inflight), RFC 3339 UTC.
    pub published_at: Option<String>,
    /// When it entered its state as the spool stamps it (the JSON's
    /// modification time: publish, delivery, release), RFC 3339 UTC.
    pub state_at: Option<String>,
}

/// What one [`sync`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub added: usize,
    pub moved: usize,
    pub gone: usize,
}

/// The state's name in the history (the folder names are the spool's).
pub fn state_name(s: QueueState) -> &'static str {
    match s {
        QueueState::Ready => "queued",
        QueueState::Inflight => "inflight",
        QueueState::Done => "delivered",
        QueueState::Held => "held",
        QueueState::Quarantine => "quarantined",
    }
}

/// (short id, segment number) from a stem `..._SHORTID_SEG`
/// ([`crate::recording::metadata::stem`]).
fn stem_ids(stem: &str) -> (String, u32) {
    let name = stem.rsplit('/').next().unwrap_or(stem);
    let mut it = name.rsplitn(3, '_');
    let seg = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let short = it.next().unwrap_or("").to_string();
    (short, seg)
}

fn micros(t: Option<std::time::SystemTime>) -> Option<i64> {
    let d = t?.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_micros()).ok()
}

/// Every complete recording (its JSON present) in the spool's folders.
fn scan(spool: &Spool) -> std::io::Result<Vec<(String, QueueState, String)>> {
    let mut found = Vec::new();
    for dest in spool.destinations()? {
        for st in QueueState::ALL {
            for stem in spool.list(&dest, st)? {
                found.push((dest.clone(), st, stem));
            }
        }
    }
    Ok(found)
}

/// The rows as stored: (destination, stem) to (state, present).
type Known = HashMap<(String, String), (String, bool)>;

fn known(ix: &Index) -> rusqlite::Result<Known> {
    let mut stmt = ix
        .conn()
        .prepare("SELECT destination, stem, state, present FROM segments")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            (r.get(0)?, r.get(1)?),
            (r.get(2)?, r.get::<_, i64>(3)? != 0),
        ))
    })?;
    rows.collect()
}

/// One row's change, found by reading the folders (no lock held).
enum Change {
    /// A new recording, or one that moved (`new` false): its columns.
    Put {
        new: bool,
        dest: String,
        stem: String,
        call_id: String,
        state: &'static str,
        file: String,
        audio_bytes: i64,
        json_bytes: i64,
        state_us: Option<i64>,
    },
    /// Its files left the spool.
    Gone { dest: String, stem: String },
}

/// The audio file's name relative to the state folder.
fn file_name(audio: &Path, stem: &str) -> String {
    let file = audio
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/{file}"),
        None => file,
    }
}

/// What differs between the folders and the rows.
fn changes(spool: &Spool, found: &[(String, QueueState, String)], mut known: Known) -> Vec<Change> {
    let mut out = Vec::new();
    for (dest, st, stem) in found {
        let state = state_name(*st);
        let prior = known.remove(&(dest.clone(), stem.clone()));
        if prior
            .as_ref()
            .is_some_and(|(s, present)| s == state && *present)
        {
            continue;
        }
        let json_path = spool.file(dest, *st, stem, "json");
        let audio = spool.audio_file(dest, *st, stem);
        let json_md = std::fs::metadata(&json_path).ok();
        // A new row reads its Call-ID from the metadata once.
        let call_id = match prior {
            Some(_) => String::new(),
            None => std::fs::read(&json_path)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v.get("call_id")?.as_str().map(str::to_string))
                .unwrap_or_default(),
        };
        out.push(Change::Put {
            new: prior.is_none(),
            dest: dest.clone(),
            stem: stem.clone(),
            call_id,
            state,
            file: file_name(&audio, stem),
            audio_bytes: std::fs::metadata(&audio).map_or(0, |m| m.size() as i64),
            json_bytes: json_md.as_ref().map_or(0, |m| m.size() as i64),
            state_us: micros(json_md.as_ref().and_then(|m| m.modified().ok())),
        });
    }
    for ((dest, stem), (_, present)) in known {
        if present {
            out.push(Change::Gone { dest, stem });
        }
    }
    out
}

fn apply(tx: &rusqlite::Transaction, changes: &[Change]) -> rusqlite::Result<SyncStats> {
    let mut stats = SyncStats::default();
    for c in changes {
        match c {
            Change::Put {
                new: false,
                dest,
                stem,
                state,
                file,
                audio_bytes,
                json_bytes,
                state_us,
                ..
            } => {
                stats.moved += 1;
                tx.execute(
                    "UPDATE segments SET state=?3, present=1, state_us=?4, audio_bytes=?5, json_bytes=?6, file=?7, dirty=1,
                     published_us=COALESCE(published_us, CASE WHEN ?3 IN ('queued','inflight') THEN ?4 END)
                     WHERE destination=?1 AND stem=?2",
                    params![dest, stem, state, state_us, audio_bytes, json_bytes, file],
                )?;
            }
            Change::Put {
                new: true,
                dest,
                stem,
                call_id,
                state,
                file,
                audio_bytes,
                json_bytes,
                state_us,
            } => {
                stats.added += 1;
                let (short, seg) = stem_ids(stem);
                let published = ["queued", "inflight"]
                    .contains(state)
                    .then_some(*state_us)
                    .flatten();
                tx.execute(
                    "INSERT OR REPLACE INTO segments VALUES (?1,?2,?3,?4,?5,?6,?7,1,?8,?9,?10,?11,1)",
                    params![
                        dest,
                        stem,
                        call_id,
                        short,
                        seg,
                        file,
                        state,
                        audio_bytes,
                        json_bytes,
                        published,
                        state_us
                    ],
                )?;
            }
            Change::Gone { dest, stem } => {
                stats.gone += 1;
                tx.execute(
                    "UPDATE segments SET present=0, dirty=1 WHERE destination=?1 AND stem=?2",
                    params![dest, stem],
                )?;
            }
        }
    }
    Ok(stats)
}

/// Brings the rows in line with the spool's delivery folders under
/// `spool_root`: new recordings added (their Call-ID read from the JSON),
/// moved ones updated, vanished ones marked not present. The folders are
/// read with no lock held; only the changes take the index's write lock
/// (the history writer never waits behind a scan). A spool without a
/// `queue/` folder has nothing to sync.
pub fn sync(ix: &mut Index, spool_root: &Path) -> Result<SyncStats, IndexError> {
    let io = |source| IndexError::Io {
        path: spool_root.join("queue"),
        source,
    };
    if !spool_root.join("queue").is_dir() {
        return Ok(SyncStats::default());
    }
    let db = ix.path().to_path_buf();
    let sql = |source| IndexError::Sql {
        path: db.clone(),
        source,
    };
    let spool = Spool::open(spool_root).map_err(io)?;
    let known = known(ix).map_err(sql)?;
    let found = scan(&spool).map_err(io)?;
    let todo = changes(&spool, &found, known);
    if todo.is_empty() {
        return Ok(SyncStats::default());
    }
    let tx = ix
        .conn_mut()
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql)?;
    let stats = apply(&tx, &todo).map_err(sql)?;
    tx.commit().map_err(sql)?;
    Ok(stats)
}

/// The segments of one call (by Call-ID), in segment order.
pub fn for_call(ix: &Index, call_id: &str) -> Result<Vec<SegmentRow>, IndexError> {
    let sql = |source| IndexError::Sql {
        path: ix.path().to_path_buf(),
        source,
    };
    let mut stmt = ix
        .conn()
        .prepare_cached(
            "SELECT call_id, short_id, segment, destination, stem, file, state, present,
             audio_bytes, json_bytes, published_us, state_us
             FROM segments WHERE call_id = ?1 ORDER BY segment, destination",
        )
        .map_err(sql)?;
    let utc = |us: Option<i64>| us.map(|t| crate::time::Timestamp(t).rfc3339(0));
    let rows = stmt
        .query_map([call_id], |r| {
            Ok(SegmentRow {
                call_id: r.get(0)?,
                short_id: r.get(1)?,
                segment: r.get(2)?,
                destination: r.get(3)?,
                stem: r.get(4)?,
                file: r.get(5)?,
                state: r.get(6)?,
                present: r.get::<_, i64>(7)? != 0,
                audio_bytes: r.get::<_, i64>(8)? as u64,
                json_bytes: r.get::<_, i64>(9)? as u64,
                published_at: utc(r.get(10)?),
                state_at: utc(r.get(11)?),
            })
        })
        .map_err(sql)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sql)
}

/// Drops the rows of files gone from the spool whose call is no longer
/// in the history (retention dropped it); returns how many.
pub fn forget_trimmed(tx: &rusqlite::Transaction) -> rusqlite::Result<usize> {
    tx.execute(
        "DELETE FROM segments WHERE present = 0
         AND call_id NOT IN (SELECT call_id FROM calls)",
        [],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_the_stem() {
        assert_eq!(
            stem_ids("K-0001/20261121/20261121T093000_out_0312340001_0312349999_3fa9c2_2"),
            ("3fa9c2".to_string(), 2)
        );
        assert_eq!(stem_ids("odd"), ("".to_string(), 0));
    }
}
