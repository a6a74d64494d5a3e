//! What operators read: the effective configuration (`callrec check-config`)
//! and the call history (`callrec calls`).
//!
//! The history is `SPOOL/calls.jsonl`, one JSON object per call, answered
//! from its index (`calls.rs`, `history::index`). Fields may be missing or
//! null (older writers, calls still open); a line that is not a JSON object
//! is reported with its line number rather than crashing or being silently
//! dropped. Times are compared as instants, so `--since` in `Z` and rows in
//! `+09:00` agree.

mod calls;
mod segments;
pub use calls::*;
pub use segments::*;

use std::fmt::Write as _;
use std::time::Duration;

use crate::calls::numbering;
use crate::config::{AnnounceMode, Channels, Config, SegmentPolicy};

/// `capture.hep_listen` and `[forward]` lines (keys are never printed).
fn sources_report(o: &mut String, cfg: &Config) {
    let h = &cfg.capture.hep;
    if !h.listen.is_empty() {
        let a: Vec<String> = h.listen.iter().map(|a| a.to_string()).collect();
        let ids: Vec<String> = h.capture_ids.iter().map(|i| i.to_string()).collect();
        let _ = writeln!(
            o,
            "              HEPv3 on {} (UDP and TCP); capture ids {}; auth key {}",
            a.join(", "),
            if ids.is_empty() {
                "any".into()
            } else {
                ids.join(", ")
            },
            if h.auth_key.is_some() {
                "required"
            } else {
                "none"
            }
        );
    }
    if let Some(f) = &cfg.forward {
        let _ = writeln!(
            o,
            "forward       HEPv3 over {} to {} as capture id {}; buffer {} bytes in {}",
            match f.transport {
                crate::config::ForwardTransport::Tcp => "TCP",
                crate::config::ForwardTransport::Udp => "UDP",
            },
            f.to.iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            f.capture_id,
            f.buffer_bytes,
            f.buffer_dir.display()
        );
    }
}

