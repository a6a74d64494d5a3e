//! Configuration: the validated model every other module reads.
//!
//! `load` turns TOML text into this model; every error names the file, the
//! line, the key and the reason. The model holds plain, already-checked
//! values (durations parsed, numbers normalised, destinations checked
//! against `allowed_networks`), so no other module re-validates.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod load;
pub use load::{ConfigError, base64_decode, load, load_str, parse_duration};

#[derive(Clone, Debug)]
pub struct Config {
    /// Where the configuration was read from (for messages).
    pub source: PathBuf,
    pub general: General,
    pub capture: Capture,
    pub recording: Recording,
    pub announce: Announce,
    pub overload: Overload,
    pub delivery: Delivery,
    pub destinations: Vec<Destination>,
    pub contracts: Vec<Contract>,
    pub limits: Limits,
    pub daemon: Daemon,
}

#[derive(Clone, Debug)]
pub struct General {
    /// Seconds east of UTC used for every time written in metadata.
    pub utc_offset_secs: i32,
}

#[derive(Clone, Debug)]
pub struct Capture {
    pub interfaces: Vec<String>,
    /// SIP over UDP and TCP on these ports; SIP elsewhere is still found by its start line.
    pub sip_ports: Vec<u16>,
    pub snaplen: u32,
    pub promiscuous: bool,
    /// libpcap ring buffer per interface, bytes.
    pub buffer_bytes: u32,
    /// How long an interface that went away or failed is reopened (with
    /// backoff, an alarm at each failure) before the daemon gives up and
    /// exits 1, so that systemd's `Restart=on-failure` takes over.
    pub retry_for: std::time::Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioFormat {
    Pcm16,
    Ulaw,
    Alaw,
}

impl AudioFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            AudioFormat::Pcm16 => "pcm16",
            AudioFormat::Ulaw => "ulaw",
            AudioFormat::Alaw => "alaw",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Recording {
    pub spool_dir: PathBuf,
    pub format: AudioFormat,
    pub max_active_calls: usize,
    /// Media shard workers; 0 means one per core less the capture thread.
    pub shards: usize,
    /// A call with no SIP and no RTP for this long is ended ("rtp-timeout").
    pub rtp_timeout: Duration,
    /// A call longer than this is ended ("max-call-length").
    pub max_call_length: Duration,
    /// An INVITE never answered is forgotten after this long ("not-answered").
    pub setup_timeout: Duration,
    /// Spool size at which an alarm is raised (bytes); 0 = no limit.
    pub spool_warn_bytes: u64,
    /// Spool size at which new calls go unrecorded with reason "overload"; 0 = no limit.
    pub spool_max_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnnounceMode {
    /// On the media path (bridge or router): the flows of calls in their
    /// prompt are diverted through NFQUEUE and rewritten in place.
    Inline,
    Inject,
    Udp,
    Pcap,
    Off,
}

#[derive(Clone, Debug)]
pub struct Announce {
    pub mode: AnnounceMode,
    pub interface: Option<String>,
    pub dir: PathBuf,
    /// Inline mode: NFQUEUE number, mark and nftables table name
    /// (`announce.queue`, `announce.mark`, `announce.nft_table`) and whether
    /// callrec installs the table and FORWARD rule (`announce.nft_setup`).
    pub inline: crate::announce::inline::InlineConfig,
}

impl Announce {
    /// A warning for modes in which the parties do not hear the prompt
    /// from callrec: the legally required notice must then come from the
    /// network (the carrier's media server or relay).
    pub fn warning(&self) -> Option<&'static str> {
        match self.mode {
            AnnounceMode::Inline => None,
            AnnounceMode::Off => Some(
                "announce.mode = \"off\": callrec plays no announcement; the notice must be played by the network",
            ),
            AnnounceMode::Pcap | AnnounceMode::Udp => Some(
                "announce.mode writes the prompt to a file or UDP socket, not to the parties; the notice must be played by the network",
            ),
            AnnounceMode::Inject => Some(
                "announce.mode = \"inject\" sends the prompt in the parties' own streams, a few packets ahead of them; a phone plays it only if its jitter buffer keeps the first copy of each packet (in tests linphonec 5.1 did; baresip 1.0 only in some calls): where every party must hear it, use \"inline\" or have the network play the notice",
            ),
        }
    }
}

impl AnnounceMode {
    /// The name used in `announce.mode` and in the metadata's `guidance.mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            AnnounceMode::Inline => "inline",
            AnnounceMode::Inject => "inject",
            AnnounceMode::Udp => "udp",
            AnnounceMode::Pcap => "pcap",
            AnnounceMode::Off => "off",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Overload {
    /// Normalised national numbers of disaster-priority lines.
    pub priority_numbers: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Delivery {
    pub allowed_networks: Vec<IpNet>,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub hold_after: Duration,
    pub keep_delivered: Duration,
    pub connect_timeout: Duration,
    /// SSH keepalive interval; a dead line is detected within about twice this.
    pub keepalive: Duration,
}

#[derive(Clone, Debug)]
pub struct Destination {
    pub name: String,
    pub user: String,
    pub host: std::net::IpAddr,
    pub port: u16,
    pub remote_dir: String,
    pub identity: PathBuf,
    /// Pinned host key as in known_hosts: "ssh-ed25519 AAAA...".
    pub host_key: String,
    /// Bytes per second; None = unlimited.
    pub max_rate: Option<u64>,
    /// Parallel SSH connections ("upload lanes"); files still appear under
    /// their final names one at a time, in queue order.
    pub connections: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// Prefix 0077-26.
    Mobile,
    /// Prefix 0077-27.
    Fixed,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Mobile => "mobile",
            Service::Fixed => "fixed",
        }
    }
    pub fn prefix(self) -> &'static str {
        match self {
            Service::Mobile => "007726",
            Service::Fixed => "007727",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channels {
    Mono,
    Stereo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentPolicy {
    All,
    Longest,
}

#[derive(Clone, Debug)]
pub struct Contract {
    pub id: String,
    pub service: Service,
    /// Normalised national numbers (e.g. "0312340001").
    pub numbers: Vec<String>,
    /// 1..=5
    pub guidance: u8,
    pub channels: Channels,
    pub segments: SegmentPolicy,
    pub pause_dtmf: Option<String>,
    pub resume_dtmf: Option<String>,
    /// Name of a `[[destination]]`, checked to exist.
    pub destination: String,
}

/// Memory bounds for hostile or broken traffic.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Bytes held by incomplete IP fragment sets, all flows together.
    pub fragment_bytes: usize,
    pub fragment_timeout: Duration,
    /// Bytes buffered per TCP stream before it is reset.
    pub tcp_stream_bytes: usize,
    /// TCP streams tracked at once (oldest evicted).
    pub tcp_streams: usize,
    pub tcp_idle_timeout: Duration,
    /// Dialogs tracked at once, answered or not (unanswered evicted first).
    pub max_dialogs: usize,
    /// Largest SIP message accepted.
    pub sip_message_bytes: usize,
}

#[derive(Clone, Debug)]
pub struct Daemon {
    pub control_socket: PathBuf,
    /// Prometheus text endpoint, e.g. "127.0.0.1:9477"; None = off.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// An IPv4 or IPv6 network in CIDR form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Option<IpNet> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse().ok().filter(|p| *p <= max)?,
            None => max,
        };
        Some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::*;
        match (self.addr, ip) {
            (V4(n), V4(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.prefix)
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (V6(n), V6(a)) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.prefix)
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Config {
    pub fn contract(&self, id: &str) -> Option<&Contract> {
        self.contracts.iter().find(|c| c.id == id)
    }
    pub fn destination(&self, name: &str) -> Option<&Destination> {
        self.destinations.iter().find(|d| d.name == name)
    }
    /// Path of a guidance prompt file (`1.wav` .. `5.wav` in `announce.dir`).
    pub fn guidance_file(&self, id: u8) -> PathBuf {
        guidance_file(&self.announce.dir, id)
    }
}

pub fn guidance_file(dir: &Path, id: u8) -> PathBuf {
    dir.join(format!("guidance{id}.wav"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipnet_contains() {
        let n = IpNet::parse("192.0.2.0/24").unwrap();
        assert!(n.contains("192.0.2.10".parse().unwrap()));
        assert!(!n.contains("198.51.100.1".parse().unwrap()));
        let n6 = IpNet::parse("2001:db8::/32").unwrap();
        assert!(n6.contains("2001:db8::1".parse().unwrap()));
        assert!(!n6.contains("2001:db9::1".parse().unwrap()));
        assert!(IpNet::parse("192.0.2.0/33").is_none());
    }
}
