//! What operators read: the effective configuration (`callrec check-config`)
//! and the call history (`callrec calls`).
//!
//! The history is `SPOOL/calls.jsonl`, one JSON object per call. Fields may be
//! missing or null (older writers, calls still open); a line that is not a
//! JSON object is reported with its line number rather than crashing or being
//! silently dropped. Times are compared as instants, so `--since` in `Z` and
//! rows in `+09:00` agree.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::calls::numbering;
use crate::config::{AnnounceMode, Channels, Config, SegmentPolicy};

/// The effective configuration, as an operator wants to check it.
pub fn check_config_report(cfg: &Config) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "configuration {}: OK", cfg.source.display());
    let _ = writeln!(
        o,
        "timezone      {}",
        fmt_offset(cfg.general.utc_offset_secs)
    );
    let ifs = if cfg.capture.interfaces.is_empty() {
        "(none: replay only)".to_string()
    } else {
        cfg.capture.interfaces.join(", ")
    };
    let ports: Vec<String> = cfg
        .capture
        .sip_ports
        .iter()
        .map(|p| p.to_string())
        .collect();
    let _ = writeln!(
        o,
        "capture       interfaces {ifs}; SIP ports {} (UDP and TCP)",
        ports.join(", ")
    );
    let r = &cfg.recording;
    let _ = writeln!(
        o,
        "recording     spool {}, {} WAV, at most {} active calls, {} shards",
        r.spool_dir.display(),
        r.format.as_str(),
        r.max_active_calls,
        if r.shards == 0 {
            "auto".to_string()
        } else {
            r.shards.to_string()
        }
    );
    let _ = writeln!(
        o,
        "              rtp timeout {}, max call length {}, setup timeout {}, spool warn {}, spool max {}",
        fmt_duration(r.rtp_timeout),
        fmt_duration(r.max_call_length),
        fmt_duration(r.setup_timeout),
        fmt_bytes(r.spool_warn_bytes),
        fmt_bytes(r.spool_max_bytes)
    );
    let mode = cfg.announce.mode.as_str();
    let iface = cfg
        .announce
        .interface
        .as_deref()
        .map(|i| format!(" on {i}"))
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "announce      mode {mode}{iface}, prompts in {}",
        cfg.announce.dir.display()
    );
    if cfg.announce.mode == AnnounceMode::Inline {
        let i = &cfg.announce.inline;
        let _ = writeln!(
            o,
            "              NFQUEUE {}, mark {:#x}, nftables table {}{}",
            i.queue,
            i.mark,
            i.nft_table,
            if i.setup {
                ""
            } else {
                " (installed by the operator)"
            }
        );
    }
    if let Some(w) = cfg.announce.warning() {
        let _ = writeln!(o, "warning       {w}");
    }
    let prio = if cfg.overload.priority_numbers.is_empty() {
        "(none; Resource-Priority still counts)".to_string()
    } else {
        cfg.overload.priority_numbers.join(", ")
    };
    let _ = writeln!(o, "priority      {prio}");
    let d = &cfg.delivery;
    let nets: Vec<String> = d.allowed_networks.iter().map(|n| n.to_string()).collect();
    let _ = writeln!(
        o,
        "delivery      allowed networks {}; retry {}..{}, hold after {}, keep delivered {}, connect timeout {}, keepalive {}",
        if nets.is_empty() {
            "(none: every destination refused)".to_string()
        } else {
            nets.join(", ")
        },
        fmt_duration(d.retry_initial),
        fmt_duration(d.retry_max),
        fmt_duration(d.hold_after),
        fmt_duration(d.keep_delivered),
        fmt_duration(d.connect_timeout),
        fmt_duration(d.keepalive)
    );
    let l = &cfg.limits;
    let _ = writeln!(
        o,
        "limits        fragments {} / {}, TCP {} streams of {} / idle {}, {} dialogs, SIP message {}",
        fmt_bytes(l.fragment_bytes as u64),
        fmt_duration(l.fragment_timeout),
        l.tcp_streams,
        fmt_bytes(l.tcp_stream_bytes as u64),
        fmt_duration(l.tcp_idle_timeout),
        l.max_dialogs,
        fmt_bytes(l.sip_message_bytes as u64)
    );
    let metrics = cfg
        .daemon
        .metrics_listen
        .map(|a| a.to_string())
        .unwrap_or_else(|| "off".into());
    let _ = writeln!(
        o,
        "daemon        control socket {}, metrics {metrics}",
        cfg.daemon.control_socket.display()
    );

    let _ = writeln!(o, "\ndestinations ({})", cfg.destinations.len());
    for d in &cfg.destinations {
        let host = match d.host {
            std::net::IpAddr::V6(h) => format!("[{h}]"),
            h => h.to_string(),
        };
        let rate = d
            .max_rate
            .map(fmt_rate)
            .unwrap_or_else(|| "unlimited".into());
        let users: Vec<&str> = cfg
            .contracts
            .iter()
            .filter(|c| c.destination == d.name)
            .map(|c| c.id.as_str())
            .collect();
        let kind = d.host_key.split_whitespace().next().unwrap_or("?");
        let _ = writeln!(
            o,
            "  {}  sftp://{}@{host}:{}{}  rate {rate}  connections {}  identity {}  host key {kind} (pinned)  contracts: {}",
            d.name,
            d.user,
            d.port,
            d.remote_dir,
            d.connections,
            d.identity.display(),
            if users.is_empty() {
                "(none)".to_string()
            } else {
                users.join(", ")
            }
        );
    }

    let _ = writeln!(o, "\ncontracts ({})", cfg.contracts.len());
    for c in &cfg.contracts {
        let dtmf = match (&c.pause_dtmf, &c.resume_dtmf) {
            (Some(p), Some(r)) => format!("pause {p} / resume {r}"),
            _ => "no pause".into(),
        };
        let prompt = cfg.guidance_file(c.guidance);
        let missing = if cfg.announce.mode != AnnounceMode::Off && !prompt.exists() {
            " (MISSING)"
        } else {
            ""
        };
        let _ = writeln!(
            o,
            "  {}  {} (prefix {})  {}  segments {}  guidance {} {}{missing}  {dtmf}  -> {}",
            c.id,
            c.service.as_str(),
            c.service.prefix(),
            match c.channels {
                Channels::Mono => "mono",
                Channels::Stereo => "stereo",
            },
            match c.segments {
                SegmentPolicy::All => "all",
                SegmentPolicy::Longest => "longest",
            },
            c.guidance,
            prompt.display(),
            c.destination
        );
        for n in &c.numbers {
            let class = numbering::classify(n);
            let note = if class.records_inbound() {
                "outbound with prefix, inbound recorded"
            } else {
                "outbound with prefix only (inbound to 070/080/090 is not recorded)"
            };
            let line050 = if class == numbering::DestClass::IpPhone {
                "; cannot reach 0120/0800/0570"
            } else {
                ""
            };
            let _ = writeln!(o, "      {n}  {}: {note}{line050}", class.as_str());
        }
    }
    o
}

