//! `callrec calls` (and `/api/calls`): the call history answered from its
//! index (`history::index`), newest first. Filters arrive as text and are
//! validated here: a bad value is refused naming the option and what it
//! expects. CSV and JSON are written row by row as the index yields them
//! (bounded memory at any size); the table needs every row for its widths.
//!
//! The CSV is RFC 4180 (quoted where needed, CRLF), UTF-8, and made safe
//! for spreadsheets: a text cell that a spreadsheet would take for a
//! number, a date or a formula — starting with a digit or with `=`, `+`,
//! `-`, `@`, tab or CR (OWASP "CSV Injection") — is prefixed with `'`,
//! which spreadsheets read as "text follows" and do not show. Numbers
//! keep their leading zero, Call-IDs stay inert, times keep their offset.

use std::io::Write;
use std::path::Path;

use serde_json::{Map, Value};

use super::parse_rfc3339;
use crate::calls::numbering;
use crate::history::CallRecord;
use crate::history::index::{Filter, Index, IndexError, Sort};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("writing the output: {0}")]
    Out(#[from] std::io::Error),
    /// The fleet database (`--db`) failed.
    #[error("fleet database: {0}")]
    Db(String),
    /// A filter that cannot mean anything: exit 2.
    #[error("--{key}: {value:?} is not {expected}")]
    BadFilter {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
}

/// Filters of `callrec calls` as typed; `None` matches everything.
#[derive(Clone, Debug, Default)]
pub struct CallsQuery {
    pub contract: Option<String>,
    /// "inbound" | "outbound".
    pub direction: Option<String>,
    /// "record" | "skip".
    pub decision: Option<String>,
    pub reason: Option<String>,
    /// Matches the caller or the callee, after normalisation (`+81...` finds `0...`).
    pub number: Option<String>,
    /// A Call-ID or short id.
    pub call: Option<String>,
    /// RFC 3339 instant, or a bare date `YYYY-MM-DD` (its midnight in the
    /// zone): calls whose `invite_at` is at or after it.
    pub since: Option<String>,
    /// RFC 3339 instant (exclusive), or a bare date (that whole day included).
    pub until: Option<String>,
    /// `newest` (default), `oldest` or `ended` (the log's order).
    pub sort: Option<String>,
    /// The first N rows in that order.
    pub limit: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFormat {
    Table,
    Csv,
    Json,
}

/// Columns of the table and the CSV, in order.
pub const COLUMNS: &[&str] = &[
    "call_id",
    "direction",
    "contract",
    "caller",
    "callee",
    "prefix",
    "decision",
    "reason",
    "invite_at",
    "answered_at",
    "billing_start",
    "ended_at",
    "end_reason",
    "segments",
    "duration_s",
    "billed_s",
];

/// Numeric columns: written as numbers, everything else as text.
const NUMERIC: &[&str] = &[
    "segments",
    "duration_s",
    "billed_s",
    "segment",
    "audio_bytes",
];

/// The narrower table shows these.
const TABLE_COLUMNS: &[&str] = &[
    "invite_at",
    "direction",
    "contract",
    "caller",
    "callee",
    "prefix",
    "decision",
    "reason",
    "duration_s",
    "end_reason",
    "segments",
    "call_id",
];

fn bad(key: &'static str, value: &str, expected: &'static str) -> ReportError {
    ReportError::BadFilter {
        key,
        value: value.into(),
        expected,
    }
}

impl CallsQuery {
    /// Checks every filter; bare dates are midnights at `utc_offset_secs`.
    pub fn validate(&self, utc_offset_secs: i32) -> Result<Filter, ReportError> {
        let one_of = |key, v: &Option<String>, allowed: &[&str], expected| match v {
            Some(s) if !allowed.contains(&s.as_str()) => Err(bad(key, s, expected)),
            _ => Ok(v.clone()),
        };
        let word = |key, v: &Option<String>| match v {
            Some(s)
                if s.is_empty()
                    || s.len() > 128
                    || !s
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
            {
                Err(bad(key, s, "a name of letters, digits, '-', '_' or '.'"))
            }
            _ => Ok(v.clone()),
        };
        let number = match &self.number {
            Some(n) => Some(
                numbering::normalize(n)
                    .filter(|d| !d.is_empty())
                    .ok_or_else(|| {
                        bad(
                            "number",
                            n,
                            "a telephone number like 0312340001 or +81312340001",
                        )
                    })?,
            ),
            None => None,
        };
        let call = match &self.call {
            Some(c) if c.is_empty() || c.len() > 512 || c.chars().any(char::is_control) => {
                return Err(bad("call", c, "a Call-ID or short id"));
            }
            c => c.clone(),
        };
        let time =
            |key, v: &Option<String>, end_of_day: bool| -> Result<Option<i64>, ReportError> {
                let Some(v) = v else { return Ok(None) };
                parse_rfc3339(v)
                .or_else(|| bare_date(v, utc_offset_secs, end_of_day))
                .map(Some)
                .ok_or_else(|| {
                    bad(
                        key,
                        v,
                        "an RFC 3339 time like 2026-11-21T09:30:00+09:00 or a date like 2026-11-21",
                    )
                })
            };
        let sort = match &self.sort {
            None => Sort::Newest,
            Some(s) => Sort::parse(s).ok_or_else(|| bad("sort", s, "newest, oldest or ended"))?,
        };
        Ok(Filter {
            contract: word("contract", &self.contract)?,
            direction: one_of(
                "direction",
                &self.direction,
                &["inbound", "outbound"],
                "inbound or outbound",
            )?,
            decision: one_of(
                "decision",
                &self.decision,
                &["record", "skip"],
                "record or skip",
            )?,
            reason: word("reason", &self.reason)?,
            number,
            call,
            since_us: time("since", &self.since, false)?,
            until_us: time("until", &self.until, true)?,
            sort,
            limit: self.limit,
        })
    }
}

/// `YYYY-MM-DD` as the microsecond of its midnight at `offset` (or of the
/// next midnight with `end_of_day`).
pub fn bare_date(s: &str, offset: i32, end_of_day: bool) -> Option<i64> {
    let s = s.trim();
    if s.len() != 10 {
        return None;
    }
    let sign = if offset < 0 { '-' } else { '+' };
    let a = offset.unsigned_abs();
    let t = parse_rfc3339(&format!(
        "{s}T00:00:00{sign}{:02}:{:02}",
        a / 3600,
        a / 60 % 60
    ))?;
    Some(if end_of_day { t + 86_400_000_000 } else { t })
}

/// The zone for bare dates when no configuration says: the offset the
/// daemon wrote the newest call in (it writes in the configured zone), else UTC.
pub fn history_offset(ix: &Index) -> i32 {
    ix.newest_invite()
        .ok()
        .flatten()
        .and_then(|t| t.get(23..).and_then(crate::time::parse_offset))
        .unwrap_or(0)
}

/// Opens the index of `spool`, catching up with its log; the lines it
/// had to skip are returned for the caller to show.
pub fn open_index(spool: &Path) -> Result<(Index, Vec<String>), ReportError> {
    let mut ix = Index::open(spool)?;
    let warnings = ix.catch_up()?;
    Ok((ix, warnings))
}

/// One row as the JSON object of its history line, plus the derived durations.
pub fn row_object(r: &CallRecord) -> Map<String, Value> {
    match serde_json::to_value(r) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// Writes the matching calls to `out` in format `f`.
pub fn write_calls(
    ix: &Index,
    q: &Filter,
    f: OutFormat,
    out: &mut dyn Write,
) -> Result<usize, ReportError> {
    write_rows(f, out, false, &mut |each| ix.query(q, |r| each(None, r)))
}

/// A row source: calls `each` with (appliance, row) for every row, in order.
pub type RowSource<'a> = dyn FnMut(
        &mut dyn FnMut(Option<&str>, CallRecord) -> Result<(), ReportError>,
    ) -> Result<(), ReportError>
    + 'a;

/// Writes rows from `source`; with `fleet`, each names its appliance
/// (an `appliance` field in JSON, a first column in CSV and the table).
pub fn write_rows(
    f: OutFormat,
    out: &mut dyn Write,
    fleet: bool,
    source: &mut RowSource,
) -> Result<usize, ReportError> {
    let mut n = 0usize;
    let object = |a: Option<&str>, r: &CallRecord| {
        let mut m = row_object(r);
        if let Some(a) = a {
            m.insert("appliance".into(), Value::String(a.into()));
        }
        m
    };
    let cols: Vec<&str> = fleet
        .then_some("appliance")
        .into_iter()
        .chain(COLUMNS.iter().copied())
        .collect();
    match f {
        OutFormat::Json => {
            out.write_all(b"[")?;
            source(&mut |a, r| {
                out.write_all(if n == 0 { b"\n" } else { b",\n" })?;
                match a {
                    // The record as it is: no intermediate map (half the time).
                    None => serde_json::to_writer(&mut *out, &r),
                    Some(_) => serde_json::to_writer(&mut *out, &object(a, &r)),
                }
                .map_err(std::io::Error::other)?;
                n += 1;
                Ok(())
            })?;
            out.write_all(b"\n]\n")?;
        }
        OutFormat::Csv => {
            out.write_all(csv_row(cols.iter().map(|c| c.to_string()), false, &cols).as_bytes())?;
            source(&mut |a, r| {
                let cells = cols.iter().map(|c| record_cell(a, &r, c));
                out.write_all(csv_row(cells, true, &cols).as_bytes())?;
                n += 1;
                Ok(())
            })?;
        }
        OutFormat::Table => {
            let mut rows = Vec::new();
            source(&mut |a, r| {
                rows.push(object(a, &r));
                Ok(())
            })?;
            n = rows.len();
            out.write_all(table(&rows, fleet).as_bytes())?;
        }
    }
    Ok(n)
}

/// The answer with no rows (no history yet).
pub fn write_empty(f: OutFormat, out: &mut dyn Write) -> Result<(), ReportError> {
    match f {
        OutFormat::Json => out.write_all(b"[\n]\n")?,
        OutFormat::Csv => out
            .write_all(csv_row(COLUMNS.iter().map(|c| c.to_string()), false, COLUMNS).as_bytes())?,
        OutFormat::Table => out.write_all(table(&[], false).as_bytes())?,
    }
    Ok(())
}

/// A field as text; derived durations from the time fields.
fn cell(r: &Map<String, Value>, col: &str) -> String {
    let secs_between = |a: &str, b: &str| {
        let t = |k: &str| r.get(k).and_then(Value::as_str).and_then(parse_rfc3339);
        match (t(a), t(b)) {
            (Some(a), Some(b)) if b >= a => format!("{:.3}", (b - a) as f64 / 1e6),
            _ => String::new(),
        }
    };
    match col {
        "duration_s" => secs_between("answered_at", "ended_at"),
        "billed_s" => secs_between("billing_start", "ended_at"),
        _ => match r.get(col) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
        },
    }
}

/// [`cell`] straight from the record (the CSV's per-row path).
fn record_cell(appliance: Option<&str>, r: &CallRecord, col: &str) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let secs_between = |a: &Option<String>, b: &Option<String>| {
        let t = |v: &Option<String>| v.as_deref().and_then(parse_rfc3339);
        match (t(a), t(b)) {
            (Some(a), Some(b)) if b >= a => format!("{:.3}", (b - a) as f64 / 1e6),
            _ => String::new(),
        }
    };
    match col {
        "appliance" => appliance.unwrap_or_default().to_string(),
        "call_id" => r.call_id.clone(),
        "short_id" => r.short_id.clone(),
        "direction" => opt(&r.direction),
        "contract" => opt(&r.contract),
        "service" => opt(&r.service),
        "caller" => r.caller.clone(),
        "callee" => r.callee.clone(),
        "prefix" => opt(&r.prefix),
        "decision" => r.decision.clone(),
        "reason" => opt(&r.reason),
        "invite_at" => r.invite_at.clone(),
        "answered_at" => opt(&r.answered_at),
        "billing_start" => opt(&r.billing_start),
        "ended_at" => opt(&r.ended_at),
        "end_reason" => opt(&r.end_reason),
        "segments" => r.segments.to_string(),
        "duration_s" => secs_between(&r.answered_at, &r.ended_at),
        "billed_s" => secs_between(&r.billing_start, &r.ended_at),
        _ => String::new(),
    }
}

