//! The call-state journal: what the live daemon needs to carry the calls
//! in progress across a crash (`kill -9`, a panic, the OOM killer).
//!
//! One small file per call in progress, `<dir>/<boot>_<key>.json`, with
//! `dir` = `SPOOL/state/calls/<interface>` (folders 0750, files 0640).
//! It is written at the call's events (decided, answered, media changed,
//! new segment, replaced, paused or resumed) and removed when the call
//! ends, right after its history line is appended. Each write goes to a
//! temporary name and is renamed over the last one, so a process killed
//! at any instant leaves either the old or the new file whole. Nothing is
//! fsynced: a kill leaves everything written with the kernel, while a
//! power cut can lose the last seconds of writes (see ARCHITECTURE.md,
//! "Crash: the call-state journal").
//!
//! The file holds two JSON lines. The first is the call's history line as
//! it would be if the call ended now (no end yet); the second the state
//! to go on with: the tracker's dialog and the engine's part (contract,
//! recording start, announcement, segment, pause). A file damaged after
//! its first line still gives the call its history line.
//!
//! Only `callrec run` keeps a journal: `replay` never writes one, so its
//! output stays byte-identical.

use crate::calls::tracker::snapshot::DialogSnapshot;
use crate::calls::tracker::{CallEvent, CallKey};
use crate::history::CallRecord;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The announcement of a recorded call, as the journal keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuidanceSnap {
    pub id: u8,
    pub played: bool,
    pub started_at_us: i64,
    pub ended_at_us: i64,
}

/// The engine's part of a recorded, answered call. Times in µs since the
/// Unix epoch (capture time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnginePart {
    pub contract: String,
    pub short_id: String,
    pub billing_start_us: Option<i64>,
    pub record_start_us: i64,
    pub guidance: Option<GuidanceSnap>,
    /// The segment being recorded when the file was written.
    pub segment: u32,
    pub paused: bool,
}

/// The journal file's second line: what a restart goes on with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallState {
    pub saved_at_us: i64,
    pub dialog: DialogSnapshot,
    pub engine: Option<EnginePart>,
}

/// One journal file as read back at start-up.
#[derive(Debug)]
pub enum Loaded {
    /// Both lines read.
    Whole(CallRecord, Box<CallState>),
    /// The history line read, the state not (cut or corrupt): the call
    /// gets its line but cannot be followed.
    HistoryOnly(CallRecord, String),
    /// Nothing usable.
    Unreadable(String),
}

/// What a call event means for the journal.
#[derive(Debug, PartialEq, Eq)]
pub enum JournalOp {
    None,
    /// The call is known by (now) this dialog: write its file.
    Track(CallKey, String),
    /// Rewrite the call's file.
    Save(CallKey),
    /// The call ended: remove its file.
    Remove(CallKey),
}

impl JournalOp {
    pub fn of(ev: &CallEvent) -> JournalOp {
        match ev {
            CallEvent::Decided { key, call_id, .. } | CallEvent::Replaced { key, call_id } => {
                JournalOp::Track(*key, call_id.clone())
            }
            CallEvent::Answered { key, .. }
            | CallEvent::MediaChanged { key, .. }
            | CallEvent::NewSegment { key, .. } => JournalOp::Save(*key),
            CallEvent::Ended { key, .. } => JournalOp::Remove(*key),
            CallEvent::InfoDigit { .. } => JournalOp::None,
        }
    }
}

/// The journal of one capture thread's engine.
pub struct CallJournal {
    dir: PathBuf,
    /// File names start with the process's start time (µs), so a file of
    /// this run never takes the name of one left by an earlier run.
    boot: i64,
    /// The tracker's Call-ID of each call's current dialog, and back.
    dialogs: HashMap<CallKey, String>,
    keys: HashMap<String, CallKey>,
    /// Writes done and their total time (µs), for the cost in the logs.
    pub writes: u64,
    pub write_us: u64,
}

const FILE_MODE: u32 = 0o640;

/// Creates `dir` and its missing parents with the spool's folder mode and
/// group (`[recording] file_mode`, `group`; 0750 by default), whatever
/// the umask.
fn make_dir(dir: &Path) -> std::io::Result<()> {
    crate::recording::perms::create_dir_all(dir)?;
    crate::recording::perms::apply_dir(dir)
}

