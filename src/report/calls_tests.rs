use super::*;

const HISTORY: &str = concat!(
    r#"{"call_id":"a1","direction":"outbound","contract":"K-0001","caller":"0312340001","callee":"0312349999","prefix":"007726","decision":"record","reason":null,"invite_at":"2026-11-21T09:30:00.000+09:00","answered_at":"2026-11-21T09:30:05.000+09:00","billing_start":"2026-11-21T09:30:05.500+09:00","ended_at":"2026-11-21T09:31:05.000+09:00","end_reason":"bye-subscriber","segments":1}"#,
    "\n",
    r#"{"call_id":"b2,\"x\"","direction":"inbound","contract":"K-0002","caller":"anonymous","callee":"0612340002","decision":"skip","reason":"overload","invite_at":"2026-11-21T01:00:00Z"}"#,
    "\n\n",
    r#"{"call_id":"c3","decision":"skip","reason":"not-a-contract-number","caller":"0312349998","callee":"0312349999","invite_at":"2026-11-22T09:00:00+09:00"}"#,
    "\n"
);

fn spool(text: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("calls.jsonl"), text).unwrap();
    d
}

fn ids(d: &Path, q: &CallsQuery) -> Vec<String> {
    let (ix, _) = open_index(d).unwrap();
    let mut out = Vec::new();
    ix.query(
        &q.validate(9 * 3600).unwrap(),
        |r| -> Result<(), ReportError> {
            out.push(r.call_id);
            Ok(())
        },
    )
    .unwrap();
    out
}

