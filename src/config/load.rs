//! TOML text to the validated [`Config`](super::Config).
//!
//! FIRST CUT: parses with serde and defaults. Line-numbered validation errors
//! are still to come (see issue 2).

use super::*;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// `line` is 1-based; 0 when the error is not tied to one line.
    #[error("{path}:{line}: {key}: {reason}")]
    Invalid { path: PathBuf, line: usize, key: String, reason: String },
}

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
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
    destination: Vec<RawDestination>,
    #[serde(default)]
    contract: Vec<RawContract>,
}
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGeneral {
    timezone: Option<String>,
}
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCapture {
    interfaces: Option<Vec<String>>,
    sip_ports: Option<Vec<u16>>,
}
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRecording {
    spool_dir: Option<PathBuf>,
    format: Option<String>,
    max_active_calls: Option<usize>,
}
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAnnounce {
    mode: Option<String>,
    interface: Option<String>,
    dir: Option<PathBuf>,
}
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawOverload {
    priority_numbers: Option<Vec<String>>,
}
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    allowed_networks: Option<Vec<String>>,
    retry_initial: Option<String>,
    retry_max: Option<String>,
    hold_after: Option<String>,
    keep_delivered: Option<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    name: String,
    url: String,
    identity: PathBuf,
    host_key: String,
    max_rate: Option<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContract {
    id: String,
    service: String,
    numbers: Vec<String>,
    guidance: u8,
    channels: Option<String>,
    segments: Option<String>,
    pause_dtmf: Option<String>,
    resume_dtmf: Option<String>,
    destination: String,
}

fn bad(path: &Path, key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { path: path.to_path_buf(), line: 0, key: key.into(), reason: reason.into() }
}

/// "5s", "10m", "24h", "7d", "250ms".
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit.trim() {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86400),
        _ => return None,
    })
}

pub fn load_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: Raw = toml::from_str(text).map_err(|e| bad(path, "", e.to_string()))?;
    let dur = |key: &str, v: &Option<String>, d: &str| {
        parse_duration(v.as_deref().unwrap_or(d)).ok_or_else(|| bad(path, key, "not a duration"))
    };
    let general = General {
        utc_offset_secs: crate::time::parse_offset(raw.general.timezone.as_deref().unwrap_or("+09:00"))
            .ok_or_else(|| bad(path, "general.timezone", "expected an offset like +09:00"))?,
    };
    let format = match raw.recording.format.as_deref().unwrap_or("pcm16") {
        "pcm16" => AudioFormat::Pcm16,
        "ulaw" => AudioFormat::Ulaw,
        "alaw" => AudioFormat::Alaw,
        _ => return Err(bad(path, "recording.format", "expected pcm16, ulaw or alaw")),
    };
    let mode = match raw.announce.mode.as_deref().unwrap_or("off") {
        "inject" => AnnounceMode::Inject,
        "udp" => AnnounceMode::Udp,
        "pcap" => AnnounceMode::Pcap,
        "off" => AnnounceMode::Off,
        _ => return Err(bad(path, "announce.mode", "expected inject, udp, pcap or off")),
    };
    let mut allowed = Vec::new();
    for n in raw.delivery.allowed_networks.unwrap_or_default() {
        allowed.push(IpNet::parse(&n).ok_or_else(|| bad(path, "delivery.allowed_networks", "not a network"))?);
    }
    let mut destinations = Vec::new();
    for d in raw.destination {
        let rest = d.url.strip_prefix("sftp://").ok_or_else(|| bad(path, "destination.url", "expected sftp://"))?;
        let (user, rest) = rest.split_once('@').ok_or_else(|| bad(path, "destination.url", "no user"))?;
        let (hostport, dir) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') => (h, p.parse().map_err(|_| bad(path, "destination.url", "bad port"))?),
            _ => (hostport, 22),
        };
        let host: std::net::IpAddr = host
            .trim_matches(['[', ']'])
            .parse()
            .map_err(|_| bad(path, "destination.url", "host must be an IP address"))?;
        destinations.push(Destination {
            name: d.name,
            user: user.into(),
            host,
            port,
            remote_dir: format!("/{dir}"),
            identity: d.identity,
            host_key: d.host_key,
            max_rate: None,
        });
        let _ = d.max_rate;
    }
    let mut contracts = Vec::new();
    for c in raw.contract {
        contracts.push(Contract {
            id: c.id,
            service: match c.service.as_str() {
                "mobile" => Service::Mobile,
                "fixed" => Service::Fixed,
                _ => return Err(bad(path, "contract.service", "expected mobile or fixed")),
            },
            numbers: c.numbers,
            guidance: c.guidance,
            channels: match c.channels.as_deref().unwrap_or("mono") {
                "mono" => Channels::Mono,
                "stereo" => Channels::Stereo,
                _ => return Err(bad(path, "contract.channels", "expected mono or stereo")),
            },
            segments: match c.segments.as_deref().unwrap_or("all") {
                "all" => SegmentPolicy::All,
                "longest" => SegmentPolicy::Longest,
                _ => return Err(bad(path, "contract.segments", "expected all or longest")),
            },
            pause_dtmf: c.pause_dtmf,
            resume_dtmf: c.resume_dtmf,
            destination: c.destination,
        });
    }
    Ok(Config {
        source: path.to_path_buf(),
        general,
        capture: Capture {
            interfaces: raw.capture.interfaces.unwrap_or_default(),
            sip_ports: raw.capture.sip_ports.unwrap_or_else(|| vec![5060]),
            snaplen: 65535,
            promiscuous: true,
            buffer_bytes: 64 << 20,
        },
        recording: Recording {
            spool_dir: raw.recording.spool_dir.unwrap_or_else(|| "/var/spool/callrec".into()),
            format,
            max_active_calls: raw.recording.max_active_calls.unwrap_or(20_000),
            shards: 0,
            rtp_timeout: Duration::from_secs(60),
            max_call_length: Duration::from_secs(4 * 3600),
            setup_timeout: Duration::from_secs(180),
            spool_warn_bytes: 0,
            spool_max_bytes: 0,
        },
        announce: Announce {
            mode,
            interface: raw.announce.interface,
            dir: raw.announce.dir.unwrap_or_else(|| "/usr/share/callrec/guidance-audio".into()),
        },
        overload: Overload { priority_numbers: raw.overload.priority_numbers.unwrap_or_default() },
        delivery: Delivery {
            allowed_networks: allowed,
            retry_initial: dur("delivery.retry_initial", &raw.delivery.retry_initial, "5s")?,
            retry_max: dur("delivery.retry_max", &raw.delivery.retry_max, "10m")?,
            hold_after: dur("delivery.hold_after", &raw.delivery.hold_after, "7d")?,
            keep_delivered: dur("delivery.keep_delivered", &raw.delivery.keep_delivered, "24h")?,
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(5),
        },
        destinations,
        contracts,
        limits: Limits {
            fragment_bytes: 16 << 20,
            fragment_timeout: Duration::from_secs(30),
            tcp_stream_bytes: 256 << 10,
            tcp_streams: 65_536,
            tcp_idle_timeout: Duration::from_secs(300),
            max_dialogs: 200_000,
            sip_message_bytes: 64 << 10,
        },
        daemon: Daemon { control_socket: "/run/callrec/control.sock".into(), metrics_listen: None },
    })
}
