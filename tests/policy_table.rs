//! The recording policy, table-driven: every destination class of the
//! numbering plan with its verdict, both services and a mismatch, the 050
//! rule, +81 / tel: / user=phone / isub forms, inbound calls (direct,
//! forwarded via Diversion and History-Info, to a contract's mobile number),
//! withheld callers, and the congestion rule.
//!
//! Each case is a real SIP INVITE parsed by `callrec::sip`, so the header
//! extraction is tested along with the decision.

use std::path::Path;

use callrec::calls::policy::{InviteFacts, Load, Policy, Verdict};
use callrec::config::{self, Config};

const MAX: usize = 100;

fn config() -> Config {
    let text = format!(
        r#"
[recording]
max_active_calls = {MAX}
[overload]
priority_numbers = ["0312340099"]
[delivery]
allowed_networks = ["192.0.2.0/24"]
[[destination]]
name = "d"
url = "sftp://rec@192.0.2.10/in"
identity = "/k"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5WY6hfGbgKdwr827M61Dy9fKgVJoLX3pwmoStKx7MO"
[[contract]]
id = "K-M"
service = "mobile"
numbers = ["0312340001", "05011110001", "09012340001"]
guidance = 1
destination = "d"
[[contract]]
id = "K-F"
service = "fixed"
numbers = ["+81-6-1234-0002"]
guidance = 1
destination = "d"
"#
    );
    config::load_str(&text, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// An INVITE to `ruri` (also the To) from `from`, with extra header lines.
fn invite(ruri: &str, from: &str, extra: &[&str]) -> String {
    let ruri = if ruri.contains(':') {
        ruri.to_string()
    } else {
        format!("sip:{ruri}@198.51.100.1;user=phone")
    };
    let from = if from.contains(':') {
        from.to_string()
    } else {
        format!("sip:{from}@192.0.2.1")
    };
    let mut m = format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\nFrom: <{from}>;tag=1\r\nTo: <{ruri}>\r\nCall-ID: c1@192.0.2.1\r\nCSeq: 1 INVITE\r\n"
    );
    for h in extra {
        m.push_str(h);
        m.push_str("\r\n");
    }
    m.push_str("Content-Length: 0\r\n\r\n");
    m
}

fn decide(policy: &Policy, msg: &str, load: Load) -> (InviteFacts, Verdict) {
    let parsed = callrec::sip::parse(msg.as_bytes()).expect("test INVITE parses");
    let facts = InviteFacts::from_message(&parsed);
    let v = policy.decide(&facts, load);
    (facts, v)
}

/// Expected outcome: reason None means recorded.
struct Want {
    reason: Option<&'static str>,
    dir: Option<&'static str>,
    contract: Option<&'static str>,
    caller: &'static str,
    callee: &'static str,
    prefix: Option<&'static str>,
}

fn check(cfg: &Config, name: &str, v: &Verdict, w: &Want) {
    let got = (
        v.record,
        v.reason.map(|r| r.as_str()),
        v.direction.map(|d| d.as_str()),
        v.contract.map(|i| cfg.contracts[i].id.as_str()),
        v.caller.as_str(),
        v.callee.as_str(),
        v.prefix,
    );
    let want = (
        w.reason.is_none(),
        w.reason,
        w.dir,
        w.contract,
        w.caller,
        w.callee,
        w.prefix,
    );
    assert_eq!(got, want, "case {name}: {v:?}");
    if v.record {
        assert!(
            v.service.is_some(),
            "case {name}: recorded without a service"
        );
    }
}

const M: &str = "007726";
const F: &str = "007727";

/// Outbound from a K-M line to `dialled` with the mobile prefix.
fn out_mobile(
    from: &'static str,
    dialled: &'static str,
    reason: Option<&'static str>,
) -> (String, String, Want) {
    (
        format!("{M}{dialled}"),
        from.to_string(),
        Want {
            reason,
            dir: Some("outbound"),
            contract: Some("K-M"),
            caller: from,
            callee: dialled,
            prefix: Some(M),
        },
    )
}

#[test]
fn outbound_destination_classes() {
    let cfg = config();
    let policy = Policy::new(&cfg);
    let ok = None;
    let no = Some("destination-not-recordable");
    let rows: Vec<(&str, &str, Option<&str>)> = vec![
        // Recordable: 0ABJ, 010, 050, 070, 080, 090, 0120, 0800, 0570.
        ("0ABJ Tokyo", "0312349999", ok),
        (
            "0ABJ 4-digit area code with a 0 (Koga 0280)",
            "0280123456",
            ok,
        ),
        ("0ABJ Sapporo", "0112345678", ok),
        ("international 010", "01014155550100", ok),
        ("IP phone 050", "05012345678", ok),
        ("mobile 070", "07012345678", ok),
        ("mobile 080", "08012345678", ok),
        ("mobile 090", "09012345678", ok),
        ("freephone 0120", "0120123456", ok),
        ("freephone 0800", "08001234567", ok),
        ("navi dial 0570", "0570123456", ok),
        // Not recordable.
        ("0A0 020", "02012345678", no),
        ("0A0 060", "06012345678", no),
        ("0AB0 0990", "0990123456", no),
        ("0AB0 0180", "0180123456", no),
        ("0AB0 0910", "0910123456", no),
        ("emergency 110", "110", no),
        ("emergency 118", "118", no),
        ("emergency 119", "119", no),
        ("1XY directory 104", "104", no),
        ("1XY clock 117", "117", no),
        ("1XY disaster line 171", "171", no),
        ("184 withhold + number", "1840312349999", no),
        ("00XY carrier code", "00330312349999", no),
        ("# number", "#8000", no),
        ("* number", "*670312349999", no),
        ("short number without area code", "12349999", no),
        ("local number without area code", "2349999", no),
        ("extension", "2001", no),
        ("not starting with 0", "312349999", no),
        ("0ABJ too short", "031234999", no),
        ("0ABJ too long", "03123499990", no),
        ("090 too short", "0901234567", no),
        ("empty after the prefix", "", no),
    ];
    for (name, dialled, reason) in rows {
        let (ruri, from, mut want) = out_mobile("0312340001", dialled, reason);
        if dialled.is_empty() {
            want.callee = "unknown";
        }
        let (_, v) = decide(&policy, &invite(&ruri, &from, &[]), Load::default());
        check(&cfg, name, &v, &want);
        if reason.is_some() {
            assert!(
                v.not_recordable.is_some(),
                "case {name}: refusal without a rule"
            );
        }
    }
}

#[test]
fn the_050_rule() {
    let cfg = config();
    let policy = Policy::new(&cfg);
    let no = Some("destination-not-recordable");
    for (name, dialled, reason) in [
        ("050 line to 0120", "0120123456", no),
        ("050 line to 0800", "08001234567", no),
        ("050 line to 0570", "0570123456", no),
        ("050 line to 0ABJ", "0312349999", None),
        ("050 line to 090", "09012345678", None),
        ("050 line to 050", "05012345678", None),
    ] {
        let (ruri, from, want) = out_mobile("05011110001", dialled, reason);
        let (_, v) = decide(&policy, &invite(&ruri, &from, &[]), Load::default());
        check(&cfg, name, &v, &want);
        if reason.is_some() {
            assert_eq!(
                v.not_recordable.map(|r| r.as_str()),
                Some("050-line-to-0120-0800-0570"),
                "{name}"
            );
        }
    }
    // The same freephone numbers from the contract's 0ABJ line are recorded.
    let (ruri, from, want) = out_mobile("0312340001", "0120123456", None);
    check(
        &cfg,
        "0ABJ line to 0120",
        &decide(&policy, &invite(&ruri, &from, &[]), Load::default()).1,
        &want,
    );
}

#[test]
fn services_prefixes_and_callers() {
    let cfg = config();
    let policy = Policy::new(&cfg);
    let w = |reason, dir, contract, caller, callee, prefix| Want {
        reason,
        dir,
        contract,
        caller,
        callee,
        prefix,
    };
    let out = Some("outbound");
    let inn = Some("inbound");
    let cases: Vec<(&str, String, Want)> = vec![
        (
            "fixed contract, fixed prefix",
            invite(&format!("{F}0312349999"), "0612340002", &[]),
            w(None, out, Some("K-F"), "0612340002", "0312349999", Some(F)),
        ),
        (
            "fixed contract, mobile prefix",
            invite(&format!("{M}0312349999"), "0612340002", &[]),
            w(
                Some("service-mismatch"),
                out,
                Some("K-F"),
                "0612340002",
                "0312349999",
                Some(M),
            ),
        ),
        (
            "mobile contract, fixed prefix",
            invite(&format!("{F}0312349999"), "0312340001", &[]),
            w(
                Some("service-mismatch"),
                out,
                Some("K-M"),
                "0312340001",
                "0312349999",
                Some(F),
            ),
        ),
        (
            "contract caller without prefix",
            invite("0312349999", "0312340001", &[]),
            w(
                Some("no-prefix"),
                out,
                Some("K-M"),
                "0312340001",
                "0312349999",
                None,
            ),
        ),
        (
            "prefix from a non-contract caller",
            invite(&format!("{M}0312349999"), "0312349998", &[]),
            w(
                Some("not-a-contract-number"),
                out,
                None,
                "0312349998",
                "0312349999",
                Some(M),
            ),
        ),
        (
            "neither side a contract",
            invite("0312349999", "0312349998", &[]),
            w(
                Some("not-a-contract-number"),
                None,
                None,
                "0312349998",
                "0312349999",
                None,
            ),
        ),
        (
            "caller in From as tel:+81",
            invite(&format!("{M}0312349999"), "tel:+81-3-1234-0001", &[]),
            w(None, out, Some("K-M"), "0312340001", "0312349999", Some(M)),
        ),
        (
            "caller in PAI as tel:+81, From a PBX user",
            invite(
                &format!("{M}0312349999"),
                "sip:alice@192.0.2.1",
                &["P-Asserted-Identity: <tel:+81312340001>"],
            ),
            w(None, out, Some("K-M"), "0312340001", "0312349999", Some(M)),
        ),
        (
            "several PAI values, sip then tel",
            invite(
                &format!("{M}0312349999"),
                "sip:alice@192.0.2.1",
                &[
                    "P-Asserted-Identity: \"A\" <sip:+81312340001@192.0.2.1;user=phone>, <tel:+81312340001>",
                ],
            ),
            w(None, out, Some("K-M"), "0312340001", "0312349999", Some(M)),
        ),
        (
            "Request-URI as tel: with the prefix",
            invite(&format!("tel:{M}0312349999"), "0312340001", &[]),
            w(None, out, Some("K-M"), "0312340001", "0312349999", Some(M)),
        ),
        (
            "dialled number with separators and isub",
            invite(
                &format!("sip:{M}-03-1234-9999;isub=12@198.51.100.1;user=phone"),
                "0312340001",
                &[],
            ),
            w(None, out, Some("K-M"), "0312340001", "0312349999", Some(M)),
        ),
        (
            "inbound to 0ABJ contract number",
            invite("0312340001", "0312349999", &[]),
            w(None, inn, Some("K-M"), "0312349999", "0312340001", None),
        ),
        (
            "inbound to 050 contract number",
            invite("05011110001", "09087654321", &[]),
            w(None, inn, Some("K-M"), "09087654321", "05011110001", None),
        ),
        (
            "inbound to fixed contract, +81 with user=phone",
            invite(
                "sip:+81612340002@198.51.100.1;user=phone",
                "tel:+81-45-123-4567",
                &[],
            ),
            w(None, inn, Some("K-F"), "0451234567", "0612340002", None),
        ),
        (
            "inbound as tel: with isub",
            invite("tel:+81-3-1234-0001;isub=55", "0312349999", &[]),
            w(None, inn, Some("K-M"), "0312349999", "0312340001", None),
        ),
        (
            "inbound to a contract's 090 number",
            invite("09012340001", "0312349999", &[]),
            w(
                Some("inbound-to-mobile-number"),
                inn,
                Some("K-M"),
                "0312349999",
                "09012340001",
                None,
            ),
        ),
        (
            "forwarded, Diversion",
            invite(
                "09098765432",
                "0312349999",
                &["Diversion: <sip:0612340002@198.51.100.1>;reason=unconditional;counter=1"],
            ),
            w(None, inn, Some("K-F"), "0312349999", "0612340002", None),
        ),
        (
            "forwarded twice, Diversion list",
            invite(
                "09098765432",
                "0312349999",
                &[
                    "Diversion: <sip:08011112222@198.51.100.1>;reason=no-answer, <tel:+81612340002>;reason=unconditional",
                ],
            ),
            w(None, inn, Some("K-F"), "0312349999", "0612340002", None),
        ),
        (
            "forwarded, History-Info",
            invite(
                "09098765432",
                "0312349999",
                &[
                    "History-Info: <sip:0612340002@198.51.100.1?Reason=SIP%3Bcause%3D302>;index=1",
                    "History-Info: <sip:09098765432@198.51.100.1>;index=1.1",
                ],
            ),
            w(None, inn, Some("K-F"), "0312349999", "0612340002", None),
        ),
    ];
    for (name, msg, want) in cases {
        let (_, v) = decide(&policy, &msg, Load::default());
        check(&cfg, name, &v, &want);
    }
}

#[test]
fn withheld_callers_are_anonymous_everywhere() {
    let cfg = config();
    let policy = Policy::new(&cfg);
    let secret_forms = ["9011112222", "09011112222", "+819011112222"];
    let cases = [
        (
            "Privacy: id with PAI, anonymous From",
            invite(
                "0312340001",
                "sip:anonymous@anonymous.invalid",
                &["P-Asserted-Identity: <tel:+819011112222>", "Privacy: id"],
            ),
        ),
        (
            "Privacy: user;id with a numeric From",
            invite(
                "0612340002",
                "sip:09011112222@192.0.2.1",
                &["Privacy: user;id"],
            ),
        ),
        (
            "anonymous From without Privacy",
            invite(
                "0312340001",
                "sip:anonymous@anonymous.invalid",
                &["P-Asserted-Identity: <sip:09011112222@192.0.2.1>"],
            ),
        ),
    ];
    for (name, msg) in cases {
        let (facts, v) = decide(&policy, &msg, Load::default());
        assert!(facts.withheld, "{name}");
        assert!(v.record, "{name}: {v:?}");
        assert_eq!(v.caller, "anonymous", "{name}");
        let shown = format!("{v:?} {facts:?}");
        for s in secret_forms {
            assert!(!shown.contains(s), "{name}: withheld number in {shown}");
        }
    }
    // Privacy: none does not hide the number.
    let (facts, v) = decide(
        &policy,
        &invite("0312340001", "09011112222", &["Privacy: none"]),
        Load::default(),
    );
    assert!(!facts.withheld);
    assert_eq!(v.caller, "09011112222");
}

#[test]
fn congestion() {
    let cfg = config();
    let policy = Policy::new(&cfg);
    let full = Load {
        active_calls: MAX,
        spool_full: false,
    };
    let below = Load {
        active_calls: MAX - 1,
        spool_full: false,
    };
    let spool = Load {
        active_calls: 0,
        spool_full: true,
    };
    let cases: Vec<(&str, String, Load, bool, Option<&str>)> = vec![
        (
            "priority number, overloaded",
            invite("0312340001", "0312340099", &[]),
            full,
            false,
            Some("priority-bypass"),
        ),
        (
            "priority number as +81 in PAI",
            invite(
                "0312340001",
                "sip:x@192.0.2.1",
                &["P-Asserted-Identity: <tel:+81312340099>"],
            ),
            full,
            false,
            Some("priority-bypass"),
        ),
        (
            "Resource-Priority, overloaded",
            invite("0312340001", "0312349999", &["Resource-Priority: esnet.0"]),
            full,
            false,
            Some("priority-bypass"),
        ),
        (
            "Resource-Priority, prefixed outbound",
            invite(
                &format!("{M}0312349999"),
                "0312340001",
                &["Resource-Priority: wps.0"],
            ),
            full,
            false,
            Some("priority-bypass"),
        ),
        (
            "ordinary caller, overloaded",
            invite("0312340001", "0312349999", &[]),
            full,
            false,
            Some("overload"),
        ),
        (
            "ordinary caller, spool full",
            invite("0312340001", "0312349999", &[]),
            spool,
            false,
            Some("overload"),
        ),
        (
            "priority caller, spool full",
            invite("0312340001", "0312340099", &[]),
            spool,
            false,
            Some("priority-bypass"),
        ),
        (
            "ordinary caller, below the limit",
            invite("0312340001", "0312349999", &[]),
            below,
            true,
            None,
        ),
        (
            "priority caller, below the limit",
            invite("0312340001", "0312340099", &[]),
            below,
            true,
            None,
        ),
        (
            "priority caller, not a recordable call",
            invite("0312349999", "0312340099", &[]),
            full,
            false,
            Some("not-a-contract-number"),
        ),
    ];
    for (name, msg, load, record, reason) in cases {
        let (_, v) = decide(&policy, &msg, load);
        assert_eq!(
            (v.record, v.reason.map(|r| r.as_str())),
            (record, reason),
            "{name}: {v:?}"
        );
    }
}
