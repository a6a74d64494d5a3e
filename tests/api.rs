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
    // One delivered segment of c1 in the spool's folders.
    let spool = callrec::delivery::spool::Spool::open(d.path()).unwrap();
    let wav = spool.tmp_dir().join("c1.wav");
    std::fs::write(&wav, [0u8; 44]).unwrap();
    let stem = "K-0001/20261121/20261121T090100_in_anonymous_0612340002_c1_1";
    let json = serde_json::json!({ "call_id": "api-1@198.51.100.7" }).to_string();
    spool.publish("acme", stem, &wav, json.as_bytes()).unwrap();
    use callrec::delivery::spool::QueueState::{Done, Ready};
    spool.move_to("acme", stem, Ready, Done).unwrap();
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
        // Header names are case-insensitive (RFC 9110 section 5.1).
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer realm=\"callrec\""),
            "{head}"
        );
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
    let one = json("/api/calls/c1");
    assert_eq!(one["call_id"], "api-1@198.51.100.7");
    let segs = one["segment_files"].as_array().unwrap();
    assert_eq!(segs.len(), 1, "{one}");
    assert_eq!(segs[0]["state"], "delivered");
    assert_eq!(segs[0]["destination"], "acme");
    assert_eq!(
        segs[0]["file"],
        "K-0001/20261121/20261121T090100_in_anonymous_0612340002_c1_1.wav"
    );
    assert_eq!(
        json("/api/calls/c0")["segment_files"],
        serde_json::json!([])
    );
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

/// A client that sends half a request head and stalls, and another that
/// asks and never reads, hold nothing up: scrapes and API requests are
/// answered meanwhile, and the stalled head is cut off after the head
/// timeout (2 s).
#[test]
fn a_slow_client_does_not_block_scrapes() {
    let (port, _d) = start();
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled.write_all(b"GET /metrics HTTP/1.1\r\nHo").unwrap();
    let mut unread = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        unread,
        "GET /api/calls HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let (code, _, body) = get(port, "/metrics", None);
        assert_eq!(code, 200);
        assert!(body.contains("callrec_"), "{body}");
        assert!(
            t.elapsed() < std::time::Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(get(port, "/api/calls/c1", Some(TOKEN)).0, 200);
    }
    stalled
        .set_read_timeout(Some(std::time::Duration::from_secs(6)))
        .unwrap();
    let t = std::time::Instant::now();
    let mut rest = Vec::new();
    // Closed by the server (EOF, or a 408 then EOF), not by our timeout.
    let r = stalled.read_to_end(&mut rest);
    assert!(r.is_ok(), "{r:?} after {:?}", t.elapsed());
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
}

/// The API is read-only (405 with Allow), HEAD answers the headers only,
/// and an unknown call is 404 naming it.
#[test]
fn methods_head_and_unknown_call() {
    let (port, _d) = start();
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        c,
        "DELETE /api/calls/c1 HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    assert!(s.starts_with("HTTP/1.1 405"), "{s}");
    assert!(s.to_ascii_lowercase().contains("allow: get, head"), "{s}");
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        c,
        "HEAD /api/calls/c1 HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    let (head, body) = s.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{s}");
    assert!(body.is_empty(), "{body}");
    let (code, _, body) = get(port, "/api/calls/0000-no-such-call", Some(TOKEN));
    assert_eq!(code, 404);
    assert!(body.contains("0000-no-such-call"), "{body}");
}
