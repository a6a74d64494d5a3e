//! Media: the per-leg, Sans-IO audio path a shard worker runs for each call.
//!
//! [`rtp`] parses headers without copying, [`codec`] turns G.711 bytes into
//! samples by table lookup, [`jitter`] places each leg's packets on the
//! recording timeline (sequence and timestamp unwrapping, duplicates, late
//! packets, SSRC changes and timestamp jumps re-anchored by capture time),
//! [`dtmf`] extracts RFC 4733 digits, [`pause`] turns the subscriber's keys
//! and the control interface into pause and resume decisions (on the
//! capture thread), [`quality`] keeps the per-leg
//! statistics and [`mixer`] combines both legs into mono or stereo frames.
//! Nothing here reads a clock: time is the packet's capture time.

pub mod codec;
pub mod codecs;
pub mod dtmf;
pub mod jitter;
pub mod mixer;
pub mod pause;
pub mod quality;
pub mod rtp;
pub mod srtp;
