//! `[[destination]]`: the SFTP servers recordings are delivered to.
//!
//! | key | unit | default |
//! |---|---|---|
//! | `name` | A-Z a-z 0-9 . _ -, at most 64, unique | required |
//! | `url` | `sftp://user@IP[:port]/dir`, IP inside `delivery.allowed_networks` | required (port 22) |
//! | `identity` | private key path, relative to the configuration file | required |
//! | `host_key` | pinned key as in known_hosts: "ssh-ed25519 AAAA..." | required |
//! | `max_rate` | bytes per second ("20Mbit", "500kbit", "2MB"), all connections together; 0 or "unlimited" = unlimited | unlimited |
//! | `connections` | parallel uploads, 1..16 | 4 |
//!
//! The host is an IP address: the dedicated line has no DNS.

use super::units::parse_rate;
use super::{ConfigError, Ctx, IntOrStr, S, safe_name};
use crate::config::{Delivery, Destination};
use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDestination {
    name: Spanned<String>,
    url: Spanned<String>,
    identity: Spanned<String>,
    host_key: Spanned<String>,
    max_rate: S<IntOrStr>,
    connections: S<i64>,
}

/// Every `[[destination]]`, in order; `delivery` holds the networks they
/// must be inside.
pub(super) fn destinations(
    cx: &Ctx,
    raw: &[Spanned<RawDestination>],
    delivery: &Delivery,
) -> Result<Vec<Destination>, ConfigError> {
    let mut destinations: Vec<Destination> = Vec::new();
    for (i, d) in raw.iter().enumerate() {
        let d = destination(cx, i, d.get_ref(), &destinations, delivery)?;
        destinations.push(d);
    }
    Ok(destinations)
}

/// `destination[i]`; `before` are the destinations above it (names are unique).
fn destination(
    cx: &Ctx,
    i: usize,
    d: &RawDestination,
    before: &[Destination],
    delivery: &Delivery,
) -> Result<Destination, ConfigError> {
    let k = |f: &str| format!("destination[{i}].{f}");
    let name = d.name.get_ref();
    if !safe_name(name) {
        return Err(cx.err(
            d.name.span(),
            k("name"),
            format!("{name:?}: use only A-Z a-z 0-9 . _ - (at most 64)"),
        ));
    }
    if before.iter().any(|x| &x.name == name) {
        return Err(cx.err(
            d.name.span(),
            k("name"),
            format!("destination {name:?} is defined twice"),
        ));
    }
    let (user, host, port, remote_dir) =
        parse_sftp_url(d.url.get_ref()).map_err(|r| cx.err(d.url.span(), k("url"), r))?;
    allowed(cx, &k("url"), d, host, delivery)?;
    if d.identity.get_ref().trim().is_empty() {
        return Err(cx.err(
            d.identity.span(),
            k("identity"),
            "a private key path is required",
        ));
    }
    check_host_key(d.host_key.get_ref())
        .map_err(|r| cx.err(d.host_key.span(), k("host_key"), r))?;
    let max_rate = max_rate(cx, &k("max_rate"), &d.max_rate)?;
    Ok(Destination {
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
    })
}

/// Recordings leave only over the dedicated line: a host outside
/// `delivery.allowed_networks` is refused.
fn allowed(
    cx: &Ctx,
    key: &str,
    d: &RawDestination,
    host: std::net::IpAddr,
    delivery: &Delivery,
) -> Result<(), ConfigError> {
    if delivery.allowed_networks.iter().any(|n| n.contains(host)) {
        return Ok(());
    }
    let nets: Vec<String> = delivery
        .allowed_networks
        .iter()
        .map(|n| n.to_string())
        .collect();
    Err(cx.err(
        d.url.span(),
        key,
        format!(
            "destination {:?} refused: {host} is outside delivery.allowed_networks [{}]",
            d.name.get_ref(),
            nets.join(", ")
        ),
    ))
}

/// `max_rate`: None when absent, 0 or "unlimited".
fn max_rate(cx: &Ctx, key: &str, v: &S<IntOrStr>) -> Result<Option<u64>, ConfigError> {
    let Some(s) = v else { return Ok(None) };
    let v = match s.get_ref() {
        IntOrStr::Int(n) => u64::try_from(*n).ok(),
        IntOrStr::Str(t) if t == "unlimited" => Some(0),
        IntOrStr::Str(t) => parse_rate(t),
    };
    match v {
        None => Err(cx.err(
            s.span(),
            key,
            format!(
                "expected a rate like 20Mbit, 500kbit or 2MB (per second), got {:?}",
                s.get_ref()
            ),
        )),
        Some(0) => Ok(None),
        Some(r) => Ok(Some(r)),
    }
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
