//! Inline mode's packet rewriter (Sans-IO): takes an IP packet the kernel
//! diverted (an RTP packet of a call in its prompt or a beep) and puts the
//! prompt into it, in place, so that the receiving party hears the prompt
//! in the sender's own stream: SSRC, sequence number and timestamp stay as
//! the sender made them, only the G.711 payload changes (encoded in the
//! packet's own payload type), and the UDP checksum is recomputed
//! (RFC 768; over IPv6 it is mandatory, RFC 8200 section 8.1).
//!
//! Which sample of the prompt a packet carries follows the stream's own
//! RTP clock: the first diverted packet starts the prompt, and a packet
//! whose timestamp is N samples later carries the prompt from sample N.
//! Loss, reordering and jitter therefore never skip or repeat a part of
//! the prompt the receiver's jitter buffer would play. Once the prompt is
//! over, packets pass untouched and the flow is released.
//!
//! No clock, socket or file here: the inline worker (`announce::inline`)
//! feeds the packets and reads the verdicts.

use super::outcome::Outcome;
use super::prompts::{G711, Prompt};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// One direction of a call's media: where RTP comes from and goes to (the
/// parties' SDP addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// A diverted flow: the clip it carries and how far it got.
#[derive(Debug)]
pub struct Flow {
    pub call: u64,
    pub clip: Prompt,
    /// Party index in `outcome` ([`super::outcome::TO_SUBSCRIBER`] or
    /// [`super::outcome::TO_REMOTE`]): the receiver of this flow.
    pub party: usize,
    /// Where packets are counted; None for beeps.
    pub outcome: Option<Arc<Outcome>>,
    /// RTP timestamp of the first diverted packet (prompt sample 0).
    ts0: Option<u32>,
    /// The prompt is over (or cannot be carried): release the flow.
    pub done: bool,
    pub rewritten: u64,
}

impl Flow {
    pub fn new(call: u64, clip: Prompt, party: usize, outcome: Option<Arc<Outcome>>) -> Flow {
        Flow {
            call,
            clip,
            party,
            outcome,
            ts0: None,
            done: false,
            rewritten: 0,
        }
    }
}

/// What happened to one diverted packet. In every case it is forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The payload now carries the prompt.
    Rewritten,
    /// Forwarded untouched: not a flow in its prompt, not RTP, an event
    /// or comfort-noise packet, or the prompt is over.
    Untouched,
    /// Forwarded untouched, and the flow can never carry the prompt
    /// (a codec other than G.711): release it.
    Unplayable(&'static str),
}

/// Diverted flows by direction. Owned by the inline worker, which locks
/// it around each packet.
#[derive(Debug, Default)]
pub struct FlowTable {
    pub flows: HashMap<FlowKey, Flow>,
}

impl FlowTable {
    /// Rewrites `pkt` (an IPv4 or IPv6 packet, from its IP header on) if it
    /// belongs to a flow in its prompt. `now_us` (µs since the epoch) is
    /// only recorded as when the prompt reached the party.
    pub fn on_packet(&mut self, pkt: &mut [u8], now_us: i64) -> Verdict {
        let Some(p) = parse(pkt) else {
            return Verdict::Untouched;
        };
        let Some(flow) = self.flows.get_mut(&p.key) else {
            return Verdict::Untouched;
        };
        let v = rewrite_rtp(flow, &mut pkt[p.rtp..p.end]);
        match v {
            Verdict::Rewritten => {
                fix_udp_checksum(pkt, &p);
                flow.rewritten += 1;
                if let Some(o) = &flow.outcome {
                    o.sent_one(flow.party, now_us);
                }
            }
            Verdict::Unplayable(why) => {
                flow.done = true;
                if let Some(o) = &flow.outcome {
                    o.fail(flow.party, why);
                }
            }
            Verdict::Untouched => {}
        }
        v
    }
}

/// Where the parts of a UDP packet lie.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub key: FlowKey,
    v6: bool,
    /// Offset of the UDP header, of the RTP header, and the end of the UDP payload.
    udp: usize,
    pub rtp: usize,
    pub end: usize,
}

