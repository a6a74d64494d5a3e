//! The read-only HTTP API on the metrics listener, over real TCP on
//! 127.0.0.1: with and without the bearer token, filters, one call,
//! queue and status; a bad filter is 400 naming it.

use callrec::daemon::api::ApiConfig;
use callrec::daemon::metrics::{Sources, serve};
use callrec::daemon::run::CaptureStatus;
use callrec::delivery::spool::SpoolUsage;
use callrec::delivery::worker::DestStatus;
use callrec::history::{CallRecord, HistoryWriter};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

const TOKEN: &str = "s3cret-token-for-tests-0123";

/// (status code, headers, body) of one request.
fn get(port: u16, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(c, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    let (head, body) = s.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, head.to_string(), body.to_string())
}

fn start() -> (u16, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let mut w = HistoryWriter::open(d.path()).unwrap();
    for (i, (dir, caller)) in [
        ("outbound", "0312340001"),
        ("inbound", "anonymous"),
        ("outbound", "0312340003"),
    ]
    .into_iter()
    .enumerate()
    {
        let t = callrec::time::Timestamp(1_795_186_800_000_000 + i as i64 * 60_000_000);
        w.append(&CallRecord {
            call_id: format!("api-{i}@198.51.100.7"),
            short_id: format!("c{i}"),
            direction: Some(dir.into()),
            contract: Some("K-0001".into()),
            caller: caller.into(),
            callee: "0612340002".into(),
            decision: "record".into(),
            invite_at: t.rfc3339(9 * 3600),
            ..Default::default()
        })
        .unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dest = Arc::new(DestStatus::new("acme"));
    dest.ready.store(4, std::sync::atomic::Ordering::Relaxed);
    let src = Sources {
        capture: Arc::new(Mutex::new(vec![CaptureStatus {
            interface: "eth1".into(),
            running: true,
            calls: 3,
            ..Default::default()
        }])),
        destinations: vec![dest],
        usage: SpoolUsage::starting_at(1234),
        spool_warn_bytes: 0,
        spool_max_bytes: 0,
        started: SystemTime::now(),
        api: Some(Arc::new(ApiConfig {
            token: TOKEN.into(),
            spool: d.path().to_path_buf(),
            utc_offset_secs: 9 * 3600,
        })),
    };
    serve(format!("127.0.0.1:{port}").parse().unwrap(), src).unwrap();
    (port, d)
}

#[test]
fn api_needs_the_token() {
    let (port, _d) = start();
    for path in ["/api/calls", "/api/calls/c1", "/api/queue", "/api/status"] {
        let (code, head, _) = get(port, path, None);
        assert_eq!(code, 401, "{path}");
        assert!(head.contains("WWW-Authenticate: Bearer"), "{head}");
        let (code, _, body) = get(port, path, Some("wrong-token-wrong-token"));
        assert_eq!(code, 401, "{path}");
        assert!(!body.contains("api-"), "{body}");
    }
    // The metrics stay open: Prometheus has no token.
    assert_eq!(get(port, "/metrics", None).0, 200);
}

#[test]
fn api_answers_with_the_token() {
    let (port, _d) = start();
    let json = |path: &str| {
        let (code, _, body) = get(port, path, Some(TOKEN));
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["short_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&json("/api/calls")), ["c2", "c1", "c0"]);
    assert_eq!(
        ids(&json("/api/calls?direction=outbound&sort=oldest")),
        ["c0", "c2"]
    );
    assert_eq!(ids(&json("/api/calls?number=%2B81312340003")), ["c2"]);
    assert_eq!(
        ids(&json(
            "/api/calls?since=2026-11-21T00:01:00%2B09:00&limit=1"
        )),
        ["c2"]
    );
    assert_eq!(json("/api/calls/c1")["call_id"], "api-1@198.51.100.7");
    assert_eq!(json("/api/calls/api-0%40198.51.100.7")["short_id"], "c0");
    assert_eq!(json("/api/queue")["destinations"][0]["ready"], 4);
    let st = json("/api/status");
    assert_eq!(st["capture"][0]["interface"], "eth1");
    assert_eq!(st["spool"]["bytes"], 1234);
    let (code, _, body) = get(port, "/api/calls?direction=sideways", Some(TOKEN));
    assert_eq!(code, 400);
    assert!(
        body.contains("direction") && body.contains("sideways"),
        "{body}"
    );
    let (code, _, body) = get(port, "/api/calls?colour=red", Some(TOKEN));
    assert_eq!(code, 400);
    assert!(body.contains("colour"), "{body}");
    assert_eq!(get(port, "/api/calls/nope", Some(TOKEN)).0, 404);
    assert_eq!(get(port, "/api/nothing", Some(TOKEN)).0, 404);
}
