//! `callrec run` on a real interface: the loopback, with calls played onto
//! it by tcpreplay at their own pace (addresses in 127.0.0.0/8, so nothing
//! leaves the machine). Checks the recording, the control socket, the
//! metrics endpoint, and that SIGTERM ends an open call and publishes its
//! recording before the process exits. Skips with a message where live
//! capture or tcpreplay is unavailable.

#[path = "support/audio.rs"]
mod audio;
#[path = "support/config.rs"]
mod config_text;
#[path = "support/live.rs"]
mod live;
#[path = "support/tools.rs"]
mod tools;
use audio::{files, power};
use callrec::capture::LinkType;
use callrec::recording::wav::read_wav;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, merge};
use live::{can_run, start_daemon, wait_for};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A call between two loopback addresses (SIP and RTP on 127.0.0.0/8).
fn call(n: u32, talk_ms: u32, start: Timestamp) -> CallSpec {
    let mut c = CallSpec::simple(n, "0312340001", "0077260312349999", start, talk_ms);
    let a: [u8; 4] = [127, 0, 10, n as u8];
    let b: [u8; 4] = [127, 0, 20, n as u8];
    c.a_sip = (a, 5060).into();
    c.b_sip = (b, 5060).into();
    c.a_rtp = (a, 20_000 + 2 * n as u16).into();
    c.b_rtp = (b, 30_000 + 2 * n as u16).into();
    c.ring_ms = 300;
    c
}

fn http_get(addr: SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn live_daemon_records_reports_and_stops_cleanly() {
    if !can_run(
        "live_daemon_records_reports_and_stops_cleanly",
        "tcpreplay",
        "--version",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let metrics: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let config_text::LiveFiles { cfg, spool, sock } =
        config_text::live_on_lo(dir.path(), &format!("metrics_listen = \"{metrics}\""));

    // Call 1: 3 s of talk. Call 2 starts with it and would last a minute.
    let t0 = Timestamp::from_secs_micros(1_795_221_000, 0);
    let short = call(1, 3_000, t0);
    let long = call(2, 60_000, t0);
    let pcap = dir.path().join("calls.pcap");
    let mut w = PcapWriter::create(&pcap, LinkType::Ethernet).unwrap();
    for d in merge(&[short, long]) {
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();

    let mut daemon = start_daemon(&cfg, &sock);
    let mut replay = Command::new("tcpreplay")
        .args(["-q", "-i", "lo"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let ready = spool.join("queue/acme/ready");
    assert!(
        wait_for(Duration::from_secs(20), || files(&ready, ".json").len()
            == 1),
        "the short call's recording is queued"
    );
    let json = &files(&ready, ".json")[0];
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    assert_eq!(meta["end_reason"], "bye-subscriber");
    let wav = read_wav(&json.with_file_name(meta["audio"]["file"].as_str().unwrap())).unwrap();
    // The recording spans its segment as the wire timed it (tcpreplay's
    // pace stretches a little on a loaded machine; the loopback is shared).
    let ms = wav.samples[0].len() as i64 / 8;
    let span = live::span_ms(&meta["segment"]);
    assert!(
        (ms - span).abs() <= 60,
        "{ms} ms of audio in a {span} ms segment"
    );
    assert!(
        (2_850..=3_600).contains(&ms),
        "{ms} ms recorded of a 3,000 ms call"
    );
    let (l, r) = (&wav.samples[0][800..], &wav.samples[1][800..]);
    assert!(
        power(l, 440.0) > 100.0 * power(l, 1000.0),
        "subscriber 440 Hz"
    );
    assert!(power(r, 1000.0) > 100.0 * power(r, 440.0), "remote 1000 Hz");

    // The control socket and the metrics say what happened (they are
    // refreshed once a second).
    let status = || {
        let out = Command::new(env!("CARGO_BIN_EXE_callrec"))
            .args(["status", "--socket"])
            .arg(&sock)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut last = String::new();
    let ok = wait_for(Duration::from_secs(5), || {
        last = status();
        last.contains("active recorded calls 1")
            && last.contains("capture lo: running")
            && last.contains("recorded 1 ")
            && last.contains("queue acme: ready 1")
    });
    assert!(ok, "{last}");
    let m = http_get(metrics);
    assert!(m.starts_with("HTTP/1.1 200 OK"), "{m}");
    assert!(
        m.contains("callrec_recorded_calls_total{interface=\"lo\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("callrec_active_recorded_calls{interface=\"lo\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("callrec_queue_ready{destination=\"acme\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("callrec_pcap_dropped_total{interface=\"lo\"} 0"),
        "{m}"
    );

    // SIGTERM mid-call: the open call ends with reason shutdown and its
    // recording is published before the process exits.
    std::thread::sleep(Duration::from_secs(1));
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let exited = wait_for(Duration::from_secs(15), || {
        daemon.try_wait().ok().flatten().is_some()
    });
    let _ = replay.kill();
    let _ = replay.wait();
    assert!(exited, "daemon exits on SIGTERM");
    let code = daemon.wait().unwrap();
    let mut err = String::new();
    let _ = daemon.stderr.take().unwrap().read_to_string(&mut err);
    assert!(code.success(), "exit {code:?}: {err}");
    assert!(!sock.exists(), "control socket removed");
    let jsons = files(&ready, ".json");
    assert_eq!(jsons.len(), 2, "{err}");
    let metas: Vec<serde_json::Value> = jsons
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    let open = metas
        .iter()
        .find(|m| m["end_reason"] == "shutdown")
        .expect("the open call was closed by the shutdown");
    assert!(open["audio"]["duration_ms"].as_u64().unwrap() > 2_000);
    let hist = std::fs::read_to_string(spool.join("calls.jsonl")).unwrap();
    assert_eq!(hist.lines().count(), 2, "{hist}");
    assert!(files(&spool.join("tmp"), ".wav").is_empty());
}
