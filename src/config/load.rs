//! TOML text to the validated [`Config`](super::Config).
//!
//! Every value is read with its byte span (`toml::Spanned`), so an error
//! names the file, the 1-based line, the key as a path (`contract[1].guidance`)
//! and the reason: `conf/x.toml:17: contract[1].guidance: must be 1..5, got 7`.
//! Errors found by the TOML parser itself (syntax, wrong types, unknown keys)
//! are mapped to the same form by locating their span in the text.
//!
//! Unknown keys are errors: a typo must not silently change behaviour.
//! Every key has a default that works except the contract and destination
//! fields that identify something. Relative paths (`spool_dir`, `announce.dir`,
//! `identity`) are resolved against the configuration file's directory.

use super::*;
use crate::calls::numbering;
use serde::Deserialize;
use std::collections::HashMap;
use toml::Spanned;

mod ctx;
mod units;
use ctx::{Ctx, IntOrStr, S, safe_name};
pub use units::{parse_duration, parse_rate};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `line` is 1-based; 0 when the error is not tied to one line.
    #[error("{}:{line}: {key}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        reason: String,
    },
}

impl ConfigError {
    /// The 1-based line, when the error has one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } if *line > 0 => Some(*line),
            _ => None,
        }
    }
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, path)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    general: RawGeneral,
    #[serde(default)]
    capture: RawCapture,
    #[serde(default)]
    recording: RawRecording,
    #[serde(default)]
    announce: RawAnnounce,
    #[serde(default)]
    overload: RawOverload,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    destination: Vec<Spanned<RawDestination>>,
    #[serde(default)]
    contract: Vec<Spanned<RawContract>>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    history: history_cfg::RawHistory,
    #[serde(default)]
    hep: history_cfg::RawHep,
    #[serde(default)]
    api: history_cfg::RawApi,
    #[serde(default)]
    forward: sources::RawForward,
}

#[path = "history.rs"]
mod history_cfg;
#[path = "sources.rs"]
mod sources;
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGeneral {
    timezone: S<String>,
}
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCapture {
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
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRecording {
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
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAnnounce {
    mode: S<String>,
    interface: S<String>,
    dir: S<String>,
    queue: S<i64>,
    mark: S<i64>,
    nft_table: S<String>,
    nft_setup: S<bool>,
}
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOverload {
    priority_numbers: S<Vec<Spanned<String>>>,
}
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    allowed_networks: S<Vec<Spanned<String>>>,
    retry_initial: S<String>,
    retry_max: S<String>,
    hold_after: S<String>,
    keep_delivered: S<String>,
    connect_timeout: S<String>,
    keepalive: S<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    name: Spanned<String>,
    url: Spanned<String>,
    identity: Spanned<String>,
    host_key: Spanned<String>,
    max_rate: S<IntOrStr>,
    connections: S<i64>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContract {
    id: Spanned<String>,
    service: Spanned<String>,
    numbers: Spanned<Vec<Spanned<String>>>,
    guidance: Spanned<i64>,
    channels: S<String>,
    sample_rate: S<String>,
    segments: S<String>,
    pause_dtmf: S<String>,
    resume_dtmf: S<String>,
    destination: Spanned<String>,
}
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    fragment_bytes: S<IntOrStr>,
    fragment_timeout: S<String>,
    tcp_stream_bytes: S<IntOrStr>,
    tcp_streams: S<i64>,
    tcp_idle_timeout: S<String>,
    max_dialogs: S<i64>,
    sip_message_bytes: S<IntOrStr>,
    early_dialogs: S<i64>,
    early_dialogs_per_source: S<i64>,
    clock_tolerance: S<String>,
}
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    control_socket: S<String>,
    metrics_listen: S<String>,
}

fn valid_dtmf(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 8
        && s.chars()
            .all(|c| matches!(c, '0'..='9' | '*' | '#' | 'A'..='D'))
}

