//! HEPv3 export checked by two independent implementations: a replay with
//! `[hep]` pointed at a UDP socket on 127.0.0.1; the datagrams received
//! are decoded by hep-js, the Homer project's own HEPv3 library (npm,
//! through `tests/hep/decode.js`; Debian's Wireshark 4.0 has no HEP
//! dissector), and the capture replayed is dissected by tshark. Every SIP
//! payload must be one of the capture's SIP messages of a recorded call as
//! tshark sees it, byte for byte, in capture order, with the same IP
//! family, addresses, ports and packet time; the capture id is
//! `hep.node_id`; each recorded call has one report (payload type 100)
//! correlated by its Call-ID and naming its short id; the unrecorded call
//! is absent; the withheld caller's number is nowhere.

#[path = "support/config.rs"]
mod config_text;
use callrec::capture::LinkType;
use callrec::daemon::replay::{ReplayOptions, replay};
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, merge};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
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

/// The replay's configuration: the two contracts, HEP to `port` on the
/// loopback with capture id 77.
fn config(dir: &Path, port: u16) -> String {
    format!(
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
        spool = dir.join("spool").display(),
        acme = config_text::ACME_UNREACHED,
        k1 = config_text::K0001_STEREO,
    )
}

/// Where scripts/setup.sh installs hep-js (outside the repository).
const HEPJS_DIR: &str = "/var/cache/callrec-test/hep-js";

/// The folder holding `node_modules/hep-js` (`HEPJS_DIR` in the
/// environment overrides), or None with a SKIP line when node or hep-js
/// is not installed.
fn hep_js() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var("HEPJS_DIR").unwrap_or_else(|_| HEPJS_DIR.into()));
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!("SKIP: node is not installed (scripts/setup.sh installs nodejs)");
        return None;
    }
    if !dir.join("node_modules/hep-js/package.json").is_file() {
        eprintln!(
            "SKIP: hep-js is not installed in {} (scripts/setup.sh installs it)",
            dir.display()
        );
        return None;
    }
    Some(dir)
}