fn fmt_offset(secs: i32) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.unsigned_abs();
    format!("{sign}{:02}:{:02}", a / 3600, a / 60 % 60)
}

/// The largest whole unit: 600s -> "10m", 1500ms -> "1500ms".
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= n && s.is_multiple_of(n) {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

/// Bytes per second as the bit rate operators configure: 2_500_000 -> "20Mbit/s".
pub fn fmt_rate(bytes_per_sec: u64) -> String {
    let bits = bytes_per_sec.saturating_mul(8);
    for (unit, n) in [
        ("Gbit", 1_000_000_000u64),
        ("Mbit", 1_000_000),
        ("kbit", 1000),
    ] {
        if bits >= n && bits.is_multiple_of(n) {
            return format!("{}{unit}/s", bits / n);
        }
    }
    format!("{bits}bit/s")
}

/// Bytes in the largest exact decimal or binary unit; 0 is "none".
pub fn fmt_bytes(b: u64) -> String {
    if b == 0 {
        return "none".into();
    }
    for (unit, n) in [
        ("GB", 1_000_000_000u64),
        ("GiB", 1 << 30),
        ("MB", 1_000_000),
        ("MiB", 1 << 20),
        ("kB", 1000),
        ("KiB", 1 << 10),
    ] {
        if b >= n && b.is_multiple_of(n) {
            return format!("{}{unit}", b / n);
        }
    }
    format!("{b}B")
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: corrupt history line: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("--{key}: {value:?} is not an RFC 3339 time like 2026-11-21T09:30:00+09:00")]
    BadTime { key: &'static str, value: String },
}

/// Filters of `callrec calls`; `None` matches everything.
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
    /// RFC 3339; calls whose `invite_at` is at or after this instant.
    pub since: Option<String>,
    /// RFC 3339; calls whose `invite_at` is before this instant.
    pub until: Option<String>,
    /// The last N matching calls (the history is in time order).
    pub limit: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFormat {
    Table,
    Csv,
    Json,
}

/// Columns of the table and the CSV, in order.
const COLUMNS: &[&str] = &[
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

/// Renders `SPOOL/calls.jsonl` filtered by `q`. A missing history is an empty one.
pub fn render_calls(spool: &Path, q: &CallsQuery, f: OutFormat) -> Result<String, ReportError> {
    let rows = select_calls(spool, q)?;
    Ok(match f {
        OutFormat::Json => {
            let arr = Value::Array(rows.into_iter().map(Value::Object).collect());
            let mut s = serde_json::to_string_pretty(&arr).unwrap_or_else(|_| "[]".into());
            s.push('\n');
            s
        }
        OutFormat::Csv => {
            let mut s = csv_row(COLUMNS.iter().map(|c| c.to_string()));
            for r in &rows {
                s.push_str(&csv_row(COLUMNS.iter().map(|c| cell(r, c))));
            }
            s
        }
        OutFormat::Table => table(&rows),
    })
}

/// The matching history objects, in file order.
pub fn select_calls(spool: &Path, q: &CallsQuery) -> Result<Vec<Map<String, Value>>, ReportError> {
    let time = |key: &'static str, v: &Option<String>| {
        v.as_deref()
            .map(|v| {
                parse_rfc3339(v).ok_or(ReportError::BadTime {
                    key,
                    value: v.into(),
                })
            })
            .transpose()
    };
    let since = time("since", &q.since)?;
    let until = time("until", &q.until)?;
    let number = q
        .number
        .as_deref()
        .map(|n| numbering::normalize(n).unwrap_or_else(|| n.to_string()));
    let path = spool.join("calls.jsonl");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(ReportError::Io { path, source }),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let obj = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(ReportError::Corrupt {
                    path,
                    line: i + 1,
                    reason: "not a JSON object".into(),
                });
            }
            Err(e) => {
                return Err(ReportError::Corrupt {
                    path,
                    line: i + 1,
                    reason: e.to_string(),
                });
            }
        };
        let s = |k: &str| obj.get(k).and_then(Value::as_str);
        let eq = |k: &str, want: &Option<String>| want.as_deref().is_none_or(|w| s(k) == Some(w));
        if !(eq("contract", &q.contract)
            && eq("direction", &q.direction)
            && eq("decision", &q.decision)
            && eq("reason", &q.reason))
        {
            continue;
        }
        if let Some(n) = &number
            && s("caller") != Some(n.as_str())
            && s("callee") != Some(n.as_str())
        {
            continue;
        }
        if since.is_some() || until.is_some() {
            let Some(at) = s("invite_at").and_then(parse_rfc3339) else {
                continue;
            };
            if since.is_some_and(|t| at < t) || until.is_some_and(|t| at >= t) {
                continue;
            }
        }
        out.push(obj);
    }
    if let Some(limit) = q.limit {
        let skip = out.len().saturating_sub(limit);
        out.drain(..skip);
    }
    Ok(out)
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

