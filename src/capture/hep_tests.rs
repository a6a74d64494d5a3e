use super::*;
use crate::history::hep::{HepPacket, encode};

fn sip_packet(node: u32, payload: &[u8]) -> Vec<u8> {
    encode(&HepPacket {
        ts: Timestamp::from_secs_micros(1_700_000_000, 250_000),
        src: "192.0.2.1:5060".parse().unwrap(),
        dst: "198.51.100.2:5060".parse().unwrap(),
        transport: 17,
        proto: TYPE_SIP,
        node_id: node,
        correlation: None,
        payload,
    })
    .unwrap()
}

const INVITE: &[u8] = b"INVITE sip:b@198.51.100.2 SIP/2.0\r\nCall-ID: x\r\n\r\n";

#[test]
fn parses_every_field() {
    let b = sip_packet(7, INVITE);
    let m = parse(&b).unwrap();
    assert_eq!(m.ip_proto, 17);
    assert_eq!(m.src, "192.0.2.1:5060".parse().unwrap());
    assert_eq!(m.dst, "198.51.100.2:5060".parse().unwrap());
    assert_eq!(
        m.ts,
        Some(Timestamp::from_secs_micros(1_700_000_000, 250_000))
    );
    assert_eq!(
        (m.proto_type, m.capture_id, m.payload),
        (TYPE_SIP, 7, INVITE)
    );
}

#[test]
fn synthesised_frame_decodes_to_the_same_udp_payload() {
    let mut d = HepDecoder::new(HepPolicy::default());
    let b = sip_packet(7, INVITE);
    let out = d.decode(&b, Timestamp::ZERO).unwrap().unwrap();
    assert_eq!(out.capture_point, "hep:7");
    assert_eq!(out.packet.link, LinkType::RawIp);
    let (s, t, p) = crate::decode::peek_udp(LinkType::RawIp, out.packet.data).unwrap();
    assert_eq!(s, "192.0.2.1:5060".parse().unwrap());
    assert_eq!(t, "198.51.100.2:5060".parse().unwrap());
    assert_eq!(p, INVITE);
    assert_eq!(
        ipv4_checksum(&out.packet.data[..20]),
        0,
        "header checksum verifies"
    );
}

#[test]
fn ipv6_and_tcp_frames_carry_the_payload() {
    let b = encode(&HepPacket {
        ts: Timestamp::from_secs_micros(5, 0),
        src: "[2001:db8::1]:5060".parse().unwrap(),
        dst: "[2001:db8::2]:5060".parse().unwrap(),
        transport: 6,
        proto: TYPE_SIP,
        node_id: 1,
        correlation: None,
        payload: INVITE,
    })
    .unwrap();
    let mut d = HepDecoder::new(HepPolicy::default());
    let f = d
        .decode(&b, Timestamp::ZERO)
        .unwrap()
        .unwrap()
        .packet
        .data
        .to_vec();
    assert_eq!(f[0] >> 4, 6);
    assert_eq!(f[6], 6, "next header TCP");
    assert_eq!(&f[40 + 20..], INVITE);
    // The next message of the flow follows the first in sequence space.
    let f2 = d
        .decode(&b, Timestamp::ZERO)
        .unwrap()
        .unwrap()
        .packet
        .data
        .to_vec();
    let seq = |f: &[u8]| u32::from_be_bytes(f[44..48].try_into().unwrap());
    assert_eq!(seq(&f2), seq(&f) + INVITE.len() as u32);
}