/// Standard base64 with padding (RFC 4648 section 4), for the pinned host
/// key blob (also used by the SFTP client to compare it with the
/// server's key). The `base64` crate's strict decoder: no whitespace, no
/// missing padding.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    if s.is_empty() {
        return None;
    }
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// `TYPE BASE64 [comment]`, where the blob's first field repeats TYPE (RFC 4253 6.6).
fn check_host_key(s: &str) -> Result<(), String> {
    let mut parts = s.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err(
            "expected \"TYPE BASE64\" as in known_hosts, e.g. \"ssh-ed25519 AAAAC3Nz...\"".into(),
        );
    };
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "rsa-sha2-256",
        "rsa-sha2-512",
    ];
    if !TYPES.contains(&kind) {
        return Err(format!(
            "unknown key type {kind:?}, expected one of {}",
            TYPES.join(", ")
        ));
    }
    let raw = base64_decode(blob).ok_or("the key is not valid base64")?;
    let inner = raw
        .get(..4)
        .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize);
    let named = inner.and_then(|l| raw.get(4..4 + l));
    if named != Some(kind.as_bytes())
        && !(kind.starts_with("rsa-sha2") && named == Some(b"ssh-rsa"))
    {
        return Err(format!("the key blob is not a {kind} key"));
    }
    Ok(())
}

/// `sftp://user@IP[:port]/dir` -> (user, host, port, dir).
fn parse_sftp_url(url: &str) -> Result<(String, std::net::IpAddr, u16, String), String> {
    let rest = url
        .strip_prefix("sftp://")
        .ok_or("expected sftp://user@HOST:PORT/dir")?;
    let (user, rest) = rest
        .split_once('@')
        .ok_or("no user (expected sftp://user@HOST:PORT/dir)")?;
    if user.is_empty()
        || !user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(format!("bad user {user:?}"));
    }
    let (hostport, dir) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, after) = h.split_once(']').ok_or("unclosed [ in IPv6 host")?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let host: std::net::IpAddr = host.parse().map_err(|_| {
        format!("host {host:?} must be an IP address (the dedicated line has no DNS)")
    })?;
    let port = match port {
        None => 22,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("bad port {p:?}"))?,
    };
    if dir.contains("..") {
        return Err("the remote directory must not contain \"..\"".into());
    }
    // The root directory is "/", never "".
    let dir = match dir.trim_end_matches('/') {
        "" => "/".to_string(),
        d => d.to_string(),
    };
    Ok((user.to_string(), host, port, dir))
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

