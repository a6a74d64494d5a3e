//! The read-only HTTP API on the metrics listener (`daemon.metrics_listen`):
//! `GET /api/calls` (the filters of `callrec calls` as query parameters),
//! `GET /api/calls/{id}` (a Call-ID or short id, with its segments' files
//! and delivery states as `segment_files`), `GET /api/queue`,
//! `GET /api/status`, all JSON. Every request carries
//! `Authorization: Bearer TOKEN` (RFC 6750) with `api.token`; without
//! one configured the API is off (404). A request without the token is
//! 401 with `WWW-Authenticate`, a bad filter 400 naming the parameter.
//! Answers are built whole (Content-Length) so `/api/calls` is capped at
//! [`MAX_LIMIT`] rows per request (default [`DEFAULT_LIMIT`]); the CLI
//! streams any size. The calls come from the history index, opened
//! read-mostly per request (WAL: the daemon's writes are never blocked).

use crate::daemon::metrics::Sources;
use crate::report::{CallsQuery, OutFormat, ReportError};
use hyper::StatusCode;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::SystemTime;

/// Rows of `/api/calls` without `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// The most rows one `/api/calls` request returns.
pub const MAX_LIMIT: usize = 10_000;

/// What the API needs beyond the metrics' sources.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// `api.token`.
    pub token: String,
    /// The spool holding `calls.jsonl` and its index.
    pub spool: PathBuf,
    /// The configured zone, for bare dates.
    pub utc_offset_secs: i32,
}

/// One answer: status, JSON body, extra headers.
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
}

fn answer(status: StatusCode, body: Value) -> Answer {
    let mut body = body.to_string();
    body.push('\n');
    Answer {
        status,
        body,
        headers: Vec::new(),
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> Answer {
    answer(status, json!({ "error": msg.into() }))
}

/// Answers one `/api/` request: `target` is the path and query,
/// `authorization` the `Authorization` header's value.
pub fn respond(method: &str, target: &str, authorization: Option<&str>, src: &Sources) -> Answer {
    let Some(api) = &src.api else {
        return error(
            StatusCode::NOT_FOUND,
            "the API is off: set api.token in the configuration",
        );
    };
    let token = authorization.and_then(|v| v.trim().strip_prefix("Bearer ").map(str::trim));
    match token {
        None => {
            let mut a = error(
                StatusCode::UNAUTHORIZED,
                "missing bearer token (Authorization: Bearer ...)",
            );
            a.headers = vec![("www-authenticate", "Bearer realm=\"callrec\"".into())];
            return a;
        }
        Some(t) if !same(t.as_bytes(), api.token.as_bytes()) => {
            let mut a = error(StatusCode::UNAUTHORIZED, "invalid bearer token");
            a.headers = vec![(
                "www-authenticate",
                "Bearer realm=\"callrec\", error=\"invalid_token\"".into(),
            )];
            return a;
        }
        Some(_) => {}
    }
    if method != "GET" && method != "HEAD" {
        let mut a = error(StatusCode::METHOD_NOT_ALLOWED, "the API is read-only: GET");
        a.headers = vec![("allow", "GET, HEAD".into())];
        return a;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/api/calls" => calls(api, query),
        "/api/queue" => queue(src),
        "/api/status" => status(src),
        p => match p.strip_prefix("/api/calls/") {
            Some(id) if !id.is_empty() => one_call(api, &decode(id)),
            _ => error(StatusCode::NOT_FOUND, format!("no such API path: {p}")),
        },
    }
}

/// Compares without stopping at the first difference (no timing hint).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Percent-decoding (RFC 3986 section 2.1), `+` as a space in queries.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query parameters into a [`CallsQuery`]; an unknown one is named.
fn parse_query(query: &str) -> Result<CallsQuery, Answer> {
    let mut q = CallsQuery {
        limit: Some(DEFAULT_LIMIT),
        ..Default::default()
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(&v.replace('+', " "));
        let slot = match k {
            "contract" => &mut q.contract,
            "direction" => &mut q.direction,
            "decision" => &mut q.decision,
            "reason" => &mut q.reason,
            "number" => &mut q.number,
            "call" => &mut q.call,
            "since" => &mut q.since,
            "until" => &mut q.until,
            "sort" => &mut q.sort,
            "limit" => {
                q.limit = Some(
                    v.parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            error(
                                StatusCode::BAD_REQUEST,
                                format!("limit: {v:?} is not a number from 1 to {MAX_LIMIT}"),
                            )
                        })?,
                );
                continue;
            }
            other => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter {other:?}"),
                ));
            }
        };
        *slot = Some(v);
    }
    Ok(q)
}

