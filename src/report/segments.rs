//! `callrec calls --segments`: one row per recorded segment and
//! destination of the matching calls (in the calls' order), with its file,
//! delivery state and sizes, from the index's `segments` table
//! ([`crate::history::segments`], brought in line with the spool's
//! delivery folders first).

use std::io::Write;

use super::OutFormat;
use super::calls::{ReportError, aligned, csv_row};
use crate::history::index::{Filter, Index};
use crate::history::segments::{SegmentRow, for_call};

/// Columns of the segments table and CSV, in order.
pub const SEGMENT_COLUMNS: &[&str] = &[
    "short_id",
    "segment",
    "destination",
    "state",
    "present",
    "file",
    "audio_bytes",
    "published_at",
    "state_at",
    "call_id",
];

fn seg_cell(s: &SegmentRow, col: &str) -> String {
    match col {
        "short_id" => s.short_id.clone(),
        "segment" => s.segment.to_string(),
        "destination" => s.destination.clone(),
        "state" => s.state.clone(),
        "present" => if s.present { "yes" } else { "no" }.into(),
        "file" => s.file.clone(),
        "audio_bytes" => s.audio_bytes.to_string(),
        "published_at" => s.published_at.clone().unwrap_or_default(),
        "state_at" => s.state_at.clone().unwrap_or_default(),
        "call_id" => s.call_id.clone(),
        _ => String::new(),
    }
}

/// Writes the segments of the calls matching `q` to `out` in format `f`;
/// returns how many segments.
pub fn write_segments(
    ix: &Index,
    q: &Filter,
    f: OutFormat,
    out: &mut dyn Write,
) -> Result<usize, ReportError> {
    let mut n = 0usize;
    let mut table: Vec<Vec<String>> = Vec::new();
    if f == OutFormat::Json {
        out.write_all(b"[")?;
    }
    if f == OutFormat::Csv {
        let head = SEGMENT_COLUMNS.iter().map(|c| c.to_string());
        out.write_all(csv_row(head, false, SEGMENT_COLUMNS).as_bytes())?;
    }
    ix.query(q, |call| -> Result<(), ReportError> {
        for s in for_call(ix, &call.call_id)? {
            match f {
                OutFormat::Json => {
                    out.write_all(if n == 0 { b"\n" } else { b",\n" })?;
                    serde_json::to_writer(&mut *out, &s).map_err(std::io::Error::other)?;
                }
                OutFormat::Csv => {
                    let cells = SEGMENT_COLUMNS.iter().map(|c| seg_cell(&s, c));
                    out.write_all(csv_row(cells, true, SEGMENT_COLUMNS).as_bytes())?;
                }
                OutFormat::Table => {
                    table.push(SEGMENT_COLUMNS.iter().map(|c| seg_cell(&s, c)).collect())
                }
            }
            n += 1;
        }
        Ok(())
    })?;
    match f {
        OutFormat::Json => out.write_all(b"\n]\n")?,
        OutFormat::Csv => {}
        OutFormat::Table => {
            out.write_all(aligned(SEGMENT_COLUMNS, &table, "segment").as_bytes())?
        }
    }
    Ok(n)
}
