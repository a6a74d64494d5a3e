//! From captured frames to transport payloads.
//!
//! Strips link layers (Ethernet, SLL, SLL2, raw IP), VLAN tags (802.1Q,
//! Q-in-Q) and tunnels (IP-in-IP, GRE, ERSPAN), reassembles IPv4 and IPv6
//! fragments, and reassembles TCP streams that carry SIP into whole
//! messages. Sans-IO: state changes only with the frames and their times.

use crate::capture::Packet;
use crate::time::Timestamp;
use std::net::SocketAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Outermost Ethernet header of the frame, kept so the announcer can
/// address injected frames like the flow it answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L2Info {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// Outer first; 0 = untagged.
    pub vlans: [u16; 2],
}

/// One transport payload: a UDP datagram, or one complete SIP message
/// framed out of a TCP stream.
#[derive(Clone, Copy, Debug)]
pub struct Payload<'a> {
    pub ts: Timestamp,
    /// The frame that completed this payload.
    pub packet_index: u64,
    pub transport: Transport,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub data: &'a [u8],
    pub l2: Option<L2Info>,
}

#[derive(Clone, Debug, Default)]
pub struct DecodeStats {
    pub frames: u64,
    /// Frames that could not be decoded (bad headers, truncation).
    pub malformed: u64,
    pub non_ip: u64,
    pub fragments: u64,
    pub reassembled: u64,
    /// Fragment sets given up (timeout or memory bound).
    pub fragments_dropped: u64,
    pub tcp_segments: u64,
    pub tcp_messages: u64,
    /// Streams reset because they exceeded their buffer bound or were garbage.
    pub tcp_resets: u64,
}

pub struct Decoder {
    stats: DecodeStats,
}

impl Decoder {
    pub fn new(_limits: &crate::config::Limits, _sip_ports: &[u16]) -> Self {
        Decoder { stats: DecodeStats::default() }
    }

    /// Decodes one frame and calls `out` for every payload it completes
    /// (none for a fragment or a partial TCP message, several for a
    /// segment carrying several SIP messages). Never panics on bad input.
    pub fn decode(&mut self, _pkt: &Packet<'_>, _out: &mut dyn FnMut(Payload<'_>)) {
        self.stats.frames += 1;
        // STUB: implemented in issue 2.
    }

    /// Drops fragment sets and TCP streams idle since before `now - timeout`.
    pub fn expire(&mut self, _now: Timestamp) {}

    pub fn stats(&self) -> &DecodeStats {
        &self.stats
    }
}
