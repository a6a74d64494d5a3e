//! HEPv3 export checked by tshark: a replay with `[hep]` pointed at a
//! UDP socket on 127.0.0.1; the datagrams received are written to a
//! capture and dissected by tshark (through `tests/hep/hep_v3.lua`, as
//! Debian's Wireshark 4.0 has no HEP dissector; the SIP inside is
//! Wireshark's own SIP dissector). The SIP payloads must be the capture's
//! SIP messages of the recorded calls, byte for byte, in order; the
//! unrecorded call is absent; the withheld caller's number is nowhere.

#[path = "support/config.rs"]
mod config_text;
use callrec::capture::LinkType;
use callrec::daemon::replay::{ReplayOptions, replay};
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, merge};
use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const T0: i64 = 1_795_221_000;

fn calls() -> Vec<CallSpec> {
    let t = |s: i64| Timestamp::from_secs_micros(T0 + s, 0);
    // Recorded: outbound with the prefix.
    let out = CallSpec::simple(1, "0312340001", "0077260312349999", t(0), 4_000);
    // Recorded: inbound to K-0002 from a withheld caller whose number is in PAI.
    let mut withheld = CallSpec::simple(2, "anonymous", "0612340002", t(1), 3_000);
    withheld.invite_headers = vec![
        "Privacy: id".into(),
        "P-Asserted-Identity: <sip:0398765432@192.0.2.1>".into(),
    ];
    // Not recorded: no prefix.
    let skipped = CallSpec::simple(3, "0312340001", "0312349999", t(2), 2_000);
    vec![out, withheld, skipped]
}

fn is_sip(p: &[u8]) -> bool {
    callrec::sip::looks_like_sip(p)
}

#[test]
fn hep_packets_carry_the_captured_sip_byte_for_byte() {
    if Command::new("tshark").arg("-v").output().is_err() {
        eprintln!("SKIP: tshark is not installed (scripts/setup.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let port = collector.local_addr().unwrap().port();
    let calls = calls();
    let pcap = dir.path().join("in.pcap");
    let mut w = PcapWriter::create(&pcap, LinkType::Ethernet).unwrap();
    for d in merge(&calls) {
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();
    let text = format!(
        r#"
[general]
timezone = "+09:00"
[recording]
spool_dir = "{spool}"
[announce]
mode = "off"
[hep]
collector = "127.0.0.1:{port}"
node_id = 77
{acme}{k1}[[contract]]
id = "K-0002"
service = "fixed"
numbers = ["0612340002"]
guidance = 4
channels = "mono"
destination = "acme"
"#,
        spool = dir.path().join("spool").display(),
        acme = config_text::ACME_UNREACHED,
        k1 = config_text::K0001_STEREO,
    );
    let cfg = callrec::config::load_str(&text, &dir.path().join("t.toml")).unwrap();
    let rx = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = collector.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    });
    let opts = ReplayOptions {
        out: dir.path().join("spool"),
        captures: vec![pcap.clone()],
        deliver: false,
        deliver_timeout: Duration::from_secs(1),
        shards: Some(1),
    };
    replay(cfg, &opts).expect("replay runs");
    let got = rx.join().unwrap();
    assert!(!got.is_empty(), "no HEP datagram arrived");

    // The datagrams as a capture, dissected by tshark.
    let hep_pcap = dir.path().join("hep.pcap");
    let mut w = PcapWriter::create(&hep_pcap, LinkType::Ethernet).unwrap();
    let (from, to) = (
        "127.0.0.1:40000".parse().unwrap(),
        format!("127.0.0.1:{port}").parse().unwrap(),
    );
    for (i, g) in got.iter().enumerate() {
        w.write(
            Timestamp::from_secs_micros(T0 + i as i64, 0),
            &udp_frame(from, to, g),
        )
        .unwrap();
    }
    w.finish().unwrap();
    let lua = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hep/hep_v3.lua");
    let out = Command::new("tshark")
        .arg("-X")
        .arg(format!("lua_script:{}", lua.display()))
        .arg("-r")
        .arg(&hep_pcap)
        .args(["-d", &format!("udp.port=={port},hep3test")])
        .args(["-T", "fields", "-E", "separator=|"])
        .args([
            "-e",
            "hep3test.proto",
            "-e",
            "hep3test.payload",
            "-e",
            "hep3test.correlation",
            "-e",
            "sip.Call-ID",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<String>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('|').map(String::from).collect())
        .collect();
    assert_eq!(rows.len(), got.len(), "tshark saw every datagram");

    let history = std::fs::read_to_string(dir.path().join("spool/calls.jsonl")).unwrap();
    let hist: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let recorded: Vec<&str> = hist
        .iter()
        .filter(|h| h["decision"] == "record")
        .map(|h| h["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(recorded.len(), 2, "{history}");
    // What the capture had: the recorded calls' SIP, in capture order (by call, as exported).
    let mut want: Vec<Vec<u8>> = Vec::new();
    for id in hist
        .iter()
        .filter(|h| h["decision"] == "record")
        .map(|h| h["call_id"].as_str().unwrap())
    {
        for d in merge(&calls) {
            if is_sip(&d.payload)
                && callrec::sip::parse(&d.payload)
                    .ok()
                    .and_then(|m| m.call_id().map(String::from))
                    .as_deref()
                    == Some(id)
            {
                want.push(d.payload);
            }
        }
    }
    let sip_rows: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == "1").collect();
    assert_eq!(sip_rows.len(), want.len());
    // Late messages (the 200 OK to a BYE) may follow another call's: compare
    // call by call, by the Call-ID tshark's SIP dissector found.
    for id in &recorded {
        let exported: Vec<&&Vec<String>> = sip_rows.iter().filter(|r| r[3] == *id).collect();
        let captured: Vec<&Vec<u8>> = want
            .iter()
            .filter(|w| {
                callrec::sip::parse(w)
                    .ok()
                    .and_then(|m| m.call_id().map(String::from))
                    .as_deref()
                    == Some(*id)
            })
            .collect();
        assert_eq!(exported.len(), captured.len(), "{id}");
        for (r, w) in exported.iter().zip(captured) {
            let payload = hex::decode(r[1].replace(':', "")).unwrap();
            if String::from_utf8_lossy(w).contains("0398765432") {
                let masked = callrec::history::hep::mask_withheld(w);
                assert_eq!(payload, masked);
                assert!(!String::from_utf8_lossy(&payload).contains("0398765432"));
            } else {
                assert_eq!(payload, *w, "byte for byte");
            }
        }
    }
    // The unrecorded call's SIP was not exported.
    let skipped_id = hist.iter().find(|h| h["decision"] == "skip").unwrap()["call_id"]
        .as_str()
        .unwrap();
    assert!(rows.iter().all(|r| r[3] != skipped_id));
    // One report per recorded call, correlated by Call-ID, naming the short id.
    let reports: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == "100").collect();
    assert_eq!(reports.len(), 2);
    for r in reports {
        let j: serde_json::Value =
            serde_json::from_slice(&hex::decode(r[1].replace(':', "")).unwrap()).unwrap();
        let h = hist
            .iter()
            .find(|h| h["call_id"] == r[2].as_str())
            .expect("correlation id is a Call-ID");
        assert_eq!(j["callrec"]["short_id"], h["short_id"]);
        assert!(!r[1].is_empty());
    }
    // Nowhere in any datagram: the withheld number.
    assert!(
        got.iter()
            .all(|g| !String::from_utf8_lossy(g).contains("0398765432"))
    );
}
