//! Crash without losing the call (issue 12, item 4), live.
//!
//! A network namespace made by the test holds a veth pair: tcpreplay plays
//! 20 calls into `vA`, `callrec run` captures on `vB` and tcpdump records
//! what reached `vB` (the wire truth, with the kernel's timestamps, the
//! same clock the daemon's packets carry). While all 20 calls are in
//! progress the daemon is killed with SIGKILL at a random moment,
//! restarted on the same spool, killed again at a random moment and
//! restarted again. Then:
//!
//! - every call has exactly one history line, with as many segments as
//!   were published for it (nothing lost, nothing twice);
//! - each recording cut by a kill is published with its quality figures,
//!   and its audio is complete to within 20 ms of the end of the last
//!   packet that reached the wire before the kill (the 200 ms jitter
//!   window included: the daemon keeps it in a file mapping);
//! - each call still flowing at a restart goes on in a `restart` segment
//!   holding both parties' tones;
//! - a journal file cut after its history line, and one of garbage, are
//!   logged, moved to `state/corrupt/`, and the first still gives its call
//!   a history line.
//!
//! Seeded from the clock (printed; `CRASH_SEED` replays a run). Skips with
//! a message without root (network namespaces), tcpreplay or tcpdump.

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
use callrec::pcapgen::{PcapWriter, udp_frame};
use callrec::recording::wav::read_wav;
use callrec::scenario::{CallSpec, merge};
use callrec::time::Timestamp;
use live::wait_for;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

const CALLS: u32 = 20;
/// One 20 ms frame (µs): the most a kill may cost of the audio that
/// reached the wire before it; also each packet's length.
const FRAME_US: i64 = 20_000;

/// The network namespace, deleted on drop (also when the test fails).
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

impl Netns {
    fn create() -> Option<Netns> {
        let ns = Netns(format!("crj{}", std::process::id()));
        let ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !ok(&["netns", "add", &ns.0]) {
            return None;
        }
        for args in [
            &["link", "add", "vA", "type", "veth", "peer", "name", "vB"][..],
            &["link", "set", "vA", "up"],
            &["link", "set", "vB", "up"],
            &["link", "set", "lo", "up"],
        ] {
            assert!(ok(&[&["-n", &ns.0][..], args].concat()), "ip {args:?}");
        }
        Some(ns)
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }
}

