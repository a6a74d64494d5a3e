//! The Prometheus endpoint (`daemon.metrics_listen`, meant for localhost
//! or a management network): `GET /metrics` answers, encoded by the
//! `prometheus-client` crate, in the OpenMetrics 1.0 text format when the
//! client's `Accept` asks for it (Prometheus does), else in the Prometheus
//! text format 0.0.4 (curl, `promtool check metrics`), as the official Go
//! client negotiates; any other path is 404, any other method 405. The
//! HTTP serving is [`super::http`]'s (hyper, on a thread of its own, off
//! the packet path).
//!
//! Every scrape builds a fresh registry from what the capture threads last
//! reported (once a second, [`CaptureStatus`]), the delivery workers'
//! [`DestStatus`] and the spool's running size, so nothing here is
//! updated per packet. Names and labels are the contract that
//! `dashboards/callrec.json` and `dashboards/callrec-alerts.yml` rely on
//! (`tests/metrics_live.rs` checks every name they use against a scrape).

use crate::announce::announcer::AnnounceStats;
use crate::daemon::run::{CaptureStatus, Shared, SourceStatus, ThreadStatus};
use crate::delivery::spool::SpoolUsage;
use crate::delivery::worker::DestStatus;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// The OpenMetrics media type (OpenMetrics 1.0, "Overall structure").
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format's media type (exposition formats, 0.0.4).
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// What a scrape reads.
#[derive(Clone)]
pub struct Sources {
    pub capture: Shared,
    pub destinations: Vec<Arc<DestStatus>>,
    pub usage: SpoolUsage,
    /// `recording.spool_warn_bytes` and `spool_max_bytes` (0 = none).
    pub spool_warn_bytes: u64,
    pub spool_max_bytes: u64,
    /// When the process started (for restart alerts: the watchdog's kills).
    pub started: SystemTime,
    /// The read-only HTTP API (`api.token`); None = off.
    pub api: Option<std::sync::Arc<crate::daemon::api::ApiConfig>>,
}

/// Binds `addr` and serves `/metrics` and the API (see [`super::http`]).
pub fn serve(addr: std::net::SocketAddr, src: Sources) -> std::io::Result<()> {
    crate::daemon::http::serve(addr, src)
}

