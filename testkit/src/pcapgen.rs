//! Capture generation for tests, benchmarks and the demo: a pcap file
//! writer and builders for the frames the decoder must understand.
//!
//! Headers are built with etherparse's `PacketBuilder` and header types;
//! GRE, ERSPAN and SLL2, which it lacks, are written here. The pcap file
//! format (classic, microsecond) is 24 + 16 bytes of header per record, so
//! it is written by hand: that needs neither a libpcap handle nor `libc`
//! time structures, and libpcap and tshark read the result.
//!
//! These are generators for known-good inputs: a misuse (mixed address
//! families, a payload too large for IP) panics with a message.

use callrec::capture::LinkType;
use callrec::time::Timestamp;
use etherparse::{
    IpFragOffset, IpNumber, Ipv4Header, Ipv6FragmentHeader, Ipv6Header, PacketBuilder,
};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// Writes a classic pcap file (microsecond timestamps, little-endian).
pub struct PcapWriter {
    w: BufWriter<File>,
}

impl PcapWriter {
    pub fn create(path: impl AsRef<Path>, link: LinkType) -> io::Result<PcapWriter> {
        let mut w = BufWriter::new(File::create(path)?);
        w.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        w.write_all(&2u16.to_le_bytes())?;
        w.write_all(&4u16.to_le_bytes())?;
        w.write_all(&0i32.to_le_bytes())?; // thiszone
        w.write_all(&0u32.to_le_bytes())?; // sigfigs
        w.write_all(&262_144u32.to_le_bytes())?; // snaplen
        w.write_all(&link.to_linktype().to_le_bytes())?;
        Ok(PcapWriter { w })
    }

    pub fn write(&mut self, ts: Timestamp, frame: &[u8]) -> io::Result<()> {
        let us = ts.micros();
        self.w
            .write_all(&(us.div_euclid(1_000_000) as u32).to_le_bytes())?;
        self.w
            .write_all(&(us.rem_euclid(1_000_000) as u32).to_le_bytes())?;
        self.w.write_all(&(frame.len() as u32).to_le_bytes())?;
        self.w.write_all(&(frame.len() as u32).to_le_bytes())?;
        self.w.write_all(frame)
    }

