//! The spool: files are the queue.
//!
//! Layout under the spool root:
//!
//! ```text
//! tmp/                                     recordings being written (the recorder's)
//! queue/<destination>/ready/<stem>.{wav,json}
//! queue/<destination>/inflight/...         being uploaded
//! queue/<destination>/done/...             delivered, kept for keep_delivered
//! queue/<destination>/held/...             too old, or conflicting on the server
//! queue/<destination>/quarantine/...       damaged: hash no longer matches
//! queue/<destination>/status.json          the worker's last status (for `queue list`)
//! ```
//!
//! A recording is in the state whose folder holds its JSON: the WAV always
//! moves first and the JSON last, so a crash between the two renames leaves a
//! WAV without JSON, which [`Spool::recover_at_startup`] puts back beside its
//! JSON. Every state change is a rename followed by a directory fsync, so a
//! crash at any point leaves each recording in exactly one state. Nothing is
//! ever deleted except from `done/`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::delivery::lock::check_writable;
pub use crate::delivery::lock::{LOCK_FILE, SpoolLock};
use crate::recording::perms;

#[cfg(test)]
use sha2::{Digest, Sha256};

/// Delivery states, one folder each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueueState {
    Ready,
    Inflight,
    Done,
    Held,
    Quarantine,
}

impl QueueState {
    pub const ALL: [QueueState; 5] = [
        QueueState::Ready,
        QueueState::Inflight,
        QueueState::Done,
        QueueState::Held,
        QueueState::Quarantine,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueState::Ready => "ready",
            QueueState::Inflight => "inflight",
            QueueState::Done => "done",
            QueueState::Held => "held",
            QueueState::Quarantine => "quarantine",
        }
    }
}

/// A WAV without its JSON in `ready/` younger than this is left alone at
/// start-up (it may be a publish in progress by a recorder that already runs).
pub const ORPHAN_GRACE: Duration = Duration::from_secs(60);

/// Temporary JSON files of [`Spool::publish`] live in `tmp/` under this prefix.
const PUBLISH_TMP_PREFIX: &str = ".publish-";

static PUBLISH_SEQ: AtomicU64 = AtomicU64::new(0);

/// What [`Spool::recover_at_startup`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Recordings moved from inflight back to ready.
    pub requeued: usize,
    /// WAV files moved back beside their JSON after a split move.
    pub rejoined: usize,
    /// Recordings or lone files moved to quarantine.
    pub quarantined: usize,
}

/// A handle on the spool directory tree. Cheap to clone; holds no open files.
#[derive(Clone, Debug)]
pub struct Spool {
    root: PathBuf,
    usage: Option<SpoolUsage>,
}

/// A running count of the bytes in the spool, shared by every thread that
/// changes it, so the capture thread can compare the spool with its limits
/// without walking the tree. Measured once by a walk
/// ([`SpoolUsage::measure`]); then [`Spool::publish`] adds each recording
/// (WAV and JSON) and the expiry of delivered recordings subtracts them.
/// State moves change nothing. Recordings still being written in `tmp/`
/// count from their publication, the history file only as measured.
#[derive(Clone, Debug, Default)]
pub struct SpoolUsage(std::sync::Arc<UsageInner>);

#[derive(Debug, Default)]
struct UsageInner {
    bytes: AtomicU64,
    /// Segments handed to a finisher and not yet published (or failed):
    /// bytes about to be added. Replay waits for zero before comparing
    /// with the limits, so its decisions do not depend on thread timing.
    in_flight: AtomicU64,
}

impl SpoolUsage {
    /// Walks the spool once for the starting figure.
    pub fn measure(spool: &Spool) -> io::Result<SpoolUsage> {
        Ok(SpoolUsage::starting_at(spool.bytes_used()?))
    }

    pub fn starting_at(bytes: u64) -> SpoolUsage {
        let u = SpoolUsage::default();
        u.0.bytes.store(bytes, Ordering::Release);
        u
    }