/// A small deterministic generator (xorshift64*), seeded per run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `lo..hi` (ms).
    fn ms(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// Twenty calls, 100 ms apart, answered after 300 ms, talking 5 to 12 s
/// (random): all twenty are in progress from 2.2 s to at least 5.3 s.
fn calls(rng: &mut Rng) -> Vec<CallSpec> {
    let t0 = Timestamp::from_secs_micros(1_795_221_000, 0);
    (1..=CALLS)
        .map(|n| {
            let talk = rng.ms(5_000, 12_000) as u32;
            let mut c = CallSpec::simple(
                n,
                "0312340001",
                "0077260312349999",
                t0.add_micros(n as i64 * 100_000),
                talk,
            );
            c.ring_ms = 300;
            c
        })
        .collect()
}

fn config(dir: &Path, iface: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (cfg, spool, sock) = (
        dir.join("callrec.toml"),
        dir.join("spool"),
        dir.join("control.sock"),
    );
    let text = format!(
        r#"
[general]
timezone = "+00:00"
[capture]
interfaces = ["{iface}"]
[recording]
spool_dir = "{spool}"
rtp_timeout = "3s"
[announce]
mode = "off"
[daemon]
control_socket = "{sock}"
{acme}{k0001}"#,
        spool = spool.display(),
        sock = sock.display(),
        acme = config_text::ACME_UNREACHED,
        k0001 = config_text::K0001_STEREO,
    );
    std::fs::write(&cfg, text).unwrap();
    (cfg, spool, sock)
}

/// Starts `callrec run` in the namespace, its log appended to `log`, and
/// waits until it is capturing (its `nth` "capturing" line).
fn start(ns: &Netns, cfg: &Path, log: &Path, nth: usize) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = ns
        .cmd(env!("CARGO_BIN_EXE_callrec"))
        .args(["run", "--config"])
        .arg(cfg)
        .env("CALLREC_LOG", "info")
        .stdout(Stdio::null())
        .stderr(out)
        .spawn()
        .unwrap();
    let up = wait_for(Duration::from_secs(15), || {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("capturing")
            .count()
            >= nth
    });
    assert!(
        up,
        "daemon start {nth}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    child
}

/// SIGKILL now; returns the moment (µs since the epoch) just before it.
fn kill9(daemon: &mut Child) -> i64 {
    let at = now_us();
    daemon.kill().unwrap();
    let _ = daemon.wait();
    at
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// `2026-11-21T09:30:00.123+00:00` → µs since the epoch (UTC only).
fn parse_utc(s: &str) -> i64 {
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19);
    assert_eq!(&s[23..], "+00:00", "{s}");
    secs * 1_000_000 + n(20, 23) * 1000
}

/// The call number of `call-N@callrec.test`.
fn call_no(call_id: &str) -> u32 {
    call_id
        .trim_start_matches("call-")
        .split('@')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// One RTP packet as tcpdump saw it arrive on vB.
#[derive(Clone, Copy, Debug)]
struct WirePkt {
    /// Arrival, µs since the epoch (the kernel's timestamp).
    at: i64,
    /// 0: the subscriber's voice (sent to B), 1: the remote party's.
    leg: usize,
    rtp_ts: u32,
}

/// Each call's RTP as it reached vB, by the call's RTP port (10000 + 2n
/// on both legs).
fn wire_rtp(pcap_path: &Path) -> BTreeMap<u32, Vec<WirePkt>> {
    let mut cap = pcap::Capture::from_file(pcap_path).unwrap();
    let mut out: BTreeMap<u32, Vec<WirePkt>> = BTreeMap::new();
    while let Ok(p) = cap.next_packet() {
        let ts = p.header.ts.tv_sec * 1_000_000 + p.header.ts.tv_usec;
        let Ok(h) = etherparse::SlicedPacket::from_ethernet(p.data) else {
            continue;
        };
        if let Some(etherparse::TransportSlice::Udp(u)) = h.transport {
            let port = u.destination_port();
            let rtp = u.payload();
            if (10_002..=10_000 + 2 * CALLS as u16).contains(&port)
                && port % 2 == 0
                && rtp.len() >= 12
            {
                let to_b = matches!(&h.net, Some(etherparse::NetSlice::Ipv4(ip)) if ip.header().destination()[0] == 198);
                out.entry(((port - 10_000) / 2) as u32)
                    .or_default()
                    .push(WirePkt {
                        at: ts,
                        leg: usize::from(!to_b),
                        rtp_ts: u32::from_be_bytes(rtp[4..8].try_into().unwrap()),
                    });
            }
        }
    }
    out
}

fn tcpdump(ns: &Netns, out: &Path) -> Child {
    let mut c = ns
        .cmd("tcpdump")
        .args(["-i", "vB", "-n", "-U", "--time-stamp-precision=micro", "-w"])
        .arg(out)
        .arg("udp")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(c.stderr.take().unwrap());
    let mut said = String::new();
    let _ = std::io::BufRead::read_line(&mut err, &mut said);
    assert!(said.contains("listening"), "tcpdump did not start: {said}");
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    c
}

struct Seg {
    call: u32,
    meta: serde_json::Value,
    wav: PathBuf,
}

fn published(spool: &Path) -> Vec<Seg> {
    files(&spool.join("queue/acme/ready"), ".json")
        .into_iter()
        .map(|j| {
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&j).unwrap()).unwrap();
            Seg {
                call: call_no(meta["call_id"].as_str().unwrap()),
                wav: j.with_file_name(meta["audio"]["file"].as_str().unwrap()),
                meta,
            }
        })
        .collect()
}

fn seg_start(s: &Seg) -> i64 {
    parse_utc(s.meta["segment"]["started_at"].as_str().unwrap())
}

