//! `make_codec_capture g722|amrwb CALLS SECONDS FRAMES OUT.pcap`: the
//! whole-pipeline benchmark's capture (CALLS concurrent calls of SECONDS,
//! as `make_capture --bench`) with its media in G.722 or AMR-WB instead of
//! G.711. FRAMES is encoded audio from an independent encoder, cycled
//! through every packet: raw G.722 (`ffmpeg ... -f g722`, 160 bytes per
//! 20 ms) or an AMR-WB storage file (`tests/support/encoders.py amrwb`),
//! sent octet-aligned (RFC 4867), one frame per packet.

use callrec::capture::LinkType;
use callrec::media::rtp::build_rtp;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, merge};

const T0: i64 = 1_795_221_000;

fn usage() -> ! {
    eprintln!("usage: make_codec_capture g722|amrwb CALLS SECONDS FRAMES OUT.pcap");
    std::process::exit(2)
}

/// The codec's RTP payloads (one per 20 ms), PT, SDP lines, clock factor.
fn payloads(codec: &str, frames: &[u8]) -> (Vec<Vec<u8>>, u8, String, u32) {
    match codec {
        "g722" => (
            frames.chunks_exact(160).map(<[u8]>::to_vec).collect(),
            9,
            "a=rtpmap:9 G722/8000\r\n".into(),
            1,
        ),
        "amrwb" => {
            let body = frames
                .strip_prefix(b"#!AMR-WB\n".as_slice())
                .unwrap_or_else(|| usage());
            let mut out = Vec::new();
            let mut s = body;
            while let Some(&h) = s.first() {
                let n = callrec::media::codecs::amr::frame_len(h, true).min(s.len());
                out.push([&[0xf0u8][..], &s[..n]].concat());
                s = &s[n..];
            }
            (
                out,
                97,
                "a=rtpmap:97 AMR-WB/16000\r\na=fmtp:97 octet-align=1\r\n".into(),
                2,
            )
        }
        _ => usage(),
    }
}

/// The G.711 SDP of a generated message, turned into the codec's.
fn rewrite_sip(msg: &[u8], pt: u8, lines: &str) -> Vec<u8> {
    let t = String::from_utf8_lossy(msg);
    let Some((head, body)) = t.split_once("\r\n\r\n") else {
        return msg.to_vec();
    };
    if !body.contains("m=audio") {
        return msg.to_vec();
    }
    let body = body
        .replace(" RTP/AVP 0 101", &format!(" RTP/AVP {pt} 101"))
        .replace("a=rtpmap:0 PCMU/8000\r\n", lines);
    let head: Vec<String> = head
        .lines()
        .map(|l| {
            if l.starts_with("Content-Length:") {
                format!("Content-Length: {}", body.len())
            } else {
                l.to_owned()
            }
        })
        .collect();
    format!("{}\r\n\r\n{body}", head.join("\r\n")).into_bytes()
}

fn main() -> std::io::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        usage();
    }
    let (Ok(calls), Ok(secs)) = (a[2].parse::<u32>(), a[3].parse::<u32>()) else {
        usage()
    };
    let (pl, pt, lines, k) = payloads(&a[1], &std::fs::read(&a[4])?);
    if pl.is_empty() {
        usage();
    }
    let specs: Vec<CallSpec> = (0..calls)
        .map(|i| {
            let at = Timestamp::from_secs_micros(T0, (i as i64 * 1_000_000) / calls.max(1) as i64);
            let mut c = CallSpec::simple(i, "0312340001", "0077260312349999", at, secs * 1000);
            c.call_id = format!("bench-{i}@callrec.test");
            c.ring_ms = 500;
            c
        })
        .collect();
    let mut w = PcapWriter::create(&a[5], LinkType::Ethernet)?;
    let all = merge(&specs);
    let mut n = 0usize;
    for d in &all {
        let payload = if d.payload.first().is_some_and(u8::is_ascii_alphabetic) {
            rewrite_sip(&d.payload, pt, &lines)
        } else if let Ok(r) = callrec::media::rtp::RtpPacket::parse(&d.payload) {
            if r.pt != 0 {
                d.payload.clone()
            } else {
                n += 1;
                build_rtp(
                    pt,
                    r.seq,
                    r.ts.wrapping_mul(k),
                    r.ssrc,
                    r.marker,
                    &pl[r.seq as usize % pl.len()],
                )
            }
        } else {
            d.payload.clone()
        };
        w.write(d.ts, &udp_frame(d.src, d.dst, &payload))?;
    }
    w.finish()?;
    eprintln!(
        "make_codec_capture: {calls} calls, {} packets ({n} {}) -> {}",
        all.len(),
        a[1],
        a[5]
    );
    Ok(())
}
