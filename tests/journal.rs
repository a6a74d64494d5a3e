//! Logs as an operator reads them. Under systemd (stderr is the journal,
//! `JOURNAL_STREAM` names it) callrec speaks the journal's native protocol:
//! checked at the journal's socket, bound by this test at
//! `/run/systemd/journal/socket` inside a private mount namespace (so the
//! host's journal, if any, is never touched): a PRIORITY per level
//! (`journalctl -p err` finds SPOOL ALARM), the call's fields as journal
//! fields (CALL, CONTRACT, DECISION, REASON, END_REASON, BYTES), one final
//! decision and one "call ended" line per call, no escape codes, and no
//! withheld number; a journal that goes away mid-run costs lines, not
//! the run. Where systemd-journald is installed, a real one runs in such a
//! namespace and journalctl (`-p err`, fields) reads what callrec wrote. Elsewhere: plain text without colour when stderr is
//! not a terminal, JSON lines on request, and a journal that cannot be
//! reached falls back to stderr with a message.

#[path = "support/config.rs"]
mod config_text;
use callrec::capture::LinkType;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, merge};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The withheld caller's number, in the forms it could leak in.
const WITHHELD: [&str; 3] = ["9011112222", "09011112222", "+819011112222"];
const CHILD_ENV: &str = "CALLREC_JOURNAL_TEST_DIR";
const JOURNALD_ENV: &str = "CALLREC_JOURNALD_TEST_DIR";

/// A recorded outbound call, an unrecorded one (no prefix) and a recorded
/// inbound call from a withheld number; spool alarm at 1 byte.
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let prompts = Path::new(env!("CARGO_MANIFEST_DIR")).join("guidance-audio");
    let cfg = dir.join("callrec.toml");
    std::fs::write(
        &cfg,
        format!(
            "[general]\ntimezone = \"+09:00\"\n[recording]\nspool_warn_bytes = 1\n\
             [announce]\nmode = \"pcap\"\ndir = \"{}\"\n{}{}",
            prompts.display(),
            config_text::ACME_UNREACHED,
            config_text::K0001_STEREO
        ),
    )
    .unwrap();
    let t0 = Timestamp::from_secs_micros(1_795_221_000, 0);
    let mut withheld = CallSpec::simple(3, "anonymous", "0312340001", t0, 10_000);
    withheld.invite_headers = vec![
        "P-Asserted-Identity: <tel:+819011112222>".into(),
        "Privacy: id".into(),
    ];
    let calls = [
        // Recorded from the end of the prompt (about 7.6 s) on.
        CallSpec::simple(1, "0312340001", "0077260312349999", t0, 10_000),
        CallSpec::simple(2, "0312340001", "0312349999", t0, 1_000),
        withheld,
    ];
    let pcap = dir.join("calls.pcap");
    let mut w = PcapWriter::create(&pcap, LinkType::Ethernet).unwrap();
    for d in merge(&calls) {
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();
    (cfg, pcap)
}

fn replay(dir: &Path, extra_args: &[&str]) -> Output {
    let (cfg, pcap) = setup(dir);
    Command::new(env!("CARGO_BIN_EXE_callrec"))
        .args(extra_args)
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(dir.join("spool"))
        .arg(&pcap)
        .env("CALLREC_LOG", "info")
        .output()
        .unwrap()
}

/// One journal entry in the native protocol: `NAME=value\n`, or `NAME\n`,
/// a little-endian u64 length, the value, `\n` (systemd's
/// JOURNAL_NATIVE_PROTOCOL).
fn parse_entry(mut b: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    while !b.is_empty() {
        let nl = b.iter().position(|&c| c == b'\n').unwrap_or(b.len());
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            out.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            b = &b[(nl + 1).min(b.len())..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let len = u64::from_le_bytes(b[nl + 1..nl + 9].try_into().unwrap()) as usize;
            let value = &b[nl + 9..nl + 9 + len];
            out.insert(name, String::from_utf8_lossy(value).into_owned());
            b = &b[(nl + 10 + len).min(b.len())..];
        }
    }
    out
}

