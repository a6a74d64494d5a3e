//! Peer tools and the public capture corpus, for tests that need them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Whether `name` can be run (with `arg`, e.g. its version flag; some
/// tools, SIPp among them, exit non-zero there). Prints a SKIP line naming
/// the tool when not.
pub fn tool_present(name: &str, arg: &str) -> bool {
    let ok = std::process::Command::new(name).arg(arg).output().is_ok();
    if !ok {
        eprintln!("SKIP: {name} is not installed (scripts/setup.sh installs it)");
    }
    ok
}

/// `../shared/pcaps/public`, or `None` (with a SKIP line) where it is absent.
pub fn corpus() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pcaps/public");
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("SKIP: public captures not found at {}", p.display());
        None
    }
}

/// The capture files (pcap, pcapng, cap) in `dir`, sorted by name.
pub fn capture_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "pcap" || x == "pcapng" || x == "cap")
        })
        .collect();
    v.sort();
    v
}
