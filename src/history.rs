//! The call history: one JSON line per call in `SPOOL/calls.jsonl`,
//! recorded or not. Written by the signalling thread when a call ends.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CallRecord {
    pub call_id: String,
    /// Short id used in log lines.
    pub short_id: String,
    pub direction: Option<String>,
    pub contract: Option<String>,
    pub service: Option<String>,
    pub caller: String,
    pub callee: String,
    pub prefix: Option<String>,
    /// "record" or "skip".
    pub decision: String,
    pub reason: Option<String>,
    pub invite_at: String,
    pub answered_at: Option<String>,
    /// When the compliance announcement started: billing starts here.
    pub billing_start: Option<String>,
    pub ended_at: Option<String>,
    pub end_reason: Option<String>,
    pub segments: u32,
}

/// Appends history lines; each line is written whole and flushed so a
/// crash never leaves half a line for the next reader.
pub struct HistoryWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl HistoryWriter {
    /// Opens `SPOOL/calls.jsonl` for appending, with the configured mode
    /// and group ([`crate::recording::perms`]) whatever the umask: the
    /// history names every caller.
    pub fn open(spool: &Path) -> std::io::Result<HistoryWriter> {
        crate::recording::perms::create_dir_all(spool)?;
        let path = spool.join("calls.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        crate::recording::perms::apply_file(&file)?;
        Ok(HistoryWriter { path, file })
    }

    pub fn append(&mut self, rec: &CallRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)
    }

    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