#[test]
fn kill9_mid_calls_keeps_history_audio_and_goes_on_recording() {
    let name = "kill9_mid_calls_keeps_history_audio_and_goes_on_recording";
    if !tools::tool_present("tcpreplay", "--version")
        || !tools::tool_present("tcpdump", "--version")
    {
        eprintln!("SKIP {name}: tcpreplay and tcpdump needed");
        return;
    }
    let Some(ns) = Netns::create() else {
        eprintln!("SKIP {name}: cannot create a network namespace (root and CAP_NET_ADMIN needed)");
        return;
    };
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| now_us() as u64 | 1);
    eprintln!("{name}: CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let specs = calls(&mut rng);
    let dir = tempfile::tempdir().unwrap();
    let (cfg, spool, _sock) = config(dir.path(), "vB");
    let log = dir.path().join("daemon.log");
    let pcap = dir.path().join("calls.pcap");
    let mut w = PcapWriter::create(&pcap, LinkType::Ethernet).unwrap();
    for d in merge(&specs) {
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();

    let wire = dir.path().join("wire.pcap");
    let mut dump = tcpdump(&ns, &wire);
    let mut daemon = start(&ns, &cfg, &log, 1);
    let replay_start = now_us();
    let mut replay = ns
        .cmd("tcpreplay")
        .args(["-q", "-i", "vA"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // From the first packet (call 1's INVITE): every call is answered by
    // 2.2 s and none ends before 5.3 s.
    let at = |ms: u64| replay_start + ms as i64 * 1000;
    let sleep_until = |us: i64| {
        let d = us - now_us();
        if d > 0 {
            std::thread::sleep(Duration::from_micros(d as u64));
        }
    };
    sleep_until(at(rng.ms(3_400, 5_200)));
    let kill1 = kill9(&mut daemon);
    plant_damaged_journal_files(&spool);
    std::thread::sleep(Duration::from_millis(300));
    daemon = start(&ns, &cfg, &log, 2);
    let restart1 = now_us();
    sleep_until(restart1 + rng.ms(1_500, 3_000) as i64 * 1000);
    let kill2 = kill9(&mut daemon);
    std::thread::sleep(Duration::from_millis(300));
    daemon = start(&ns, &cfg, &log, 3);
    let restart2 = now_us();
    let _ = replay.wait();

    // Every call ends: by its BYE, or (BYE lost while the daemon was down)
    // by the RTP timeout.
    let hist_path = spool.join("calls.jsonl");
    let all_lines = wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&hist_path)
            .unwrap_or_default()
            .lines()
            .count()
            > CALLS as usize
    });
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = daemon.wait();
    let _ = Command::new("kill")
        .args(["-TERM", &dump.id().to_string()])
        .status();
    let _ = dump.wait();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        all_lines,
        "history incomplete:\n{}",
        std::fs::read_to_string(&hist_path).unwrap_or_default()
    );

    let kills = [(kill1, restart1), (kill2, restart2)];
    let segs = published(&spool);
    check_history(&spool, &segs);
    check_damaged_files_handled(&spool, &log_text);
    check_cut_recordings(&segs, &wire_rtp(&wire), &kills);
    check_restart_segments(&segs, &specs, &kills, replay_start);
    assert!(
        files(&spool.join("state/calls"), ".json").is_empty(),
        "journal empty once every call ended"
    );
    assert!(files(&spool.join("tmp"), ".wav").is_empty());
}

/// Beside the journal the first run left: a copy of one of its files for a
/// call that does not exist, cut in the middle of its state line, and a
/// file of garbage.
fn plant_damaged_journal_files(spool: &Path) {
    let dir = spool.join("state/calls/vB");
    let real = files(&dir, ".json");
    assert!(
        real.len() >= CALLS as usize,
        "one journal file per call in progress: {real:?}"
    );
    let text = std::fs::read_to_string(&real[0]).unwrap();
    let (first, second) = text.split_once('\n').unwrap();
    let first = first.replace("call-", "cut-");
    let cut = format!("{first}\n{}", &second[..second.len() / 2]);
    std::fs::write(dir.join("1_900.json"), cut).unwrap();
    std::fs::write(dir.join("1_901.json"), b"\0\0\0\0\0\0\0\0").unwrap();
}

