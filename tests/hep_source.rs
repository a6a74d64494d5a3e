//! `capture.hep_listen`: HEPv3 from capture agents into `callrec run`.
//!
//! The packets are built by hep-js, the Homer project's own HEPv3 library
//! (npm), not by callrec, from the same calls as a raw capture; the
//! recordings `callrec run` makes from them are compared with what
//! `callrec replay` makes of the raw capture: same calls, same audio,
//! sample for sample. Then the same calls from two capture points (two
//! agent ids): each recorded once, the copies counted as duplicates.
//! Then bad HEP: counted per reason, logged, never a crash.
//!
//! Needs node and hep-js (scripts/setup.sh); skips with a message without.

#[path = "support/hep.rs"]
mod hep;
#[path = "support/netns.rs"]
mod netns;
use callrec::history::hep::{HepPacket, encode};
use callrec::time::Timestamp;
use callrec_testkit::scenario::{Datagram, merge};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// Last octet of the call's own (not the shared proxy's) address: calls
/// with an odd one go over TCP, even over UDP.
fn via(d: &Datagram) -> &'static str {
    let proxy: std::net::IpAddr = [203, 0, 113, 1].into();
    let ip = if d.src.ip() == proxy {
        d.dst.ip()
    } else {
        d.src.ip()
    };
    let last = match ip {
        std::net::IpAddr::V4(a) => a.octets()[3],
        std::net::IpAddr::V6(a) => a.octets()[15],
    };
    if last % 2 == 1 { "tcp" } else { "udp" }
}

fn status(sock: &Path) -> String {
    callrec::daemon::control::query(sock, "status").unwrap_or_default()
}

/// The number after `key ` on the `hep:` line of `status`.
fn hep_count(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("hep:"))?;
    let rest = line.split(&format!("{key} ")).nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// Sends the calls with hep-js as capture ids `ids` and returns the live
/// recordings, the raw replay's, the status before the stop and the log.
fn run_calls(
    test: &str,
    ids: &[u32],
    capture_extra: &str,
) -> Option<(Recs, Recs, String, String, usize)> {
    let hepjs = hep::hepjs(test)?;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let calls = hep::calls(4, 2000);
    let all = merge(&calls);
    let pcap = dir.join("calls.pcap");
    hep::write_pcap(&pcap, &all);
    let port = hep::free_port();
    let cfg = hep::daemon_config(dir, &format!("127.0.0.1:{port}"), capture_extra, "");
    hep::replay_raw(&cfg, &pcap, &dir.join("raw"));
    let raw = hep::recordings(&dir.join("raw"));
    let sock = dir.join("control.sock");
    let daemon = hep::start(&cfg, &sock, None);
    let jsonl = dir.join("packets.jsonl");
    hep::write_jsonl(&jsonl, &all, via, ids);
    let sent = hep::send_with_hepjs(&hepjs, port, &jsonl);
    assert_eq!(sent as usize, all.len() * ids.len());
    let spool = dir.join("spool");
    let n = calls.len();
    let done = wait_for(Duration::from_secs(15), || {
        hep::recordings(&spool).len() >= n && hep_count(&status(&sock), "packets").unwrap_or(0) > 0
    });
    // The counters are published once a second: let the last ones land.
    std::thread::sleep(Duration::from_millis(1200));
    let st = status(&sock);
    let (code, log) = hep::stop(daemon);
    assert!(done, "{n} calls recorded from HEP: {st}\n{log}");
    assert!(code.success(), "{code:?}: {log}");
    Some((hep::recordings(&spool), raw, st, log, all.len()))
}

type Recs = BTreeMap<String, Vec<hep::Rec>>;

/// Same calls, each once, same channels and samples, the tones in place.
fn assert_same_recordings(live: &Recs, raw: &Recs) {
    assert_eq!(
        live.keys().collect::<Vec<_>>(),
        raw.keys().collect::<Vec<_>>()
    );
    for (id, segs) in live {
        assert_eq!(segs.len(), 1, "{id}: one recording");
        let (l, r) = (&segs[0], &raw[id][0]);
        assert_eq!(l.ch.len(), 2, "{id}: stereo");
        assert!(
            hep::tone_share(&l.ch[0], 440.0) > 0.8,
            "{id}: caller's 440 Hz on channel 1"
        );
        assert!(
            hep::tone_share(&l.ch[1], 1000.0) > 0.8,
            "{id}: callee's 1000 Hz on channel 2"
        );
        assert_eq!(
            l.ch[0].len(),
            r.ch[0].len(),
            "{id}: length as in the raw capture's replay"
        );
        assert!(
            l.ch == r.ch,
            "{id}: the same samples as the raw capture's replay"
        );
    }
}

