//! Kill -9 of a whole `callrec replay` (the process, not just its history
//! writer) while calls are being recorded and their history lines
//! written, then a restart on the same spool with more calls: afterwards
//! `calls.jsonl` and its index agree — every complete line indexed once,
//! in order, no row without a line — and the restarted process itself
//! brought the index up to the log's end (before any `callrec calls`).

#[path = "support/config.rs"]
mod config_text;
use callrec::capture::LinkType;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, merge};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Calls `first..first+n`, one every 10 ms, ringing 0.3 s and talking
/// 60 ms; every tenth is recorded (outbound with the prefix), the rest
/// are not (an unknown caller).
fn capture(path: &Path, first: u32, n: u32) {
    let t0 = Timestamp::from_secs_micros(1_795_221_000 + first as i64, 0);
    let calls: Vec<CallSpec> = (first..first + n)
        .map(|i| {
            let t = t0.add_micros((i - first) as i64 * 10_000);
            let mut c = if i.is_multiple_of(10) {
                CallSpec::simple(i, "0312340001", "0077260312349999", t, 60)
            } else {
                CallSpec::simple(i, "0399990000", "0312349999", t, 60)
            };
            c.ring_ms = 300;
            c
        })
        .collect();
    let mut w = PcapWriter::create(path, LinkType::Ethernet).unwrap();
    for d in merge(&calls) {
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();
}

fn replay(cfg: &Path, spool: &Path, pcap: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_callrec"));
    c.args(["--log-format", "text", "replay", "--config"])
        .arg(cfg)
        .arg("--out")
        .arg(spool)
        .arg(pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Call-IDs of the log's complete lines that are history objects.
fn logged(spool: &Path) -> Vec<String> {
    let text = std::fs::read(spool.join("calls.jsonl")).unwrap();
    let complete = &text[..text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)];
    complete
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
        .map(|v| v["call_id"].as_str().unwrap().to_string())
        .collect()
}

fn lines(spool: &Path) -> usize {
    std::fs::read(spool.join("calls.jsonl"))
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

#[test]
fn kill_9_of_a_whole_replay_leaves_index_and_log_agreeing() {
    let d = tempfile::tempdir().unwrap();
    let spool = d.path().join("spool");
    let cfg = d.path().join("callrec.toml");
    std::fs::write(
        &cfg,
        format!(
            "[general]\ntimezone = \"+09:00\"\n[recording]\nspool_dir = \"{}\"\n[announce]\nmode = \"off\"\n{}{}",
            spool.display(),
            config_text::ACME_UNREACHED,
            config_text::K0001_STEREO
        ),
    )
    .unwrap();
    let (a, b) = (d.path().join("a.pcap"), d.path().join("b.pcap"));
    capture(&a, 1, 6000);
    capture(&b, 100_001, 300);

    // Killed mid-run: once the history has 500 lines and is still growing.
    let mut child = replay(&cfg, &spool, &a).spawn().unwrap();
    let t = Instant::now();
    while lines(&spool) < 500 && t.elapsed() < Duration::from_secs(120) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "replay ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "replay ended before the kill: the test needs a longer capture"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = lines(&spool);
    assert!(
        (500..6000).contains(&at_kill),
        "{at_kill} lines at the kill"
    );
    eprintln!("killed with {at_kill} history lines written");
    let recorded_before = logged(&spool)
        .iter()
        .filter(|id| {
            id.trim_start_matches("call-")
                .split('@')
                .next()
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|n| n.is_multiple_of(10))
        })
        .count();
    assert!(recorded_before > 20, "recording calls at the kill");

    // The restart on the same spool, with more calls, runs to its end.
    let st = replay(&cfg, &spool, &b).status().unwrap();
    assert!(st.success(), "restarted replay: {st}");

    // The restarted process caught its index up to the log's end.
    let ix = callrec::history::index::Index::open(&spool).unwrap();
    let len = std::fs::metadata(spool.join("calls.jsonl")).unwrap().len();
    assert_eq!(ix.offset().unwrap(), len);
    drop(ix);

    // Every line indexed once, in order; no row without a line.
    let log = logged(&spool);
    let out = Command::new(env!("CARGO_BIN_EXE_callrec"))
        .args(["calls", "--spool", spool.to_str().unwrap()])
        .args(["--sort", "ended", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let indexed: Vec<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["call_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(indexed.len(), log.len());
    assert_eq!(indexed, log);
    eprintln!("{} lines after the restart, all indexed once", log.len());
    // The restart's calls are all there, once.
    for i in 100_001..100_301u32 {
        let id = format!("call-{i}@callrec.test");
        assert_eq!(log.iter().filter(|l| **l == id).count(), 1, "{id}");
    }
    // A killed call is never logged twice (the journal restores each once).
    let mut sorted = log.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), log.len(), "a Call-ID logged twice");
}
