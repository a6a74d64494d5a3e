//! `callrec run` as operators meet it, in a network namespace the test
//! makes (veth pair `va`/`vb`; the daemon captures on `va`, tcpreplay
//! sends on `vb`), with the link silent where it matters: SIGTERM and
//! timeouts on a silent link, the control socket while nothing flows,
//! SIGHUP reloads (good and broken files) in the middle of a call, and an
//! interface that goes away. Skips with a message without root, iproute2
//! or tcpreplay.

#[path = "support/audio.rs"]
mod audio;
#[path = "support/config.rs"]
mod config_text;
#[path = "support/live.rs"]
mod live;
#[path = "support/netns.rs"]
mod netns;
#[path = "support/tools.rs"]
mod tools;
use audio::files;
use callrec::capture::LinkType;
use callrec::recording::wav::read_wav;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, merge};
use live::{span_ms, wait_for};
use netns::Netns;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Call `n` from `from` to `to` on documentation addresses.
fn call(n: u32, from: &str, to: &str, talk_ms: u32) -> CallSpec {
    let t0 = Timestamp::from_secs_micros(1_795_221_000, 0);
    let mut c = CallSpec::simple(n, from, to, t0, talk_ms);
    let a: [u8; 4] = [192, 0, 2, n as u8];
    let b: [u8; 4] = [198, 51, 100, n as u8];
    c.a_sip = (a, 5060).into();
    c.b_sip = (b, 5060).into();
    c.a_rtp = (a, 20_000 + 2 * n as u16).into();
    c.b_rtp = (b, 30_000 + 2 * n as u16).into();
    c.ring_ms = 200;
    c
}

/// Writes the calls to `path`, each cut `cut_ms` after its answer when
/// given (no BYE: the wire falls silent in the middle of the call).
fn write_pcap(path: &Path, calls: &[CallSpec], cut_ms: Option<i64>) {
    let cut = cut_ms.map(|ms| calls[0].answer_at().add_micros(ms * 1000));
    let mut w = PcapWriter::create(path, LinkType::Ethernet).unwrap();
    for d in merge(calls) {
        if cut.is_some_and(|c| d.ts > c) {
            continue;
        }
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();
}

const K0002_FIXED: &str = r#"[[contract]]
id = "K-0002"
service = "fixed"
numbers = ["0312340002"]
guidance = 1
channels = "stereo"
destination = "acme"
"#;

struct Daemon {
    child: Child,
    dir: PathBuf,
    spool: PathBuf,
    sock: PathBuf,
    cfg: PathBuf,
}

/// The configuration for a daemon on `va`: `recording_extra` and
/// `capture_extra` lines, then `contracts`.
fn config(dir: &Path, capture_extra: &str, recording_extra: &str, contracts: &str) -> String {
    format!(
        r#"[general]
timezone = "+09:00"
[capture]
interfaces = ["va"]
{capture_extra}
[recording]
spool_dir = "{spool}"
{recording_extra}
[announce]
mode = "off"
[daemon]
control_socket = "{sock}"
{acme}{contracts}"#,
        spool = dir.join("spool").display(),
        sock = dir.join("control.sock").display(),
        acme = config_text::ACME_UNREACHED,
    )
}

fn start(ns: &Netns, dir: &Path, text: &str) -> Daemon {
    let cfg = dir.join("callrec.toml");
    std::fs::write(&cfg, text).unwrap();
    let sock = dir.join("control.sock");
    let child = ns
        .cmd(env!("CARGO_BIN_EXE_callrec"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || sock.exists()),
        "control socket up"
    );
    Daemon {
        child,
        dir: dir.to_owned(),
        spool: dir.join("spool"),
        sock,
        cfg,
    }
}

impl Daemon {
    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }
    /// Waits for the exit; returns how long it took, the status and the log.
    fn wait_exit(&mut self, limit: Duration) -> (Duration, std::process::ExitStatus, String) {
        let t = Instant::now();
        let exited = wait_for_fast(limit, || self.child.try_wait().ok().flatten().is_some());
        let took = t.elapsed();
        if !exited {
            let _ = self.child.kill();
        }
        let code = self.child.wait().unwrap();
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        assert!(exited, "daemon did not exit within {limit:?}: {err}");
        (took, code, err)
    }
    /// The control socket's `status`, and how long the daemon took to
    /// answer (the socket round trip, as `callrec status` makes it).
    fn status(&self) -> (Duration, String) {
        let t = Instant::now();
        let out = callrec::daemon::control::query(&self.sock, "status").unwrap_or_default();
        (t.elapsed(), out)
    }
    fn metas(&self) -> Vec<serde_json::Value> {
        files(&self.spool.join("queue/acme/ready"), ".json")
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }
    fn channels(&self, meta: &serde_json::Value) -> usize {
        let dir = self.spool.join("queue/acme/ready");
        let stem = meta["audio"]["file"].as_str().unwrap();
        let wav = files(&dir, ".wav")
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with(stem))
            .unwrap();
        read_wav(&wav).unwrap().samples.len()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
        let _ = &self.cfg;
    }
}