fn check_history(spool: &Path, segs: &[Seg]) {
    let hist = std::fs::read_to_string(spool.join("calls.jsonl")).unwrap();
    let mut lines: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for l in hist.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let id = v["call_id"].as_str().unwrap().to_owned();
        assert!(
            lines.insert(id.clone(), v).is_none(),
            "two history lines for {id}:\n{hist}"
        );
    }
    assert_eq!(lines.len(), CALLS as usize + 1, "{hist}");
    for n in 1..=CALLS {
        let v = &lines[&format!("call-{n}@callrec.test")];
        assert_eq!(v["decision"], "record", "{v}");
        let end = v["end_reason"].as_str().unwrap();
        assert!(["bye-subscriber", "rtp-timeout"].contains(&end), "{v}");
        let mut idx: Vec<u64> = segs
            .iter()
            .filter(|s| s.call == n)
            .map(|s| s.meta["segment"]["index"].as_u64().unwrap())
            .collect();
        idx.sort();
        let count = v["segments"].as_u64().unwrap();
        assert_eq!(
            idx,
            (1..=count).collect::<Vec<_>>(),
            "call {n}: every segment published once: {v}"
        );
        if end == "rtp-timeout" {
            // Its BYE came while the daemon was down: it ends at its last
            // sign of life after the restart (the restart itself, or the
            // 200 OK to the BYE it missed), its restart segment that short.
            let last = segs
                .iter()
                .find(|s| s.call == n && s.meta["segment"]["index"].as_u64() == Some(count))
                .unwrap();
            assert_eq!(last.meta["segment"]["cause"], "restart", "{v}");
            let (from, to) = (seg_start(last), parse_utc(v["ended_at"].as_str().unwrap()));
            let dur = last.meta["audio"]["duration_ms"].as_i64().unwrap();
            assert!(dur < 1_000, "{}", last.meta);
            assert!((to - from - dur * 1000).abs() <= 1_000, "{v} {}", last.meta);
        }
    }
    let timeouts = lines
        .values()
        .filter(|v| v["end_reason"] == "rtp-timeout")
        .count();
    eprintln!(
        "history: {} lines, {timeouts} calls ended by the RTP timeout (BYE while down)",
        lines.len()
    );
    let cut = lines
        .values()
        .find(|v| v["call_id"].as_str().unwrap().starts_with("cut-"))
        .unwrap();
    assert_eq!(cut["end_reason"], "restart-failed", "{cut}");
}

fn check_damaged_files_handled(spool: &Path, log: &str) {
    let aside = files(&spool.join("state/corrupt"), ".json");
    let names: Vec<String> = aside
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["vB_1_900.json", "vB_1_901.json"]);
    for f in ["1_900.json", "1_901.json"] {
        assert!(
            log.lines().any(|l| l.contains("ERROR")
                && l.contains("cannot be carried on")
                && l.contains(f)),
            "an error line names {f}:\n{log}"
        );
    }
}

/// Recordings cut by a kill: published with quality, their audio complete
/// to within one frame of the end of the last packet before the kill.
/// Where on the recording's timeline (µs since the epoch) the audio of a
/// segment that began at `start` ends, from the packets that reached the
/// wire before `kill`. The recorder places each leg's packets by their
/// RTP timestamps from the leg's first packet's arrival (a sender that
/// runs late, as tcpreplay on a busy machine does, stays on its own
/// clock), and each packet holds 20 ms.
fn wire_audio_end(pkts: &[WirePkt], start: i64, kill: i64) -> Option<i64> {
    (0..2)
        .filter_map(|leg| {
            let mut it = pkts
                .iter()
                .filter(|p| p.leg == leg && p.at >= start && p.at < kill);
            let first = *it.next()?;
            let last = it.map(|p| p.rtp_ts).max().unwrap_or(first.rtp_ts);
            Some(first.at + last.wrapping_sub(first.rtp_ts) as i64 * 125 + FRAME_US)
        })
        .max()
}

