//! Two field failures, replayed from generated captures:
//! - a call whose BYE is never captured ends on the RTP timeout, and its
//!   recording runs to its last RTP packet (it used to stop at the last
//!   once-a-second keep-alive, up to 0.9 s early);
//! - on an inbound call, a re-INVITE from the remote side (the caller)
//!   with a new P-Asserted-Identity is a transfer: two segments, the new
//!   party's tone in the second (the remote identity used to be taken
//!   from the 200 OK, which on an inbound call is the subscriber's).

#[path = "support/audio.rs"]
mod audio;
#[path = "support/config.rs"]
mod config_text;
use audio::{files, power_norm as power};
use callrec::capture::LinkType;
use callrec::daemon::replay::{ReplayOptions, replay};
use callrec::recording::wav::read_wav;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, Datagram, Voice};
use std::path::{Path, PathBuf};
use std::time::Duration;

const T0: i64 = 1_795_221_000;

fn config(dir: &Path) -> callrec::config::Config {
    let text = format!(
        r#"
[general]
timezone = "+09:00"
[recording]
spool_dir = "{spool}"
rtp_timeout = "5s"
[announce]
mode = "off"
{acme}[[contract]]
id = "K-0001"
service = "fixed"
numbers = ["0312340001"]
guidance = 1
channels = "stereo"
destination = "acme"
"#,
        acme = config_text::ACME_UNREACHED,
        spool = dir.join("spool").display(),
    );
    callrec::config::load_str(&text, &dir.join("test.toml")).expect("test config loads")
}

fn run(dir: &Path, datagrams: &[Datagram]) -> PathBuf {
    let pcap = dir.join("in.pcap");
    let mut w = PcapWriter::create(&pcap, LinkType::Ethernet).unwrap();
    for d in datagrams {
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();
    let out = dir.join("out");
    let opts = ReplayOptions {
        out: out.clone(),
        captures: vec![pcap],
        deliver: false,
        deliver_timeout: Duration::from_secs(1),
        shards: Some(1),
    };
    let report = replay(config(dir), &opts).expect("replay runs");
    assert!(report.capture_errors.is_empty());
    out
}

/// (metadata, left, right) of each published segment, by index.
fn segments(spool: &Path) -> Vec<(serde_json::Value, Vec<i16>, Vec<i16>)> {
    let mut out: Vec<_> = files(&spool.join("queue/acme/ready"), "json")
        .iter()
        .map(|j| {
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(j).unwrap()).unwrap();
            let w = read_wav(&j.with_file_name(meta["audio"]["file"].as_str().unwrap())).unwrap();
            assert_eq!((w.channels, w.rate), (2, 8000));
            let mut ch = w.samples.into_iter();
            (meta, ch.next().unwrap(), ch.next().unwrap())
        })
        .collect();
    out.sort_by_key(|s| s.0["segment"]["index"].as_u64());
    out
}

fn is_sip(d: &Datagram) -> bool {
    d.payload.first().is_some_and(|b| b.is_ascii_alphabetic())
}

#[test]
fn byeless_call_records_to_its_last_rtp_packet() {
    let dir = tempfile::tempdir().unwrap();
    // Talk of 7.93 s: the last packet falls between two keep-alives.
    let mut c = CallSpec::simple(
        1,
        "0312340001",
        "0077270312349999",
        Timestamp::from_secs_micros(T0, 0),
        7_930,
    );
    c.a_voice = Voice::tone(600.0);
    c.b_voice = Voice::tone(1000.0);
    let all = c.datagrams();
    let text = |d: &Datagram| String::from_utf8_lossy(&d.payload).into_owned();
    let kept: Vec<Datagram> = all
        .iter()
        .filter(|d| !(is_sip(d) && text(d).contains(" BYE\r\n")))
        .cloned()
        .collect();
    assert!(kept.len() < all.len(), "the BYE was taken out");
    let last_rtp = kept
        .iter()
        .filter(|d| !is_sip(d))
        .map(|d| d.ts)
        .max()
        .unwrap();
    // Other traffic goes on (keep-alives of another host): the capture's
    // clock runs past the RTP timeout.
    let mut kept = kept;
    for k in 1..=8 {
        kept.push(Datagram {
            ts: last_rtp.add_micros(k * 1_000_000 + 333),
            src: "203.0.113.50:5060".parse().unwrap(),
            dst: "203.0.113.51:5060".parse().unwrap(),
            payload: format!("OPTIONS sip:ping@203.0.113.51 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.50;branch=z9hG4bKo{k}\r\nFrom: <sip:ping@203.0.113.50>;tag=o\r\nTo: <sip:ping@203.0.113.51>\r\nCall-ID: ping-{k}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").into_bytes(),
        });
    }
    let spool = run(dir.path(), &kept);
    let segs = segments(&spool);
    assert_eq!(segs.len(), 1);
    let (meta, l, r) = &segs[0];
    assert_eq!(meta["end_reason"], "rtp-timeout");
    let heard_ms = last_rtp.since(c.answer_at()) / 1000;
    let got_ms = l.len() as i64 / 8;
    assert!(
        (got_ms - heard_ms).abs() <= 20,
        "recording is {got_ms} ms, the last RTP packet was captured {heard_ms} ms after the answer"
    );
    // Both parties are still speaking in the file's last 100 ms minus
    // the last packet's own span.
    let tail = |x: &[i16]| x[x.len() - 800..x.len() - 160].to_vec();
    assert!(power(&tail(l), 600.0) > 1e5, "subscriber cut");
    assert!(power(&tail(r), 1000.0) > 1e5, "remote cut");
}