    pub fn bytes(&self) -> u64 {
        self.0.bytes.load(Ordering::Acquire)
    }

    pub fn add(&self, n: u64) {
        self.0.bytes.fetch_add(n, Ordering::AcqRel);
    }

    pub fn sub(&self, n: u64) {
        let _ = self
            .0
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            });
    }

    /// A segment is on its way to publication.
    pub fn begin(&self) {
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// That segment is published, or failed.
    pub fn end(&self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn in_flight(&self) -> u64 {
        self.0.in_flight.load(Ordering::Acquire)
    }
}

/// Checks a stem: a relative path of `[A-Za-z0-9._-]` components separated by
/// `/`, without empty, `.` or `..` components.
pub fn validate_stem(stem: &str) -> io::Result<()> {
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad recording stem {stem:?}: {why}"),
        )
    };
    if stem.is_empty() || stem.len() > 1024 {
        return Err(bad("empty or too long"));
    }
    if !stem
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    {
        return Err(bad("only [A-Za-z0-9._/-] allowed"));
    }
    for part in stem.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(bad("empty, '.' or '..' path component"));
        }
        if part.starts_with('.') {
            return Err(bad("hidden path component"));
        }
    }
    Ok(())
}

/// The sort key of a stem: its file name (which starts with the recording's
/// time), then the whole stem; so recordings of several contracts in one
/// queue still go oldest first.
pub fn stem_order_key(stem: &str) -> (&str, &str) {
    (stem.rsplit('/').next().unwrap_or(stem), stem)
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    crate::recording::wav::sha256_file(path).map(|(_, hash)| hash)
}

/// `audio.sha256` of a recording's metadata, if present.
pub fn json_audio_sha256(json: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    v.get("audio")?
        .get("sha256")?
        .as_str()
        .map(|s| s.to_ascii_lowercase())
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Audio file extensions a recording may have: WAV, or the compressed
/// formats of `[recording] format` (the stem is the same).
pub const AUDIO_EXTS: [&str; 4] = ["wav", "mp3", "opus", "flac"];

/// The audio extension of a path ("wav" unless it is another audio one).
pub fn audio_ext(p: &Path) -> &'static str {
    let e = p.extension().and_then(|e| e.to_str()).unwrap_or("");
    AUDIO_EXTS
        .iter()
        .copied()
        .find(|x| *x == e)
        .unwrap_or("wav")
}

fn with_ext(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    dir.join(format!("{stem}.{ext}"))
}

impl Spool {
    /// Opens (creating if needed) the spool at `root`. Folders it creates
    /// get the configured mode and group ([`crate::recording::perms`]).
    pub fn open(root: impl AsRef<Path>) -> io::Result<Spool> {
        let root = root.as_ref().to_path_buf();
        let made = perms::create_dir_all(&root.join("tmp"))
            .and_then(|_| perms::create_dir_all(&root.join("queue")));
        if let Err(e) = made {
            // Say which folder refuses us, and its mode and owner.
            if e.kind() == io::ErrorKind::PermissionDenied && root.is_dir() {
                check_writable(&root)?;
            }
            return Err(e);
        }
        Ok(Spool { root, usage: None })
    }

