//! The announcer end to end: the shipped prompts through the player, into
//! a pcap file read back by tshark, and injected with pnet between two
//! network namespaces with tcpdump listening on the far side.

use audio_codec_algorithms::{decode_alaw, decode_ulaw};
use callrec::announce::sink::build_frame;
use callrec::announce::{
    InjectSink, OutPacket, PcapSink, Player, PromptError, Prompts, Sink, Target, WavProblem,
};
use callrec::decode::L2Info;
use callrec::time::Timestamp;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn audio_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("guidance-audio")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Party A at 192.0.2.10:40000, party B at 198.51.100.20:50000; each hears
/// the prompt from the other's address.
fn targets(pt_a: u8, pt_b: u8) -> [Target; 2] {
    let (a, b) = (addr("192.0.2.10:40000"), addr("198.51.100.20:50000"));
    [
        Target {
            to: a,
            from: b,
            pt: pt_a,
            l2: None,
        },
        Target {
            to: b,
            from: a,
            pt: pt_b,
            l2: None,
        },
    ]
}

fn t0() -> Timestamp {
    // 2026-11-21T00:30:00.004Z: deliberately not on a 20 ms boundary.
    Timestamp::from_secs_micros(1_795_221_000, 4_000)
}

struct Rtp {
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: Vec<u8>,
}

fn parse_rtp(b: &[u8]) -> Rtp {
    assert!(b.len() >= 12, "short RTP packet");
    assert_eq!(b[0], 0x80, "RTP v2, no padding/extension/CSRC");
    Rtp {
        marker: b[1] & 0x80 != 0,
        pt: b[1] & 0x7f,
        seq: u16::from_be_bytes([b[2], b[3]]),
        ts: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        payload: b[12..].to_vec(),
    }
}

/// Drives the player like a daemon would: wake at irregular times (every
/// 7 ms), collecting what `poll` hands out.
fn run_timeline(player: &mut Player, from: Timestamp) -> Vec<OutPacket> {
    let mut out = Vec::new();
    let mut now = from;
    while let Some(due) = player.next_due() {
        assert!(due >= from);
        now = now.add_micros(7_000);
        player.poll(now, &mut |p| {
            assert!(p.at <= now, "packet emitted before it was due");
            assert!(
                now.since(p.at) <= 7_000,
                "packet held back more than one wake-up"
            );
            out.push(p)
        });
    }
    out
}

/// Checks one stream: pacing, marker, continuity, and that its payload
/// decodes to `samples` followed only by silence padding.
fn check_stream(pkts: &[&OutPacket], start: Timestamp, samples: &[i16], pt: u8) {
    let expected = samples.len().div_ceil(160);
    assert_eq!(pkts.len(), expected, "packets = ceil(duration / 20 ms)");
    let first = parse_rtp(&pkts[0].rtp);
    let mut decoded = Vec::new();
    for (i, p) in pkts.iter().enumerate() {
        let r = parse_rtp(&p.rtp);
        assert_eq!(p.at, start.add_micros(i as i64 * 20_000), "20 ms pacing");
        assert_eq!(r.marker, i == 0, "marker on the first packet only");
        assert_eq!(r.pt, pt);
        assert_eq!(r.ssrc, first.ssrc);
        assert_eq!(r.seq, first.seq.wrapping_add(i as u16), "continuous seq");
        assert_eq!(r.ts, first.ts.wrapping_add(160 * i as u32), "continuous ts");
        assert_eq!(r.payload.len(), 160);
        decoded.extend(r.payload.iter().map(|&b| {
            if pt == 0 {
                decode_ulaw(b)
            } else {
                decode_alaw(b)
            }
        }));
    }
    if pt == 0 {
        assert_eq!(
            &decoded[..samples.len()],
            samples,
            "mu-law payload decodes to the prompt"
        );
    } else {
        // Transcoded to A-law: equal within A-law's quantisation step.
        for (d, s) in decoded.iter().zip(samples) {
            let step = (s.unsigned_abs() as i32 / 16).max(16);
            assert!(
                (*d as i32 - *s as i32).abs() <= step,
                "A-law sample {d} vs {s}"
            );
        }
    }
    // A-law has no zero code: its silence decodes to +-8.
    assert!(
        decoded[samples.len()..].iter().all(|&s| s.abs() <= 8),
        "padding is silence"
    );
}

/// The file's samples read by sox, independently of our WAV parser.
fn sox_samples(path: &Path) -> Option<Vec<i16>> {
    let out = Command::new("sox")
        .arg(path)
        .args(["-t", "s16", "-"])
        .output()
        .ok()?;
    out.status.success().then(|| {
        out.stdout
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect()
    })
}