/// Like `wait_for`, polling every 10 ms (exit times are measured).
fn wait_for_fast(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

fn ready(tag: &str) -> Option<Netns> {
    if !tools::tool_present("tcpreplay", "--version") {
        eprintln!("SKIP {tag}: tcpreplay is not installed");
        return None;
    }
    Netns::new(tag)
}

#[test]
fn sigterm_on_a_silent_link_exits_within_a_second_and_publishes() {
    sigterm_on_a_silent_link("sigterm", "");
}

/// The same with two capture threads: they stop, and what they queued is
/// handled, within the second.
#[test]
fn sigterm_on_a_silent_link_with_two_capture_threads() {
    sigterm_on_a_silent_link("sigterm2", "threads = 2");
}

fn sigterm_on_a_silent_link(tag: &str, capture_extra: &str) {
    let Some(ns) = ready(tag) else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(
        &ns,
        dir.path(),
        &config(dir.path(), capture_extra, "", config_text::K0001_STEREO),
    );
    // A call that would talk for a minute; the wire goes silent 1.5 s
    // after the answer, with the call still open.
    let pcap = dir.path().join("call.pcap");
    write_pcap(
        &pcap,
        &[call(1, "0312340001", "0077260312349999", 60_000)],
        Some(1_500),
    );
    ns.replay(&pcap);
    std::thread::sleep(Duration::from_secs(2));
    let (_, st) = d.status();
    assert!(st.contains("active recorded calls 1"), "{st}");
    d.signal("TERM");
    let (took, code, log) = d.wait_exit(Duration::from_secs(10));
    assert!(code.success(), "exit {code:?}: {log}");
    assert!(
        took < Duration::from_secs(1),
        "SIGTERM took {took:?} on a silent link"
    );
    let metas = d.metas();
    assert_eq!(metas.len(), 1, "{log}");
    assert_eq!(metas[0]["end_reason"], "shutdown");
    // The call was still open: it is recorded up to the shutdown (1.5 s
    // of RTP, then the silent 2 s).
    let ms = metas[0]["audio"]["duration_ms"].as_u64().unwrap();
    assert!(
        (3_000..=4_500).contains(&ms),
        "{ms} ms recorded up to the shutdown"
    );
}

#[test]
fn rtp_timeout_fires_by_wall_time_on_a_silent_link_and_status_answers() {
    rtp_timeout_on_a_silent_link("rtptimeout", "");
}

/// The same with the interface read by two capture threads (a
/// `PACKET_FANOUT` group): the engine's thread reads their queues, and on
/// the silent link its clock still moves on.
#[test]
fn rtp_timeout_fires_on_a_silent_link_with_two_capture_threads() {
    rtp_timeout_on_a_silent_link("rtptimeout2", "threads = 2");
}

fn rtp_timeout_on_a_silent_link(tag: &str, capture_extra: &str) {
    let Some(ns) = ready(tag) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        dir.path(),
        capture_extra,
        "rtp_timeout = \"3s\"",
        config_text::K0001_STEREO,
    );
    let d = start(&ns, dir.path(), &text);
    let pcap = dir.path().join("call.pcap");
    write_pcap(
        &pcap,
        &[call(1, "0312340001", "0077260312349999", 60_000)],
        Some(1_000),
    );
    ns.replay(&pcap);
    let silent_from = Instant::now();
    // Meanwhile the control socket answers at once, with the call listed.
    for _ in 0..5 {
        let (took, st) = d.status();
        assert!(took < Duration::from_millis(100), "status took {took:?}");
        assert!(
            st.contains("active recorded calls 1") && st.contains("call "),
            "{st}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        wait_for_fast(Duration::from_secs(10), || !d.metas().is_empty()),
        "the call never timed out"
    );
    let after = silent_from.elapsed().as_secs_f64();
    assert!(
        (2.0..=4.0).contains(&after),
        "ended {after:.2} s after the last packet; rtp_timeout is 3 s"
    );
    assert_eq!(d.metas()[0]["end_reason"], "rtp-timeout");
    let hist = std::fs::read_to_string(d.spool.join("calls.jsonl")).unwrap();
    assert!(hist.contains("rtp-timeout"), "{hist}");
}

#[test]
fn sighup_reload_applies_to_new_calls_and_refuses_a_broken_file() {
    let Some(ns) = ready("reload") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(
        &ns,
        dir.path(),
        &config(dir.path(), "", "", config_text::K0001_STEREO),
    );
    // Call 1 (K-0001, stereo) talks 5 s; the reload comes in its middle.
    let p1 = dir.path().join("c1.pcap");
    write_pcap(
        &p1,
        &[call(1, "0312340001", "0077260312349999", 5_000)],
        None,
    );
    let first = ns
        .cmd("tcpreplay")
        .args(["-q", "-i", "vb"])
        .arg(&p1)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2_000));
    // K-0001 turns mono; K-0002 is added.
    let mono = config_text::K0001_STEREO.replace("\"stereo\"", "\"mono\"");
    std::fs::write(
        &d.cfg,
        config(dir.path(), "", "", &format!("{mono}{K0002_FIXED}")),
    )
    .unwrap();
    d.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    // Call 2: K-0002's line; call 3: K-0001 again, now mono.
    let p2 = dir.path().join("c2.pcap");
    write_pcap(
        &p2,
        &[
            call(2, "0312340002", "0077270312349998", 1_000),
            call(3, "0312340001", "0077260312349997", 1_000),
        ],
        None,
    );
    ns.replay(&p2);
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(
        wait_for(Duration::from_secs(10), || d.metas().len() == 3),
        "three recordings"
    );
    let metas = d.metas();
    let by_callee = |n: &str| {
        metas
            .iter()
            .find(|m| m["callee"] == n)
            .unwrap_or_else(|| panic!("no recording to {n}: {metas:?}"))
    };
    let c1 = by_callee("0312349999");
    assert_eq!(c1["segment"]["count"], 1, "one uninterrupted recording");
    assert_eq!(
        d.channels(c1),
        2,
        "the call in progress keeps its stereo contract"
    );
    // Uninterrupted: the audio spans the whole segment as the signalling
    // on the wire timed it (tcpreplay's pace on a loaded machine may
    // stretch the call a little beyond its 5 s).
    let ms = c1["audio"]["duration_ms"].as_i64().unwrap();
    let span = span_ms(&c1["segment"]);
    assert!(
        (ms - span).abs() <= 60,
        "{ms} ms of audio in a {span} ms segment"
    );
    assert!((4_850..=6_000).contains(&ms), "{ms} ms of a 5 s call");
    let c2 = by_callee("0312349998");
    assert_eq!(c2["contract"], "K-0002", "the added contract records");
    assert_eq!(
        d.channels(by_callee("0312349997")),
        1,
        "new K-0001 calls are mono"
    );

    // A broken file is refused; the running configuration stays.
    std::fs::write(&d.cfg, "[capture\ninterfaces = [\"va\"]\n").unwrap();
    d.signal("HUP");
    std::thread::sleep(Duration::from_millis(500));
    let p3 = dir.path().join("c3.pcap");
    write_pcap(
        &p3,
        &[call(4, "0312340002", "0077270312349996", 1_000)],
        None,
    );
    ns.replay(&p3);
    assert!(
        wait_for(Duration::from_secs(10), || d.metas().len() == 4),
        "K-0002 still recorded after the refused reload"
    );
    let (_, st) = d.status();
    assert!(st.contains("capture va: running"), "{st}");

    // K-0002 removed while one of its calls is in progress: that call is
    // recorded to its end under K-0002, and its history line says so.
    let p4 = dir.path().join("c4.pcap");
    write_pcap(
        &p4,
        &[call(5, "0312340002", "0077270312349995", 3_000)],
        None,
    );
    let fifth = ns
        .cmd("tcpreplay")
        .args(["-q", "-i", "vb"])
        .arg(&p4)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1_500));
    std::fs::write(&d.cfg, config(dir.path(), "", "", &mono)).unwrap();
    d.signal("HUP");
    assert!(fifth.wait_with_output().unwrap().status.success());
    assert!(
        wait_for(Duration::from_secs(10), || d.metas().len() == 5),
        "the removed contract's call is still recorded"
    );
    let metas = d.metas();
    let c5 = metas.iter().find(|m| m["callee"] == "0312349995").unwrap();
    assert_eq!(c5["contract"], "K-0002");
    let ms = c5["audio"]["duration_ms"].as_i64().unwrap();
    let span = span_ms(&c5["segment"]);
    assert!(
        (ms - span).abs() <= 60,
        "{ms} ms of audio in a {span} ms segment"
    );
    assert!((2_850..=4_000).contains(&ms), "{ms} ms of a 3 s call");
    let hist = std::fs::read_to_string(d.spool.join("calls.jsonl")).unwrap();
    let line = hist.lines().find(|l| l.contains("0312349995")).unwrap();
    assert!(
        line.contains("\"contract\":\"K-0002\"") && line.contains("\"decision\":\"record\""),
        "{line}"
    );
    d.signal("TERM");
    let (_, code, log) = d.wait_exit(Duration::from_secs(10));
    assert!(code.success(), "{log}");
    let refused = log
        .lines()
        .find(|l| l.contains("reload refused"))
        .unwrap_or_else(|| panic!("no refusal logged: {log}"));
    assert!(refused.contains("ERROR"), "{refused}");
    assert!(
        refused.contains("callrec.toml:1:"),
        "the error names file and line: {refused}"
    );
    assert!(log.contains("configuration reloaded"), "{log}");
}

