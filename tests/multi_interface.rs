//! Calls whose SIP and RTP travel on different interfaces (a signalling
//! VLAN and a media VLAN, or two mirror ports) are one call: recorded
//! once, with both parties' tones, whether the two halves come from two
//! capture files (`replay`, merged by time) or from two interfaces of a
//! live daemon (two veth pairs in a namespace the test makes, each fed by
//! its own tcpreplay). Skips the live part with a message without root,
//! iproute2 or tcpreplay.

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
use std::process::{Command, Stdio};
use std::time::Duration;

const T0: i64 = 1_795_221_000;

/// Four calls, overlapping: three outbound from K-0001's number (the
/// subscriber calls), one inbound to K-0002's. Every party has a tone of
/// its own, so a channel that took another call's audio shows.
fn calls() -> Vec<CallSpec> {
    (1..=4u32)
        .map(|n| {
            let start = Timestamp::from_secs_micros(T0, 0).add_micros(i64::from(n) * 400_000);
            let (from, to) = match n {
                4 => ("0452220004", "0312340002"),
                _ => ("0312340001", "0077260312349999"),
            };
            let mut c = CallSpec::simple(n, from, to, start, 3_000 + 500 * n);
            c.ring_ms = 300;
            c.a_voice = Voice::tone(a_tone(n) as f32);
            c.b_voice = Voice::tone(b_tone(n) as f32);
            c
        })
        .collect()
}

fn a_tone(n: u32) -> f64 {
    300.0 + 100.0 * f64::from(n)
}
fn b_tone(n: u32) -> f64 {
    1_500.0 + 200.0 * f64::from(n)
}

/// Writes the calls' SIP to `sip` and their RTP to `rtp`. Both files open
/// with a frame at the same instant (to the discard port, which nothing
/// records), so two tcpreplays started together keep the halves in step.
fn write_split(calls: &[CallSpec], sip: &Path, rtp: &Path, both: &Path) {
    let mut ws = PcapWriter::create(sip, LinkType::Ethernet).unwrap();
    let mut wr = PcapWriter::create(rtp, LinkType::Ethernet).unwrap();
    let mut wb = PcapWriter::create(both, LinkType::Ethernet).unwrap();
    let start = Timestamp::from_secs_micros(T0, 0);
    let src = "192.0.2.250:9".parse().unwrap();
    let dst = "198.51.100.250:9".parse().unwrap();
    for w in [&mut ws, &mut wr] {
        w.write(start, &udp_frame(src, dst, b"start")).unwrap();
    }
    for d in merge(calls) {
        let frame = udp_frame(d.src, d.dst, &d.payload);
        let is_sip = d.src.port() == 5060 || d.dst.port() == 5060;
        let w = if is_sip { &mut ws } else { &mut wr };
        w.write(d.ts, &frame).unwrap();
        wb.write(d.ts, &frame).unwrap();
    }
    for w in [ws, wr, wb] {
        w.finish().unwrap();
    }
}

fn config(spool: &Path, interfaces: &str, sock: &Path) -> String {
    format!(
        r#"[general]
timezone = "+09:00"
[capture]
interfaces = [{interfaces}]
[recording]
spool_dir = "{spool}"
[announce]
mode = "off"
[daemon]
control_socket = "{sock}"
{acme}{k1}
[[contract]]
id = "K-0002"
service = "fixed"
numbers = ["0312340002"]
guidance = 1
channels = "stereo"
destination = "acme"
"#,
        spool = spool.display(),
        sock = sock.display(),
        acme = config_text::ACME_UNREACHED,
        k1 = config_text::K0001_STEREO,
    )
}

/// Each call's recording: (call number, metadata, WAV path).
fn recordings(spool: &Path) -> Vec<(u32, serde_json::Value, PathBuf)> {
    let dir = spool.join("queue/acme/ready");
    let mut out: Vec<_> = files(&dir, ".json")
        .into_iter()
        .map(|p| {
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            let call_id = meta["call_id"].as_str().unwrap_or_default().to_owned();
            let n: u32 = call_id
                .trim_start_matches("call-")
                .split('@')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("call id {call_id:?} in {meta}"));
            let wav = p.with_file_name(meta["audio"]["file"].as_str().unwrap());
            (n, meta, wav)
        })
        .collect();
    out.sort_by_key(|r| r.0);
    out
}

/// Every call once, subscriber left and remote right with their own
/// tones, as long as its segment (±`slack_ms`).
fn assert_each_call_whole(spool: &Path, slack_ms: i64) {
    assert_each_call_whole_of(spool, &[1, 2, 3, 4], slack_ms);
}