/// Finds the flow and the RTP bytes of an IPv4/IPv6 UDP packet.
pub(crate) fn parse(pkt: &[u8]) -> Option<Parsed> {
    let (src, dst, udp, v6, ip_end) = match pkt.first()? >> 4 {
        4 => {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            // Not UDP, or a fragment (only whole datagrams are rewritten).
            let frag = u16::from_be_bytes([*pkt.get(6)?, *pkt.get(7)?]) & 0x3fff;
            if ihl < 20 || pkt.len() < ihl + 8 || pkt[9] != 17 || frag != 0 {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            let s: [u8; 4] = pkt[12..16].try_into().ok()?;
            let d: [u8; 4] = pkt[16..20].try_into().ok()?;
            let (s, d) = (Ipv4Addr::from(s), Ipv4Addr::from(d));
            (
                IpAddr::V4(s),
                IpAddr::V4(d),
                ihl,
                false,
                total.min(pkt.len()),
            )
        }
        6 => {
            // Extension headers are not followed: RTP never needs them.
            if pkt.len() < 48 || pkt[6] != 17 {
                return None;
            }
            let plen = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            let s: [u8; 16] = pkt[8..24].try_into().ok()?;
            let d: [u8; 16] = pkt[24..40].try_into().ok()?;
            let (s, d) = (Ipv6Addr::from(s), Ipv6Addr::from(d));
            (
                IpAddr::V6(s),
                IpAddr::V6(d),
                40,
                true,
                (40 + plen).min(pkt.len()),
            )
        }
        _ => return None,
    };
    let sport = u16::from_be_bytes([pkt[udp], pkt[udp + 1]]);
    let dport = u16::from_be_bytes([pkt[udp + 2], pkt[udp + 3]]);
    let ulen = usize::from(u16::from_be_bytes([pkt[udp + 4], pkt[udp + 5]]));
    if ulen < 8 || udp + ulen > ip_end {
        return None;
    }
    Some(Parsed {
        key: FlowKey {
            src: SocketAddr::new(src, sport),
            dst: SocketAddr::new(dst, dport),
        },
        v6,
        udp,
        rtp: udp + 8,
        end: udp + ulen,
    })
}

/// Puts the flow's next prompt samples into one RTP packet (RFC 3550
/// section 5.1 header), keeping its header as it is.
fn rewrite_rtp(flow: &mut Flow, rtp: &mut [u8]) -> Verdict {
    if flow.done || rtp.len() < 12 || rtp[0] >> 6 != 2 {
        return Verdict::Untouched;
    }
    let pt = rtp[1] & 0x7f;
    // RTCP that shares the port (RFC 5761): payload types 72-76 with the marker.
    if (72..=76).contains(&pt) {
        return Verdict::Untouched;
    }
    let Some(codec) = G711::from_payload_type(pt) else {
        // Dynamic types (telephone-event, CN) come and go within a G.711
        // stream; a known other codec means the prompt cannot be carried.
        return match pt {
            13 | 96..=127 => Verdict::Untouched,
            _ => Verdict::Unplayable("the stream's codec is not G.711"),
        };
    };
    let csrc = usize::from(rtp[0] & 0x0f) * 4;
    let mut start = 12 + csrc;
    if rtp[0] & 0x10 != 0 {
        // Header extension (RFC 3550 section 5.3.1): 4 bytes + words.
        let Some(words) = rtp.get(start + 2..start + 4) else {
            return Verdict::Untouched;
        };
        start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let mut end = rtp.len();
    if rtp[0] & 0x20 != 0 {
        end = end.saturating_sub(usize::from(*rtp.last().unwrap_or(&0)));
    }
    if start >= end {
        return Verdict::Untouched;
    }
    let ts = u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]);
    let ts0 = *flow.ts0.get_or_insert(ts);
    // A packet from before the first diverted one (reordered) carries the
    // prompt's start too rather than the voice.
    let offset = ts.wrapping_sub(ts0);
    let offset = if offset > u32::MAX / 2 {
        0
    } else {
        offset as usize
    };
    let bytes = flow.clip.payload(codec);
    if offset >= bytes.len() {
        flow.done = true;
        return Verdict::Untouched;
    }
    let silence = codec.encode(0);
    for (i, b) in rtp[start..end].iter_mut().enumerate() {
        *b = bytes.get(offset + i).copied().unwrap_or(silence);
    }
    Verdict::Rewritten
}

