//! Captures of calls in any codec, encoded by independent encoders the
//! test runs (Debian's ffmpeg and sox command lines; libbcg729 and
//! libvo-amrwbenc through `encoders.py`), and the recordings' tones.
//!
//! A stream is a list of RTP packets with their clock. ffmpeg's own RTP
//! muxer packetises where it can (G.722, G.726, Opus, L16, AMR
//! octet-aligned), sending to a UDP socket on the loopback that the test
//! reads; the rest are wrapped here (GSM, G.729, AMR bandwidth-efficient).
#![allow(dead_code)]

use callrec::capture::LinkType;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, Datagram};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const T0: i64 = 1_795_221_000;

/// One party's media: RTP packets as sent, and the SDP that describes them.
pub struct Stream {
    pub pt: u8,
    /// `a=rtpmap` value after the payload type, e.g. "G722/8000".
    pub rtpmap: String,
    pub fmtp: Option<String>,
    pub clock: u32,
    pub packets: Vec<Vec<u8>>,
}

/// Whether the encoders are installed; prints why a test is skipped.
pub fn tools_present() -> bool {
    for (tool, arg) in [
        ("ffmpeg", "-version"),
        ("sox", "--version"),
        ("python3", "--version"),
    ] {
        let ok = Command::new(tool)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("SKIP: {tool} not installed (scripts/setup.sh installs it)");
            return false;
        }
    }
    true
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("encoder runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `secs` of a sine at `hz` as raw signed 16-bit little-endian mono PCM
/// at `rate`, by sox, at half scale.
pub fn tone_raw(dir: &Path, hz: u32, rate: u32, secs: f64) -> PathBuf {
    let p = dir.join(format!("tone_{hz}_{rate}.raw"));
    run(Command::new("sox")
        .args([
            "-n",
            "-r",
            &rate.to_string(),
            "-b",
            "16",
            "-c",
            "1",
            "-e",
            "signed-integer",
            "-L",
        ])
        .arg(&p)
        .args([
            "synth",
            &secs.to_string(),
            "sine",
            &hz.to_string(),
            "vol",
            "0.5",
        ]));
    p
}

/// ffmpeg encodes (input args, codec args) and packetises into RTP.
pub fn ffmpeg_rtp(input: &[&str], codec: &[&str]) -> Stream {
    ffmpeg_rtp_sized(input, codec, None)
}

/// [`ffmpeg_rtp`] with RTP packets of at most `pkt_size` bytes (for
/// stream codecs ffmpeg would otherwise send in 1 KiB chunks).
pub fn ffmpeg_rtp_sized(input: &[&str], codec: &[&str], pkt_size: Option<usize>) -> Stream {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    set_big_rcvbuf(&sock);
    sock.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let port = sock.local_addr().unwrap().port();
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(input)
        .args(codec)
        // One frame per packet, as phones send (ffmpeg aggregates AMR
        // frames up to its default 0.7 s delay otherwise).
        .args(["-max_delay", "20000", "-f", "rtp"])
        .arg(match pkt_size {
            Some(n) => format!("rtp://127.0.0.1:{port}?pkt_size={n}"),
            None => format!("rtp://127.0.0.1:{port}"),
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ffmpeg runs");
    let mut packets = Vec::new();
    let mut buf = [0u8; 4096];
    // Until ffmpeg has exited and the socket has been quiet a while (a
    // loaded machine can take long to start it).
    let mut quiet_after_exit = 0;
    while quiet_after_exit < 2 {
        match sock.recv(&mut buf) {
            Ok(n) => packets.push(buf[..n].to_vec()),
            Err(_) if child.try_wait().unwrap().is_some() => quiet_after_exit += 1,
            Err(_) => {}
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sdp = String::from_utf8_lossy(&out.stdout).into_owned();
    let m = sdp
        .lines()
        .find(|l| l.starts_with("m=audio"))
        .expect("ffmpeg printed SDP");
    let pt: u8 = m.split_whitespace().nth(3).unwrap().parse().unwrap();
    let attr = |name: &str| {
        sdp.lines()
            .find_map(|l| l.strip_prefix(&format!("a={name}:{pt} ")))
            .map(|s| s.trim().to_owned())
    };
    let rtpmap = attr("rtpmap").unwrap_or_else(|| match pt {
        0 => "PCMU/8000".into(),
        8 => "PCMA/8000".into(),
        9 => "G722/8000".into(),
        _ => panic!("no rtpmap for {pt}"),
    });
    let clock = rtpmap.split('/').nth(1).unwrap().parse().unwrap();
    // Loopback never reorders; a gap would be a dropped datagram.
    for w in packets.windows(2) {
        let s = |p: &[u8]| u16::from_be_bytes([p[2], p[3]]);
        assert_eq!(
            s(&w[1]),
            s(&w[0]).wrapping_add(1),
            "ffmpeg's RTP lost on the loopback"
        );
    }
    Stream {
        pt,
        rtpmap,
        fmtp: attr("fmtp"),
        clock,
        packets,
    }
}

fn set_big_rcvbuf(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 8 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt on an open socket with an int option.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &size as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        if r == 0 {
            break;
        }
    }
}

/// RTP packets around payloads, `step` timestamp units apart.
pub fn wrap(payloads: &[Vec<u8>], pt: u8, step: u32, ssrc: u32) -> Vec<Vec<u8>> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            callrec::media::rtp::build_rtp(
                pt,
                1000 + i as u16,
                5000 + step * i as u32,
                ssrc,
                i == 0,
                p,
            )
        })
        .collect()
}

/// The frames of an AMR / AMR-WB storage file (RFC 4867 section 5).
pub fn amr_frames(file: &[u8], wb: bool) -> Vec<Vec<u8>> {
    let magic: &[u8] = if wb { b"#!AMR-WB\n" } else { b"#!AMR\n" };
    assert!(file.starts_with(magic), "not an AMR storage file");
    let mut s = &file[magic.len()..];
    let mut out = Vec::new();
    while let Some(&h) = s.first() {
        let n = callrec::media::codecs::amr::frame_len(h, wb).min(s.len());
        out.push(s[..n].to_vec());
        s = &s[n..];
    }
    out
}

/// One storage frame as a bandwidth-efficient payload (RFC 4867 4.3):
/// CMR 15, one ToC entry, the frame's bits, zero padding.
pub fn amr_bandwidth_efficient(frame: &[u8], wb: bool) -> Vec<u8> {
    let h = frame[0];
    let bits_len = (callrec::media::codecs::amr::frame_len(h, wb) - 1) * 8;
    let mut bits: Vec<u8> = vec![1, 1, 1, 1, 0];
    for i in 0..4 {
        bits.push(h >> (6 - i) & 1);
    }
    bits.push(h >> 2 & 1);
    // Frame bits: only the codec's own count, not the storage padding.
    let nbits = frame_bits(h, wb).min(bits_len);
    for i in 0..nbits {
        bits.push(frame[1 + i / 8] >> (7 - i % 8) & 1);
    }
    bits.chunks(8)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |a, (i, &b)| a | b << (7 - i))
        })
        .collect()
}