fn assert_each_call_whole_of(spool: &Path, calls: &[u32], slack_ms: i64) {
    let recs = recordings(spool);
    let numbers: Vec<u32> = recs.iter().map(|r| r.0).collect();
    assert_eq!(numbers, calls, "each call recorded exactly once");
    for (n, meta, wav) in &recs {
        let w = read_wav(wav).unwrap();
        let ms = w.samples[0].len() as i64 / 8;
        let span = span_ms(&meta["segment"]);
        assert!(
            (ms - span).abs() <= slack_ms,
            "call {n}: {ms} ms of audio in a {span} ms segment"
        );
        // Outbound: the subscriber is the caller (A); inbound: the callee.
        let (sub, rem) = match n {
            4 => (b_tone(*n), a_tone(*n)),
            _ => (a_tone(*n), b_tone(*n)),
        };
        let (l, r) = (&w.samples[0][800..], &w.samples[1][800..]);
        assert!(
            power(l, sub) > 100.0 * power(l, rem),
            "call {n}: subscriber's {sub} Hz on the left"
        );
        assert!(
            power(r, rem) > 100.0 * power(r, sub),
            "call {n}: remote's {rem} Hz on the right"
        );
        for other in calls.iter().copied().filter(|o| o != n) {
            for (ch, x) in [("left", l), ("right", r)] {
                for f in [a_tone(other), b_tone(other)] {
                    assert!(
                        power(x, f) * 100.0 < power(x, sub) + power(x, rem),
                        "call {n}: call {other}'s {f} Hz in the {ch} channel"
                    );
                }
            }
        }
    }
}

fn replay(cfg: &Path, out: &Path, captures: &[&Path]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_callrec"))
        .args(["replay", "--config"])
        .arg(cfg)
        .arg("--out")
        .arg(out)
        .args(captures)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "replay: {text}");
    text
}

#[test]
fn sip_and_rtp_in_two_capture_files_replay_as_one_call_each() {
    let dir = tempfile::tempdir().unwrap();
    let (sip, rtp, both) = (
        dir.path().join("sip.pcap"),
        dir.path().join("rtp.pcap"),
        dir.path().join("both.pcap"),
    );
    write_split(&calls(), &sip, &rtp, &both);
    let cfg = dir.path().join("callrec.toml");
    std::fs::write(
        &cfg,
        config(
            &dir.path().join("unused"),
            "\"eth0\"",
            &dir.path().join("s"),
        ),
    )
    .unwrap();
    // The media file first on the command line: order does not matter.
    let split = dir.path().join("split");
    let text = replay(&cfg, &split, &[&rtp, &sip]);
    assert!(text.contains("recorded 4"), "{text}");
    assert_each_call_whole(&split, 20);
    // Listed signalling first, the split capture gives the very audio of
    // the one capture that holds both halves (frames stamped alike go in
    // the order the files are listed, as with mergecap).
    let split = dir.path().join("split2");
    replay(&cfg, &split, &[&sip, &rtp]);
    let whole = dir.path().join("whole");
    replay(&cfg, &whole, &[&both]);
    let (a, b) = (recordings(&split), recordings(&whole));
    for ((n, _, wa), (_, _, wb)) in a.iter().zip(&b) {
        let (x, y) = (read_wav(wa).unwrap().samples, read_wav(wb).unwrap().samples);
        let first_diff = (0..2).find_map(|ch| {
            (0..x[ch].len().max(y[ch].len()))
                .find(|&i| x[ch].get(i) != y[ch].get(i))
                .map(|i| (ch, i))
        });
        assert!(
            first_diff.is_none(),
            "call {n}: the split capture's audio differs from the whole one's at (channel, sample) {first_diff:?}; lengths {} and {}",
            x[0].len(),
            y[0].len()
        );
    }
}

/// `ip -n NS link add wa type veth peer name wb` and both ends up: a
/// second link beside the namespace's `va`/`vb`.
fn second_link(ns: &Netns) -> bool {
    ns.ip(&["link", "add", "wa", "type", "veth", "peer", "name", "wb"])
        && ns.ip(&["link", "set", "wa", "up"])
        && ns.ip(&["link", "set", "wb", "up"])
}

