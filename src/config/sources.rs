//! `[capture] hep_listen`, `hep_capture_ids`, `hep_auth_key` and the
//! `[forward]` section (issue 17: many capture points), parsed with the
//! loader's context so errors name the file, line and key.

use super::{Ctx, IntOrStr, S};
use crate::config::{Forward, ForwardTransport, HepSource};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use toml::Spanned;

/// One address or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForward {
    to: S<OneOrMany>,
    transport: S<String>,
    capture_id: S<i64>,
    auth_key: S<String>,
    buffer_dir: S<String>,
    buffer_bytes: S<IntOrStr>,
}

fn addr(cx: &Ctx, key: &str, s: &Spanned<String>) -> Result<SocketAddr, super::ConfigError> {
    s.get_ref().parse().map_err(|_| {
        cx.err(
            s.span(),
            key,
            format!(
                "expected ADDRESS:PORT like 0.0.0.0:9060, got {:?}",
                s.get_ref()
            ),
        )
    })
}

fn key(cx: &Ctx, name: &str, k: &S<String>) -> Result<Option<String>, super::ConfigError> {
    match k {
        Some(s) if s.get_ref().is_empty() || s.get_ref().len() > 255 => {
            Err(cx.err(s.span(), name, "must be 1 to 255 characters"))
        }
        s => Ok(s.as_ref().map(|s| s.get_ref().clone())),
    }
}

/// The HEP keys of `[capture]`: `hep_listen`, `hep_capture_ids`, `hep_auth_key`.
pub(super) fn hep_source(
    cx: &Ctx,
    hep_listen: &S<Vec<Spanned<String>>>,
    hep_capture_ids: &S<Vec<Spanned<i64>>>,
    hep_auth_key: &S<String>,
) -> Result<HepSource, super::ConfigError> {
    let mut listen = Vec::new();
    for s in hep_listen.iter().flat_map(|l| l.get_ref()) {
        listen.push(addr(cx, "capture.hep_listen", s)?);
    }
    let mut capture_ids = Vec::new();
    for i in hep_capture_ids.iter().flat_map(|l| l.get_ref()) {
        let n = u32::try_from(*i.get_ref()).map_err(|_| {
            cx.err(
                i.span(),
                "capture.hep_capture_ids",
                format!("must be 0..4294967295, got {}", i.get_ref()),
            )
        })?;
        capture_ids.push(n);
    }
    Ok(HepSource {
        listen,
        capture_ids,
        auth_key: key(cx, "capture.hep_auth_key", hep_auth_key)?,
    })
}

/// `[forward]`; `None` when the section is absent or has no `to`.
pub(super) fn forward(cx: &Ctx, r: &RawForward) -> Result<Option<Forward>, super::ConfigError> {
    let Some(raw_to) = &r.to else { return Ok(None) };
    let to = match raw_to.get_ref() {
        OneOrMany::One(a) => vec![addr(
            cx,
            "forward.to",
            &Spanned::new(raw_to.span(), a.clone()),
        )?],
        OneOrMany::Many(l) => l
            .iter()
            .map(|a| addr(cx, "forward.to", &Spanned::new(raw_to.span(), a.clone())))
            .collect::<Result<_, _>>()?,
    };
    if to.is_empty() || to.len() > 64 {
        return Err(cx.err(raw_to.span(), "forward.to", "must name 1 to 64 appliances"));
    }
    let transport = cx.choice(
        "forward.transport",
        &r.transport,
        ForwardTransport::Tcp,
        &[
            ("tcp", ForwardTransport::Tcp),
            ("udp", ForwardTransport::Udp),
        ],
    )?;
    let capture_id = cx.int(
        "forward.capture_id",
        &r.capture_id,
        1,
        0..=i64::from(u32::MAX),
    )? as u32;
    let buffer_bytes = cx.size("forward.buffer_bytes", &r.buffer_bytes, 1 << 30)?;
    if buffer_bytes < 1 << 20 {
        let span = r.buffer_bytes.as_ref().map(|s| s.span()).unwrap_or(0..0);
        return Err(cx.err(span, "forward.buffer_bytes", "must be at least 1MiB"));
    }
    let buffer_dir = match &r.buffer_dir {
        Some(d) => cx.resolve(d.get_ref()),
        None => PathBuf::from("/var/spool/callrec-forward"),
    };
    Ok(Some(Forward {
        to,
        transport,
        capture_id,
        auth_key: key(cx, "forward.auth_key", &r.auth_key)?,
        buffer_dir,
        buffer_bytes,
    }))
}
