//! Every configuration error names the file, the right 1-based line, the key
//! and the reason; the bundled example loads with the values it documents.

use std::path::{Path, PathBuf};
use std::time::Duration;

use callrec::config::{self, AnnounceMode, Channels, ConfigError, SegmentPolicy, Service};

const KEY_A: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5WY6hfGbgKdwr827M61Dy9fKgVJoLX3pwmoStKx7MO";

fn base() -> String {
    format!(
        r#"[general]
timezone = "+09:00"

[capture]
sip_ports = [5060, 5080]

[recording]
spool_dir = "spool"
format = "pcm16"
max_active_calls = 100

[announce]
mode = "pcap"
dir = "audio"

[overload]
priority_numbers = ["+81-3-1234-0099"]

[delivery]
allowed_networks = ["192.0.2.0/24", "2001:db8::/32"]
retry_initial = "5s"
retry_max = "10m"

[[destination]]
name = "acme"
url = "sftp://rec@192.0.2.10:22/incoming"
identity = "keys/acme"
host_key = "{KEY_A}"
max_rate = "20Mbit"

[[contract]]
id = "K-0001"
service = "mobile"
numbers = ["0312340001", "tel:+815011110001"]
guidance = 2
channels = "stereo"
pause_dtmf = "*1"
resume_dtmf = "*2"
destination = "acme"

[[contract]]
id = "K-0002"
service = "fixed"
numbers = ["06-1234-0002"]
guidance = 4
segments = "longest"
destination = "acme"
"#
    )
}

const PATH: &str = "conf/x.toml";

/// Replaces the first line starting with `old` by `new`; returns the text
/// and the 1-based line of the replacement.
fn with_line(old: &str, new: &str) -> (String, usize) {
    with_nth_line(old, 0, new)
}

fn with_nth_line(old: &str, nth: usize, new: &str) -> (String, usize) {
    let text = base();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let idx = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with(old))
        .map(|(i, _)| i)
        .nth(nth)
        .unwrap_or_else(|| panic!("no line {old:?} #{nth} in the base config"));
    lines[idx] = new.to_string();
    (lines.join("\n") + "\n", idx + 1)
}

