//! Kill -9 of a whole process (not just its history writer) while calls
//! are being recorded and their history lines written, then a restart on
//! the same spool: a `callrec replay` restarted with more calls, and a
//! live `callrec run` capturing on `lo` while tcpreplay plays calls,
//! restarted while they go on. Afterwards `calls.jsonl` and its index
//! agree — every complete line indexed once, in order, no row without a
//! line — and the restarted process itself brought the index up to the
//! log's end (before any `callrec calls`).

#[path = "support/config.rs"]
mod config_text;
#[path = "support/live.rs"]
mod live;
#[path = "support/tools.rs"]
mod tools;
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

/// The index holds exactly the log's lines, in order, each once, up to
/// the log's end as the last process left it; returns how many.
fn index_agrees_with_log(spool: &Path) -> usize {
    let ix = callrec::history::index::Index::open(spool).unwrap();
    let len = std::fs::metadata(spool.join("calls.jsonl")).unwrap().len();
    assert_eq!(ix.offset().unwrap(), len, "the process caught its index up");
    drop(ix);
    let log = logged(spool);
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
    assert_eq!(indexed, log);
    log.len()
}

/// Starts `callrec run`, its log appended to `log` (a pipe nobody reads
/// would fill and stall it), and waits for its `nth` "capturing" line.
fn start(cfg: &Path, log: &Path, nth: usize) -> std::process::Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_callrec"))
        .args(["run", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap();
    let up = live::wait_for(Duration::from_secs(15), || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("capturing")
            .count()
            >= nth
    });
    assert!(up, "{}", std::fs::read_to_string(log).unwrap_or_default());
    child
}

#[test]
fn kill_9_of_a_live_run_leaves_index_and_log_agreeing() {
    if !live::can_run(
        "kill_9_of_a_live_run_leaves_index_and_log_agreeing",
        "tcpreplay",
        "--version",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config_text::LiveFiles { cfg, spool, .. } = config_text::live_on_lo(dir.path(), "");
    let log = dir.path().join("daemon.log");
    // 600 calls, one every 10 ms, each 0.36 s: about 6.4 s of traffic.
    let pcap = dir.path().join("calls.pcap");
    capture(&pcap, 200_001, 600);
    let mut daemon = start(&cfg, &log, 1);
    let mut player = Command::new("tcpreplay")
        .args(["-q", "-i", "lo"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        live::wait_for(Duration::from_secs(30), || lines(&spool) >= 150),
        "history lines written live: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    daemon.kill().unwrap(); // SIGKILL, while calls are recorded and logged
    daemon.wait().unwrap();
    let at_kill = lines(&spool);
    let mut daemon = start(&cfg, &log, 2);
    player.wait().unwrap();
    // The traffic is over: wait until the history stops growing.
    let mut last = 0;
    live::wait_for(Duration::from_secs(30), || {
        let n = lines(&spool);
        let still = n == last && n > at_kill;
        last = n;
        still
    });
    std::thread::sleep(Duration::from_secs(1));
    // SIGTERM: a clean stop after the restart.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    daemon.wait().unwrap();
    let n = index_agrees_with_log(&spool);
    eprintln!("live: killed at {at_kill} lines, {n} after the restart");
    assert!(
        n > at_kill,
        "the restarted daemon logged the calls after the kill"
    );
    let mut ids = logged(&spool);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a Call-ID logged twice");
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
