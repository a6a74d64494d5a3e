//! `SPOOL/calls.sqlite`: an SQLite index (WAL mode, through `rusqlite`) of
//! `calls.jsonl`, one row per history line keyed by the line's byte
//! offset in the log plus the bytes retention has dropped before it
//! (`meta.log_shift`, [`super::retention`]: keys survive a trim, in log
//! order). The index remembers how many bytes of the log it
//! holds (`meta.log_offset`) and which file that was (inode), so it is
//! always derivable from the log: behind (a crash between the log write
//! and the index commit, an index that was locked) it catches up from
//! that offset; ahead of the log, of another log, corrupt or of another
//! schema it is moved aside or emptied and rebuilt, with a log line.
//! Lines that are not history objects are skipped and named (file:line).

use super::CallRecord;
use rusqlite::{Connection, OptionalExtension, params};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Version of the table layout below; another value rebuilds the index.
pub const SCHEMA_VERSION: i64 = 1;

/// Rows committed per transaction while catching up (bounds the WAL).
const BATCH: usize = 50_000;

/// A log this large is indexed from scratch without its secondary indexes.
const BULK_BYTES: u64 = 16 << 20;

const DROP_INDEXES: &str = "DROP INDEX IF EXISTS calls_invite; DROP INDEX IF EXISTS calls_contract;
DROP INDEX IF EXISTS calls_caller; DROP INDEX IF EXISTS calls_callee; DROP INDEX IF EXISTS calls_reason;
DROP INDEX IF EXISTS calls_call_id; DROP INDEX IF EXISTS calls_short_id;";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS calls (
  log_offset INTEGER PRIMARY KEY,
  line INTEGER NOT NULL,
  call_id TEXT NOT NULL, short_id TEXT NOT NULL,
  direction TEXT, contract TEXT, service TEXT,
  caller TEXT NOT NULL, callee TEXT NOT NULL, prefix TEXT,
  decision TEXT NOT NULL, reason TEXT,
  invite_at TEXT NOT NULL, invite_us INTEGER,
  answered_at TEXT, billing_start TEXT, ended_at TEXT, end_reason TEXT,
  segments INTEGER NOT NULL);
";

/// Secondary indexes: dropped while an empty index is filled from a
/// large log and created once at the end (far fewer page writes).
const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS calls_invite ON calls(invite_us);
CREATE INDEX IF NOT EXISTS calls_contract ON calls(contract, invite_us);
CREATE INDEX IF NOT EXISTS calls_caller ON calls(caller, invite_us);
CREATE INDEX IF NOT EXISTS calls_callee ON calls(callee, invite_us);
CREATE INDEX IF NOT EXISTS calls_reason ON calls(reason, invite_us);
CREATE INDEX IF NOT EXISTS calls_call_id ON calls(call_id);
CREATE INDEX IF NOT EXISTS calls_short_id ON calls(short_id);
";

/// What went wrong with the index, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{}: {source}", path.display())]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A validated query (`callrec calls`, `/api/calls`); `None` matches all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub contract: Option<String>,
    /// "inbound" | "outbound".
    pub direction: Option<String>,
    /// "record" | "skip".
    pub decision: Option<String>,
    pub reason: Option<String>,
    /// Normalised national number: the caller or the callee.
    pub number: Option<String>,
    /// The Call-ID or the short id.
    pub call: Option<String>,
    /// Microseconds since the epoch: `invite_at` at or after.
    pub since_us: Option<i64>,
    /// Microseconds since the epoch: `invite_at` before.
    pub until_us: Option<i64>,
    pub sort: Sort,
    pub limit: Option<usize>,
}

/// Row order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    /// Latest `invite_at` first.
    #[default]
    Newest,
    Oldest,
    /// The log's order: when the calls ended.
    Ended,
}

impl Sort {
    /// `newest`, `oldest` or `ended`.
    pub fn parse(s: &str) -> Option<Sort> {
        match s {
            "newest" => Some(Sort::Newest),
            "oldest" => Some(Sort::Oldest),
            "ended" => Some(Sort::Ended),
            _ => None,
        }
    }
}

/// The index of one spool's `calls.jsonl`.
pub struct Index {
    conn: Connection,
    db: PathBuf,
    log: PathBuf,
}

impl Index {
    /// Opens `SPOOL/calls.sqlite` (creating it with the spool's modes),
    /// rebuilding it if it is corrupt, of another schema or of another
    /// log, and catches up with the log. Skipped lines are logged.
    pub fn open_and_catch_up(spool: &Path) -> Result<Index, IndexError> {
        let mut ix = Self::open(spool)?;
        for w in ix.catch_up()? {
            tracing::warn!("{w}");
        }
        Ok(ix)
    }

