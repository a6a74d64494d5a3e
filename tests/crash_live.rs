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
//!   and holds every packet of the subscriber's that reached the wire
//!   before the kill, whole, but one at most (in flight: taken by the
//!   kernel, not yet by the daemon): complete to within one 20 ms frame,
//!   the 200 ms jitter window included (the daemon keeps it in a file
//!   mapping). The subscriber's audio says which packet it is (each
//!   packet's samples are one μ-law code, from its sequence number), so
//!   the check does not depend on the sender's timing;
//! - each call still flowing at a restart goes on in a `restart` segment
//!   holding both parties' audio;
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
#[path = "support/netns_wire.rs"]
mod netns;
#[path = "support/tools.rs"]
mod tools;
use audio::{files, power};
use callrec::capture::LinkType;
use callrec::recording::wav::read_wav;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, merge};
use live::wait_for;
use netns::{Netns, WirePkt, now_us, parse_utc, tcpdump, wire_rtp};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CALLS: u32 = 20;

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
    let Some(ns) = Netns::create("crj") else {
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
    let run = run_with_two_kills(&ns, &mut rng, &specs, dir.path());

    let segs = published(&run.spool);
    check_history(&run.spool, &segs);
    check_damaged_files_handled(&run.spool, &run.log);
    check_cut_recordings(&segs, &wire_rtp(&run.wire, CALLS), &run.kills);
    check_restart_segments(&segs, &specs, &run.kills, run.replay_start);
    assert!(
        files(&run.spool.join("state/calls"), ".json").is_empty(),
        "journal empty once every call ended"
    );
    assert!(files(&run.spool.join("tmp"), ".wav").is_empty());
}

/// What a run left: the spool, the daemon's log, what reached the wire,
/// each kill's moment and the restart after it (µs since the epoch), and
/// when tcpreplay started.
struct Run {
    spool: PathBuf,
    log: String,
    wire: PathBuf,
    kills: [(i64, i64); 2],
    replay_start: i64,
}

