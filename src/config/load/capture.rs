//! `[capture]`: where and how packets are read.
//!
//! | key | unit | default |
//! |---|---|---|
//! | `interfaces` | interface names (unused by `replay`) | none |
//! | `sip_ports` | ports, 1..65535, at least one | `[5060]` (UDP and TCP) |
//! | `snaplen` | bytes kept per frame, 64..262144 | 2048 |
//! | `promiscuous` | bool | true |
//! | `buffer_bytes` | size, kernel ring per interface, below 4GiB | 64MiB |
//! | `retry_for` | duration an interface that fails is reopened | 5m |
//! | `filter` | "auto", "none" or a libpcap expression | "auto" |
//! | `block_timeout` | duration; above zero: TPACKET_V3 blocks | 0 |
//! | `threads` | capture threads per interface, 1..64 | 1 |
//! | `thread_queue` | frames per thread and interface, 1024..1048576 | 16384 |
//!
//! `hep_listen`, `hep_capture_ids` and `hep_auth_key` are read by
//! `sources.rs` ([`HepSource`](crate::config::HepSource)).

use super::{ConfigError, Ctx, IntOrStr, S, sources};
use crate::config::Capture;
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCapture {
    interfaces: S<Vec<Spanned<String>>>,
    sip_ports: S<Vec<Spanned<i64>>>,
    snaplen: S<i64>,
    promiscuous: S<bool>,
    buffer_bytes: S<IntOrStr>,
    retry_for: S<String>,
    hep_listen: S<Vec<Spanned<String>>>,
    hep_capture_ids: S<Vec<Spanned<i64>>>,
    hep_auth_key: S<String>,
    filter: S<String>,
    block_timeout: S<String>,
    threads: S<i64>,
    thread_queue: S<i64>,
}

pub(super) fn capture(cx: &Ctx, rc: &RawCapture) -> Result<Capture, ConfigError> {
    let sip_ports = sip_ports(cx, &rc.sip_ports)?;
    let interfaces = interfaces(cx, &rc.interfaces)?;
    let buffer_bytes = cx.size("capture.buffer_bytes", &rc.buffer_bytes, 64 << 20)?;
    let filter = capture_filter(cx, &rc.filter, &sip_ports)?;
    Ok(Capture {
        interfaces,
        sip_ports,
        snaplen: cx.int("capture.snaplen", &rc.snaplen, 2048, 64..=262_144)? as u32,
        promiscuous: rc
            .promiscuous
            .as_ref()
            .map(|b| *b.get_ref())
            .unwrap_or(true),
        buffer_bytes: u32::try_from(buffer_bytes).map_err(|_| {
            cx.err(
                rc.buffer_bytes.as_ref().map(|s| s.span()).unwrap_or(0..0),
                "capture.buffer_bytes",
                "must be below 4GiB",
            )
        })?,
        retry_for: cx.duration("capture.retry_for", &rc.retry_for, Duration::from_secs(300))?,
        hep: sources::hep_source(cx, &rc.hep_listen, &rc.hep_capture_ids, &rc.hep_auth_key)?,
        filter,
        block_timeout: cx.duration("capture.block_timeout", &rc.block_timeout, Duration::ZERO)?,
        threads: cx.int("capture.threads", &rc.threads, 1, 1..=64)? as usize,
        thread_queue: cx.int(
            "capture.thread_queue",
            &rc.thread_queue,
            16_384,
            1_024..=1_048_576,
        )? as usize,
    })
}

/// `capture.sip_ports`: 5060 when absent; an empty list is an error.
fn sip_ports(cx: &Ctx, v: &S<Vec<Spanned<i64>>>) -> Result<Vec<u16>, ConfigError> {
    let Some(list) = v else { return Ok(vec![5060]) };
    if list.get_ref().is_empty() {
        return Err(cx.err(
            list.span(),
            "capture.sip_ports",
            "must list at least one port",
        ));
    }
    let mut sip_ports = Vec::new();
    for p in list.get_ref() {
        let n = u16::try_from(*p.get_ref())
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                cx.err(
                    p.span(),
                    "capture.sip_ports",
                    format!("must be 1..65535, got {}", p.get_ref()),
                )
            })?;
        sip_ports.push(n);
    }
    Ok(sip_ports)
}

fn interfaces(cx: &Ctx, v: &S<Vec<Spanned<String>>>) -> Result<Vec<String>, ConfigError> {
    let mut interfaces = Vec::new();
    for i in v.iter().flat_map(|l| l.get_ref()) {
        if i.get_ref().trim().is_empty() {
            return Err(cx.err(i.span(), "capture.interfaces", "empty interface name"));
        }
        interfaces.push(i.get_ref().clone());
    }
    Ok(interfaces)
}

/// `capture.filter`: "auto" (the default: what callrec decodes), "none",
/// or a libpcap expression, compiled here so that a typo is an error with
/// its line and libpcap's reason, not a capture that silently keeps nothing.
fn capture_filter(
    cx: &Ctx<'_>,
    v: &S<String>,
    sip_ports: &[u16],
) -> Result<Option<String>, ConfigError> {
    let expr = match v.as_ref().map(|s| s.get_ref().trim()) {
        None | Some("auto") => return Ok(Some(Capture::auto_filter(sip_ports))),
        Some("none") => return Ok(None),
        Some(e) => e.to_owned(),
    };
    let span = v.as_ref().map(|s| s.span()).unwrap_or(0..0);
    let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET)
        .map_err(|e| cx.err(span.clone(), "capture.filter", e.to_string()))?;
    dead.compile(&expr, true).map_err(|e| {
        cx.err(
            span,
            "capture.filter",
            format!("not a libpcap filter expression: {e}"),
        )
    })?;
    Ok(Some(expr))
}
