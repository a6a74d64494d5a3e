//! Live calls from SIPp: `callrec run` on the loopback records real SIP
//! dialogs with real RTP, made by two SIPp instances per call (a caller
//! running `tests/sipp/uac.xml` and a callee running `tests/sipp/uas.xml`),
//! each streaming its own tone with `rtp_stream`. Every address is in
//! 127.0.0.0/8, so nothing leaves the machine.
//!
//! Two calls run at the same time: an outbound call dialled with the
//! 0077-26 prefix by the subscriber, and an inbound call to the contract's
//! number. Each recording must have the subscriber's tone on the left and
//! the remote party's on the right, the length the signalling says, and
//! no lost packets. The inbound call is paused and resumed over the
//! control socket (`callrec pause` / `callrec resume`) mid-call: both
//! channels are silent over the pause the metadata reports, and the
//! resume beep is on the remote channel. Skips with a message where SIPp or live capture on
//! `lo` is unavailable.

#[path = "support/audio.rs"]
mod audio;
#[path = "support/config.rs"]
mod config_text;
#[path = "support/live.rs"]
mod live;
#[path = "support/tools.rs"]
mod tools;
use audio::{files, power};
use callrec::media::codec::encode_ulaw;
use callrec::recording::wav::read_wav;
use live::{can_run, start_daemon, wait_for};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the caller waits between the ACK and its BYE.
const TALK_MS: u32 = 4_000;

/// One second of a sine at `hz`, μ-law, as SIPp's `rtp_stream` plays it
/// (raw payload bytes, looped, 160 per packet).
fn tone_file(dir: &Path, hz: f64) {
    let bytes: Vec<u8> = (0..8000)
        .map(|n| {
            let x = 8000.0 * (2.0 * std::f64::consts::PI * hz * n as f64 / 8000.0).sin();
            encode_ulaw(x as i16)
        })
        .collect();
    std::fs::write(dir.join("tone.ul"), bytes).unwrap();
}

/// One side of a call: SIPp in its own directory (its logs and the tone
/// it plays live there), bound to `ip:5060` with RTP on `ip:rtp_port`.
struct Party {
    dir: std::path::PathBuf,
    ip: &'static str,
    rtp_port: u16,
    tone_hz: f64,
}

