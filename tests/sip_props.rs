//! Property tests of the SIP and SDP entry points (the stable-toolchain
//! counterpart of the cargo-fuzz targets in fuzz/): no input panics, and
//! generated well-formed messages parse back to what was generated.

use callrec::sip::{self, sdp};
use proptest::prelude::*;
use std::net::IpAddr;

const INVITE: &[u8] = b"INVITE sip:0077260312349999@198.51.100.1;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport\r\n\
From: \"A \\\"B\\\"\" <sip:0312340001@192.0.2.1>;tag=abc\r\n\
To: <sip:0077260312349999@198.51.100.1>\r\n\
Call-ID: call-1@192.0.2.1\r\n\
CSeq: 1 INVITE\r\n\
P-Asserted-Identity: <sip:+81312340001@192.0.2.1;user=phone>, <tel:+81312340001>\r\n\
Privacy: id\r\n\
Diversion: <sip:0312@192.0.2.1>;reason=unconditional\r\n\
History-Info: <sip:0312@192.0.2.1?Reason=SIP%3Bcause%3D302>;index=1.1\r\n\
Resource-Priority: ets.0\r\n\
Refer-To: <sip:c@192.0.2.2?Replaces=a%40b%3Bto-tag%3D1%3Bfrom-tag%3D2>\r\n\
Content-Type: multipart/mixed;boundary=bb\r\n\
Content-Length: 113\r\n\r\n\
--bb\r\nContent-Type: application/sdp\r\n\r\nv=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n--bb--\r\n";

/// Calls every accessor, so a panic anywhere in them is found.
fn exercise(data: &[u8]) {
    let _ = sip::looks_like_sip(data);
    let _ = sip::message_len(data);
    if let Ok(m) = sip::parse(data) {
        let _ = (
            m.is_request(),
            m.method(),
            m.status(),
            m.request_uri(),
            m.call_id(),
            m.cseq(),
        );
        let _ = (m.from().map(|f| f.tag()), m.to().map(|t| t.parsed_uri()));
        let _ = (
            m.content_type(),
            m.content_length(),
            m.body_truncated(),
            m.skipped_lines(),
        );
        for (n, v) in m.all_headers() {
            let _ = (
                m.header_params(n),
                sip::split_list(v),
                sip::NameAddr::parse(v),
            );
            let _ = sip::Uri::parse(v).map(|u| (u.header("Replaces"), u.host_ip(), u.is_phone()));
            let _ = sip::uri_user(v);
        }
        let _ = (
            m.vias(),
            m.asserted_identities(),
            m.privacy(),
            m.diversions(),
            m.resource_priorities(),
        );
        for h in m.history_info().iter() {
            let _ = (h.cause(), h.index_path());
        }
        let _ = (m.replaces(), m.refer_to_replaces(), m.referred_by());
        if let Some(body) = m.sdp() {
            exercise_sdp(body);
        }
    }
}