/// Runs inside the private mount namespace the next test makes; a no-op
/// when run on its own.
#[test]
fn journal_child_inside_namespace() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    // Only this namespace sees the tmpfs: the host's /run stays as it is.
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs", "/run"])
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs on /run");
    std::fs::create_dir_all("/run/systemd/journal").unwrap();
    let sock = UnixDatagram::bind("/run/systemd/journal/socket").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();

    // stderr is a file whose device and inode JOURNAL_STREAM names, as
    // systemd does for StandardError=journal.
    let (cfg, pcap) = setup(&dir);
    let err_path = dir.join("stderr");
    let err = std::fs::File::create(&err_path).unwrap();
    let meta = err.metadata().unwrap();
    // Read as journald does, while the writer writes: a datagram socket's
    // queue is short, and a full one blocks the sender.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => got.push(buf[..n].to_vec()),
                    Err(_) if done.load(std::sync::atomic::Ordering::Acquire) => break,
                    Err(_) => {}
                }
            }
            got
        })
    };
    let out = Command::new(env!("CARGO_BIN_EXE_callrec"))
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(dir.join("spool"))
        .arg(&pcap)
        .env("CALLREC_LOG", "info")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(err)
        .output()
        .unwrap();
    done.store(true, std::sync::atomic::Ordering::Release);
    let datagrams = reader.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut entries = Vec::new();
    for d in datagrams.iter().filter(|d| !d.is_empty()) {
        let text = String::from_utf8_lossy(d);
        for secret in WITHHELD {
            assert!(!text.contains(secret), "withheld number in {text}");
        }
        let entry = parse_entry(d);
        // In the values: the native protocol's binary lengths may hold the
        // byte (a 27-byte CODE_FILE's length is 0x1b).
        assert!(
            entry.values().all(|v| !v.contains('\x1b')),
            "escape code in {text:?}"
        );
        entries.push(entry);
    }
    let stderr_text = std::fs::read_to_string(&err_path).unwrap();
    assert!(
        stderr_text.is_empty(),
        "stderr used besides the journal: {stderr_text}"
    );
    check_entries(&entries);
    journal_goes_away_mid_run(&dir, &cfg, &pcap);
}

/// journald restarted mid-run: the socket closes after a few lines and is
/// gone for the rest. The lines meanwhile are lost; the run is not.
fn journal_goes_away_mid_run(dir: &Path, cfg: &Path, pcap: &Path) {
    let path = Path::new("/run/systemd/journal/socket");
    let _ = std::fs::remove_file(path);
    let sock = UnixDatagram::bind(path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        for _ in 0..3 {
            let _ = sock.recv(&mut buf);
        }
        drop(sock);
        let _ = std::fs::remove_file("/run/systemd/journal/socket");
    });
    let err = std::fs::File::create(dir.join("stderr2")).unwrap();
    let meta = err.metadata().unwrap();
    let spool = dir.join("spool2");
    let out = Command::new(env!("CARGO_BIN_EXE_callrec"))
        .args(["replay", "--config"])
        .arg(cfg)
        .arg("--out")
        .arg(&spool)
        .arg(pcap)
        .env("CALLREC_LOG", "info")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(err)
        .output()
        .unwrap();
    reader.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    let ready = spool.join("queue/acme/ready");
    let mut jsons = 0;
    let mut stack = vec![ready];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                jsons += 1;
            }
        }
    }
    assert_eq!(
        jsons, 2,
        "both recordings queued although the journal went away"
    );
}

