//! The call history's SQLite index against its log: kill -9 while
//! writing, a corrupt, locked, stale or foreign index, retention, file
//! modes, and `callrec calls`' validation (exit 2 naming the option).

use callrec::history::{CallRecord, HistoryWriter};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn rec(i: u64) -> CallRecord {
    let t = callrec::time::Timestamp(1_795_186_800_000_000 + i as i64 * 1_000_000);
    CallRecord {
        call_id: format!("call-{i}@198.51.100.7"),
        short_id: format!("{i:08x}"),
        direction: Some("outbound".into()),
        contract: Some(format!("K-{:04}", i % 7)),
        caller: format!("03{:08}", i),
        callee: "0612340002".into(),
        decision: "record".into(),
        invite_at: t.rfc3339(9 * 3600),
        ended_at: Some(t.add_micros(60_000_000).rfc3339(9 * 3600)),
        segments: 1,
        ..Default::default()
    }
}

fn callrec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callrec"))
        .args(["--log-format", "text"])
        .args(args)
        .output()
        .unwrap()
}

/// Call-IDs as `callrec calls` returns them in the log's order.
fn indexed_ids(spool: &Path) -> Vec<String> {
    let out = callrec(&[
        "calls",
        "--spool",
        spool.to_str().unwrap(),
        "--sort",
        "ended",
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["call_id"].as_str().unwrap().to_string())
        .collect()
}

/// Call-IDs of the complete lines of the log.
fn logged_ids(spool: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(spool.join("calls.jsonl")).unwrap();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["call_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// The child of `kill_9_while_writing`: appends calls until killed.
#[test]
fn writer_child() {
    let Ok(spool) = std::env::var("CALLREC_TEST_WRITER_SPOOL") else {
        return;
    };
    let start: u64 = std::env::var("CALLREC_TEST_WRITER_START")
        .unwrap()
        .parse()
        .unwrap();
    let mut w = HistoryWriter::open(Path::new(&spool)).unwrap();
    for i in start.. {
        w.append(&rec(i)).unwrap();
    }
}

#[test]
fn kill_9_while_writing_leaves_index_and_log_agreeing() {
    let d = tempfile::tempdir().unwrap();
    let (mut start, mut before, mut before_bytes) = (0u64, 0usize, 0u64);
    for (round, ms) in [150u64, 400, 90, 700, 250].into_iter().enumerate() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
            .env("CALLREC_TEST_WRITER_SPOOL", d.path())
            .env("CALLREC_TEST_WRITER_START", start.to_string())
            .spawn()
            .unwrap();
        // Once it is writing (a loaded machine starts it slowly), let it run a while.
        let log = d.path().join("calls.jsonl");
        let t = Instant::now();
        while std::fs::metadata(&log).map_or(0, |m| m.len()) <= before_bytes
            && t.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(ms));
        // SIGKILL: no destructor, no flush, wherever the writer is.
        child.kill().unwrap();
        child.wait().unwrap();
        let logged = logged_ids(d.path());
        assert!(
            logged.len() > before,
            "round {round}: the child wrote nothing"
        );
        before = logged.len();
        before_bytes = std::fs::metadata(&log).unwrap().len();
        start = 1_000_000 * (round as u64 + 1);
        // Restart: opening catches the index up; it then holds exactly the log.
        assert_eq!(indexed_ids(d.path()), logged, "round {round}");
    }
    eprintln!("{} calls written over 5 kills", logged_ids(d.path()).len());
}

#[test]
fn corrupt_index_is_rebuilt_from_the_log_with_a_message() {
    let d = tempfile::tempdir().unwrap();
    let mut w = HistoryWriter::open(d.path()).unwrap();
    for i in 0..20 {
        w.append(&rec(i)).unwrap();
    }
    drop(w);
    for ext in ["sqlite-wal", "sqlite-shm"] {
        let _ = std::fs::remove_file(d.path().join("calls").with_extension(ext));
    }
    std::fs::write(d.path().join("calls.sqlite"), vec![0x5a; 8192]).unwrap();
    let out = callrec(&[
        "calls",
        "--spool",
        d.path().to_str().unwrap(),
        "--format",
        "json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("corrupt") && err.contains("calls.sqlite"),
        "{err}"
    );
    assert_eq!(indexed_ids(d.path()).len(), 20);
    assert!(d.path().join("calls.sqlite.corrupt").exists());
}

#[test]
fn locked_index_delays_rows_but_never_the_log() {
    let d = tempfile::tempdir().unwrap();
    let mut w = HistoryWriter::open(d.path()).unwrap();
    w.append(&rec(0)).unwrap();
    let lock = rusqlite::Connection::open(d.path().join("calls.sqlite")).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let t = Instant::now();
    for i in 1..50 {
        w.append(&rec(i)).unwrap();
    }
    // The signalling thread must not wait on the index.
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(logged_ids(d.path()).len(), 50);
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    w.append(&rec(50)).unwrap();
    drop(w);
    assert_eq!(indexed_ids(d.path()), logged_ids(d.path()));
}

#[test]
fn stale_or_foreign_index_catches_up_or_rebuilds() {
    let d = tempfile::tempdir().unwrap();
    let mut w = HistoryWriter::open(d.path()).unwrap();
    for i in 0..5 {
        w.append(&rec(i)).unwrap();
    }
    drop(w);
    // Lines appended behind the index's back (an older callrec, a restore).
    let mut text = std::fs::read_to_string(d.path().join("calls.jsonl")).unwrap();
    for i in 5..8 {
        text.push_str(&serde_json::to_string(&rec(i)).unwrap());
        text.push('\n');
    }
    std::fs::write(d.path().join("calls.jsonl.new"), &text).unwrap();
    // Replaced by another file (new inode): the index must not trust its offset.
    std::fs::rename(
        d.path().join("calls.jsonl.new"),
        d.path().join("calls.jsonl"),
    )
    .unwrap();
    assert_eq!(indexed_ids(d.path()), logged_ids(d.path()));
    // A shorter log than the index knows: rebuilt.
    let first3: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(d.path().join("calls.jsonl"), first3).unwrap();
    assert_eq!(indexed_ids(d.path()).len(), 3);
    // --reindex says so.
    let out = callrec(&[
        "calls",
        "--spool",
        d.path().to_str().unwrap(),
        "--reindex",
        "--limit",
        "1",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("rebuilt from calls.jsonl"));
}

#[test]
fn retention_trims_log_and_index() {
    let d = tempfile::tempdir().unwrap();
    let mut w = HistoryWriter::open(d.path()).unwrap();
    for i in 0..10 {
        w.append(&rec(i * 86_400)).unwrap(); // one call a day
    }
    drop(w);
    let now = 1_795_186_800_000_000 + 9 * 86_400_000_000;
    let w = HistoryWriter::open_keep(d.path(), Some(Duration::from_secs(3 * 86_400)), Some(now))
        .unwrap();
    drop(w);
    // Days 6 (exactly at the cutoff), 7, 8 and 9 are kept.
    assert_eq!(logged_ids(d.path()).len(), 4);
    assert_eq!(indexed_ids(d.path()), logged_ids(d.path()));
}

#[test]
fn index_files_take_the_spool_mode() {
    let d = tempfile::tempdir().unwrap();
    let mut w = HistoryWriter::open(d.path()).unwrap();
    w.append(&rec(1)).unwrap();
    for f in [
        "calls.jsonl",
        "calls.sqlite",
        "calls.sqlite-wal",
        "calls.sqlite-shm",
    ] {
        let p = d.path().join(f);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{f}: {mode:o}");
    }
}

#[test]
fn bad_filters_exit_2_naming_them() {
    let d = tempfile::tempdir().unwrap();
    let s = d.path().to_str().unwrap();
    for (args, want) in [
        (vec!["--direction", "sideways"], "--direction: \"sideways\""),
        (vec!["--decision", "perhaps"], "--decision"),
        (vec!["--since", "last tuesday"], "--since"),
        (vec!["--until", "2026-13-01"], "--until"),
        (vec!["--sort", "loudest"], "--sort"),
        (vec!["--number", "hello"], "--number"),
        (vec!["--format", "xls"], "--format"),
        (vec!["--limit", "many"], "--limit"),
    ] {
        let mut a = vec!["calls", "--spool", s];
        a.extend(&args);
        let out = callrec(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // A bare date is fine, and an empty spool is an empty answer.
    let out = callrec(&["calls", "--spool", s, "--since", "2026-11-29"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some("0 calls")
    );
}