/// The datagrams decoded by hep-js: one JSON object each.
fn decode_with_hep_js(dir: &Path, got: &[Vec<u8>]) -> Vec<serde_json::Value> {
    use std::io::Write;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hep/decode.js");
    let mut child = Command::new("node")
        .arg(script)
        .env("HEPJS_DIR", dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for g in got {
        input.push_str(&hex::encode(g));
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "hep-js: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// One SIP message of the capture as tshark dissects it.
#[derive(Debug)]
struct Captured {
    secs: u64,
    micros: u64,
    src: String,
    sport: u64,
    dst: String,
    dport: u64,
    call_id: String,
    payload: Vec<u8>,
}

/// The capture's SIP messages, in capture order, through tshark.
fn sip_by_tshark(pcap: &Path) -> Vec<Captured> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-Y", "sip", "-T", "fields", "-E", "separator=|"])
        .args([
            "-e",
            "frame.time_epoch",
            "-e",
            "ip.src",
            "-e",
            "udp.srcport",
        ])
        .args(["-e", "ip.dst", "-e", "udp.dstport", "-e", "sip.Call-ID"])
        .args(["-e", "udp.payload"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            let (secs, frac) = f[0].split_once('.').unwrap();
            Captured {
                secs: secs.parse().unwrap(),
                micros: format!("{frac:0<6}")[..6].parse().unwrap(),
                src: f[1].into(),
                sport: f[2].parse().unwrap(),
                dst: f[3].into(),
                dport: f[4].parse().unwrap(),
                call_id: f[5].into(),
                payload: hex::decode(f[6].replace(':', "")).unwrap(),
            }
        })
        .collect()
}

#[test]
fn hep_packets_carry_the_captured_sip_byte_for_byte() {
    if Command::new("tshark").arg("-v").output().is_err() {
        eprintln!("SKIP: tshark is not installed (scripts/setup.sh installs it)");
        return;
    }
    let Some(hepjs) = hep_js() else { return };
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
    let text = config(dir.path(), port);
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

    let rows = decode_with_hep_js(&hepjs, &got);
    assert_eq!(rows.len(), got.len(), "hep-js read every datagram");
    for r in &rows {
        assert!(r.get("error").is_none(), "{r}");
        let i = &r["rcinfo"];
        assert_eq!(i["protocolFamily"], 2, "IPv4: {r}");
        assert_eq!(i["protocol"], 17, "UDP: {r}");
        assert_eq!(i["captureId"], 77, "hep.node_id: {r}");
    }

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
    let captured = sip_by_tshark(&pcap);
    assert!(captured.len() >= 12, "{captured:?}");

    let sip_rows: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["rcinfo"]["payloadType"] == 1)
        .collect();
    let wanted = captured
        .iter()
        .filter(|c| recorded.contains(&c.call_id.as_str()))
        .count();
    assert_eq!(
        sip_rows.len(),
        wanted,
        "every SIP message of the recorded calls"
    );
    // Late messages (the 200 OK to a BYE) may follow another call's: compare
    // call by call, each in capture order.
    for id in &recorded {
        let exported: Vec<&&serde_json::Value> = sip_rows
            .iter()
            .filter(|r| {
                let p = hex::decode(r["payload_hex"].as_str().unwrap()).unwrap();
                callrec::sip::parse(&p)
                    .ok()
                    .and_then(|m| m.call_id().map(String::from))
                    .as_deref()
                    == Some(*id)
            })
            .collect();
        let want: Vec<&Captured> = captured.iter().filter(|c| c.call_id == *id).collect();
        assert_eq!(exported.len(), want.len(), "{id}");
        for (r, c) in exported.iter().zip(want) {
            let i = &r["rcinfo"];
            assert_eq!(i["srcIp"], c.src.as_str(), "{r}");
            assert_eq!(i["dstIp"], c.dst.as_str(), "{r}");
            assert_eq!(i["srcPort"], c.sport, "{r}");
            assert_eq!(i["dstPort"], c.dport, "{r}");
            assert_eq!(i["timeSeconds"], c.secs, "{r}");
            assert_eq!(i["timeUseconds"], c.micros, "{r}");
            let payload = hex::decode(r["payload_hex"].as_str().unwrap()).unwrap();
            if String::from_utf8_lossy(&c.payload).contains("0398765432") {
                // The withheld caller's identity headers are masked, the
                // rest of the message is the captured bytes.
                let masked = callrec::history::hep::mask_withheld(&c.payload);
                assert_ne!(masked, c.payload);
                assert_eq!(payload, masked);
                assert!(!String::from_utf8_lossy(&payload).contains("0398765432"));
            } else {
                assert_eq!(payload, c.payload, "byte for byte");
            }
        }
    }
    // The unrecorded call's SIP was not exported.
    let skipped_id = hist.iter().find(|h| h["decision"] == "skip").unwrap()["call_id"]
        .as_str()
        .unwrap();
    assert!(captured.iter().any(|c| c.call_id == skipped_id));
    assert!(rows.iter().all(|r| {
        let p = hex::decode(r["payload_hex"].as_str().unwrap()).unwrap();
        !String::from_utf8_lossy(&p).contains(skipped_id)
    }));
    // One report per recorded call, correlated by Call-ID, naming the
    // short id, at the call's end time; and one per published recording
    // naming its file as queued in the spool.
    let reports: Vec<(&serde_json::Value, serde_json::Value)> = rows
        .iter()
        .filter(|r| r["rcinfo"]["payloadType"] == 100)
        .map(|r| {
            let p = hex::decode(r["payload_hex"].as_str().unwrap()).unwrap();
            (r, serde_json::from_slice(&p).unwrap())
        })
        .collect();
    let (files, calls): (Vec<_>, Vec<_>) = reports
        .iter()
        .partition(|(_, j)| j["callrec"]["event"] == "recording");
    assert_eq!(calls.len(), 2);
    for (r, j) in calls {
        let h = hist
            .iter()
            .find(|h| h["call_id"] == r["rcinfo"]["correlation_id"])
            .expect("correlation id is a Call-ID");
        assert_eq!(j["callrec"]["short_id"], h["short_id"]);
        assert_eq!(j["callrec"]["call_id"], h["call_id"]);
        let ended = callrec::report::parse_rfc3339(h["ended_at"].as_str().unwrap()).unwrap();
        assert_eq!(r["rcinfo"]["timeSeconds"], ended.div_euclid(1_000_000));
        assert_eq!(r["rcinfo"]["timeUseconds"], ended.rem_euclid(1_000_000));
    }
    let segments: u64 = hist
        .iter()
        .filter(|h| h["decision"] == "record")
        .map(|h| h["segments"].as_u64().unwrap())
        .sum();
    assert_eq!(files.len() as u64, segments, "{reports:?}");
    for (r, j) in files {
        let c = &j["callrec"];
        assert_eq!(c["call_id"], r["rcinfo"]["correlation_id"]);
        let h = hist.iter().find(|h| h["call_id"] == c["call_id"]).unwrap();
        assert_eq!(c["short_id"], h["short_id"]);
        let file = c["file"].as_str().unwrap();
        assert!(file.contains(h["short_id"].as_str().unwrap()), "{file}");
        let queued = dir
            .path()
            .join("spool/queue")
            .join(c["destination"].as_str().unwrap())
            .join("ready")
            .join(file);
        assert!(queued.is_file(), "{}", queued.display());
    }
    // Nowhere in any datagram: the withheld number.
    assert!(
        got.iter()
            .all(|g| !String::from_utf8_lossy(g).contains("0398765432"))
    );
}

/// A collector that is not there (a closed port: every datagram draws an
/// ICMP port unreachable) changes nothing in recording: the replay
/// succeeds, the history has every call, the recorded calls are queued.
#[test]
fn an_unreachable_collector_costs_nothing_but_the_export() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    }; // closed again
    let pcap = dir.path().join("in.pcap");
    let mut w = PcapWriter::create(&pcap, LinkType::Ethernet).unwrap();
    for d in merge(&calls()) {
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();
    let cfg =
        callrec::config::load_str(&config(dir.path(), port), &dir.path().join("t.toml")).unwrap();
    let opts = ReplayOptions {
        out: dir.path().join("spool"),
        captures: vec![pcap],
        deliver: false,
        deliver_timeout: Duration::from_secs(1),
        shards: Some(1),
    };
    replay(cfg, &opts).expect("replay runs");
    let history = std::fs::read_to_string(dir.path().join("spool/calls.jsonl")).unwrap();
    let hist: Vec<serde_json::Value> = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(hist.len(), 3, "{history}");
    assert_eq!(hist.iter().filter(|h| h["decision"] == "record").count(), 2);
    let mut queued = 0;
    let ready = dir.path().join("spool/queue/acme/ready");
    let mut stack = vec![ready];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else if e.path().extension().is_some_and(|x| x == "json") {
                queued += 1;
            }
        }
    }
    assert_eq!(queued, 2, "both recorded calls queued");
}