#[test]
fn sip_on_one_interface_and_rtp_on_another_record_live_as_one_call_each() {
    let tag = "multi_interface_live";
    if !tools::tool_present("tcpreplay", "--version") {
        eprintln!("SKIP {tag}: tcpreplay is not installed");
        return;
    }
    let Some(ns) = Netns::new("mif") else { return };
    assert!(second_link(&ns), "a second veth pair in {}", ns.name);
    let dir = tempfile::tempdir().unwrap();
    let (sip, rtp, both) = (
        dir.path().join("sip.pcap"),
        dir.path().join("rtp.pcap"),
        dir.path().join("both.pcap"),
    );
    write_split(&calls(), &sip, &rtp, &both);
    let spool = dir.path().join("spool");
    let sock = dir.path().join("control.sock");
    let cfg = dir.path().join("callrec.toml");
    std::fs::write(&cfg, config(&spool, "\"va\", \"wa\"", &sock)).unwrap();
    let mut daemon = ns
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
    // SIP onto one link, RTP onto the other, at the same moment.
    let send = |file: &Path, iface: &str| {
        ns.cmd("tcpreplay")
            .args(["-q", "-i", iface])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut senders = [send(&sip, "vb"), send(&rtp, "wb")];
    for s in &mut senders {
        assert!(s.wait().unwrap().success(), "tcpreplay");
    }
    let ready = spool.join("queue/acme/ready");
    let all = wait_for(Duration::from_secs(15), || {
        files(&ready, ".json").len() >= 4
    });
    let status = callrec::daemon::control::query(&sock, "status").unwrap_or_default();
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let code = daemon.wait().unwrap();
    let mut log = String::new();
    use std::io::Read;
    let _ = daemon.stderr.take().unwrap().read_to_string(&mut log);
    assert!(all, "four recordings: {status}\n{log}");
    assert!(code.success(), "exit {code:?}: {log}");
    // Both interfaces were read, and the status says so per interface.
    for iface in ["va", "wa"] {
        let line = status
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("interface {iface}:")))
            .unwrap_or_else(|| panic!("no line for {iface}: {status}"));
        let packets: u64 = line
            .split("packets ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        assert!(packets > 10, "{iface} read: {line}");
    }
    // tcpreplay's pace on a loaded machine stretches the wire a little.
    assert_each_call_whole(&spool, 60);
    let hist = std::fs::read_to_string(spool.join("calls.jsonl")).unwrap();
    assert_eq!(hist.lines().count(), 4, "one history line per call: {hist}");
}

/// Capture points whose clocks are each their own (two capture agents, or
/// the interfaces of two hosts) merged frame by frame: after a quiet
/// stretch, one point's held frames are placed as soon as the other
/// point's traffic shows the clock has reached them, not when its own next
/// frame comes. Without that, call 1's 200 OK (alone on the signalling
/// point after the ringing) waited for call 2's INVITE while its RTP went
/// on: the recording started 20 ms late.
#[test]
fn two_capture_points_merged_frame_by_frame_give_the_audio_of_one() {
    use callrec::capture::Packet;
    use callrec::daemon::engine::Engine;
    use callrec::daemon::media::MediaWorker;
    use callrec::daemon::shard::ShardPool;
    use callrec::delivery::spool::{Spool, SpoolUsage};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let (sip, rtp, both) = (
        dir.path().join("sip.pcap"),
        dir.path().join("rtp.pcap"),
        dir.path().join("both.pcap"),
    );
    write_split(&calls(), &sip, &rtp, &both);
    let cfg_path = dir.path().join("callrec.toml");
    let two = dir.path().join("two");
    std::fs::write(&cfg_path, config(&two, "\"eth0\"", &dir.path().join("s"))).unwrap();
    let cfg = Arc::new(callrec::config::load(&cfg_path).unwrap());
    std::fs::create_dir_all(&two).unwrap();
    let usage = SpoolUsage::measure(&Spool::open(&two).unwrap()).unwrap();
    let pool = ShardPool::start(1, 4096, true, |i| {
        MediaWorker::new(cfg.clone(), i, usage.clone())
    })
    .unwrap();
    let mut e = Engine::new(cfg.clone(), &two, pool, None, usage).unwrap();
    let points = [
        e.set_capture_point("sip-agent"),
        e.set_capture_point("rtp-agent"),
    ];
    // The start frames at T0, then every datagram from its own point.
    let start = udp_frame(
        "192.0.2.250:9".parse().unwrap(),
        "198.51.100.250:9".parse().unwrap(),
        b"start",
    );
    let mut frames: Vec<(usize, Timestamp, Vec<u8>)> = points
        .iter()
        .map(|&p| (p, Timestamp::from_secs_micros(T0, 0), start.clone()))
        .collect();
    for d in merge(&calls()) {
        let p = if d.src.port() == 5060 || d.dst.port() == 5060 {
            points[0]
        } else {
            points[1]
        };
        frames.push((p, d.ts, udp_frame(d.src, d.dst, &d.payload)));
    }
    for (i, (p, ts, f)) in frames.iter().enumerate() {
        e.select_capture_point(*p);
        e.on_packet(&Packet {
            index: i as u64 + 1,
            ts: *ts,
            link: LinkType::Ethernet,
            data: f,
            orig_len: f.len() as u32,
        });
    }
    for p in points {
        e.select_capture_point(p);
        e.end_capture_point();
    }
    e.finish("capture-end");
    let whole = dir.path().join("whole");
    replay(&cfg_path, &whole, &[&sip, &rtp]);
    let (a, b) = (recordings(&two), recordings(&whole));
    assert_eq!(a.len(), 4, "every call recorded once");
    for ((n, ma, wa), (_, mb, wb)) in a.iter().zip(&b) {
        assert_eq!(ma["segment"], mb["segment"], "call {n}: segment");
        let (x, y) = (read_wav(wa).unwrap().samples, read_wav(wb).unwrap().samples);
        let (x, y) = (&x, &y);
        let diff: Vec<(usize, usize)> = (0..2)
            .flat_map(|ch| {
                (0..x[ch].len().max(y[ch].len()))
                    .filter(move |&i| x[ch].get(i) != y[ch].get(i))
                    .map(move |i| (ch, i))
            })
            .collect();
        assert!(
            diff.is_empty(),
            "call {n}: {} samples differ, first {:?}, last {:?}; lengths {} {}",
            diff.len(),
            diff.first(),
            diff.last(),
            x[0].len(),
            y[0].len()
        );
    }
}

