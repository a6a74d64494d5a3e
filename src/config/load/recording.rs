//! `[recording]`: the spool, the file format and the call timers.
//!
//! | key | unit | default |
//! |---|---|---|
//! | `spool_dir` | path, relative to the configuration file | `/var/spool/callrec` |
//! | `format` | pcm16, ulaw, alaw (WAV), mp3, opus, flac | pcm16 |
//! | `max_active_calls` | calls, 1..10000000 | 20000 |
//! | `shards` | media workers, 0..1024; 0 = one per core less the capture thread | 0 |
//! | `rtp_timeout` | duration, above 0 | 60s |
//! | `max_call_length` | duration, above 0 | 4h |
//! | `setup_timeout` | duration, above 0 | 180s |
//! | `spool_warn_bytes` | size; 0 = none; at most `spool_max_bytes` when both are set | 0 |
//! | `spool_max_bytes` | size; 0 = no limit | 0 |
//! | `file_mode` | octal string | "0640" |
//! | `group` | a group that exists on this host | the process's |

use super::{ConfigError, Ctx, IntOrStr, S};
use crate::config::{AudioFormat, Encoded, Recording};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRecording {
    spool_dir: S<String>,
    format: S<String>,
    max_active_calls: S<i64>,
    shards: S<i64>,
    rtp_timeout: S<String>,
    max_call_length: S<String>,
    setup_timeout: S<String>,
    spool_warn_bytes: S<IntOrStr>,
    spool_max_bytes: S<IntOrStr>,
    file_mode: S<String>,
    group: S<String>,
}

pub(super) fn recording(cx: &Ctx, rr: &RawRecording) -> Result<Recording, ConfigError> {
    let (spool_warn_bytes, spool_max_bytes) = spool_limits(cx, rr)?;
    let (format, encoded) = format(cx, &rr.format)?;
    let recording = Recording {
        spool_dir: spool_dir(cx, &rr.spool_dir)?,
        format,
        encoded,
        max_active_calls: cx.int(
            "recording.max_active_calls",
            &rr.max_active_calls,
            20_000,
            1..=10_000_000,
        )? as usize,
        shards: cx.int("recording.shards", &rr.shards, 0, 0..=1024)? as usize,
        rtp_timeout: cx.duration(
            "recording.rtp_timeout",
            &rr.rtp_timeout,
            Duration::from_secs(60),
        )?,
        max_call_length: cx.duration(
            "recording.max_call_length",
            &rr.max_call_length,
            Duration::from_secs(4 * 3600),
        )?,
        setup_timeout: cx.duration(
            "recording.setup_timeout",
            &rr.setup_timeout,
            Duration::from_secs(180),
        )?,
        spool_warn_bytes,
        spool_max_bytes,
        file_mode: file_mode(cx, &rr.file_mode)?,
        group: group(cx, &rr.group)?,
    };
    timers_above_zero(cx, rr, &recording)?;
    Ok(recording)
}

/// `spool_warn_bytes` and `spool_max_bytes`; a warning above the limit
/// would never be seen before new calls go unrecorded.
fn spool_limits(cx: &Ctx, rr: &RawRecording) -> Result<(u64, u64), ConfigError> {
    let spool_warn_bytes = cx.size("recording.spool_warn_bytes", &rr.spool_warn_bytes, 0)?;
    let spool_max_bytes = cx.size("recording.spool_max_bytes", &rr.spool_max_bytes, 0)?;
    if spool_warn_bytes > 0 && spool_max_bytes > 0 && spool_warn_bytes > spool_max_bytes {
        let span = rr
            .spool_warn_bytes
            .as_ref()
            .map(|s| s.span())
            .unwrap_or(0..0);
        return Err(cx.err(
            span,
            "recording.spool_warn_bytes",
            "must not exceed recording.spool_max_bytes",
        ));
    }
    Ok((spool_warn_bytes, spool_max_bytes))
}

/// `recording.format`: WAV encodings, or a compressed format over a PCM16
/// intermediate.
fn format(cx: &Ctx, v: &S<String>) -> Result<(AudioFormat, Option<Encoded>), ConfigError> {
    cx.choice(
        "recording.format",
        v,
        (AudioFormat::Pcm16, None),
        &[
            ("pcm16", (AudioFormat::Pcm16, None)),
            ("ulaw", (AudioFormat::Ulaw, None)),
            ("alaw", (AudioFormat::Alaw, None)),
            ("mp3", (AudioFormat::Pcm16, Some(Encoded::Mp3))),
            ("opus", (AudioFormat::Pcm16, Some(Encoded::Opus))),
            ("flac", (AudioFormat::Pcm16, Some(Encoded::Flac))),
        ],
    )
}

fn spool_dir(cx: &Ctx, v: &S<String>) -> Result<PathBuf, ConfigError> {
    match v {
        None => Ok("/var/spool/callrec".into()),
        Some(s) if s.get_ref().trim().is_empty() => {
            Err(cx.err(s.span(), "recording.spool_dir", "empty path"))
        }
        Some(s) => Ok(cx.resolve(s.get_ref())),
    }
}

/// A zero timer would end every call, or forget every INVITE, at once.
fn timers_above_zero(cx: &Ctx, rr: &RawRecording, r: &Recording) -> Result<(), ConfigError> {
    for (key, v, d) in [
        ("recording.rtp_timeout", &rr.rtp_timeout, r.rtp_timeout),
        (
            "recording.max_call_length",
            &rr.max_call_length,
            r.max_call_length,
        ),
        (
            "recording.setup_timeout",
            &rr.setup_timeout,
            r.setup_timeout,
        ),
    ] {
        if d.is_zero() {
            return Err(cx.err(
                v.as_ref().map(|s| s.span()).unwrap_or(0..0),
                key,
                "must be more than 0",
            ));
        }
    }
    Ok(())
}

/// `recording.file_mode`: octal permission bits as a string ("0640").
/// Files must stay readable and writable by the service itself, and never
/// writable or readable by others: recordings are personal data.
fn file_mode(cx: &Ctx, v: &S<String>) -> Result<u32, ConfigError> {
    let Some(s) = v else { return Ok(0o640) };
    let text = s.get_ref().trim();
    let mode = u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            cx.err(
                s.span(),
                "recording.file_mode",
                format!("{text:?} is not an octal mode like \"0640\""),
            )
        })?;
    if mode & 0o600 != 0o600 || mode & 0o007 != 0 || mode & 0o111 != 0 {
        return Err(cx.err(
            s.span(),
            "recording.file_mode",
            format!(
                "{text}: the owner must read and write, nobody execute, others nothing (e.g. 0640, 0660, 0600)"
            ),
        ));
    }
    Ok(mode)
}

/// `recording.group`: a group that exists on this host (name and id).
fn group(cx: &Ctx, v: &S<String>) -> Result<Option<(String, u32)>, ConfigError> {
    let Some(s) = v else { return Ok(None) };
    let name = s.get_ref().trim();
    match crate::recording::perms::group_id(name) {
        Ok(Some(gid)) => Ok(Some((name.to_owned(), gid))),
        Ok(None) => Err(cx.err(
            s.span(),
            "recording.group",
            format!("no group {name:?} on this host (see /etc/group)"),
        )),
        Err(e) => Err(cx.err(
            s.span(),
            "recording.group",
            format!("cannot look up group {name:?}: {e}"),
        )),
    }
}