fn bad_filter(e: ReportError) -> Answer {
    match e {
        ReportError::BadFilter {
            key,
            value,
            expected,
        } => answer(
            StatusCode::BAD_REQUEST,
            json!({ "error": format!("{key}: {value:?} is not {expected}"), "parameter": key }),
        ),
        e => {
            tracing::error!(error = %e, "API: cannot read the call history");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the call history: {e}"),
            )
        }
    }
}

fn calls(api: &ApiConfig, query: &str) -> Answer {
    let q = match parse_query(query) {
        Ok(q) => q,
        Err(a) => return a,
    };
    let filter = match q.validate(api.utc_offset_secs) {
        Ok(f) => f,
        Err(e) => return bad_filter(e),
    };
    let mut out = Vec::new();
    let r = crate::report::open_index(&api.spool)
        .and_then(|(ix, _)| crate::report::write_calls(&ix, &filter, OutFormat::Json, &mut out));
    match r {
        Ok(_) => Answer {
            status: StatusCode::OK,
            body: String::from_utf8_lossy(&out).into_owned(),
            headers: Vec::new(),
        },
        Err(e) => bad_filter(e),
    }
}

fn one_call(api: &ApiConfig, id: &str) -> Answer {
    let q = CallsQuery {
        call: Some(id.to_string()),
        limit: Some(1),
        ..Default::default()
    };
    let filter = match q.validate(api.utc_offset_secs) {
        Ok(f) => f,
        Err(e) => return bad_filter(e),
    };
    let mut found = None;
    let r = crate::report::open_index(&api.spool).and_then(|(mut ix, _)| {
        // The segments' delivery states as the spool's folders have them now.
        if let Err(e) = crate::history::segments::sync(&mut ix, &api.spool) {
            tracing::warn!(error = %e, "API: segment states not refreshed");
        }
        ix.query(&filter, |r| -> Result<(), ReportError> {
            let mut m = crate::report::row_object(&r);
            let segs = crate::history::segments::for_call(&ix, &r.call_id)?;
            m.insert(
                "segment_files".into(),
                serde_json::to_value(segs).unwrap_or(Value::Null),
            );
            found = Some(m);
            Ok(())
        })
    });
    match (r, found) {
        (Err(e), _) => bad_filter(e),
        (Ok(()), Some(m)) => answer(StatusCode::OK, Value::Object(m)),
        (Ok(()), None) => error(
            StatusCode::NOT_FOUND,
            format!("no call {id:?} in the history"),
        ),
    }
}

fn queue(src: &Sources) -> Answer {
    let now = SystemTime::now();
    let dests: Vec<Value> = src
        .destinations
        .iter()
        .map(|d| serde_json::to_value(d.snapshot(now)).unwrap_or(Value::Null))
        .collect();
    answer(StatusCode::OK, json!({ "destinations": dests }))
}

fn status(src: &Sources) -> Answer {
    let caps = src.capture.lock().map(|c| c.clone()).unwrap_or_default();
    let capture: Vec<Value> = caps
        .iter()
        .map(|c| {
            json!({
                "interface": c.interface, "running": c.running, "packets": c.packets,
                "sip_messages": c.sip_messages, "calls": c.calls, "recorded": c.recorded,
                "active_recorded": c.active_recorded, "pcap_dropped": c.pcap_dropped,
                "interface_dropped": c.if_dropped, "ring_dropped": c.ring_dropped,
                "error": c.error, "skipped": c.skipped,
            })
        })
        .collect();
    let up = SystemTime::now()
        .duration_since(src.started)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    answer(
        StatusCode::OK,
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": up,
            "capture": capture,
            "spool": { "bytes": src.usage.bytes(), "warn_bytes": src.spool_warn_bytes, "max_bytes": src.spool_max_bytes },
            "destinations": src.destinations.len(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(decode("%2B81312340001"), "+81312340001");
        assert_eq!(decode("a%40b"), "a@b");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%4"), "%4");
    }

    #[test]
    fn unknown_parameter_and_bad_limit_are_named() {
        let e = parse_query("colour=red").err().unwrap();
        assert!(e.body.contains("colour"), "{}", e.body);
        let e = parse_query("limit=0").err().unwrap();
        assert!(e.body.contains("limit"), "{}", e.body);
        let q = parse_query("direction=inbound&number=%2B81-3-1234-0001")
            .ok()
            .unwrap();
        assert_eq!(q.direction.as_deref(), Some("inbound"));
        assert_eq!(q.number.as_deref(), Some("+81-3-1234-0001"));
    }
}
