//! Delivery throughput of callrec beside OpenSSH's own `sftp -b`, on the
//! same files to the same local sshd in the same run.
//!
//! `cargo bench --bench sftp_throughput` (needs /usr/sbin/sshd and sftp;
//! skips with a message otherwise). `CALLREC_BENCH_ROUNDS` (default 7)
//! sets the rounds per size, `CALLREC_BENCH_CONNECTIONS` overrides the
//! destination's `connections` (default 4).
//!
//! callrec is measured end to end through the daemon's own path: the
//! recordings are published into a fresh spool (untimed: that is the
//! recorder's work), then the clock runs from `Workers::start` (connection
//! set-up included) until the worker has moved the last recording to
//! `done/`. Each recording is its WAV and its JSON, with everything the
//! worker does per file: local hash check, state renames, temporary name,
//! remote fsync, size check, rename, JSON last, in queue order.
//!
//! `sftp -b` gets the same WAV and JSON files (same bytes, same tree) in one
//! batch of plain `put`s with its default settings (no `-f`, so no remote
//! fsync), timed from process start (connection set-up included) to exit.
//!
//! The two alternate which goes first in each round; each round starts
//! from an empty server folder, and each side's upload is checked (count
//! and bytes) before its time counts. Printed: the median of each side's
//! figures, and the median and range of the per-round ratios (callrec
//! bytes/s over sftp's, measured back to back, so a busy moment hits both).

#[path = "../tests/support/sshd.rs"]
mod sshd;
use sshd::body;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use callrec::config::{Config, load_str};
use callrec::delivery::{QueueState, Spool, SystemClock, Workers};
use sha2::{Digest, Sha256};

/// One recording: stem, WAV bytes, JSON bytes.
struct Rec {
    stem: String,
    wav: Vec<u8>,
    json: Vec<u8>,
}

fn recordings(size: usize, count: usize) -> Vec<Rec> {
    (0..count)
        .map(|i| {
            let stem = format!(
                "K-0001/20261121/20261121T{:02}{:02}{:02}_out_0312340001_0312349999_{i:06x}_1",
                9 + i / 3600,
                i / 60 % 60,
                i % 60
            );
            let wav = body((size + i) as u64, size);
            let json = serde_json::to_vec_pretty(&serde_json::json!({
                "schema": 1, "contract": "K-0001",
                "audio": {"file": format!("{}.wav", stem.rsplit('/').next().unwrap()),
                          "sha256": hex::encode(Sha256::digest(&wav))}
            }))
            .unwrap();
            Rec { stem, wav, json }
        })
        .collect()
}

/// (files, bytes) below `dir`, ignoring nothing: a stray `.part` counts.
fn tree_size(dir: &Path) -> (usize, u64) {
    let mut n = (0, 0);
    let Ok(rd) = std::fs::read_dir(dir) else {
        return n;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            let (f, b) = tree_size(&p);
            n.0 += f;
            n.1 += b;
        } else if let Ok(m) = p.metadata() {
            n.0 += 1;
            n.1 += m.len();
        }
    }
    n
}