fn exercise_sdp(data: &[u8]) {
    if let Ok(s) = sdp::parse(data) {
        let _ = (s.audio(), s.t38());
        for m in &s.media {
            let _ = (
                m.is_hold(),
                m.effective_direction(),
                m.rtcp(),
                m.encoding(0),
            );
        }
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let n = INVITE.len();
    prop_oneof![
        (0..n, any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (
            0..n,
            prop::collection::vec(
                prop::sample::select(b"\r\n:;,<>\"\\ \t%\x00\xff=/".to_vec()),
                1..4
            )
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (0..n, 1usize..20).prop_map(|(i, l)| Mutation::Remove(i, l)),
        (0..n).prop_map(Mutation::Truncate),
    ]
}

fn apply(data: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Set(i, b) if *i < data.len() => data[*i] = *b,
        Mutation::Insert(i, v) if *i <= data.len() => {
            data.splice(*i..*i, v.iter().copied());
        }
        Mutation::Remove(i, l) if *i < data.len() => {
            let end = (*i + *l).min(data.len());
            data.drain(*i..end);
        }
        Mutation::Truncate(i) => data.truncate(*i),
        _ => {}
    }
}

fn random_case(s: &str, flips: &[bool]) -> String {
    s.chars()
        .zip(flips.iter().cycle())
        .map(|(c, &up)| {
            if up {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Joins a value with folding (CRLF + whitespace) at its first space.
fn fold(v: &str, nl: &str) -> String {
    match v.split_once(' ') {
        Some((a, b)) => format!("{a}{nl}\t {b}"),
        None => v.to_string(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise(&data);
        exercise_sdp(&data);
    }

    #[test]
    fn sip_looking_bytes_never_panic(
        lines in prop::collection::vec("[A-Za-z:;,<>\"\\\\ =@.%\t-]{0,40}", 0..12),
        body in prop::collection::vec(any::<u8>(), 0..100),
        lf in any::<bool>(),
    ) {
        let nl = if lf { "\n" } else { "\r\n" };
        let mut data = format!("INVITE sip:x@192.0.2.1 SIP/2.0{nl}{}{nl}{nl}", lines.join(nl)).into_bytes();
        data.extend_from_slice(&body);
        prop_assert!(sip::parse(&data).is_ok());
        exercise(&data);
    }

    #[test]
    fn mutated_invite_never_panics(muts in prop::collection::vec(mutation(), 1..8)) {
        let mut data = INVITE.to_vec();
        for m in &muts {
            apply(&mut data, m);
        }
        exercise(&data);
    }

    #[test]
    fn generated_message_round_trips(
        call_id in "[A-Za-z0-9.!%*_+`'~-]{1,30}(@[a-z0-9.]{1,20})?",
        seq in 0u32..=u32::MAX,
        tag in "[A-Za-z0-9.-]{1,20}",
        display in proptest::option::of("[A-Za-z ,;<>@]{0,15}"),
        body in prop::collection::vec(any::<u8>(), 0..200),
        order in Just((0..7usize).collect::<Vec<_>>()).prop_shuffle(),
        compact in prop::collection::vec(any::<bool>(), 7),
        flips in prop::collection::vec(any::<bool>(), 1..8),
        folded in prop::collection::vec(any::<bool>(), 7),
        lf in any::<bool>(),
        keepalives in 0usize..3,
        trailing in prop::collection::vec(any::<u8>(), 0..20),
    ) {
        let nl = if lf { "\n" } else { "\r\n" };
        let from = match &display {
            Some(d) => format!("\"{d}\" <sip:0312340001@192.0.2.1>;tag={tag}"),
            None => format!("<sip:0312340001@192.0.2.1>;tag={tag}"),
        };
        let headers: [(&str, &str, String); 7] = [
            ("Call-ID", "i", call_id.clone()),
            ("CSeq", "CSeq", format!("{seq} INVITE")),
            ("From", "f", from),
            ("To", "t", "<sip:0077260312349999@198.51.100.1>".to_string()),
            ("Via", "v", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK77".to_string()),
            ("Content-Length", "l", body.len().to_string()),
            ("Content-Type", "c", "application/octet-stream".to_string()),
        ];
        let mut text = "\r\n".repeat(keepalives);
        text.push_str(&format!("INVITE sip:0077260312349999@198.51.100.1 SIP/2.0{nl}"));
        for &i in &order {
            let (long, short, value) = &headers[i];
            let name = if compact[i] { short.to_string() } else { random_case(long, &flips) };
            // Folding is only legal where the value has linear whitespace.
            let value = if folded[i] && i != 0 { fold(value, nl) } else { value.clone() };
            text.push_str(&format!("{name}: {value}{nl}"));
        }
        text.push_str(nl);
        let mut data = text.into_bytes();
        data.extend_from_slice(&body);
        data.extend_from_slice(&trailing);

        let m = sip::parse(&data).unwrap();
        prop_assert_eq!(m.method(), Some("INVITE"));
        prop_assert_eq!(m.call_id(), Some(call_id.as_str()));
        prop_assert_eq!(m.cseq(), Some((seq, "INVITE")));
        prop_assert_eq!(m.from().and_then(|f| f.tag()), Some(tag.as_str()));
        // Folding is linear whitespace: the run at the fold reads as one space.
        let d = display.as_deref().map(|d| if folded[2] { unfold_first_space(d) } else { d.to_string() });
        let d = d.as_deref().map(str::trim).filter(|d| !d.is_empty());
        prop_assert_eq!(m.from().and_then(|f| f.display), d);
        prop_assert_eq!(m.body, &body[..]);
        prop_assert_eq!(m.vias()[0].branch(), Some("z9hG4bK77"));
        prop_assert_eq!(sip::message_len(&data), Some(data.len() - trailing.len()));
    }

    #[test]
    fn generated_sdp_round_trips(
        session_addr in prop::option::of(addr()),
        streams in prop::collection::vec((any::<u16>(), prop::option::of(addr()), prop::collection::vec(0u8..128, 1..6)), 1..4),
        lf in any::<bool>(),
    ) {
        let nl = if lf { "\n" } else { "\r\n" };
        let mut text = format!("v=0{nl}o=- 1 1 IN IP4 192.0.2.1{nl}s=-{nl}");
        if let Some(a) = session_addr {
            text.push_str(&format!("c=IN {} {a}{nl}", ip_kind(&a)));
        }
        text.push_str(&format!("t=0 0{nl}"));
        for (port, addr, pts) in &streams {
            let fmts: Vec<String> = pts.iter().map(u8::to_string).collect();
            text.push_str(&format!("m=audio {port} RTP/AVP {}{nl}", fmts.join(" ")));
            if let Some(a) = addr {
                text.push_str(&format!("c=IN {} {a}{nl}", ip_kind(a)));
            }
            text.push_str(&format!("a=rtpmap:{} X/8000{nl}", pts[0]));
        }
        let s = sdp::parse(text.as_bytes()).unwrap();
        prop_assert_eq!(s.connection, session_addr);
        prop_assert_eq!(s.media.len(), streams.len());
        for (m, (port, addr, pts)) in s.media.iter().zip(&streams) {
            prop_assert_eq!(m.port, *port);
            prop_assert_eq!(m.addr, addr.or(session_addr));
            prop_assert_eq!(&m.formats, pts);
            prop_assert_eq!(m.encoding(pts[0]), Some("X"));
        }
    }
}

fn unfold_first_space(v: &str) -> String {
    match v.split_once(' ') {
        Some((a, b)) => format!("{a} {}", b.trim_start()),
        None => v.to_string(),
    }
}

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..=255).prop_map(|h| IpAddr::from([192, 0, 2, h])),
        (0u8..=255).prop_map(|h| IpAddr::from([203, 0, 113, h])),
        any::<u16>().prop_map(|h| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, h])),
    ]
}

fn ip_kind(a: &IpAddr) -> &'static str {
    if a.is_ipv4() { "IP4" } else { "IP6" }
}
