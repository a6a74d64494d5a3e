//! The call history at carrier scale (`scripts/bench-history.sh`).
//!
//! `history_bench gen SPOOL N` writes N generated calls to
//! `SPOOL/calls.jsonl` (10 days of calls, 200 contracts, a mix of
//! decisions and reasons, times in +09:00), without an index.
//! `history_bench legacy SPOOL [--contract K] [--limit N] [--csv]` answers
//! the way `callrec calls` did before the index (the whole file read into
//! memory, every line parsed to a JSON object, then filtered), so the
//! script can time and measure both the same way.
//! `history_bench trim SPOOL DAYS` runs retention (`history.keep` =
//! DAYS before the newest call) on the log and its index, as the daemon
//! does hourly.

use callrec::history::CallRecord;
use serde_json::{Map, Value};
use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gen") => generate(&args[1], args[2].parse().expect("N")),
        Some("legacy") => legacy(&args[1], &args[2..]),
        Some("trim") => {
            let days: u64 = args[2].parse().expect("DAYS");
            let keep = std::time::Duration::from_secs(days * 86_400);
            let spool = std::path::Path::new(&args[1]);
            drop(callrec::history::HistoryWriter::open_keep(spool, Some(keep), None).unwrap());
            // Counted streaming: the measure is the trim's memory, not ours.
            let f = std::fs::File::open(spool.join("calls.jsonl")).unwrap();
            let n = std::io::BufRead::lines(std::io::BufReader::new(f)).count();
            println!("{n}");
        }
        _ => {
            eprintln!(
                "usage: history_bench gen SPOOL N | legacy SPOOL [--contract K] [--limit N] [--csv] | trim SPOOL DAYS"
            );
            std::process::exit(2);
        }
    }
}

/// A small deterministic generator (xorshift), so every run writes the same history.
fn generate(spool: &str, n: u64) {
    std::fs::create_dir_all(spool).unwrap();
    let f = std::fs::File::create(format!("{spool}/calls.jsonl")).unwrap();
    let mut w = std::io::BufWriter::new(f);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let start = 1_795_186_800_000_000i64; // 2026-11-21T00:00:00+09:00
    let span = 10 * 86_400_000_000i64;
    for i in 0..n {
        let r = rnd();
        let t = callrec::time::Timestamp(start + (i as i64) * (span / n as i64));
        let contract = format!("K-{:04}", r % 200);
        let record = r % 10 < 3;
        let reasons = [
            "not-a-contract-number",
            "not-answered",
            "overload",
            "inbound-070",
        ];
        let rec = CallRecord {
            call_id: format!("{:016x}@198.51.100.{}", rnd(), r % 250),
            short_id: format!("{:08x}", r as u32),
            direction: Some(if r % 2 == 0 { "outbound" } else { "inbound" }.into()),
            contract: Some(contract),
            service: Some("mobile".into()),
            caller: format!("03{:08}", r % 100_000_000),
            callee: format!("06{:08}", (r >> 20) % 100_000_000),
            prefix: Some("007726".into()),
            decision: if record { "record" } else { "skip" }.into(),
            reason: (!record).then(|| reasons[(r >> 8) as usize % 4].to_string()),
            invite_at: t.rfc3339(9 * 3600),
            answered_at: Some(t.add_micros(5_000_000).rfc3339(9 * 3600)),
            billing_start: record.then(|| t.add_micros(5_500_000).rfc3339(9 * 3600)),
            ended_at: Some(t.add_micros(65_000_000).rfc3339(9 * 3600)),
            end_reason: Some("bye-subscriber".into()),
            segments: record as u32,
        };
        serde_json::to_writer(&mut w, &rec).unwrap();
        w.write_all(b"\n").unwrap();
    }
    w.flush().unwrap();
}

/// The pre-index `callrec calls`: read whole, parse every line, filter, keep the last N.
fn legacy(spool: &str, args: &[String]) {
    let arg = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .map(|i| args[i + 1].clone())
    };
    let contract = arg("--contract");
    let limit: Option<usize> = arg("--limit").map(|l| l.parse().unwrap());
    let text = std::fs::read_to_string(format!("{spool}/calls.jsonl")).unwrap();
    let mut out: Vec<Map<String, Value>> = Vec::new();
    for line in text.lines() {
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if contract
            .as_deref()
            .is_some_and(|c| obj.get("contract").and_then(Value::as_str) != Some(c))
        {
            continue;
        }
        out.push(obj);
    }
    if let Some(l) = limit {
        let skip = out.len().saturating_sub(l);
        out.drain(..skip);
    }
    let mut s = String::new();
    for r in &out {
        let cells: Vec<String> = r.values().map(|v| v.to_string()).collect();
        s.push_str(&cells.join(","));
        s.push_str("\r\n");
    }
    std::io::stdout().write_all(s.as_bytes()).unwrap();
}
