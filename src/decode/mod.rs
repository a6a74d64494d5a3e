//! From captured frames to transport payloads.
//!
//! Strips link layers (Ethernet, SLL, SLL2, raw IP, BSD loopback, PPPoE), VLAN
//! tags (802.1Q, Q-in-Q with 0x8100, 0x88a8 and 0x9100) and tunnels
//! (IP-in-IP, GRE, ERSPAN), reassembles IPv4 and IPv6 fragments
//! ([`frag`]), and reassembles TCP streams that carry SIP into whole
//! messages ([`tcp`]). Sans-IO: state changes only with the frames and
//! their times.
//!
//! Headers are read with etherparse slices (Ethernet II, SLL, IPv4, IPv6
//! with extension headers, UDP, TCP); GRE, ERSPAN and SLL2, which it lacks,
//! are in [`tunnel`]. UDP payloads are handed out as slices of the frame,
//! with no allocation: RTP passes here at millions of packets a second.

pub mod frag;
pub mod tcp;
pub mod tunnel;

use crate::capture::{LinkType, Packet};
use crate::time::Timestamp;
use etherparse::{
    Ethernet2HeaderSlice, IpNumber, IpSlice, LinuxSllHeaderSlice, LinuxSllProtocolType, TcpSlice,
    UdpSlice,
};
use std::net::{IpAddr, SocketAddr};

/// How many tunnels deep we follow before calling the frame malformed.
const MAX_NESTING: u8 = 8;
/// Expiry sweeps run at most this often in packet time.
const SWEEP_INTERVAL_US: i64 = 1_000_000;

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
    /// IP packets neither UDP, TCP nor a tunnel we follow (ICMP, SCTP...).
    pub other_ip: u64,
    /// Frames that were inside at least one tunnel (IP-in-IP, GRE, ERSPAN).
    pub tunneled: u64,
    pub fragments: u64,
    pub reassembled: u64,
    /// Fragment sets given up (timeout or memory bound).
    pub fragments_dropped: u64,
    /// Fragments overlapping bytes already held (duplicates included).
    pub fragment_overlaps: u64,
    pub udp: u64,
    pub tcp_segments: u64,
    pub tcp_messages: u64,
    /// Streams reset because they exceeded their buffer bound or were garbage.
    pub tcp_resets: u64,
    /// Segments that arrived ahead of a gap.
    pub tcp_out_of_order: u64,
    /// Segments wholly or partly repeating bytes already seen.
    pub tcp_retransmissions: u64,
    /// Streams dropped to stay within `Limits.tcp_streams`.
    pub tcp_evicted: u64,
    /// SIP messages (UDP datagrams on a SIP port or starting like SIP,
    /// framed TCP messages) over `Limits.sip_message_bytes`: dropped.
    pub sip_oversized: u64,
}

pub struct Decoder {
    stats: DecodeStats,
    sip_ports: Vec<u16>,
    /// `Limits.sip_message_bytes`.
    sip_max: usize,
    frags: frag::FragPool,
    tcp: tcp::TcpReassembler,
    last_sweep: Option<Timestamp>,
}

/// The UDP addresses and payload of one frame, read without any decoder
/// state: no fragment or stream reassembly, no tunnels. For looking at a
/// frame before deciding when it happened (the capture clock's evidence);
/// `None` for anything else.
pub fn peek_udp(link: LinkType, data: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let sliced = match link {
        LinkType::Ethernet => SlicedPacket::from_ethernet(data),
        LinkType::LinuxSll => SlicedPacket::from_linux_sll(data),
        LinkType::LinuxSll2 => {
            let (proto, len) = tunnel::parse_sll2(data)?;
            SlicedPacket::from_ether_type(etherparse::EtherType(proto), &data[len..])
        }
        LinkType::RawIp | LinkType::Ipv4 | LinkType::Ipv6 => SlicedPacket::from_ip(data),
        LinkType::Null => SlicedPacket::from_ip(data.get(4..)?),
        LinkType::Other(_) => return None,
    }
    .ok()?;
    let (src, dst): (IpAddr, IpAddr) = match sliced.net? {
        NetSlice::Ipv4(v4) => (
            v4.header().source_addr().into(),
            v4.header().destination_addr().into(),
        ),
        NetSlice::Ipv6(v6) => (
            v6.header().source_addr().into(),
            v6.header().destination_addr().into(),
        ),
        _ => return None,
    };
    match sliced.transport? {
        TransportSlice::Udp(u) => Some((
            SocketAddr::new(src, u.source_port()),
            SocketAddr::new(dst, u.destination_port()),
            u.payload(),
        )),
        _ => None,
    }
}