fn check_cut_recordings(segs: &[Seg], wire: &BTreeMap<u32, Vec<WirePkt>>, kills: &[(i64, i64)]) {
    let mut lags = Vec::new();
    for s in segs.iter().filter(|s| s.meta["end_reason"] == "recovered") {
        let start = seg_start(s);
        let (kill, _) = *kills
            .iter()
            .find(|(k, _)| *k > start)
            .expect("a kill after the segment began");
        // A call whose BYE was lost while the daemon was down goes on
        // silent until the RTP timeout: nothing to compare with.
        let Some(end) = wire_audio_end(&wire[&s.call], start, kill) else {
            assert!(
                s.meta["segment"]["cause"] == "restart",
                "call {}: {}",
                s.call,
                s.meta
            );
            continue;
        };
        let dur = s.meta["audio"]["duration_ms"].as_i64().unwrap() * 1000;
        // Audio missing at the end (the segment start is known to the
        // millisecond).
        let lag = end - (start + dur);
        lags.push(lag);
        // One frame may be in flight (taken off the wire by the kernel, not
        // yet by the daemon), plus the start's millisecond rounding.
        assert!(
            lag <= FRAME_US + 1_000,
            "call {}: the recording ends {lag} µs short of the last packet before the kill ({})",
            s.call,
            s.meta
        );
        assert!(
            lag >= -2_000,
            "call {}: {lag} µs more audio than reached the wire",
            s.call
        );
        for leg in ["subscriber", "remote"] {
            let q = &s.meta["quality"][leg];
            assert!(
                q["packets"].as_u64().is_some_and(|p| p > 0),
                "call {} {leg}: quality kept: {}",
                s.call,
                s.meta
            );
            assert!(q["jitter_ms"].is_number() && q["lost"].is_number() && q["late"].is_number());
        }
        let w = read_wav(&s.wav).unwrap();
        let tail = w.samples[0].len().saturating_sub(800);
        if w.samples[0].len() > 1600 {
            let (l, r) = (&w.samples[0][tail..], &w.samples[1][tail..]);
            assert!(
                power(l, 440.0) > 100.0 * power(l, 1000.0),
                "call {}: the last 100 ms are the subscriber's tone",
                s.call
            );
            assert!(
                power(r, 1000.0) > 100.0 * power(r, 440.0),
                "call {}: and the remote's",
                s.call
            );
        }
    }
    assert!(
        lags.len() >= CALLS as usize,
        "at least every call's first segment was cut: {}",
        lags.len()
    );
    lags.sort();
    eprintln!(
        "cut recordings: {} ; audio missing before the end of the last packet before the kill: {}..{} µs (median {})",
        lags.len(),
        lags[0],
        lags[lags.len() - 1],
        lags[lags.len() / 2]
    );
}

/// Calls still flowing after a restart go on in a `restart` segment.
fn check_restart_segments(
    segs: &[Seg],
    specs: &[CallSpec],
    kills: &[(i64, i64)],
    replay_start: i64,
) {
    // tcpreplay sends call 1's INVITE (the first packet) first.
    let t0 = specs[0].invite_at.micros();
    for (i, &(_, restart)) in kills.iter().enumerate() {
        for (n, c) in (1..).zip(specs) {
            let bye = c.bye_at().unwrap().micros() - t0 + replay_start;
            if bye < restart + 1_000_000 {
                continue;
            }
            let s = segs
                .iter()
                .filter(|s| s.call == n && s.meta["segment"]["cause"] == "restart")
                .min_by_key(|s| (seg_start(s) - restart).abs())
                .filter(|s| (seg_start(s) - restart).abs() < 1_000_000)
                .unwrap_or_else(|| panic!("call {n}: a restart segment after restart {}", i + 1));
            let w = read_wav(&s.wav).unwrap();
            assert!(
                w.samples[0].len() > 4_000,
                "call {n}: {} samples after the restart",
                w.samples[0].len()
            );
            let (l, r) = (&w.samples[0][2_400..], &w.samples[1][2_400..]);
            assert!(
                power(l, 440.0) > 100.0 * power(l, 1000.0),
                "call {n}: subscriber tone after the restart"
            );
            assert!(
                power(r, 1000.0) > 100.0 * power(r, 440.0),
                "call {n}: remote tone after the restart"
            );
        }
    }
}
