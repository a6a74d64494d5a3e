//! Several capture threads per interface (`capture.threads`, a
//! `PACKET_FANOUT` group): every call recorded once with both parties'
//! tones, every frame read by exactly one thread, and the work spread over
//! the threads; a second daemon on the same interface gets a group of its
//! own (and so every frame too); an interface that disappears from the
//! group is named, reopened when it is back, and records again. Live, in
//! a network namespace the test makes, fed by tcpreplay. Skips with a
//! message without root, iproute2 or tcpreplay.

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
use audio::{files, power};
use callrec::capture::LinkType;
use callrec::recording::wav::read_wav;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, Voice, merge};
use live::{span_ms, wait_for};
use netns::Netns;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const T0: i64 = 1_795_221_000;

fn a_tone(n: u32) -> f64 {
    300.0 + 50.0 * f64::from(n)
}
fn b_tone(n: u32) -> f64 {
    1_500.0 + 100.0 * f64::from(n)
}

/// `count` overlapping outbound calls of K-0001 (numbered from `first`),
/// each party with a tone of its own: 2 RTP flows a call for the kernel's
/// hash to spread.
fn calls(first: u32, count: u32) -> Vec<CallSpec> {
    (first..first + count)
        .map(|n| {
            let start = Timestamp::from_secs_micros(T0, 0).add_micros(i64::from(n) * 100_000);
            let mut c = CallSpec::simple(n, "0312340001", "0077260312349999", start, 2_000);
            c.ring_ms = 300;
            c.a_voice = Voice::tone(a_tone(n) as f32);
            c.b_voice = Voice::tone(b_tone(n) as f32);
            c
        })
        .collect()
}

/// Writes the calls to `path`; returns the number of frames.
fn write_capture(calls: &[CallSpec], path: &Path) -> u64 {
    let mut w = PcapWriter::create(path, LinkType::Ethernet).unwrap();
    let mut n = 0;
    for d in merge(calls) {
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
        n += 1;
    }
    w.finish().unwrap();
    n
}

struct Daemon {
    child: Child,
    spool: PathBuf,
    sock: PathBuf,
}

fn start(ns: &Netns, dir: &Path, name: &str, extra: &str) -> Daemon {
    let spool = dir.join(name).join("spool");
    let sock = dir.join(name).join("control.sock");
    std::fs::create_dir_all(dir.join(name)).unwrap();
    let cfg = dir.join(name).join("callrec.toml");
    let text = format!(
        r#"[general]
timezone = "+09:00"
[capture]
interfaces = ["va"]
threads = 2
{extra}
[recording]
spool_dir = "{spool}"
[announce]
mode = "off"
[daemon]
control_socket = "{sock}"
{acme}{k1}"#,
        spool = spool.display(),
        sock = sock.display(),
        acme = config_text::ACME_UNREACHED,
        k1 = config_text::K0001_STEREO,
    );
    std::fs::write(&cfg, text).unwrap();
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
        "control socket of {name} up"
    );
    Daemon { child, spool, sock }
}

impl Daemon {
    fn status(&self) -> String {
        callrec::daemon::control::query(&self.sock, "status").unwrap_or_default()
    }
    fn ready(&self) -> usize {
        files(&self.spool.join("queue/acme/ready"), ".json").len()
    }
    /// SIGTERM; the exit status and the log.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let code = self.child.wait().unwrap();
        let mut log = String::new();
        use std::io::Read;
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut log);
        (code, log)
    }
}

