//! Retention while the daemon writes: `calls.jsonl` and its index are
//! trimmed while writers append (nothing appended meanwhile is lost, the
//! index and the log agree line for line afterwards), and the daemon's
//! housekeeping thread trims periodically by the wall clock.

use callrec::history::index::{Filter, Index, Sort};
use callrec::history::{CallRecord, HistoryWriter, retention};
use std::path::Path;
use std::time::Duration;

const DAY_US: i64 = 86_400_000_000;

fn rec(i: u64, invite_us: i64) -> CallRecord {
    let t = callrec::time::Timestamp(invite_us);
    CallRecord {
        call_id: format!("ret-{i}@198.51.100.7"),
        short_id: format!("{i:08x}"),
        direction: Some("inbound".into()),
        contract: Some("K-0001".into()),
        caller: format!("03{i:08}"),
        callee: "0612340002".into(),
        decision: "record".into(),
        invite_at: t.rfc3339(9 * 3600),
        ended_at: Some(t.add_micros(30_000_000).rfc3339(9 * 3600)),
        segments: 1,
        ..Default::default()
    }
}

/// (Call-ID, line number) of every complete line of the log.
fn logged(spool: &Path) -> Vec<(String, i64)> {
    let text = std::fs::read_to_string(spool.join("calls.jsonl")).unwrap();
    text.lines()
        .enumerate()
        .map(|(n, l)| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["call_id"].as_str().unwrap().to_string(), n as i64 + 1)
        })
        .collect()
}

/// Call-IDs in the index, in the log's order, after catching up.
fn indexed(spool: &Path) -> Vec<String> {
    let mut ix = Index::open(spool).unwrap();
    assert!(ix.catch_up().unwrap().is_empty());
    let f = Filter {
        sort: Sort::Ended,
        ..Default::default()
    };
    let mut ids = Vec::new();
    ix.query(&f, |r| -> Result<(), callrec::history::index::IndexError> {
        ids.push(r.call_id);
        Ok(())
    })
    .unwrap();
    ids
}

/// After catching up (a writer whose index update failed while a trim
/// held it leaves lines for the catch-up), the index holds exactly the
/// log's lines, each once, in its order, up to the log's length.
fn agree(spool: &Path) -> usize {
    let mut ix = Index::open(spool).unwrap();
    assert!(ix.catch_up().unwrap().is_empty());
    let len = std::fs::metadata(spool.join("calls.jsonl")).unwrap().len();
    assert_eq!(ix.offset().unwrap(), len, "index offset = log length");
    drop(ix);
    let log: Vec<String> = logged(spool).into_iter().map(|(id, _)| id).collect();
    assert_eq!(indexed(spool), log);
    log.len()
}

#[test]
fn trimming_while_writers_append_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let spool = d.path().to_path_buf();
    let now = 1_795_186_800_000_000i64;
    let mut w = HistoryWriter::open(&spool).unwrap();
    // 3,000 calls: every third one 10 days old, the rest from today,
    // interleaved as calls of different lengths end.
    for i in 0..3000u64 {
        let age = if i.is_multiple_of(3) { 10 * DAY_US } else { 0 };
        w.append(&rec(i, now - age - i as i64)).unwrap();
    }
    // A second writer keeps appending while the trim runs.
    let s2 = spool.clone();
    let appender = std::thread::spawn(move || {
        let mut w = HistoryWriter::open(&s2).unwrap();
        for i in 10_000..12_000u64 {
            w.append(&rec(i, now + i as i64)).unwrap();
            if i % 100 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });
    // The fleet push had reached the start of call 2999's line.
    let text = std::fs::read_to_string(spool.join("calls.jsonl")).unwrap();
    let at = text.find("{\"call_id\":\"ret-2999@").unwrap();
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    std::fs::create_dir_all(spool.join("state")).unwrap();
    let pushed = spool.join("state/pg_pushed");
    std::fs::write(
        &pushed,
        format!("{} {at}\n", ino(&spool.join("calls.jsonl"))),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let log = retention::writers_log(&spool.join("calls.jsonl")).expect("writers registered");
    let n = retention::trim(&spool, now - 3 * DAY_US, Some(&log)).unwrap();
    appender.join().unwrap();
    // The first writer appends after the trim: into the new file.
    w.append(&rec(99_999, now)).unwrap();
    drop(w);
    assert_eq!(n, 1000, "every old call dropped");
    let ids: Vec<String> = logged(&spool).into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 2000 + 2000 + 1, "nothing appended was lost");
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "every line once");
    assert!(ids.iter().all(|id| {
        let i: u64 = id[4..id.find('@').unwrap()].parse().unwrap();
        i >= 3000 || !i.is_multiple_of(3)
    }));
    assert_eq!(agree(&spool), ids.len());
    // The index's line numbers moved with their lines.
    let ix = Index::open(&spool).unwrap();
    drop(ix);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callrec"))
        .args([
            "calls",
            "--spool",
            spool.to_str().unwrap(),
            "--format",
            "json",
        ])
        .args(["--call", "ret-10001@198.51.100.7"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["short_id"], "00002711");
    // Nothing left behind.
    assert!(!spool.join("calls.jsonl.trim").exists());
    // The push position moved with the lines: same call, new file.
    let state = std::fs::read_to_string(&pushed).unwrap();
    let (i, o) = state.trim().split_once(' ').unwrap();
    assert_eq!(i.parse::<u64>().unwrap(), ino(&spool.join("calls.jsonl")));
    let text = std::fs::read_to_string(spool.join("calls.jsonl")).unwrap();
    let o: usize = o.parse().unwrap();
    assert!(
        text[o..].starts_with("{\"call_id\":\"ret-2999@"),
        "{}",
        &text[o..o + 40]
    );
}

#[test]
fn the_housekeeping_thread_trims_by_the_wall_clock() {
    let d = tempfile::tempdir().unwrap();
    let spool = d.path().to_path_buf();
    let now = retention::wall_us();
    let mut w = HistoryWriter::open(&spool).unwrap();
    for i in 0..50u64 {
        let age = if i < 20 { 5 * DAY_US } else { 0 };
        w.append(&rec(i, now - age)).unwrap();
    }
    retention::spawn(
        spool.clone(),
        Some(Duration::from_secs(2 * 86_400)),
        Duration::from_millis(50),
        Duration::from_millis(200),
    )
    .unwrap();
    // Calls go on being written across the periodic trims.
    for i in 50..150u64 {
        let age = if i.is_multiple_of(2) { 5 * DAY_US } else { 0 };
        w.append(&rec(i, now - age)).unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(600));
    let log: Vec<String> = logged(&spool).into_iter().map(|(id, _)| id).collect();
    assert_eq!(log.len(), 30 + 50, "{log:?}");
    drop(w);
    assert_eq!(agree(&spool), 80);
}

#[test]
fn a_trim_with_nothing_old_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let now = 1_795_186_800_000_000i64;
    let mut w = HistoryWriter::open(d.path()).unwrap();
    for i in 0..10 {
        w.append(&rec(i, now)).unwrap();
    }
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = ino(&d.path().join("calls.jsonl"));
    assert_eq!(retention::trim(d.path(), now - DAY_US, None).unwrap(), 0);
    assert_eq!(ino(&d.path().join("calls.jsonl")), before);
    drop(w);
    assert_eq!(agree(d.path()), 10);
}
