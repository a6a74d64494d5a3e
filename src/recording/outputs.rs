//! What becomes of a closed segment's WAV besides delivery as it is: set
//! aside when none of its audio could be decoded.

use std::path::Path;

use crate::config::Encoded;
use crate::delivery::spool::Spool;
use crate::recording::metadata::AudioMeta;

/// Encodes a closed segment's WAV into `format` beside it, deletes the WAV,
/// and makes `audio` describe the new file (name, format, hash, size);
/// returns its path. On error the WAV is left as it was.
pub fn encode_segment(
    wav: &Path,
    format: Encoded,
    audio: &mut AudioMeta,
) -> std::io::Result<std::path::PathBuf> {
    let out = wav.with_extension(format.as_str());
    let r = crate::recording::encode::encode(wav, &out, format, audio.channels, audio.sample_rate)
        .and_then(|_| crate::recording::wav::sha256_file(&out));
    match r {
        Ok((bytes, sha256)) => {
            let _ = std::fs::remove_file(wav);
            audio.file = std::path::Path::new(&audio.file)
                .with_extension(format.as_str())
                .to_string_lossy()
                .into_owned();
            audio.format = format.as_str().into();
            audio.sha256 = sha256;
            audio.bytes = bytes;
            Ok(out)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&out);
            Err(e)
        }
    }
}

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
