//! The fleet database (`history.postgres`): every appliance pushes its
//! history rows, with its name (`history.appliance`), to one shared
//! PostgreSQL database, and `callrec calls --db URL` asks the whole fleet.
//!
//! The outbox is the log itself: `calls.jsonl` is durable, and how far
//! it has been pushed is kept in `SPOOL/state/pg_pushed` (the log's
//! inode and byte offset), advanced only after PostgreSQL committed the
//! rows. A server that is down, slow or refusing delays rows and logs
//! why; nothing is lost, and a row pushed twice (a crash between the
//! commit and the offset file) is ignored by its unique key (appliance,
//! Call-ID, INVITE time). A retention trim rewrites the log (new inode)
//! and moves the stored position with the lines ([`super::retention`]);
//! a position of another file makes the push start over from the log's
//! beginning, duplicates ignored.
//!
//! Segment rows follow the same way from the local index's `segments`
//! table ([`super::pg_segments`], migration 2).
//!
//! The schema is versioned (`callrec_schema`): migrations run in one
//! transaction under an advisory lock; a database of a newer version
//! than this callrec knows is refused with a clear error.

use super::CallRecord;
use crate::history::index::{Filter, Sort};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Migrations, in order; version N is the Nth entry: 1 the calls, 2 the
/// segments ([`super::pg_segments`]).
const MIGRATIONS: &[&str] = &[CALLS, super::pg_segments::MIGRATION];

const CALLS: &str = "CREATE TABLE callrec_calls (
    appliance TEXT NOT NULL, call_id TEXT NOT NULL, short_id TEXT NOT NULL,
    direction TEXT, contract TEXT, service TEXT, caller TEXT NOT NULL, callee TEXT NOT NULL,
    prefix TEXT, decision TEXT NOT NULL, reason TEXT, invite_at TEXT NOT NULL,
    invite_us BIGINT, answered_at TEXT, billing_start TEXT, ended_at TEXT, end_reason TEXT,
    segments INTEGER NOT NULL,
    PRIMARY KEY (appliance, call_id, invite_at));
 CREATE INDEX callrec_calls_invite ON callrec_calls (invite_us);
 CREATE INDEX callrec_calls_contract ON callrec_calls (contract, invite_us);
 CREATE INDEX callrec_calls_caller ON callrec_calls (caller);
 CREATE INDEX callrec_calls_callee ON callrec_calls (callee);";

/// Rows sent per transaction.
const BATCH: usize = 1000;