    /// Makes this process the spool's only writer (`run` and `replay`):
    /// sets `p` as the process's modes and group, gives the spool root,
    /// `tmp/` and `queue/` that mode (whatever the umask made of them, or
    /// a hand changed), and takes an exclusive flock(2) on `SPOOL/.lock`
    /// for as long as the returned guard lives. A second daemon on the
    /// same spool gets `ResourceBusy` naming the holder's pid; a folder
    /// we cannot write or re-mode gets `PermissionDenied` naming it.
    pub fn lock(&self, p: perms::Perms) -> io::Result<SpoolLock> {
        perms::configure(p);
        for dir in [self.root.clone(), self.tmp_dir(), self.root.join("queue")] {
            check_writable(&dir)?;
            perms::apply_dir(&dir).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "spool folder {}: cannot set mode {:04o}{}: {e}",
                        dir.display(),
                        p.dir_mode,
                        p.gid.map(|g| format!(" and group {g}")).unwrap_or_default()
                    ),
                )
            })?;
        }
        SpoolLock::take(&self.root.join(LOCK_FILE))
    }

    /// This handle keeps `usage` up to date (publish adds, expiry subtracts).
    pub fn with_usage(mut self, usage: SpoolUsage) -> Spool {
        self.usage = Some(usage);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the recorder writes recordings in progress.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn queue_dir(&self, dest: &str) -> PathBuf {
        self.root.join("queue").join(dest)
    }

    pub fn state_dir(&self, dest: &str, state: QueueState) -> PathBuf {
        self.queue_dir(dest).join(state.as_str())
    }

    /// Path of a recording's file in a state (`ext` is "wav" or "json").
    pub fn file(&self, dest: &str, state: QueueState, stem: &str, ext: &str) -> PathBuf {
        with_ext(&self.state_dir(dest, state), stem, ext)
    }

    /// Path of a recording's audio file in a state: whichever of
    /// [`AUDIO_EXTS`] exists (the `.wav` path when none does).
    pub fn audio_file(&self, dest: &str, state: QueueState, stem: &str) -> PathBuf {
        AUDIO_EXTS
            .iter()
            .map(|ext| self.file(dest, state, stem, ext))
            .find(|p| p.exists())
            .unwrap_or_else(|| self.file(dest, state, stem, "wav"))
    }

    /// Creates the state folders of a destination.
    pub fn ensure_destination(&self, dest: &str) -> io::Result<()> {
        validate_dest(dest)?;
        for s in QueueState::ALL {
            perms::create_dir_all(&self.state_dir(dest, s))?;
        }
        Ok(())
    }

    /// Destinations that have a queue folder.
    pub fn destinations(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.root.join("queue"))? {
            let e = e?;
            if e.file_type()?.is_dir()
                && let Some(n) = e.file_name().to_str()
            {
                out.push(n.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Enters a finished recording into `dest`'s ready queue: the WAV is
    /// fsynced and renamed in, then the JSON is written under a temporary
    /// name in `tmp/`, fsynced and renamed in last, then the folders are
    /// fsynced. If the JSON cannot be written (e.g. a full disk) the WAV is
    /// moved back to `wav_tmp` so nothing half-published stays queued.
    pub fn publish(&self, dest: &str, stem: &str, wav_tmp: &Path, json: &[u8]) -> io::Result<()> {
        validate_dest(dest)?;
        validate_stem(stem)?;
        let ready = self.state_dir(dest, QueueState::Ready);
        let wav = with_ext(&ready, stem, audio_ext(wav_tmp));
        let jsn = with_ext(&ready, stem, "json");
        for s in QueueState::ALL {
            if self.file(dest, s, stem, "json").exists() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "recording {stem} already queued for {dest} ({})",
                        s.as_str()
                    ),
                ));
            }
        }
        let parent = wav
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| ready.clone());
        perms::create_dir_all(&parent)?;
        File::options().write(true).open(wav_tmp)?.sync_all()?;
        fs::rename(wav_tmp, &wav)?;
        let wav_bytes = fs::metadata(&wav).map(|m| m.len()).unwrap_or(0);
        let tmp_json = self.tmp_dir().join(format!(
            "{PUBLISH_TMP_PREFIX}{}-{}.json.part",
            std::process::id(),
            PUBLISH_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut f = perms::create(&tmp_json)?;
            f.write_all(json)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp_json, &jsn)?;
            fsync_dir(&parent)?;
            let tmp = self.tmp_dir();
            match wav_tmp.parent() {
                // Usually the WAV came from tmp/ too: one fsync covers both.
                Some(p) if p != tmp => {
                    fsync_dir(p)?;
                    fsync_dir(&tmp)
                }
                _ => fsync_dir(&tmp),
            }
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp_json);
            if !jsn.exists() {
                // Undo the WAV rename: the recording stays the recorder's, whole.
                let _ = fs::rename(&wav, wav_tmp);
            }
            return Err(e);
        }
        if let Some(u) = &self.usage {
            u.add(wav_bytes + json.len() as u64);
        }
        Ok(())
    }

    /// Complete recordings (those whose JSON is present) of a destination in
    /// a state, oldest first.
    pub fn list(&self, dest: &str, state: QueueState) -> io::Result<Vec<String>> {
        let dir = self.state_dir(dest, state);
        let mut stems = Vec::new();
        walk_files(&dir, &mut |rel| {
            if let Some(s) = rel.strip_suffix(".json") {
                stems.push(s.to_string());
            }
        })?;
        stems.retain(|s| validate_stem(s).is_ok());
        stems.sort_by(|a, b| stem_order_key(a).cmp(&stem_order_key(b)));
        Ok(stems)
    }

    /// Moves a recording between states: WAV first, JSON last, then fsyncs
    /// the folders. A missing WAV is tolerated (only the JSON is then moved),
    /// a missing JSON is `NotFound`.
    pub fn move_to(
        &self,
        dest: &str,
        stem: &str,
        from: QueueState,
        to: QueueState,
    ) -> io::Result<()> {
        self.rename_state(dest, stem, from, to, true)
    }

    fn rename_state(
        &self,
        dest: &str,
        stem: &str,
        from: QueueState,
        to: QueueState,
        durable: bool,
    ) -> io::Result<()> {
        validate_stem(stem)?;
        let src_json = self.file(dest, from, stem, "json");
        if !src_json.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("recording {stem} is not {} for {dest}", from.as_str()),
            ));
        }
        let src_wav = self.audio_file(dest, from, stem);
        let dst_wav = self.file(dest, to, stem, audio_ext(&src_wav));
        let dst_json = self.file(dest, to, stem, "json");
        if let Some(p) = dst_json.parent() {
            perms::create_dir_all(p)?;
        }
        match fs::rename(&src_wav, &dst_wav) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        fs::rename(&src_json, &dst_json)?;
        if !durable {
            return Ok(());
        }
        if let Some(p) = dst_json.parent() {
            fsync_dir(p)?;
        }
        if let Some(p) = src_json.parent() {
            fsync_dir(p)?;
        }
        Ok(())
    }

    /// [`Spool::move_to`] without the folder fsyncs, for the moves whose
    /// loss in a power cut only repeats work that is idempotent anyway
    /// (ready to inflight, inflight back to ready, inflight to done: at
    /// worst the recording is sent again and found already delivered).
    /// Folder fsyncs cost milliseconds each and would otherwise dominate
    /// the delivery of short recordings.
    pub fn shift(
        &self,
        dest: &str,
        stem: &str,
        from: QueueState,
        to: QueueState,
    ) -> io::Result<()> {
        self.rename_state(dest, stem, from, to, false)
    }

    /// Start-up recovery of one destination's queue, or of all when `None`:
    ///
    /// * a WAV separated from its JSON by a crash between the two renames of
    ///   a move goes back beside its JSON;
    /// * inflight goes back to ready;
    /// * a recording whose WAV no longer hashes to its JSON's `audio.sha256`
    ///   (or whose JSON does not parse, or whose WAV is missing) goes to
    ///   quarantine; so does a WAV without any JSON in `ready/` older than
    ///   [`ORPHAN_GRACE`] (a publish interrupted between its two renames);
    /// * stale temporary JSON files of `publish` in `tmp/` are removed (they
    ///   were never published). Everything else in `tmp/` is the recorder's:
    ///   its own WAV recovery finishes or discards those.
    ///
    /// Nothing undelivered is deleted.
    pub fn recover_at_startup(&self, now: SystemTime) -> io::Result<RecoveryReport> {
        let mut rep = RecoveryReport::default();
        if let Ok(rd) = fs::read_dir(self.tmp_dir()) {
            for e in rd.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(PUBLISH_TMP_PREFIX) && name.ends_with(".json.part") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        for dest in self.destinations()? {
            self.ensure_destination(&dest)?;
            self.recover_destination(&dest, now, &mut rep)?;
        }
        Ok(rep)
    }

    fn recover_destination(
        &self,
        dest: &str,
        now: SystemTime,
        rep: &mut RecoveryReport,
    ) -> io::Result<()> {
        // 1. Index files per state.
        let mut files: BTreeMap<QueueState, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
        for s in QueueState::ALL {
            let (mut wavs, mut jsons) = (BTreeSet::new(), BTreeSet::new());
            walk_files(&self.state_dir(dest, s), &mut |rel| {
                if let Some(st) = AUDIO_EXTS
                    .iter()
                    .find_map(|e| rel.strip_suffix(&format!(".{e}")))
                {
                    wavs.insert(st.to_string());
                } else if let Some(st) = rel.strip_suffix(".json") {
                    jsons.insert(st.to_string());
                }
            })?;
            files.insert(s, (wavs, jsons));
        }
        let json_state = |stem: &str| {
            QueueState::ALL
                .into_iter()
                .find(|s| files.get(s).is_some_and(|(_, j)| j.contains(stem)))
        };
        // 2. Lone WAVs: rejoin their JSON, or quarantine old orphans.
        for s in QueueState::ALL {
            let lone: Vec<String> = files[&s]
                .0
                .iter()
                .filter(|w| !files[&s].1.contains(*w))
                .cloned()
                .collect();
            for stem in lone {
                let from = self.audio_file(dest, s, &stem);
                let ext = audio_ext(&from);
                match json_state(&stem) {
                    Some(js) => {
                        let to = self.file(dest, js, &stem, ext);
                        if to.exists() {
                            // Two WAVs for one stem: keep the one beside the JSON, set the other aside.
                            self.quarantine_file(dest, &from, &stem, ext)?;
                            rep.quarantined += 1;
                        } else {
                            fs::rename(&from, &to)?;
                            rep.rejoined += 1;
                        }
                    }
                    None => {
                        let age = fs::metadata(&from)
                            .and_then(|m| m.modified())
                            .ok()
                            .and_then(|m| now.duration_since(m).ok())
                            .unwrap_or(Duration::ZERO);
                        if s != QueueState::Quarantine
                            && (s != QueueState::Ready || age >= ORPHAN_GRACE)
                        {
                            tracing::error!(destination = dest, stem = %stem, "WAV without metadata in the spool; quarantined");
                            self.quarantine_file(dest, &from, &stem, ext)?;
                            rep.quarantined += 1;
                        }
                    }
                }
            }
        }
        // 3. Inflight back to ready.
        for stem in self.list(dest, QueueState::Inflight)? {
            if self.file(dest, QueueState::Ready, &stem, "json").exists() {
                // Cannot happen with publish's duplicate check; keep both, set this one aside.
                self.move_to(dest, &stem, QueueState::Inflight, QueueState::Quarantine)?;
                rep.quarantined += 1;
                continue;
            }
            self.move_to(dest, &stem, QueueState::Inflight, QueueState::Ready)?;
            rep.requeued += 1;
        }
        // 4. Hash check of everything not yet delivered.
        for s in [QueueState::Ready, QueueState::Held] {
            for stem in self.list(dest, s)? {
                if let Err(why) = self.verify(dest, s, &stem) {
                    tracing::error!(destination = dest, stem = %stem, reason = %why, "spool file damaged; quarantined");
                    self.move_to(dest, &stem, s, QueueState::Quarantine)?;
                    rep.quarantined += 1;
                }
            }
        }
        Ok(())
    }

    fn quarantine_file(&self, dest: &str, from: &Path, stem: &str, ext: &str) -> io::Result<()> {
        let mut to = self.file(dest, QueueState::Quarantine, stem, ext);
        if let Some(p) = to.parent() {
            perms::create_dir_all(p)?;
        }
        let mut n = 1;
        while to.exists() {
            to = self.file(dest, QueueState::Quarantine, stem, &format!("{ext}.{n}"));
            n += 1;
        }
        fs::rename(from, &to)?;
        if let Some(p) = to.parent() {
            fsync_dir(p)?;
        }
        Ok(())
    }

    /// Checks that a recording's WAV hashes to its JSON's `audio.sha256`.
    /// Returns the WAV's hash.
    pub fn verify(&self, dest: &str, state: QueueState, stem: &str) -> Result<String, String> {
        let json = fs::read(self.file(dest, state, stem, "json"))
            .map_err(|e| format!("metadata unreadable: {e}"))?;
        let want = json_audio_sha256(&json).ok_or("metadata has no audio.sha256")?;
        let got = sha256_file(&self.audio_file(dest, state, stem))
            .map_err(|e| format!("WAV unreadable: {e}"))?;
        if got != want {
            return Err(format!("WAV sha256 {got} does not match metadata {want}"));
        }
        Ok(got)
    }

    /// Time a recording entered its current state's clock: the JSON's
    /// modification time (set at publish, refreshed on delivery and release).
    pub fn stamp(&self, dest: &str, state: QueueState, stem: &str) -> io::Result<SystemTime> {
        fs::metadata(self.file(dest, state, stem, "json"))?.modified()
    }

    /// Sets the JSON's modification time (delivery time in done/, restart of
    /// the hold clock on release).
    pub fn touch(
        &self,
        dest: &str,
        state: QueueState,
        stem: &str,
        at: SystemTime,
    ) -> io::Result<()> {
        File::options()
            .write(true)
            .open(self.file(dest, state, stem, "json"))?
            .set_modified(at)
    }

    /// Deletes delivered recordings (from `done/` only) delivered more than
    /// `keep_delivered` before `now`. Returns how many were deleted.
    pub fn expire_done(&self, now: SystemTime, keep_delivered: Duration) -> io::Result<usize> {
        let mut n = 0;
        for dest in self.destinations()? {
            n += self.expire_done_for(&dest, now, keep_delivered)?;
        }
        Ok(n)
    }

    /// [`Spool::expire_done`] for one destination.
    pub fn expire_done_for(
        &self,
        dest: &str,
        now: SystemTime,
        keep_delivered: Duration,
    ) -> io::Result<usize> {
        let mut n = 0;
        for stem in self.list(dest, QueueState::Done)? {
            let Ok(at) = self.stamp(dest, QueueState::Done, &stem) else {
                continue;
            };
            if now.duration_since(at).unwrap_or(Duration::ZERO) >= keep_delivered {
                let mut result = Ok(());
                let audio = self.audio_file(dest, QueueState::Done, &stem);
                for ext in [audio_ext(&audio), "json"] {
                    let p = self.file(dest, QueueState::Done, &stem, ext);
                    let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                    match fs::remove_file(&p) {
                        Ok(()) => {
                            if let Some(u) = &self.usage {
                                u.sub(len);
                            }
                        }
                        // The recording is in the state its JSON is in: a
                        // JSON that stays means it was not expired.
                        Err(e) if ext == "json" => result = Err(e),
                        Err(_) => {}
                    }
                }
                result?;
                n += 1;
            }
        }
        if n > 0 {
            remove_empty_dirs(&self.state_dir(dest, QueueState::Done), false);
        }
        Ok(n)
    }

    /// Bytes used by all files in the spool (tmp and every queue state).
    /// Walks the tree: call it every few seconds, not per packet.
    pub fn bytes_used(&self) -> io::Result<u64> {
        let mut total = 0;
        walk_files(&self.root, &mut |rel| {
            total += fs::metadata(self.root.join(rel)).map_or(0, |m| m.len());
        })?;
        Ok(total)
    }
}

