//! Who can read what callrec writes: every file 0640 and every folder 0750
//! (or the configured mode and group), whatever the process umask; the
//! control socket 0660. Asserted on everything `callrec replay` and a live
//! `callrec run` leave behind, both started under umask 000. Bad settings
//! (a mode others could read, a group that does not exist, a spool the
//! service may not write) are refused at start with exit 2.

#[path = "support/audio.rs"]
mod audio;
#[path = "support/config.rs"]
mod config_text;
#[path = "support/live.rs"]
mod live;
#[path = "support/tools.rs"]
mod tools;
use callrec::capture::LinkType;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, merge};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn write_capture(path: &Path, calls: &[CallSpec]) {
    let mut w = PcapWriter::create(path, LinkType::Ethernet).unwrap();
    for d in merge(calls) {
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();
}

/// `callrec ARGS` started with umask 000.
fn callrec_umask0(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_callrec"));
    c.args(args);
    // SAFETY: umask(2) is async-signal-safe and touches no memory.
    unsafe {
        c.pre_exec(|| {
            libc::umask(0);
            Ok(())
        });
    }
    c
}

fn replay_cfg(dir: &Path, recording_extra: &str) -> PathBuf {
    let prompts = Path::new(env!("CARGO_MANIFEST_DIR")).join("guidance-audio");
    let cfg = dir.join("callrec.toml");
    std::fs::write(
        &cfg,
        format!(
            "[general]\ntimezone = \"+09:00\"\n[recording]\n{recording_extra}\n\
             [announce]\nmode = \"pcap\"\ndir = \"{}\"\n{}{}",
            prompts.display(),
            config_text::ACME_UNREACHED,
            config_text::K0001_STEREO
        ),
    )
    .unwrap();
    cfg
}

fn replay(dir: &Path, recording_extra: &str) -> (PathBuf, Output) {
    let cfg = replay_cfg(dir, recording_extra);
    let t0 = Timestamp::from_secs_micros(1_795_221_000, 0);
    let calls = [
        CallSpec::simple(1, "0312340001", "0077260312349999", t0, 2_000),
        // Not recorded (no prefix): a history line only.
        CallSpec::simple(2, "0312340001", "0312349999", t0, 1_000),
    ];
    let pcap = dir.join("calls.pcap");
    write_capture(&pcap, &calls);
    let out = dir.join("spool");
    let o = callrec_umask0(&["replay", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .arg(&pcap)
        .output()
        .unwrap();
    (out, o)
}

/// Every entry below `root` (and `root`): (path, mode bits, gid, is dir).
fn walk(root: &Path) -> Vec<(PathBuf, u32, u32, bool)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        out.push((
            p.clone(),
            m.permissions().mode() & 0o7777,
            m.gid(),
            m.is_dir(),
        ));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out.sort();
    out
}

/// Asserts every folder is `dir_mode` and every file `file_mode` (and
/// every entry of group `gid` when given); returns the file names seen.
fn assert_modes(root: &Path, file_mode: u32, dir_mode: u32, gid: Option<u32>) -> Vec<String> {
    let mut names = Vec::new();
    for (p, mode, g, is_dir) in walk(root) {
        let want = if is_dir { dir_mode } else { file_mode };
        assert_eq!(mode, want, "{}: {mode:04o}, want {want:04o}", p.display());
        if let Some(gid) = gid {
            assert_eq!(g, gid, "{}: group", p.display());
        }
        if !is_dir {
            names.push(p.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    names
}

#[test]
fn replay_under_umask_000_writes_0640_files_and_0750_folders() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, o) = replay(dir.path(), "");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let names = assert_modes(&spool, 0o640, 0o750, None);
    // What was checked: the recording, its metadata, the history, the
    // announcements capture, the spool lock.
    for want in [
        ".wav",
        ".json",
        "calls.jsonl",
        "announcements.pcap",
        ".lock",
    ] {
        assert!(
            names.iter().any(|n| n.ends_with(want)),
            "no {want} among {names:?}"
        );
    }
    for d in ["tmp", "queue/acme/ready"] {
        assert!(spool.join(d).is_dir(), "{d}");
    }
}

#[test]
fn configured_mode_and_group_are_applied() {
    let gid = callrec::recording::perms::group_id("daemon")
        .unwrap()
        .expect("Debian has a daemon group");
    let dir = tempfile::tempdir().unwrap();
    let (spool, o) = replay(dir.path(), "file_mode = \"0660\"\ngroup = \"daemon\"");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let names = assert_modes(&spool, 0o660, 0o770, Some(gid));
    assert!(names.iter().any(|n| n.ends_with(".wav")), "{names:?}");
}

fn check_config(dir: &Path, recording_extra: &str) -> Output {
    let cfg = replay_cfg(dir, recording_extra);
    Command::new(env!("CARGO_BIN_EXE_callrec"))
        .args(["check-config", "--config"])
        .arg(cfg)
        .output()
        .unwrap()
}

#[test]
fn unsafe_modes_and_unknown_groups_are_refused_with_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, needle) in [
        ("file_mode = \"0644\"", "others nothing"),
        ("file_mode = \"0750\"", "nobody execute"),
        ("file_mode = \"640x\"", "not an octal mode"),
        (
            "group = \"no-such-group-callrec\"",
            "no group \"no-such-group-callrec\"",
        ),
    ] {
        let o = check_config(dir.path(), extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra}: {err}");
        assert!(err.contains(needle), "{extra}: {err}");
        assert!(err.contains("callrec.toml:4: recording."), "{extra}: {err}");
    }
}

#[test]
fn a_spool_the_service_may_not_write_is_refused_at_start() {
    // Root may write anywhere: run the daemon as nobody, as systemd would
    // run it as callrec, against a spool root owns with mode 0755.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP a_spool_the_service_may_not_write: needs root to switch to nobody");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let files = config_text::live_on_lo(dir.path(), "");
    std::fs::create_dir(&files.spool).unwrap();
    std::fs::set_permissions(&files.spool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_callrec"))
        .args(["run", "--config"])
        .arg(&files.cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not writable by uid 65534")
            && err.contains(&files.spool.display().to_string()),
        "{err}"
    );
}

#[test]
fn live_daemon_under_umask_000_writes_the_same_modes_and_a_0660_socket() {
    if !live::can_run("live_daemon_under_umask_000", "tcpreplay", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = config_text::live_on_lo(dir.path(), "");
    let t0 = Timestamp::from_secs_micros(1_795_221_000, 0);
    let mut c = CallSpec::simple(1, "0312340001", "0077260312349999", t0, 1_500);
    // Addresses and ports no other live test uses.
    let (a, b): ([u8; 4], [u8; 4]) = ([127, 0, 11, 1], [127, 0, 21, 1]);
    c.a_sip = (a, 5060).into();
    c.b_sip = (b, 5060).into();
    c.a_rtp = (a, 21_002).into();
    c.b_rtp = (b, 31_002).into();
    c.ring_ms = 300;
    let pcap = dir.path().join("call.pcap");
    write_capture(&pcap, &[c]);

    let mut daemon = callrec_umask0(&["run", "--config"])
        .arg(&files.cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(live::wait_for(Duration::from_secs(10), || files
        .sock
        .exists()));
    let sock_meta = std::fs::metadata(&files.sock).unwrap();
    assert!(sock_meta.file_type().is_socket());
    assert_eq!(
        sock_meta.permissions().mode() & 0o777,
        0o660,
        "control socket"
    );
    let status = Command::new("tcpreplay")
        .args(["-q", "-i", "lo"])
        .arg(&pcap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let ready = files.spool.join("queue/acme/ready");
    assert!(
        live::wait_for(Duration::from_secs(15), || audio::files(&ready, ".json")
            .len()
            == 1),
        "the call's recording is queued"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let poke = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let exited = live::wait_for(Duration::from_secs(15), || {
        let _ = poke.send_to(b"wake", "127.0.0.1:9");
        daemon.try_wait().ok().flatten().is_some()
    });
    if !exited {
        let _ = daemon.kill();
    }
    let _ = daemon.wait();
    assert!(exited, "daemon stops on SIGTERM");
    let names = assert_modes(&files.spool, 0o640, 0o750, None);
    for want in [".wav", ".json", "calls.jsonl", "status.json", ".lock"] {
        assert!(
            names.iter().any(|n| n.ends_with(want)),
            "no {want} among {names:?}"
        );
    }
}
