//! SFTP upload throughput of callrec's publisher beside OpenSSH's own
//! `sftp -b`, on the same files to the same local sshd in the same run.
//!
//! `cargo bench --bench sftp_throughput` (needs /usr/sbin/sshd and sftp;
//! skips with a message otherwise). callrec's path does more per file than
//! `sftp put` (existence check, temporary name, remote fsync, size check,
//! rename): that is the price of never half-publishing, and it is measured.
//! The SHA-256 of each file is computed beforehand (the worker takes it from
//! the spool check, not from the transfer).

#[path = "../tests/support/sshd.rs"]
mod sshd;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use callrec::config::load_str;
use callrec::delivery::sftp::Remote;
use callrec::delivery::spool::sha256_file;

fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

struct Run {
    secs: f64,
    bytes: u64,
    files: usize,
}

impl Run {
    fn mbps(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
    fn fps(&self) -> f64 {
        self.files as f64 / self.secs
    }
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
    let work = tempfile::tempdir().unwrap();
    let toml = format!(
        "[delivery]\nallowed_networks = [\"127.0.0.0/8\"]\n[[destination]]\nname = \"bench\"\nurl = {:?}\nidentity = {:?}\nhost_key = {:?}\n",
        srv.url(),
        srv.client_key.display().to_string(),
        srv.host_pub
    );
    let cfg = load_str(&toml, Path::new("bench.toml")).unwrap();
    let dest = cfg.destinations[0].clone();

    println!(
        "{:<8} {:>6} {:>12} {:>10} {:>12} {:>10} {:>7}",
        "size", "files", "callrec MB/s", "files/s", "sftp -b MB/s", "files/s", "ratio"
    );
    for (label, size, count) in [("2 MB", 2_000_000usize, 40usize), ("100 KB", 100_000, 200)] {
        let src = work.path().join(label.replace(' ', ""));
        std::fs::create_dir_all(&src).unwrap();
        let mut files = Vec::new();
        for i in 0..count {
            let p = src.join(format!("f{i:04}.wav"));
            std::fs::write(&p, body(i as u64 + size as u64, size)).unwrap();
            let h = sha256_file(&p).unwrap();
            files.push((p, h));
        }
        let mut best_ours: Option<Run> = None;
        let mut best_theirs: Option<Run> = None;
        for round in 0..3 {
            // callrec, connection set-up included.
            let sub = format!("ours{round}-{}", label.replace(' ', ""));
            let t0 = Instant::now();
            let mut remote = Remote::connect(&dest, &cfg.delivery).expect("connect");
            for (p, h) in &files {
                let name = format!("{sub}/{}", p.file_name().unwrap().to_str().unwrap());
                remote.upload_file(p, &name, h).expect("upload");
            }
            drop(remote);
            let ours = Run {
                secs: t0.elapsed().as_secs_f64(),
                bytes: (size * count) as u64,
                files: count,
            };

            // OpenSSH sftp -b, connection set-up included.
            let sub2 = format!("theirs{round}-{}", label.replace(' ', ""));
            let mut batch = format!("-mkdir {}/{sub2}\n", srv.remote_dir);
            for (p, _) in &files {
                batch += &format!(
                    "put {} {}/{sub2}/{}\n",
                    p.display(),
                    srv.remote_dir,
                    p.file_name().unwrap().to_str().unwrap()
                );
            }
            let bf = work.path().join("batch");
            std::fs::write(&bf, batch).unwrap();
            let t0 = Instant::now();
            let st = Command::new("sftp")
                .args(["-q", "-b"])
                .arg(&bf)
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
            let theirs = Run {
                secs: t0.elapsed().as_secs_f64(),
                bytes: (size * count) as u64,
                files: count,
            };
            assert!(st.success(), "sftp -b failed");
            let keep = |best: &mut Option<Run>, r: Run| {
                if best.as_ref().is_none_or(|b| r.secs < b.secs) {
                    *best = Some(r);
                }
            };
            keep(&mut best_ours, ours);
            keep(&mut best_theirs, theirs);
            // Free the space between rounds.
            let _ = std::fs::remove_dir_all(srv.incoming.join(&sub));
            let _ = std::fs::remove_dir_all(srv.incoming.join(&sub2));
            std::thread::sleep(Duration::from_millis(100));
        }
        let (o, t) = (best_ours.unwrap(), best_theirs.unwrap());
        println!(
            "{:<8} {:>6} {:>12.1} {:>10.1} {:>12.1} {:>10.1} {:>7.2}",
            label,
            count,
            o.mbps(),
            o.fps(),
            t.mbps(),
            t.fps(),
            o.mbps() / t.mbps()
        );
    }
    println!(
        "(best of 3 rounds each; ratio = callrec throughput / sftp -b throughput, target >= 0.9)"
    );
}