#[test]
fn hep_js_packets_over_udp_and_tcp_record_what_the_raw_capture_records() {
    let Some((live, raw, st, _log, packets)) = run_calls("hep_js_replay", &[42], "") else {
        return;
    };
    assert_eq!(raw.len(), 4, "the raw replay records the 4 calls");
    assert_same_recordings(&live, &raw);
    assert_eq!(hep_count(&st, "packets"), Some(packets as u64), "{st}");
    assert_eq!(hep_count(&st, "duplicates"), Some(0), "{st}");
    assert!(
        hep_count(&st, "connections").unwrap_or(0) >= 1,
        "TCP was used: {st}"
    );
}

#[test]
fn the_same_calls_from_two_capture_points_are_recorded_once() {
    let Some((live, raw, st, _log, packets)) = run_calls(
        "hep_duplicates",
        &[101, 102],
        "hep_capture_ids = [101, 102]",
    ) else {
        return;
    };
    assert_same_recordings(&live, &raw);
    assert_eq!(hep_count(&st, "packets"), Some(packets as u64), "{st}");
    assert_eq!(hep_count(&st, "duplicates"), Some(packets as u64), "{st}");
}

fn packet(id: u32, key: Option<&str>) -> Vec<u8> {
    let mut b = encode(&HepPacket {
        ts: Timestamp::from_secs_micros(1_795_221_000, 0),
        src: "192.0.2.1:5060".parse().unwrap(),
        dst: "198.51.100.2:5060".parse().unwrap(),
        transport: 17,
        proto: 1,
        node_id: id,
        correlation: None,
        payload: b"OPTIONS sip:x@198.51.100.2 SIP/2.0\r\nCall-ID: bad-input\r\n\r\n",
    })
    .unwrap();
    if let Some(k) = key {
        b.extend_from_slice(&[0, 0, 0, 0x0e, 0, 6 + k.len() as u8]);
        b.extend_from_slice(k.as_bytes());
    }
    let n = b.len() as u16;
    b[4..6].copy_from_slice(&n.to_be_bytes());
    b
}

#[test]
fn bad_hep_is_counted_per_reason_logged_and_never_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let port = hep::free_port();
    let metrics = hep::free_port();
    let cfg = hep::daemon_config(
        dir,
        &format!("127.0.0.1:{port}"),
        "hep_capture_ids = [7]\nhep_auth_key = \"s3cret-key\"",
        "",
    );
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[daemon]\n",
        &format!("[daemon]\nmetrics_listen = \"127.0.0.1:{metrics}\"\n"),
    );
    std::fs::write(&cfg, text).unwrap();
    let sock = dir.join("control.sock");
    let daemon = hep::start(&cfg, &sock, None);
    let to = format!("127.0.0.1:{port}");
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let good = packet(7, Some("s3cret-key"));
    let mut unknown_chunk = good.clone();
    unknown_chunk.extend_from_slice(&[0, 0, 0x7f, 0x7f, 0, 7, 1]);
    let n = unknown_chunk.len() as u16;
    unknown_chunk[4..6].copy_from_slice(&n.to_be_bytes());
    let mut v2 = good.clone();
    v2[3] = b'2';
    let no_payload = {
        let mut b = b"HEP3\0\0".to_vec();
        b.extend_from_slice(&[0, 0, 0, 1, 0, 7, 2]);
        let n = b.len() as u16;
        b[4..6].copy_from_slice(&n.to_be_bytes());
        b
    };
    let mut overlong_chunk = good.clone();
    overlong_chunk[6 + 4..6 + 6].copy_from_slice(&1000u16.to_be_bytes());
    let sends: Vec<Vec<u8>> = vec![
        good[..good.len() / 2].to_vec(), // truncated
        good[..3].to_vec(),              // truncated
        v2,                              // version
        overlong_chunk,                  // truncated (chunk past the end)
        no_payload,                      // missing_chunk
        packet(8, Some("s3cret-key")),   // unknown_capture_id
        packet(7, Some("wrong")),        // auth_key
        packet(7, None),                 // auth_key
        unknown_chunk,                   // accepted, chunk counted
        good.clone(),                    // accepted
    ];
    for s in &sends {
        u.send_to(s, &to).unwrap();
    }
    // A stream that is not HEP: counted, its connection closed.
    let mut t = std::net::TcpStream::connect(&to).unwrap();
    t.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let ok = wait_for(Duration::from_secs(5), || {
        let st = status(&sock);
        hep_count(&st, "packets") == Some(2) && st.contains("version 2")
    });
    let st = status(&sock);
    let scrape = {
        use std::io::Read;
        let mut c = std::net::TcpStream::connect(("127.0.0.1", metrics)).unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut s = String::new();
        let _ = c.read_to_string(&mut s);
        s
    };
    let (code, log) = hep::stop(daemon);
    assert!(ok, "{st}\n{log}");
    for want in [
        "truncated 3",
        "version 2",
        "missing_chunk 1",
        "unknown_capture_id 1",
        "auth_key 2",
        "unknown chunks 1",
    ] {
        assert!(st.contains(want), "status has {want}: {st}");
    }
    for want in [
        "callrec_hep_bad_packets_total{reason=\"truncated\"} 3",
        "callrec_hep_bad_packets_total{reason=\"auth_key\"} 2",
        "callrec_hep_packets_total 2",
        "callrec_hep_connections_total 1",
    ] {
        assert!(scrape.contains(want), "metrics have {want}: {scrape}");
    }
    assert!(
        code.success(),
        "still running until SIGTERM, then a clean exit: {code:?} {log}"
    );
    assert!(log.contains("HEP packet refused"), "{log}");
    assert!(log.contains("unknown_capture_id"), "{log}");
    assert!(
        !log.contains("s3cret-key") && !st.contains("s3cret-key"),
        "the key is never logged"
    );
}

