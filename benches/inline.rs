//! Inline mode's user-space cost per diverted packet: find the flow,
//! put the prompt into the RTP payload, recompute the UDP checksum
//! (`FlowTable::on_packet`), with 200 flows in their prompt (100 calls).
//! The kernel's side (NFQUEUE round trip) is measured by
//! `scripts/bench-inline.sh`. Run: `cargo bench --bench inline -- --quick`.

use callrec::announce::Prompt;
use callrec::announce::rewrite::{Flow, FlowKey, FlowTable};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::net::SocketAddr;

const FLOWS: u16 = 200;

fn packet(i: u16, seq: u16) -> Vec<u8> {
    let mut rtp = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    rtp[2..4].copy_from_slice(&seq.to_be_bytes());
    rtp[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    rtp.extend(std::iter::repeat_n(0xff, 160));
    let b = etherparse::PacketBuilder::ipv4([192, 0, 2, 11], [192, 0, 2, 12], 64)
        .udp(20_000 + i, 40_000 + i);
    let mut out = Vec::new();
    b.write(&mut out, &rtp).unwrap();
    out
}

fn bench(c: &mut Criterion) {
    let clip = Prompt::from_samples("bench", (0..480_000).map(|i| (i % 3000) as i16).collect());
    let mut table = FlowTable::default();
    for i in 0..FLOWS {
        let key = FlowKey {
            src: SocketAddr::from(([192, 0, 2, 11], 20_000 + i)),
            dst: SocketAddr::from(([192, 0, 2, 12], 40_000 + i)),
        };
        table
            .flows
            .insert(key, Flow::new(u64::from(i), clip.clone(), 0, None));
    }
    // 10 packets per flow, interleaved as they arrive.
    let mut pkts: Vec<Vec<u8>> = (0..10u16)
        .flat_map(|s| (0..FLOWS).map(move |i| packet(i, s)))
        .collect();
    let mut g = c.benchmark_group("inline");
    g.throughput(Throughput::Elements(pkts.len() as u64));
    g.bench_function("rewrite 2000 packets of 200 flows", |b| {
        b.iter(|| {
            for p in pkts.iter_mut() {
                std::hint::black_box(table.on_packet(p, 0));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
