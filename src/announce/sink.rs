//! Where announcement packets go: raw Ethernet injection, a UDP socket, a
//! pcap file, or nowhere (`[announce] mode`).
//!
//! A sink sends one `OutPacket` at a time and reports failure as a
//! `SinkError`; the caller counts failures per call (the metadata then says
//! the guidance was not played). Nothing here panics on a bad packet.

use super::player::OutPacket;
use crate::config::AnnounceMode;
use crate::decode::L2Info;
use etherparse::{PacketBuilder, VlanId};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("no MAC address known yet for {from} -> {to}")]
    NoMac { from: SocketAddr, to: SocketAddr },
    #[error("cannot build a frame {from} -> {to}: {reason}")]
    Build {
        from: SocketAddr,
        to: SocketAddr,
        reason: String,
    },
    #[error("announcement pcap {}: {source}", path.display())]
    Pcap { path: PathBuf, source: pcap::Error },
    #[error("interface {name}: {reason}")]
    Interface { name: String, reason: String },
    #[error("announcement pcap {}: cannot set its mode: {source}", path.display())]
    Mode {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sending {from} -> {to}: {source}")]
    Send {
        from: SocketAddr,
        to: SocketAddr,
        source: std::io::Error,
    },
}

/// Sends announcement packets somewhere.
pub trait Sink: Send {
    fn send(&mut self, p: &OutPacket) -> Result<(), SinkError>;
    /// Pushes buffered output out (pcap file); a no-op elsewhere.
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Opens the sink `[announce] mode` asks for. `pcap_path` is where `pcap`
/// mode writes (replay: OUT/announcements.pcap).
pub fn open(
    mode: AnnounceMode,
    interface: Option<&str>,
    pcap_path: &Path,
) -> Result<Box<dyn Sink>, SinkError> {
    Ok(match mode {
        // Inline mode rewrites the parties' own packets; the player sends nothing.
        AnnounceMode::Off | AnnounceMode::Inline => Box::new(OffSink),
        AnnounceMode::Pcap => Box::new(PcapSink::create(pcap_path)?),
        AnnounceMode::Udp => Box::new(UdpSink::new()),
        AnnounceMode::Inject => {
            let name = interface.ok_or_else(|| SinkError::Interface {
                name: String::new(),
                reason: "announce.mode = \"inject\" needs announce.interface".into(),
            })?;
            Box::new(InjectSink::open(name)?)
        }
    })
}

/// Drops everything (`mode = "off"`).
pub struct OffSink;

impl Sink for OffSink {
    fn send(&mut self, _p: &OutPacket) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Placeholder MACs for pcap output when the flow's are unknown: locally
/// administered, so they cannot be mistaken for real hardware.
const PCAP_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PCAP_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// Builds Ethernet (+ VLAN tags) + IPv4/IPv6 + UDP around the RTP packet.
pub fn build_frame(p: &OutPacket, l2: &L2Info) -> Result<Vec<u8>, SinkError> {
    let err = |reason: String| SinkError::Build {
        from: p.from,
        to: p.to,
        reason,
    };
    let vlan = |v: u16| VlanId::try_new(v).map_err(|e| err(format!("VLAN id {v}: {e}")));
    let (sport, dport) = (p.from.port(), p.to.port());
    let eth = PacketBuilder::ethernet2(l2.src_mac, l2.dst_mac);
    let mut frame = Vec::with_capacity(64 + p.rtp.len());
    // The builder's steps are distinct types, so each VLAN shape gets its
    // own chain; the macro keeps the IP/UDP part in one place.
    macro_rules! ip_udp {
        ($step:expr) => {
            match (p.from.ip(), p.to.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => $step
                    .ipv4(s.octets(), d.octets(), 64)
                    .udp(sport, dport)
                    .write(&mut frame, &p.rtp),
                (IpAddr::V6(s), IpAddr::V6(d)) => $step
                    .ipv6(s.octets(), d.octets(), 64)
                    .udp(sport, dport)
                    .write(&mut frame, &p.rtp),
                _ => {
                    return Err(err(
                        "source and destination are of different IP families".into()
                    ))
                }
            }
        };
    }
    let written = match l2.vlans {
        [0, _] => ip_udp!(eth),
        [outer, 0] => ip_udp!(eth.single_vlan(vlan(outer)?)),
        [outer, inner] => ip_udp!(eth.double_vlan(vlan(outer)?, vlan(inner)?)),
    };
    written.map_err(|e| err(e.to_string()))?;
    Ok(frame)
}

/// Writes the packets as Ethernet frames to a pcap file, each stamped with
/// its scheduled time (replay and tests).
pub struct PcapSink {
    path: PathBuf,
    file: pcap::Savefile,
}

impl PcapSink {
    pub fn create(path: &Path) -> Result<PcapSink, SinkError> {
        let perr = |source| SinkError::Pcap {
            path: path.to_owned(),
            source,
        };
        let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).map_err(perr)?;
        let file = dead.savefile(path).map_err(perr)?;
        // libpcap creates it with fopen(3): whatever the umask allows.
        crate::recording::perms::apply_path(path).map_err(|source| SinkError::Mode {
            path: path.to_owned(),
            source,
        })?;
        Ok(PcapSink {
            path: path.to_owned(),
            file,
        })
    }
}

impl Sink for PcapSink {
    fn send(&mut self, p: &OutPacket) -> Result<(), SinkError> {
        let l2 = p.l2.unwrap_or(L2Info {
            src_mac: PCAP_SRC_MAC,
            dst_mac: PCAP_DST_MAC,
            vlans: [0, 0],
        });
        let frame = build_frame(p, &l2)?;
        let us = p.at.micros();
        let header = pcap::PacketHeader {
            ts: libc::timeval {
                tv_sec: us.div_euclid(1_000_000) as libc::time_t,
                tv_usec: us.rem_euclid(1_000_000) as libc::suseconds_t,
            },
            caplen: frame.len() as u32,
            len: frame.len() as u32,
        };
        self.file.write(&pcap::Packet::new(&header, &frame));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.file.flush().map_err(|source| SinkError::Pcap {
            path: self.path.clone(),
            source,
        })
    }
}

/// Sends over ordinary UDP sockets, for deployments where the appliance
/// relays the media and so owns the addresses the parties expect media
/// from. Each source address gets a socket bound to it; where that bind
/// fails (the address is not local) packets leave from an ephemeral port,
/// which is logged once per address.
pub struct UdpSink {
    bound: HashMap<SocketAddr, UdpSocket>,
    fallback_v4: Option<UdpSocket>,
    fallback_v6: Option<UdpSocket>,
}

/// Bound sockets kept at most; beyond this the cache is cleared (a call's
/// socket is simply re-bound on its next packet).
const UDP_SOCKETS_MAX: usize = 4096;

impl UdpSink {
    pub fn new() -> UdpSink {
        UdpSink {
            bound: HashMap::new(),
            fallback_v4: None,
            fallback_v6: None,
        }
    }

