//! For live tests that read back what reached the wire: a namespace with
//! a veth pair, tcpdump on it, and reading back what reached the wire.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::SystemTime;

/// The network namespace, deleted on drop (also when the test fails).
pub struct Netns(pub String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

impl Netns {
    /// A namespace `<prefix><pid>` with the veth pair vA-vB, both ends up
    /// (None without root and CAP_NET_ADMIN).
    pub fn create(prefix: &str) -> Option<Netns> {
        let ns = Netns(format!("{prefix}{}", std::process::id()));
        let ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !ok(&["netns", "add", &ns.0]) {
            return None;
        }
        for args in [
            &["link", "add", "vA", "type", "veth", "peer", "name", "vB"][..],
            &["link", "set", "vA", "up"],
            &["link", "set", "vB", "up"],
            &["link", "set", "lo", "up"],
        ] {
            assert!(ok(&[&["-n", &ns.0][..], args].concat()), "ip {args:?}");
        }
        Some(ns)
    }

    /// `program` run inside the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }
}

/// Now, in µs since the epoch.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// `2026-11-21T09:30:00.123+00:00` → µs since the epoch (UTC only).
pub fn parse_utc(s: &str) -> i64 {
    let n = |a: usize, b: usize| s[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19);
    assert_eq!(&s[23..], "+00:00", "{s}");
    secs * 1_000_000 + n(20, 23) * 1000
}

/// One RTP packet as tcpdump saw it arrive on vB.
#[derive(Clone, Copy, Debug)]
pub struct WirePkt {
    /// Arrival, µs since the epoch (the kernel's timestamp).
    pub at: i64,
    /// 0: the subscriber's voice (sent to B), 1: the remote party's.
    pub leg: usize,
    pub rtp_ts: u32,
    pub seq: u16,
}

/// Each call's RTP as it reached vB, by the call's RTP port (10000 + 2n
/// on both legs, as `CallSpec::simple` makes them).
pub fn wire_rtp(pcap_path: &Path, calls: u32) -> BTreeMap<u32, Vec<WirePkt>> {
    let mut cap = pcap::Capture::from_file(pcap_path).unwrap();
    let mut out: BTreeMap<u32, Vec<WirePkt>> = BTreeMap::new();
    while let Ok(p) = cap.next_packet() {
        let ts = p.header.ts.tv_sec * 1_000_000 + p.header.ts.tv_usec;
        let Ok(h) = etherparse::SlicedPacket::from_ethernet(p.data) else {
            continue;
        };
        if let Some(etherparse::TransportSlice::Udp(u)) = h.transport {
            let port = u.destination_port();
            let rtp = u.payload();
            if (10_002..=10_000 + 2 * calls as u16).contains(&port)
                && port % 2 == 0
                && rtp.len() >= 12
            {
                let to_b = matches!(&h.net, Some(etherparse::NetSlice::Ipv4(ip)) if ip.header().destination()[0] == 198);
                out.entry(((port - 10_000) / 2) as u32)
                    .or_default()
                    .push(WirePkt {
                        at: ts,
                        leg: usize::from(!to_b),
                        rtp_ts: u32::from_be_bytes(rtp[4..8].try_into().unwrap()),
                        seq: u16::from_be_bytes([rtp[2], rtp[3]]),
                    });
            }
        }
    }
    out
}

/// tcpdump on vB writing every UDP frame to `out`, once it listens.
pub fn tcpdump(ns: &Netns, out: &Path) -> Child {
    let mut c = ns
        .cmd("tcpdump")
        .args(["-i", "vB", "-n", "-U", "--time-stamp-precision=micro", "-w"])
        .arg(out)
        .arg("udp")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(c.stderr.take().unwrap());
    let mut said = String::new();
    let _ = std::io::BufRead::read_line(&mut err, &mut said);
    assert!(said.contains("listening"), "tcpdump did not start: {said}");
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    c
}
