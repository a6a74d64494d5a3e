//! For the HEP source and forwarder tests: calls, their raw capture and
//! its replay, hep-js (the Homer project's HEPv3 library, npm) sending
//! them to a daemon's `capture.hep_listen`, and recordings read back.
#![allow(dead_code)]

use callrec::capture::LinkType;
use callrec::daemon::replay::{ReplayOptions, replay};
use callrec::recording::wav::read_wav;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, Datagram};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where scripts/setup.sh installs hep-js ($HEPJS_DIR overrides), if
/// node and hep-js are there; prints why `test` is skipped otherwise.
pub fn hepjs(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("HEPJS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/cache/callrec-test/hep-js".into());
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node || !dir.join("node_modules/hep-js/package.json").exists() {
        eprintln!("SKIP {test}: node or hep-js missing (scripts/setup.sh installs them)");
        return None;
    }
    Some(dir)
}

/// `n` overlapping calls of K-0001's number (0312340001) lasting
/// `talk_ms`, one every 300 ms, ringing 300 ms: A 440 Hz, B 1000 Hz.
pub fn calls(n: u32, talk_ms: u32) -> Vec<CallSpec> {
    (0..n)
        .map(|i| {
            let t0 = Timestamp::from_secs_micros(1_795_221_000, i64::from(i) * 300_000);
            let mut c = CallSpec::simple(
                i + 1,
                "0312340001",
                &format!("0077260398765{i:03}"),
                t0,
                talk_ms,
            );
            c.ring_ms = 300;
            c
        })
        .collect()
}