fn find<'a>(
    entries: &'a [BTreeMap<String, String>],
    want: &[(&str, &str)],
) -> Vec<&'a BTreeMap<String, String>> {
    entries
        .iter()
        .filter(|e| {
            want.iter()
                .all(|(k, v)| e.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

fn check_entries(entries: &[BTreeMap<String, String>]) {
    let all = format!("{entries:#?}");
    assert!(
        entries
            .iter()
            .all(|e| e.get("SYSLOG_IDENTIFIER").map(String::as_str) == Some("callrec")),
        "{all}"
    );
    // One final decision per call, with its fields; info is priority 6.
    let finals = find(entries, &[("MESSAGE", "final decision")]);
    assert_eq!(finals.len(), 3, "{all}");
    let rec = find(
        entries,
        &[
            ("MESSAGE", "final decision"),
            ("DECISION", "record"),
            ("CONTRACT", "K-0001"),
        ],
    );
    assert_eq!(rec.len(), 2, "{all}");
    assert!(
        rec.iter()
            .all(|e| e["PRIORITY"] == "6" && e["CALL"].len() == 6),
        "{all}"
    );
    let skip = find(
        entries,
        &[
            ("MESSAGE", "final decision"),
            ("DECISION", "skip"),
            ("REASON", "no-prefix"),
        ],
    );
    assert_eq!(skip.len(), 1, "{all}");
    // One "call ended" per call: the recorded ones with bytes and duration.
    let ended = find(entries, &[("MESSAGE", "call ended")]);
    assert_eq!(ended.len(), 3, "{all}");
    let recorded_ends: Vec<_> = ended.iter().filter(|e| e["SEGMENTS"] == "1").collect();
    assert_eq!(recorded_ends.len(), 2, "{all}");
    for e in &recorded_ends {
        assert!(e["BYTES"].parse::<u64>().unwrap() > 10_000, "{e:?}");
        assert!(e["DURATION_MS"].parse::<u64>().unwrap() >= 1_000, "{e:?}");
        assert!(e["END_REASON"].starts_with("bye-"), "{e:?}");
    }
    // The announcement's outcome is logged either way.
    let ann = entries
        .iter()
        .filter(|e| e["MESSAGE"].starts_with("announcement "))
        .count();
    assert_eq!(ann, 2, "{all}");
    // Error level is priority 3: journalctl -p err shows the alarm.
    let alarm = entries
        .iter()
        .find(|e| e["MESSAGE"].contains("SPOOL ALARM"))
        .unwrap_or_else(|| panic!("no SPOOL ALARM in {all}"));
    assert_eq!(alarm["PRIORITY"], "3", "{alarm:?}");
}

#[test]
fn journald_gets_priorities_and_fields_at_its_socket() {
    if unsafe { libc::geteuid() } != 0 || Command::new("unshare").arg("--version").output().is_err()
    {
        eprintln!(
            "SKIP journald_gets_priorities_and_fields_at_its_socket: needs root and unshare for a private mount namespace"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "journal_child_inside_namespace",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

/// Inside the next test's private mount namespace: a real
/// systemd-journald (its runtime journal on a tmpfs), callrec replaying
/// into it, and journalctl reading the result as an operator would.
#[test]
fn journalctl_child_inside_namespace() {
    let Some(dir) = std::env::var_os(JOURNALD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    // tmpfs over everything journald writes (all of /run, and the
    // persistent journal's folder where it exists): the host's journal and
    // its folders stay as they are.
    for m in ["/run", "/var/log/journal"] {
        if !Path::new(m).is_dir() {
            continue;
        }
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs", m])
            .status()
            .unwrap();
        assert!(ok.success(), "mount tmpfs on {m}");
    }
    std::fs::create_dir_all("/run/systemd/journal").unwrap();
    let mut journald = Command::new("/lib/systemd/systemd-journald")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sock = Path::new("/run/systemd/journal/socket");
    for _ in 0..50 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sock.exists(), "journald's socket");
    let (cfg, pcap) = setup(&dir);
    let err = std::fs::File::create(dir.join("stderr")).unwrap();
    let meta = err.metadata().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_callrec"))
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(dir.join("spool"))
        .arg(&pcap)
        .env("CALLREC_LOG", "info")
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(err)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // journald writes asynchronously; journalctl -p err and the fields.
    let query = |args: &[&str]| -> Vec<serde_json::Value> {
        let o = Command::new("journalctl")
            .args([
                "-D",
                "/run/log/journal",
                "-o",
                "json",
                "--no-pager",
                "SYSLOG_IDENTIFIER=callrec",
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let mut all = Vec::new();
    for _ in 0..50 {
        all = query(&[]);
        if all.iter().filter(|e| e["MESSAGE"] == "call ended").count() == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let errs = query(&["-p", "err"]);
    let _ = journald.kill();
    let _ = journald.wait();
    let text = format!("{all:#?}");
    let finals: Vec<_> = all
        .iter()
        .filter(|e| e["MESSAGE"] == "final decision")
        .collect();
    assert_eq!(finals.len(), 3, "{text}");
    assert!(
        finals
            .iter()
            .any(|e| e["DECISION"] == "skip" && e["REASON"] == "no-prefix" && e["PRIORITY"] == "6"),
        "{text}"
    );
    assert!(
        finals
            .iter()
            .all(|e| e["CALL"].as_str().is_some_and(|c| c.len() == 6)),
        "{text}"
    );
    assert_eq!(
        all.iter().filter(|e| e["MESSAGE"] == "call ended").count(),
        3,
        "{text}"
    );
    assert!(
        !errs.is_empty()
            && errs
                .iter()
                .all(|e| e["PRIORITY"].as_str().is_some_and(|p| p <= "3")),
        "{errs:#?}"
    );
    assert!(
        errs.iter().any(|e| e["MESSAGE"]
            .as_str()
            .is_some_and(|m| m.contains("SPOOL ALARM"))),
        "journalctl -p err shows the alarm: {errs:#?}"
    );
    for secret in WITHHELD {
        assert!(!text.contains(secret), "withheld number in the journal");
    }
    assert!(!text.contains('\u{1b}'), "escape codes in the journal");
}

#[test]
fn a_real_journal_shows_fields_and_priorities_in_journalctl() {
    let journald = Path::new("/lib/systemd/systemd-journald");
    if unsafe { libc::geteuid() } != 0
        || !journald.exists()
        || Command::new("journalctl")
            .arg("--version")
            .output()
            .is_err()
    {
        eprintln!("SKIP a_real_journal_shows_fields: needs root, systemd-journald and journalctl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "journalctl_child_inside_namespace",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(JOURNALD_ENV, dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

#[test]
fn text_without_colour_when_not_a_terminal_and_json_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let out = replay(dir.path(), &[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains('\u{1b}'), "escape codes: {text}");
    assert!(text.contains("final decision"), "{text}");
    for secret in WITHHELD {
        assert!(!text.contains(secret), "withheld number in {text}");
    }

    let dir = tempfile::tempdir().unwrap();
    let out = replay(dir.path(), &["--log-format", "json"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let finals: Vec<_> = lines
        .iter()
        .filter(|v| v["message"] == "final decision")
        .collect();
    assert_eq!(finals.len(), 3, "{text}");
    assert!(
        finals
            .iter()
            .all(|v| v["level"] == "INFO" && v["call"].is_string()),
        "{text}"
    );
    assert!(
        finals
            .iter()
            .any(|v| v["decision"] == "skip" && v["reason"] == "no-prefix"),
        "{text}"
    );
    assert!(
        lines.iter().any(|v| v["level"] == "ERROR"
            && v["message"].as_str().unwrap_or("").contains("SPOOL ALARM")),
        "{text}"
    );
}

#[test]
fn an_unknown_log_format_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_callrec"))
        .args(["--log-format", "yaml", "calls", "--spool", "/nonexistent"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("yaml") && err.contains("json"), "{err}");
}

#[test]
fn an_unreachable_journal_falls_back_to_stderr() {
    if Path::new("/run/systemd/journal/socket").exists() {
        eprintln!("SKIP an_unreachable_journal_falls_back_to_stderr: this host runs a journal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = replay(dir.path(), &["--log-format", "journal"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("the journal cannot be reached"), "{text}");
    assert!(text.contains("final decision"), "{text}");
}