    /// Opens without catching up (see [`Index::catch_up`]).
    pub fn open(spool: &Path) -> Result<Index, IndexError> {
        let db = spool.join("calls.sqlite");
        let log = spool.join("calls.jsonl");
        match Self::try_open(&db, &log) {
            Ok(ix) => Ok(ix),
            Err(IndexError::Sql { source, .. }) if is_corrupt(&source) => {
                let aside = db.with_extension("sqlite.corrupt");
                tracing::error!(path = %db.display(), error = %source, moved_to = %aside.display(), "call history index corrupt: rebuilding it from calls.jsonl");
                let _ = std::fs::rename(&db, &aside);
                for ext in ["sqlite-wal", "sqlite-shm"] {
                    let _ = std::fs::remove_file(db.with_extension(ext));
                }
                Self::try_open(&db, &log)
            }
            Err(e) => Err(e),
        }
    }

    fn try_open(db: &Path, log: &Path) -> Result<Index, IndexError> {
        let sql = |source| IndexError::Sql {
            path: db.to_path_buf(),
            source,
        };
        if !db.exists() {
            crate::recording::perms::create(db).map_err(|source| IndexError::Io {
                path: db.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(db).map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(sql)?;
        // WAL: readers (the CLI, the API) never block the daemon's writes;
        // NORMAL: a commit survives a killed process (not a power cut,
        // which the catch-up from the log repairs).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        // 64 MiB of page cache: the indexes' random inserts stay in memory.
        conn.pragma_update(None, "cache_size", -65536)
            .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        conn.execute_batch(INDEXES).map_err(sql)?;
        conn.execute_batch(super::segments::SCHEMA).map_err(sql)?;
        for ext in ["sqlite-wal", "sqlite-shm"] {
            let p = db.with_extension(ext);
            if p.exists() {
                let _ = crate::recording::perms::apply_path(&p);
            }
        }
        let ix = Index {
            conn,
            db: db.to_path_buf(),
            log: log.to_path_buf(),
        };
        if ix.meta("schema")?.unwrap_or(SCHEMA_VERSION) != SCHEMA_VERSION {
            tracing::warn!(path = %db.display(), "call history index of another schema: rebuilding it");
            ix.reset()?;
        }
        Ok(ix)
    }

    /// How long a statement waits for another process's lock (5 s at open).
    pub fn set_busy_timeout(&self, d: Duration) {
        let _ = self.conn.busy_timeout(d);
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.db
    }

    /// The connection, for the sibling tables ([`super::segments`]).
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    pub(crate) fn conn_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> IndexError + '_ {
        |source| IndexError::Sql {
            path: self.db.clone(),
            source,
        }
    }

    fn meta(&self, key: &str) -> Result<Option<i64>, IndexError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(self.sql())
    }

    /// Empties the index (it is then rebuilt by [`Index::catch_up`]).
    pub fn reset(&self) -> Result<(), IndexError> {
        // Dropping the table is far quicker than deleting a million rows.
        self.conn
            .execute_batch(&format!(
                "BEGIN IMMEDIATE; DROP TABLE IF EXISTS calls; DELETE FROM meta; {SCHEMA} {INDEXES}
                 INSERT INTO meta VALUES ('schema', {SCHEMA_VERSION}); COMMIT;"
            ))
            .map_err(self.sql())
    }

    /// Rebuilds the whole index from the log (`callrec calls --reindex`).
    pub fn reindex(&mut self) -> Result<Vec<String>, IndexError> {
        self.reset()?;
        self.catch_up()
    }

    /// Adds the line the writer just appended at `at..end` of the log,
    /// or catches up if the index is not exactly at `at`.
    pub fn add(&mut self, at: u64, end: u64, rec: &CallRecord) -> Result<(), IndexError> {
        let tx = self.conn.transaction().map_err(|source| IndexError::Sql {
            path: self.db.clone(),
            source,
        })?;
        let get = |k: &str| -> rusqlite::Result<i64> {
            tx.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
                .optional()
                .map(|v| v.unwrap_or(0))
        };
        let sql = |source| IndexError::Sql {
            path: self.db.clone(),
            source,
        };
        let offset = get("log_offset").map_err(sql)? as u64;
        if offset == at {
            let line = get("log_lines").map_err(sql)? + 1;
            let (bytes, lines) = (
                get("log_shift").map_err(sql)?,
                get("line_shift").map_err(sql)?,
            );
            insert(&tx, at as i64 + bytes, line + lines, rec).map_err(sql)?;
            set_progress(&tx, end, line).map_err(sql)?;
            return tx.commit().map_err(sql);
        }
        drop(tx);
        if offset < end {
            for w in self.catch_up()? {
                tracing::warn!("{w}");
            }
        }
        Ok(())
    }

    /// Indexes the complete lines of the log past the stored offset,
    /// first emptying the index if the log is not the one it was built
    /// from. Returns the skipped lines, as `calls.jsonl:LINE: reason`.
    pub fn catch_up(&mut self) -> Result<Vec<String>, IndexError> {
        let io = |source| IndexError::Io {
            path: self.log.clone(),
            source,
        };
        let file = match std::fs::File::open(&self.log) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let md = file.metadata().map_err(io)?;
        let offset = self.meta("log_offset")?.unwrap_or(0) as u64;
        let inode = self.meta("log_inode")?;
        if offset > md.len() || inode.is_some_and(|i| i != md.ino() as i64) {
            tracing::warn!(path = %self.db.display(), log = %self.log.display(), "call history index does not match calls.jsonl: rebuilding it");
            self.reset()?;
            return self.catch_up();
        }
        if offset == md.len() {
            return Ok(Vec::new());
        }
        let mut r = BufReader::with_capacity(1 << 16, file);
        r.seek(SeekFrom::Start(offset)).map_err(io)?;
        let bulk = offset == 0 && md.len() > BULK_BYTES;
        if bulk {
            self.conn.execute_batch(DROP_INDEXES).map_err(self.sql())?;
        }
        let result = self.ingest(r, offset, md.ino() as i64);
        if bulk {
            self.conn.execute_batch(INDEXES).map_err(self.sql())?;
        }
        result
    }

    fn ingest(
        &mut self,
        mut r: impl BufRead,
        mut offset: u64,
        inode: i64,
    ) -> Result<Vec<String>, IndexError> {
        let (db, log) = (self.db.clone(), self.log.clone());
        let sql = |source| IndexError::Sql {
            path: db.clone(),
            source,
        };
        let mut warnings = Vec::new();
        let mut buf = Vec::new();
        let mut lines = self.meta("log_lines")?.unwrap_or(0);
        loop {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(sql)?;
            // Another process may have caught up meanwhile.
            let stored: i64 = tx
                .query_row("SELECT value FROM meta WHERE key='log_offset'", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(sql)?
                .unwrap_or(0);
            let meta = |k: &str| -> rusqlite::Result<Option<i64>> {
                tx.query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
                    .optional()
            };
            // A retention trim may have replaced the log meanwhile: the
            // next catch-up reads the new file.
            if stored as u64 > offset || meta("log_inode").map_err(sql)?.is_some_and(|i| i != inode)
            {
                return Ok(warnings);
            }
            let shift = meta("log_shift").map_err(sql)?.unwrap_or(0);
            let line_shift = meta("line_shift").map_err(sql)?.unwrap_or(0);
            tx.execute(
                "INSERT OR REPLACE INTO meta VALUES ('log_inode', ?1)",
                [inode],
            )
            .map_err(sql)?;
            let mut n = 0;
            let mut done = false;
            while n < BATCH {
                buf.clear();
                let k = r
                    .read_until(b'\n', &mut buf)
                    .map_err(|source| IndexError::Io {
                        path: log.clone(),
                        source,
                    })?;
                // A line without its newline is still being written.
                if k == 0 || buf.last() != Some(&b'\n') {
                    done = true;
                    break;
                }
                lines += 1;
                let text = String::from_utf8_lossy(&buf);
                if !text.trim().is_empty() {
                    match parse_line(&text) {
                        Ok(rec) => insert(&tx, offset as i64 + shift, lines + line_shift, &rec)
                            .map_err(sql)?,
                        Err(reason) => warnings.push(format!(
                            "{}:{lines}: corrupt history line skipped: {reason}",
                            log.display()
                        )),
                    }
                }
                offset += k as u64;
                n += 1;
            }
            set_progress(&tx, offset, lines).map_err(sql)?;
            tx.commit().map_err(sql)?;
            if done {
                return Ok(warnings);
            }
        }
    }

    /// Bytes of the log the index holds.
    pub fn offset(&self) -> Result<u64, IndexError> {
        Ok(self.meta("log_offset")?.unwrap_or(0) as u64)
    }

    /// Calls each matching row in order until `each` returns an error.
    pub fn query<E: From<IndexError>>(
        &self,
        f: &Filter,
        mut each: impl FnMut(CallRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        let (sql_text, args) = build_query(f);
        let mut stmt = self.conn.prepare(&sql_text).map_err(self.sql())?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(args.iter()))
            .map_err(self.sql())?;
        while let Some(row) = rows.next().map_err(self.sql())? {
            each(from_row(row).map_err(self.sql())?)?;
        }
        Ok(())
    }

    /// Whether a call that started before `us` (microseconds) is indexed.
    pub fn has_before(&self, us: i64) -> Result<bool, IndexError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM calls WHERE invite_us < ?1)",
                [us],
                |r| r.get(0),
            )
            .map_err(self.sql())
    }

    /// The newest `invite_at` text (its offset is the configured zone).
    pub fn newest_invite(&self) -> Result<Option<String>, IndexError> {
        self.conn
            .query_row(
                "SELECT invite_at FROM calls ORDER BY invite_us DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql())
    }
}

