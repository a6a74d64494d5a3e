//! Issue 18, finding 5: cut and odd captures must not pass in silence.
//! A capture whose frames were cut below their length (a small snap
//! length) is named with its file, first cut packet and snap length, and
//! makes `replay` exit 1 when no call could be recorded; a record header
//! with impossible fields (`tv_usec` of a million or more, a captured
//! length above the original) is an error; `limits.sip_message_bytes` is
//! enforced over TCP and UDP alike, with a counter.

#[path = "support/hostile.rs"]
mod hostile;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{tcp_segments, udp_frame};
use callrec_testkit::scenario::{CallSpec, Datagram, Voice, merge};
use hostile::{RawPcap, T0, config, config_text, replay_datagrams};
use std::path::Path;
use std::process::Command;

fn two_calls() -> Vec<CallSpec> {
    let t = |ms: i64| Timestamp::from_millis(T0 * 1000 + ms);
    let a = CallSpec::simple(1, "0312340001", "0077260312349999", t(0), 3_000);
    let mut b = CallSpec::simple(2, "0398765432", "0612340002", t(500), 2_000);
    b.b_voice = Voice::tone(1300.0);
    vec![a, b]
}

/// `callrec replay` as an operator runs it: exit code and everything printed.
fn replay_cli(dir: &Path, extra: &str, capture: &Path) -> (i32, String) {
    let cfg = dir.join("callrec.toml");
    std::fs::write(&cfg, config_text(dir, extra)).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_callrec"))
        .arg("replay")
        .arg("--config")
        .arg(&cfg)
        .arg("--out")
        .arg(dir.join("out"))
        .arg(capture)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code().unwrap_or(-1), text)
}

fn cut_capture(path: &Path, snaplen: usize, calls: &[CallSpec]) -> usize {
    let mut w = RawPcap::create(path, snaplen as u32);
    let all = merge(calls);
    for d in &all {
        w.frame(d.ts, &udp_frame(d.src, d.dst, &d.payload), snaplen);
    }
    w.finish();
    all.len()
}

/// The finding: a capture made with a 64-byte snap length used to give no
/// recording, exit 0 and only a count of malformed frames.
#[test]
fn a_capture_cut_to_64_bytes_is_named_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("cut64.pcap");
    let n = cut_capture(&pcap, 64, &two_calls());
    let (code, text) = replay_cli(dir.path(), "", &pcap);
    assert_eq!(code, 1, "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("error:") && l.contains("cut"))
        .unwrap_or_else(|| panic!("no error line about the cut frames: {text}"));
    assert!(line.contains(&pcap.display().to_string()), "{line}");
    assert!(line.contains("packet 1"), "{line}");
    assert!(line.contains("snap length 64"), "{line}");
    assert!(line.contains(&format!("{n} of {n}")), "{line}");
}

/// The kind: snap lengths that cut the signalling (no call: exit 1) and
/// one that only cuts a stray large datagram (calls recorded: exit 0, a
/// warning still names the cut).
#[test]
fn snap_lengths_that_lose_calls_fail_and_others_warn() {
    for snaplen in [64usize, 128, 200, 400] {
        let dir = tempfile::tempdir().unwrap();
        let pcap = dir.path().join(format!("cut{snaplen}.pcap"));
        cut_capture(&pcap, snaplen, &two_calls());
        let (code, text) = replay_cli(dir.path(), "", &pcap);
        assert_eq!(code, 1, "snap length {snaplen}: {text}");
        assert!(
            text.contains(&format!("snap length {snaplen}")),
            "{snaplen}: {text}"
        );
    }
    // Full frames, but one stray 3,000-byte datagram cut to 1,500 bytes.
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("stray.pcap");
    let mut w = RawPcap::create(&pcap, 1500);
    let all = merge(&two_calls());
    for (i, d) in all.iter().enumerate() {
        w.frame(d.ts, &udp_frame(d.src, d.dst, &d.payload), 1500);
        if i == 10 {
            let big = udp_frame(
                "198.51.100.200:9999".parse().unwrap(),
                "198.51.100.201:9999".parse().unwrap(),
                &[0x55; 3000],
            );
            w.frame(d.ts, &big, 1500);
        }
    }
    w.finish();
    let (code, text) = replay_cli(dir.path(), "", &pcap);
    assert_eq!(code, 0, "{text}");
    let warn = text
        .lines()
        .find(|l| l.starts_with("warning:") && l.contains("snap length 1500"))
        .unwrap_or_else(|| panic!("no warning naming the cut: {text}"));
    assert!(warn.contains("packet 12"), "{warn}");
    assert!(text.contains("recorded 2"), "{text}");
}