#[test]
fn inbound_transfer_by_remote_reinvite_gives_two_segments() {
    let dir = tempfile::tempdir().unwrap();
    // Inbound: A is the remote caller, B the subscriber's line.
    let mut c = CallSpec::simple(
        2,
        "09011112222",
        "0312340001",
        Timestamp::from_secs_micros(T0, 0),
        8_000,
    );
    c.invite_headers = vec!["P-Asserted-Identity: <sip:09011112222@203.0.113.9>".into()];
    // The subscriber's 200 asserts no identity (its own network adds none).
    c.a_voice = Voice::tone(440.0);
    c.a_voice.tone_changes = vec![(4_000, 1_000.0)];
    c.b_voice = Voice::tone(600.0);
    let mut dg = c.datagrams();
    // The remote side's re-INVITE 4 s after the answer, with the
    // transferred-to party's identity, and the subscriber's 200.
    let invite = dg
        .iter()
        .find(|d| d.payload.starts_with(b"INVITE"))
        .unwrap()
        .clone();
    let ok = dg
        .iter()
        .find(|d| {
            d.payload.starts_with(b"SIP/2.0 200")
                && String::from_utf8_lossy(&d.payload).contains("INVITE")
        })
        .unwrap()
        .clone();
    let header = |d: &Datagram, name: &str| {
        String::from_utf8_lossy(&d.payload)
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .to_owned()
    };
    let body = |d: &Datagram| {
        let t = String::from_utf8_lossy(&d.payload).into_owned();
        t.split_once("\r\n\r\n").unwrap().1.to_owned()
    };
    let at = c.answer_at().add_micros(4_000_000);
    let sdp = body(&invite).replace(" 1 1 IN", " 1 2 IN");
    let reinvite = format!(
        "INVITE sip:0312340001@{b} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bKre\r\nMax-Forwards: 70\r\n{from}\r\n{to}\r\n{cid}\r\nCSeq: 2 INVITE\r\nContact: <sip:09011112222@{a}>\r\nP-Asserted-Identity: <sip:0312347777@203.0.113.9>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len(),
        a = c.a_sip,
        b = c.b_sip.ip(),
        from = header(&invite, "From:"),
        to = header(&ok, "To:"),
        cid = header(&invite, "Call-ID:"),
    );
    let answer = body(&ok).replace(" 2 1 IN", " 2 2 IN");
    let reply = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bKre\r\n{from}\r\n{to}\r\n{cid}\r\nCSeq: 2 INVITE\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
        answer.len(),
        a = c.a_sip,
        from = header(&invite, "From:"),
        to = header(&ok, "To:"),
        cid = header(&invite, "Call-ID:"),
    );
    dg.push(Datagram {
        ts: at,
        src: c.a_sip,
        dst: c.b_sip,
        payload: reinvite.into_bytes(),
    });
    dg.push(Datagram {
        ts: at.add_micros(20_000),
        src: c.b_sip,
        dst: c.a_sip,
        payload: reply.into_bytes(),
    });
    dg.sort_by_key(|d| d.ts);
    let spool = run(dir.path(), &dg);
    let segs = segments(&spool);
    assert_eq!(segs.len(), 2, "an inbound transfer is a second segment");
    let (m1, l1, r1) = &segs[0];
    let (m2, l2, r2) = &segs[1];
    assert_eq!(m1["direction"], "inbound");
    let ms1 = l1.len() as i64 / 8;
    assert!((ms1 - 4_000).abs() <= 60, "first segment {ms1} ms");
    assert!((l2.len() as i64 / 8 - 4_000).abs() <= 60);
    // Left is the subscriber (600 Hz) in both; right the remote, 440 Hz
    // before the transfer and the new party's 1000 Hz after it.
    let mid = |x: &[i16]| x[800..x.len() - 800].to_vec();
    assert!(power(&mid(l1), 600.0) > 1e5 && power(&mid(l2), 600.0) > 1e5);
    assert!(power(&mid(r1), 440.0) > 100.0 * power(&mid(r1), 1000.0));
    assert!(power(&mid(r2), 1000.0) > 100.0 * power(&mid(r2), 440.0));
    assert_eq!(m2["segment"]["count"], 2);
}