fn validate_dest(dest: &str) -> io::Result<()> {
    if dest.is_empty()
        || dest.starts_with('.')
        || !dest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad destination name {dest:?}"),
        ));
    }
    Ok(())
}

/// Calls `f` with the path (relative to `dir`, `/`-separated) of every
/// regular file below `dir`. A missing `dir` is empty.
fn walk_files(dir: &Path, f: &mut dyn FnMut(&str)) -> io::Result<()> {
    fn rec(base: &Path, dir: &Path, f: &mut dyn FnMut(&str)) -> io::Result<()> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for e in rd {
            let e = e?;
            let ft = e.file_type()?;
            let p = e.path();
            if ft.is_dir() {
                rec(base, &p, f)?;
            } else if ft.is_file()
                && let Some(rel) = p.strip_prefix(base).ok().and_then(|r| r.to_str())
            {
                f(rel);
            }
        }
        Ok(())
    }
    rec(dir, dir, f)
}

/// Removes empty sub-folders (never `dir` itself unless `self_too`).
fn remove_empty_dirs(dir: &Path, self_too: bool) -> bool {
    let Ok(rd) = fs::read_dir(dir) else {
        return false;
    };
    let mut empty = true;
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            if !remove_empty_dirs(&e.path(), true) {
                empty = false;
            }
        } else {
            empty = false;
        }
    }
    if empty && self_too {
        fs::remove_dir(dir).is_ok()
    } else {
        empty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEM: &str = "K-0001/20261121/20261121T093000_out_0312340001_0312349999_3fa9c2_1";

    fn recording(spool: &Spool, name: &str, body: &[u8]) -> (PathBuf, Vec<u8>) {
        let wav = spool.tmp_dir().join(format!("{name}.wav"));
        fs::write(&wav, body).unwrap();
        let json = serde_json::json!({"schema": 1, "audio": {"sha256": hex::encode(Sha256::digest(body))}});
        (wav, serde_json::to_vec(&json).unwrap())
    }

    #[test]
    fn stems_are_validated() {
        assert!(validate_stem(STEM).is_ok());
        for bad in [
            "",
            "/abs",
            "a//b",
            "a/../b",
            "a/./b",
            "a b",
            "a/.hidden",
            "x;rm",
            "ü",
        ] {
            assert!(validate_stem(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn publish_move_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        spool.ensure_destination("acme").unwrap();
        let later = "K-0001/20261121/20261121T100000_out_1_2_aa_1";
        let earlier = "K-0002/20261121/20261121T090000_out_1_2_bb_1";
        for (i, s) in [later, earlier].iter().enumerate() {
            let (wav, json) = recording(&spool, &format!("r{i}"), format!("audio{i}").as_bytes());
            spool.publish("acme", s, &wav, &json).unwrap();
            assert!(!wav.exists());
        }
        // Oldest first across contracts: by file name, which starts with the time.
        assert_eq!(
            spool.list("acme", QueueState::Ready).unwrap(),
            vec![earlier.to_string(), later.to_string()]
        );
        let (wav, json) = recording(&spool, "dup", b"x");
        assert_eq!(
            spool
                .publish("acme", later, &wav, &json)
                .unwrap_err()
                .kind(),
            io::ErrorKind::AlreadyExists
        );
        assert!(spool.publish("acme", "../evil", &wav, &json).is_err());

        spool
            .move_to("acme", earlier, QueueState::Ready, QueueState::Inflight)
            .unwrap();
        assert!(
            spool
                .file("acme", QueueState::Inflight, earlier, "wav")
                .exists()
        );
        assert_eq!(
            spool.list("acme", QueueState::Ready).unwrap(),
            vec![later.to_string()]
        );
        assert!(spool.verify("acme", QueueState::Inflight, earlier).is_ok());
    }

    #[test]
    fn recovery_requeues_rejoins_and_quarantines() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let stems = [
            "K-1/a/20260101T000001_x",
            "K-1/a/20260101T000002_x",
            "K-1/a/20260101T000003_x",
        ];
        for (i, s) in stems.iter().enumerate() {
            let (wav, json) = recording(&spool, &format!("r{i}"), format!("body{i}").as_bytes());
            spool.publish("d", s, &wav, &json).unwrap();
        }
        // 0: interrupted upload.
        spool
            .move_to("d", stems[0], QueueState::Ready, QueueState::Inflight)
            .unwrap();
        // 1: crash between the WAV and JSON renames of ready -> inflight.
        let w = spool.file("d", QueueState::Inflight, stems[1], "wav");
        fs::create_dir_all(w.parent().unwrap()).unwrap();
        fs::rename(spool.file("d", QueueState::Ready, stems[1], "wav"), &w).unwrap();
        // 2: WAV damaged on disk.
        fs::write(
            spool.file("d", QueueState::Ready, stems[2], "wav"),
            b"bit rot",
        )
        .unwrap();
        // An orphan WAV from an interrupted publish, old enough.
        let orphan = spool.file("d", QueueState::Ready, "K-1/a/20260101T000004_x", "wav");
        fs::write(&orphan, b"orphan").unwrap();
        fs::write(spool.tmp_dir().join(".publish-1-1.json.part"), b"{").unwrap();
        fs::write(spool.tmp_dir().join("recorder.wav"), b"recorder's").unwrap();

        let rep = spool
            .recover_at_startup(SystemTime::now() + ORPHAN_GRACE * 2)
            .unwrap();
        assert_eq!(
            rep,
            RecoveryReport {
                requeued: 1,
                rejoined: 1,
                quarantined: 2
            }
        );
        assert_eq!(
            spool.list("d", QueueState::Ready).unwrap(),
            vec![stems[0].to_string(), stems[1].to_string()]
        );
        assert!(spool.verify("d", QueueState::Ready, stems[1]).is_ok());
        assert_eq!(
            spool.list("d", QueueState::Quarantine).unwrap(),
            vec![stems[2].to_string()]
        );
        assert!(
            spool
                .file(
                    "d",
                    QueueState::Quarantine,
                    "K-1/a/20260101T000004_x",
                    "wav"
                )
                .exists()
        );
        assert!(!spool.tmp_dir().join(".publish-1-1.json.part").exists());
        assert!(
            spool.tmp_dir().join("recorder.wav").exists(),
            "tmp/ is the recorder's"
        );
    }

    #[test]
    fn expire_only_done_and_count_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let usage = SpoolUsage::measure(&spool).unwrap();
        let spool = spool.with_usage(usage.clone());
        for (i, s) in ["K-1/20260101T000001_a", "K-1/20260101T000002_b"]
            .iter()
            .enumerate()
        {
            let (wav, json) = recording(&spool, &format!("r{i}"), &[i as u8; 1000]);
            spool.publish("d", s, &wav, &json).unwrap();
        }
        let used = spool.bytes_used().unwrap();
        assert!(used > 2000, "{used}");
        assert_eq!(usage.bytes(), used, "the running count matches a walk");
        spool
            .move_to(
                "d",
                "K-1/20260101T000001_a",
                QueueState::Ready,
                QueueState::Done,
            )
            .unwrap();
        let now = SystemTime::now();
        spool
            .touch("d", QueueState::Done, "K-1/20260101T000001_a", now)
            .unwrap();
        assert_eq!(
            spool
                .expire_done(now + Duration::from_secs(10), Duration::from_secs(60))
                .unwrap(),
            0
        );
        let far = now + Duration::from_secs(10 * 86400);
        assert_eq!(spool.expire_done(far, Duration::from_secs(60)).unwrap(), 1);
        assert_eq!(
            spool.list("d", QueueState::Ready).unwrap().len(),
            1,
            "undelivered never expires"
        );
        assert!(spool.bytes_used().unwrap() < used);
        assert_eq!(
            usage.bytes(),
            spool.bytes_used().unwrap(),
            "expiry subtracts"
        );
    }
}
