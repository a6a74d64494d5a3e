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

/// The segment's provisional publication, written when it opens. Not
/// fsynced: a crash soon after the open loses little audio, and the WAV is
/// then kept as unclaimed rather than lost.
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
    if let Err(e) = crate::recording::perms::write(&intent_path(wav), &bytes) {
        tracing::warn!(path = %wav.display(), error = %e, "cannot write the segment's intent; after a crash it would be unclaimed");
    }
}

pub fn remove_intent(wav: &Path) {
    let _ = std::fs::remove_file(intent_path(wav));
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
    let mut wavs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "wav"))
        .collect();
    wavs.sort();
    for path in wavs {
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
    // What the jitter buffers had measured died with the process.
    meta["quality"]["subscriber"] = serde_json::Value::Null;
    meta["quality"]["remote"] = serde_json::Value::Null;
    let mut json = serde_json::to_vec_pretty(&meta).map_err(|e| e.to_string())?;
    json.push(b'\n');
    spool
        .publish(dest, stem, wav_path, &json)
        .map_err(|e| e.to_string())?;
    Ok(stem.to_owned())
}
