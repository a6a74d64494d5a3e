//! `callrec calls --format csv` opened by a real spreadsheet program
//! (gnumeric's `ssconvert`, from Debian) and read back cell by cell from
//! the workbook it writes: numbers keep their leading zero, Call-IDs that
//! look like formulas stay text, times keep their offset, the counts stay numbers.

use std::process::Command;

/// (row, col) -> (ValueType, text) from a Gnumeric workbook's XML.
fn cells(xml: &str) -> std::collections::HashMap<(usize, usize), (String, String)> {
    let mut out = std::collections::HashMap::new();
    for part in xml.split("<gnm:Cell ").skip(1) {
        let attr = |name: &str| {
            let k = format!("{name}=\"");
            part.find(&k).map(|i| {
                let rest = &part[i + k.len()..];
                rest[..rest.find('"').unwrap()].to_string()
            })
        };
        let (Some(row), Some(col)) = (attr("Row"), attr("Col")) else {
            continue;
        };
        let body = &part[part.find('>').unwrap() + 1..];
        let text = body[..body.find("</gnm:Cell>").unwrap_or(0)]
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&apos;", "'")
            .replace("&amp;", "&");
        // No ValueType: Gnumeric stored an expression (a formula).
        let ty = attr("ValueType").unwrap_or_else(|| "formula".into());
        out.insert((row.parse().unwrap(), col.parse().unwrap()), (ty, text));
    }
    out
}

#[test]
fn spreadsheet_reads_numbers_and_ids_as_text() {
    if Command::new("ssconvert").arg("--version").output().is_err() {
        eprintln!("SKIP: ssconvert (gnumeric) is not installed (scripts/setup.sh installs it)");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let lines = [
        r#"{"call_id":"=HYPERLINK(\"http://203.0.113.9/x\",\"click\")","short_id":"a","direction":"outbound","contract":"K-0001","caller":"0312340001","callee":"0312349999","prefix":"007726","decision":"record","invite_at":"2026-11-21T09:30:00.000+09:00","answered_at":"2026-11-21T09:30:05.000+09:00","billing_start":"2026-11-21T09:30:05.500+09:00","ended_at":"2026-11-21T09:31:05.000+09:00","end_reason":"bye-subscriber","segments":1}"#,
        r#"{"call_id":"+1-555@198.51.100.2","short_id":"b","direction":"inbound","contract":"K-0002","caller":"anonymous","callee":"0612340002","decision":"skip","reason":"overload","invite_at":"2026-11-21T09:40:00.000+09:00","segments":0}"#,
        r#"{"call_id":"@SUM(1+1)*cmd|' /C calc'!A0","short_id":"c","direction":"outbound","contract":"K-0001","caller":"-2+3","callee":"09012345678","decision":"skip","reason":"not-answered","invite_at":"2026-11-21T09:50:00.000+09:00","segments":0}"#,
        r#"{"call_id":"1234567890","short_id":"d","caller":"0120123456","callee":"\t=1+1","decision":"skip","invite_at":"2026-11-21T10:00:00.000+09:00","segments":0}"#,
    ];
    std::fs::write(d.path().join("calls.jsonl"), lines.join("\n") + "\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_callrec"))
        .args([
            "calls",
            "--spool",
            d.path().to_str().unwrap(),
            "--format",
            "csv",
            "--sort",
            "oldest",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = d.path().join("calls.csv");
    std::fs::write(&csv, &out.stdout).unwrap();
    let book = d.path().join("calls.gnumeric");
    let conv = Command::new("ssconvert")
        .arg(&csv)
        .arg(&book)
        .env("HOME", d.path())
        .output()
        .unwrap();
    assert!(
        conv.status.success(),
        "ssconvert: {}",
        String::from_utf8_lossy(&conv.stderr)
    );
    let xml = Command::new("gzip").arg("-dc").arg(&book).output().unwrap();
    let c = cells(&String::from_utf8_lossy(&xml.stdout));
    let col = |name: &str| {
        callrec::report::COLUMNS
            .iter()
            .position(|c| *c == name)
            .unwrap()
    };
    let text = |row: usize, name: &str, want: &str| {
        let got = c
            .get(&(row, col(name)))
            .unwrap_or_else(|| panic!("no cell {row} {name}"));
        assert_eq!(
            got,
            &("60".to_string(), want.to_string()),
            "row {row} {name}"
        );
    };
    let json: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (i, j) in json.iter().enumerate() {
        let row = i + 1;
        // Every text cell comes back exactly as in the history, as text.
        for name in ["call_id", "caller", "callee", "invite_at"] {
            text(row, name, j[name].as_str().unwrap());
        }
    }
    text(1, "prefix", "007726");
    text(1, "ended_at", "2026-11-21T09:31:05.000+09:00");
    // The counts and durations are numbers (ValueType 40).
    assert_eq!(c[&(1, col("segments"))], ("40".into(), "1".into()));
    assert_eq!(c[&(1, col("duration_s"))], ("40".into(), "60".into()));
    assert_eq!(c[&(1, col("billed_s"))], ("40".into(), "59.5".into()));
    assert!(
        c.values().all(|(ty, _)| ty != "formula"),
        "a formula cell: {c:?}"
    );
}