#[test]
fn shipped_prompts_load_with_plausible_lengths() {
    let prompts = Prompts::load(&audio_dir()).expect("guidance-audio loads");
    for id in 1..=5 {
        let p = prompts.get(id).unwrap();
        let secs = p.duration().as_secs_f64();
        assert!((4.0..=9.0).contains(&secs), "guidance{id}.wav is {secs} s");
        let peak = p.samples().iter().map(|s| s.unsigned_abs()).max().unwrap();
        // Normalised to about -3 dBFS, never at mu-law's full scale (32124).
        assert!(
            (20_000..32_124).contains(&peak),
            "guidance{id}.wav peak {peak}"
        );
        if let Some(sox) = sox_samples(&audio_dir().join(format!("guidance{id}.wav"))) {
            assert_eq!(
                sox,
                p.samples(),
                "our decode of guidance{id}.wav equals sox's"
            );
        } else {
            eprintln!("sox not found: skipping the independent decode check");
        }
    }
    assert!(matches!(
        prompts.get(6),
        Err(PromptError::NoSuchPrompt { id: 6 })
    ));
}

#[test]
fn player_paces_both_targets_over_a_timeline() {
    let prompts = Prompts::load(&audio_dir()).unwrap();
    let prompt = prompts.get(2).unwrap();
    let mut player = Player::new(42);
    let times = player.start(7, t0(), prompt, targets(0, 8)).unwrap();
    let frames = prompt.samples().len().div_ceil(160) as i64;
    assert_eq!(times.started_at, t0());
    assert_eq!(times.ended_at, t0().add_micros(frames * 20_000));
    let out = run_timeline(&mut player, t0());
    assert!(!player.is_playing(7));
    let [ta, tb] = targets(0, 8);
    let to_a: Vec<_> = out.iter().filter(|p| p.to == ta.to).collect();
    let to_b: Vec<_> = out.iter().filter(|p| p.to == tb.to).collect();
    assert_eq!(to_a.len() + to_b.len(), out.len());
    assert!(to_a.iter().all(|p| p.from == ta.from && p.call == 7));
    assert!(to_b.iter().all(|p| p.from == tb.from));
    check_stream(&to_a, t0(), prompt.samples(), 0);
    check_stream(&to_b, t0(), prompt.samples(), 8);
    assert_ne!(parse_rtp(&to_a[0].rtp).ssrc, parse_rtp(&to_b[0].rtp).ssrc);

    // Deterministic: same seed and call, same bytes; another call differs.
    let mut again = Player::new(42);
    again.start(7, t0(), prompt, targets(0, 8)).unwrap();
    assert_eq!(run_timeline(&mut again, t0()), out);
    let mut other = Player::new(42);
    other.start(8, t0(), prompt, targets(0, 8)).unwrap();
    let o = run_timeline(&mut other, t0());
    assert_ne!(parse_rtp(&o[0].rtp).ssrc, parse_rtp(&out[0].rtp).ssrc);
}

/// Spoils a prompt file in place.
type Breaker = Box<dyn Fn(&Path)>;
/// Says whether the error is the one expected.
type Expect = Box<dyn Fn(&PromptError) -> bool>;

#[test]
fn prompts_load_rejects_bad_files_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    for id in 1..=5 {
        std::fs::copy(
            audio_dir().join(format!("guidance{id}.wav")),
            dir.path().join(format!("guidance{id}.wav")),
        )
        .unwrap();
    }
    Prompts::load(dir.path()).expect("copies load");
    let g3 = dir.path().join("guidance3.wav");
    let mut cases: Vec<(&str, Breaker, Expect)> = vec![
        (
            "missing",
            Box::new(|p| std::fs::remove_file(p).unwrap()),
            Box::new(|e| matches!(e, PromptError::Io { .. })),
        ),
        (
            "garbage",
            Box::new(|p| std::fs::write(p, b"this is not a wave file at all").unwrap()),
            Box::new(|e| {
                matches!(
                    e,
                    PromptError::Format {
                        problem: WavProblem::NotRiffWave,
                        ..
                    }
                )
            }),
        ),
    ];
    if Command::new("sox").arg("--version").output().is_ok() {
        // Real files from sox, with sox's own chunk layout.
        cases.push((
            "stereo",
            Box::new(|p| sox_make(p, &["-r", "8000", "-c", "2", "-e", "u-law"])),
            Box::new(|e| {
                matches!(
                    e,
                    PromptError::Format {
                        problem: WavProblem::Channels(2),
                        ..
                    }
                )
            }),
        ));
        cases.push((
            "16 kHz",
            Box::new(|p| {
                sox_make(
                    p,
                    &["-r", "16000", "-c", "1", "-e", "signed-integer", "-b", "16"],
                )
            }),
            Box::new(|e| {
                matches!(
                    e,
                    PromptError::Format {
                        problem: WavProblem::SampleRate(16000),
                        ..
                    }
                )
            }),
        ));
    } else {
        eprintln!("sox not found: skipping the stereo and 16 kHz cases");
    }
    for (what, break_it, is_expected) in &cases {
        std::fs::copy(audio_dir().join("guidance3.wav"), &g3).unwrap();
        break_it(&g3);
        let err = Prompts::load(dir.path()).expect_err(what);
        assert!(is_expected(&err), "{what}: unexpected error {err}");
        assert_eq!(err.path(), Some(g3.as_path()), "{what}");
        let msg = err.to_string();
        assert!(
            msg.contains("guidance3.wav"),
            "{what}: message names the file: {msg}"
        );
        eprintln!("{what}: {msg}");
    }
}