pub fn load_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let cx = Ctx { path, text };
    let raw: Raw = toml::from_str(text).map_err(|e| cx.from_toml(e))?;

    let general = General {
        utc_offset_secs: match &raw.general.timezone {
            None => 9 * 3600,
            Some(s) => crate::time::parse_offset(s.get_ref()).ok_or_else(|| {
                cx.err(
                    s.span(),
                    "general.timezone",
                    format!("expected an offset like +09:00, got {:?}", s.get_ref()),
                )
            })?,
        },
    };

    // [capture]
    let rc = &raw.capture;
    let mut sip_ports = Vec::new();
    match &rc.sip_ports {
        None => sip_ports.push(5060),
        Some(list) => {
            if list.get_ref().is_empty() {
                return Err(cx.err(
                    list.span(),
                    "capture.sip_ports",
                    "must list at least one port",
                ));
            }
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
        }
    }
    let mut interfaces = Vec::new();
    for i in rc.interfaces.iter().flat_map(|l| l.get_ref()) {
        if i.get_ref().trim().is_empty() {
            return Err(cx.err(i.span(), "capture.interfaces", "empty interface name"));
        }
        interfaces.push(i.get_ref().clone());
    }
    let buffer_bytes = cx.size("capture.buffer_bytes", &rc.buffer_bytes, 64 << 20)?;
    let filter = capture_filter(&cx, &rc.filter, &sip_ports)?;
    let capture = Capture {
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
        hep: sources::hep_source(&cx, &rc.hep_listen, &rc.hep_capture_ids, &rc.hep_auth_key)?,
        filter,
        block_timeout: cx.duration("capture.block_timeout", &rc.block_timeout, Duration::ZERO)?,
        threads: cx.int("capture.threads", &rc.threads, 1, 1..=64)? as usize,
        thread_queue: cx.int(
            "capture.thread_queue",
            &rc.thread_queue,
            16_384,
            1_024..=1_048_576,
        )? as usize,
    };

    // [recording]
    let rr = &raw.recording;
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
    // WAV encodings, or a compressed format over a PCM16 intermediate.
    let output = cx.choice(
        "recording.format",
        &rr.format,
        (AudioFormat::Pcm16, None),
        &[
            ("pcm16", (AudioFormat::Pcm16, None)),
            ("ulaw", (AudioFormat::Ulaw, None)),
            ("alaw", (AudioFormat::Alaw, None)),
            ("mp3", (AudioFormat::Pcm16, Some(Encoded::Mp3))),
            ("opus", (AudioFormat::Pcm16, Some(Encoded::Opus))),
            ("flac", (AudioFormat::Pcm16, Some(Encoded::Flac))),
        ],
    )?;
    let recording = Recording {
        spool_dir: match &rr.spool_dir {
            None => "/var/spool/callrec".into(),
            Some(s) if s.get_ref().trim().is_empty() => {
                return Err(cx.err(s.span(), "recording.spool_dir", "empty path"));
            }
            Some(s) => cx.resolve(s.get_ref()),
        },
        format: output.0,
        encoded: output.1,
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
        file_mode: file_mode(&cx, &rr.file_mode)?,
        group: group(&cx, &rr.group)?,
    };
    for (key, v, d) in [
        (
            "recording.rtp_timeout",
            &rr.rtp_timeout,
            recording.rtp_timeout,
        ),
        (
            "recording.max_call_length",
            &rr.max_call_length,
            recording.max_call_length,
        ),
        (
            "recording.setup_timeout",
            &rr.setup_timeout,
            recording.setup_timeout,
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

    // [announce]
    let ra = &raw.announce;
    let mode = cx.choice(
        "announce.mode",
        &ra.mode,
        AnnounceMode::Off,
        &[
            ("inline", AnnounceMode::Inline),
            ("inject", AnnounceMode::Inject),
            ("udp", AnnounceMode::Udp),
            ("pcap", AnnounceMode::Pcap),
            ("off", AnnounceMode::Off),
        ],
    )?;
    if mode == AnnounceMode::Inject && ra.interface.is_none() {
        let span = ra.mode.as_ref().map(|s| s.span()).unwrap_or(0..0);
        return Err(cx.err(
            span,
            "announce.interface",
            "required when announce.mode is \"inject\"",
        ));
    }
    let nft_table = ra
        .nft_table
        .as_ref()
        .map_or_else(|| "callrec".to_owned(), |s| s.get_ref().clone());
    if let Some(s) = &ra.nft_table
        && (nft_table.is_empty()
            || !nft_table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(cx.err(s.span(), "announce.nft_table", "letters, digits and _ only"));
    }
    let mark = cx.int("announce.mark", &ra.mark, 0x0014_0000, 1..=0xffff_ffff)? as u32;
    let inline = crate::announce::inline::InlineConfig {
        queue: cx.int("announce.queue", &ra.queue, 14, 0..=65535)? as u16,
        mark,
        nft_table,
        setup: ra.nft_setup.as_ref().is_none_or(|b| *b.get_ref()),
    };
    let announce = Announce {
        mode,
        inline,
        interface: ra.interface.as_ref().map(|s| s.get_ref().clone()),
        dir: match &ra.dir {
            None => "/usr/share/callrec/guidance-audio".into(),
            Some(s) => cx.resolve(s.get_ref()),
        },
    };

    // [overload]
    let mut priority_numbers = Vec::new();
    for n in raw
        .overload
        .priority_numbers
        .iter()
        .flat_map(|l| l.get_ref())
    {
        let norm = numbering::normalize(n.get_ref())
            .filter(|x| !x.contains(['#', '*']))
            .ok_or_else(|| {
                cx.err(
                    n.span(),
                    "overload.priority_numbers",
                    format!("{:?} is not a telephone number", n.get_ref()),
                )
            })?;
        priority_numbers.push(norm);
    }

    // [delivery]
    let rd = &raw.delivery;
    let mut allowed_networks = Vec::new();
    for n in rd.allowed_networks.iter().flat_map(|l| l.get_ref()) {
        allowed_networks.push(
            IpNet::parse(n.get_ref())
                .map_err(|r| cx.err(n.span(), "delivery.allowed_networks", r))?,
        );
    }
    let delivery = Delivery {
        allowed_networks,
        retry_initial: cx.duration(
            "delivery.retry_initial",
            &rd.retry_initial,
            Duration::from_secs(5),
        )?,
        retry_max: cx.duration(
            "delivery.retry_max",
            &rd.retry_max,
            Duration::from_secs(600),
        )?,
        hold_after: cx.duration(
            "delivery.hold_after",
            &rd.hold_after,
            Duration::from_secs(7 * 86400),
        )?,
        keep_delivered: cx.duration(
            "delivery.keep_delivered",
            &rd.keep_delivered,
            Duration::from_secs(86400),
        )?,
        connect_timeout: cx.duration(
            "delivery.connect_timeout",
            &rd.connect_timeout,
            Duration::from_secs(10),
        )?,
        keepalive: cx.duration("delivery.keepalive", &rd.keepalive, Duration::from_secs(5))?,
    };
    if delivery.retry_initial.is_zero() {
        let span = rd.retry_initial.as_ref().map(|s| s.span()).unwrap_or(0..0);
        return Err(cx.err(span, "delivery.retry_initial", "must be more than 0"));
    }
    if delivery.retry_max < delivery.retry_initial {
        let span = rd
            .retry_max
            .as_ref()
            .or(rd.retry_initial.as_ref())
            .map(|s| s.span())
            .unwrap_or(0..0);
        return Err(cx.err(
            span,
            "delivery.retry_max",
            "must not be less than delivery.retry_initial",
        ));
    }
    if delivery.connect_timeout.is_zero() {
        let span = rd
            .connect_timeout
            .as_ref()
            .map(|s| s.span())
            .unwrap_or(0..0);
        return Err(cx.err(span, "delivery.connect_timeout", "must be more than 0"));
    }

    // [[destination]]
    let mut destinations: Vec<Destination> = Vec::new();
    for (i, d) in raw.destination.iter().enumerate() {
        let k = |f: &str| format!("destination[{i}].{f}");
        let d = d.get_ref();
        let name = d.name.get_ref();
        if !safe_name(name) {
            return Err(cx.err(
                d.name.span(),
                k("name"),
                format!("{name:?}: use only A-Z a-z 0-9 . _ - (at most 64)"),
            ));
        }
        if destinations.iter().any(|x| &x.name == name) {
            return Err(cx.err(
                d.name.span(),
                k("name"),
                format!("destination {name:?} is defined twice"),
            ));
        }
        let (user, host, port, remote_dir) =
            parse_sftp_url(d.url.get_ref()).map_err(|r| cx.err(d.url.span(), k("url"), r))?;
        if !delivery.allowed_networks.iter().any(|n| n.contains(host)) {
            let nets: Vec<String> = delivery
                .allowed_networks
                .iter()
                .map(|n| n.to_string())
                .collect();
            return Err(cx.err(
                d.url.span(),
                k("url"),
                format!(
                    "destination {name:?} refused: {host} is outside delivery.allowed_networks [{}]",
                    nets.join(", ")
                ),
            ));
        }
        if d.identity.get_ref().trim().is_empty() {
            return Err(cx.err(
                d.identity.span(),
                k("identity"),
                "a private key path is required",
            ));
        }
        check_host_key(d.host_key.get_ref())
            .map_err(|r| cx.err(d.host_key.span(), k("host_key"), r))?;
        let max_rate = match &d.max_rate {
            None => None,
            Some(s) => {
                let v = match s.get_ref() {
                    IntOrStr::Int(n) => u64::try_from(*n).ok(),
                    IntOrStr::Str(t) if t == "unlimited" => Some(0),
                    IntOrStr::Str(t) => parse_rate(t),
                };
                match v {
                    None => {
                        return Err(cx.err(
                            s.span(),
                            k("max_rate"),
                            format!("expected a rate like 20Mbit, 500kbit or 2MB (per second), got {:?}", s.get_ref()),
                        ));
                    }
                    Some(0) => None,
                    Some(r) => Some(r),
                }
            }
        };
        destinations.push(Destination {
            name: name.clone(),
            user,
            host,
            port,
            remote_dir,
            identity: cx.resolve(d.identity.get_ref()),
            host_key: d
                .host_key
                .get_ref()
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
            max_rate,
            connections: cx.int(&k("connections"), &d.connections, 4, 1..=16)? as usize,
        });
    }

    // [[contract]]
    let mut contracts: Vec<Contract> = Vec::new();
    let mut owner: HashMap<String, String> = HashMap::new();
    for (i, c) in raw.contract.iter().enumerate() {
        let k = |f: &str| format!("contract[{i}].{f}");
        let c = c.get_ref();
        let id = c.id.get_ref();
        if !safe_name(id) {
            return Err(cx.err(
                c.id.span(),
                k("id"),
                format!(
                    "{id:?}: use only A-Z a-z 0-9 . _ - (at most 64); it becomes a directory name"
                ),
            ));
        }
        if contracts.iter().any(|x| &x.id == id) {
            return Err(cx.err(
                c.id.span(),
                k("id"),
                format!("contract {id:?} is defined twice"),
            ));
        }
        let service = cx.choice(
            &k("service"),
            &Some(c.service.clone()),
            Service::Mobile,
            &[("mobile", Service::Mobile), ("fixed", Service::Fixed)],
        )?;
        if c.numbers.get_ref().is_empty() {
            return Err(cx.err(
                c.numbers.span(),
                k("numbers"),
                "a contract needs at least one number",
            ));
        }
        let mut numbers = Vec::new();
        for n in c.numbers.get_ref() {
            let norm = numbering::normalize(n.get_ref()).ok_or_else(|| {
                cx.err(
                    n.span(),
                    k("numbers"),
                    format!("{:?} is not a telephone number", n.get_ref()),
                )
            })?;
            let class = numbering::classify(&norm);
            if !class.is_subscriber_number() {
                return Err(cx.err(
                    n.span(),
                    k("numbers"),
                    format!("{norm} is a {} number; a contract number must be 0ABJ, 050, 070, 080 or 090", class.as_str()),
                ));
            }
            if let Some(other) = owner.get(&norm) {
                let why = if other == id {
                    format!("{norm} is listed twice")
                } else {
                    format!("{norm} already belongs to contract {other:?}")
                };
                return Err(cx.err(n.span(), k("numbers"), why));
            }
            owner.insert(norm.clone(), id.clone());
            numbers.push(norm);
        }
        let g = *c.guidance.get_ref();
        if !(1..=5).contains(&g) {
            return Err(cx.err(
                c.guidance.span(),
                k("guidance"),
                format!("must be 1..5, got {g}"),
            ));
        }
        let channels = cx.choice(
            &k("channels"),
            &c.channels,
            Channels::Mono,
            &[("mono", Channels::Mono), ("stereo", Channels::Stereo)],
        )?;
        let sample_rate = cx.choice(
            &k("sample_rate"),
            &c.sample_rate,
            SampleRate::Auto,
            &[
                ("8000", SampleRate::Narrow),
                ("16000", SampleRate::Wide),
                ("auto", SampleRate::Auto),
            ],
        )?;
        let segments = cx.choice(
            &k("segments"),
            &c.segments,
            SegmentPolicy::All,
            &[
                ("all", SegmentPolicy::All),
                ("longest", SegmentPolicy::Longest),
            ],
        )?;
        for (f, v) in [
            ("pause_dtmf", &c.pause_dtmf),
            ("resume_dtmf", &c.resume_dtmf),
        ] {
            if let Some(s) = v
                && !valid_dtmf(s.get_ref())
            {
                return Err(cx.err(
                    s.span(),
                    k(f),
                    format!("{:?}: 1 to 8 of 0-9 * # A-D", s.get_ref()),
                ));
            }
        }
        match (&c.pause_dtmf, &c.resume_dtmf) {
            (Some(p), Some(r)) => {
                let (p0, r0) = (p.get_ref(), r.get_ref());
                if p0.starts_with(r0.as_str()) || r0.starts_with(p0.as_str()) {
                    return Err(cx.err(
                        r.span(),
                        k("resume_dtmf"),
                        format!("{r0:?} must differ from pause_dtmf {p0:?} (and neither may start the other)"),
                    ));
                }
            }
            (Some(p), None) => {
                return Err(cx.err(
                    p.span(),
                    k("resume_dtmf"),
                    "pause_dtmf is set, resume_dtmf is missing",
                ));
            }
            (None, Some(r)) => {
                return Err(cx.err(
                    r.span(),
                    k("pause_dtmf"),
                    "resume_dtmf is set, pause_dtmf is missing",
                ));
            }
            (None, None) => {}
        }
        let dest = c.destination.get_ref();
        if !destinations.iter().any(|d| &d.name == dest) {
            return Err(cx.err(
                c.destination.span(),
                k("destination"),
                format!("no [[destination]] named {dest:?}"),
            ));
        }
        contracts.push(Contract {
            id: id.clone(),
            service,
            numbers,
            guidance: g as u8,
            channels,
            sample_rate,
            segments,
            pause_dtmf: c.pause_dtmf.as_ref().map(|s| s.get_ref().clone()),
            resume_dtmf: c.resume_dtmf.as_ref().map(|s| s.get_ref().clone()),
            destination: dest.clone(),
        });
    }

    // [limits]
    let rl = &raw.limits;
    let usize_of = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let limits = Limits {
        fragment_bytes: usize_of(cx.size("limits.fragment_bytes", &rl.fragment_bytes, 16 << 20)?),
        fragment_timeout: cx.duration(
            "limits.fragment_timeout",
            &rl.fragment_timeout,
            Duration::from_secs(30),
        )?,
        tcp_stream_bytes: usize_of(cx.size(
            "limits.tcp_stream_bytes",
            &rl.tcp_stream_bytes,
            256 << 10,
        )?),
        tcp_streams: cx.int(
            "limits.tcp_streams",
            &rl.tcp_streams,
            65_536,
            1..=10_000_000,
        )? as usize,
        tcp_idle_timeout: cx.duration(
            "limits.tcp_idle_timeout",
            &rl.tcp_idle_timeout,
            Duration::from_secs(300),
        )?,
        max_dialogs: cx.int(
            "limits.max_dialogs",
            &rl.max_dialogs,
            200_000,
            1..=100_000_000,
        )? as usize,
        sip_message_bytes: usize_of(cx.size(
            "limits.sip_message_bytes",
            &rl.sip_message_bytes,
            64 << 10,
        )?),
        early_dialogs: cx.int(
            "limits.early_dialogs",
            &rl.early_dialogs,
            20_000,
            1..=10_000_000,
        )? as usize,
        early_dialogs_per_source: cx.int(
            "limits.early_dialogs_per_source",
            &rl.early_dialogs_per_source,
            5_000,
            1..=10_000_000,
        )? as usize,
        clock_tolerance: cx.duration(
            "limits.clock_tolerance",
            &rl.clock_tolerance,
            Duration::from_millis(100),
        )?,
    };
    if limits.clock_tolerance.is_zero() || limits.clock_tolerance > Duration::from_secs(10) {
        let span = rl
            .clock_tolerance
            .as_ref()
            .map(|s| s.span())
            .unwrap_or(0..0);
        return Err(cx.err(span, "limits.clock_tolerance", "must be 1ms..10s"));
    }
    if limits.sip_message_bytes < 1024 {
        let span = rl
            .sip_message_bytes
            .as_ref()
            .map(|s| s.span())
            .unwrap_or(0..0);
        return Err(cx.err(span, "limits.sip_message_bytes", "must be at least 1024"));
    }

    // [daemon]
    let rm = &raw.daemon;
    let daemon = Daemon {
        control_socket: rm
            .control_socket
            .as_ref()
            .map(|s| PathBuf::from(s.get_ref()))
            .unwrap_or_else(|| "/run/callrec/control.sock".into()),
        metrics_listen: match &rm.metrics_listen {
            None => None,
            Some(s) if s.get_ref() == "off" || s.get_ref().is_empty() => None,
            Some(s) => Some(s.get_ref().parse().map_err(|_| {
                cx.err(
                    s.span(),
                    "daemon.metrics_listen",
                    format!(
                        "expected ADDRESS:PORT like 127.0.0.1:9477 or \"off\", got {:?}",
                        s.get_ref()
                    ),
                )
            })?),
        },
    };

    let forward = sources::forward(&cx, &raw.forward)?;
    Ok(Config {
        source: path.to_path_buf(),
        general,
        capture,
        recording,
        announce,
        overload: Overload { priority_numbers },
        delivery,
        destinations,
        contracts,
        limits,
        daemon,
        history: history_cfg::history(&cx, &raw.history)?,
        hep: history_cfg::hep(&cx, &raw.hep)?,
        api: history_cfg::api(&cx, &raw.api)?,
        forward,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_traffic_limits() {
        let base = r#"
[delivery]
allowed_networks = ["192.0.2.0/24"]
[[destination]]
name = "acme"
url = "sftp://rec@192.0.2.10:22/in"
identity = "/k"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5WY6hfGbgKdwr827M61Dy9fKgVJoLX3pwmoStKx7MO"
"#;
        let load = |extra: &str| load_str(&format!("{base}{extra}"), Path::new("t.toml"));
        let d = load("").unwrap().limits;
        let def = Limits::default();
        assert_eq!(
            (
                d.early_dialogs,
                d.early_dialogs_per_source,
                d.clock_tolerance
            ),
            (
                def.early_dialogs,
                def.early_dialogs_per_source,
                def.clock_tolerance
            )
        );
        let l = load("[limits]\nearly_dialogs = 10\nearly_dialogs_per_source = 2\nclock_tolerance = \"250ms\"\n")
            .unwrap()
            .limits;
        assert_eq!(
            (
                l.early_dialogs,
                l.early_dialogs_per_source,
                l.clock_tolerance
            ),
            (10, 2, Duration::from_millis(250))
        );
        for bad in [
            "early_dialogs = 0",
            "early_dialogs_per_source = -1",
            "clock_tolerance = \"0ms\"",
            "clock_tolerance = \"1m\"",
        ] {
            let e = load(&format!("[limits]\n{bad}\n")).unwrap_err().to_string();
            assert!(e.contains("limits."), "{bad}: {e}");
        }
    }

    #[test]
    fn host_keys() {
        // "ssh-ed25519" length-prefixed, then a 32-byte key.
        let mut blob = vec![0, 0, 0, 11];
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&[0, 0, 0, 32]);
        blob.extend_from_slice(&[7u8; 32]);
        let b64 = encode(&blob);
        assert!(check_host_key(&format!("ssh-ed25519 {b64}")).is_ok());
        assert!(check_host_key(&format!("ssh-rsa {b64}")).is_err());
        assert!(check_host_key("ssh-ed25519 AAAA...").is_err());
        assert!(check_host_key("ssh-ed25519").is_err());
    }

    fn encode(b: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    #[test]
    fn urls() {
        let (u, h, p, d) = parse_sftp_url("sftp://rec@192.0.2.10:2222/incoming/").unwrap();
        assert_eq!(
            (u.as_str(), h.to_string(), p, d.as_str()),
            ("rec", "192.0.2.10".into(), 2222, "/incoming")
        );
        let (_, h, p, d) = parse_sftp_url("sftp://rec@[2001:db8::1]").unwrap();
        assert_eq!(
            (h.to_string(), p, d.as_str()),
            ("2001:db8::1".into(), 22, "/")
        );
        assert!(parse_sftp_url("sftp://rec@host.example:22/x").is_err());
        assert!(parse_sftp_url("ftp://rec@192.0.2.1/x").is_err());
    }
}