#[test]
fn a_deleted_interface_is_retried_then_exits_non_zero() {
    let Some(ns) = ready("iflost") else { return };
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        dir.path(),
        "retry_for = \"3s\"",
        "",
        config_text::K0001_STEREO,
    );
    let mut d = start(&ns, dir.path(), &text);
    // Down and up again within capture.retry_for: capture resumes.
    assert!(ns.ip(&["link", "set", "va", "down"]));
    std::thread::sleep(Duration::from_millis(1_000));
    assert!(ns.ip(&["link", "set", "va", "up"]));
    let pcap = dir.path().join("call.pcap");
    write_pcap(
        &pcap,
        &[call(1, "0312340001", "0077260312349999", 1_000)],
        None,
    );
    assert!(
        wait_for(Duration::from_secs(8), || {
            ns.replay(&pcap);
            !d.metas().is_empty()
        }),
        "capture resumed after the interface came back"
    );
    // Deleted for good: alarms, then exit 1 after retry_for.
    assert!(ns.ip(&["link", "del", "va"]));
    let (took, code, log) = d.wait_exit(Duration::from_secs(15));
    assert_eq!(code.code(), Some(1), "{log}");
    assert!(
        took >= Duration::from_secs(2),
        "gave up after {took:?}, before retry_for"
    );
    assert!(log.contains("CAPTURE ALARM"), "{log}");
    assert!(log.contains("va"), "{log}");
}