#[test]
fn bad_input_is_counted_per_reason_never_a_panic() {
    let good = sip_packet(7, INVITE);
    let mut d = HepDecoder::new(HepPolicy {
        capture_ids: vec![7],
        auth_key: None,
    });
    let mut v2 = good.clone();
    v2[3] = b'2';
    let mut long_len = good.clone();
    long_len[4..6].copy_from_slice(&u16::MAX.to_be_bytes());
    let mut bad_chunk = good.clone();
    bad_chunk[6 + 4..6 + 6].copy_from_slice(&3u16.to_be_bytes());
    let cases: Vec<(Vec<u8>, HepError)> = vec![
        (good[..4].to_vec(), HepError::Truncated),
        (good[..good.len() - 3].to_vec(), HepError::Truncated),
        (long_len, HepError::Truncated),
        (v2, HepError::Version),
        (b"\x02\x10\x02\x00garbage".to_vec(), HepError::Version),
        (bad_chunk, HepError::BadChunk),
        (sip_packet(8, INVITE), HepError::UnknownCaptureId),
        (b"HEP3\x00\x06".to_vec(), HepError::Missing),
    ];
    for (bytes, want) in &cases {
        assert_eq!(
            d.decode(bytes, Timestamp::ZERO).err(),
            Some(*want),
            "{bytes:?}"
        );
    }
    assert_eq!(d.stats().bad(HepError::Truncated), 3);
    assert_eq!(d.stats().bad(HepError::Version), 2);
    assert_eq!(d.stats().bad(HepError::UnknownCaptureId), 1);
    assert_eq!(d.stats().packets, 0);
    assert!(d.decode(&good, Timestamp::ZERO).unwrap().is_some());
}

#[test]
fn unknown_chunks_are_skipped_and_counted() {
    let mut b = sip_packet(7, INVITE);
    // A generic chunk of a type nobody defined, and a vendor chunk.
    b.extend_from_slice(&[0, 0, 0x7f, 0x01, 0, 8, 1, 2]);
    b.extend_from_slice(&[0, 9, 0, 1, 0, 7, 1]);
    let n = b.len() as u16;
    b[4..6].copy_from_slice(&n.to_be_bytes());
    let mut d = HepDecoder::new(HepPolicy::default());
    assert!(d.decode(&b, Timestamp::ZERO).unwrap().is_some());
    assert_eq!(d.stats().unknown_chunks, 1);
}

#[test]
fn auth_key_is_checked_when_configured() {
    let mut with_key = sip_packet(7, INVITE);
    with_key.extend_from_slice(&[0, 0, 0, 0x0e, 0, 6 + 7]);
    with_key.extend_from_slice(b"secret\0");
    let n = with_key.len() as u16;
    with_key[4..6].copy_from_slice(&n.to_be_bytes());
    let mut d = HepDecoder::new(HepPolicy {
        capture_ids: vec![],
        auth_key: Some("secret".into()),
    });
    assert_eq!(
        d.decode(&sip_packet(7, INVITE), Timestamp::ZERO).err(),
        Some(HepError::AuthKey)
    );
    assert!(d.decode(&with_key, Timestamp::ZERO).unwrap().is_some());
}

#[test]
fn a_second_capture_point_copy_is_a_duplicate_a_retransmission_is_not() {
    let mut d = HepDecoder::new(HepPolicy::default());
    assert!(
        d.decode(&sip_packet(1, INVITE), Timestamp::ZERO)
            .unwrap()
            .is_some()
    );
    assert!(
        d.decode(&sip_packet(2, INVITE), Timestamp::ZERO)
            .unwrap()
            .is_none()
    );
    assert_eq!(d.stats().duplicates, 1);
    // The same point again (a retransmission the capture holds twice).
    assert!(
        d.decode(&sip_packet(1, INVITE), Timestamp::ZERO)
            .unwrap()
            .is_some()
    );
    // Past the window, another point's copy is a packet of its own.
    let later = encode(&HepPacket {
        ts: Timestamp::from_secs_micros(1_700_000_001, 0),
        src: "192.0.2.1:5060".parse().unwrap(),
        dst: "198.51.100.2:5060".parse().unwrap(),
        transport: 17,
        proto: TYPE_SIP,
        node_id: 2,
        correlation: None,
        payload: INVITE,
    })
    .unwrap();
    assert!(d.decode(&later, Timestamp::ZERO).unwrap().is_some());
    assert_eq!(d.stats().packets, 3);
}

#[test]
fn frame_len_frames_a_stream() {
    let b = sip_packet(1, INVITE);
    assert_eq!(frame_len(&b[..5], MAX_PACKET), None);
    assert_eq!(frame_len(&b, MAX_PACKET), Some(Ok(b.len())));
    assert_eq!(frame_len(&b, 10), Some(Err(HepError::Oversized)));
    assert_eq!(frame_len(b"HEP2\0\0", 10), Some(Err(HepError::Version)));
}
