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
//!
//! `load_str` parses the whole text into raw, spanned values, then reads
//! each section with its own reader (one module each under `load/`), in
//! the fixed order of `load_str`: of two errors in different sections, the
//! earlier reader's is reported. Checks across sections are made by the
//! later reader:
//! destinations against `delivery.allowed_networks`, contracts against the
//! destinations.

use crate::calls::numbering;
use crate::config::{
    Channels, Config, Contract, Delivery, Destination, IpNet, SampleRate, SegmentPolicy, Service,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

mod announce;
mod capture;
mod ctx;
mod daemon;
mod general;
#[path = "history.rs"]
mod history_cfg;
mod limits;
mod overload;
mod recording;
#[path = "sources.rs"]
mod sources;
mod units;

use ctx::{Ctx, IntOrStr, S, safe_name};
pub use units::parse_duration;
use units::parse_rate;

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
    general: general::RawGeneral,
    #[serde(default)]
    capture: capture::RawCapture,
    #[serde(default)]
    recording: recording::RawRecording,
    #[serde(default)]
    announce: announce::RawAnnounce,
    #[serde(default)]
    overload: overload::RawOverload,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    destination: Vec<Spanned<RawDestination>>,
    #[serde(default)]
    contract: Vec<Spanned<RawContract>>,
    #[serde(default)]
    limits: limits::RawLimits,
    #[serde(default)]
    daemon: daemon::RawDaemon,
    #[serde(default)]
    history: history_cfg::RawHistory,
    #[serde(default)]
    hep: history_cfg::RawHep,
    #[serde(default)]
    api: history_cfg::RawApi,
    #[serde(default)]
    forward: sources::RawForward,
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

pub fn load_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let cx = Ctx { path, text };
    let raw: Raw = toml::from_str(text).map_err(|e| cx.from_toml(e))?;
    // The readers run in this order: it decides which of two errors is reported.
    let general = general::general(&cx, &raw.general)?;
    let capture = capture::capture(&cx, &raw.capture)?;
    let recording = recording::recording(&cx, &raw.recording)?;
    let announce = announce::announce(&cx, &raw.announce)?;
    let overload = overload::overload(&cx, &raw.overload)?;

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

    let limits = limits::limits(&cx, &raw.limits)?;
    let daemon = daemon::daemon(&cx, &raw.daemon)?;
    let forward = sources::forward(&cx, &raw.forward)?;
    Ok(Config {
        source: path.to_path_buf(),
        general,
        capture,
        recording,
        announce,
        overload,
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

#[cfg(test)]
mod tests {
    use super::*;

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