/// Whether a spreadsheet would read this text cell as something else:
/// a formula (OWASP: `=` `+` `-` `@` tab CR) or a number or date (a digit first).
fn needs_text_marker(s: &str) -> bool {
    s.starts_with(['=', '+', '-', '@', '\t', '\r']) || s.starts_with(|c: char| c.is_ascii_digit())
}

/// One RFC 4180 record: fields with `,` `"` CR or LF quoted, quotes
/// doubled, CRLF. With `guard`, text cells get the spreadsheet marker.
pub(crate) fn csv_row(fields: impl Iterator<Item = String>, guard: bool, cols: &[&str]) -> String {
    let mut s = String::new();
    for (i, mut f) in fields.enumerate() {
        if i > 0 {
            s.push(',');
        }
        if guard && !cols.get(i).is_some_and(|c| NUMERIC.contains(c)) && needs_text_marker(&f) {
            f.insert(0, '\'');
        }
        if f.contains([',', '"', '\r', '\n']) {
            s.push('"');
            s.push_str(&f.replace('"', "\"\""));
            s.push('"');
        } else {
            s.push_str(&f);
        }
    }
    s.push_str("\r\n");
    s
}

fn table(rows: &[Map<String, Value>], fleet: bool) -> String {
    let cols: Vec<&str> = fleet
        .then_some("appliance")
        .into_iter()
        .chain(TABLE_COLUMNS.iter().copied())
        .collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| cell(r, c)).collect())
        .collect();
    aligned(&cols, &cells, "call")
}

/// A text table: the header, the rows aligned, then "N nouns".
pub(crate) fn aligned(cols: &[&str], cells: &[Vec<String>], noun: &str) -> String {
    // Control characters would break the alignment (and a terminal).
    let clean = |s: &str| {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
    };
    let cells: Vec<Vec<String>> = cells
        .iter()
        .map(|r| r.iter().map(|c| clean(c)).collect())
        .collect();
    let mut width: Vec<usize> = cols.iter().map(|c| c.chars().count()).collect();
    for row in &cells {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut o = String::new();
    let mut line = |vals: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, (v, w)) in vals.zip(&width).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            l.push_str(v);
            l.extend(std::iter::repeat_n(' ', w - v.chars().count()));
        }
        o.push_str(l.trim_end());
        o.push('\n');
    };
    line(&mut cols.iter().copied());
    for row in &cells {
        line(&mut row.iter().map(String::as_str));
    }
    o.push_str(&format!(
        "{} {noun}{}\n",
        cells.len(),
        if cells.len() == 1 { "" } else { "s" }
    ));
    o
}

#[cfg(test)]
#[path = "calls_tests.rs"]
mod tests;