/// One of two interfaces goes away: the other goes on recording while the
/// lost one is retried (named in `status` and an alarm), and after
/// `capture.retry_for` the daemon exits 1 for systemd to restart it.
#[test]
fn an_interface_lost_beside_a_working_one_is_named_and_the_other_records() {
    let tag = "multi_interface_lost";
    if !tools::tool_present("tcpreplay", "--version") {
        eprintln!("SKIP {tag}: tcpreplay is not installed");
        return;
    }
    let Some(ns) = Netns::new("mifl") else { return };
    assert!(second_link(&ns), "a second veth pair in {}", ns.name);
    let dir = tempfile::tempdir().unwrap();
    let (sip, rtp, both) = (
        dir.path().join("sip.pcap"),
        dir.path().join("rtp.pcap"),
        dir.path().join("both.pcap"),
    );
    write_split(&calls()[..1], &sip, &rtp, &both);
    let spool = dir.path().join("spool");
    let sock = dir.path().join("control.sock");
    let cfg = dir.path().join("callrec.toml");
    let text = config(&spool, "\"va\", \"wa\"", &sock).replace(
        "interfaces = [\"va\", \"wa\"]",
        // Long enough for the checks below on a loaded machine (the
        // status query came after the daemon had given up, once).
        "interfaces = [\"va\", \"wa\"]\nretry_for = \"8s\"",
    );
    std::fs::write(&cfg, text).unwrap();
    let mut daemon = ns
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
    let lost_at = std::time::Instant::now();
    assert!(ns.ip(&["link", "del", "wa"]));
    // The whole call on the interface that works.
    ns.replay(&both);
    let ready = spool.join("queue/acme/ready");
    assert!(
        wait_for(Duration::from_secs(3), || files(&ready, ".json").len() == 1),
        "the call on va is recorded while wa is lost"
    );
    // The per-interface lines come with the counters, once a second.
    let mut status = String::new();
    let named = wait_for(Duration::from_secs(3), || {
        status = callrec::daemon::control::query(&sock, "status").unwrap_or_default();
        status.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with("interface wa: lost") && l.contains("error")
        })
    });
    assert!(named, "status names the lost interface: {status}");
    let exited = wait_for(Duration::from_secs(20), || {
        daemon.try_wait().ok().flatten().is_some()
    });
    let took = lost_at.elapsed();
    let code = daemon.wait().unwrap();
    let mut log = String::new();
    use std::io::Read;
    let _ = daemon.stderr.take().unwrap().read_to_string(&mut log);
    assert!(exited, "the daemon gives up on wa: {log}");
    assert_eq!(code.code(), Some(1), "{log}");
    assert!(
        took >= Duration::from_secs(7),
        "gave up after {took:?}, before retry_for"
    );
    assert!(log.contains("CAPTURE ALARM") && log.contains("wa"), "{log}");
    assert_each_call_whole_of(&spool, &[1], 60);
}
