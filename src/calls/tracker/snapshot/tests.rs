use super::*;
use crate::calls::tracker::CallEvent;

const CFG: &str = r#"
[delivery]
allowed_networks = ["192.0.2.0/24"]
[[destination]]
name = "acme"
url = "sftp://rec@192.0.2.10:22/in"
identity = "/k"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5WY6hfGbgKdwr827M61Dy9fKgVJoLX3pwmoStKx7MO"
[[contract]]
id = "K-1"
service = "mobile"
numbers = ["0312340001"]
guidance = 1
destination = "acme"
[[contract]]
id = "K-2"
service = "fixed"
numbers = ["0312340002"]
guidance = 1
destination = "acme"
"#;

fn tracker(cfg: &str) -> Tracker {
    Tracker::new(&crate::config::load_str(cfg, std::path::Path::new("t.toml")).unwrap())
}

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(1_795_221_000_000 + ms)
}

/// A message of dialog `c1` between 192.0.2.1 (A, tag aaa) and B.
fn msg(
    start: &str,
    cseq: &str,
    to_tag: Option<&str>,
    from_b: bool,
    sdp_at: Option<&str>,
) -> Vec<u8> {
    let from = "<sip:0312340001@192.0.2.1>;tag=aaa".to_string();
    let to = format!(
        "<sip:0077260312349999@203.0.113.1>{}",
        to_tag.map(|t| format!(";tag={t}")).unwrap_or_default()
    );
    let (f, to) = if from_b { (to, from) } else { (from, to) };
    let body = sdp_at
        .map(|a| {
            let (ip, port) = a.split_once(':').unwrap();
            format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n")
        })
        .unwrap_or_default();
    let ct = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/sdp\r\n"
    };
    format!("{start}\r\nCall-ID: c1\r\nCSeq: {cseq}\r\nFrom: {f}\r\nTo: {to}\r\n{ct}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
}

fn feed(tr: &mut Tracker, ms: i64, m: &[u8]) -> Vec<CallEvent> {
    let mut out = Vec::new();
    let parsed = crate::sip::parse(m).unwrap();
    tr.on_message(t(ms), "192.0.2.1:5060".parse().unwrap(), &parsed, &mut out);
    out
}

const INVITE: &str = "INVITE sip:0077260312349999@203.0.113.1 SIP/2.0";

fn answered() -> Tracker {
    let mut tr = tracker(CFG);
    let ev = feed(
        &mut tr,
        0,
        &msg(INVITE, "1 INVITE", None, false, Some("192.0.2.1:4000")),
    );
    assert!(
        matches!(&ev[..], [CallEvent::Decided { verdict, .. }] if verdict.record),
        "{ev:?}"
    );
    let ev = feed(
        &mut tr,
        900,
        &msg(
            "SIP/2.0 200 OK",
            "1 INVITE",
            Some("bbb"),
            false,
            Some("198.51.100.1:5000"),
        ),
    );
    assert!(matches!(ev[..], [CallEvent::Answered { .. }]), "{ev:?}");
    tr
}

#[test]
fn an_answered_dialog_survives_serde_and_restore() {
    let tr = answered();
    let snap = tr.snapshot("c1").unwrap();
    assert_eq!(snap.verdict.contract.as_deref(), Some("K-1"));
    assert_eq!(snap.verdict.prefix.as_deref(), Some("007726"));
    assert_eq!(snap.state, "confirmed");
    assert_eq!(snap.segments, 1);
    assert_eq!(snap.a_media.as_ref().unwrap().direction, "sendonly");
    let text = serde_json::to_string(&snap).unwrap();
    let back: DialogSnapshot = serde_json::from_str(&text).unwrap();
    assert_eq!(back, snap);

    // A fresh tracker (the restarted process) takes it back.
    let mut tr2 = tracker(CFG);
    let (key, verdict) = tr2.restore(&back, t(5_000)).unwrap();
    assert_eq!(key, 1);
    assert!(verdict.record);
    assert_eq!(verdict.prefix, Some("007726"));
    assert_eq!(tr2.active_recorded(), 1);
    let again = tr2.snapshot("c1").unwrap();
    assert_eq!(again.segments, 2, "the restart segment counts");
    assert_eq!(
        DialogSnapshot {
            segments: 1,
            ..again.clone()
        },
        snap,
        "everything else as it was"
    );
    assert_eq!(tr2.legs_of("c1"), tr.legs_of("c1"));
    assert_eq!(
        tr2.restore(&back, t(5_000)),
        Err(RestoreError::Duplicate("c1".into()))
    );

    // Its BYE ends it with its history line, as the template said.
    let template = tr2.history_template("c1").unwrap();
    let ev = feed(
        &mut tr2,
        9_000,
        &msg("BYE sip:x SIP/2.0", "2 BYE", Some("bbb"), true, None),
    );
    let [
        CallEvent::Ended {
            key: 1,
            recorded: true,
            record,
            ..
        },
    ] = &ev[..]
    else {
        panic!("{ev:?}")
    };
    assert_eq!(record.end_reason.as_deref(), Some("bye-remote"));
    assert_eq!(record.segments, 2);
    assert_eq!(
        CallRecord {
            ended_at: None,
            end_reason: None,
            ..record.clone()
        },
        template
    );
}

