//! Packet sources: where captured frames come from.
//!
//! A source yields frames with their capture time and link type. Live
//! interfaces and capture files are both read with libpcap; wrappers in the
//! manner of smoltcp's phy devices add faults (for tests) or tracing.

use crate::time::Timestamp;

pub mod dedup;
pub mod fanout;
pub mod fault;
pub mod file;
pub mod hep;
pub mod hep_listen;
pub mod live;
pub mod merge;
pub mod ring;
pub mod trace;

pub use fault::{FaultConfig, FaultInjector, FaultStats};
pub use file::FileSource;
pub use hep_listen::{HepListener, HepListenerStats};
pub use live::{LiveOptions, LiveSource, LiveStats, Waker};
pub use trace::TraceSource;

/// Link-layer framing of a captured frame (the pcap LINKTYPE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    Ethernet,
    /// Linux cooked capture v1 (LINKTYPE_LINUX_SLL, 113).
    LinuxSll,
    /// Linux cooked capture v2 (LINKTYPE_LINUX_SLL2, 276).
    LinuxSll2,
    /// Raw IP, version from the first nibble (LINKTYPE_RAW 101, DLT_RAW 12/14).
    RawIp,
    Ipv4,
    Ipv6,
    /// BSD loopback (DLT_NULL 0 / LOOP 108).
    Null,
    Other(i32),
}

impl LinkType {
    pub fn from_dlt(dlt: i32) -> LinkType {
        match dlt {
            1 => LinkType::Ethernet,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            101 | 12 | 14 => LinkType::RawIp,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            0 | 108 => LinkType::Null,
            other => LinkType::Other(other),
        }
    }

    /// The pcap LINKTYPE number written in capture file headers.
    pub fn to_linktype(self) -> u32 {
        match self {
            LinkType::Ethernet => 1,
            LinkType::LinuxSll => 113,
            LinkType::LinuxSll2 => 276,
            LinkType::RawIp => 101,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
            LinkType::Null => 0,
            LinkType::Other(n) => n as u32,
        }
    }
}

/// A libpcap record time as packet time. `time_t` and `suseconds_t` are
/// 32 or 64 bits depending on the platform, hence the conversion.
#[allow(clippy::useless_conversion)]
pub(crate) fn header_time(h: &pcap::PacketHeader) -> Timestamp {
    Timestamp::from_secs_micros(i64::from(h.ts.tv_sec), i64::from(h.ts.tv_usec))
}

/// What is impossible about a record header, if anything: a microsecond
/// field of a million or more (libpcap hands it out as it is, and the
/// record's time is then unknowable), or a captured length above the
/// length on the wire.
#[allow(clippy::useless_conversion)]
pub fn record_header_problem(h: &pcap::PacketHeader) -> Option<String> {
    let usec = i64::from(h.ts.tv_usec);
    if !(0..1_000_000).contains(&usec) {
        return Some(format!(
            "malformed record header: microseconds field {usec} (must be below 1000000)"
        ));
    }
    if h.caplen > h.len {
        return Some(format!(
            "malformed record header: captured length {} above the original length {}",
            h.caplen, h.len
        ));
    }
    None
}

/// The `index`th frame libpcap handed out, with our link type.
pub(crate) fn from_pcap<'a>(p: pcap::Packet<'a>, index: u64, link: LinkType) -> Packet<'a> {
    Packet {
        index,
        ts: header_time(p.header),
        link,
        data: p.data,
        orig_len: p.header.len,
    }
}

/// One captured frame, borrowed from its source until the next call.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    /// 1-based position in its file (or since start for a live interface).
    pub index: u64,
    pub ts: Timestamp,
    pub link: LinkType,
    pub data: &'a [u8],
    /// Length on the wire; larger than `data.len()` when the snaplen cut it.
    pub orig_len: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{source_name}: cannot open: {reason}")]
    Open { source_name: String, reason: String },
    /// The file is cut short or corrupt after packet `after_packet`.
    #[error("{source_name}: unreadable after packet {after_packet}: {reason}")]
    Corrupt {
        source_name: String,
        after_packet: u64,
        reason: String,
    },
}

pub trait PacketSource {
    /// The next frame, `Ok(None)` at the end of a file.
    fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError>;
    /// A name for messages: the file path or interface name.
    fn name(&self) -> &str;
    /// The next frame with its capture point, for a source that carries
    /// several (a HEP listener: "hep:<capture id>", one per agent); `None`
    /// as the point for a source that is one capture point (its name).
    /// The engine keeps a clock offset per point: call
    /// `Engine::set_capture_point` with it before `Engine::on_packet`.
    #[allow(clippy::type_complexity)]
    fn next_packet_at_point(&mut self) -> Result<Option<(Packet<'_>, Option<&str>)>, CaptureError> {
        Ok(self.next_packet()?.map(|p| (p, None)))
    }
}