/// Each capture thread's frames on `va`, from `status`.
fn per_thread(status: &str) -> Vec<u64> {
    status
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("capture thread "))
        .filter_map(|l| {
            l.split("packets ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Calls `numbers` each recorded once, subscriber's tone left and the
/// remote's right, no other call's tone, as long as the segment, and every
/// RTP packet each party sent counted in its leg (none taken before the
/// call's 200 OK was: the capture threads' frames are merged in order).
fn assert_calls_whole(spool: &Path, numbers: &[u32]) {
    let first = numbers[0];
    let specs = calls(first, numbers.len() as u32);
    let dir = spool.join("queue/acme/ready");
    let mut got: Vec<(u32, serde_json::Value, PathBuf)> = files(&dir, ".json")
        .into_iter()
        .map(|p| {
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            let id = meta["call_id"].as_str().unwrap_or_default().to_owned();
            let n = id.trim_start_matches("call-").split('@').next().unwrap();
            let wav = p.with_file_name(meta["audio"]["file"].as_str().unwrap());
            (n.parse().unwrap(), meta, wav)
        })
        .collect();
    got.sort_by_key(|g| g.0);
    let ns: Vec<u32> = got.iter().map(|g| g.0).collect();
    assert_eq!(ns, numbers, "each call recorded exactly once");
    for (n, meta, wav) in &got {
        let w = read_wav(wav).unwrap();
        let ms = w.samples[0].len() as i64 / 8;
        let span = span_ms(&meta["segment"]);
        assert!((ms - span).abs() <= 60, "call {n}: {ms} ms in {span} ms");
        let (l, r) = (&w.samples[0][800..], &w.samples[1][800..]);
        let (a, b) = (a_tone(*n), b_tone(*n));
        assert!(power(l, a) > 100.0 * power(l, b), "call {n}: {a} Hz left");
        assert!(power(r, b) > 100.0 * power(r, a), "call {n}: {b} Hz right");
        let c = &specs[(*n - first) as usize];
        let sent = |from| {
            merge(std::slice::from_ref(c))
                .iter()
                .filter(|d| d.src == from)
                .count() as u64
        };
        let q = &meta["quality"];
        assert_eq!(
            (
                q["subscriber"]["packets"].as_u64(),
                q["remote"]["packets"].as_u64()
            ),
            (Some(sent(c.a_rtp)), Some(sent(c.b_rtp))),
            "call {n}: every RTP packet in its leg: {q}"
        );
        for o in numbers.iter().filter(|o| *o != n) {
            for f in [a_tone(*o), b_tone(*o)] {
                assert!(
                    power(l, f) + power(r, f) < (power(l, a) + power(r, b)) / 100.0,
                    "call {n}: call {o}'s {f} Hz"
                );
            }
        }
    }
}

fn have_tcpreplay(tag: &str) -> bool {
    let ok = tools::tool_present("tcpreplay", "--version");
    if !ok {
        eprintln!("SKIP {tag}: tcpreplay is not installed");
    }
    ok
}

#[test]
fn two_daemons_with_two_capture_threads_each_record_every_call_once() {
    if !have_tcpreplay("fanout_two_daemons") {
        return;
    }
    let Some(ns) = Netns::new("fan") else { return };
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("calls.pcap");
    let numbers: Vec<u32> = (1..=16).collect();
    let frames = write_capture(&calls(1, 16), &pcap);
    // Two appliances on one mirror port: each must see every frame, so
    // their groups must not be one.
    let d1 = start(&ns, dir.path(), "one", "");
    let d2 = start(&ns, dir.path(), "two", "");
    ns.replay(&pcap);
    let all = wait_for(Duration::from_secs(15), || {
        d1.ready() >= 16 && d2.ready() >= 16
    });
    // Counters reach `status` once a second.
    std::thread::sleep(Duration::from_millis(1_500));
    let st = [d1.status(), d2.status()];
    let spools = [d1.spool.clone(), d2.spool.clone()];
    for (d, name) in [(d1, "one"), (d2, "two")] {
        let (code, log) = d.stop();
        assert!(code.success(), "{name}: exit {code:?}: {log}");
        assert!(
            log.contains("PACKET_FANOUT"),
            "{name} says its threads share the interface: {log}"
        );
    }
    assert!(all, "16 recordings in each spool: {st:?}");
    for (s, spool) in st.iter().zip(&spools) {
        let t = per_thread(s);
        assert_eq!(t.len(), 2, "a line per capture thread: {s}");
        // Every frame read once, by one thread; 32 RTP flows and the SIP
        // on both threads (the kernel's hash is its own: both get some).
        assert_eq!(t.iter().sum::<u64>(), frames, "{s}");
        assert!(t.iter().all(|&n| n > 50), "both threads work: {t:?}");
        assert_calls_whole(spool, &numbers);
        let hist = std::fs::read_to_string(spool.join("calls.jsonl")).unwrap();
        assert_eq!(hist.lines().count(), 16, "a history line a call");
    }
}

#[test]
fn an_interface_that_leaves_the_group_is_reopened_and_records_again() {
    if !have_tcpreplay("fanout_interface_lost") {
        return;
    }
    let Some(ns) = Netns::new("fanl") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("1.pcap"), dir.path().join("2.pcap"));
    write_capture(&calls(1, 4), &first);
    let frames = write_capture(&calls(5, 4), &second);
    let d = start(&ns, dir.path(), "d", "retry_for = \"30s\"");
    ns.replay(&first);
    assert!(
        wait_for(Duration::from_secs(10), || d.ready() == 4),
        "first calls"
    );
    assert!(ns.ip(&["link", "del", "va"]));
    let mut status = String::new();
    let named = wait_for(Duration::from_secs(5), || {
        status = d.status();
        status
            .lines()
            .any(|l| l.starts_with("capture va: degraded") && l.contains("error: va:"))
    });
    assert!(named, "status names the lost interface: {status}");
    // Back, as a new link of the same name: each thread's socket rejoins.
    assert!(
        ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"])
            && ns.ip(&["link", "set", "va", "up"])
            && ns.ip(&["link", "set", "vb", "up"])
    );
    let back = wait_for(Duration::from_secs(15), || {
        status = d.status();
        status
            .lines()
            .any(|l| l.starts_with("capture va: running") && !l.contains("error"))
    });
    assert!(back, "capture works again: {status}");
    let before: u64 = per_thread(&status).iter().sum();
    ns.replay(&second);
    let all = wait_for(Duration::from_secs(10), || d.ready() == 8);
    std::thread::sleep(Duration::from_millis(1_500));
    let status = d.status();
    let (code, log) = d.stop();
    assert!(
        all,
        "the calls after the return are recorded: {status}\n{log}"
    );
    assert!(code.success(), "{log}");
    assert!(
        log.contains("CAPTURE ALARM") && log.contains("works again"),
        "{log}"
    );
    let after: u64 = per_thread(&status).iter().sum();
    assert_eq!(after - before, frames, "every frame once: {status}");
    assert_calls_whole(&dir.path().join("d/spool"), &(1..=8).collect::<Vec<_>>());
}

/// Every status counter of `va` that holds frames read or lost.
fn accounted(status: &str) -> (u64, u64, u64) {
    let field = |name: &str| -> u64 {
        status
            .lines()
            .filter(|l| l.starts_with("capture va") || l.trim_start().starts_with("capture thread"))
            .filter_map(|l| {
                l.split(name)
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    (
        per_thread(status).iter().sum(),
        field("queue dropped "),
        field("pcap "),
    )
}

#[test]
fn one_flow_flooding_one_thread_is_counted_and_the_calls_after_it_are_recorded() {
    if !have_tcpreplay("fanout_flood") {
        return;
    }
    let Some(ns) = Netns::new("fanf") else { return };
    let dir = tempfile::tempdir().unwrap();
    // 150,000 frames of one flow nobody records, as fast as tcpreplay
    // sends: the kernel's hash puts them all on one thread.
    let flood = dir.path().join("flood.pcap");
    let mut w = PcapWriter::create(&flood, LinkType::Ethernet).unwrap();
    let frame = udp_frame(
        "203.0.113.9:40000".parse().unwrap(),
        "198.51.100.9:40002".parse().unwrap(),
        &[0x80; 172],
    );
    let flood_frames = 150_000u64;
    for i in 0..flood_frames {
        let ts = Timestamp::from_secs_micros(T0, 0).add_micros(i as i64 * 10);
        w.write(ts, &frame).unwrap();
    }
    w.finish().unwrap();
    let after = dir.path().join("calls.pcap");
    let frames = write_capture(&calls(1, 6), &after);
    let d = start(&ns, dir.path(), "d", "thread_queue = 1024");
    let st = ns
        .cmd("tcpreplay")
        .args(["-q", "--topspeed", "-i", "vb"])
        .arg(&flood)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    ns.replay(&after);
    let all = wait_for(Duration::from_secs(15), || d.ready() == 6);
    std::thread::sleep(Duration::from_millis(1_500));
    let status = d.status();
    let (code, log) = d.stop();
    assert!(all, "the calls after the flood: {status}\n{log}");
    assert!(code.success(), "no crash: {log}");
    let t = per_thread(&status);
    let (read, queue_dropped, pcap_dropped) = accounted(&status);
    // Nothing lost without a count: what was read and what was dropped
    // (in the kernel ring or a thread's queue) is what was sent.
    assert_eq!(
        read + queue_dropped + pcap_dropped,
        flood_frames + frames,
        "{status}"
    );
    // The flood all went one way.
    let most = *t.iter().max().unwrap();
    assert!(
        most + queue_dropped + pcap_dropped >= flood_frames,
        "one thread took the flood: {t:?}\n{status}"
    );
    assert_calls_whole(&dir.path().join("d/spool"), &(1..=6).collect::<Vec<_>>());
}
