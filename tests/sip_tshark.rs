//! Cross-checks the SIP and SDP parsers against an independent one:
//! tshark's dissector. For every SIP-over-UDP message in the public
//! captures, tshark exports the raw UDP payload and what it read from it;
//! our parse of the same bytes must agree on method, status, Call-ID, CSeq,
//! SDP media ports and connection addresses.

use callrec::sip::{self, sdp};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

const FIELDS: &[&str] = &[
    "frame.number",
    "udp.payload",
    "sip.Method",
    "sip.Status-Code",
    "sip.Call-ID",
    "sip.CSeq.seq",
    "sip.CSeq.method",
    "sdp.media.port",
    "sdp.connection_info.address",
];

fn captures() -> Option<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pcaps/public");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        eprintln!("SKIP: {} is absent", dir.display());
        return None;
    };
    if Command::new("tshark").arg("-v").output().is_err() {
        eprintln!("SKIP: tshark is not installed");
        return None;
    }
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "pcap" || e == "pcapng" || e == "cap")
        })
        .collect();
    v.sort();
    Some(v)
}

fn tshark_rows(file: &Path) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file).args([
        "-Y",
        "sip && udp",
        "-T",
        "fields",
        "-E",
        "separator=/t",
        "-E",
        "occurrence=a",
    ]);
    for f in FIELDS {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('\t').map(String::from).collect::<Vec<_>>())
        .filter(|r| r.len() == FIELDS.len())
        .collect()
}

fn addr(s: &str) -> Option<IpAddr> {
    s.split('/').next()?.trim().parse().ok()
}

#[test]
fn parser_agrees_with_tshark_on_public_captures() {
    let Some(files) = captures() else { return };
    let (mut messages, mut with_sdp) = (0usize, 0usize);
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        for row in tshark_rows(file) {
            let [
                frame,
                payload,
                method,
                status,
                call_id,
                seq,
                cseq_method,
                ports,
                addrs,
            ] = &row[..]
            else {
                continue;
            };
            // A datagram carrying several SIP messages, or a tunnel with two
            // UDP layers, shows aggregated values: take the innermost payload
            // and skip rows that hold more than one message.
            let payload = payload.rsplit(',').next().unwrap_or("");
            if call_id.contains(',') || seq.contains(',') || payload.is_empty() {
                continue;
            }
            let where_ = format!("{name} frame {frame}");
            let bytes = hex::decode(payload).unwrap_or_else(|e| panic!("{where_}: bad hex: {e}"));
            let m = sip::parse(&bytes)
                .unwrap_or_else(|e| panic!("{where_}: tshark reads SIP, we fail: {e}"));
            messages += 1;
            if method.is_empty() {
                assert_eq!(
                    m.status().map(|s| s.to_string()).as_deref(),
                    Some(status.as_str()),
                    "{where_}: status"
                );
            } else {
                assert!(m.is_request(), "{where_}");
                assert_eq!(m.method(), Some(method.as_str()), "{where_}: method");
            }
            if !call_id.is_empty() {
                assert_eq!(m.call_id(), Some(call_id.as_str()), "{where_}: Call-ID");
            }
            if !seq.is_empty() {
                let (n, cm) = m.cseq().unwrap_or_else(|| panic!("{where_}: no CSeq"));
                assert_eq!(n.to_string(), *seq, "{where_}: CSeq number");
                assert_eq!(cm, cseq_method, "{where_}: CSeq method");
            }
            if ports.is_empty() {
                continue;
            }
            let body = m
                .sdp()
                .unwrap_or_else(|| panic!("{where_}: tshark finds SDP, we do not"));
            let s = sdp::parse(body).unwrap_or_else(|e| panic!("{where_}: SDP: {e}"));
            with_sdp += 1;
            let theirs: Vec<u16> = ports
                .split(',')
                .filter_map(|p| p.trim().parse().ok())
                .collect();
            let ours: Vec<u16> = s.media.iter().map(|m| m.port).collect();
            assert_eq!(ours, theirs, "{where_}: media ports");
            let theirs: BTreeSet<IpAddr> = addrs.split(',').filter_map(addr).collect();
            let ours: BTreeSet<IpAddr> = s
                .connection
                .into_iter()
                .chain(s.media.iter().filter_map(|m| m.addr))
                .collect();
            assert_eq!(ours, theirs, "{where_}: connection addresses");
        }
    }
    eprintln!(
        "{} captures, {messages} SIP messages agree with tshark, {with_sdp} with SDP",
        files.len()
    );
    assert!(
        messages > 1000,
        "expected the public captures to hold SIP over UDP, found {messages}"
    );
    assert!(with_sdp > 50, "expected SDP bodies, found {with_sdp}");
}