/// Where a frame came from, carried down the layers.
#[derive(Clone, Copy)]
struct Ctx {
    ts: Timestamp,
    index: u64,
    l2: Option<L2Info>,
    depth: u8,
}

impl Decoder {
    pub fn new(limits: &crate::config::Limits, sip_ports: &[u16]) -> Self {
        Decoder {
            stats: DecodeStats::default(),
            sip_ports: sip_ports.to_vec(),
            sip_max: limits.sip_message_bytes.max(1),
            frags: frag::FragPool::new(limits.fragment_bytes, limits.fragment_timeout),
            tcp: tcp::TcpReassembler::new(limits, sip_ports),
            last_sweep: None,
        }
    }

    /// The SIP ports this decoder follows TCP streams on.
    pub fn sip_ports(&self) -> &[u16] {
        &self.sip_ports
    }

    /// Decodes one frame and calls `out` for every payload it completes
    /// (none for a fragment or a partial TCP message, several for a
    /// segment carrying several SIP messages). Never panics on bad input.
    pub fn decode(&mut self, pkt: &Packet<'_>, out: &mut dyn FnMut(Payload<'_>)) {
        self.stats.frames += 1;
        if self
            .last_sweep
            .is_none_or(|t| pkt.ts.since(t) >= SWEEP_INTERVAL_US)
        {
            self.expire(pkt.ts);
        }
        let ctx = Ctx {
            ts: pkt.ts,
            index: pkt.index,
            l2: None,
            depth: 0,
        };
        let data = pkt.data;
        match pkt.link {
            LinkType::Ethernet => self.ethernet(ctx, data, out),
            LinkType::LinuxSll => match LinuxSllHeaderSlice::from_slice(data) {
                Ok(sll) => {
                    let rest = &data[sll.slice().len()..];
                    match sll.protocol_type() {
                        LinuxSllProtocolType::EtherType(e) => {
                            self.ether_payload(ctx, e.0, rest, out)
                        }
                        // Captured on a GRE interface: the frame is GRE's payload.
                        LinuxSllProtocolType::GenericRoutingEncapsulationProtocolType(p) => {
                            self.gre_payload(ctx, p, false, rest, out)
                        }
                        _ => self.stats.non_ip += 1,
                    }
                }
                Err(_) => self.stats.malformed += 1,
            },
            LinkType::LinuxSll2 => match tunnel::parse_sll2(data) {
                Some((proto, len)) => self.ether_payload(ctx, proto, &data[len..], out),
                None => self.stats.malformed += 1,
            },
            LinkType::RawIp | LinkType::Ipv4 | LinkType::Ipv6 => self.ip(ctx, data, out),
            // 4-byte address family (host or network order); the IP
            // version nibble says the same and needs no byte-order guess.
            LinkType::Null => match data.get(4..) {
                Some(rest) => self.ip(ctx, rest, out),
                None => self.stats.malformed += 1,
            },
            LinkType::Other(_) => self.stats.non_ip += 1,
        }
    }

    /// Drops fragment sets and TCP streams idle since before `now - timeout`.
    pub fn expire(&mut self, now: Timestamp) {
        self.last_sweep = Some(now);
        self.frags.expire(now, &mut self.stats);
        self.tcp.expire(now);
    }

    pub fn stats(&self) -> &DecodeStats {
        &self.stats
    }

    /// Bytes held by incomplete fragment sets (bounded by `Limits.fragment_bytes`).
    pub fn fragment_bytes_held(&self) -> usize {
        self.frags.bytes_held()
    }

    /// Bytes buffered by TCP reassembly, all streams together.
    pub fn tcp_bytes_held(&self) -> usize {
        self.tcp.bytes_held()
    }

    pub fn tcp_streams(&self) -> usize {
        self.tcp.streams()
    }

    fn ethernet(&mut self, mut ctx: Ctx, data: &[u8], out: &mut dyn FnMut(Payload<'_>)) {
        let Ok(eth) = Ethernet2HeaderSlice::from_slice(data) else {
            self.stats.malformed += 1;
            return;
        };
        if ctx.l2.is_none() {
            ctx.l2 = Some(L2Info {
                src_mac: eth.source(),
                dst_mac: eth.destination(),
                vlans: [0, 0],
            });
        }
        self.ether_payload(ctx, eth.ether_type().0, &data[eth.slice().len()..], out)
    }

    /// Follows VLAN tags, then hands IP on.
    fn ether_payload(
        &mut self,
        mut ctx: Ctx,
        mut ether_type: u16,
        mut data: &[u8],
        out: &mut dyn FnMut(Payload<'_>),
    ) {
        let mut tags = 0;
        // Only the outermost frame's tags are recorded.
        let record = ctx.depth == 0;
        while matches!(ether_type, 0x8100 | 0x88a8 | 0x9100) {
            if data.len() < 4 {
                self.stats.malformed += 1;
                return;
            }
            let vid = u16::from_be_bytes([data[0], data[1]]) & 0x0fff;
            if record
                && tags < 2
                && let Some(l2) = ctx.l2.as_mut()
            {
                l2.vlans[tags] = vid;
            }
            tags += 1;
            ether_type = u16::from_be_bytes([data[2], data[3]]);
            data = &data[4..];
        }
        match ether_type {
            tunnel::ETH_IPV4 | tunnel::ETH_IPV6 => self.ip(ctx, data, out),
            // PPPoE session (RFC 2516): 6-byte header, then the PPP
            // protocol; DSL access captures carry SIP this way.
            0x8864 => match data.get(6..8).map(|p| u16::from_be_bytes([p[0], p[1]])) {
                Some(0x0021 | 0x0057) => self.ip(ctx, &data[8..], out),
                Some(_) => self.stats.non_ip += 1,
                None => self.stats.malformed += 1,
            },
            _ => self.stats.non_ip += 1,
        }
    }

    fn ip(&mut self, ctx: Ctx, data: &[u8], out: &mut dyn FnMut(Payload<'_>)) {
        let ip = match IpSlice::from_slice(data) {
            Ok(ip) => ip,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        let (src, dst) = (ip.source_addr(), ip.destination_addr());
        let payload = ip.payload();
        if payload.fragmented {
            let (id, offset, more) = match &ip {
                IpSlice::Ipv4(v4) => {
                    let h = v4.header();
                    (
                        h.identification() as u32,
                        h.fragments_offset(),
                        h.more_fragments(),
                    )
                }
                IpSlice::Ipv6(v6) => {
                    let frag = v6.extensions().clone().into_iter().find_map(|e| match e {
                        etherparse::Ipv6ExtensionSlice::Fragment(f) => Some(f.to_header()),
                        _ => None,
                    });
                    match frag {
                        Some(f) => (f.identification, f.fragment_offset, f.more_fragments),
                        None => {
                            self.stats.malformed += 1;
                            return;
                        }
                    }
                }
            };
            let key = frag::FragKey {
                src,
                dst,
                id,
                proto: payload.ip_number.0,
            };
            if let Some(whole) =
                self.frags
                    .add(key, offset, more, payload.payload, ctx.ts, &mut self.stats)
            {
                self.transport(ctx, payload.ip_number, src, dst, &whole, out);
            }
            return;
        }
        self.transport(ctx, payload.ip_number, src, dst, payload.payload, out)
    }

    fn transport(
        &mut self,
        ctx: Ctx,
        proto: IpNumber,
        src: IpAddr,
        dst: IpAddr,
        data: &[u8],
        out: &mut dyn FnMut(Payload<'_>),
    ) {
        match proto {
            IpNumber::UDP => match UdpSlice::from_slice(data) {
                Ok(udp) => {
                    self.stats.udp += 1;
                    // Media never comes near the SIP size limit, so the
                    // length is looked at first.
                    if udp.payload().len() > self.sip_max
                        && (self.sip_ports.contains(&udp.source_port())
                            || self.sip_ports.contains(&udp.destination_port())
                            || crate::sip::looks_like_sip(udp.payload()))
                    {
                        self.stats.sip_oversized += 1;
                        tracing::debug!(%src, bytes = udp.payload().len(), "SIP message over limits.sip_message_bytes dropped");
                        return;
                    }
                    out(Payload {
                        ts: ctx.ts,
                        packet_index: ctx.index,
                        transport: Transport::Udp,
                        src: SocketAddr::new(src, udp.source_port()),
                        dst: SocketAddr::new(dst, udp.destination_port()),
                        data: udp.payload(),
                        l2: ctx.l2,
                    });
                }
                Err(_) => self.stats.malformed += 1,
            },
            IpNumber::TCP => match TcpSlice::from_slice(data) {
                Ok(tcp) => {
                    let seg = tcp::Segment {
                        src: SocketAddr::new(src, tcp.source_port()),
                        dst: SocketAddr::new(dst, tcp.destination_port()),
                        seq: tcp.sequence_number(),
                        syn: tcp.syn(),
                        fin: tcp.fin(),
                        rst: tcp.rst(),
                        payload: tcp.payload(),
                        ts: ctx.ts,
                        packet_index: ctx.index,
                    };
                    let l2 = ctx.l2;
                    self.tcp
                        .segment(&seg, &mut self.stats, &mut |p| out(Payload { l2, ..p }));
                }
                Err(_) => self.stats.malformed += 1,
            },
            IpNumber::IPV4 | IpNumber::IPV6 => {
                if let Some(inner) = self.enter_tunnel(ctx) {
                    self.ip(inner, data, out)
                }
            }
            IpNumber::GRE => match tunnel::parse_gre(data) {
                Some(gre) => self.gre_payload(
                    ctx,
                    gre.protocol,
                    gre.sequenced,
                    &data[gre.header_len..],
                    out,
                ),
                None => self.stats.malformed += 1,
            },
            _ => self.stats.other_ip += 1,
        }
    }

    /// Counts a tunnel level; `None` when nested too deep.
    fn enter_tunnel(&mut self, ctx: Ctx) -> Option<Ctx> {
        if ctx.depth >= MAX_NESTING {
            self.stats.malformed += 1;
            return None;
        }
        if ctx.depth == 0 {
            self.stats.tunneled += 1;
        }
        Some(Ctx {
            depth: ctx.depth + 1,
            ..ctx
        })
    }

    fn gre_payload(
        &mut self,
        ctx: Ctx,
        protocol: u16,
        sequenced: bool,
        data: &[u8],
        out: &mut dyn FnMut(Payload<'_>),
    ) {
        let Some(inner) = self.enter_tunnel(ctx) else {
            return;
        };
        match protocol {
            tunnel::ETH_IPV4 | tunnel::ETH_IPV6 => self.ip(inner, data, out),
            tunnel::TRANSPARENT_ETHERNET => self.ethernet(inner, data, out),
            tunnel::ERSPAN_I_II | tunnel::ERSPAN_III => {
                match tunnel::erspan_header_len(protocol, sequenced, data) {
                    Some(len) => self.ethernet(inner, &data[len..], out),
                    None => self.stats.malformed += 1,
                }
            }
            _ => self.stats.non_ip += 1,
        }
    }
}