/// Recomputes the UDP checksum after the payload changed.
pub(crate) fn fix_udp_checksum(pkt: &mut [u8], p: &Parsed) {
    pkt[p.udp + 6] = 0;
    pkt[p.udp + 7] = 0;
    let ulen = (p.end - p.udp) as u32;
    let mut sum: u32 = 17 + ulen;
    let addrs = if p.v6 { &pkt[8..40] } else { &pkt[12..20] };
    sum = add_words(sum, addrs);
    sum = add_words(sum, &pkt[p.udp..p.end]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut c = !(sum as u16);
    if c == 0 {
        c = 0xffff; // zero means "no checksum" (RFC 768)
    }
    pkt[p.udp + 6..p.udp + 8].copy_from_slice(&c.to_be_bytes());
}

fn add_words(mut sum: u32, b: &[u8]) -> u32 {
    let mut chunks = b.chunks_exact(2);
    for w in &mut chunks {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        if sum > 0xffff_0000 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, fill: u8) -> Vec<u8> {
        let mut v = vec![0x80, pt];
        v.extend_from_slice(&seq.to_be_bytes());
        v.extend_from_slice(&ts.to_be_bytes());
        v.extend_from_slice(&ssrc.to_be_bytes());
        v.extend(std::iter::repeat_n(fill, 160));
        v
    }

    fn ip4(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ipv4([192, 0, 2, 11], [192, 0, 2, 12], 64).udp(40000, 40002);
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    fn key() -> FlowKey {
        FlowKey {
            src: "192.0.2.11:40000".parse().unwrap(),
            dst: "192.0.2.12:40002".parse().unwrap(),
        }
    }

    fn table(samples: usize) -> (FlowTable, Arc<Outcome>) {
        let clip = Prompt::from_samples("t", (0..samples).map(|i| (i * 50) as i16).collect());
        let o = Arc::new(Outcome::new("inline", "in-stream"));
        let mut t = FlowTable::default();
        t.flows
            .insert(key(), Flow::new(7, clip, 1, Some(o.clone())));
        (t, o)
    }

    #[test]
    fn header_kept_payload_is_the_prompt_and_checksum_valid() {
        let (mut t, o) = table(400);
        let clip = t.flows[&key()].clip.payload(G711::Pcma);
        let mut p = ip4(&rtp(8, 100, 5000, 0xdead_beef, 0x55));
        let before = p.clone();
        assert_eq!(t.on_packet(&mut p, 10), Verdict::Rewritten);
        assert_eq!(
            &p[..26],
            &before[..26],
            "IP and UDP header but the checksum kept"
        );
        assert_eq!(&p[28..40], &before[28..40], "RTP header kept");
        assert_eq!(&p[28 + 12..], &clip[..160]);
        let parsed = etherparse::SlicedPacket::from_ip(&p).unwrap();
        let Some(etherparse::TransportSlice::Udp(u)) = parsed.transport else {
            panic!()
        };
        let ip = match parsed.net {
            Some(etherparse::NetSlice::Ipv4(h)) => h.header().to_header(),
            _ => panic!(),
        };
        assert_eq!(
            u.checksum(),
            u.to_header().calc_checksum_ipv4(&ip, u.payload()).unwrap()
        );
        // 240 samples later in the stream's own clock: prompt sample 240 on.
        let mut p2 = ip4(&rtp(8, 101, 5240, 0xdead_beef, 0x55));
        assert_eq!(t.on_packet(&mut p2, 20), Verdict::Rewritten);
        assert_eq!(&p2[40..200], &clip[240..400]);
        // Past the end: untouched, and the flow is done.
        let mut p3 = ip4(&rtp(8, 102, 5400, 0xdead_beef, 0x55));
        let b3 = p3.clone();
        assert_eq!(t.on_packet(&mut p3, 30), Verdict::Untouched);
        assert_eq!(p3, b3);
        assert!(t.flows[&key()].done);
        assert_eq!(o.sent(1), 2);
        assert_eq!(o.first_sent_us(), Some(10));
    }

    #[test]
    fn other_flows_events_and_other_codecs() {
        let (mut t, o) = table(8000);
        // telephone-event passes untouched, the flow stays.
        let mut ev = ip4(&rtp(101, 1, 0, 1, 0x11));
        let b = ev.clone();
        assert_eq!(t.on_packet(&mut ev, 1), Verdict::Untouched);
        assert_eq!(ev, b);
        // A flow not in the table.
        let other = PacketBuilder::ipv4([192, 0, 2, 12], [192, 0, 2, 11], 64).udp(40002, 40000);
        let mut buf = Vec::new();
        other.write(&mut buf, &rtp(0, 1, 0, 2, 0x22)).unwrap();
        let b = buf.clone();
        assert_eq!(t.on_packet(&mut buf, 1), Verdict::Untouched);
        assert_eq!(buf, b);
        // G.729 (18): cannot carry the prompt, released with a reason.
        let mut g729 = ip4(&rtp(18, 1, 0, 1, 0x33));
        assert!(matches!(t.on_packet(&mut g729, 1), Verdict::Unplayable(_)));
        assert!(t.flows[&key()].done);
        assert_eq!(o.placement(1), "the stream's codec is not G.711");
    }

    #[test]
    fn garbage_never_panics() {
        let (mut t, _) = table(8000);
        let good = ip4(&rtp(0, 1, 0, 1, 0));
        for cut in 0..good.len() {
            let mut p = good[..cut].to_vec();
            t.on_packet(&mut p, 0);
        }
        for seed in 0u32..2000 {
            let mut p = good.clone();
            let i = (seed as usize * 7919) % p.len();
            p[i] ^= (seed % 251) as u8 + 1;
            t.on_packet(&mut p, 0);
        }
    }
}
