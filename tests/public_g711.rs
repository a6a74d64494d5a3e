//! G.711 decoding on real captures, cross-checked with independent tools.
//!
//! For every loss-free G.711 leg that tshark finds in
//! ../shared/pcaps/public, tshark exports the RTP payloads and sox decodes
//! them; separately, our own capture reader (libpcap) and decoder pick the
//! same leg's datagrams out of the file and a `CallRecorder` records them
//! (RTP parser, jitter buffer, G.711 tables, mixer, WAV writer). The
//! recording's channel, read back by sox, must equal the sox-decoded
//! payloads sample for sample, each packet at its RTP-timestamp place
//! (RFC 3550) counted from the leg's first packet, with exact silence
//! everywhere else; the other channel must be silent; the leg's packet
//! count must equal tshark's, with nothing counted lost, late or
//! malformed.
//!
//! Three legs in the corpus come from senders whose RTP clock drifts from
//! capture time (isa_inbound_call: 16% slow; heplify_rtp_rtcp: 1.2% fast).
//! There the jitter buffer re-anchors to capture time by design, so the
//! check is that every packet is still there whole, in order, and within
//! the buffer's window around its capture time.
//!
//! RTP quoted inside ICMP errors is not RTP traffic: tshark's own stream
//! statistics count those copies, the filter here and our decoder do not.
//!
//! Why the recorder and not `replay`: the calls in these captures dial
//! "test", "sipp", "1019", "telephone1" and the like. No contract can cover
//! them (contract numbers and recordable destinations are Japanese
//! numbers), so the policy rightly records none of them. The recorder is
//! everything `replay` runs per recorded leg after routing.
//!
//! Skips with a message where the corpus, tshark or sox is absent
//! (scripts/setup.sh installs both tools).

#[path = "support/tools.rs"]
mod tools;
use callrec::capture::{FileSource, PacketSource};
use callrec::config::{AudioFormat, Channels, Limits};
use callrec::decode::{Decoder, Transport};
use callrec::media::jitter::{MAX_AHEAD, PLAYOUT_DELAY, RING};
use callrec::media::rtp::RtpPacket;
use callrec::recording::recorder::{CallRecorder, Leg, RecorderParams};
use callrec::time::Timestamp;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tools::{capture_files, corpus, tool_present};

/// One RTP packet as tshark dissected it.
struct TsharkRtp {
    /// Capture time, seconds since the epoch.
    time: f64,
    seq: u16,
    ts: u32,
    pt: u8,
    payload: Vec<u8>,
    /// A copy of a packet already seen (same sequence number and bytes).
    duplicate: bool,
}

/// One direction of media with one SSRC, as tshark sees it.
struct TsharkLeg {
    src: SocketAddr,
    dst: SocketAddr,
    ssrc: u32,
    packets: Vec<TsharkRtp>,
}

impl TsharkLeg {
    /// 0 (PCMU) or 8 (PCMA) when the leg is G.711 (with comfort noise at
    /// most) in a single law; None otherwise.
    fn law(&self) -> Option<u8> {
        let audio: Vec<u8> = self
            .packets
            .iter()
            .map(|p| p.pt)
            .filter(|&pt| pt != 13)
            .collect();
        let first = *audio.first()?;
        ((first == 0 || first == 8) && audio.iter().all(|&pt| pt == first)).then_some(first)
    }

    /// The packets without network duplicates.
    fn unique(&self) -> Vec<&TsharkRtp> {
        self.packets.iter().filter(|p| !p.duplicate).collect()
    }

    /// Loss-free as tshark's RTP analysis counts loss: apart from exact
    /// duplicates, every sequence number is one after the previous, in
    /// capture order (so also no reordering).
    fn loss_free(&self) -> bool {
        self.unique()
            .windows(2)
            .all(|w| w[1].seq == w[0].seq.wrapping_add(1))
    }

    /// Each unique packet's offset in samples from the first packet's RTP
    /// timestamp, or None when timestamps step back or make packets
    /// overlap (no single "correct" timeline to compare against).
    fn offsets(&self) -> Option<Vec<usize>> {
        let ts0 = self.packets.first()?.ts;
        let mut end = 0usize;
        let mut out = Vec::with_capacity(self.packets.len());
        for p in self.unique() {
            let off = p.ts.wrapping_sub(ts0) as usize;
            if off < end || off > 8000 * 600 {
                return None;
            }
            if p.pt != 13 {
                end = off + p.payload.len();
            }
            out.push(off);
        }
        Some(out)
    }
}