    pub fn finish(mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// Writes `frames` to a new file, 20 ms apart from `start`.
pub fn write_pcap(
    path: impl AsRef<Path>,
    link: LinkType,
    start: Timestamp,
    frames: &[Vec<u8>],
) -> io::Result<()> {
    let mut w = PcapWriter::create(path, link)?;
    for (i, f) in frames.iter().enumerate() {
        w.write(start.add_micros(i as i64 * 20_000), f)?;
    }
    w.finish()
}

/// Link-layer framing for built frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Framing {
    #[default]
    Ethernet,
    LinuxSll,
    LinuxSll2,
    RawIp,
}

impl Framing {
    pub fn link_type(self) -> LinkType {
        match self {
            Framing::Ethernet => LinkType::Ethernet,
            Framing::LinuxSll => LinkType::LinuxSll,
            Framing::LinuxSll2 => LinkType::LinuxSll2,
            Framing::RawIp => LinkType::RawIp,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErspanVersion {
    /// Type II: GRE protocol 0x88BE, 8-byte header.
    II,
    /// Type III: GRE protocol 0x22EB, 12-byte header.
    III,
}

/// An encapsulation around the IP packet, as mirror ports deliver it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tunnel {
    /// IP in IP (protocol 4) or IPv6 in IP (41).
    IpIp {
        outer_src: IpAddr,
        outer_dst: IpAddr,
    },
    /// GRE with optional key and sequence; `ethernet` carries the inner
    /// packet in an Ethernet frame (transparent Ethernet bridging, 0x6558).
    Gre {
        outer_src: IpAddr,
        outer_dst: IpAddr,
        key: Option<u32>,
        seq: Option<u32>,
        ethernet: bool,
    },
    /// ERSPAN: GRE with a sequence number, an ERSPAN header and the
    /// mirrored Ethernet frame.
    Erspan {
        outer_src: IpAddr,
        outer_dst: IpAddr,
        version: ErspanVersion,
        session: u16,
    },
}

/// How a frame is wrapped beyond IP + transport.
#[derive(Clone, Debug, Default)]
pub struct FrameOpts {
    pub framing: Framing,
    /// VLAN ids, outer first (Ethernet only). Two tags make Q-in-Q: the
    /// outer with EtherType 0x88a8, the inner 0x8100.
    pub vlans: Vec<u16>,
    pub tunnel: Option<Tunnel>,
    /// IPv4 identification / IPv6 fragment id (used by fragmentation).
    pub ip_id: u32,
}

/// TCP flags for [`tcp_frame_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpFlags {
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
}

/// A MAC derived from the address, so frames of one host agree.
pub fn mac_for(ip: IpAddr) -> [u8; 6] {
    let tail = match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let o = a.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    [0x02, 0x00, tail[0], tail[1], tail[2], tail[3]]
}

/// Ethernet + IPv4/IPv6 + UDP carrying `payload`.
pub fn udp_frame(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    udp_frame_with(src, dst, payload, &FrameOpts::default())
}

pub fn udp_frame_with(
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    opts: &FrameOpts,
) -> Vec<u8> {
    let packet = ip_udp(src, dst, payload);
    wrap(packet, src.ip(), dst.ip(), opts)
}

/// The same datagram as [`udp_frame_with`], its IP payload (UDP header +
/// data) cut into `pieces` fragments in order (8-byte aligned; fewer when
/// the datagram is too small).
pub fn udp_fragments(
    src: SocketAddr,
    dst: SocketAddr,
    payload: &[u8],
    pieces: usize,
    opts: &FrameOpts,
) -> Vec<Vec<u8>> {
    // Build the whole datagram (UDP checksum over the real addresses),
    // then cut its IP payload; the builder writes no IP options.
    let full = ip_udp(src, dst, payload);
    let header_len = if src.is_ipv4() { 20 } else { 40 };
    let transport = &full[header_len..];
    let piece = transport.len().div_ceil(pieces.max(1)).div_ceil(8) * 8;
    let mut frames = Vec::new();
    let mut offset = 0;
    while offset < transport.len() {
        let end = (offset + piece).min(transport.len());
        let more = end < transport.len();
        let packet = fragment_packet(
            src.ip(),
            dst.ip(),
            opts.ip_id,
            offset,
            more,
            &transport[offset..end],
        );
        frames.push(wrap(packet, src.ip(), dst.ip(), opts));
        offset = end;
    }
    frames
}

/// `payload` as TCP segments of at most `mss` bytes from sequence `seq`
/// (ACK and PSH set), Ethernet framed.
pub fn tcp_segments(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    payload: &[u8],
    mss: usize,
) -> Vec<Vec<u8>> {
    tcp_segments_with(src, dst, seq, payload, mss, &FrameOpts::default())
}

pub fn tcp_segments_with(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    payload: &[u8],
    mss: usize,
    opts: &FrameOpts,
) -> Vec<Vec<u8>> {
    payload
        .chunks(mss.max(1))
        .enumerate()
        .map(|(i, chunk)| {
            let s = seq.wrapping_add((i * mss.max(1)) as u32);
            tcp_frame_with(src, dst, s, TcpFlags::default(), chunk, opts)
        })
        .collect()
}

/// One TCP segment with the given flags (ACK always set except on SYN).
pub fn tcp_frame_with(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    flags: TcpFlags,
    payload: &[u8],
    opts: &FrameOpts,
) -> Vec<u8> {
    let b = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("pcapgen: mixed address families {src} -> {dst}"),
    };
    let mut t = b.tcp(src.port(), dst.port(), seq, 65_535);
    if flags.syn {
        t = t.syn();
    } else {
        t = t.ack(1);
    }
    if flags.fin {
        t = t.fin();
    }
    if flags.rst {
        t = t.rst();
    }
    if !payload.is_empty() {
        t = t.psh();
    }
    let mut packet = Vec::with_capacity(60 + payload.len());
    t.write(&mut packet, payload).expect("tcp segment fits");
    wrap(packet, src.ip(), dst.ip(), opts)
}

fn ip_udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let b = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("pcapgen: mixed address families {src} -> {dst}"),
    };
    let b = b.udp(src.port(), dst.port());
    let mut packet = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut packet, payload).expect("udp datagram fits");
    packet
}

/// An IP header for `payload` with protocol `proto`.
fn ip_header(src: IpAddr, dst: IpAddr, proto: IpNumber, payload_len: usize) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = Ipv4Header::new(payload_len as u16, 64, proto, s.octets(), d.octets())
                .expect("fits ipv4");
            h.header_checksum = h.calc_header_checksum();
            h.to_bytes().to_vec()
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => Ipv6Header {
            traffic_class: 0,
            flow_label: Default::default(),
            payload_length: payload_len as u16,
            next_header: proto,
            hop_limit: 64,
            source: s.octets(),
            destination: d.octets(),
        }
        .to_bytes()
        .to_vec(),
        _ => panic!("pcapgen: mixed address families {src} -> {dst}"),
    }
}

/// One IPv4 or IPv6 fragment of a UDP datagram's IP payload.
fn fragment_packet(
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    offset: usize,
    more: bool,
    data: &[u8],
) -> Vec<u8> {
    let frag_offset = IpFragOffset::try_new((offset / 8) as u16).expect("fragment offset fits");
    let mut out = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h =
                Ipv4Header::new(data.len() as u16, 64, IpNumber::UDP, s.octets(), d.octets())
                    .expect("fits");
            h.identification = id as u16;
            h.more_fragments = more;
            h.fragment_offset = frag_offset;
            h.header_checksum = h.calc_header_checksum();
            h.to_bytes().to_vec()
        }
        (IpAddr::V6(_), IpAddr::V6(_)) => {
            let mut out = ip_header(
                src,
                dst,
                IpNumber::IPV6_FRAGMENTATION_HEADER,
                8 + data.len(),
            );
            let f = Ipv6FragmentHeader::new(IpNumber::UDP, frag_offset, more, id);
            out.extend_from_slice(&f.to_bytes());
            out
        }
        _ => panic!("pcapgen: mixed address families {src} -> {dst}"),
    };
    out.extend_from_slice(data);
    out
}

