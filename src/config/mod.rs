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
    pub history: History,
    pub hep: Hep,
    pub api: Api,
    /// `[forward]`: `callrec forward`'s central appliance; None = absent.
    pub forward: Option<Forward>,
}

/// `[capture] hep_listen`, `hep_capture_ids`, `hep_auth_key`: HEPv3 from
/// capture agents, a source like an interface (issue 17).
#[derive(Clone, Debug, Default)]
pub struct HepSource {
    /// Addresses taking HEP over UDP and TCP each; empty = off.
    pub listen: Vec<std::net::SocketAddr>,
    /// Capture agent ids accepted (chunk 0x000c); empty = any.
    pub capture_ids: Vec<u32>,
    /// Key agents must send (chunk 0x000e); never logged or printed.
    pub auth_key: Option<String>,
}

/// How `callrec forward` sends HEP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardTransport {
    /// One connection, packets back to back, buffered on disk while down.
    Tcp,
    /// Datagrams: nothing is known to be lost, so nothing is buffered.
    Udp,
}

/// `[forward]`: the capture agent mode (`callrec forward`).
#[derive(Clone, Debug)]
pub struct Forward {
    /// The central appliances' `capture.hep_listen` addresses; with
    /// several, traffic is split by call (`forward::split`).
    pub to: Vec<std::net::SocketAddr>,
    pub transport: ForwardTransport,
    /// This agent's HEP capture id (chunk 0x000c).
    pub capture_id: u32,
    /// Sent as chunk 0x000e when set.
    pub auth_key: Option<String>,
    /// Where packets wait while the central appliance is unreachable.
    pub buffer_dir: PathBuf,
    /// Bytes the buffer may hold; past it the oldest are dropped (counted, logged).
    pub buffer_bytes: u64,
}

/// `[history]`: the call history's retention and the fleet database.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Calls that started longer ago are dropped from `calls.jsonl` and
    /// its index when the daemon or a replay starts; None keeps everything.
    pub keep: Option<std::time::Duration>,
    /// This appliance's name in the fleet database (default: the host name).
    pub appliance: String,
    /// `postgres://` URL of the fleet database; None = local history only.
    pub postgres: Option<String>,
}

/// `[hep]`: HEPv3 export of recorded calls' SIP to a Homer collector.
#[derive(Clone, Debug, Default)]
pub struct Hep {
    /// UDP address of the collector (heplify-server, Homer); None = off.
    pub collector: Option<std::net::SocketAddr>,
    /// Export every call's SIP, not only recorded calls'.
    pub all_calls: bool,
    /// HEP capture agent id (chunk 0x000c).
    pub node_id: u32,
}

/// `[api]`: the read-only HTTP API on the metrics listener.
#[derive(Clone, Debug, Default)]
pub struct Api {
    /// Bearer token every `/api/` request must carry; None = the API is off.
    pub token: Option<String>,
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
    /// The kernel filter every interface's socket runs (`capture.filter`):
    /// `None` keeps every frame; the default keeps what callrec decodes
    /// ([`Capture::auto_filter`]). A libpcap expression, checked at load.
    pub filter: Option<String>,
    /// `capture.block_timeout`: zero (the default) hands each frame over as
    /// it arrives (libpcap immediate mode, TPACKET_V2); above zero the
    /// kernel fills blocks of frames (TPACKET_V3) and hands a block over
    /// when it is full or this old: fewer wake-ups per frame on a busy
    /// link, at most this much delay (the 200 OK that starts the prompt).
    pub block_timeout: std::time::Duration,
    /// How long an interface that went away or failed is reopened (with
    /// backoff, an alarm at each failure) before the daemon gives up and
    /// exits 1, so that systemd's `Restart=on-failure` takes over.
    pub retry_for: std::time::Duration,
    /// HEPv3 from capture agents (`hep_listen` and its keys).
    pub hep: HepSource,
    /// `capture.threads`: capture threads per interface. One (the
    /// default) reads every interface on the engine's thread; K above one
    /// open each interface K times in a `PACKET_FANOUT` group
    /// ([`crate::capture::fanout`]). 1 to 64.
    pub threads: usize,
    /// `capture.thread_queue`: frames each of those threads can queue per
    /// interface for the engine before it drops them (counted); 1,024 to
    /// 1,048,576, 16,384 by default (about 6 MiB).
    pub thread_queue: usize,
}