struct Side {
    secs: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// callrec: publish into a fresh spool, then time the workers until all are done.
fn run_ours(cfg: &Config, work: &Path, recs: &[Rec], round: usize) -> f64 {
    let root = work.join(format!("spool-{round}"));
    let spool = Spool::open(&root).unwrap();
    for (i, r) in recs.iter().enumerate() {
        let tmp = spool.tmp_dir().join(format!("{i}.wav"));
        std::fs::write(&tmp, &r.wav).unwrap();
        spool.publish("bench", &r.stem, &tmp, &r.json).unwrap();
    }
    let t0 = Instant::now();
    let workers = Workers::start(cfg, &spool, Arc::new(SystemClock)).unwrap();
    let st = workers.status("bench").unwrap().clone();
    let n = recs.len() as u64;
    let limit = Duration::from_secs(300);
    while st.delivered.load(Ordering::Relaxed) < n {
        assert!(
            st.failed.load(Ordering::Relaxed) == 0 && t0.elapsed() < limit,
            "callrec delivery failed: {:?}",
            st.last_error.lock().unwrap()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let secs = t0.elapsed().as_secs_f64();
    workers.stop();
    assert_eq!(
        spool.list("bench", QueueState::Done).unwrap().len(),
        recs.len()
    );
    let _ = std::fs::remove_dir_all(&root);
    secs
}

/// `sftp -b` with one plain `put` per file into `remote_sub`.
fn run_sftp(srv: &sshd::Sshd, src: &Path, recs: &[Rec], remote_sub: &str, batch: &Path) -> f64 {
    let base = format!("{}/{remote_sub}", srv.remote_dir);
    let mut text = format!("-mkdir {base}\n");
    let mut dirs = std::collections::BTreeSet::new();
    for r in recs {
        let mut cur = String::new();
        for part in r
            .stem
            .split('/')
            .rev()
            .skip(1)
            .collect::<Vec<_>>()
            .iter()
            .rev()
        {
            cur = if cur.is_empty() {
                part.to_string()
            } else {
                format!("{cur}/{part}")
            };
            if dirs.insert(cur.clone()) {
                text += &format!("-mkdir {base}/{cur}\n");
            }
        }
    }
    for r in recs {
        for ext in ["wav", "json"] {
            text += &format!(
                "put {} {base}/{}.{ext}\n",
                src.join(format!("{}.{ext}", r.stem)).display(),
                r.stem
            );
        }
    }
    std::fs::write(batch, text).unwrap();
    let t0 = Instant::now();
    let st = Command::new("sftp")
        .args(["-q", "-b"])
        .arg(batch)
        .arg("-i")
        .arg(&srv.client_key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ])
        .args(["-P", &srv.port.to_string()])
        .arg(format!("{}@127.0.0.1", srv.user))
        .stdout(Stdio::null())
        .status()
        .expect("sftp runs");
    let secs = t0.elapsed().as_secs_f64();
    assert!(st.success(), "sftp -b failed");
    secs
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(srv) = sshd::Sshd::start() else {
        return;
    };
    if Command::new("sftp")
        .arg("-h")
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("SKIP: sftp client not installed");
        return;
    }
    let rounds: usize = std::env::var("CALLREC_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7)
        .max(1);
    let work = tempfile::tempdir().unwrap();
    let toml = format!(
        "[delivery]\nallowed_networks = [\"127.0.0.0/8\"]\n\
         [[destination]]\nname = \"bench\"\nurl = {:?}\nidentity = {:?}\nhost_key = {:?}\n\
         [[contract]]\nid = \"K-0001\"\nservice = \"mobile\"\nnumbers = [\"0312340001\"]\nguidance = 1\ndestination = \"bench\"\n",
        srv.url(),
        srv.client_key.display().to_string(),
        srv.host_pub
    );
    let mut cfg = load_str(&toml, Path::new("bench.toml")).unwrap();
    if let Some(n) = std::env::var("CALLREC_BENCH_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        cfg.destinations[0].connections = n;
    }
    println!(
        "connections per destination: {}; {rounds} rounds per size",
        cfg.destinations[0].connections
    );
    println!(
        "{:<8} {:>6} {:>12} {:>9} {:>12} {:>9} {:>7} {:>13}",
        "size",
        "recs",
        "callrec MB/s",
        "files/s",
        "sftp -b MB/s",
        "files/s",
        "ratio",
        "ratio range"
    );
    for (label, size, count) in [("2 MB", 2_000_000usize, 40usize), ("100 KB", 100_000, 200)] {
        let recs = recordings(size, count);
        let bytes: u64 = recs
            .iter()
            .map(|r| (r.wav.len() + r.json.len()) as u64)
            .sum();
        let files = 2 * count;
        // sftp's source: the same bytes in the same tree.
        let src: PathBuf = work.path().join(format!("src-{size}"));
        for r in &recs {
            let p = src.join(&r.stem);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(src.join(format!("{}.wav", r.stem)), &r.wav).unwrap();
            std::fs::write(src.join(format!("{}.json", r.stem)), &r.json).unwrap();
        }
        let batch = work.path().join("batch");
        let (mut ours, mut theirs) = (Side { secs: vec![] }, Side { secs: vec![] });
        let mut ratios = Vec::new();
        for round in 0..rounds {
            let mut o = 0.0;
            let mut t = 0.0;
            for first_ours in [round % 2 == 0, round % 2 != 0] {
                if first_ours {
                    o = run_ours(&cfg, work.path(), &recs, round);
                    let got = tree_size(&srv.incoming.join("K-0001"));
                    assert_eq!(got, (files, bytes), "callrec's upload is complete");
                    let _ = std::fs::remove_dir_all(srv.incoming.join("K-0001"));
                } else {
                    t = run_sftp(&srv, &src, &recs, "sftp", &batch);
                    let got = tree_size(&srv.incoming.join("sftp"));
                    assert_eq!(got, (files, bytes), "sftp's upload is complete");
                    let _ = std::fs::remove_dir_all(srv.incoming.join("sftp"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            ours.secs.push(o);
            theirs.secs.push(t);
            ratios.push(t / o);
        }
        let (o, t) = (median(ours.secs), median(theirs.secs));
        let lo = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().cloned().fold(0.0, f64::max);
        println!(
            "{:<8} {:>6} {:>12.1} {:>9.1} {:>12.1} {:>9.1} {:>7.2} {:>6.2}-{:<6.2}",
            label,
            count,
            bytes as f64 / o / 1e6,
            files as f64 / o,
            bytes as f64 / t / 1e6,
            files as f64 / t,
            median(ratios),
            lo,
            hi
        );
    }
    println!(
        "(medians of {rounds} rounds; ratio = callrec throughput / sftp -b throughput per round, target >= 0.9; files = WAV + JSON)"
    );
}
