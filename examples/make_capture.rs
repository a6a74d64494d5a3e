//! Writes deterministic synthetic captures.
//!
//! `make_capture --demo OUT.pcap`: a handful of calls exercising the policy
//! against conf/callrec.toml (recorded outbound and inbound calls, a call
//! without the prefix, a cancelled call, a withheld caller, an emergency
//! number).
//!
//! `make_capture --bench CALLS SECONDS OUT.pcap`: CALLS concurrent recorded
//! calls of SECONDS each, for the whole-pipeline benchmark.

use callrec::capture::LinkType;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, merge};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("--demo") if args.len() == 3 => write(&args[2], &demo()),
        Some("--bench") if args.len() == 5 => {
            let (Ok(calls), Ok(secs)) = (args[2].parse(), args[3].parse()) else {
                usage()
            };
            write(&args[4], &bench(calls, secs))
        }
        _ => usage(),
    };
    if let Err(e) = result {
        eprintln!("make_capture: {e}");
        std::process::exit(1);
    }
}

fn usage() -> ! {
    eprintln!("usage: make_capture --demo OUT.pcap | --bench CALLS SECONDS OUT.pcap");
    std::process::exit(2);
}

/// 2026-11-21T09:30:00+09:00
const T0: i64 = 1_795_221_000;

fn demo() -> Vec<CallSpec> {
    callrec_testkit::scenario::demo_calls()
}

fn bench(calls: u32, secs: u32) -> Vec<CallSpec> {
    (0..calls)
        .map(|i| {
            // Staggered starts over one second so packets interleave as on a real link.
            let at = Timestamp::from_secs_micros(T0, (i as i64 * 1_000_000) / calls.max(1) as i64);
            let mut c = CallSpec::simple(i, "0312340001", "0077260312349999", at, secs * 1000);
            c.call_id = format!("bench-{i}@callrec.test");
            c.ring_ms = 500;
            c
        })
        .collect()
}

fn write(path: &str, calls: &[CallSpec]) -> std::io::Result<()> {
    let mut w = PcapWriter::create(path, LinkType::Ethernet)?;
    let all = merge(calls);
    for d in &all {
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload))?;
    }
    w.finish()?;
    eprintln!(
        "make_capture: {} calls, {} packets -> {path}",
        calls.len(),
        all.len()
    );
    Ok(())
}