fn render(d: &Path, q: &CallsQuery, f: OutFormat) -> String {
    let (ix, _) = open_index(d).unwrap();
    let mut out = Vec::new();
    write_calls(&ix, &q.validate(0).unwrap(), f, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn filters_and_order() {
    let d = spool(HISTORY);
    let q = |f: &dyn Fn(&mut CallsQuery)| {
        let mut q = CallsQuery::default();
        f(&mut q);
        ids(d.path(), &q)
    };
    // Newest first by default; the log's order is when the calls ended.
    assert_eq!(q(&|_| {}), ["c3", "b2,\"x\"", "a1"]);
    assert_eq!(
        q(&|q| q.sort = Some("oldest".into())),
        ["a1", "b2,\"x\"", "c3"]
    );
    assert_eq!(
        q(&|q| q.sort = Some("ended".into())),
        ["a1", "b2,\"x\"", "c3"]
    );
    assert_eq!(q(&|q| q.contract = Some("K-0002".into())), ["b2,\"x\""]);
    assert_eq!(q(&|q| q.direction = Some("outbound".into())), ["a1"]);
    assert_eq!(q(&|q| q.decision = Some("skip".into())), ["c3", "b2,\"x\""]);
    assert_eq!(q(&|q| q.reason = Some("overload".into())), ["b2,\"x\""]);
    assert_eq!(q(&|q| q.call = Some("c3".into())), ["c3"]);
    // The number filter normalises: +81 finds the national form, caller or callee.
    assert_eq!(
        q(&|q| q.number = Some("+81-3-1234-9999".into())),
        ["c3", "a1"]
    );
    // 01:00Z is 10:00+09:00: after a1, before c3.
    assert_eq!(
        q(&|q| q.since = Some("2026-11-21T09:45:00+09:00".into())),
        ["c3", "b2,\"x\""]
    );
    assert_eq!(
        q(&|q| q.until = Some("2026-11-21T01:00:00Z".into())),
        ["a1"]
    );
    // Bare dates are days in the zone (+09:00 here); --until includes its day.
    assert_eq!(q(&|q| q.since = Some("2026-11-22".into())), ["c3"]);
    assert_eq!(
        q(&|q| q.until = Some("2026-11-21".into())),
        ["b2,\"x\"", "a1"]
    );
    assert_eq!(q(&|q| q.limit = Some(1)), ["c3"]);
}

#[test]
fn bad_filters_name_the_option() {
    for (f, key) in [
        (
            &(|q: &mut CallsQuery| q.direction = Some("sideways".into()))
                as &dyn Fn(&mut CallsQuery),
            "direction",
        ),
        (
            &|q: &mut CallsQuery| q.decision = Some("maybe".into()),
            "decision",
        ),
        (
            &|q: &mut CallsQuery| q.since = Some("yesterday".into()),
            "since",
        ),
        (
            &|q: &mut CallsQuery| q.until = Some("2026-02-30x".into()),
            "until",
        ),
        (
            &|q: &mut CallsQuery| q.number = Some("call me".into()),
            "number",
        ),
        (&|q: &mut CallsQuery| q.sort = Some("random".into()), "sort"),
        (
            &|q: &mut CallsQuery| q.contract = Some("K 1; DROP".into()),
            "contract",
        ),
    ] {
        let mut q = CallsQuery::default();
        f(&mut q);
        match q.validate(0) {
            Err(ReportError::BadFilter { key: k, .. }) => assert_eq!(k, key),
            other => panic!("{key}: {other:?}"),
        }
    }
}

#[test]
fn formats() {
    let d = spool(HISTORY);
    let q = CallsQuery {
        sort: Some("oldest".into()),
        ..Default::default()
    };
    let csv = render(d.path(), &q, OutFormat::Csv);
    let lines: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(lines[0], COLUMNS.join(","));
    assert!(
        lines[1].starts_with("a1,outbound,K-0001,'0312340001,'0312349999,'007726,record,,'2026-11-21T09:30:00.000+09:00,"),
        "{}",
        lines[1]
    );
    assert!(
        lines[1].ends_with(",bye-subscriber,1,60.000,59.500"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("\"b2,\"\"x\"\"\",inbound,"),
        "{}",
        lines[2]
    );
    assert_eq!(lines.len(), 5); // header, 3 rows, empty after the last CRLF
    let json: serde_json::Value =
        serde_json::from_str(&render(d.path(), &q, OutFormat::Json)).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);
    assert_eq!(json[0]["caller"], "0312340001");
    let table = render(d.path(), &q, OutFormat::Table);
    let rows: Vec<&str> = table.lines().collect();
    // Aligned: every column starts at the same character in every row.
    let col = rows[0].find("direction").unwrap();
    assert_eq!(&rows[1][col..col + 8], "outbound");
    assert_eq!(&rows[2][col..col + 7], "inbound");
    assert_eq!(rows.last(), Some(&"3 calls"));
    // No history yet: empty, not an error.
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        render(empty.path(), &q, OutFormat::Csv),
        format!("{}\r\n", COLUMNS.join(","))
    );
    assert_eq!(render(empty.path(), &q, OutFormat::Json), "[\n]\n");
}

#[test]
fn formula_cells_are_neutralised() {
    let r = csv_row(
        [
            "=HYPERLINK(\"x\")",
            "+1",
            "-2",
            "@a",
            "\tb",
            "\rc",
            "plain",
            "0123",
            "say \"hi\"",
        ]
        .into_iter()
        .map(String::from),
        true,
        &[],
    );
    assert_eq!(
        r,
        "\"'=HYPERLINK(\"\"x\"\")\",'+1,'-2,'@a,'\tb,\"'\rc\",plain,'0123,\"say \"\"hi\"\"\"\r\n"
    );
}

#[test]
fn corrupt_line_is_named_and_skipped() {
    let d = spool(&format!(
        "{HISTORY}{{\"call_id\": \"d4\", \"caller\"\n[1]\n"
    ));
    let (_, warnings) = open_index(d.path()).unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("calls.jsonl:5:"), "{warnings:?}");
    assert!(
        warnings[1].contains("calls.jsonl:6: corrupt history line skipped: not a JSON object"),
        "{warnings:?}"
    );
    assert_eq!(ids(d.path(), &CallsQuery::default()).len(), 3);
}

#[test]
fn record_cells_match_the_object_cells() {
    let d = spool(HISTORY);
    let (ix, _) = open_index(d.path()).unwrap();
    let mut n = 0;
    ix.query(&Filter::default(), |r| -> Result<(), ReportError> {
        let m = row_object(&r);
        for c in COLUMNS {
            assert_eq!(record_cell(None, &r, c), cell(&m, c), "{c}");
        }
        n += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(n, 3);
}
