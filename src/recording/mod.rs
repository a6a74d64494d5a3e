//! Recordings: WAV files, segments and their metadata.

pub mod metadata;
