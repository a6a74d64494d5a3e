//! Recordings cut short by a crash, finished at the next start.
//!
//! A segment is written in `SPOOL/tmp/` and published when it closes. If
//! the process dies first, the WAV is left with placeholder sizes and
//! nothing knows where it belongs. So when a segment opens, its *intent*
//! is written beside it (`<name>.wav.intent.json`): the destination, the
//! file stem and the metadata as far as they are known then. At the next
//! start [`recover_tmp`] repairs each WAV left in `tmp/` (whole frames up
//! to where the disk has them), completes its metadata from the file
//! (length, end, hash; `end_reason: "recovered"`, quality unknown) and
//! publishes it into its destination's queue like any other recording.
//! A WAV whose intent is missing or unreadable is repaired and moved to
//! `SPOOL/unclaimed/` with an error line naming it: never deleted.

use crate::delivery::spool::Spool;
use crate::recording::wav;
use crate::time::Timestamp;
use std::path::{Path, PathBuf};

/// Where the intent of the segment written at `wav` lives.
pub fn intent_path(wav: &Path) -> PathBuf {
    let mut p = wav.as_os_str().to_owned();
    p.push(".intent.json");
    PathBuf::from(p)
}

/// The segment's provisional publication, written when it opens (and, in
/// the live daemon, rewritten about once a second with the quality so
/// far). Written so that a process killed mid-write leaves the previous
/// intent or the new one whole ([`crate::daemon::journal::write_whole`]). Not
/// fsynced: after a power cut the WAV may be kept as unclaimed rather
/// than queued, never lost.
pub fn write_intent(
    wav: &Path,
    destination: &str,
    stem: &str,
    started: Timestamp,
    utc_offset_secs: i32,
    meta: &serde_json::Value,
) {
    let v = serde_json::json!({
        "destination": destination,
        "stem": stem,
        "started_us": started.micros(),
        "utc_offset_secs": utc_offset_secs,
        "metadata": meta,
    });
    let bytes = serde_json::to_vec(&v).unwrap_or_default();
    if let Err(e) = crate::daemon::journal::write_whole(&intent_path(wav), &bytes) {
        tracing::warn!(path = %wav.display(), error = %e, "cannot write the segment's intent; after a crash it would be unclaimed");
    }
}

/// The segment is published (or dropped): the files that would have
/// rescued it after a crash go (its intent and its jitter-window tail).
pub fn remove_intent(wav: &Path) {
    let _ = std::fs::remove_file(intent_path(wav));
    let _ = std::fs::remove_file(crate::recording::tail::tail_path(wav));
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TmpRecovery {
    /// Repaired and published into their destination's queue.
    pub published: Vec<String>,
    /// Repaired and moved to `unclaimed/` (no usable intent).
    pub unclaimed: Vec<PathBuf>,
    /// Could not be repaired (not a WAV we wrote): left where they are.
    pub failed: Vec<PathBuf>,
}

/// Finishes every recording left in `tmp/` by an earlier run. Call it
/// before any recording starts.
pub fn recover_tmp(spool: &Spool) -> std::io::Result<TmpRecovery> {
    let mut out = TmpRecovery::default();
    let tmp = spool.tmp_dir();
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return Ok(out);
    };
    let paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    // A refresh cut by the kill: the intent it was replacing is whole.
    for p in paths
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".intent.json.tmp"))
    {
        let _ = std::fs::remove_file(p);
    }
    let mut wavs: Vec<PathBuf> = paths
        .into_iter()
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "wav"))
        .collect();
    wavs.sort();
    for path in wavs {
        // The live daemon's jitter window first: the audio that had not
        // waited out its 200 ms yet goes at the end of the file.
        match crate::recording::tail::restore_tail(&path) {
            Ok(0) => {}
            Ok(frames) => {
                tracing::info!(path = %path.display(), ms = frames / 8, "jitter window of a recording cut short appended")
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "jitter window of a recording cut short unreadable; the recording ends where its file does")
            }
        }
        let info = match wav::recover(&path) {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "recording left by a crash cannot be repaired; left in place");
                out.failed.push(path);
                continue;
            }
        };
        match publish_recovered(spool, &path, info.duration_ms) {
            Ok(stem) => {
                tracing::warn!(stem = %stem, duration_ms = info.duration_ms, "recording cut short by a crash: repaired and queued");
                remove_intent(&path);
                out.published.push(stem);
            }
            Err(why) => {
                let dir = spool.root().join("unclaimed");
                let dest = dir.join(path.file_name().unwrap_or_default());
                let moved = crate::recording::perms::create_dir_all(&dir)
                    .and_then(|_| std::fs::rename(&path, &dest));
                let _ = std::fs::rename(intent_path(&path), intent_path(&dest));
                match moved {
                    Ok(()) => {
                        tracing::error!(path = %dest.display(), reason = %why, "recording cut short by a crash, repaired but not queued: its destination is unknown");
                        out.unclaimed.push(dest);
                    }
                    Err(e) => {
                        tracing::error!(path = %path.display(), reason = %why, error = %e, "recording cut short by a crash, repaired but not queued; left in tmp/");
                        out.failed.push(path);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Completes the intent's metadata from the repaired file and publishes.
fn publish_recovered(spool: &Spool, wav_path: &Path, duration_ms: u64) -> Result<String, String> {
    let raw = std::fs::read(intent_path(wav_path)).map_err(|e| format!("no intent: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|e| format!("intent does not parse: {e}"))?;
    let (Some(dest), Some(stem)) = (v["destination"].as_str(), v["stem"].as_str()) else {
        return Err("intent lacks destination or stem".into());
    };
    let mut meta = v["metadata"].clone();
    if !meta.is_object() {
        return Err("intent lacks metadata".into());
    }
    let (bytes, sha256) = wav::sha256_file(wav_path).map_err(|e| e.to_string())?;
    let (Some(started), Some(off)) = (v["started_us"].as_i64(), v["utc_offset_secs"].as_i64())
    else {
        return Err("intent lacks the segment start".into());
    };
    let ended = Timestamp(started)
        .add_micros(duration_ms as i64 * 1000)
        .rfc3339(off as i32);
    meta["ended_at"] = ended.clone().into();
    meta["end_reason"] = "recovered".into();
    meta["segment"]["ended_at"] = ended.into();
    meta["audio"]["duration_ms"] = duration_ms.into();
    meta["audio"]["bytes"] = bytes.into();
    meta["audio"]["sha256"] = sha256.into();
    // The quality is what the intent last carried (the live daemon
    // refreshes it about once a second; null when never refreshed). The
    // intent's duration and pauses were provisional: keep the pauses that
    // fall inside what the disk holds.
    if let Some(p) = meta["pauses"].as_array_mut() {
        p.retain(|x| x["from_ms"].as_u64().is_some_and(|f| f < duration_ms));
        for x in p.iter_mut() {
            if x["to_ms"].as_u64().is_some_and(|t| t > duration_ms) {
                x["to_ms"] = duration_ms.into();
            }
        }
    }
    let mut json = serde_json::to_vec_pretty(&meta).map_err(|e| e.to_string())?;
    json.push(b'\n');
    spool
        .publish(dest, stem, wav_path, &json)
        .map_err(|e| e.to_string())?;
    Ok(stem.to_owned())
}