/// Kamailio's siptrace module in HEP mode, a second independent encoder
/// (C, the SIP proxy's own): the OPTIONS it receives, mirrored as HEPv3
/// with its capture id and auth key, are taken by the HEP source and
/// parsed as SIP by the engine; with a wrong key they would be refused.
#[test]
fn kamailio_siptrace_hep_is_taken_with_its_capture_id_and_key() {
    if !Path::new("/usr/lib/x86_64-linux-gnu/kamailio/modules/siptrace.so").exists()
        || std::process::Command::new("kamailio")
            .arg("-v")
            .output()
            .is_err()
    {
        eprintln!("SKIP kamailio_siptrace: kamailio or its siptrace module is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (port, kam_port) = (hep::free_port(), hep::free_port());
    let cfg = hep::daemon_config(
        dir,
        &format!("127.0.0.1:{port}"),
        "hep_capture_ids = [2301]\nhep_auth_key = \"kam-secret\"",
        "",
    );
    let kcfg = dir.join("kamailio.cfg");
    std::fs::write(
        &kcfg,
        format!(
            r#"#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=1
auto_aliases=no
listen=udp:127.0.0.1:{kam_port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "siptrace.so"
modparam("siptrace", "duplicate_uri", "sip:127.0.0.1:{port}")
modparam("siptrace", "hep_mode_on", 1)
modparam("siptrace", "hep_version", 3)
modparam("siptrace", "hep_capture_id", 2301)
modparam("siptrace", "auth_key", "kam-secret")
modparam("siptrace", "trace_to_database", 0)
modparam("siptrace", "trace_on", 1)
request_route {{
    sip_trace();
    sl_send_reply("200", "OK");
    exit;
}}
"#
        ),
    )
    .unwrap();
    let sock = dir.join("control.sock");
    let daemon = hep::start(&cfg, &sock, None);
    let mut kam = std::process::Command::new("kamailio")
        .arg("-f")
        .arg(&kcfg)
        .args(["-DD", "-E", "-w"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("kamailio.log")).unwrap())
        .spawn()
        .unwrap();
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let me = u.local_addr().unwrap();
    let n = 20;
    let mut answered = 0;
    for i in 0..n {
        let msg = format!(
            "OPTIONS sip:probe@127.0.0.1:{kam_port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{i}\r\n\
             From: <sip:ping@127.0.0.1>;tag={i}\r\nTo: <sip:probe@127.0.0.1>\r\nCall-ID: kam-{i}@callrec.test\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        // Kamailio may still be starting: the first probes are repeated.
        for _ in 0..20 {
            u.send_to(msg.as_bytes(), ("127.0.0.1", kam_port)).unwrap();
            let mut b = [0u8; 2048];
            if u.recv(&mut b)
                .is_ok_and(|k| b[..k].starts_with(b"SIP/2.0 200"))
            {
                answered += 1;
                break;
            }
        }
    }
    let sip_count = |st: &str| {
        let line = st
            .lines()
            .find(|l| l.starts_with("capture hep:"))?
            .to_owned();
        line.split("  sip ")
            .nth(1)?
            .split(' ')
            .next()?
            .parse::<u64>()
            .ok()
    };
    let ok = wait_for(Duration::from_secs(5), || {
        let st = status(&sock);
        hep_count(&st, "packets").unwrap_or(0) >= n && sip_count(&st).unwrap_or(0) >= n
    });
    let st = status(&sock);
    // SIGTERM: Kamailio's main process ends the workers it forked (a
    // SIGKILL of the main process left them running after the test).
    unsafe { libc::kill(kam.id() as i32, libc::SIGTERM) };
    let end = Instant::now() + Duration::from_secs(3);
    while kam.try_wait().ok().flatten().is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kam.kill();
    let _ = kam.wait();
    let (code, log) = hep::stop(daemon);
    assert_eq!(answered, n, "Kamailio answered every probe");
    assert!(ok, "every traced OPTIONS taken and parsed: {st}\n{log}");
    assert!(st.contains("bad: none"), "{st}");
    assert!(code.success(), "{log}");
}

/// One engine for every source: the calls' SIP arrives on an interface
/// (`va` in a namespace, played by tcpreplay) and their RTP as HEP from an
/// agent (hep-js, at the same pace): each call is one call, recorded once
/// with both tones, as long as the raw capture's replay has it.
#[test]
fn sip_on_an_interface_and_rtp_through_hep_are_one_call() {
    let Some(hepjs) = hep::hepjs("hep_mixed") else {
        return;
    };
    if !std::process::Command::new("tcpreplay")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("SKIP hep_mixed: tcpreplay is not installed");
        return;
    }
    let Some(ns) = netns::Netns::new("hepmix") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let calls = hep::calls(3, 2000);
    let all = merge(&calls);
    let is_sip = |d: &&Datagram| d.src.port() == 5060 || d.dst.port() == 5060;
    let sip: Vec<Datagram> = all.iter().filter(is_sip).cloned().collect();
    let rtp: Vec<Datagram> = all.iter().filter(|d| !is_sip(d)).cloned().collect();
    let (pcap, sip_pcap) = (dir.join("all.pcap"), dir.join("sip.pcap"));
    hep::write_pcap(&pcap, &all);
    hep::write_pcap(&sip_pcap, &sip);
    let jsonl = dir.join("rtp.jsonl");
    hep::write_jsonl_from(&jsonl, sip[0].ts, &rtp, |_| "udp", &[42]);
    let port = hep::free_port();
    let cfg = hep::daemon_config(
        dir,
        &format!("127.0.0.1:{port}"),
        "interfaces = [\"va\"]\nsnaplen = 65535",
        "",
    );
    hep::replay_raw(&cfg, &pcap, &dir.join("raw"));
    let raw = hep::recordings(&dir.join("raw"));
    let sock = dir.join("control.sock");
    let daemon = hep::start(&cfg, &sock, Some(&ns.name));
    let sender = {
        let (name, hepjs, jsonl) = (ns.name.clone(), hepjs.clone(), jsonl.clone());
        std::thread::spawn(move || hep::send_with_hepjs_in(Some(&name), &hepjs, port, &jsonl))
    };
    ns.replay(&sip_pcap);
    assert_eq!(sender.join().unwrap() as usize, rtp.len());
    let spool = dir.join("spool");
    let done = wait_for(Duration::from_secs(15), || {
        hep::recordings(&spool).len() >= calls.len()
    });
    let st = status(&sock);
    let (code, log) = hep::stop(daemon);
    assert!(done, "{st}\n{log}");
    assert!(code.success(), "{log}");
    let live = hep::recordings(&spool);
    assert_eq!(
        live.keys().collect::<Vec<_>>(),
        raw.keys().collect::<Vec<_>>()
    );
    for (id, segs) in &live {
        assert_eq!(segs.len(), 1, "{id}: one recording");
        let ch = &segs[0].ch;
        assert!(
            hep::tone_share(&ch[0], 440.0) > 0.8,
            "{id}: caller's tone: {st}"
        );
        assert!(hep::tone_share(&ch[1], 1000.0) > 0.8, "{id}: callee's tone");
        let (got, exp) = (ch[0].len() as i64, raw[id][0].ch[0].len() as i64);
        // Two senders' pacing on a loaded machine: 250 ms allowed.
        assert!(
            (got - exp).abs() <= 8 * 250,
            "{id}: {got} samples, the raw replay {exp}"
        );
    }
}
