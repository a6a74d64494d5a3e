//! What becomes of a closed segment's WAV besides delivery as it is: set
//! aside when none of its audio could be decoded.

use std::path::Path;

use crate::delivery::spool::Spool;

/// An undecodable segment: its WAV (silence) is deleted, its metadata kept
/// in `SPOOL/undecodable/STEM.json` for the operator (never delivered).
pub fn keep_undecodable(spool: &Spool, stem: &str, wav: &Path, json: &[u8], why: &str) {
    let _ = std::fs::remove_file(wav);
    let Some(root) = spool.tmp_dir().parent().map(Path::to_path_buf) else {
        return;
    };
    let path = root.join("undecodable").join(format!("{stem}.json"));
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| std::fs::write(&path, json));
    if let Err(e) = written {
        tracing::error!(error = %e, path = %path.display(), reason = why, "cannot keep the metadata of an undecodable segment");
    }
}
