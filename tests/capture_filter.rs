//! The kernel filter of a live interface (`capture.filter`): by default
//! ("auto") it keeps what callrec decodes, plain, under one or two VLAN
//! tags and in tunnels, and keeps the rest (web traffic, TCP other than
//! SIP) out of the ring; "none" keeps every frame; an expression of the
//! operator's is applied as written. The daemon captures on `va` in a
//! namespace the test makes, tcpreplay sends on `vb`, and the frames the
//! daemon counted are read from `status`. Skips without root, iproute2 or
//! tcpreplay.

#[path = "support/config.rs"]
mod config_text;
#[path = "support/live.rs"]
mod live;
#[path = "support/netns.rs"]
mod netns;
#[path = "support/tools.rs"]
mod tools;
use callrec::capture::LinkType;
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{
    FrameOpts, PcapWriter, TcpFlags, Tunnel, tcp_frame_with, udp_fragments, udp_frame_with,
};
use live::wait_for;
use netns::Netns;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Frames of every kind, each with whether the "auto" filter keeps it.
fn frames() -> Vec<(bool, Vec<u8>)> {
    let (a, b) = (addr("192.0.2.1:20000"), addr("198.51.100.1:30000"));
    let vlan = |ids: &[u16]| FrameOpts {
        vlans: ids.to_vec(),
        ..FrameOpts::default()
    };
    let gre = FrameOpts {
        tunnel: Some(Tunnel::Gre {
            outer_src: "203.0.113.1".parse().unwrap(),
            outer_dst: "203.0.113.2".parse().unwrap(),
            key: None,
            seq: None,
            ethernet: false,
        }),
        ..FrameOpts::default()
    };
    let ipip = FrameOpts {
        tunnel: Some(Tunnel::IpIp {
            outer_src: "203.0.113.1".parse().unwrap(),
            outer_dst: "203.0.113.2".parse().unwrap(),
        }),
        ..FrameOpts::default()
    };
    let tcp = |dst: &str, o: &FrameOpts| {
        tcp_frame_with(
            addr("192.0.2.9:40000"),
            addr(dst),
            1,
            TcpFlags::default(),
            b"x",
            o,
        )
    };
    let mut out = Vec::new();
    for i in 0..5u16 {
        let payload = [i as u8; 172];
        out.push((true, udp_frame_with(a, b, &payload, &FrameOpts::default())));
        out.push((true, udp_frame_with(a, b, &payload, &vlan(&[100]))));
        out.push((true, udp_frame_with(a, b, &payload, &vlan(&[200, 100]))));
        out.push((true, udp_frame_with(a, b, &payload, &gre)));
        out.push((true, udp_frame_with(a, b, &payload, &ipip)));
        let v6 = FrameOpts {
            ip_id: u32::from(i) + 1,
            ..FrameOpts::default()
        };
        for f in udp_fragments(
            addr("[2001:db8::1]:5060"),
            addr("[2001:db8::2]:5060"),
            &[b'S'; 600],
            2,
            &v6,
        ) {
            out.push((true, f));
        }
        out.push((true, tcp("198.51.100.2:5060", &FrameOpts::default())));
        out.push((false, tcp("198.51.100.2:80", &FrameOpts::default())));
        out.push((false, tcp("198.51.100.2:443", &vlan(&[100]))));
    }
    out
}

fn write(path: &Path, frames: &[(bool, Vec<u8>)]) {
    let mut w = PcapWriter::create(path, LinkType::Ethernet).unwrap();
    let t0 = Timestamp::from_secs_micros(1_795_221_000, 0);
    for (i, (_, f)) in frames.iter().enumerate() {
        w.write(t0.add_micros(i as i64 * 1000), f).unwrap();
    }
    w.finish().unwrap();
}

/// Starts a daemon on `va` with `filter_line`, sends the frames on `vb`,
/// and returns the frames it counted on `va`.
fn counted(ns: &Netns, dir: &Path, filter_line: &str, pcap: &Path) -> u64 {
    let sock = dir.join("control.sock");
    let cfg = dir.join("callrec.toml");
    let text = format!(
        "[capture]\ninterfaces = [\"va\"]\n{filter_line}\n[recording]\nspool_dir = \"{}\"\n[announce]\nmode = \"off\"\n[daemon]\ncontrol_socket = \"{}\"\n{}{}",
        dir.join("spool").display(),
        sock.display(),
        config_text::ACME_UNREACHED,
        config_text::K0001_STEREO
    );
    std::fs::write(&cfg, text).unwrap();
    let mut d = ns
        .cmd(env!("CARGO_BIN_EXE_callrec"))
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || sock.exists()),
        "control socket up"
    );
    ns.replay(pcap);
    // Counters reach the control socket once a second: wait until steady.
    let read = || {
        let st = callrec::daemon::control::query(&sock, "status").unwrap_or_default();
        st.lines()
            .find(|l| l.starts_with("capture va:"))
            .and_then(|l| l.split("packets ").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut last = u64::MAX;
    let mut n = 0;
    assert!(wait_for(Duration::from_secs(10), || {
        std::thread::sleep(Duration::from_millis(1200));
        n = read();
        let steady = n == last && n > 0;
        last = n;
        steady
    }));
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &d.id().to_string()])
        .status();
    let _ = d.wait();
    let _ = std::fs::remove_dir_all(dir.join("spool"));
    n
}

#[test]
fn the_kernel_filter_keeps_what_callrec_decodes_and_nothing_else() {
    let tag = "capture_filter";
    if !tools::tool_present("tcpreplay", "--version") {
        eprintln!("SKIP {tag}: tcpreplay is not installed");
        return;
    }
    let Some(ns) = Netns::new("cflt") else { return };
    let dir = tempfile::tempdir().unwrap();
    let all = frames();
    let pcap = dir.path().join("frames.pcap");
    write(&pcap, &all);
    let kept = all.iter().filter(|f| f.0).count() as u64;
    let total = all.len() as u64;
    // The default: "auto".
    assert_eq!(
        counted(&ns, dir.path(), "", &pcap),
        kept,
        "auto keeps {kept} of {total}"
    );
    assert_eq!(
        counted(&ns, dir.path(), "filter = \"none\"", &pcap),
        total,
        "none keeps all"
    );
    // An operator's own expression, applied as written.
    let web = counted(&ns, dir.path(), "filter = \"tcp port 80\"", &pcap);
    assert_eq!(web, 5, "only the five frames to port 80");
}

/// TPACKET_V3 blocks (`capture.block_timeout`): frames reach the daemon
/// in blocks, and the last, partly filled block is handed over by its
/// timeout once the link falls silent, so nothing waits for more traffic.
#[test]
fn blocks_hand_over_every_frame_on_a_link_that_falls_silent() {
    let tag = "capture_blocks";
    if !tools::tool_present("tcpreplay", "--version") {
        eprintln!("SKIP {tag}: tcpreplay is not installed");
        return;
    }
    let Some(ns) = Netns::new("cblk") else { return };
    let dir = tempfile::tempdir().unwrap();
    let all = frames();
    let pcap = dir.path().join("frames.pcap");
    write(&pcap, &all);
    let lines = "filter = \"none\"\nblock_timeout = \"5ms\"";
    assert_eq!(counted(&ns, dir.path(), lines, &pcap), all.len() as u64);
}
