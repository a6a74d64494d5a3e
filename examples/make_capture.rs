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
use callrec::pcapgen::{PcapWriter, udp_frame};
use callrec::scenario::{CallSpec, Voice, merge};
use callrec::time::Timestamp;

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
    let t = |s: i64| Timestamp::from_secs_micros(T0 + s, 0);
    // Recorded outbound (mobile contract K-0001, stereo): the subscriber
    // keys *1 at 12 s (pause) and *2 at 16 s (resume), after the prompt.
    let mut out = CallSpec::simple(1, "0312340001", "0077260312349999", t(0), 24_000);
    out.a_voice.digits = vec![(12_000, '*'), (12_200, '1'), (16_000, '*'), (16_200, '2')];
    // Recorded inbound to the fixed contract K-0002 (mono); the callee hangs up.
    let mut inbound = CallSpec::simple(2, "0398765432", "0612340002", t(1), 15_000);
    inbound.bye_from_a = false;
    inbound.b_voice = Voice::tone(700.0);
    // Outbound without the prefix: not recorded.
    let noprefix = CallSpec::simple(3, "0312340001", "0312349999", t(2), 5_000);
    // Inbound, cancelled while ringing: not answered.
    let mut cancelled = CallSpec::simple(4, "0398765432", "05011110001", t(3), 0);
    cancelled.talk_ms = None;
    cancelled.ring_ms = 6_000;
    // Inbound from a caller who withheld the number: recorded as "anonymous".
    let mut withheld = CallSpec::simple(5, "anonymous", "05011110001", t(4), 14_000);
    withheld.invite_headers = vec![
        "P-Asserted-Identity: <tel:+81398760000>".into(),
        "Privacy: id".into(),
    ];
    // A prefixed call to an emergency number: never recorded.
    let emergency = CallSpec::simple(6, "0312340001", "007726110", t(5), 3_000);
    vec![out, inbound, noprefix, cancelled, withheld, emergency]
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