fn sox_make(path: &Path, fmt: &[&str]) {
    let ok = Command::new("sox")
        .args(["-n"])
        .args(fmt)
        .arg(path)
        .args(["synth", "2", "sine", "440"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "sox failed to make {}", path.display());
}

#[test]
fn pcap_sink_output_reads_back_in_tshark() {
    if Command::new("tshark").arg("--version").output().is_err() {
        eprintln!("tshark not found: skipping the pcap cross-check");
        return;
    }
    let prompts = Prompts::load(&audio_dir()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("announcements.pcap");
    let mut player = Player::new(1);
    let p4 = prompts.get(1).unwrap();
    let p6 = prompts.get(4).unwrap();
    player.start(1, t0(), p4, targets(0, 0)).unwrap();
    let (a6, b6) = (addr("[2001:db8::10]:40002"), addr("[2001:db8:1::20]:50002"));
    player
        .start(
            2,
            t0().add_micros(3_000),
            p6,
            [
                Target {
                    to: a6,
                    from: b6,
                    pt: 0,
                    l2: None,
                },
                Target {
                    to: b6,
                    from: a6,
                    pt: 0,
                    l2: None,
                },
            ],
        )
        .unwrap();
    let mut sink = PcapSink::create(&file).unwrap();
    let mut sent = 0;
    for p in run_timeline(&mut player, t0()) {
        sink.send(&p).unwrap();
        sent += 1;
    }
    sink.flush().unwrap();
    drop(sink);

    let out = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args(["-d", "udp.port==40000,rtp", "-d", "udp.port==50000,rtp"])
        .args(["-d", "udp.port==40002,rtp", "-d", "udp.port==50002,rtp"])
        .args(["-T", "fields", "-E", "separator=|"])
        .args([
            "-e",
            "ip.dst",
            "-e",
            "ipv6.dst",
            "-e",
            "udp.dstport",
            "-e",
            "rtp.seq",
        ])
        .args([
            "-e",
            "frame.time_epoch",
            "-e",
            "rtp.payload",
            "-e",
            "rtp.marker",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), sent, "tshark sees every frame");

    let streams = [
        ("192.0.2.10", "40000", p4),
        ("198.51.100.20", "50000", p4),
        ("2001:db8::10", "40002", p6),
        ("2001:db8:1::20", "50002", p6),
    ];
    for (ip, port, prompt) in streams {
        let rows: Vec<_> = rows
            .iter()
            .filter(|r| (r[0] == ip || r[1] == ip) && r[2] == port)
            .collect();
        assert_eq!(
            rows.len(),
            prompt.samples().len().div_ceil(160),
            "stream to {ip}:{port}"
        );
        let mut payload = Vec::new();
        let mut prev: Option<(u16, f64)> = None;
        for (i, r) in rows.iter().enumerate() {
            let seq: u16 = r[3].parse().unwrap();
            let t: f64 = r[4].parse().unwrap();
            if let Some((ps, pt)) = prev {
                assert_eq!(seq, ps.wrapping_add(1), "{ip}: seq");
                assert!(((t - pt) - 0.020).abs() < 2e-6, "{ip}: pacing {}", t - pt);
            }
            prev = Some((seq, t));
            let marker = matches!(r[6], "1" | "True" | "true");
            assert_eq!(marker, i == 0, "{ip}: marker");
            let hexs: String = r[5].chars().filter(|c| *c != ':').collect();
            payload.extend(hex::decode(hexs).unwrap().into_iter().map(decode_ulaw));
        }
        assert_eq!(
            &payload[..prompt.samples().len()],
            prompt.samples(),
            "{ip}: payload decoded by way of tshark"
        );
    }
}

/// Network namespaces for the injection test, deleted on drop (also when
/// the test fails).
struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let out = Command::new("ip")
        .args(["-n", ns, "-j", "link", "show", dev])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = v[0]["address"].as_str().unwrap();
    let b = hex::decode(s.replace(':', "")).unwrap();
    b.try_into().unwrap()
}

/// A process this test started, killed on drop so a failing assertion
/// does not leave tcpdump running in a namespace.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

const CHILD_ENV: &str = "CALLREC_TEST_INJECT_CHILD";

/// UDP port the far side sends to while the child listens: its frames
/// prove the child's capture on vA works.
const FAR_PROBE_PORT: u16 = 40010;

/// The UDP destination port of an Ethernet frame, if it carries UDP.
fn udp_dst_port(frame: &[u8]) -> Option<u16> {
    match etherparse::SlicedPacket::from_ethernet(frame)
        .ok()?
        .transport?
    {
        etherparse::TransportSlice::Udp(u) => Some(u.destination_port()),
        _ => None,
    }
}

/// Runs inside namespace A (started by `inject_between_namespaces`): plays
/// guidance1 to both parties and injects the frames on the veth end, with
/// callrec's own live capture open on that same interface. The capture
/// must not take the injected frames for media (the kernel shows a
/// host's outgoing frames to every capture on the interface), yet must see
/// what arrives from the far side.
#[test]
#[ignore = "helper: run by inject_between_namespaces inside a namespace"]
fn inject_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split(',').collect();
    let (dev, src, dst) = (parts[0], parts[1], parts[2]);
    let mac = |s: &str| -> [u8; 6] { hex::decode(s).unwrap().try_into().unwrap() };
    let l2 = Some(L2Info {
        src_mac: mac(src),
        dst_mac: mac(dst),
        vlans: [0, 0],
    });
    let prompts = Prompts::load(&audio_dir()).unwrap();
    let mut player = Player::new(3);
    let mut t = targets(0, 0);
    t[0].l2 = l2;
    t[1].l2 = l2;
    player.start(1, t0(), prompts.get(1).unwrap(), t).unwrap();
    use callrec::capture::PacketSource;
    let mut own = callrec::capture::LiveSource::open(dev, 65_535, true, 4 << 20).unwrap();
    let mut sink = InjectSink::open(dev).unwrap();
    for p in run_timeline(&mut player, t0()) {
        sink.send(&p).unwrap();
        // Gentle on the far side's capture buffer.
        std::thread::sleep(Duration::from_micros(200));
    }
    let (mut injected_seen, mut probe_seen) = (0, false);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !probe_seen && Instant::now() < deadline {
        let Some(p) = own.next_packet().unwrap() else {
            continue;
        };
        match udp_dst_port(p.data) {
            Some(40000 | 50000) => injected_seen += 1,
            Some(FAR_PROBE_PORT) => probe_seen = true,
            _ => {}
        }
    }
    assert!(
        probe_seen,
        "the capture on {dev} saw nothing from the far side"
    );
    assert_eq!(
        injected_seen, 0,
        "the capture took this host's own injected frames"
    );
}