impl Capture {
    /// What callrec decodes, as a libpcap filter expression: all UDP (SIP
    /// anywhere, RTP on any port, IPv4 fragments), SIP over TCP on
    /// `sip_ports`, IPv6 fragments, IP-in-IP and GRE/ERSPAN tunnels; plain
    /// or under one or two VLAN tags; and every PPPoE session frame. TCP other than SIP, ICMP,
    /// ARP and the like stay in the kernel and never take ring space.
    pub fn auto_filter(sip_ports: &[u16]) -> String {
        let tcp: Vec<String> = sip_ports.iter().map(|p| format!("port {p}")).collect();
        let ip = format!(
            "udp or (tcp and ({})) or (ip6 and ip6[6] == 44) or (ip and (ip proto 4 or ip proto 41 or ip proto 47)) or (ip6 and (ip6 proto 4 or ip6 proto 41 or ip6 proto 47))",
            tcp.join(" or ")
        );
        // libpcap's `vlan` and `pppoes` move the offsets of everything after
        // them, across `or` too: nested this way the second tag is looked
        // for only after the first, and PPPoE sessions are kept by their
        // EtherType alone (a `pppoes` clause after `vlan` matched nothing).
        format!("ether proto 0x8864 or ({ip}) or (vlan and (({ip}) or (vlan and ({ip}))))")
    }
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

/// A compressed file format (`[recording] format = "mp3" | "opus" |
/// "flac"`): the recording is mixed into a PCM16 WAV as usual, then
/// encoded once when the segment closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoded {
    /// MPEG-1/2 Layer III (libmp3lame), `.mp3`.
    Mp3,
    /// Opus (libopus) in Ogg (RFC 7845), `.opus`.
    Opus,
    /// FLAC, `.flac`.
    Flac,
}

impl Encoded {
    /// The configuration and metadata name, also the file extension.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoded::Mp3 => "mp3",
            Encoded::Opus => "opus",
            Encoded::Flac => "flac",
        }
    }
}

/// The recording's sample rate per contract (`sample_rate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleRate {
    /// "8000".
    Narrow,
    /// "16000": narrowband legs are resampled up.
    Wide,
    /// "auto": 16000 when a leg's codec is wideband, else 8000.
    Auto,
}

#[derive(Clone, Debug)]
pub struct Recording {
    pub spool_dir: PathBuf,
    /// The WAV sample encoding (PCM16 when `encoded` is set).
    pub format: AudioFormat,
    /// Set for MP3, Opus and FLAC output.
    pub encoded: Option<Encoded>,
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
    /// Mode of recordings, metadata, history and every spool file (folders
    /// get the matching execute bits): 0640 unless configured.
    pub file_mode: u32,
    /// Group (name, id) given to what the daemon writes; None keeps the
    /// process's group (the unit's `Group=`).
    pub group: Option<(String, u32)>,
}

impl Recording {
    /// The modes and group to write with.
    pub fn perms(&self) -> crate::recording::perms::Perms {
        crate::recording::perms::Perms::from_file_mode(
            self.file_mode,
            self.group.as_ref().map(|g| g.1),
        )
    }
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
    /// Default "auto".
    pub sample_rate: SampleRate,
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
    /// Largest SIP message accepted, over UDP and TCP alike; a larger one
    /// is dropped and counted (`DecodeStats::sip_oversized`).
    pub sip_message_bytes: usize,
    /// Unanswered dialogs (INVITE seen, no 2xx yet) followed at once, all
    /// sources together; beyond it the heaviest source's oldest is shed.
    pub early_dialogs: usize,
    /// Unanswered dialogs followed at once per signalling source address;
    /// further INVITEs from that address are not followed (counted, alarmed).
    pub early_dialogs_per_source: usize,
    /// How far a packet's capture time may stray from the capture clock,
    /// either way, before it is an outlier the clock places.
    pub clock_tolerance: Duration,
}

impl Default for Limits {
    /// The documented defaults (`[limits]` in conf/callrec.toml).
    fn default() -> Limits {
        Limits {
            fragment_bytes: 16 << 20,
            fragment_timeout: Duration::from_secs(30),
            tcp_stream_bytes: 256 << 10,
            tcp_streams: 65_536,
            tcp_idle_timeout: Duration::from_secs(300),
            max_dialogs: 200_000,
            sip_message_bytes: 64 << 10,
            early_dialogs: 20_000,
            early_dialogs_per_source: 5_000,
            clock_tolerance: Duration::from_millis(100),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Daemon {
    pub control_socket: PathBuf,
    /// Prometheus text endpoint, e.g. "127.0.0.1:9477"; None = off.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// An IPv4 or IPv6 network in CIDR form (RFC 4632), parsed by the `ipnet`
/// crate. A network written with host bits set (`127.0.0.1/8`) is refused
/// rather than silently widened or narrowed: on the dedicated line's
/// allow-list a typo must not pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet(ipnet::IpNet);

impl IpNet {
    /// `192.0.2.0/24`, `2001:db8::/32`, or a bare address (a /32 or /128).
    /// The error says what is wrong, e.g. which network was meant.
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        let net = match s.parse::<ipnet::IpNet>() {
            Ok(n) => n,
            Err(_) => s
                .parse::<std::net::IpAddr>()
                .map(ipnet::IpNet::from)
                .map_err(|_| format!("{s:?} is not a network like 192.0.2.0/24"))?,
        };
        if net.addr() != net.network() {
            return Err(format!(
                "{s:?} has host bits set: the network is {}",
                net.trunc()
            ));
        }
        Ok(IpNet(net))
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
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
        assert!(IpNet::parse("192.0.2.0/33").is_err());
        assert_eq!(
            IpNet::parse("192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        let e = IpNet::parse("127.0.0.1/8").unwrap_err();
        assert!(e.contains("127.0.0.0/8"), "{e}");
    }
}