/// Writes the calls as an Ethernet capture.
pub fn write_pcap(path: &Path, all: &[Datagram]) {
    let mut w = PcapWriter::create(path, LinkType::Ethernet).unwrap();
    for d in all {
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();
}

/// The input of tests/hep/send.js: each packet with its offset from the
/// first, its HEP type (SIP on port 5060, else RTP), the transport
/// `via(d)` picks and the capture ids it is sent as.
pub fn write_jsonl(
    path: &Path,
    all: &[Datagram],
    via: impl Fn(&Datagram) -> &'static str,
    ids: &[u32],
) {
    write_jsonl_from(path, all[0].ts, all, via, ids)
}

/// [`write_jsonl`] with offsets from `t0` (the first packet of a capture
/// another sender plays at the same moment).
pub fn write_jsonl_from(
    path: &Path,
    t0: Timestamp,
    all: &[Datagram],
    via: impl Fn(&Datagram) -> &'static str,
    ids: &[u32],
) {
    let mut out = String::new();
    for d in all {
        let sip = d.src.port() == 5060 || d.dst.port() == 5060;
        let line = serde_json::json!({
            "t": d.ts.since(t0), "src": d.src.ip().to_string(), "sport": d.src.port(),
            "dst": d.dst.ip().to_string(), "dport": d.dst.port(), "proto": 17,
            "type": if sip { 1 } else { 4 }, "hex": hex::encode(&d.payload),
            "via": via(d), "ids": ids,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

/// Runs tests/hep/send.js: sends `jsonl` to 127.0.0.1:`port` at the
/// capture's pace; returns how many HEP packets it sent.
pub fn send_with_hepjs(hepjs: &Path, port: u16, jsonl: &Path) -> u64 {
    send_with_hepjs_in(None, hepjs, port, jsonl)
}

/// [`send_with_hepjs`], in network namespace `ns` when given.
pub fn send_with_hepjs_in(ns: Option<&str>, hepjs: &Path, port: u16, jsonl: &Path) -> u64 {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hep/send.js");
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "node"]);
            c
        }
        None => Command::new("node"),
    };
    let out = c
        .arg(script)
        .arg(hepjs)
        .args(["127.0.0.1", &port.to_string()])
        .arg(jsonl)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "send.js: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["sent"].as_u64().unwrap()
}

/// A TCP port free a moment ago (UDP and TCP are bound on it together).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `callrec run` configuration: HEP on `listen` (no interface), K-0001
/// delivering to a closed loopback port (recordings stay queued), then
/// `capture_extra` lines in [capture] and `extra` at the end.
pub fn daemon_config(dir: &Path, listen: &str, capture_extra: &str, extra: &str) -> PathBuf {
    let closed = free_port();
    let cfg = dir.join("callrec.toml");
    let text = format!(
        r#"[general]
timezone = "+09:00"
[capture]
hep_listen = ["{listen}"]
{capture_extra}
[recording]
spool_dir = "{spool}"
[announce]
mode = "off"
[daemon]
control_socket = "{sock}"
[delivery]
allowed_networks = ["127.0.0.0/8"]
[[destination]]
name = "acme"
url = "sftp://rec@127.0.0.1:{closed}/incoming"
identity = "/nonexistent/key"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5WY6hfGbgKdwr827M61Dy9fKgVJoLX3pwmoStKx7MO"
[[contract]]
id = "K-0001"
service = "mobile"
numbers = ["0312340001"]
guidance = 2
channels = "stereo"
destination = "acme"
{extra}"#,
        spool = dir.join("spool").display(),
        sock = dir.join("control.sock").display(),
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// One recorded segment, read back: per channel samples and its metadata.
pub struct Rec {
    pub meta: serde_json::Value,
    pub ch: Vec<Vec<i16>>,
}

/// Every recording under `spool/queue`, by Call-ID (segments in order).
pub fn recordings(spool: &Path) -> BTreeMap<String, Vec<Rec>> {
    let mut out: BTreeMap<String, Vec<Rec>> = BTreeMap::new();
    let mut stack = vec![spool.join("queue")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                let Ok(meta) =
                    serde_json::from_slice::<serde_json::Value>(&std::fs::read(&p).unwrap())
                else {
                    continue;
                };
                let Some(file) = meta["audio"]["file"].as_str() else {
                    continue;
                };
                let w = read_wav(&p.with_file_name(file)).unwrap();
                let id = meta["call_id"].as_str().unwrap().to_owned();
                out.entry(id).or_default().push(Rec {
                    meta,
                    ch: w.samples,
                });
            }
        }
    }
    for v in out.values_mut() {
        v.sort_by_key(|r| r.meta["segment"]["index"].as_u64());
    }
    out
}

/// Replays `pcap` with the configuration at `cfg` into `out`.
pub fn replay_raw(cfg: &Path, pcap: &Path, out: &Path) {
    let cfg = callrec::config::load(cfg).unwrap();
    let opts = ReplayOptions {
        out: out.to_path_buf(),
        captures: vec![pcap.to_path_buf()],
        deliver: false,
        deliver_timeout: Duration::from_secs(1),
        shards: Some(2),
    };
    replay(cfg, &opts).expect("replay runs");
}

/// Power of `hz` in `x` relative to its total power (0..1).
pub fn tone_share(x: &[i16], hz: f64) -> f64 {
    // Per 50 ms block, then summed: a live recording may shift the tone's
    // phase where a late packet left a gap, which one transform over the
    // whole file would count against the tone.
    let (mut tone, mut total) = (0.0, 0.0);
    for block in x.chunks(400) {
        let (mut re, mut im) = (0.0, 0.0);
        for (i, &s) in block.iter().enumerate() {
            let a = 2.0 * std::f64::consts::PI * hz * i as f64 / 8000.0;
            re += f64::from(s) * a.cos();
            im += f64::from(s) * a.sin();
        }
        let n = block.len() as f64;
        tone += 2.0 * (re * re + im * im) / n;
        total += block
            .iter()
            .map(|&s| f64::from(s) * f64::from(s))
            .sum::<f64>();
    }
    if total == 0.0 { 0.0 } else { tone / total }
}

/// The callrec binary: `$CALLREC_BIN` when set (a copy, where several
/// worktrees share one target directory), else the one cargo built.
pub fn bin() -> String {
    std::env::var("CALLREC_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_callrec").to_owned())
}

/// Starts `callrec run --config cfg`, in `ns` when given, and waits for
/// its control socket `sock`.
pub fn start(cfg: &Path, sock: &Path, ns: Option<&str>) -> Child {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, &bin()]);
            c
        }
        None => Command::new(bin()),
    };
    let child = c
        .args(["run", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while !sock.exists() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !sock.exists() {
        let (_, log) = stop(child);
        panic!("no control socket from {}: {log}", cfg.display());
    }
    child
}

/// SIGTERM, then the exit status and the log (stderr).
pub fn stop(mut child: Child) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
    }
    let st = child.wait().unwrap();
    let mut log = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut log);
    (st, log)
}