#[test]
fn systemd_hears_ready_watchdog_status_and_reloads_on_a_silent_link() {
    let Some(ns) = ready("notify") else { return };
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let rx = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let cfg = dir.path().join("callrec.toml");
    let text = config(dir.path(), "", "", config_text::K0001_STEREO);
    std::fs::write(&cfg, &text).unwrap();
    let mut child = ns
        .cmd(env!("CARGO_BIN_EXE_callrec"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut heard: Vec<(Instant, String)> = Vec::new();
    let mut listen = |d: Duration| {
        let end = Instant::now() + d;
        let mut buf = [0u8; 4096];
        while Instant::now() < end {
            if let Ok(n) = rx.recv(&mut buf) {
                heard.push((
                    Instant::now(),
                    // sd_notify(3) allows a trailing newline.
                    String::from_utf8_lossy(&buf[..n]).trim_end().to_owned(),
                ));
            }
        }
    };
    // Three seconds of a silent link: the watchdog is fed all along.
    listen(Duration::from_secs(3));
    std::fs::write(&cfg, "[general]\ntimezone = 9\n").unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status();
    listen(Duration::from_secs(1));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    listen(Duration::from_millis(1_500));
    let _ = child.wait();
    let all: Vec<&str> = heard.iter().map(|(_, m)| m.as_str()).collect();
    assert!(all.iter().any(|m| m.starts_with("READY=1")), "{all:?}");
    let dogs: Vec<Instant> = heard
        .iter()
        .filter(|(_, m)| m == "WATCHDOG=1")
        .map(|(t, _)| *t)
        .collect();
    assert!(
        dogs.len() >= 6,
        "watchdog fed {} times in 5 s at a 1 s period: {all:?}",
        dogs.len()
    );
    let gap = dogs.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        gap <= Duration::from_millis(800),
        "a watchdog gap of {gap:?}"
    );
    assert!(
        all.iter()
            .any(|m| m.starts_with("STATUS=0 recorded calls in progress; queued 0")),
        "{all:?}"
    );
    assert!(all.contains(&"RELOADING=1"), "{all:?}");
    assert!(
        all.iter()
            .any(|m| m.starts_with("STATUS=") && m.contains("last alarm: reload refused")),
        "the refused reload shows in STATUS: {all:?}"
    );
    assert!(all.contains(&"STOPPING=1"), "{all:?}");
}