/// The exposition text of one scrape at `now`.
pub fn render(src: &Sources, now: SystemTime) -> String {
    let caps = src
        .capture
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut reg = Registry::with_prefix("callrec");
    capture_families(&mut reg, &caps);
    hep_families(&mut reg);
    decision_families(&mut reg, &caps);
    announce_families(&mut reg, &caps);
    destination_families(&mut reg, &src.destinations, now);
    spool_families(&mut reg, src);
    process_families(&mut reg, src.started);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// The Prometheus text format 0.0.4 of an OpenMetrics exposition made of
/// counters and gauges: a counter family's HELP and TYPE name its samples
/// (`x_total`, where OpenMetrics names the family `x`), and there is no
/// `# EOF`. Everything else is the same text.
pub fn to_text_004(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut help: Option<&str> = None;
    for line in om.lines() {
        if line == "# EOF" {
            continue;
        }
        if line.starts_with("# HELP ") {
            help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            if let Some(h) = help.take() {
                let text = h.splitn(4, ' ').nth(3).unwrap_or("");
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn counter(reg: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
    let f = Family::<Labels, Counter>::default();
    for (l, v) in rows {
        f.get_or_create(&l).inc_by(v);
    }
    reg.register(name, help.trim_end_matches('.'), f);
}

/// A gauge of whole numbers (counts, bytes, 0/1 states).
fn gauge(reg: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, i64)>) {
    let f = Family::<Labels, Gauge>::default();
    for (l, v) in rows {
        f.get_or_create(&l).set(v);
    }
    reg.register(name, help.trim_end_matches('.'), f);
}

/// A gauge of seconds and other fractional values.
fn fgauge(reg: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, f64)>) {
    let f = Family::<Labels, FloatGauge>::default();
    for (l, v) in rows {
        f.get_or_create(&l).set(v);
    }
    reg.register(name, help.trim_end_matches('.'), f);
}

fn iface(c: &CaptureStatus) -> Labels {
    vec![("interface", c.interface.clone())]
}

/// Per engine, labelled with its interfaces joined by `+` (one
/// interface: its name): name (counters without `_total`), help, kind,
/// value.
type CapFamily = (&'static str, &'static str, bool, fn(&CaptureStatus) -> u64);

const CAPTURE: [CapFamily; 11] = [
    ("sip_messages", "SIP messages parsed.", true, |c| {
        c.sip_messages
    }),
    ("rtp_routed", "RTP packets of recorded calls.", true, |c| {
        c.rtp_routed
    }),
    (
        "rtp_foreign",
        "RTP to a recorded port from a foreign source, dropped.",
        true,
        |c| c.rtp_foreign,
    ),
    (
        "ring_dropped",
        "RTP lost because a shard ring was full.",
        true,
        |c| c.ring_dropped,
    ),
    (
        "undecodable_calls",
        "Recorded calls none of whose audio could be decoded (media-encrypted, codec-unsupported): nothing delivered.",
        true,
        |c| c.undecodable,
    ),
    (
        "clock_outliers",
        "Frames whose time stamp lay far from the capture's clock: placed by the clock, never used to expire calls.",
        true,
        |c| c.clock_outliers,
    ),
    (
        "invites_throttled",
        "INVITEs not followed: their source already had limits.early_dialogs_per_source unanswered dialogs (INVITE FLOOD).",
        true,
        |c| c.invites_throttled,
    ),
    (
        "sip_oversized",
        "SIP messages over limits.sip_message_bytes, dropped.",
        true,
        |c| c.sip_oversized,
    ),
    (
        "calls",
        "Calls seen (INVITEs decided by the policy).",
        true,
        |c| c.calls,
    ),
    (
        "recorded_calls",
        "Calls recorded, counted at their end.",
        true,
        |c| c.recorded,
    ),
    (
        "active_recorded_calls",
        "Recorded calls in progress.",
        false,
        |c| c.active_recorded,
    ),
];

/// Per interface (a capture thread's sources): name, help, kind, value.
type SourceFamily = (&'static str, &'static str, bool, fn(&SourceStatus) -> u64);

const SOURCES: [SourceFamily; 6] = [
    ("packets", "Frames captured.", true, |s| s.packets),
    (
        "pcap_dropped",
        "Frames the kernel capture ring had no room for (libpcap ps_drop).",
        true,
        |s| s.pcap_dropped,
    ),
    (
        "interface_dropped",
        "Frames the interface or its driver dropped (libpcap ps_ifdrop).",
        true,
        |s| s.if_dropped,
    ),
    (
        "truncated_frames",
        "Frames longer than capture.snaplen, cut (GRO/LRO on the capture interface?).",
        true,
        |s| s.truncated,
    ),
    (
        "capture_queue_dropped",
        "Frames the capture threads of capture.threads had no room for in their queues to the engine (capture.thread_queue).",
        true,
        |s| s.queue_dropped,
    ),
    (
        "capture_running",
        "1 while the interface is captured, 0 while it is being reopened or once capture stopped.",
        false,
        |s| s.running as u64,
    ),
];

/// Each interface's counters; a status without a list of sources (one
/// interface, in tests) stands for its single interface.
fn sources(caps: &[CaptureStatus]) -> Vec<SourceStatus> {
    let whole = |c: &CaptureStatus| SourceStatus {
        name: c.interface.clone(),
        running: c.running,
        packets: c.packets,
        pcap_dropped: c.pcap_dropped,
        if_dropped: c.if_dropped,
        truncated: c.truncated,
        queue_dropped: 0,
        error: c.error.clone(),
    };
    caps.iter()
        .flat_map(|c| match c.sources.is_empty() {
            true => vec![whole(c)],
            false => c.sources.clone(),
        })
        .collect()
}

fn capture_families(reg: &mut Registry, caps: &[CaptureStatus]) {
    let srcs = sources(caps);
    let label = |s: &SourceStatus| vec![("interface", s.name.clone())];
    for (name, help, is_counter, f) in SOURCES {
        if is_counter {
            counter(
                reg,
                name,
                help,
                srcs.iter().map(|s| (label(s), f(s))).collect(),
            );
        } else {
            let rows = srcs.iter().map(|s| (label(s), f(s) as i64)).collect();
            gauge(reg, name, help, rows);
        }
    }
    let threads: Vec<_> = caps.iter().flat_map(|c| c.threads.iter()).collect();
    let thread_label = |t: &ThreadStatus| {
        vec![
            ("interface", t.interface.clone()),
            ("thread", t.thread.to_string()),
        ]
    };
    if !threads.is_empty() {
        counter(
            reg,
            "capture_thread_packets",
            "Frames each capture thread of capture.threads read, per interface (how the kernel's flow hash spread them).",
            threads
                .iter()
                .map(|t| (thread_label(t), t.packets))
                .collect(),
        );
        counter(
            reg,
            "capture_thread_queue_dropped",
            "Frames each capture thread of capture.threads had no room for in its queue to the engine, per interface.",
            threads
                .iter()
                .map(|t| (thread_label(t), t.queue_dropped))
                .collect(),
        );
    }
    for (name, help, is_counter, f) in CAPTURE {
        if is_counter {
            counter(
                reg,
                name,
                help,
                caps.iter().map(|c| (iface(c), f(c))).collect(),
            );
        } else {
            let rows = caps.iter().map(|c| (iface(c), f(c) as i64)).collect();
            gauge(reg, name, help, rows);
        }
    }
}

/// `capture.hep_listen`'s counters (none without a HEP listener).
fn hep_families(reg: &mut Registry) {
    use crate::capture::hep::HepError;
    let Some(h) = crate::capture::hep_listen::published() else {
        return;
    };
    let one = |v: u64| vec![(Vec::new(), v)];
    counter(
        reg,
        "hep_packets",
        "HEP packets taken from capture agents (duplicates not included).",
        one(h.hep.packets),
    );
    counter(
        reg,
        "hep_bytes",
        "Bytes of those HEP packets.",
        one(h.hep.bytes),
    );
    counter(
        reg,
        "hep_duplicates",
        "HEP packets dropped as a second capture point's copy of a packet.",
        one(h.hep.duplicates),
    );
    counter(
        reg,
        "hep_unknown_chunks",
        "HEP chunks of unknown type, skipped.",
        one(h.hep.unknown_chunks),
    );
    let bad = HepError::ALL
        .iter()
        .map(|e| (vec![("reason", e.as_str().to_owned())], h.hep.bad(*e)));
    counter(
        reg,
        "hep_bad_packets",
        "HEP packets refused, by reason.",
        bad.collect(),
    );
    counter(
        reg,
        "hep_connections",
        "HEP TCP connections accepted.",
        one(h.connections),
    );
    counter(
        reg,
        "hep_connections_refused",
        "HEP TCP connections closed at once: over the limit.",
        one(h.connections_refused),
    );
    gauge(
        reg,
        "hep_open_connections",
        "HEP TCP connections open.",
        vec![(Vec::new(), h.open_connections as i64)],
    );
}

/// Final decisions (at each call's end, as the history has them).
fn decision_families(reg: &mut Registry, caps: &[CaptureStatus]) {
    let mut rows = Vec::new();
    for c in caps {
        let mut l = iface(c);
        l.extend([("decision", "record".into()), ("reason", String::new())]);
        rows.push((l, c.recorded));
        for (reason, n) in &c.skipped {
            let mut l = iface(c);
            l.extend([("decision", "skip".into()), ("reason", reason.clone())]);
            rows.push((l, *n));
        }
    }
    counter(
        reg,
        "call_decisions",
        "Calls by final decision (record, skip) and the history's reason.",
        rows,
    );
}

fn announce_families(reg: &mut Registry, caps: &[CaptureStatus]) {
    let stats = |c: &CaptureStatus| c.announce.clone().unwrap_or_default();
    let mut outcomes = Vec::new();
    for c in caps {
        let s = stats(c);
        for (outcome, n) in [("played", s.played), ("failed", s.failed)] {
            let mut l = iface(c);
            l.push(("outcome", outcome.into()));
            outcomes.push((l, n));
        }
    }
    counter(
        reg,
        "announcements",
        "Compliance announcements started (played) or not sent at all (failed).",
        outcomes,
    );
    type AnnField = (&'static str, &'static str, fn(&AnnounceStats) -> u64);
    const FIELDS: [AnnField; 3] = [
        (
            "announcement_packets",
            "Announcement RTP packets sent.",
            |s| s.packets,
        ),
        (
            "announcement_send_errors",
            "Announcement RTP packets that could not be sent.",
            |s| s.send_errors,
        ),
        ("beeps", "Pause and resume beeps started.", |s| s.beeps),
    ];
    for (name, help, f) in FIELDS {
        let rows = caps.iter().map(|c| (iface(c), f(&stats(c)))).collect();
        counter(reg, name, help, rows);
    }
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn destination_families(reg: &mut Registry, dests: &[Arc<DestStatus>], now: SystemTime) {
    let now_ms = (unix_secs(now) * 1000.0) as u64;
    let snaps: Vec<_> = dests.iter().map(|d| d.snapshot(now)).collect();
    let dest =
        |q: &crate::delivery::worker::StatusSnapshot| vec![("destination", q.destination.clone())];
    type Snap = crate::delivery::worker::StatusSnapshot;
    type DestGauge = (&'static str, &'static str, fn(&Snap) -> u64);
    const GAUGES: [DestGauge; 5] = [
        ("queue_ready", "Recordings waiting for delivery.", |q| {
            q.ready
        }),
        ("queue_inflight", "Recordings being uploaded.", |q| {
            q.inflight
        }),
        ("queue_held", "Recordings held for an operator.", |q| q.held),
        (
            "queue_quarantine",
            "Recordings quarantined (damaged).",
            |q| q.quarantine,
        ),
        (
            "destination_up",
            "1 while the destination's SFTP connection works, 0 while it backs off.",
            |q| q.connected as u64,
        ),
    ];
    for (name, help, f) in GAUGES {
        let rows = snaps.iter().map(|q| (dest(q), f(q) as i64)).collect();
        gauge(reg, name, help, rows);
    }
    let oldest = |q: &Snap| {
        q.oldest_ready_unix_ms
            .map_or(0.0, |ms| now_ms.saturating_sub(ms) as f64 / 1000.0)
    };
    fgauge(
        reg,
        "queue_oldest_age_seconds",
        "Age of the oldest recording waiting (0 when none).",
        snaps.iter().map(|q| (dest(q), oldest(q))).collect(),
    );
    fgauge(
        reg,
        "destination_backoff_seconds",
        "Current wait before the next connection attempt (0 while up).",
        snaps
            .iter()
            .map(|q| (dest(q), q.backoff_ms as f64 / 1000.0))
            .collect(),
    );
    type DestCounter = (&'static str, &'static str, fn(&DestStatus) -> u64);
    const COUNTERS: [DestCounter; 3] = [
        ("delivered", "Recordings delivered.", |d| {
            d.delivered.load(Ordering::Relaxed)
        }),
        (
            "delivery_retries",
            "Connection attempts and uploads put back for a retry.",
            |d| d.retries.load(Ordering::Relaxed),
        ),
        (
            "delivery_failures",
            "Recordings held or quarantined.",
            |d| d.failed.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, f) in COUNTERS {
        let rows = dests
            .iter()
            .zip(&snaps)
            .map(|(d, q)| (dest(q), f(d)))
            .collect();
        counter(reg, name, help, rows);
    }
}

fn spool_families(reg: &mut Registry, src: &Sources) {
    let one = |v: u64| vec![(Labels::new(), v as i64)];
    gauge(
        reg,
        "spool_bytes",
        "Bytes of recordings in the spool (all queues), a running count.",
        one(src.usage.bytes()),
    );
    gauge(
        reg,
        "spool_warn_bytes",
        "recording.spool_warn_bytes: SPOOL ALARM above it (0 = none).",
        one(src.spool_warn_bytes),
    );
    gauge(
        reg,
        "spool_max_bytes",
        "recording.spool_max_bytes: new calls go unrecorded at it (0 = no limit).",
        one(src.spool_max_bytes),
    );
}

fn process_families(reg: &mut Registry, started: SystemTime) {
    let build = vec![
        ("version", env!("CARGO_PKG_VERSION").to_owned()),
        ("rust_version", env!("CARGO_PKG_RUST_VERSION").to_owned()),
    ];
    gauge(
        reg,
        "build_info",
        "Always 1; the labels say which build runs.",
        vec![(build, 1)],
    );
    fgauge(
        reg,
        "start_time_seconds",
        "When this process started, seconds since the Unix epoch.",
        vec![(Labels::new(), unix_secs(started))],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_announcements_and_spool_limits_are_exposed() {
        let cap = CaptureStatus {
            interface: "eth1".into(),
            running: true,
            recorded: 3,
            if_dropped: 4,
            skipped: [("no-prefix".to_owned(), 2), ("overload".to_owned(), 1)].into(),
            announce: Some(AnnounceStats {
                played: 3,
                failed: 1,
                ..AnnounceStats::default()
            }),
            ..CaptureStatus::default()
        };
        let src = Sources {
            capture: Arc::new(std::sync::Mutex::new(vec![cap])),
            destinations: Vec::new(),
            usage: SpoolUsage::starting_at(1234),
            spool_warn_bytes: 8_000,
            spool_max_bytes: 10_000,
            started: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100),
            api: None,
        };
        let text = to_text_004(&render(&src, SystemTime::now()));
        for want in [
            "callrec_call_decisions_total{interface=\"eth1\",decision=\"record\",reason=\"\"} 3",
            "callrec_call_decisions_total{interface=\"eth1\",decision=\"skip\",reason=\"no-prefix\"} 2",
            "callrec_call_decisions_total{interface=\"eth1\",decision=\"skip\",reason=\"overload\"} 1",
            "callrec_announcements_total{interface=\"eth1\",outcome=\"played\"} 3",
            "callrec_announcements_total{interface=\"eth1\",outcome=\"failed\"} 1",
            "callrec_interface_dropped_total{interface=\"eth1\"} 4",
            "callrec_capture_running{interface=\"eth1\"} 1",
            "\ncallrec_spool_bytes 1234\n",
            "\ncallrec_spool_warn_bytes 8000\n",
            "\ncallrec_spool_max_bytes 10000\n",
            "\ncallrec_start_time_seconds 100",
            "# TYPE callrec_call_decisions_total counter",
        ] {
            assert!(text.contains(want), "{want} not in:\n{text}");
        }
    }

    #[test]
    fn counters_are_named_by_their_samples_in_text_004() {
        let om = "# HELP callrec_packets Frames captured.\n# TYPE callrec_packets counter\n\
                  callrec_packets_total{interface=\"lo\"} 3\n\
                  # HELP callrec_spool_bytes Bytes.\n# TYPE callrec_spool_bytes gauge\n\
                  callrec_spool_bytes 7\n# EOF\n";
        assert_eq!(
            to_text_004(om),
            "# HELP callrec_packets_total Frames captured.\n# TYPE callrec_packets_total counter\n\
             callrec_packets_total{interface=\"lo\"} 3\n\
             # HELP callrec_spool_bytes Bytes.\n# TYPE callrec_spool_bytes gauge\n\
             callrec_spool_bytes 7\n"
        );
    }
}