#[test]
fn the_template_matches_the_line_written_at_the_end() {
    let mut tr = answered();
    let template = tr.history_template("c1").unwrap();
    let mut out = Vec::new();
    tr.finish(t(3_000), "shutdown", &mut out);
    let [CallEvent::Ended { record, .. }] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(template.ended_at, None);
    assert_eq!(
        CallRecord {
            ended_at: None,
            end_reason: None,
            ..record.clone()
        },
        template
    );
}

#[test]
fn an_unanswered_call_restored_still_times_out_from_the_restart() {
    let mut tr = tracker(CFG);
    feed(
        &mut tr,
        0,
        &msg(INVITE, "1 INVITE", None, false, Some("192.0.2.1:4000")),
    );
    let snap = tr.snapshot("c1").unwrap();
    assert_eq!(
        (snap.state.as_str(), snap.answered_at_us),
        ("proceeding", None)
    );
    let mut tr2 = tracker(CFG);
    tr2.restore(&snap, t(600_000)).unwrap();
    let mut out = Vec::new();
    tr2.tick(t(601_000), &mut out);
    assert!(
        out.is_empty(),
        "the setup timeout counts from the restart: {out:?}"
    );
    // The answer after the restart is an ordinary answer.
    let ev = feed(
        &mut tr2,
        602_000,
        &msg(
            "SIP/2.0 200 OK",
            "1 INVITE",
            Some("bbb"),
            false,
            Some("198.51.100.1:5000"),
        ),
    );
    assert!(
        matches!(ev[..], [CallEvent::Answered { key: 1, .. }]),
        "{ev:?}"
    );
}

#[test]
fn a_contract_gone_or_an_unknown_value_is_refused() {
    let snap = answered().snapshot("c1").unwrap();
    let only_k2 = CFG.replace("id = \"K-1\"", "id = \"K-9\"");
    let mut tr = tracker(&only_k2);
    assert_eq!(
        tr.restore(&snap, t(0)),
        Err(RestoreError::ContractGone("K-1".into()))
    );
    let mut bad = snap.clone();
    bad.state = "ringing".into();
    let mut tr = tracker(CFG);
    assert!(matches!(
        tr.restore(&bad, t(0)),
        Err(RestoreError::BadValue { field: "state", .. })
    ));
    let mut bad = snap;
    bad.verdict.prefix = Some("0077".into());
    assert!(matches!(
        tr.restore(&bad, t(0)),
        Err(RestoreError::BadValue {
            field: "prefix",
            ..
        })
    ));
    assert_eq!(tr.active_recorded(), 0, "nothing half restored");
}

#[test]
fn no_withheld_or_asserted_number_reaches_the_journal() {
    let mut tr = tracker(CFG);
    let invite = String::from_utf8(msg(INVITE, "1 INVITE", None, false, Some("192.0.2.1:4000")))
        .unwrap()
        .replacen(
            "Call-ID",
            "Privacy: id\r\nP-Asserted-Identity: <sip:0312347777@192.0.2.1>\r\nCall-ID",
            1,
        )
        .replace("sip:0312340001@", "sip:anonymous@");
    feed(&mut tr, 0, invite.as_bytes());
    let answer = String::from_utf8(msg(
        "SIP/2.0 200 OK",
        "1 INVITE",
        Some("bbb"),
        false,
        Some("198.51.100.1:5000"),
    ))
    .unwrap()
    .replacen(
        "Call-ID",
        "P-Asserted-Identity: <sip:0312346666@203.0.113.1>\r\nCall-ID",
        1,
    );
    feed(&mut tr, 900, answer.as_bytes());
    let text = format!(
        "{}{}",
        serde_json::to_string(&tr.snapshot("c1").unwrap()).unwrap(),
        serde_json::to_string(&tr.history_template("c1").unwrap()).unwrap()
    );
    assert!(text.contains("\"caller\":\"anonymous\""), "{text}");
    assert!(!text.contains("0312347777"), "{text}");
    assert!(!text.contains("0312346666"), "{text}");
}
