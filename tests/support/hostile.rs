//! What the hostile-traffic tests (`tests/hostile_*.rs`) share: a
//! configuration with two contracts and announcements off (a recording
//! starts at the answer), captures written datagram by datagram or record
//! by record (cut records, odd record headers), one replay, and the
//! recordings read back by call with a per-block tone analysis.
#![allow(dead_code)]

use callrec::capture::LinkType;
use callrec::daemon::replay::{ReplayOptions, ReplayReport, replay};
use callrec::recording::wav::read_wav;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::Datagram;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// 2026-11-21T09:30:00+09:00, as in the other replay tests.
pub const T0: i64 = 1_795_221_000;

/// A stereo mobile contract (K-0001, line 0312340001: outbound calls
/// dialled 0077-26...) and a mono fixed one (K-0002, number 0612340002:
/// inbound calls), both delivering to `acme`, announcements off. `extra`
/// is appended (e.g. a `[limits]` section).
pub fn config_text(dir: &Path, extra: &str) -> String {
    format!(
        r#"
[general]
timezone = "+09:00"
[recording]
spool_dir = "{spool}"
[announce]
mode = "off"
[delivery]
allowed_networks = ["192.0.2.0/24"]
[[destination]]
name = "acme"
url = "sftp://rec@192.0.2.10:22/incoming"
identity = "/nonexistent/key"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5WY6hfGbgKdwr827M61Dy9fKgVJoLX3pwmoStKx7MO"
[[contract]]
id = "K-0001"
service = "mobile"
numbers = ["0312340001"]
guidance = 1
channels = "stereo"
destination = "acme"
[[contract]]
id = "K-0002"
service = "fixed"
numbers = ["0612340002"]
guidance = 1
channels = "mono"
destination = "acme"
{extra}
"#,
        spool = dir.join("spool").display(),
    )
}

pub fn config(dir: &Path, extra: &str) -> callrec::config::Config {
    callrec::config::load_str(&config_text(dir, extra), &dir.join("test.toml"))
        .expect("test config loads")
}

/// Writes the datagrams in the order given, each stamped with its own
/// time (which need not be in order).
pub fn write_datagrams(path: &Path, all: &[Datagram]) {
    let mut w = PcapWriter::create(path, LinkType::Ethernet).unwrap();
    for d in all {
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();
}

/// A classic pcap written record by record, header fields as given: for
/// records cut to a snap length and records with impossible headers.
pub struct RawPcap {
    w: std::io::BufWriter<std::fs::File>,
}

impl RawPcap {
    pub fn create(path: &Path, snaplen: u32) -> RawPcap {
        let mut w = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        w.write_all(&0xa1b2_c3d4u32.to_le_bytes()).unwrap();
        w.write_all(&2u16.to_le_bytes()).unwrap();
        w.write_all(&4u16.to_le_bytes()).unwrap();
        w.write_all(&[0; 8]).unwrap();
        w.write_all(&snaplen.to_le_bytes()).unwrap();
        w.write_all(&1u32.to_le_bytes()).unwrap(); // Ethernet
        RawPcap { w }
    }

    /// One record: `data` as captured, `orig_len` as on the wire.
    pub fn record(&mut self, secs: u32, usecs: u32, data: &[u8], orig_len: u32) {
        for v in [secs, usecs, data.len() as u32, orig_len] {
            self.w.write_all(&v.to_le_bytes()).unwrap();
        }
        self.w.write_all(data).unwrap();
    }

    /// A frame cut to `snaplen` bytes, as a capture with that snap length holds it.
    pub fn frame(&mut self, ts: callrec::time::Timestamp, frame: &[u8], snaplen: usize) {
        let us = ts.micros();
        let cut = &frame[..frame.len().min(snaplen)];
        self.record(
            us.div_euclid(1_000_000) as u32,
            us.rem_euclid(1_000_000) as u32,
            cut,
            frame.len() as u32,
        );
    }

    pub fn finish(mut self) {
        self.w.flush().unwrap();
    }
}

/// One recorded segment, read back.
pub struct Recording {
    pub call_id: String,
    pub meta: serde_json::Value,
    pub wav: PathBuf,
    pub bytes: Vec<u8>,
    /// Per channel (stereo: subscriber, remote).
    pub ch: Vec<Vec<i16>>,
}

impl Recording {
    pub fn duration_ms(&self) -> i64 {
        self.ch.first().map_or(0, |c| c.len() as i64 / 8)
    }
}

pub struct Run {
    pub report: ReplayReport,
    pub out: PathBuf,
    /// Sorted by Call-ID, then segment.
    pub recordings: Vec<Recording>,
    pub history: Vec<serde_json::Value>,
}

impl Run {
    pub fn recording(&self, call_id: &str) -> Option<&Recording> {
        self.recordings.iter().find(|r| r.call_id == call_id)
    }
    pub fn history_of(&self, call_id: &str) -> Option<&serde_json::Value> {
        self.history.iter().find(|h| h["call_id"] == call_id)
    }
}

/// Replays `captures` with `cfg` into `out`.
pub fn replay_into(cfg: callrec::config::Config, captures: &[PathBuf], out: &Path) -> Run {
    let opts = ReplayOptions {
        out: out.to_path_buf(),
        captures: captures.to_vec(),
        deliver: false,
        deliver_timeout: Duration::from_secs(1),
        shards: Some(2),
    };
    let report = replay(cfg, &opts).expect("replay runs");
    let mut recordings = Vec::new();
    let mut stack = vec![out.join("queue")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "json") {
                let meta: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                let wav = p.with_file_name(meta["audio"]["file"].as_str().unwrap());
                let w = read_wav(&wav).unwrap();
                recordings.push(Recording {
                    call_id: meta["call_id"].as_str().unwrap().to_owned(),
                    bytes: std::fs::read(&wav).unwrap(),
                    meta,
                    wav,
                    ch: w.samples,
                });
            }
        }
    }
    recordings.sort_by_key(|r| (r.call_id.clone(), r.meta["segment"]["index"].as_u64()));
    let history = std::fs::read_to_string(out.join("calls.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    Run {
        report,
        out: out.to_path_buf(),
        recordings,
        history,
    }
}

/// Writes `all` to `dir/NAME.pcap` and replays it with `cfg` into `dir/NAME`.
pub fn replay_datagrams(
    dir: &Path,
    name: &str,
    cfg: callrec::config::Config,
    all: &[Datagram],
) -> Run {
    let pcap = dir.join(format!("{name}.pcap"));
    write_datagrams(&pcap, all);
    replay_into(cfg, &[pcap], &dir.join(name))
}

/// Goertzel power of `hz` in `x`, divided by the squared length.
pub fn power(x: &[i16], hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / 8000.0;
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = v as f64 + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / (x.len().max(1) as f64).powi(2)
}

/// 20 ms blocks of `x` in which `hz` is clearly present (a tone at the
/// scenario's amplitude gives about 1.6e7 here; silence 0).
pub fn tone_blocks(x: &[i16], hz: f64) -> usize {
    x.chunks_exact(160).filter(|b| power(b, hz) > 1.0e6).count()
}

/// Milliseconds of `x` carrying `hz`.
pub fn tone_ms(x: &[i16], hz: f64) -> i64 {
    tone_blocks(x, hz) as i64 * 20
}

/// The Call-ID of a SIP datagram, if it is one.
pub fn call_id_of(d: &Datagram) -> Option<String> {
    let text = std::str::from_utf8(&d.payload).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Call-ID: "))
        .map(str::to_owned)
}

/// A small deterministic generator for picking points, lengths and bytes.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