impl Party {
    fn sipp(&self, scenario: &str) -> Command {
        std::fs::create_dir_all(&self.dir).unwrap();
        tone_file(&self.dir, self.tone_hz);
        let mut c = Command::new("sipp");
        c.current_dir(&self.dir)
            .arg("-sf")
            .arg(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/sipp")
                    .join(scenario),
            )
            .args(["-i", self.ip, "-p", "5060", "-mi", self.ip])
            .args(["-mp", &self.rtp_port.to_string()])
            .args(["-m", "1", "-nostdin", "-timeout", "30s", "-trace_err"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    /// Starts the callee; it answers after 300 ms and streams until BYE.
    fn answer(&self) -> Child {
        self.sipp("uas.xml").spawn().unwrap()
    }

    /// Starts the caller towards `callee_ip`, as `caller` dialling `callee`.
    fn call(&self, callee_ip: &str, caller: &str, callee: &str) -> Child {
        let mut c = self.sipp("uac.xml");
        c.args(["-key", "caller", caller, "-key", "callee", callee])
            .args(["-d", &TALK_MS.to_string()])
            .arg(format!("{callee_ip}:5060"));
        c.spawn().unwrap()
    }
}

fn finish(name: &str, mut child: Child) {
    let ok = wait_for(Duration::from_secs(30), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !ok {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "SIPp {name} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sipp_calls_are_recorded_live() {
    if !can_run("sipp_calls_are_recorded_live", "sipp", "-v") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config_text::LiveFiles { cfg, spool, sock } = config_text::live_on_lo(dir.path(), "");

    let mut daemon = start_daemon(&cfg, &sock);

    let party = |name: &str, ip: &'static str, rtp_port: u16, tone_hz: f64| Party {
        dir: dir.path().join(name),
        ip,
        rtp_port,
        tone_hz,
    };
    // Outbound: the subscriber (440 Hz) dials 0077-26 + the remote number.
    let sub_out = party("out-sub", "127.0.30.1", 16_000, 440.0);
    let remote_out = party("out-remote", "127.0.30.2", 18_000, 1_000.0);
    // Inbound: a remote caller (440 Hz) dials the subscriber (1000 Hz).
    let remote_in = party("in-remote", "127.0.31.1", 16_000, 440.0);
    let sub_in = party("in-sub", "127.0.31.2", 18_000, 1_000.0);
    let callees = [remote_out.answer(), sub_in.answer()];
    std::thread::sleep(Duration::from_millis(500));
    let callers = [
        sub_out.call(remote_out.ip, "0312340001", "0077260312349999"),
        remote_in.call(sub_in.ip, "0312349999", "0312340001"),
    ];

    // Mid-call, an operator (or the subscriber's own system) pauses the
    // inbound call's recording for about a second, by its short id.
    let ctl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_callrec"))
            .args(args)
            .arg("--socket")
            .arg(&sock)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let mut status = String::new();
    let listed = wait_for(Duration::from_secs(5), || {
        status = ctl(&["status"]).1;
        status.matches("  call ").count() == 2
    });
    assert!(listed, "both calls listed: {status}");
    assert!(
        !status.contains("0312349999"),
        "no numbers in status: {status}"
    );
    let inbound_id = status
        .lines()
        .find(|l| l.contains(" inbound "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("inbound call in {status}"))
        .to_owned();
    let (code, out) = ctl(&["pause", "no-such-call"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("error: no recorded call"), "{out}");
    std::thread::sleep(Duration::from_millis(1_000));
    let (code, out) = ctl(&["pause", &inbound_id]);
    assert_eq!(code, Some(0), "{out}");
    let paused_at = Instant::now();
    std::thread::sleep(Duration::from_millis(1_000));
    let (code, out) = ctl(&["resume", &inbound_id]);
    let paused_for = paused_at.elapsed().as_millis() as i64;
    assert_eq!(code, Some(0), "{out}");

    for (i, c) in callers.into_iter().enumerate() {
        finish(&format!("caller {i}"), c);
    }
    for (i, c) in callees.into_iter().enumerate() {
        finish(&format!("callee {i}"), c);
    }

    let ready = spool.join("queue/acme/ready");
    let queued = wait_for(Duration::from_secs(15), || {
        files(&ready, ".json").len() == 2
    });
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let _ = wait_for(Duration::from_secs(15), || {
        daemon.try_wait().ok().flatten().is_some()
    });
    let _ = daemon.kill();
    let out = daemon.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(queued, "two recordings queued; daemon log:\n{log}");

    for json in files(&ready, ".json") {
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let dir = meta["direction"].as_str().unwrap().to_string();
        assert_eq!(meta["contract"], "K-0001");
        // The caller hung up: the subscriber outbound, the remote inbound.
        let by = if dir == "outbound" {
            "bye-subscriber"
        } else {
            "bye-remote"
        };
        assert_eq!(meta["end_reason"], by, "{dir}");
        // Subscriber on the left, remote party on the right, whoever called.
        let (left_hz, right_hz) = if dir == "outbound" {
            (440.0, 1_000.0)
        } else {
            assert_eq!(dir, "inbound");
            (1_000.0, 440.0)
        };
        let wav = read_wav(&json.with_file_name(meta["audio"]["file"].as_str().unwrap())).unwrap();
        assert_eq!(wav.samples.len(), 2);
        let ms = wav.samples[0].len() as i64 / 8;
        // The recording is the signalling's answer-to-BYE time (within
        // 60 ms), which is SIPp's pause after its ACK plus a round trip.
        let signalled = {
            let t = |k: &str| {
                callrec::report::parse_rfc3339(meta["segment"][k].as_str().unwrap()).unwrap()
            };
            (t("ended_at") - t("started_at")) / 1000
        };
        assert!(
            (ms - signalled).abs() <= 60,
            "{dir}: {ms} ms recorded, {signalled} ms signalled"
        );
        assert!(
            (ms - TALK_MS as i64).abs() <= 300,
            "{dir}: {ms} ms recorded of a {TALK_MS} ms call"
        );
        // Skip the first 100 ms: the callee's stream starts after the ACK.
        let (l, r) = (&wav.samples[0][800..], &wav.samples[1][800..]);
        let (l_other, r_other) = (if left_hz == 440.0 { 1_000.0 } else { 440.0 }, left_hz);
        assert!(
            power(l, left_hz) > 100.0 * power(l, l_other),
            "{dir}: subscriber channel carries {left_hz} Hz"
        );
        assert!(
            power(r, right_hz) > 100.0 * power(r, r_other),
            "{dir}: remote channel carries {right_hz} Hz"
        );
        let pauses = meta["pauses"].as_array().unwrap();
        if dir == "outbound" {
            assert!(pauses.is_empty(), "{pauses:?}");
        } else {
            assert_eq!(pauses.len(), 1, "{pauses:?}");
            let at = |k: &str| pauses[0][k].as_i64().unwrap() as usize * 8;
            let (from, to) = (at("from_ms"), at("to_ms"));
            let len_ms = (to - from) as i64 / 8;
            assert!(
                (len_ms - paused_for).abs() <= 250,
                "paused {len_ms} ms in the file, {paused_for} ms between the commands"
            );
            for (ch, name) in wav.samples.iter().zip(["subscriber", "remote"]) {
                // The metadata's bounds are rounded to the millisecond.
                assert!(
                    ch[from + 8..to - 8].iter().all(|&x| x == 0),
                    "{name} channel silent while paused"
                );
                assert!(
                    ch[from - 800..from].iter().any(|&x| x != 0),
                    "{name} audible before"
                );
            }
            // The resume beep (1 kHz) on the remote side (here 440 Hz) only.
            let after = &wav.samples[1][to..to + 1_600];
            let before = &wav.samples[1][800..from];
            assert!(
                power(after, 1_000.0) > 0.3 * power(after, 440.0),
                "beep after resume"
            );
            assert!(
                power(before, 1_000.0) < 0.01 * power(before, 440.0),
                "no beep before"
            );
            let sub_after = &wav.samples[0][to..to + 1_600];
            assert!(
                power(sub_after, 440.0) < 0.01 * power(sub_after, 1_000.0),
                "the subscriber channel stays the subscriber"
            );
        }
        for leg in ["subscriber", "remote"] {
            let q = &meta["quality"][leg];
            assert_eq!(q["lost"], 0, "{dir} {leg}: {q}");
            let n = q["packets"].as_u64().unwrap();
            assert!(
                n as i64 >= TALK_MS as i64 / 20 - 10,
                "{dir} {leg}: {n} packets for {TALK_MS} ms"
            );
        }
    }
}