fn ethernet(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlans: &[u16],
    ether_type: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * vlans.len() + payload.len());
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    for (i, vid) in vlans.iter().enumerate() {
        let tpid: u16 = if vlans.len() > 1 && i == 0 {
            0x88a8
        } else {
            0x8100
        };
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ether_type_of(ip: IpAddr) -> u16 {
    if ip.is_ipv4() { 0x0800 } else { 0x86DD }
}

/// Wraps an IP packet in the tunnel and link layer of `opts`.
fn wrap(packet: Vec<u8>, src: IpAddr, dst: IpAddr, opts: &FrameOpts) -> Vec<u8> {
    let (l3, l3_src, l3_dst) = match &opts.tunnel {
        None => (packet, src, dst),
        Some(Tunnel::IpIp {
            outer_src,
            outer_dst,
        }) => {
            let proto = if src.is_ipv4() {
                IpNumber::IPV4
            } else {
                IpNumber::IPV6
            };
            let mut out = ip_header(*outer_src, *outer_dst, proto, packet.len());
            out.extend_from_slice(&packet);
            (out, *outer_src, *outer_dst)
        }
        Some(Tunnel::Gre {
            outer_src,
            outer_dst,
            key,
            seq,
            ethernet: eth,
        }) => {
            let (proto, inner) = if *eth {
                (
                    0x6558u16,
                    ethernet(mac_for(src), mac_for(dst), &[], ether_type_of(src), &packet),
                )
            } else {
                (ether_type_of(src), packet)
            };
            let mut gre = vec![(key.is_some() as u8) << 5 | (seq.is_some() as u8) << 4, 0];
            gre.extend_from_slice(&proto.to_be_bytes());
            if let Some(k) = key {
                gre.extend_from_slice(&k.to_be_bytes());
            }
            if let Some(s) = seq {
                gre.extend_from_slice(&s.to_be_bytes());
            }
            gre.extend_from_slice(&inner);
            let mut out = ip_header(*outer_src, *outer_dst, IpNumber::GRE, gre.len());
            out.extend_from_slice(&gre);
            (out, *outer_src, *outer_dst)
        }
        Some(Tunnel::Erspan {
            outer_src,
            outer_dst,
            version,
            session,
        }) => {
            let inner = ethernet(mac_for(src), mac_for(dst), &[], ether_type_of(src), &packet);
            let proto: u16 = match version {
                ErspanVersion::II => 0x88BE,
                ErspanVersion::III => 0x22EB,
            };
            let mut gre = vec![0x10, 0];
            gre.extend_from_slice(&proto.to_be_bytes());
            gre.extend_from_slice(&1u32.to_be_bytes()); // sequence number
            match version {
                ErspanVersion::II => {
                    // Ver=1, VLAN 0 | COS, En, T, session id | reserved, index.
                    gre.extend_from_slice(&[0x10, 0x00]);
                    gre.extend_from_slice(&(session & 0x03ff).to_be_bytes());
                    gre.extend_from_slice(&[0, 0, 0, 0]);
                }
                ErspanVersion::III => {
                    gre.extend_from_slice(&[0x20, 0x00]);
                    gre.extend_from_slice(&(session & 0x03ff).to_be_bytes());
                    gre.extend_from_slice(&[0; 8]); // timestamp, SGT, flags (O = 0)
                }
            }
            gre.extend_from_slice(&inner);
            let mut out = ip_header(*outer_src, *outer_dst, IpNumber::GRE, gre.len());
            out.extend_from_slice(&gre);
            (out, *outer_src, *outer_dst)
        }
    };
    let et = ether_type_of(l3_src);
    match opts.framing {
        Framing::Ethernet => ethernet(mac_for(l3_src), mac_for(l3_dst), &opts.vlans, et, &l3),
        Framing::RawIp => l3,
        Framing::LinuxSll => {
            // packet type 0 (to us), ARPHRD_ETHER, 6-byte address, protocol.
            let mut f = vec![0, 0, 0, 1, 0, 6];
            f.extend_from_slice(&mac_for(l3_src));
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(&et.to_be_bytes());
            f.extend_from_slice(&l3);
            f
        }
        Framing::LinuxSll2 => {
            // protocol, reserved, interface index 1, ARPHRD_ETHER, packet
            // type 0, address length 6, address padded to 8.
            let mut f = et.to_be_bytes().to_vec();
            f.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 1, 0, 6]);
            f.extend_from_slice(&mac_for(l3_src));
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(&l3);
            f
        }
    }
}
