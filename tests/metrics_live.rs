//! The monitoring contract, on a live daemon capturing on the loopback:
//! a scrape passes `promtool check metrics`, every metric the shipped
//! Grafana dashboard and Prometheus rules name is in it, other paths and
//! methods are refused, the rules pass `promtool check rules`, systemd
//! hears READY=1 and STOPPING=1, and a second daemon refuses to share the
//! spool, the control socket or the metrics port (exit 2, named). Skips
//! with a message where live capture or promtool is unavailable.

#[path = "support/config.rs"]
mod config_text;
#[path = "support/live.rs"]
mod live;
#[path = "support/tools.rs"]
mod tools;
use live::{can_run, wait_for};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// One raw HTTP/1.0 request; the whole answer (head and body).
fn http(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let req = format!("{method} {path} HTTP/1.0\r\nHost: test\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The status code of an answer (an HTTP/1.0 request is answered in 1.0).
fn code(answer: &str) -> &str {
    answer.split_whitespace().nth(1).unwrap_or("")
}

/// Whether the answer's head has `name: value...` (names are
/// case-insensitive, RFC 9110 section 5.1).
fn has_header(answer: &str, name: &str, value_start: &str) -> bool {
    let head = answer.split_once("\r\n\r\n").map_or(answer, |(h, _)| h);
    head.lines().any(|l| {
        l.split_once(':')
            .is_some_and(|(k, v)| k.eq_ignore_ascii_case(name) && v.trim().starts_with(value_start))
    })
}

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn spawn(cfg: &Path, notify: Option<&Path>) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_callrec"));
    c.args(["run", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(n) = notify {
        c.env("NOTIFY_SOCKET", n);
    }
    c.spawn().unwrap()
}

/// Runs a second daemon that must refuse to start: exit 2, and its
/// error line contains `needle`.
fn refused(cfg: &Path, needle: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_callrec"))
        .args(["run", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
}

/// Every `callrec_*` metric name a PromQL text uses.
fn metric_names(text: &str, out: &mut BTreeSet<String>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(k) = text[i..].find("callrec_") {
        let start = i + k;
        let word_start =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |e| start + e);
        if word_start {
            out.insert(text[start..end].to_owned());
        }
        i = end;
    }
}

/// Sample names in an exposition (the part before labels or value).
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn alert_rules_pass_promtool() {
    if !tools::tool_present("promtool", "--version") {
        return;
    }
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(repo("dashboards/callrec-alerts.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn live_scrape_is_valid_and_covers_dashboard_and_rules() {
    if !can_run("live_scrape_is_valid", "promtool", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let metrics: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let files = config_text::live_on_lo(dir.path(), &format!("metrics_listen = \"{metrics}\""));
    // A HEP listener too, so that its families (which the HEP alert rule
    // names) are in the scrape.
    let hep_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = std::fs::read_to_string(&files.cfg).unwrap().replacen(
        "[capture]\n",
        // Two capture threads: the per-thread families are in the scrape,
        // and their frames merge with the HEP listener's.
        &format!("[capture]\nthreads = 2\nhep_listen = [\"127.0.0.1:{hep_port}\"]\n"),
        1,
    );
    std::fs::write(&files.cfg, text).unwrap();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut daemon = spawn(&files.cfg, Some(&notify_path));
    let mut buf = [0u8; 512];
    let n = notify
        .recv(&mut buf)
        .expect("a notification from the daemon");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.contains("READY=1"), "{ready:?}");

    // Capture threads report once a second.
    let mut scrape = String::new();
    assert!(
        wait_for(Duration::from_secs(10), || {
            scrape = http(metrics, "GET", "/metrics");
            scrape.contains("callrec_packets_total{interface=\"lo\"}")
        }),
        "{scrape}"
    );
    assert_eq!(code(&scrape), "200", "{scrape}");
    assert!(
        has_header(&scrape, "content-type", "text/plain; version=0.0.4"),
        "{scrape}"
    );
    let text = body(&scrape).to_owned();
    let file = dir.path().join("scrape.txt");
    std::fs::write(&file, &text).unwrap();
    let check = Command::new("sh")
        .arg("-c")
        .arg(format!("promtool check metrics < '{}'", file.display()))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let mut used = BTreeSet::new();
    metric_names(
        &std::fs::read_to_string(repo("dashboards/callrec.json")).unwrap(),
        &mut used,
    );
    metric_names(
        &std::fs::read_to_string(repo("dashboards/callrec-alerts.yml")).unwrap(),
        &mut used,
    );
    assert!(used.len() > 20, "{used:?}");
    let have = sample_names(&text);
    let missing: Vec<_> = used.difference(&have).collect();
    assert!(missing.is_empty(), "not in the scrape: {missing:?}\n{text}");
    for family in [
        "\ncallrec_spool_bytes ",
        "callrec_destination_up{destination=\"acme\"}",
        "callrec_interface_dropped_total{interface=\"lo\"} 0",
        "callrec_capture_queue_dropped_total{interface=\"lo\"} 0",
        "callrec_capture_thread_packets_total{interface=\"lo\",thread=\"1\"}",
        "callrec_capture_thread_queue_dropped_total{interface=\"lo\",thread=\"0\"} 0",
        "callrec_build_info{version=\"",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }

    // Prometheus itself asks for OpenMetrics, and gets the same samples.
    let om = {
        let mut s = std::net::TcpStream::connect(metrics).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert!(
        has_header(&om, "content-type", "application/openmetrics-text"),
        "{om}"
    );
    assert!(body(&om).ends_with("# EOF\n"), "{om}");
    assert_eq!(sample_names(body(&om)), have);

    let other = http(metrics, "GET", "/");
    assert_eq!(code(&other), "404", "{other}");
    let post = http(metrics, "POST", "/metrics");
    assert_eq!(code(&post), "405", "{post}");
    assert!(has_header(&post, "allow", "GET, HEAD"), "{post}");

    // A second daemon: the same spool is refused first.
    refused(&files.cfg, "another callrec process");
    // Another spool, the same control socket: not taken over.
    let sub = dir.path().join("second");
    std::fs::create_dir(&sub).unwrap();
    let second = config_text::live_on_lo(&sub, &format!("metrics_listen = \"{metrics}\""));
    let text2 = std::fs::read_to_string(&second.cfg).unwrap().replace(
        &second.sock.display().to_string(),
        &files.sock.display().to_string(),
    );
    std::fs::write(&second.cfg, text2).unwrap();
    refused(&second.cfg, "answers on this control socket");
    // Its own socket, the same metrics port: refused at start.
    let third = config_text::live_on_lo(&sub, &format!("metrics_listen = \"{metrics}\""));
    refused(&third.cfg, &format!("cannot listen on {metrics}"));
    assert!(files.sock.exists(), "the first daemon keeps its socket");

    let _ = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status();
    let mut stopping = String::new();
    while let Ok(n) = notify.recv(&mut buf) {
        stopping = String::from_utf8_lossy(&buf[..n]).into_owned();
        if stopping.contains("STOPPING=1") {
            break;
        }
    }
    assert!(stopping.contains("STOPPING=1"), "{stopping:?}");
    // libpcap's read on an idle loopback may not return (its timeout is
    // not honoured there), so give the capture thread a frame to wake on.
    let poke = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let exited = wait_for(Duration::from_secs(15), || {
        let _ = poke.send_to(b"wake", "127.0.0.1:9");
        daemon.try_wait().ok().flatten().is_some()
    });
    if !exited {
        let _ = daemon.kill();
    }
    let code = daemon.wait().unwrap();
    let mut err = String::new();
    let _ = daemon.stderr.take().unwrap().read_to_string(&mut err);
    assert!(exited && code.success(), "exit {code:?}: {err}");
}