fn is_corrupt(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

/// A history line as a record; fields an older writer left out read as
/// empty (text) or 0 (segments), so any history callrec wrote indexes.
pub(crate) fn parse_line(text: &str) -> Result<CallRecord, String> {
    use serde_json::Value;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(mut m)) => {
            for k in [
                "call_id",
                "short_id",
                "caller",
                "callee",
                "decision",
                "invite_at",
            ] {
                m.entry(k).or_insert(Value::String(String::new()));
            }
            m.entry("segments").or_insert(Value::from(0));
            serde_json::from_value(Value::Object(m)).map_err(|e| e.to_string())
        }
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn set_progress(tx: &rusqlite::Transaction, offset: u64, lines: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT OR REPLACE INTO meta VALUES ('log_offset', ?1), ('log_lines', ?2), ('schema', ?3)",
        params![offset as i64, lines, SCHEMA_VERSION],
    )?;
    Ok(())
}

/// One row at its key `at`: the line's byte offset in the log plus the
/// bytes retention dropped before it (`meta.log_shift`), so rows keep
/// their keys, in log order, across trims; `line` likewise.
fn insert(tx: &rusqlite::Transaction, at: i64, line: i64, r: &CallRecord) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT OR REPLACE INTO calls VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)",
    )?;
    stmt.execute(params![
        at,
        line,
        r.call_id,
        r.short_id,
        r.direction,
        r.contract,
        r.service,
        r.caller,
        r.callee,
        r.prefix,
        r.decision,
        r.reason,
        r.invite_at,
        crate::report::parse_rfc3339(&r.invite_at),
        r.answered_at,
        r.billing_start,
        r.ended_at,
        r.end_reason,
        r.segments,
    ])?;
    Ok(())
}