/// The effective configuration, as an operator wants to check it.
pub fn check_config_report(cfg: &Config) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "configuration {}: OK", cfg.source.display());
    let _ = writeln!(
        o,
        "timezone      {}",
        fmt_offset(cfg.general.utc_offset_secs)
    );
    let ifs = if cfg.capture.interfaces.is_empty() {
        "(none: replay only)".to_string()
    } else {
        cfg.capture.interfaces.join(", ")
    };
    let ports: Vec<String> = cfg
        .capture
        .sip_ports
        .iter()
        .map(|p| p.to_string())
        .collect();
    let _ = writeln!(
        o,
        "capture       interfaces {ifs}; SIP ports {} (UDP and TCP)",
        ports.join(", ")
    );
    let c = &cfg.capture;
    let filter = match &c.filter {
        None => "none (every arriving frame)".to_owned(),
        Some(f) if *f == crate::config::Capture::auto_filter(&c.sip_ports) => {
            "auto (UDP, SIP over TCP, fragments, tunnels; VLAN, PPPoE)".to_owned()
        }
        Some(f) => f.clone(),
    };
    let mode = match c.block_timeout.is_zero() {
        true => "immediate (TPACKET_V2)".to_owned(),
        false => format!(
            "blocks of up to {} (TPACKET_V3)",
            humantime::format_duration(c.block_timeout)
        ),
    };
    let _ = writeln!(
        o,
        "              kernel filter {filter}; ring {} per {}, {mode}",
        fmt_bytes(u64::from(c.buffer_bytes)),
        if c.threads > 1 { "socket" } else { "interface" }
    );
    if c.threads > 1 {
        let _ = writeln!(
            o,
            "              {} capture threads per interface (PACKET_FANOUT), each with its own ring ({} per interface in all) and a queue of {} frames",
            c.threads,
            fmt_bytes(u64::from(c.buffer_bytes) * c.threads as u64),
            c.thread_queue
        );
        if c.block_timeout.is_zero() {
            let _ = writeln!(
                o,
                "warning       capture.threads in immediate mode: every frame wakes a capture thread and the engine's (about 18 µs of CPU a packet at 50,000 packets/s with two threads); set capture.block_timeout, e.g. \"1ms\""
            );
        }
    }
    sources_report(&mut o, cfg);
    let r = &cfg.recording;
    let _ = writeln!(
        o,
        "recording     spool {}, {} WAV, at most {} active calls, {} shards",
        r.spool_dir.display(),
        r.format.as_str(),
        r.max_active_calls,
        if r.shards == 0 {
            "auto".to_string()
        } else {
            r.shards.to_string()
        }
    );
    let _ = writeln!(
        o,
        "              rtp timeout {}, max call length {}, setup timeout {}, spool warn {}, spool max {}",
        fmt_duration(r.rtp_timeout),
        fmt_duration(r.max_call_length),
        fmt_duration(r.setup_timeout),
        fmt_bytes(r.spool_warn_bytes),
        fmt_bytes(r.spool_max_bytes)
    );
    let mode = cfg.announce.mode.as_str();
    let iface = cfg
        .announce
        .interface
        .as_deref()
        .map(|i| format!(" on {i}"))
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "announce      mode {mode}{iface}, prompts in {}",
        cfg.announce.dir.display()
    );
    if cfg.announce.mode == AnnounceMode::Inline {
        let i = &cfg.announce.inline;
        let _ = writeln!(
            o,
            "              NFQUEUE {}, mark {:#x}, nftables table {}{}",
            i.queue,
            i.mark,
            i.nft_table,
            if i.setup {
                ""
            } else {
                " (installed by the operator)"
            }
        );
    }
    if let Some(w) = cfg.announce.warning() {
        let _ = writeln!(o, "warning       {w}");
    }
    let prio = if cfg.overload.priority_numbers.is_empty() {
        "(none; Resource-Priority still counts)".to_string()
    } else {
        cfg.overload.priority_numbers.join(", ")
    };
    let _ = writeln!(o, "priority      {prio}");
    let d = &cfg.delivery;
    let nets: Vec<String> = d.allowed_networks.iter().map(|n| n.to_string()).collect();
    let _ = writeln!(
        o,
        "delivery      allowed networks {}; retry {}..{}, hold after {}, keep delivered {}, connect timeout {}, keepalive {}",
        if nets.is_empty() {
            "(none: every destination refused)".to_string()
        } else {
            nets.join(", ")
        },
        fmt_duration(d.retry_initial),
        fmt_duration(d.retry_max),
        fmt_duration(d.hold_after),
        fmt_duration(d.keep_delivered),
        fmt_duration(d.connect_timeout),
        fmt_duration(d.keepalive)
    );
    let l = &cfg.limits;
    let _ = writeln!(
        o,
        "limits        fragments {} / {}, TCP {} streams of {} / idle {}, {} dialogs, SIP message {}",
        fmt_bytes(l.fragment_bytes as u64),
        fmt_duration(l.fragment_timeout),
        l.tcp_streams,
        fmt_bytes(l.tcp_stream_bytes as u64),
        fmt_duration(l.tcp_idle_timeout),
        l.max_dialogs,
        fmt_bytes(l.sip_message_bytes as u64)
    );
    let _ = writeln!(
        o,
        "              {} unanswered dialogs, {} per source; capture clock tolerance {}",
        l.early_dialogs,
        l.early_dialogs_per_source,
        fmt_duration(l.clock_tolerance)
    );
    let metrics = cfg
        .daemon
        .metrics_listen
        .map(|a| a.to_string())
        .unwrap_or_else(|| "off".into());
    let _ = writeln!(
        o,
        "daemon        control socket {}, metrics {metrics}",
        cfg.daemon.control_socket.display()
    );

    let _ = writeln!(o, "\ndestinations ({})", cfg.destinations.len());
    for d in &cfg.destinations {
        let host = match d.host {
            std::net::IpAddr::V6(h) => format!("[{h}]"),
            h => h.to_string(),
        };
        let rate = d
            .max_rate
            .map(fmt_rate)
            .unwrap_or_else(|| "unlimited".into());
        let users: Vec<&str> = cfg
            .contracts
            .iter()
            .filter(|c| c.destination == d.name)
            .map(|c| c.id.as_str())
            .collect();
        let kind = d.host_key.split_whitespace().next().unwrap_or("?");
        let _ = writeln!(
            o,
            "  {}  sftp://{}@{host}:{}{}  rate {rate}  connections {}  identity {}  host key {kind} (pinned)  contracts: {}",
            d.name,
            d.user,
            d.port,
            d.remote_dir,
            d.connections,
            d.identity.display(),
            if users.is_empty() {
                "(none)".to_string()
            } else {
                users.join(", ")
            }
        );
    }

    let _ = writeln!(o, "\ncontracts ({})", cfg.contracts.len());
    for c in &cfg.contracts {
        let dtmf = match (&c.pause_dtmf, &c.resume_dtmf) {
            (Some(p), Some(r)) => format!("pause {p} / resume {r}"),
            _ => "no pause".into(),
        };
        let prompt = cfg.guidance_file(c.guidance);
        let missing = if cfg.announce.mode != AnnounceMode::Off && !prompt.exists() {
            " (MISSING)"
        } else {
            ""
        };
        let _ = writeln!(
            o,
            "  {}  {} (prefix {})  {}  segments {}  guidance {} {}{missing}  {dtmf}  -> {}",
            c.id,
            c.service.as_str(),
            c.service.prefix(),
            match c.channels {
                Channels::Mono => "mono",
                Channels::Stereo => "stereo",
            },
            match c.segments {
                SegmentPolicy::All => "all",
                SegmentPolicy::Longest => "longest",
            },
            c.guidance,
            prompt.display(),
            c.destination
        );
        for n in &c.numbers {
            let class = numbering::classify(n);
            let note = if class.records_inbound() {
                "outbound with prefix, inbound recorded"
            } else {
                "outbound with prefix only (inbound to 070/080/090 is not recorded)"
            };
            let line050 = if class == numbering::DestClass::IpPhone {
                "; cannot reach 0120/0800/0570"
            } else {
                ""
            };
            let _ = writeln!(o, "      {n}  {}: {note}{line050}", class.as_str());
        }
    }
    o
}