#[test]
fn inject_between_namespaces() {
    let id = std::process::id();
    let (na, nb) = (format!("crA{id}"), format!("crB{id}"));
    if Command::new("tcpdump").arg("--version").output().is_err() {
        eprintln!("tcpdump not found: skipping the injection test");
        return;
    }
    let mut guard = Netns(Vec::new());
    for ns in [&na, &nb] {
        if let Err(e) = ip(&["netns", "add", ns]) {
            eprintln!(
                "cannot create network namespaces (needs root + CAP_NET_ADMIN): {e}; skipping"
            );
            return;
        }
        guard.0.push(ns.clone());
    }
    ip(&[
        "-n", &na, "link", "add", "vA", "type", "veth", "peer", "name", "vB", "netns", &nb,
    ])
    .unwrap();
    for (ns, dev, a) in [(&na, "vA", "192.0.2.1/24"), (&nb, "vB", "192.0.2.2/24")] {
        ip(&["-n", ns, "addr", "add", a, "dev", dev]).unwrap();
        ip(&["-n", ns, "link", "set", dev, "up"]).unwrap();
    }
    let (mac_a, mac_b) = (mac_of(&na, "vA"), mac_of(&nb, "vB"));

    let prompt = Prompts::load(&audio_dir()).unwrap().get(1).unwrap().clone();
    let per_stream = prompt.samples().len().div_ceil(160);
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("far.pcap");
    let mut tcpdump = Command::new("ip")
        .args([
            "netns", "exec", &nb, "tcpdump", "-i", "vB", "-n", "-U", "-c",
        ])
        .arg((2 * per_stream).to_string())
        .arg("-w")
        .arg(&cap)
        .args(["udp port 40000 or udp port 50000"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until tcpdump listens.
    let stderr = tcpdump.stderr.take().unwrap();
    let mut tcpdump = Reap(tcpdump);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let listening = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    assert!(
        listening.contains("listening"),
        "tcpdump did not start: {listening}"
    );

    let mut child = Command::new("ip")
        .args(["netns", "exec", &na])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "inject_child", "--ignored", "--nocapture"])
        .env(
            CHILD_ENV,
            format!("vA,{},{}", hex::encode(mac_a), hex::encode(mac_b)),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The far side keeps sending a probe to A until the child is done.
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        let _ = Command::new("ip")
            .args(["netns", "exec", &nb, "bash", "-c"])
            .arg(format!("echo probe > /dev/udp/192.0.2.1/{FAR_PROBE_PORT}"))
            .status();
        std::thread::sleep(Duration::from_millis(100));
    }
    let child = child.wait_with_output().unwrap();
    assert!(
        child.status.success(),
        "injecting child failed: {}{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    while tcpdump.0.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    drop(tcpdump);
    let mut capture = pcap::Capture::from_file(&cap).unwrap();
    let mut to_a = Vec::new();
    let mut to_b = 0;
    while let Ok(frame) = capture.next_packet() {
        let s = etherparse::SlicedPacket::from_ethernet(frame.data).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = s.link else {
            panic!("not Ethernet")
        };
        assert_eq!(
            (eth.source(), eth.destination()),
            (mac_a, mac_b),
            "MACs as learned"
        );
        let Some(etherparse::TransportSlice::Udp(udp)) = s.transport else {
            continue;
        };
        match udp.destination_port() {
            40000 => to_a.push(parse_rtp(udp.payload())),
            50000 => to_b += 1,
            _ => {}
        }
    }
    assert_eq!(
        to_a.len(),
        per_stream,
        "far side saw every packet to party A"
    );
    assert_eq!(to_b, per_stream, "far side saw every packet to party B");
    let decoded: Vec<i16> = to_a
        .iter()
        .flat_map(|r| r.payload.iter().map(|&b| decode_ulaw(b)))
        .collect();
    assert_eq!(
        &decoded[..prompt.samples().len()],
        prompt.samples(),
        "the prompt arrived intact"
    );
    drop(guard);
}

#[test]
fn frames_carry_vlan_tags() {
    let p = OutPacket {
        call: 1,
        at: t0(),
        from: addr("198.51.100.20:50000"),
        to: addr("192.0.2.10:40000"),
        l2: None,
        rtp: vec![0x80; 172],
    };
    let l2 = L2Info {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        vlans: [100, 200],
    };
    let f = build_frame(&p, &l2).unwrap();
    let s = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
    let ids: Vec<u16> = s
        .link_exts
        .iter()
        .filter_map(|e| match e {
            etherparse::LinkExtSlice::Vlan(v) => Some(v.vlan_identifier().value()),
            _ => None,
        })
        .collect();
    assert_eq!(ids, [100, 200]);
    let bad = L2Info {
        vlans: [5000, 0],
        ..l2
    };
    assert!(
        build_frame(&p, &bad).is_err(),
        "VLAN id out of range is an error, not a panic"
    );
    let mixed = OutPacket {
        to: addr("[2001:db8::1]:40000"),
        ..p
    };
    assert!(build_frame(&mixed, &l2).is_err());
}

#[test]
fn udp_sink_sends_from_the_expected_address_or_falls_back() {
    use callrec::announce::UdpSink;
    let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A free local port to send from.
    let from = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut sink = UdpSink::new();
    let p = OutPacket {
        call: 1,
        at: t0(),
        from,
        to: rx.local_addr().unwrap(),
        l2: None,
        rtp: vec![0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9],
    };
    sink.send(&p).unwrap();
    let mut buf = [0u8; 64];
    let (n, src) = rx.recv_from(&mut buf).unwrap();
    assert_eq!(
        (&buf[..n], src),
        (&p.rtp[..], from),
        "sent from the bound address"
    );
    // Not a local address: still sent, from an ephemeral port.
    let far = OutPacket {
        from: addr("192.0.2.99:40000"),
        ..p.clone()
    };
    sink.send(&far).unwrap();
    let (n, src) = rx.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], &p.rtp[..]);
    assert_ne!(src, far.from);
}