const COLS: &str = "call_id, short_id, direction, contract, service, caller, callee, prefix, decision, reason, invite_at, answered_at, billing_start, ended_at, end_reason, segments";

fn from_row(r: &rusqlite::Row) -> rusqlite::Result<CallRecord> {
    Ok(CallRecord {
        call_id: r.get(0)?,
        short_id: r.get(1)?,
        direction: r.get(2)?,
        contract: r.get(3)?,
        service: r.get(4)?,
        caller: r.get(5)?,
        callee: r.get(6)?,
        prefix: r.get(7)?,
        decision: r.get(8)?,
        reason: r.get(9)?,
        invite_at: r.get(10)?,
        answered_at: r.get(11)?,
        billing_start: r.get(12)?,
        ended_at: r.get(13)?,
        end_reason: r.get(14)?,
        segments: r.get(15)?,
    })
}

/// The SELECT for a filter, with its arguments (never spliced into the text).
fn build_query(f: &Filter) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value as V;
    let mut wh: Vec<String> = Vec::new();
    let mut args: Vec<V> = Vec::new();
    let mut eq = |col: &str, v: &Option<String>, wh: &mut Vec<String>| {
        if let Some(v) = v {
            args.push(V::Text(v.clone()));
            wh.push(format!("{col} = ?{}", args.len()));
        }
    };
    eq("contract", &f.contract, &mut wh);
    eq("direction", &f.direction, &mut wh);
    eq("decision", &f.decision, &mut wh);
    eq("reason", &f.reason, &mut wh);
    if let Some(n) = &f.number {
        args.push(V::Text(n.clone()));
        let i = args.len();
        wh.push(format!("(caller = ?{i} OR callee = ?{i})"));
    }
    if let Some(c) = &f.call {
        args.push(V::Text(c.clone()));
        let i = args.len();
        wh.push(format!("(call_id = ?{i} OR short_id = ?{i})"));
    }
    if let Some(t) = f.since_us {
        args.push(V::Integer(t));
        wh.push(format!("invite_us >= ?{}", args.len()));
    }
    if let Some(t) = f.until_us {
        args.push(V::Integer(t));
        wh.push(format!("invite_us < ?{}", args.len()));
    }
    let mut q = format!("SELECT {COLS} FROM calls");
    if !wh.is_empty() {
        q.push_str(" WHERE ");
        q.push_str(&wh.join(" AND "));
    }
    q.push_str(match f.sort {
        Sort::Newest => " ORDER BY invite_us DESC, log_offset DESC",
        Sort::Oldest => " ORDER BY invite_us ASC, log_offset ASC",
        Sort::Ended => " ORDER BY log_offset ASC",
    });
    if let Some(l) = f.limit {
        q.push_str(&format!(" LIMIT {}", l.min(i64::MAX as usize)));
    }
    (q, args)
}