impl CallJournal {
    /// Opens (creates) the journal folder `dir`; `now` names this run's files.
    pub fn open(dir: &Path, now: Timestamp) -> std::io::Result<CallJournal> {
        if let Some(state) = dir.parent().and_then(Path::parent) {
            make_dir(state)?;
        }
        make_dir(dir)?;
        Ok(CallJournal {
            dir: dir.to_owned(),
            boot: now.0,
            dialogs: HashMap::new(),
            keys: HashMap::new(),
            writes: 0,
            write_us: 0,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of call `key` in this run.
    pub fn file_of(&self, key: CallKey) -> PathBuf {
        self.dir.join(format!("{}_{key}.json", self.boot))
    }

    /// Writes the call's file: temporary name, then rename (no fsync).
    pub fn save(
        &mut self,
        key: CallKey,
        record: &CallRecord,
        state: &CallState,
    ) -> std::io::Result<()> {
        let t = std::time::Instant::now();
        let mut text = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        text.push(b'\n');
        serde_json::to_writer(&mut text, state).map_err(std::io::Error::other)?;
        text.push(b'\n');
        write_whole(&self.file_of(key), &text)?;
        self.writes += 1;
        self.write_us += t.elapsed().as_micros() as u64;
        Ok(())
    }

    /// Call `key` is (now) known by the tracker's dialog `call_id`.
    pub fn track(&mut self, key: CallKey, call_id: String) {
        if let Some(old) = self.dialogs.insert(key, call_id.clone()) {
            self.keys.remove(&old);
        }
        self.keys.insert(call_id, key);
    }

    /// The tracker's Call-ID of call `key`'s dialog.
    pub fn dialog_of(&self, key: CallKey) -> Option<&str> {
        self.dialogs.get(&key).map(String::as_str)
    }

    /// The call whose dialog is `call_id`.
    pub fn key_of(&self, call_id: &str) -> Option<CallKey> {
        self.keys.get(call_id).copied()
    }

    /// The call ended and its history line is written: its file goes.
    pub fn remove(&mut self, key: CallKey) {
        if let Some(c) = self.dialogs.remove(&key) {
            self.keys.remove(&c);
        }
        let path = self.file_of(key);
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a call's journal file");
        }
    }

    /// Gives the file an earlier run left for a call this run now carries
    /// on as `key` this run's name (one rename: the call is never in two
    /// files, nor in none).
    pub fn adopt(&self, old: &Path, key: CallKey) -> std::io::Result<()> {
        std::fs::rename(old, self.file_of(key))
    }

    /// Every file an earlier run left, oldest name first, read back.
    /// Temporary files of a write cut short are removed (the file they
    /// were replacing is whole). Files of the other folders beside this
    /// one are taken over first: they are an earlier set of interfaces'
    /// (one added or removed, or a release that ran an engine per
    /// interface), and their calls' history lines must not be lost.
    pub fn load_all(&self) -> Vec<(PathBuf, Loaded)> {
        self.take_over_siblings();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        let mut out = Vec::new();
        for p in paths {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&p);
            } else if p.is_file() {
                let loaded = read_file(&p);
                out.push((p, loaded));
            }
        }
        out
    }

    /// Moves the files of the other journal folders beside this one into
    /// it (named after their folder where a name is taken), then removes
    /// the folders they leave empty.
    fn take_over_siblings(&self) {
        let Some(parent) = self.dir.parent() else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(parent) else {
            return;
        };
        for folder in entries.flatten().map(|e| e.path()) {
            if folder == self.dir || !folder.is_dir() {
                continue;
            }
            let from = folder
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let Ok(files) = std::fs::read_dir(&folder) else {
                continue;
            };
            let mut moved = 0;
            for f in files.flatten().map(|e| e.path()) {
                let Some(name) = f.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                    continue;
                };
                let mut dest = self.dir.join(&name);
                if dest.exists() {
                    dest = self.dir.join(format!("{from}_{name}"));
                }
                match std::fs::rename(&f, &dest) {
                    Ok(()) => moved += 1,
                    Err(e) => {
                        tracing::error!(path = %f.display(), error = %e, "cannot take over a journal file of an earlier set of interfaces")
                    }
                }
            }
            let _ = std::fs::remove_dir(&folder);
            if moved > 0 {
                tracing::warn!(from = %folder.display(), to = %self.dir.display(), files = moved, "call-state journal of an earlier set of interfaces taken over");
            }
        }
    }

    /// Moves a file that cannot be carried on to `state/corrupt/` beside
    /// the journal folders (never deleted: it is evidence).
    pub fn move_aside(&self, path: &Path) -> Option<PathBuf> {
        let dir = self.dir.parent()?.parent()?.join("corrupt");
        make_dir(&dir).ok()?;
        let iface = self.dir.file_name()?.to_string_lossy();
        let dest = dir.join(format!("{iface}_{}", path.file_name()?.to_string_lossy()));
        std::fs::rename(path, &dest).ok()?;
        Some(dest)
    }
}

/// One page: a write of it at offset 0 is one page copy, which a kill
/// cannot cut (the kernel checks for a fatal signal between pages).
const PAGE: usize = 4096;

/// Replaces the content of `path` (created 0640) with `text` so that a
/// process killed at any instant leaves either the old content or the new
/// one whole, never a mix. Up to a page: padded with spaces to exactly
/// one page and written over the old one in place (one `pwrite`, about
/// 10 µs on ext4). Larger: written to a temporary name and renamed over
/// (about 150-300 µs on ext4, measured on the build VM; rare: a call
/// with many forked early answers). Readers ignore the padding (JSON
/// allows trailing white space; the journal reads two lines). No fsync.
pub fn write_whole(path: &Path, text: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    if text.len() <= PAGE {
        let mut page = [b' '; PAGE];
        page[..text.len()].copy_from_slice(text);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(path)?;
        let len = f.metadata()?.len();
        if len == 0 {
            // New: the spool's file mode and group, whatever the umask.
            crate::recording::perms::apply_file(&f)?;
        }
        f.write_all_at(&page, 0)?;
        // A larger record written here before left more: cut it off (a
        // kill before this leaves a whole new page and stale bytes after
        // it, which no reader looks at).
        if len > PAGE as u64 {
            f.set_len(PAGE as u64)?;
        }
        return Ok(());
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&tmp)?;
    crate::recording::perms::apply_file(&f)?;
    f.write_all(text)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Reads one journal file: the history line, then the state.
pub fn read_file(path: &Path) -> Loaded {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return Loaded::Unreadable(e.to_string()),
    };
    let mut lines = bytes.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let record: CallRecord = match serde_json::from_slice(first) {
        Ok(r) => r,
        Err(e) => return Loaded::Unreadable(format!("history line: {e}")),
    };
    let second = lines.next().unwrap_or_default();
    match serde_json::from_slice::<CallState>(second) {
        Ok(s) => Loaded::Whole(record, Box::new(s)),
        Err(e) => Loaded::HistoryOnly(record, format!("call state: {e}")),
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
