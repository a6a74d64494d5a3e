//! The part of the pipeline benchmark's cost that no recorder code can
//! remove: putting the recordings' bytes on disk the way the spool must
//! (buffered writes interleaved across every open call, an fsync per file,
//! a rename and a folder fsync per file) and hashing them with SHA-256 (the
//! metadata's `sha256`), with no RTP, no mixing and no metadata.
//!
//! `scripts/bench-pipeline.sh` runs it on the same filesystem as the
//! pipeline with the same number of files and bytes, and prints its CPU
//! time beside the pipeline's: the gap between the two is what parsing,
//! jitter buffering, mixing and encoding cost.
//!
//! Usage: `output_floor DIR FILES BYTES_PER_FILE` (DIR must not exist).
//! Prints `files bytes user_s sys_s`.

use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;

/// The WAV writer's buffer: the recorder hands the kernel this much at a time.
const CHUNK: usize = 8192;

fn cpu_seconds() -> (f64, f64) {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (s(ru.ru_utime), s(ru.ru_stime))
}

fn fsync_dir(p: &Path) -> std::io::Result<()> {
    File::open(p)?.sync_all()
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: output_floor DIR FILES BYTES_PER_FILE");
        std::process::exit(2);
    }
    let dir = Path::new(&args[1]);
    let parse = |s: &str, what: &str| -> usize {
        s.parse().unwrap_or_else(|_| {
            eprintln!("output_floor: {what} must be a whole number, not {s:?}");
            std::process::exit(2)
        })
    };
    let files = parse(&args[2], "FILES");
    let bytes = parse(&args[3], "BYTES_PER_FILE");
    let (tmp, done) = (dir.join("tmp"), dir.join("done"));
    fs::create_dir_all(&tmp)?;
    fs::create_dir_all(&done)?;
    let (u0, s0) = cpu_seconds();
    // Audio-like content (not zeros, which some filesystems treat apart).
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 37 % 251) as u8).collect();
    let mut open: Vec<File> = (0..files)
        .map(|i| File::create(tmp.join(format!("{i}.wav"))))
        .collect::<Result<_, _>>()?;
    // Every call's writer flushes a buffer in turn, as the shard does.
    let mut written = 0;
    while written < bytes {
        let n = CHUNK.min(bytes - written);
        for f in &mut open {
            f.write_all(&chunk[..n])?;
        }
        written += n;
    }
    drop(open);
    let mut buf = vec![0u8; 64 * 1024];
    for i in 0..files {
        let from = tmp.join(format!("{i}.wav"));
        let mut f = File::open(&from)?;
        let mut h = Sha256::new();
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        std::hint::black_box(h.finalize());
        f.sync_all()?;
        fs::rename(&from, done.join(format!("{i}.wav")))?;
        fsync_dir(&done)?;
        fsync_dir(&tmp)?;
    }
    let (u1, s1) = cpu_seconds();
    println!("{files} {} {:.3} {:.3}", files * bytes, u1 - u0, s1 - s0);
    Ok(())
}
