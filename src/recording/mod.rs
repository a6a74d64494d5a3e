//! Recording: what a shard worker writes for each call segment.
//!
//! [`wav`] streams samples into a WAV file with bounded memory, patches and
//! hashes it at the end, and repairs files a crash cut short; [`recorder`]
//! is the per-call, per-segment object that ties the media path (jitter
//! buffers, DTMF, mixer) to a WAV file; [`metadata`] is the JSON beside it;
//! [`perms`] gives every file and folder written its mode and group.

pub mod encode;
pub mod formats;
pub mod metadata;
pub mod outputs;
pub mod perms;
pub mod recorder;
pub mod tail;
pub mod undecodable;
pub mod wav;
