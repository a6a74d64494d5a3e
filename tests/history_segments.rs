//! Per-segment rows of the history index against the spool's delivery
//! folders: published (queued), moved by delivery (inflight, delivered,
//! held, quarantined), expired from done/ (kept, not present), shown by
//! `callrec calls --segments` in JSON, CSV and the table, kept by
//! `--reindex`.

use callrec::delivery::spool::{QueueState, Spool};
use callrec::history::index::Index;
use callrec::history::segments::{for_call, sync};
use callrec::history::{CallRecord, HistoryWriter};
use std::path::Path;
use std::process::Command;

const STEM1: &str = "K-0001/20261121/20261121T093000_out_0312340001_0612340002_3fa9c2_1";
const STEM2: &str = "K-0001/20261121/20261121T093000_out_0312340001_0612340002_3fa9c2_2";
const CALL: &str = "seg-1@198.51.100.7";

fn publish(spool: &Spool, stem: &str, audio: &[u8]) {
    let tmp = spool
        .tmp_dir()
        .join(format!("{}.wav", stem.replace('/', "_")));
    std::fs::write(&tmp, audio).unwrap();
    let json = serde_json::json!({ "call_id": CALL, "segment": { "index": 1 } }).to_string();
    spool.publish("acme", stem, &tmp, json.as_bytes()).unwrap();
}

fn history(dir: &Path) {
    let mut w = HistoryWriter::open(dir).unwrap();
    for (id, short, segs) in [(CALL, "3fa9c2", 2), ("other@198.51.100.7", "0b0b0b", 0)] {
        w.append(&CallRecord {
            call_id: id.into(),
            short_id: short.into(),
            direction: Some("outbound".into()),
            contract: Some("K-0001".into()),
            caller: "0312340001".into(),
            callee: "0612340002".into(),
            decision: if segs > 0 { "record" } else { "skip" }.into(),
            invite_at: "2026-11-21T09:30:00.000+09:00".into(),
            segments: segs,
            ..Default::default()
        })
        .unwrap();
    }
}

fn states(dir: &Path) -> Vec<(u32, String, bool, u64)> {
    let mut ix = Index::open(dir).unwrap();
    sync(&mut ix, dir).unwrap();
    for_call(&ix, CALL)
        .unwrap()
        .into_iter()
        .map(|s| (s.segment, s.state, s.present, s.audio_bytes))
        .collect()
}

fn calls(dir: &Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_callrec"))
        .args(["calls", "--spool", dir.to_str().unwrap(), "--segments"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn segment_rows_follow_the_delivery_folders() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    history(dir);
    let spool = Spool::open(dir).unwrap();
    spool.ensure_destination("acme").unwrap();
    publish(&spool, STEM1, &[1u8; 1000]);
    publish(&spool, STEM2, &[2u8; 500]);
    let q = |n| (n, "queued".to_string(), true);
    let got: Vec<_> = states(dir)
        .into_iter()
        .map(|(s, st, p, _)| (s, st, p))
        .collect();
    assert_eq!(got, vec![q(1), q(2)]);
    assert_eq!(states(dir)[0].3, 1000);

    spool
        .shift("acme", STEM1, QueueState::Ready, QueueState::Inflight)
        .unwrap();
    spool
        .move_to("acme", STEM2, QueueState::Ready, QueueState::Held)
        .unwrap();
    let got: Vec<_> = states(dir)
        .into_iter()
        .map(|(s, st, _, _)| (s, st))
        .collect();
    assert_eq!(got, vec![(1, "inflight".into()), (2, "held".into())]);

    spool
        .shift("acme", STEM1, QueueState::Inflight, QueueState::Done)
        .unwrap();
    spool
        .move_to("acme", STEM2, QueueState::Held, QueueState::Quarantine)
        .unwrap();
    let got: Vec<_> = states(dir)
        .into_iter()
        .map(|(s, st, _, _)| (s, st))
        .collect();
    assert_eq!(
        got,
        vec![(1, "delivered".into()), (2, "quarantined".into())]
    );

    // keep_delivered expires the delivered file: its row stays, not present.
    let far = std::time::SystemTime::now() + std::time::Duration::from_secs(86_400);
    assert_eq!(
        spool
            .expire_done(far, std::time::Duration::from_secs(1))
            .unwrap(),
        1
    );
    let got = states(dir);
    assert_eq!(got[0].1, "delivered");
    assert!(!got[0].2, "expired from done/: not present");
    assert!(got[1].2);

    // The CLI: JSON rows with the file and state, CSV and table alike.
    let json: serde_json::Value = serde_json::from_str(&calls(dir, &["--format", "json"])).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{json}");
    assert_eq!(rows[0]["file"], format!("{STEM1}.wav"));
    assert_eq!(rows[0]["destination"], "acme");
    assert_eq!(rows[0]["state"], "delivered");
    assert_eq!(rows[0]["present"], false);
    assert_eq!(rows[0]["short_id"], "3fa9c2");
    assert_eq!(rows[1]["state"], "quarantined");
    assert_eq!(rows[1]["audio_bytes"], 500);
    let at = rows[0]["state_at"].as_str().unwrap();
    assert!(callrec::report::parse_rfc3339(at).is_some(), "{at}");
    assert!(rows[1]["published_at"].is_string(), "{json}");
    let csv = calls(dir, &["--format", "csv"]);
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.contains(",quarantined,"), "{csv}");
    let table = calls(dir, &["--call", "3fa9c2"]);
    assert!(table.ends_with("2 segments\n"), "{table}");
    assert!(calls(dir, &["--decision", "skip"]).ends_with("0 segments\n"));

    // --reindex rebuilds the calls and keeps what the folders forgot.
    let out = calls(dir, &["--reindex", "--format", "json"]);
    let again: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(again, json);
}

#[test]
fn a_spool_without_queue_has_no_segments() {
    let d = tempfile::tempdir().unwrap();
    history(d.path());
    assert!(states(d.path()).is_empty());
    assert!(calls(d.path(), &[]).ends_with("0 segments\n"));
}