/// What failed, with where.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("PostgreSQL: {0}")]
    Db(String),
    #[error(
        "PostgreSQL schema version {found} is newer than this callrec knows ({known}): upgrade callrec"
    )]
    NewerSchema { found: i32, known: i32 },
    /// The local index, read for the segment rows.
    #[error("local history index: {0}")]
    Local(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Connects (10 s timeout) and brings the schema up to date.
pub fn connect(url: &str) -> Result<postgres::Client, PgError> {
    let mut cfg: postgres::Config = url.parse()?;
    cfg.connect_timeout(std::time::Duration::from_secs(10));
    let mut c = cfg.connect(postgres::NoTls)?;
    migrate(&mut c)?;
    Ok(c)
}

fn migrate(c: &mut postgres::Client) -> Result<(), PgError> {
    let mut tx = c.transaction()?;
    // One appliance migrates at a time; the others wait here.
    tx.execute("SELECT pg_advisory_xact_lock(7316012)", &[])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS callrec_schema (version INTEGER NOT NULL)")?;
    let found: Option<i32> = tx
        .query_opt("SELECT max(version) FROM callrec_schema", &[])?
        .and_then(|r| r.get(0));
    let found = found.unwrap_or(0);
    let known = MIGRATIONS.len() as i32;
    if found > known {
        return Err(PgError::NewerSchema { found, known });
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(m)?;
        tx.execute("INSERT INTO callrec_schema VALUES ($1)", &[&(i as i32 + 1)])?;
    }
    tx.commit()?;
    Ok(())
}

impl From<postgres::Error> for PgError {
    fn from(e: postgres::Error) -> PgError {
        // The server's message (severity, text) when there is one; else
        // the client's (connection refused, timeout) with its cause.
        PgError::Db(match (e.as_db_error(), std::error::Error::source(&e)) {
            (Some(d), _) => d.to_string(),
            (None, Some(src)) => format!("{e}: {src}"),
            (None, None) => e.to_string(),
        })
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> PgError + '_ {
    move |source| PgError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// (inode, offset) pushed so far.
fn pushed(state: &Path) -> (u64, u64) {
    std::fs::read_to_string(state)
        .ok()
        .and_then(|s| {
            let (a, b) = s.trim().split_once(' ')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((0, 0))
}

/// Pushes the log's lines past the stored offset; returns how many rows
/// were sent. Stops at the first error (the offset stays at the last
/// committed batch).
pub fn push(spool: &Path, c: &mut postgres::Client, appliance: &str) -> Result<usize, PgError> {
    let log = spool.join("calls.jsonl");
    let state_dir = spool.join("state");
    let state = state_dir.join("pg_pushed");
    let file = match std::fs::File::open(&log) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(&log)(e)),
    };
    let md = file.metadata().map_err(io(&log))?;
    let (inode, mut offset) = pushed(&state);
    if inode != md.ino() || offset > md.len() {
        offset = 0;
    }
    let mut r = BufReader::new(file);
    r.seek(SeekFrom::Start(offset)).map_err(io(&log))?;
    let stmt = c.prepare(
        "INSERT INTO callrec_calls VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18)
         ON CONFLICT DO NOTHING",
    )?;
    let mut sent = 0;
    let mut buf = Vec::new();
    loop {
        let mut tx = c.transaction()?;
        let mut n = 0;
        let mut end = offset;
        while n < BATCH {
            buf.clear();
            let k = r.read_until(b'\n', &mut buf).map_err(io(&log))?;
            if k == 0 || buf.last() != Some(&b'\n') {
                break;
            }
            end += k as u64;
            n += 1;
            let Ok(rec) = crate::history::index::parse_line(&String::from_utf8_lossy(&buf)) else {
                continue; // named by the index; nothing to send
            };
            let us = crate::report::parse_rfc3339(&rec.invite_at);
            tx.execute(
                &stmt,
                &[
                    &appliance,
                    &rec.call_id,
                    &rec.short_id,
                    &rec.direction,
                    &rec.contract,
                    &rec.service,
                    &rec.caller,
                    &rec.callee,
                    &rec.prefix,
                    &rec.decision,
                    &rec.reason,
                    &rec.invite_at,
                    &us,
                    &rec.answered_at,
                    &rec.billing_start,
                    &rec.ended_at,
                    &rec.end_reason,
                    &(rec.segments as i32),
                ],
            )?;
            sent += 1;
        }
        if n == 0 {
            return Ok(sent);
        }
        tx.commit()?;
        offset = end;
        crate::recording::perms::create_dir_all(&state_dir).map_err(io(&state_dir))?;
        let tmp = state.with_extension("tmp");
        crate::recording::perms::write(&tmp, format!("{} {offset}\n", md.ino()).as_bytes())
            .map_err(io(&tmp))?;
        std::fs::rename(&tmp, &state).map_err(io(&state))?;
    }
}

/// [`push`], then the changed segment rows ([`super::pg_segments`]).
pub fn push_all(spool: &Path, c: &mut postgres::Client, appliance: &str) -> Result<usize, PgError> {
    let n = push(spool, c, appliance)?;
    let s = super::pg_segments::push_segments(spool, c, appliance)?;
    if s > 0 {
        tracing::debug!(segments = s, "segment rows pushed to PostgreSQL");
    }
    Ok(n)
}

/// Pushes every `every` until `stop`; errors are logged (once per kind
/// of error in a row) and retried. The daemon runs this on a thread.
pub fn push_loop(
    spool: &Path,
    url: &str,
    appliance: &str,
    every: std::time::Duration,
    stop: &std::sync::atomic::AtomicBool,
) {
    let mut client: Option<postgres::Client> = None;
    let mut last_err = String::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let r = match client.as_mut() {
            Some(c) => push_all(spool, c, appliance),
            None => connect(url).and_then(|mut c| {
                let r = push_all(spool, &mut c, appliance);
                client = Some(c);
                r
            }),
        };
        match r {
            Ok(n) => {
                if n > 0 {
                    tracing::debug!(rows = n, "history pushed to PostgreSQL");
                }
                last_err.clear();
            }
            Err(e) => {
                let msg = e.to_string();
                if msg != last_err {
                    tracing::error!(error = %msg, "history not pushed to PostgreSQL: retrying; rows wait in calls.jsonl");
                    last_err = msg;
                }
                client = None;
            }
        }
        std::thread::sleep(every);
    }
}

/// The daemon's pusher thread: every 5 s, for the life of the process.
pub fn spawn(spool: std::path::PathBuf, url: String, appliance: String) {
    static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let r = std::thread::Builder::new()
        .name("callrec-pg".into())
        .spawn(move || {
            push_loop(
                &spool,
                &url,
                &appliance,
                std::time::Duration::from_secs(5),
                &STOP,
            )
        });
    if let Err(e) = r {
        tracing::error!(error = %e, "no thread for the PostgreSQL push: rows wait in calls.jsonl");
    }
}

/// Runs `f` for each fleet row matching `q` (appliance first).
pub fn query(
    c: &mut postgres::Client,
    q: &Filter,
    mut f: impl FnMut(&str, CallRecord) -> Result<(), crate::report::ReportError>,
) -> Result<(), crate::report::ReportError> {
    let mut wh: Vec<String> = Vec::new();
    let mut args: Vec<Box<dyn postgres::types::ToSql + Sync>> = Vec::new();
    let eq = |col: &str,
              v: &Option<String>,
              wh: &mut Vec<String>,
              args: &mut Vec<Box<dyn postgres::types::ToSql + Sync>>| {
        if let Some(v) = v {
            args.push(Box::new(v.clone()));
            wh.push(format!("{col} = ${}", args.len()));
        }
    };
    eq("contract", &q.contract, &mut wh, &mut args);
    eq("direction", &q.direction, &mut wh, &mut args);
    eq("decision", &q.decision, &mut wh, &mut args);
    eq("reason", &q.reason, &mut wh, &mut args);
    if let Some(n) = &q.number {
        args.push(Box::new(n.clone()));
        wh.push(format!("(caller = ${0} OR callee = ${0})", args.len()));
    }
    if let Some(n) = &q.call {
        args.push(Box::new(n.clone()));
        wh.push(format!("(call_id = ${0} OR short_id = ${0})", args.len()));
    }
    if let Some(t) = q.since_us {
        args.push(Box::new(t));
        wh.push(format!("invite_us >= ${}", args.len()));
    }
    if let Some(t) = q.until_us {
        args.push(Box::new(t));
        wh.push(format!("invite_us < ${}", args.len()));
    }
    let mut sql = "SELECT appliance, call_id, short_id, direction, contract, service, caller, callee, prefix, decision, reason, invite_at, answered_at, billing_start, ended_at, end_reason, segments FROM callrec_calls".to_string();
    if !wh.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&wh.join(" AND "));
    }
    sql.push_str(match q.sort {
        Sort::Newest => " ORDER BY invite_us DESC, appliance, call_id",
        Sort::Oldest | Sort::Ended => " ORDER BY invite_us ASC, appliance, call_id",
    });
    if let Some(l) = q.limit {
        sql.push_str(&format!(" LIMIT {l}"));
    }
    let params: Vec<&(dyn postgres::types::ToSql + Sync)> =
        args.iter().map(|b| b.as_ref()).collect();
    let dberr = |e: postgres::Error| crate::report::ReportError::Db(e.to_string());
    let mut it = c.query_raw(&sql, params).map_err(dberr)?;
    use postgres::fallible_iterator::FallibleIterator;
    while let Some(r) = it.next().map_err(dberr)? {
        let appliance: String = r.get(0);
        let seg: i32 = r.get(16);
        let rec = CallRecord {
            call_id: r.get(1),
            short_id: r.get(2),
            direction: r.get(3),
            contract: r.get(4),
            service: r.get(5),
            caller: r.get(6),
            callee: r.get(7),
            prefix: r.get(8),
            decision: r.get(9),
            reason: r.get(10),
            invite_at: r.get(11),
            answered_at: r.get(12),
            billing_start: r.get(13),
            ended_at: r.get(14),
            end_reason: r.get(15),
            segments: seg.max(0) as u32,
        };
        f(&appliance, rec)?;
    }
    Ok(())
}
