//! Segment rows in the fleet database: table `callrec_segments`
//! (migration 2 of [`super::pg`]), one row per appliance, destination and
//! recording, with its file, delivery state and times, so the NOC sees
//! across appliances where each recording is.
//!
//! The local `segments` table ([`super::segments`]) is the outbox: rows
//! changed since the last push carry `dirty = 1`; a push brings the rows
//! in line with the spool first, upserts the dirty ones in batches, and
//! clears `dirty` only for rows still as they were sent (a row that moved
//! meanwhile goes again next time). A server that is down delays them.

use super::index::Index;
use super::pg::PgError;
use std::path::Path;

/// Migration 2: the segments table.
pub(crate) const MIGRATION: &str = "CREATE TABLE callrec_segments (
    appliance TEXT NOT NULL, destination TEXT NOT NULL, stem TEXT NOT NULL,
    call_id TEXT NOT NULL, short_id TEXT NOT NULL, segment INTEGER NOT NULL,
    file TEXT NOT NULL, state TEXT NOT NULL, present BOOLEAN NOT NULL,
    audio_bytes BIGINT NOT NULL, published_us BIGINT, state_us BIGINT,
    PRIMARY KEY (appliance, destination, stem));
 CREATE INDEX callrec_segments_call ON callrec_segments (call_id);";

/// Rows sent per transaction.
const BATCH: i64 = 1000;

/// One dirty local row, as read.
struct Dirty {
    dest: String,
    stem: String,
    call_id: String,
    short_id: String,
    segment: i64,
    file: String,
    state: String,
    present: bool,
    audio_bytes: i64,
    published_us: Option<i64>,
    state_us: Option<i64>,
}

fn local(e: impl std::fmt::Display) -> PgError {
    PgError::Local(e.to_string())
}

fn dirty(ix: &Index) -> rusqlite::Result<Vec<Dirty>> {
    let mut stmt = ix.conn().prepare(
        "SELECT destination, stem, call_id, short_id, segment, file, state, present,
         audio_bytes, published_us, state_us FROM segments WHERE dirty = 1 LIMIT ?1",
    )?;
    let rows = stmt.query_map([BATCH], |r| {
        Ok(Dirty {
            dest: r.get(0)?,
            stem: r.get(1)?,
            call_id: r.get(2)?,
            short_id: r.get(3)?,
            segment: r.get(4)?,
            file: r.get(5)?,
            state: r.get(6)?,
            present: r.get::<_, i64>(7)? != 0,
            audio_bytes: r.get(8)?,
            published_us: r.get(9)?,
            state_us: r.get(10)?,
        })
    })?;
    rows.collect()
}

fn send(c: &mut postgres::Client, appliance: &str, rows: &[Dirty]) -> Result<(), PgError> {
    let mut tx = c.transaction()?;
    let stmt = tx.prepare(
        "INSERT INTO callrec_segments VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)
         ON CONFLICT (appliance, destination, stem) DO UPDATE SET
         state = EXCLUDED.state, present = EXCLUDED.present, file = EXCLUDED.file,
         audio_bytes = EXCLUDED.audio_bytes, state_us = EXCLUDED.state_us,
         published_us = COALESCE(callrec_segments.published_us, EXCLUDED.published_us)",
    )?;
    for d in rows {
        let seg = d.segment as i32;
        tx.execute(
            &stmt,
            &[
                &appliance,
                &d.dest,
                &d.stem,
                &d.call_id,
                &d.short_id,
                &seg,
                &d.file,
                &d.state,
                &d.present,
                &d.audio_bytes,
                &d.published_us,
                &d.state_us,
            ],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Pushes the spool's changed segment rows; returns how many were sent.
pub fn push_segments(
    spool: &Path,
    c: &mut postgres::Client,
    appliance: &str,
) -> Result<usize, PgError> {
    if !spool.join("calls.sqlite").exists() {
        return Ok(0);
    }
    let mut ix = Index::open(spool).map_err(local)?;
    super::segments::sync(&mut ix, spool).map_err(local)?;
    let mut sent = 0;
    loop {
        let rows = dirty(&ix).map_err(local)?;
        if rows.is_empty() {
            return Ok(sent);
        }
        send(c, appliance, &rows)?;
        sent += rows.len();
        let tx = ix.conn_mut().transaction().map_err(local)?;
        let mut cleared = 0;
        for d in &rows {
            // Only if unchanged since read: a move meanwhile goes again.
            cleared += tx
                .execute(
                    "UPDATE segments SET dirty = 0 WHERE destination = ?1 AND stem = ?2
                 AND state = ?3 AND present = ?4 AND state_us IS ?5",
                    rusqlite::params![d.dest, d.stem, d.state, d.present as i64, d.state_us],
                )
                .map_err(local)?;
        }
        tx.commit().map_err(local)?;
        if cleared == 0 {
            // Every row moved while it was sent: the next push takes them.
            return Ok(sent);
        }
    }
}