/// Plays `specs` into the namespace with the daemon capturing, kills it
/// twice at random moments (restarting it each time on the same spool),
/// waits until every call has its history line and stops everything.
fn run_with_two_kills(ns: &Netns, rng: &mut Rng, specs: &[CallSpec], dir: &Path) -> Run {
    let (cfg, spool, _sock) = config(dir, "vB");
    let log = dir.join("daemon.log");
    let pcap = dir.join("calls.pcap");
    let mut w = PcapWriter::create(&pcap, LinkType::Ethernet).unwrap();
    let mut datagrams = merge(specs);
    code_subscriber_audio(specs, &mut datagrams);
    for d in datagrams {
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();
    let wire = dir.join("wire.pcap");
    let mut dump = tcpdump(ns, &wire);
    let mut daemon = start(ns, &cfg, &log, 1);
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
    sleep_until(replay_start + rng.ms(3_400, 5_200) as i64 * 1000);
    let kill1 = kill9(&mut daemon);
    plant_damaged_journal_files(&spool);
    std::thread::sleep(Duration::from_millis(300));
    daemon = start(ns, &cfg, &log, 2);
    let restart1 = now_us();
    sleep_until(restart1 + rng.ms(1_500, 3_000) as i64 * 1000);
    let kill2 = kill9(&mut daemon);
    std::thread::sleep(Duration::from_millis(300));
    daemon = start(ns, &cfg, &log, 3);
    let restart2 = now_us();
    let _ = replay.wait();
    // Every call ends: by its BYE, or (BYE lost while the daemon was down)
    // by the RTP timeout.
    let hist_path = spool.join("calls.jsonl");
    let lines = || {
        std::fs::read_to_string(&hist_path)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let all_lines = wait_for(Duration::from_secs(30), || lines() > CALLS as usize);
    for child in [&mut daemon, &mut dump] {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    assert!(all_lines, "history incomplete: {} lines", lines());
    Run {
        log: std::fs::read_to_string(&log).unwrap(),
        spool,
        wire,
        kills: [(kill1, restart1), (kill2, restart2)],
        replay_start,
    }
}

fn sleep_until(us: i64) {
    let d = us - now_us();
    if d > 0 {
        std::thread::sleep(Duration::from_micros(d as u64));
    }
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

/// The subscriber's voice says which packet it is: every sample of the
/// packet with sequence number `seq` is the μ-law code `seq % CODES`
/// (0x00-0x77: distinct values, none of them silence), so a recording
/// shows which of the subscriber's packets it holds, whatever the
/// sender's timing. (The remote party keeps its 1,000 Hz tone.)
const CODES: u16 = 120;

fn code_subscriber_audio(
    specs: &[CallSpec],
    datagrams: &mut [callrec_testkit::scenario::Datagram],
) {
    for d in datagrams.iter_mut() {
        let from_a = specs.iter().any(|c| d.src == c.a_rtp && d.dst == c.b_rtp);
        let rtp = &mut d.payload;
        if from_a && rtp.len() > 12 && rtp[1] & 0x7f == 0 {
            let code = (u16::from_be_bytes([rtp[2], rtp[3]]) % CODES) as u8;
            rtp[12..].fill(code);
        }
    }
}

/// The code a recorded subscriber sample carries, if any.
fn code_of(sample: i16) -> Option<u16> {
    (0..CODES).find(|&c| callrec::media::codec::ULAW_DECODE[c as usize] == sample)
}

/// Recordings cut by a kill: published with quality, and holding every
/// subscriber packet that reached the wire before the kill but one at
/// most (in flight: taken by the kernel, not yet by the daemon), the last
/// one whole (160 samples) and nothing after it but the remote party's
/// last packet (under 20 ms).
fn check_cut_recordings(segs: &[Seg], wire: &BTreeMap<u32, Vec<WirePkt>>, kills: &[(i64, i64)]) {
    let mut missing = [0usize; 2];
    for s in segs.iter().filter(|s| s.meta["end_reason"] == "recovered") {
        let start = seg_start(s);
        let (kill, _) = *kills
            .iter()
            .find(|(k, _)| *k > start)
            .expect("a kill after the segment began");
        // A call whose BYE was lost while the daemon was down goes on
        // silent until the RTP timeout: nothing to compare with.
        let Some(sent) = wire[&s.call]
            .iter()
            .filter(|p| p.leg == 0 && p.at >= start + 1_000 && p.at < kill)
            .map(|p| p.seq)
            .max()
        else {
            assert_eq!(s.meta["segment"]["cause"], "restart", "call {}", s.call);
            continue;
        };
        let lost = packets_missing_at_end(s, sent);
        assert!(
            lost <= 1,
            "call {}: {lost} packets before the kill missing: {}",
            s.call,
            s.meta
        );
        missing[lost] += 1;
        check_quality_and_last_tones(s);
    }
    assert!(
        missing.iter().sum::<usize>() >= CALLS as usize,
        "at least every call's first segment was cut: {missing:?}"
    );
    eprintln!(
        "cut recordings: {} complete to the subscriber's last packet on the wire before the kill, {} to the one before it (the last in flight)",
        missing[0], missing[1]
    );
}

/// How many of the subscriber's packets up to `sent` (the last on the
/// wire before the kill) are missing at the end of recording `s`.
fn packets_missing_at_end(s: &Seg, sent: u16) -> usize {
    let w = read_wav(&s.wav).unwrap();
    let left = &w.samples[0];
    let last = left
        .iter()
        .rposition(|&x| x != 0)
        .expect("subscriber audio");
    let code = code_of(left[last])
        .unwrap_or_else(|| panic!("call {}: sample {} is no packet's", s.call, left[last]));
    let run = left[..=last]
        .iter()
        .rev()
        .take_while(|&&x| x == left[last])
        .count();
    assert_eq!(
        run, 160,
        "call {}: the last packet recorded is whole",
        s.call
    );
    let after_ms = (left.len() - 1 - last) / 8;
    assert!(
        after_ms < 20,
        "call {}: {after_ms} ms after the subscriber's last packet",
        s.call
    );
    // The recorded packet is the latest up to `sent` with that code
    // (codes repeat every 2.4 s).
    ((sent % CODES + CODES - code) % CODES) as usize
}

/// A cut recording keeps its quality figures, and its last 100 ms (the
/// jitter window restored) hold both parties' audio.
fn check_quality_and_last_tones(s: &Seg) {
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
    if w.samples[0].len() > 1600 {
        let tail = w.samples[0].len() - 800;
        let (l, r) = (&w.samples[0][tail..], &w.samples[1][tail..]);
        assert!(
            l.iter().all(|&x| x == 0 || code_of(x).is_some()),
            "call {}: the last 100 ms are the subscriber's packets",
            s.call
        );
        assert!(
            power(r, 1000.0) > 100.0 * power(r, 440.0),
            "call {}: and the remote's tone",
            s.call
        );
    }
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
            // (A sender stalled by a busy machine leaves gaps of silence.)
            let coded = l.iter().filter(|&&x| code_of(x).is_some()).count();
            assert!(
                coded >= 1_600 && l.iter().all(|&x| x == 0 || code_of(x).is_some()),
                "call {n}: the subscriber's packets after the restart ({coded} samples)"
            );
            assert!(
                power(r, 1000.0) > 100.0 * power(r, 440.0),
                "call {n}: remote tone after the restart"
            );
        }
    }
}