/// One RFC 4180 record: fields with `,` `"` CR or LF quoted, quotes doubled, CRLF.
fn csv_row(fields: impl Iterator<Item = String>) -> String {
    let mut s = String::new();
    for (i, f) in fields.enumerate() {
        if i > 0 {
            s.push(',');
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

fn table(rows: &[Map<String, Value>]) -> String {
    // Control characters would break the alignment (and a terminal).
    let clean = |s: String| {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect::<String>()
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| TABLE_COLUMNS.iter().map(|c| clean(cell(r, c))).collect())
        .collect();
    let mut width: Vec<usize> = TABLE_COLUMNS.iter().map(|c| c.chars().count()).collect();
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
    line(&mut TABLE_COLUMNS.iter().copied());
    for row in &cells {
        line(&mut row.iter().map(String::as_str));
    }
    o.push_str(&format!(
        "{} call{}\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    ));
    o
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` to microseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let digits = &frac[..n.min(6)];
        micros = digits.parse::<i64>().ok()? * 10i64.pow(6 - digits.len() as u32);
        rest = &frac[n..];
    }
    let offset = crate::time::parse_offset(rest)? as i64;
    let days = days_from_civil(y, mo, d);
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) - offset) * 1_000_000 + micros)
}

/// Howard Hinnant's civil-to-days algorithm.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp::from_secs_micros(1_795_221_000, 123_000);
        for off in [9 * 3600, 0, -5 * 3600] {
            assert_eq!(parse_rfc3339(&t.rfc3339(off)), Some(t.micros()));
        }
        assert_eq!(
            parse_rfc3339("2026-11-21T00:30:00Z"),
            Some(1_795_221_000_000_000)
        );
        assert_eq!(parse_rfc3339("2026-13-21T00:30:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn csv_quoting() {
        let r = csv_row(
            [
                "a".to_string(),
                "b,c".into(),
                "say \"hi\"".into(),
                "x\ny".into(),
            ]
            .into_iter(),
        );
        assert_eq!(r, "a,\"b,c\",\"say \"\"hi\"\"\",\"x\ny\"\r\n");
    }

    #[test]
    fn units() {
        assert_eq!(fmt_duration(Duration::from_secs(600)), "10m");
        assert_eq!(fmt_duration(Duration::from_secs(7 * 86400)), "7d");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_bytes(2_500_000), "2500kB");
        assert_eq!(fmt_bytes(16 << 20), "16MiB");
    }

    const HISTORY: &str = concat!(
        r#"{"call_id":"a1","direction":"outbound","contract":"K-0001","caller":"0312340001","callee":"0312349999","prefix":"007726","decision":"record","reason":null,"invite_at":"2026-11-21T09:30:00.000+09:00","answered_at":"2026-11-21T09:30:05.000+09:00","billing_start":"2026-11-21T09:30:05.500+09:00","ended_at":"2026-11-21T09:31:05.000+09:00","end_reason":"bye-subscriber","segments":1}"#,
        "\n",
        r#"{"call_id":"b2,\"x\"","direction":"inbound","contract":"K-0002","caller":"anonymous","callee":"0612340002","decision":"skip","reason":"overload","invite_at":"2026-11-21T01:00:00Z"}"#,
        "\n\n",
        r#"{"call_id":"c3","decision":"skip","reason":"not-a-contract-number","caller":"0312349998","callee":"0312349999","invite_at":"2026-11-22T09:00:00+09:00"}"#,
        "\n"
    );

    fn spool(text: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("calls.jsonl"), text).unwrap();
        d
    }

    fn ids(d: &Path, q: &CallsQuery) -> Vec<String> {
        select_calls(d, q)
            .unwrap()
            .iter()
            .map(|r| r["call_id"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn filters() {
        let d = spool(HISTORY);
        let all = CallsQuery::default();
        assert_eq!(ids(d.path(), &all), ["a1", "b2,\"x\"", "c3"]);
        let q = |f: &dyn Fn(&mut CallsQuery)| {
            let mut q = CallsQuery::default();
            f(&mut q);
            ids(d.path(), &q)
        };
        assert_eq!(q(&|q| q.contract = Some("K-0002".into())), ["b2,\"x\""]);
        assert_eq!(q(&|q| q.direction = Some("outbound".into())), ["a1"]);
        assert_eq!(q(&|q| q.decision = Some("skip".into())), ["b2,\"x\"", "c3"]);
        assert_eq!(q(&|q| q.reason = Some("overload".into())), ["b2,\"x\""]);
        // The number filter normalises: +81 finds the national form, caller or callee.
        assert_eq!(
            q(&|q| q.number = Some("+81-3-1234-9999".into())),
            ["a1", "c3"]
        );
        // 01:00Z is 10:00+09:00: after a1, before c3.
        assert_eq!(
            q(&|q| q.since = Some("2026-11-21T09:45:00+09:00".into())),
            ["b2,\"x\"", "c3"]
        );
        assert_eq!(
            q(&|q| q.until = Some("2026-11-21T01:00:00Z".into())),
            ["a1"]
        );
        assert_eq!(q(&|q| q.limit = Some(1)), ["c3"]);
        let bad = CallsQuery {
            since: Some("yesterday".into()),
            ..Default::default()
        };
        assert!(matches!(
            select_calls(d.path(), &bad),
            Err(ReportError::BadTime { key: "since", .. })
        ));
    }

    #[test]
    fn formats() {
        let d = spool(HISTORY);
        let q = CallsQuery::default();
        let csv = render_calls(d.path(), &q, OutFormat::Csv).unwrap();
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], COLUMNS.join(","));
        assert!(
            lines[1].starts_with("a1,outbound,K-0001,0312340001,0312349999,007726,record,,"),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].ends_with(",bye-subscriber,1,60.000,59.500"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("\"b2,\"\"x\"\"\",inbound,"),
            "{}",
            lines[2]
        );
        assert_eq!(lines.len(), 5); // header, 3 rows, empty after the last CRLF
        let json: Value =
            serde_json::from_str(&render_calls(d.path(), &q, OutFormat::Json).unwrap()).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 3);
        let table = render_calls(d.path(), &q, OutFormat::Table).unwrap();
        let rows: Vec<&str> = table.lines().collect();
        // Aligned: every column starts at the same character in every row.
        let col = rows[0].find("direction").unwrap();
        assert_eq!(&rows[1][col..col + 8], "outbound");
        assert_eq!(&rows[2][col..col + 7], "inbound");
        assert_eq!(rows.last(), Some(&"3 calls"));
        // No history yet: empty, not an error.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            render_calls(empty.path(), &q, OutFormat::Csv).unwrap(),
            format!("{}\r\n", COLUMNS.join(","))
        );
    }

    #[test]
    fn corrupt_line_is_named() {
        let d = spool(&format!("{HISTORY}{{\"call_id\": \"d4\", \"caller\"\n"));
        let err = render_calls(d.path(), &CallsQuery::default(), OutFormat::Table).unwrap_err();
        assert!(matches!(err, ReportError::Corrupt { line: 5, .. }), "{err}");
        assert!(err.to_string().contains("calls.jsonl:5:"), "{err}");
    }

    #[test]
    fn check_config_shows_contracts_and_destinations() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/callrec.toml");
        let cfg = crate::config::load(&path).unwrap();
        let r = check_config_report(&cfg);
        for want in [
            "K-0001  mobile (prefix 007726)  stereo  segments all  guidance 2",
            "K-0002  fixed (prefix 007727)  mono  segments longest  guidance 4",
            "0312340001  geographic-0abj",
            "05011110001  ip-phone-050",
            "cannot reach 0120/0800/0570",
            "acme  sftp://rec@192.0.2.10:22/incoming  rate 20Mbit/s",
            "bravo  sftp://callrec@192.0.2.11:22/recordings  rate 500kbit/s",
            "pause *1 / resume *2",
            "priority      0312340099",
        ] {
            assert!(r.contains(want), "missing {want:?} in\n{r}");
        }
    }
}
