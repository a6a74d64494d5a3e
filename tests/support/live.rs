//! For tests that run `callrec run` and watch it from outside.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Polls `f` every 100 ms until it holds or `limit` has passed; the last
/// answer is returned.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// Starts `callrec run` with `cfg` (its log piped to `stderr`) and waits
/// until its control socket `sock` exists.
pub fn start_daemon(cfg: &Path, sock: &Path) -> Child {
    let daemon = Command::new(env!("CARGO_BIN_EXE_callrec"))
        .args(["run", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || sock.exists()),
        "control socket up"
    );
    daemon
}

/// Whether this machine can run a live test: capture on `lo` (root or
/// CAP_NET_RAW) and the peer `tool` (run with `version_arg`) installed.
/// Prints why the test `name` is skipped when not.
pub fn can_run(name: &str, tool: &str, version_arg: &str) -> bool {
    if let Err(e) = callrec::capture::LiveSource::open("lo", 65_535, false, 4 << 20) {
        eprintln!("SKIP {name}: cannot capture on lo: {e}");
        return false;
    }
    super::tools::tool_present(tool, version_arg)
}

/// A segment's length from its `started_at` and `ended_at` (RFC 3339,
/// the same day and offset), in ms.
pub fn span_ms(seg: &serde_json::Value) -> i64 {
    let ms = |k: &str| {
        let t = seg[k].as_str().unwrap();
        let clock = &t[11..23]; // HH:MM:SS.mmm
        let f = |r: std::ops::Range<usize>| clock[r].parse::<i64>().unwrap();
        ((f(0..2) * 60 + f(3..5)) * 60 + f(6..8)) * 1000 + f(9..12)
    };
    (ms("ended_at") - ms("started_at")).rem_euclid(86_400_000)
}