/// Record headers libpcap hands out as they are: a `tv_usec` of a million
/// or more, a captured length above the original length. Each is an
/// error naming the file and the packet; the record is skipped and the
/// rest of the file still replayed.
#[test]
fn malformed_record_headers_are_errors() {
    for bad in ["usec", "caplen"] {
        let dir = tempfile::tempdir().unwrap();
        let pcap = dir.path().join(format!("{bad}.pcap"));
        let mut w = RawPcap::create(&pcap, 65535);
        let all = merge(&two_calls());
        for (i, d) in all.iter().enumerate() {
            let frame = udp_frame(d.src, d.dst, &d.payload);
            let us = d.ts.micros();
            let (s, u) = (us / 1_000_000, us % 1_000_000);
            if i == 40 {
                match bad {
                    "usec" => w.record(s as u32, 1_500_000, &frame, frame.len() as u32),
                    _ => w.record(s as u32, u as u32, &frame, frame.len() as u32 - 10),
                }
            } else {
                w.record(s as u32, u as u32, &frame, frame.len() as u32);
            }
        }
        w.finish();
        let (code, text) = replay_cli(dir.path(), "", &pcap);
        assert_eq!(code, 1, "{bad}: {text}");
        let line = text
            .lines()
            .find(|l| l.starts_with("error:") && l.contains("packet 41"))
            .unwrap_or_else(|| panic!("{bad}: no error naming packet 41: {text}"));
        assert!(line.contains(&pcap.display().to_string()), "{line}");
        assert!(text.contains("recorded 2"), "{bad}: {text}");
    }
}

/// A valid INVITE made 70 KB long by one padding header.
fn padded(invite: &[u8], bytes: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(invite);
    let (head, rest) = text.split_once("\r\n").unwrap();
    format!("{head}\r\nX-Pad: {}\r\n{rest}", "a".repeat(bytes)).into_bytes()
}

/// The call with its INVITE sent over TCP, made 70 KB long; the rest of
/// its signalling and media over UDP.
fn big_invite_capture(path: &Path, call: &CallSpec) {
    let mut w =
        callrec_testkit::pcapgen::PcapWriter::create(path, callrec::capture::LinkType::Ethernet)
            .unwrap();
    for d in call.datagrams() {
        if d.payload.starts_with(b"INVITE") {
            for seg in tcp_segments(d.src, d.dst, 1000, &padded(&d.payload, 70_000), 1400) {
                w.write(d.ts, &seg).unwrap();
            }
        } else {
            w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
        }
    }
    w.finish().unwrap();
}

/// The finding: `limits.sip_message_bytes` (64 KiB) used to be enforced
/// nowhere; a 70 KB INVITE over TCP was taken and its call recorded.
#[test]
fn an_invite_over_the_size_limit_is_refused_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let call = two_calls().remove(0);
    let pcap = dir.path().join("big.pcap");
    big_invite_capture(&pcap, &call);
    let run = hostile::replay_into(
        config(dir.path(), ""),
        std::slice::from_ref(&pcap),
        &dir.path().join("out"),
    );
    assert!(run.history_of(&call.call_id).is_none(), "{:?}", run.history);
    assert_eq!(
        run.report.decode.sip_oversized, 1,
        "{:?}",
        run.report.decode
    );
    let summary = run.report.summary();
    assert!(
        summary.contains("over limits.sip_message_bytes 1"),
        "{summary}"
    );
    // With a limit above it, the same INVITE is taken and the call recorded.
    let run = hostile::replay_into(
        config(dir.path(), "[limits]\nsip_message_bytes = \"128KiB\"\n"),
        &[pcap],
        &dir.path().join("out2"),
    );
    assert!(run.recording(&call.call_id).is_some(), "{:?}", run.history);
}

/// The same limit over UDP: with `sip_message_bytes = "4KiB"`, an 8 KB
/// INVITE in one (jumbo) datagram is refused and counted; the other call
/// goes on.
#[test]
fn an_invite_over_the_size_limit_is_refused_over_udp() {
    let dir = tempfile::tempdir().unwrap();
    let calls = two_calls();
    let all: Vec<Datagram> = merge(&calls)
        .into_iter()
        .map(|mut d| {
            if d.payload.starts_with(b"INVITE") && d.src == calls[0].a_sip {
                d.payload = padded(&d.payload, 8_000);
            }
            d
        })
        .collect();
    let run = replay_datagrams(
        dir.path(),
        "udp",
        config(dir.path(), "[limits]\nsip_message_bytes = \"4KiB\"\n"),
        &all,
    );
    assert!(run.history_of(&calls[0].call_id).is_none());
    assert!(run.recording(&calls[1].call_id).is_some());
    assert_eq!(
        run.report.decode.sip_oversized, 1,
        "{:?}",
        run.report.decode
    );
}