    fn socket_for(&mut self, from: SocketAddr) -> Result<&UdpSocket, std::io::Error> {
        if !self.bound.contains_key(&from) {
            match UdpSocket::bind(from) {
                Ok(s) => {
                    if self.bound.len() >= UDP_SOCKETS_MAX {
                        self.bound.clear();
                    }
                    self.bound.insert(from, s);
                }
                Err(e) => {
                    let slot = if from.is_ipv4() {
                        &mut self.fallback_v4
                    } else {
                        &mut self.fallback_v6
                    };
                    if slot.is_none() {
                        let any: SocketAddr = if from.is_ipv4() {
                            (Ipv4Addr::UNSPECIFIED, 0).into()
                        } else {
                            (Ipv6Addr::UNSPECIFIED, 0).into()
                        };
                        let s = UdpSocket::bind(any)?;
                        tracing::warn!(
                            "announce udp: cannot bind {from} ({e}); sending from ephemeral {}",
                            s.local_addr().map(|a| a.to_string()).unwrap_or_default()
                        );
                        *slot = Some(s);
                    }
                    return slot
                        .as_ref()
                        .ok_or_else(|| std::io::Error::other("no fallback socket"));
                }
            }
        }
        self.bound
            .get(&from)
            .ok_or_else(|| std::io::Error::other("socket cache"))
    }
}

impl Default for UdpSink {
    fn default() -> Self {
        UdpSink::new()
    }
}

impl Sink for UdpSink {
    fn send(&mut self, p: &OutPacket) -> Result<(), SinkError> {
        let send_err = |source| SinkError::Send {
            from: p.from,
            to: p.to,
            source,
        };
        let socket = self.socket_for(p.from).map_err(send_err)?;
        socket.send_to(&p.rtp, p.to).map_err(send_err)?;
        Ok(())
    }
}

/// Injects Ethernet frames on a capture interface with a raw socket (needs
/// CAP_NET_RAW), addressed like the captured frames of the flow.
pub struct InjectSink {
    name: String,
    tx: Box<dyn pnet_datalink::DataLinkSender>,
}

impl InjectSink {
    pub fn open(name: &str) -> Result<InjectSink, SinkError> {
        let ierr = |reason: String| SinkError::Interface {
            name: name.to_owned(),
            reason,
        };
        let iface = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == name)
            .ok_or_else(|| ierr("no such interface".into()))?;
        let config = pnet_datalink::Config {
            // We never read: keep the receive side small and out of
            // promiscuous mode (capture has its own handle).
            read_buffer_size: 2048,
            promiscuous: false,
            ..Default::default()
        };
        match pnet_datalink::channel(&iface, config) {
            Ok(pnet_datalink::Channel::Ethernet(tx, _rx)) => Ok(InjectSink {
                name: name.to_owned(),
                tx,
            }),
            Ok(_) => Err(ierr("not an Ethernet channel".into())),
            Err(e) => Err(ierr(format!(
                "cannot open raw socket (needs CAP_NET_RAW): {e}"
            ))),
        }
    }
}

impl InjectSink {
    /// Sends one whole Ethernet frame as it is (mirror mode's copies of
    /// the parties' own frames).
    pub fn send_frame(&mut self, frame: &[u8]) -> Result<(), SinkError> {
        match self.tx.send_to(frame, None) {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(SinkError::Interface {
                name: self.name.clone(),
                reason: e.to_string(),
            }),
            None => Err(SinkError::Interface {
                name: self.name.clone(),
                reason: "send_to gave no result".into(),
            }),
        }
    }
}

impl Sink for InjectSink {
    fn send(&mut self, p: &OutPacket) -> Result<(), SinkError> {
        let l2 = p.l2.ok_or(SinkError::NoMac {
            from: p.from,
            to: p.to,
        })?;
        let frame = build_frame(p, &l2)?;
        match self.tx.send_to(&frame, None) {
            Some(Ok(())) => Ok(()),
            Some(Err(source)) => Err(SinkError::Send {
                from: p.from,
                to: p.to,
                source,
            }),
            None => Err(SinkError::Interface {
                name: self.name.clone(),
                reason: "send_to gave no result".into(),
            }),
        }
    }
}