fn fmt_offset(secs: i32) -> String {
    let sign = if secs < 0 { '-' } else { '+' };
    let a = secs.unsigned_abs();
    format!("{sign}{:02}:{:02}", a / 3600, a / 60 % 60)
}

/// The largest whole unit: 600s -> "10m", 1500ms -> "1500ms".
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if s >= n && s.is_multiple_of(n) {
            return format!("{}{unit}", s / n);
        }
    }
    format!("{s}s")
}

/// Bytes per second as the bit rate operators configure: 2_500_000 -> "20Mbit/s".
pub fn fmt_rate(bytes_per_sec: u64) -> String {
    let bits = bytes_per_sec.saturating_mul(8);
    for (unit, n) in [
        ("Gbit", 1_000_000_000u64),
        ("Mbit", 1_000_000),
        ("kbit", 1000),
    ] {
        if bits >= n && bits.is_multiple_of(n) {
            return format!("{}{unit}/s", bits / n);
        }
    }
    format!("{bits}bit/s")
}

/// Bytes in the largest exact decimal or binary unit; 0 is "none".
pub fn fmt_bytes(b: u64) -> String {
    if b == 0 {
        return "none".into();
    }
    for (unit, n) in [
        ("GB", 1_000_000_000u64),
        ("GiB", 1 << 30),
        ("MB", 1_000_000),
        ("MiB", 1 << 20),
        ("kB", 1000),
        ("KiB", 1 << 10),
    ] {
        if b >= n && b.is_multiple_of(n) {
            return format!("{}{unit}", b / n);
        }
    }
    format!("{b}B")
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` to microseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let digits = &frac[..n.min(6)];
        micros = digits.parse::<i64>().ok()? * 10i64.pow(6 - digits.len() as u32);
        rest = &frac[n..];
    }
    let offset = crate::time::parse_offset(rest)? as i64;
    let days = days_from_civil(y, mo, d);
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) - offset) * 1_000_000 + micros)
}

/// Howard Hinnant's civil-to-days algorithm.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    #[test]
    fn rfc3339_round_trip() {
        let t = Timestamp::from_secs_micros(1_795_221_000, 123_000);
        for off in [9 * 3600, 0, -5 * 3600] {
            assert_eq!(parse_rfc3339(&t.rfc3339(off)), Some(t.micros()));
        }
        assert_eq!(
            parse_rfc3339("2026-11-21T00:30:00Z"),
            Some(1_795_221_000_000_000)
        );
        assert_eq!(parse_rfc3339("2026-13-21T00:30:00Z"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn units() {
        assert_eq!(fmt_duration(Duration::from_secs(600)), "10m");
        assert_eq!(fmt_duration(Duration::from_secs(7 * 86400)), "7d");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_bytes(2_500_000), "2500kB");
        assert_eq!(fmt_bytes(16 << 20), "16MiB");
    }

    #[test]
    fn check_config_shows_contracts_and_destinations() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/callrec.toml");
        let cfg = crate::config::load(&path).unwrap();
        let r = check_config_report(&cfg);
        for want in [
            "K-0001  mobile (prefix 007726)  stereo  segments all  guidance 2",
            "K-0002  fixed (prefix 007727)  mono  segments longest  guidance 4",
            "0312340001  geographic-0abj",
            "05011110001  ip-phone-050",
            "cannot reach 0120/0800/0570",
            "acme  sftp://rec@192.0.2.10:22/incoming  rate 20Mbit/s",
            "bravo  sftp://callrec@192.0.2.11:22/recordings  rate 500kbit/s",
            "pause *1 / resume *2",
            "priority      0312340099",
        ] {
            assert!(r.contains(want), "missing {want:?} in\n{r}");
        }
    }
}
