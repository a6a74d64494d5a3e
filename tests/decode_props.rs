//! Property tests of the decoder entry point: arbitrary frames of every
//! link type never panic, and reassembly memory stays within its bounds.

use callrec::capture::{LinkType, Packet};
use callrec::decode::Decoder;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{FrameOpts, udp_fragments, udp_frame};
use proptest::prelude::*;

fn limits() -> callrec::config::Limits {
    let cfg = callrec::config::load_str("", std::path::Path::new("t.toml")).unwrap();
    let mut l = cfg.limits;
    l.fragment_bytes = 64 << 10;
    l.tcp_stream_bytes = 16 << 10;
    l.tcp_streams = 64;
    l
}

const LINKS: [LinkType; 7] = [
    LinkType::Ethernet,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::RawIp,
    LinkType::Ipv4,
    LinkType::Ipv6,
    LinkType::Null,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_frames_never_panic(frames in prop::collection::vec((0usize..7, prop::collection::vec(any::<u8>(), 0..300)), 1..40)) {
        let mut d = Decoder::new(&limits(), &[5060]);
        for (i, (link, data)) in frames.iter().enumerate() {
            let pkt = Packet { index: i as u64 + 1, ts: Timestamp::from_millis(i as i64 * 10), link: LINKS[*link], data, orig_len: data.len() as u32 };
            d.decode(&pkt, &mut |p| { let _ = callrec::sip::parse(p.data); });
        }
        prop_assert!(d.fragment_bytes_held() <= 64 << 10);
        prop_assert!(d.tcp_streams() <= 64);
    }

    /// Mutating bytes of valid frames (plain and fragmented) never panics,
    /// and unmutated fragments still reassemble to the original payload.
    #[test]
    fn mutated_valid_frames_never_panic(payload in prop::collection::vec(any::<u8>(), 1..3000), pieces in 2usize..6, flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8)) {
        let src = "192.0.2.1:5060".parse().unwrap();
        let dst = "198.51.100.1:5060".parse().unwrap();
        let mut frames = udp_fragments(src, dst, &payload, pieces, &FrameOpts::default());
        frames.push(udp_frame(src, dst, &payload));
        let mut d = Decoder::new(&limits(), &[5060]);
        let mut got = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let pkt = Packet { index: i as u64 + 1, ts: Timestamp::from_millis(i as i64), link: LinkType::Ethernet, data: f, orig_len: f.len() as u32 };
            d.decode(&pkt, &mut |p| got.push(p.data.to_vec()));
        }
        prop_assert!(got.iter().all(|g| g == &payload), "reassembly changed the payload");
        prop_assert!(!got.is_empty());
        for f in &mut frames {
            for (pos, v) in &flips {
                let n = f.len();
                f[pos % n] ^= v;
            }
        }
        for (i, f) in frames.iter().enumerate() {
            let pkt = Packet { index: i as u64 + 1, ts: Timestamp::from_millis(100 + i as i64), link: LinkType::Ethernet, data: f, orig_len: f.len() as u32 };
            d.decode(&pkt, &mut |_| {});
        }
    }
}

/// `peek_udp` (the clock's and the journal's quick look at a held frame)
/// finds the datagram under every plain link framing, and a VLAN tag.
#[test]
fn peek_reads_udp_under_every_plain_framing() {
    use callrec::capture::LinkType;
    use callrec::decode::peek_udp;
    use callrec_testkit::pcapgen::{FrameOpts, Framing, udp_frame_with};
    let (s, d): (std::net::SocketAddr, std::net::SocketAddr) = (
        "192.0.2.1:4000".parse().unwrap(),
        "198.51.100.2:5000".parse().unwrap(),
    );
    for framing in [
        Framing::Ethernet,
        Framing::LinuxSll,
        Framing::LinuxSll2,
        Framing::RawIp,
    ] {
        let opts = FrameOpts {
            framing,
            vlans: if framing == Framing::Ethernet {
                vec![10]
            } else {
                vec![]
            },
            ..Default::default()
        };
        let f = udp_frame_with(s, d, b"hello", &opts);
        assert_eq!(
            peek_udp(framing.link_type(), &f),
            Some((s, d, &b"hello"[..])),
            "{framing:?}"
        );
    }
    assert_eq!(peek_udp(LinkType::Ethernet, &[0u8; 20]), None);
}
