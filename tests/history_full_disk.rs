//! A full disk under the history (Bad input: "a full disk while writing
//! the index"): a real, small tmpfs mounted by the test holds the spool
//! and is filled until the index can no longer grow. The log is still
//! written whole line by line while it has room, the index failure is
//! an error not a crash, and once room is made the index catches up from
//! the log and agrees with it. Skips (with a message) without root.

use callrec::history::index::{Filter, Index, IndexError, Sort};
use callrec::history::{CallRecord, HistoryWriter};
use std::path::Path;
use std::process::Command;

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn rec(i: u64) -> CallRecord {
    let t = callrec::time::Timestamp(1_795_186_800_000_000 + i as i64 * 1_000_000);
    CallRecord {
        call_id: format!("full-{i}@198.51.100.7"),
        short_id: format!("{i:08x}"),
        direction: Some("inbound".into()),
        contract: Some("K-0001".into()),
        caller: format!("03{i:08}"),
        callee: "0612340002".into(),
        decision: "record".into(),
        invite_at: t.rfc3339(9 * 3600),
        segments: 1,
        ..Default::default()
    }
}

fn logged(spool: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(spool.join("calls.jsonl")).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["call_id"].as_str().unwrap().to_string())
        .collect()
}

fn indexed(ix: &Index) -> Vec<String> {
    let mut ids = Vec::new();
    let f = Filter {
        sort: Sort::Ended,
        ..Default::default()
    };
    ix.query(&f, |r| -> Result<(), IndexError> {
        ids.push(r.call_id);
        Ok(())
    })
    .unwrap();
    ids
}

#[test]
fn a_full_disk_delays_the_index_never_the_log() {
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIP: cannot mount a tmpfs (needs root)");
        return;
    }
    let _m = Mount(mnt.clone());
    let spool = mnt.join("spool");
    let mut w = HistoryWriter::open(&spool).unwrap();
    for i in 0..20 {
        w.append(&rec(i)).unwrap();
    }
    // Fill the disk but for about 6 KiB: room for a few lines of the
    // log, not for the index's next WAL frames (4 KiB pages).
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let len = std::fs::metadata(&filler).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(len.saturating_sub(6 << 10))
        .unwrap();
    let mut written = 20;
    let mut log_failed = false;
    for i in 20..200 {
        match w.append(&rec(i)) {
            Ok(()) => written += 1,
            Err(e) => {
                // The log itself is full now: a clear error, never a panic.
                assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{e}");
                log_failed = true;
                break;
            }
        }
    }
    assert!(log_failed, "the disk never filled");
    let ix = Index::open(&spool).unwrap();
    let behind = indexed(&ix).len();
    drop(ix);
    assert!(
        behind < written,
        "the index could not follow ({behind} of {written})"
    );
    // Every line that was written is whole (no torn line on a full disk
    // but possibly the last, which a reader skips).
    let lines = logged(&spool);
    assert!(
        lines.len() >= written - 1 && lines.len() <= written,
        "{}",
        lines.len()
    );

    // Room again: the writer goes on, the index catches up from the log.
    std::fs::remove_file(&filler).unwrap();
    drop(w);
    let mut w = HistoryWriter::open(&spool).unwrap();
    w.append(&rec(1000)).unwrap();
    drop(w);
    let ix = Index::open(&spool).unwrap();
    let log = logged(&spool);
    assert_eq!(indexed(&ix), log);
    assert!(log.contains(&"full-1000@198.51.100.7".to_string()));
}