fn field_addr(ip4: &str, ip6: &str, port: &str) -> Option<SocketAddr> {
    let ip: IpAddr = if ip4.is_empty() { ip6 } else { ip4 }.parse().ok()?;
    Some(SocketAddr::new(ip, port.parse().ok()?))
}

/// Every RTP packet tshark finds (heuristically, as several captures have
/// no SIP), grouped into legs by (source, destination, SSRC) in order of
/// first appearance. The innermost IP header counts (tunnels).
fn tshark_legs(file: &Path) -> Vec<TsharkLeg> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args([
            "-o",
            "rtp.heuristic_rtp:TRUE",
            "-Y",
            "rtp.version == 2 && !icmp",
            "-T",
            "fields",
        ])
        .args(["-E", "separator=/t", "-E", "occurrence=l"])
        .args(["-e", "ip.src", "-e", "ipv6.src", "-e", "udp.srcport"])
        .args(["-e", "ip.dst", "-e", "ipv6.dst", "-e", "udp.dstport"])
        .args(["-e", "rtp.ssrc", "-e", "rtp.seq", "-e", "rtp.timestamp"])
        .args([
            "-e",
            "rtp.p_type",
            "-e",
            "rtp.payload",
            "-e",
            "frame.time_epoch",
        ])
        .output()
        .expect("tshark runs");
    assert!(
        out.status.success(),
        "tshark failed on {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut legs: Vec<TsharkLeg> = Vec::new();
    let mut index: HashMap<(SocketAddr, SocketAddr, u32), usize> = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 12 {
            continue;
        }
        let (Some(src), Some(dst)) = (field_addr(f[0], f[1], f[2]), field_addr(f[3], f[4], f[5]))
        else {
            continue;
        };
        let ssrc = u32::from_str_radix(f[6].trim_start_matches("0x"), 16).unwrap();
        let mut pkt = TsharkRtp {
            time: f[11].parse().unwrap(),
            seq: f[7].parse().unwrap(),
            ts: f[8].parse().unwrap(),
            pt: f[9].parse().unwrap(),
            payload: hex::decode(f[10].replace(':', "")).unwrap(),
            duplicate: false,
        };
        let i = *index.entry((src, dst, ssrc)).or_insert_with(|| {
            legs.push(TsharkLeg {
                src,
                dst,
                ssrc,
                packets: Vec::new(),
            });
            legs.len() - 1
        });
        let seen = &legs[i].packets;
        pkt.duplicate = seen[seen.len().saturating_sub(128)..]
            .iter()
            .any(|q| q.seq == pkt.seq && q.payload == pkt.payload);
        legs[i].packets.push(pkt);
    }
    legs
}

/// sox decodes G.711 bytes (μ-law for PT 0, A-law for PT 8) into 16-bit
/// linear samples.
fn sox_decode(dir: &Path, law: u8, bytes: &[u8]) -> Vec<i16> {
    let input = dir.join("payload.raw");
    let output = dir.join("decoded.raw");
    std::fs::write(&input, bytes).unwrap();
    let kind = if law == 0 { "ul" } else { "al" };
    let st = Command::new("sox")
        .args(["-D", "-t", kind, "-r", "8000", "-c", "1"])
        .arg(&input)
        .args(["-t", "raw", "-e", "signed-integer", "-b", "16", "-L"])
        .arg(&output)
        .status()
        .unwrap();
    assert!(st.success(), "sox could not decode the payloads");
    le_samples(&std::fs::read(&output).unwrap())
}

