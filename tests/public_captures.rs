//! Every public capture in ../shared/pcaps/public goes through the whole
//! replay pipeline without a panic, with assertions on what each contains.
//! Skips with a message where the folder is absent.

#[path = "support/tools.rs"]
mod tools;
use tools::{capture_files, corpus};
#[path = "support/config.rs"]
mod config_text;
use callrec::daemon::replay::{ReplayOptions, ReplayReport, replay};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// A contract covering numbers that appear in the public captures, so that
/// their calls reach the recording decision. The captures are not Japanese
/// traffic, so most calls are refused by the numbering plan, which is
/// itself checked here.
fn config(dir: &Path) -> callrec::config::Config {
    let text = format!(
        r#"
[capture]
sip_ports = [5060, 5080, 6060]
[recording]
spool_dir = "{}"
{acme}[[contract]]
id = "K-0001"
service = "mobile"
numbers = ["0312340001"]
guidance = 1
destination = "acme"
"#,
        dir.display(),
        acme = config_text::ACME_UNREACHED,
    );
    callrec::config::load_str(&text, &dir.join("c.toml")).unwrap()
}

fn run(file: &Path) -> (ReplayReport, Vec<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let opts = ReplayOptions {
        out: out.clone(),
        captures: vec![file.to_path_buf()],
        deliver: false,
        deliver_timeout: Duration::from_secs(1),
        shards: Some(1),
    };
    let report = replay(config(dir.path()), &opts).expect("replay runs");
    let history = std::fs::read_to_string(out.join("calls.jsonl")).unwrap_or_default();
    let recs = history
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (report, recs)
}

fn tshark(args: &[&str]) -> Option<String> {
    let o = std::process::Command::new("tshark")
        .args(args)
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn every_public_capture_replays() {
    let Some(dir) = corpus() else { return };
    let names = capture_files(&dir);
    assert!(names.len() >= 20, "corpus looks incomplete: {names:?}");
    for f in names {
        let (report, recs) = run(&f);
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        // One history line per call, recorded or not.
        assert_eq!(recs.len() as u64, report.stats.calls, "{name}");
        if name == "sipnab_c07-sip-r2.cap" {
            // A Microsoft NetMon file: libpcap cannot read it, and the error names it.
            assert_eq!(report.capture_errors.len(), 1, "{name}");
            assert!(
                report.capture_errors[0].contains("sipnab_c07-sip-r2.cap"),
                "{:?}",
                report.capture_errors
            );
        } else {
            assert!(
                report.capture_errors.is_empty(),
                "{name}: {:?}",
                report.capture_errors
            );
            assert!(report.decode.frames > 0, "{name}");
        }
    }
}

#[test]
fn failed_and_cancelled_calls_are_never_answered() {
    let Some(dir) = corpus() else { return };
    let (report, recs) = run(&dir.join("isa_aaa_wireshark_sample.pcap"));
    assert_eq!(report.stats.calls, 4);
    assert_eq!(report.stats.recorded, 0);
    for r in &recs {
        assert!(r["answered_at"].is_null(), "{r}");
        let end = r["end_reason"].as_str().unwrap();
        assert!(
            end == "cancel" || end.starts_with("failed-") || end == "capture-end",
            "{r}"
        );
    }
    // The 407 challenge and the retried INVITE are one call, not two.
    let ids: BTreeSet<&str> = recs
        .iter()
        .map(|r| r["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), recs.len());
}

#[test]
fn every_dialog_of_the_segmented_tcp_capture_is_tracked() {
    let Some(dir) = corpus() else { return };
    let f = dir.join("heplify_sip_ipv4_tcp_port6060_segmented.pcap");
    let (report, recs) = run(&f);
    let ours: BTreeSet<String> = recs
        .iter()
        .map(|r| r["call_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(report.decode.tcp_messages > 200, "{:?}", report.decode);
    match tshark(&[
        "-r",
        f.to_str().unwrap(),
        "-d",
        "tcp.port==6060,sip",
        "-Y",
        "sip.Method==INVITE",
        "-T",
        "fields",
        "-e",
        "sip.Call-ID",
    ]) {
        Some(out) => {
            let theirs: BTreeSet<String> = out
                .lines()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect();
            assert_eq!(ours, theirs, "dialogs differ from tshark's");
        }
        None => {
            eprintln!("SKIP (tshark cross-check): tshark is not installed");
            assert_eq!(ours.len(), 37);
        }
    }
}

#[test]
fn many_dialogs_and_ipv6_fragments() {
    let Some(dir) = corpus() else { return };
    let (report, _) = run(&dir.join("sipnab_sipp-branch-scenario.pcapng"));
    let f = dir.join("sipnab_sipp-branch-scenario.pcapng");
    if let Some(out) = tshark(&[
        "-r",
        f.to_str().unwrap(),
        "-Y",
        "sip.Method==INVITE",
        "-T",
        "fields",
        "-e",
        "sip.Call-ID",
    ]) {
        let theirs: BTreeSet<&str> = out.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(report.stats.calls as usize, theirs.len());
    }
    // Linux cooked capture with fragmented IPv6 SIP: the call is found.
    let (report, recs) = run(&dir.join("sngrep_ipv6frag.pcap"));
    assert!(report.decode.reassembled > 0, "{:?}", report.decode);
    assert_eq!(recs.len(), 1);
    // SIP inside GRE/ERSPAN.
    let (report, _) = run(&dir.join("heplify_erspan_sip_refer_hold.pcapng"));
    assert!(
        report.stats.calls >= 1 && report.stats.sip_messages > 100,
        "{:?}",
        report.stats
    );
}