fn frame_bits(h: u8, wb: bool) -> usize {
    let nb = [
        95, 103, 118, 134, 148, 159, 204, 244, 39, 43, 38, 37, 0, 0, 0, 0,
    ];
    let w = [
        132, 177, 253, 285, 317, 365, 397, 461, 477, 40, 0, 0, 0, 0, 0, 0,
    ];
    (if wb { w } else { nb })[(h >> 3 & 15) as usize]
}

/// Runs `tests/support/encoders.py KIND in out` and returns out's bytes.
pub fn ctypes_encode(dir: &Path, kind: &str, raw: &Path) -> Vec<u8> {
    let out = dir.join(format!("{kind}.bin"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/encoders.py");
    run(Command::new("python3")
        .arg(script)
        .arg(kind)
        .arg(raw)
        .arg(&out));
    std::fs::read(out).unwrap()
}

/// SDP media section for `s`, with `proto` and optional extra lines.
fn media_section(port: u16, proto: &str, s: &Stream, extra: &str) -> String {
    let mut m = format!(
        "m=audio {port} {proto} {} 101\r\na=rtpmap:{} {}\r\n",
        s.pt, s.pt, s.rtpmap
    );
    if let Some(f) = &s.fmtp {
        m.push_str(&format!("a=fmtp:{} {f}\r\n", s.pt));
    }
    m.push_str("a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n");
    m.push_str(extra);
    m.push_str("a=sendrecv\r\n");
    m
}

/// Replaces a SIP message's SDP media section and fixes Content-Length.
fn rewrite_sdp(msg: &[u8], section: impl Fn(u16) -> String) -> Vec<u8> {
    let t = String::from_utf8_lossy(msg).into_owned();
    let Some((head, body)) = t.split_once("\r\n\r\n") else {
        return msg.to_vec();
    };
    let Some(at) = body.find("m=audio") else {
        return msg.to_vec();
    };
    let port: u16 = body[at..]
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let body = format!("{}{}", &body[..at], section(port));
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

/// What to put in a call: each party's stream, SDP profile and extra
/// SDP lines (a=crypto), and the talk time.
pub struct CallMedia<'a> {
    pub a: &'a Stream,
    pub b: &'a Stream,
    pub proto: &'a str,
    pub a_extra: String,
    pub b_extra: String,
    pub talk_ms: u32,
}

/// An outbound call from the stereo contract line (A, the subscriber) to
/// a prefixed number (B), with the two streams as its media; returns the
/// datagrams and the call spec (for its SIP times).
pub fn call(m: &CallMedia<'_>) -> (Vec<Datagram>, CallSpec) {
    let c = CallSpec::simple(
        3,
        "0312340001",
        "0077260312349999",
        Timestamp::from_secs_micros(T0, 0),
        m.talk_ms,
    );
    let mut out: Vec<Datagram> = Vec::new();
    for d in c.datagrams() {
        if !d.payload.first().is_some_and(|b| b.is_ascii_alphabetic()) {
            continue;
        }
        let from_a = d.src == c.a_sip;
        let (s, extra) = if from_a {
            (m.a, &m.a_extra)
        } else {
            (m.b, &m.b_extra)
        };
        let payload = rewrite_sdp(&d.payload, |port| media_section(port, m.proto, s, extra));
        out.push(Datagram { payload, ..d });
    }
    let bye = c.bye_at().unwrap();
    for (s, src, dst) in [(m.a, c.a_rtp, c.b_rtp), (m.b, c.b_rtp, c.a_rtp)] {
        let ts0 = u32::from_be_bytes(s.packets[0][4..8].try_into().unwrap());
        for p in &s.packets {
            let ts = u32::from_be_bytes(p[4..8].try_into().unwrap());
            let us = ts.wrapping_sub(ts0) as i64 * 1_000_000 / s.clock as i64;
            let at = c.answer_at().add_micros(5_000 + us);
            if at < bye {
                out.push(Datagram {
                    ts: at,
                    src,
                    dst,
                    payload: p.clone(),
                });
            }
        }
    }
    out.sort_by_key(|d| d.ts);
    (out, c)
}

/// Writes datagrams as an Ethernet pcap.
pub fn write_pcap(path: &Path, dg: &[Datagram]) {
    let mut w = PcapWriter::create(path, LinkType::Ethernet).unwrap();
    for d in dg {
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();
}

/// Goertzel power of `hz` in `x` sampled at `rate`, normalised by length².
pub fn power(x: &[i16], hz: f64, rate: u32) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / rate as f64;
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = v as f64 + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / (x.len() as f64).powi(2)
}

/// Asserts `x` carries `hz` clearly above `other` (20 dB) and at a level
/// a listener hears (an amplitude of at least ~500 of 32767).
pub fn assert_tone(what: &str, x: &[i16], hz: f64, other: f64, rate: u32) {
    let p = power(x, hz, rate);
    let q = power(x, other, rate);
    assert!(p > 60_000.0, "{what}: no {hz} Hz tone (power {p:.0})");
    assert!(p > 100.0 * q, "{what}: {hz} Hz {p:.0} vs {other} Hz {q:.0}");
}