fn error_of(text: &str) -> (usize, String, String) {
    match config::load_str(text, Path::new(PATH)) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(ConfigError::Invalid {
            path,
            line,
            key,
            reason,
        }) => {
            assert_eq!(path, PathBuf::from(PATH));
            (line, key, reason)
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// Asserts the error's line and key, and that the reason mentions `needle`.
fn expect(old: &str, nth: usize, new: &str, key: &str, needle: &str) {
    let (text, want_line) = with_nth_line(old, nth, new);
    let (line, k, reason) = error_of(&text);
    assert_eq!(
        (line, k.as_str()),
        (want_line, key),
        "for {new:?}: reason {reason:?}"
    );
    assert!(
        reason.contains(needle),
        "for {new:?}: reason {reason:?} lacks {needle:?}"
    );
}

#[test]
fn base_config_is_valid_and_normalised() {
    let cfg = config::load_str(&base(), Path::new(PATH)).expect("base config loads");
    assert_eq!(cfg.contracts[0].numbers, vec!["0312340001", "05011110001"]);
    assert_eq!(cfg.contracts[1].numbers, vec!["0612340002"]);
    assert_eq!(cfg.overload.priority_numbers, vec!["0312340099"]);
    assert_eq!(cfg.capture.sip_ports, vec![5060, 5080]);
    assert_eq!(cfg.destinations[0].max_rate, Some(2_500_000));
    // Relative paths are resolved against the file's directory.
    assert_eq!(cfg.recording.spool_dir, PathBuf::from("conf/spool"));
    assert_eq!(cfg.announce.dir, PathBuf::from("conf/audio"));
    assert_eq!(
        cfg.destinations[0].identity,
        PathBuf::from("conf/keys/acme")
    );
}

#[test]
fn exact_message_format() {
    let (text, line) = with_line("guidance = 4", "guidance = 7");
    let err = config::load_str(&text, Path::new(PATH)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("conf/x.toml:{line}: contract[1].guidance: must be 1..5, got 7")
    );
}

#[test]
fn general_capture_recording_announce() {
    expect(
        "timezone",
        0,
        r#"timezone = "JST""#,
        "general.timezone",
        "offset",
    );
    expect(
        "sip_ports",
        0,
        "sip_ports = []",
        "capture.sip_ports",
        "at least one",
    );
    expect(
        "sip_ports",
        0,
        "sip_ports = [5060, 70000]",
        "capture.sip_ports",
        "70000",
    );
    expect(
        "sip_ports",
        0,
        "threads = 65",
        "capture.threads",
        "must be 1..64, got 65",
    );
    expect(
        "sip_ports",
        0,
        "thread_queue = 100",
        "capture.thread_queue",
        "got 100",
    );
    expect(
        "format",
        0,
        r#"format = "aac""#,
        "recording.format",
        "pcm16, ulaw, alaw, mp3, opus, flac",
    );
    expect(
        "max_active_calls",
        0,
        "max_active_calls = 0",
        "recording.max_active_calls",
        "got 0",
    );
    expect("mode", 0, r#"mode = "speaker""#, "announce.mode", "inject");
    expect(
        "mode",
        0,
        r#"mode = "inject""#,
        "announce.interface",
        "required",
    );
    expect(
        "max_active_calls",
        0,
        "rtp_timeout = \"soon\"",
        "recording.rtp_timeout",
        "duration",
    );
    expect(
        "max_active_calls",
        0,
        "spool_max_bytes = \"10XB\"",
        "recording.spool_max_bytes",
        "size",
    );
}

#[test]
fn durations_rates_networks() {
    expect(
        "retry_max",
        0,
        r#"retry_max = "ten minutes""#,
        "delivery.retry_max",
        "duration",
    );
    expect(
        "retry_max",
        0,
        r#"retry_max = "1s""#,
        "delivery.retry_max",
        "retry_initial",
    );
    expect(
        "max_rate",
        0,
        r#"max_rate = "fast""#,
        "destination[0].max_rate",
        "20Mbit",
    );
    expect(
        "max_rate",
        0,
        "connections = 0",
        "destination[0].connections",
        "1..16",
    );
    expect(
        "retry_max",
        0,
        r#"keepalive = "soon""#,
        "delivery.keepalive",
        "duration",
    );
    expect(
        "retry_max",
        0,
        r#"connect_timeout = "0s""#,
        "delivery.connect_timeout",
        "more than 0",
    );
    expect(
        "allowed_networks",
        0,
        r#"allowed_networks = ["192.0.2.0/33"]"#,
        "delivery.allowed_networks",
        "192.0.2.0/33",
    );
    // Host bits set: a typo on the dedicated line's allow-list is refused,
    // naming the network that was probably meant.
    expect(
        "allowed_networks",
        0,
        r#"allowed_networks = ["127.0.0.1/8"]"#,
        "delivery.allowed_networks",
        "127.0.0.0/8",
    );
    expect(
        "priority_numbers",
        0,
        r#"priority_numbers = ["police"]"#,
        "overload.priority_numbers",
        "police",
    );
}

#[test]
fn destinations() {
    expect(
        "url",
        0,
        r#"url = "sftp://rec@198.51.100.7:22/in""#,
        "destination[0].url",
        "\"acme\" refused",
    );
    expect(
        "url",
        0,
        r#"url = "sftp://rec@files.example:22/in""#,
        "destination[0].url",
        "IP address",
    );
    expect(
        "url",
        0,
        r#"url = "https://192.0.2.10/in""#,
        "destination[0].url",
        "sftp://",
    );
    expect(
        "url",
        0,
        r#"url = "sftp://rec@192.0.2.10:0/in""#,
        "destination[0].url",
        "port",
    );
    expect(
        "host_key",
        0,
        r#"host_key = "ssh-ed25519 AAAA...""#,
        "destination[0].host_key",
        "base64",
    );
    expect(
        "host_key",
        0,
        r#"host_key = "AAAAC3NzaC1lZDI1NTE5""#,
        "destination[0].host_key",
        "TYPE BASE64",
    );
    expect(
        "identity",
        0,
        r#"identity = """#,
        "destination[0].identity",
        "required",
    );
    expect("name", 0, r#"name = "a/b""#, "destination[0].name", "A-Z");
    // A second destination with the same name: the error is on the second one.
    let text = base().replace(
        "[[contract]]\nid = \"K-0001\"",
        &format!("[[destination]]\nname = \"acme\"\nurl = \"sftp://r@192.0.2.11/x\"\nidentity = \"k\"\nhost_key = \"{KEY_A}\"\n\n[[contract]]\nid = \"K-0001\""),
    );
    let want = text
        .lines()
        .position(|l| l == "name = \"acme\"")
        .map(|_| ())
        .and(
            text.lines()
                .enumerate()
                .filter(|(_, l)| *l == "name = \"acme\"")
                .nth(1)
                .map(|(i, _)| i + 1),
        );
    let (line, key, reason) = error_of(&text);
    assert_eq!(
        (Some(line), key.as_str()),
        (want, "destination[1].name"),
        "{reason}"
    );
    assert!(reason.contains("twice"));
}

#[test]
fn contracts() {
    expect("id =", 0, r#"id = "../etc""#, "contract[0].id", "directory");
    expect("id =", 1, r#"id = "K-0001""#, "contract[1].id", "twice");
    expect(
        "service",
        1,
        r#"service = "satellite""#,
        "contract[1].service",
        "mobile, fixed",
    );
    expect(
        "numbers",
        0,
        r#"numbers = ["0120123456"]"#,
        "contract[0].numbers",
        "freephone",
    );
    expect(
        "numbers",
        0,
        r#"numbers = ["not a number"]"#,
        "contract[0].numbers",
        "not a telephone number",
    );
    expect(
        "numbers",
        0,
        r#"numbers = []"#,
        "contract[0].numbers",
        "at least one",
    );
    expect(
        "numbers",
        1,
        r#"numbers = ["+81312340001"]"#,
        "contract[1].numbers",
        "K-0001",
    );
    expect(
        "numbers",
        0,
        r#"numbers = ["0312340001", "03-1234-0001"]"#,
        "contract[0].numbers",
        "twice",
    );
    expect(
        "guidance",
        0,
        "guidance = 0",
        "contract[0].guidance",
        "1..5",
    );
    expect(
        "channels",
        0,
        r#"channels = "quad""#,
        "contract[0].channels",
        "mono, stereo",
    );
    expect(
        "segments",
        0,
        r#"segments = "first""#,
        "contract[1].segments",
        "all, longest",
    );
    expect(
        "pause_dtmf",
        0,
        r#"pause_dtmf = "*X""#,
        "contract[0].pause_dtmf",
        "0-9",
    );
    expect(
        "resume_dtmf",
        0,
        r#"resume_dtmf = "*1""#,
        "contract[0].resume_dtmf",
        "differ",
    );
    // Only a pause sequence: the error points at it.
    let (text, removed) = with_line("resume_dtmf", "");
    let (line, key, reason) = error_of(&text);
    assert_eq!(
        (line, key.as_str()),
        (removed - 1, "contract[0].resume_dtmf"),
        "{reason}"
    );
    assert!(reason.contains("missing"));
    expect(
        "destination",
        1,
        r#"destination = "nowhere""#,
        "contract[1].destination",
        "nowhere",
    );
}

#[test]
fn parser_errors_name_line_and_key() {
    // Unknown keys, in a table, an array of tables and at the top.
    expect(
        "spool_dir",
        0,
        r#"spool_dirr = "x""#,
        "recording.spool_dirr",
        "unknown key",
    );
    expect(
        "guidance",
        1,
        "guidence = 4",
        "contract[1].guidence",
        "unknown key",
    );
    expect("[overload]", 0, "[overlaod]", "overlaod", "unknown key");
    // Wrong type.
    expect(
        "guidance",
        1,
        r#"guidance = "four""#,
        "contract[1].guidance",
        "",
    );
    // Syntax error.
    expect("format", 0, r#"format = "pcm16"#, "recording.format", "");
    // A required key missing: named, on the table's line or within it.
    let (text, _) = with_nth_line("id =", 1, "");
    let (line, key, reason) = error_of(&text);
    assert_eq!(key, "contract[1].id", "{reason}");
    let header = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "[[contract]]")
        .nth(1)
        .map(|(i, _)| i + 1)
        .unwrap();
    assert!(
        line >= header && line <= header + 7,
        "line {line}, table at {header}"
    );
}

#[test]
fn optional_tables_and_defaults() {
    let text = base()
        + "\n[limits]\nfragment_bytes = \"8MiB\"\nmax_dialogs = 1000\n\n[daemon]\nmetrics_listen = \"127.0.0.1:9477\"\n";
    let cfg = config::load_str(&text, Path::new(PATH)).unwrap();
    assert_eq!(cfg.limits.fragment_bytes, 8 << 20);
    assert_eq!(cfg.limits.max_dialogs, 1000);
    assert_eq!(cfg.limits.tcp_streams, 65_536);
    assert_eq!(
        cfg.daemon.metrics_listen,
        Some("127.0.0.1:9477".parse().unwrap())
    );
    assert_eq!(cfg.delivery.hold_after, Duration::from_secs(7 * 86400));
    assert_eq!(cfg.recording.setup_timeout, Duration::from_secs(180));
    let bad = base() + "\n[limits]\ntcp_streams = -1\n";
    let want = bad.lines().count();
    let (line, key, _) = error_of(&bad);
    assert_eq!((line, key.as_str()), (want, "limits.tcp_streams"));
    let bad = base() + "\n[daemon]\nmetrics_listen = \"localhost\"\n";
    let (line, key, _) = error_of(&bad);
    assert_eq!(
        (line, key.as_str()),
        (bad.lines().count(), "daemon.metrics_listen")
    );
}

#[test]
fn bundled_example_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/callrec.toml");
    let cfg = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.contracts.len(), 2);
    let k1 = cfg.contract("K-0001").unwrap();
    assert_eq!(k1.service, Service::Mobile);
    assert_eq!(k1.numbers, vec!["0312340001", "05011110001"]);
    assert_eq!((k1.guidance, k1.channels), (2, Channels::Stereo));
    assert_eq!(
        (k1.pause_dtmf.as_deref(), k1.resume_dtmf.as_deref()),
        (Some("*1"), Some("*2"))
    );
    let k2 = cfg.contract("K-0002").unwrap();
    assert_eq!(
        (k2.service, k2.guidance, k2.channels, k2.segments),
        (Service::Fixed, 4, Channels::Mono, SegmentPolicy::Longest)
    );
    assert_eq!(k2.numbers, vec!["0612340002"]);
    assert_eq!(cfg.destinations.len(), 2);
    assert_eq!(
        cfg.destination("acme").unwrap().host.to_string(),
        "192.0.2.10"
    );
    assert_eq!(
        cfg.destination("bravo").unwrap().host.to_string(),
        "192.0.2.11"
    );
    assert_eq!(cfg.announce.mode, AnnounceMode::Pcap);
    assert_eq!(
        cfg.announce.dir,
        path.parent().unwrap().join("../guidance-audio")
    );
    assert_eq!(cfg.recording.spool_dir, PathBuf::from("/var/spool/callrec"));
}

/// The README's demo command must not point at a configuration that is
/// not in the repository (it once did: conf/demo.toml never existed).
#[test]
fn scripts_use_configurations_that_exist_and_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for entry in std::fs::read_dir(root.join("scripts")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let words: Vec<&str> = text.split_whitespace().collect();
        for w in words.windows(2) {
            if w[0] == "--config" && w[1].starts_with("conf/") {
                let cfg = root.join(w[1].trim_matches('"'));
                config::load(&cfg).unwrap_or_else(|e| panic!("{}: {}: {e}", path.display(), w[1]));
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 2,
        "demo.sh names its configuration ({checked} found)"
    );
}