fn le_samples(b: &[u8]) -> Vec<i16> {
    b.chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// sox reads our WAV (so its header must be valid for a third-party
/// reader) and gives one channel as raw samples, plus what `sox --i`
/// says about the file: (channels, rate, frames).
fn sox_channel(wav: &Path, channel: usize) -> (Vec<i16>, (u32, u32, u64)) {
    let info = |flag: &str| -> String {
        let o = Command::new("sox")
            .arg("--i")
            .arg(flag)
            .arg(wav)
            .output()
            .unwrap();
        assert!(o.status.success(), "sox cannot read {}", wav.display());
        String::from_utf8(o.stdout).unwrap().trim().to_owned()
    };
    let header = (
        info("-c").parse().unwrap(),
        info("-r").parse().unwrap(),
        info("-s").parse().unwrap(),
    );
    let raw = wav.with_extension(format!("ch{channel}.raw"));
    let st = Command::new("sox")
        .arg("-D")
        .arg(wav)
        .args(["-t", "raw", "-e", "signed-integer", "-b", "16", "-L"])
        .arg(&raw)
        .args(["remix", &channel.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "sox cannot extract channel {channel}");
    (le_samples(&std::fs::read(&raw).unwrap()), header)
}

type Key = (SocketAddr, SocketAddr, u32);

/// Our side of the reading: libpcap through `FileSource`, our link/IP/UDP
/// decoder, and the SSRC straight from the RTP header bytes. Returns each
/// wanted leg's datagrams with their capture time.
fn our_datagrams(file: &Path, wanted: &[Key]) -> HashMap<Key, Vec<(Timestamp, Vec<u8>)>> {
    let limits = Limits {
        fragment_bytes: 1 << 20,
        fragment_timeout: Duration::from_secs(30),
        tcp_stream_bytes: 1 << 16,
        tcp_streams: 64,
        tcp_idle_timeout: Duration::from_secs(60),
        max_dialogs: 64,
        sip_message_bytes: 1 << 16,
        ..Default::default()
    };
    let mut dec = Decoder::new(&limits, &[5060, 5080]);
    let mut src = FileSource::open(file).expect("libpcap opens the capture");
    let mut out: HashMap<Key, Vec<(Timestamp, Vec<u8>)>> = HashMap::new();
    while let Some(p) = src.next_packet().expect("capture reads to its end") {
        dec.decode(&p, &mut |pl| {
            if pl.transport != Transport::Udp || pl.data.len() < 12 || pl.data[0] >> 6 != 2 {
                return;
            }
            let ssrc = u32::from_be_bytes(pl.data[8..12].try_into().unwrap());
            let key = (pl.src, pl.dst, ssrc);
            if wanted.contains(&key) {
                out.entry(key).or_default().push((pl.ts, pl.data.to_vec()));
            }
        });
    }
    out
}

/// One audio packet's samples as sox decoded them.
struct Piece {
    /// RTP-time offset from the leg's first packet, in samples.
    off: usize,
    /// Capture time, in samples from the leg's first packet.
    cap: i64,
    samples: Vec<i16>,
}

struct Checked {
    file: String,
    ssrc: u32,
    law: u8,
    packets: usize,
}

/// Records one leg on `leg`'s channel and compares it with the sox-decoded
/// payloads; returns nothing, panics with the first difference.
fn check_leg(
    dir: &Path,
    name: &str,
    t: &TsharkLeg,
    law: u8,
    offsets: &[usize],
    ours: &[(Timestamp, Vec<u8>)],
    leg: Leg,
) {
    let what = format!("{name} {} -> {} ssrc {:#010x}", t.src, t.dst, t.ssrc);
    // The same packets, in the same order, with the same payloads (our
    // RTP parser strips CSRCs, extensions and padding as tshark does).
    assert_eq!(
        ours.len(),
        t.packets.len(),
        "{what}: packet count differs from tshark's"
    );
    for (i, ((_, d), tp)) in ours.iter().zip(&t.packets).enumerate() {
        let p = RtpPacket::parse(d).unwrap_or_else(|e| panic!("{what}: packet {i}: {e}"));
        assert_eq!(
            (p.seq, p.ts, p.pt, p.payload),
            (tp.seq, tp.ts, tp.pt, &tp.payload[..]),
            "{what}: packet {i} parsed differently from tshark"
        );
    }

    // Independent expectation: sox decodes the audio payloads; whatever no
    // packet covers is silence, except after a comfort noise packet (RFC
    // 3389), where noise is synthesised up to the next audio packet:
    // those spans are checked for low-level noise, not sample by sample.
    let unique = t.unique();
    let audio: Vec<u8> = unique
        .iter()
        .filter(|p| p.pt != 13)
        .flat_map(|p| p.payload.iter().copied())
        .collect();
    let decoded = sox_decode(dir, law, &audio);
    assert_eq!(decoded.len(), audio.len(), "{what}: sox output length");
    let t0 = t.packets[0].time;
    let mut pieces: Vec<Piece> = Vec::new();
    // Per piece: a CN packet came before it (since the previous piece).
    let mut cn_before: Vec<bool> = Vec::new();
    let mut cn_pending = false;
    let mut at = 0usize;
    for (p, &off) in unique.iter().zip(offsets) {
        cn_pending |= p.pt == 13;
        if p.pt != 13 {
            cn_before.push(std::mem::take(&mut cn_pending));
            pieces.push(Piece {
                off,
                cap: ((p.time - t0) * 8000.0).round() as i64,
                samples: decoded[at..at + p.payload.len()].to_vec(),
            });
            at += p.payload.len();
        }
    }
    // Where the sender's RTP clock agrees with the capture clock (no packet
    // further ahead of its capture time than a delayed first packet may
    // be, none behind it by the playout delay, less the 20 ms granularity
    // of playout), RTP time alone places every sample, exactly.
    let agree = pieces.iter().all(|p| {
        let ahead = p.off as i64 - p.cap;
        ahead <= MAX_AHEAD && -ahead < PLAYOUT_DELAY - 160
    });

    // Ours: the recording starts at the leg's first packet, so that packet
    // anchors the timeline at sample 0; it ends 200 ms after the later of
    // the last capture and the last RTP sample, so the tail is checked too.
    let start = ours[0].0;
    let rtp_extent = pieces.last().map_or(0, |p| p.off + p.samples.len() + RING);
    let end = ours
        .last()
        .unwrap()
        .0
        .add_micros(20_000)
        .max(start.add_micros(rtp_extent as i64 * 125))
        .add_micros(200_000);
    let wav = dir.join(format!("{:08x}.wav", t.ssrc));
    let mut rec = CallRecorder::create(RecorderParams {
        path: wav.clone(),
        format: AudioFormat::Pcm16,
        channels: Channels::Stereo,
        start,
        telephone_event_pt: [None, None],
        sample_rate: 8000,
    })
    .unwrap();
    for (ts, d) in ours {
        rec.on_rtp(leg, *ts, d);
    }
    let summary = rec.finish(end).unwrap();
    let q = &summary.quality[leg as usize];
    assert_eq!(
        (
            q.packets,
            q.lost,
            q.duplicates,
            q.late,
            q.malformed,
            q.unknown_pt
        ),
        (
            unique.len() as u64,
            0,
            (t.packets.len() - unique.len()) as u64,
            0,
            0,
            0
        ),
        "{what}: quality counters {q:?}"
    );

    let frames = (end.since(start) / 125) as usize;
    let (got, header) = sox_channel(&wav, leg as usize + 1);
    assert_eq!(
        header,
        (2, 8000, frames as u64),
        "{what}: WAV header per sox"
    );
    assert_eq!(got.len(), frames, "{what}: samples read by sox");
    let mut expected = vec![0i16; frames];
    let mut places: Vec<usize> = Vec::new();
    let mut floor = 0usize;
    let mut shifts: Vec<(usize, i64)> = Vec::new();
    for (i, p) in pieces.iter().enumerate() {
        let n = p.samples.len();
        let place = if agree {
            p.off
        } else {
            // Re-anchored: the packet must still be there whole, in order
            // after the one before, and within the window around its
            // capture time that the jitter buffer holds (never more than
            // the playout delay behind it, never past the ring ahead).
            let lo = (p.cap - PLAYOUT_DELAY).max(floor as i64).max(0) as usize;
            let hi = (p.cap + RING as i64 - PLAYOUT_DELAY).max(0) as usize;
            (lo..=hi)
                .find(|&q| got.get(q..q + n) == Some(&p.samples[..]))
                .unwrap_or_else(|| {
                    panic!(
                        "{what}: audio packet {i} (RTP offset {}, captured at sample {}) is not in our recording whole within {lo}..={hi}",
                        p.off, p.cap
                    )
                })
        };
        assert!(place + n <= frames, "{what}: packet {i} past the end");
        expected[place..place + n].copy_from_slice(&p.samples);
        places.push(place);
        floor = place + n;
        let shift = place as i64 - p.off as i64;
        if shifts.last().is_none_or(|&(_, s)| s != shift) {
            shifts.push((i, shift));
        }
    }
    if !agree {
        eprintln!(
            "{what}: RTP clock disagrees with capture time; re-anchored at (packet, shift in samples vs RTP time) {shifts:?}"
        );
    }
    let noise = comfort_spans(&pieces, &places, &cn_before, cn_pending, frames);
    for &(a, b) in &noise {
        let span = &got[a..b];
        assert!(
            span.iter().all(|&s| s.unsigned_abs() < 4000) && span.iter().any(|&s| s != 0),
            "{what}: samples {a}..{b} after a comfort noise packet are not low-level noise"
        );
    }
    let in_noise = |i: usize| noise.iter().any(|&(a, b)| (a..b).contains(&i));
    let differs = |i: usize| got[i] != expected[i] && !in_noise(i);
    if let Some(i) = (0..frames).find(|&i| differs(i)) {
        let diffs = (0..frames).filter(|&i| differs(i)).count();
        let ctx = |v: &[i16]| v[i.saturating_sub(2)..(i + 6).min(v.len())].to_vec();
        panic!(
            "{what}: {diffs} of {frames} samples differ; first at {i} ({} ms): ours {:?}, sox {:?}",
            i / 8,
            ctx(&got),
            ctx(&expected)
        );
    }
    // Nothing of this leg on the other channel.
    let other = 2 - leg as usize;
    let (silent, _) = sox_channel(&wav, other);
    assert!(
        silent.iter().all(|&s| s == 0),
        "{what}: channel {other} is not silent"
    );
}

#[test]
fn loss_free_g711_legs_match_tshark_and_sox() {
    let Some(dir) = corpus() else { return };
    if !tool_present("tshark", "-v") || !tool_present("sox", "--version") {
        return;
    }
    let files = capture_files(&dir);
    let tmp = tempfile::tempdir().unwrap();
    let mut checked: Vec<Checked> = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let legs = tshark_legs(file);
        let mut chosen: Vec<(&TsharkLeg, u8, Vec<usize>)> = Vec::new();
        for l in &legs {
            match (l.law(), l.loss_free(), l.offsets()) {
                (Some(law), true, Some(off)) => chosen.push((l, law, off)),
                (Some(_), _, _) => eprintln!(
                    "{name}: G.711 leg {} -> {} ssrc {:#010x} has loss or irregular timestamps; not compared",
                    l.src, l.dst, l.ssrc
                ),
                _ => {}
            }
        }
        if chosen.is_empty() {
            continue;
        }
        let keys: Vec<Key> = chosen
            .iter()
            .map(|(l, _, _)| (l.src, l.dst, l.ssrc))
            .collect();
        let mut ours = our_datagrams(file, &keys);
        for (l, law, off) in &chosen {
            let d = ours.remove(&(l.src, l.dst, l.ssrc)).unwrap_or_else(|| {
                panic!(
                    "{name}: our decoder found no packets of {} -> {} ssrc {:#010x}",
                    l.src, l.dst, l.ssrc
                )
            });
            // Alternate the channel, so both sides of the mixer are covered.
            let leg = if checked.len().is_multiple_of(2) {
                Leg::Subscriber
            } else {
                Leg::Remote
            };
            check_leg(tmp.path(), &name, l, *law, off, &d, leg);
            eprintln!(
                "{name}: {} -> {} ssrc {:#010x} PT {law}: {} packets identical to tshark+sox",
                l.src,
                l.dst,
                l.ssrc,
                l.packets.len()
            );
            checked.push(Checked {
                file: name.clone(),
                ssrc: l.ssrc,
                law: *law,
                packets: l.packets.len(),
            });
        }
    }

    // The named captures of the issue are among those compared, both laws
    // are covered, and the corpus did not silently shrink to nothing.
    let has = |file: &str, ssrc: u32, law: u8, packets: usize| {
        checked
            .iter()
            .any(|c| c.file == file && c.ssrc == ssrc && c.law == law && c.packets == packets)
    };
    assert!(has("sipnab_sip-rtp-g711.pcap", 0x343d_a99b, 0, 425));
    assert!(has("sipnab_sip-rtp-g711.pcap", 0x343f_fa34, 8, 414));
    assert!(has("isa_real_sip_call.pcap", 0x577b_10e5, 8, 742));
    assert!(has("isa_real_sip_call.pcap", 0x6fbb_6264, 8, 744));
    assert!(checked.len() >= 15, "only {} legs compared", checked.len());
    let total: usize = checked.iter().map(|c| c.packets).sum();
    eprintln!("{} legs, {total} packets compared", checked.len());
}

/// The recording's spans that may hold synthesised comfort noise: from
/// the end of the audio before a CN packet to the next audio packet (or
/// the end, after a trailing one). Only spans longer than a packet.
fn comfort_spans(
    pieces: &[Piece],
    places: &[usize],
    cn_before: &[bool],
    trailing: bool,
    frames: usize,
) -> Vec<(usize, usize)> {
    let end_of = |i: usize| places[i] + pieces[i].samples.len();
    let mut spans: Vec<(usize, usize)> = (0..places.len())
        .filter(|&i| cn_before[i])
        .map(|i| (if i == 0 { 0 } else { end_of(i - 1) }, places[i]))
        .collect();
    if trailing && !places.is_empty() {
        spans.push((end_of(places.len() - 1), frames));
    }
    spans.retain(|&(a, b)| b > a + 160);
    spans
}
