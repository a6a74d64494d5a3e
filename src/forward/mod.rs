//! `callrec forward --config FILE`: the capture agent. Captures
//! `capture.interfaces` (a remote site's mirror port), decodes IP, UDP,
//! TCP and fragments like the daemon ([`crate::decode`]), and sends every
//! SIP message and RTP/RTCP packet as HEPv3 to the central appliance(s) in
//! `forward.to`, stamped with the capture time and `forward.capture_id`.
//! With several appliances the traffic is split by call ([`split`]).
//!
//! Threads: one capture thread per interface (decode, classify, route,
//! encode), one sender thread per appliance ([`sender`]) with its own
//! bounded disk buffer ([`buffer`], in `forward.buffer_dir/<n>`, each
//! `buffer_bytes / n`). SIGTERM and SIGINT stop it (what is queued is
//! sent or kept on disk for the next start); SIGHUP re-reads and checks
//! the configuration (a changed one takes effect at the next start).
//! systemd: `READY=1`, `STATUS=`, `STOPPING=1`.

pub mod buffer;
pub mod sender;
pub mod split;

use crate::capture::{LiveSource, PacketSource, Waker};
use crate::config::{Config, Forward, ForwardTransport};
use crate::daemon::systemd::Notifier;
use crate::history::hep::{HepPacket, encode};
use split::{Route, Splitter};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Packets queued per appliance between the capture and the sender
/// (past it they are dropped, counted: the sender is spilling to disk).
const QUEUE: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("{0}: the configuration has no [forward] section with `to`")]
    NoForward(String),
    #[error("capture.interfaces is empty: nothing to forward")]
    NoInterface,
    #[error(transparent)]
    Capture(#[from] crate::capture::CaptureError),
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// A capture failed (exit 1, for systemd to restart the agent).
    #[error("capture lost: {0}")]
    CaptureLost(String),
}

/// Counters of the capture side.
#[derive(Default)]
struct CaptureCounts {
    frames: std::sync::atomic::AtomicU64,
    forwarded: std::sync::atomic::AtomicU64,
    queue_full: std::sync::atomic::AtomicU64,
}

/// The HEP packet for one payload, with the auth key chunk (0x0e) when
/// configured; `None` when it would not fit HEP's 16-bit length.
pub fn hep_bytes(
    f: &Forward,
    p: &crate::decode::Payload<'_>,
    kind: split::Kind,
) -> Option<Vec<u8>> {
    let mut b = encode(&HepPacket {
        ts: p.ts,
        src: p.src,
        dst: p.dst,
        transport: match p.transport {
            crate::decode::Transport::Udp => 17,
            crate::decode::Transport::Tcp => 6,
        },
        proto: kind.hep_type(),
        node_id: f.capture_id,
        correlation: None,
        payload: p.data,
    })?;
    if let Some(k) = &f.auth_key {
        b.extend_from_slice(&[0, 0, 0, 0x0e]);
        b.extend_from_slice(&u16::try_from(k.len() + 6).ok()?.to_be_bytes());
        b.extend_from_slice(k.as_bytes());
        let n = u16::try_from(b.len()).ok()?;
        b[4..6].copy_from_slice(&n.to_be_bytes());
    }
    Some(b)
}

/// Runs the forwarder until SIGTERM/SIGINT.
pub fn run(cfg: Config, path: &Path) -> Result<(), ForwardError> {
    let f = cfg
        .forward
        .clone()
        .ok_or_else(|| ForwardError::NoForward(path.display().to_string()))?;
    if cfg.capture.interfaces.is_empty() {
        return Err(ForwardError::NoInterface);
    }
    let notifier = Notifier::from_env();
    let signals = crate::daemon::signals::Signals::default();
    crate::daemon::signals::watch(&signals, "checking the configuration")
        .map_err(|e| ForwardError::Io("signals".into(), e))?;
    let (stop, reload) = (signals.stop, signals.reload);
    // The daemon's options: the same kernel filter (capture.filter) and ring.
    let opts = crate::capture::LiveOptions::from_config(&cfg.capture);
    if cfg.capture.threads > 1 {
        // Its split follows each call's media from the SIP it saw, so one
        // thread sees both; several would each see a part.
        tracing::warn!(
            threads = cfg.capture.threads,
            "capture.threads is for `callrec run`: `callrec forward` reads each interface with one thread"
        );
    }
    let mut sources = Vec::new();
    for name in &cfg.capture.interfaces {
        sources.push(LiveSource::open_with(name, &opts)?);
    }
    let (queues, senders) = start_senders(&f, &stop)?;
    let counts = Arc::new(CaptureCounts::default());
    let cfg = Arc::new(cfg);
    let mut captures = Vec::new();
    let mut wakers = Vec::new();
    for src in sources {
        let waker = Arc::new(Waker::new().map_err(|e| ForwardError::Io("eventfd".into(), e))?);
        wakers.push(waker.clone());
        let (cfg, queues, stop, counts) =
            (cfg.clone(), queues.clone(), stop.clone(), counts.clone());
        captures.push(std::thread::spawn(move || {
            capture(src, &cfg, &queues, &stop, &waker, &counts)
        }));
    }
    drop(queues);
    let to: Vec<String> = f.to.iter().map(|a| a.to_string()).collect();
    tracing::info!(interfaces = %cfg.capture.interfaces.join(","), to = %to.join(","), capture_id = f.capture_id, "forwarding");
    notifier.notify(&format!("READY=1\nSTATUS=forwarding to {}", to.join(",")));
    supervise(&notifier, &stop, &reload, path, &senders, &counts);
    notifier.notify("STOPPING=1");
    for w in &wakers {
        w.wake();
    }
    let failed: Vec<String> = captures
        .into_iter()
        .filter_map(|c| {
            c.join()
                .unwrap_or_else(|_| Err("capture thread panicked".into()))
                .err()
        })
        .collect();
    for (_, t) in senders {
        let _ = t.join();
    }
    tracing::info!("forward stopped");
    match failed.is_empty() {
        true => Ok(()),
        false => Err(ForwardError::CaptureLost(failed.join("; "))),
    }
}

type SenderThread = (Arc<Mutex<sender::SenderStats>>, std::thread::JoinHandle<()>);
/// Each appliance's queue, and its sender thread.
type Senders = (Vec<SyncSender<Vec<u8>>>, Vec<SenderThread>);

fn start_senders(f: &Forward, stop: &Arc<AtomicBool>) -> Result<Senders, ForwardError> {
    let (mut queues, mut threads) = (Vec::new(), Vec::new());
    let n = f.to.len() as u64;
    for (i, addr) in f.to.iter().enumerate() {
        let buffer = match f.transport {
            ForwardTransport::Udp => None,
            ForwardTransport::Tcp => {
                let dir = f.buffer_dir.join(i.to_string());
                let b = buffer::DiskBuffer::open(&dir, f.buffer_bytes / n)
                    .map_err(|e| ForwardError::Io(dir.display().to_string(), e))?;
                Some(b)
            }
        };
        let s = sender::Sender::new(*addr, f.transport, buffer);
        let stats = s.stats.clone();
        let (tx, rx) = sync_channel(QUEUE);
        let stop = stop.clone();
        threads.push((stats, std::thread::spawn(move || s.run(rx, stop))));
        queues.push(tx);
    }
    Ok((queues, threads))
}

/// One interface: frames in, HEP packets to the senders' queues.
fn capture(
    mut src: LiveSource,
    cfg: &Config,
    queues: &[SyncSender<Vec<u8>>],
    stop: &AtomicBool,
    waker: &Waker,
    counts: &CaptureCounts,
) -> Result<(), String> {
    let Some(f) = &cfg.forward else {
        return Ok(());
    };
    let mut decoder = crate::decode::Decoder::new(&cfg.limits, &cfg.capture.sip_ports);
    let mut splitter = Splitter::new(queues.len());
    let ports = cfg.capture.sip_ports.clone();
    let send = |q: &SyncSender<Vec<u8>>, b: Vec<u8>| match q.try_send(b) {
        Ok(()) => counts.forwarded.fetch_add(1, Ordering::Relaxed),
        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
            counts.queue_full.fetch_add(1, Ordering::Relaxed)
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let pkt = match src.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => {
                src.wait(waker, Duration::from_millis(100));
                continue;
            }
            Err(e) => {
                tracing::error!(alarm = true, error = %e, "forward: capture failed; exiting 1 for systemd to restart it");
                stop.store(true, Ordering::Relaxed);
                return Err(e.to_string());
            }
        };
        counts.frames.fetch_add(1, Ordering::Relaxed);
        decoder.decode(&pkt, &mut |p| {
            let Some(kind) = split::classify(&ports, p.src, p.dst, p.data) else {
                return;
            };
            let Some(b) = hep_bytes(f, &p, kind) else {
                return;
            };
            match splitter.route(kind, p.src, p.dst, p.data, p.ts) {
                Route::One(i) => {
                    send(&queues[i], b);
                }
                Route::All => {
                    for q in queues {
                        send(q, b.clone());
                    }
                }
            }
        });
    }
    Ok(())
}

/// The main thread: signals, `STATUS=`, a log line every minute.
fn supervise(
    notifier: &Notifier,
    stop: &AtomicBool,
    reload: &AtomicBool,
    path: &Path,
    senders: &[SenderThread],
    counts: &CaptureCounts,
) {
    let mut last_log = Instant::now();
    let mut last_status = String::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if reload.swap(false, Ordering::Relaxed) {
            match crate::config::load(path) {
                Ok(_) => tracing::warn!(
                    "SIGHUP: the configuration is valid; callrec forward applies changes at its next start"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: the configuration is invalid; running on")
                }
            }
        }
        let st: Vec<sender::SenderStats> = senders
            .iter()
            .map(|(s, _)| *s.lock().unwrap_or_else(|e| e.into_inner()))
            .collect();
        let status = st
            .iter()
            .map(|s| {
                let up = if s.connected { "up" } else { "down" };
                format!(
                    "{up}, sent {}, buffered {} B, dropped {}",
                    s.sent, s.buffer.bytes, s.buffer.dropped
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        if status != last_status {
            notifier.notify(&format!("STATUS={status}"));
            last_status = status;
        }
        if last_log.elapsed() >= Duration::from_secs(60) {
            last_log = Instant::now();
            tracing::info!(
                frames = counts.frames.load(Ordering::Relaxed),
                forwarded = counts.forwarded.load(Ordering::Relaxed),
                queue_full = counts.queue_full.load(Ordering::Relaxed),
                "forward: {last_status}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::hep::{HepDecoder, HepPolicy};
    use crate::decode::{Payload, Transport};
    use crate::time::Timestamp;

    #[test]
    fn what_the_forwarder_sends_the_hep_source_turns_back_into_the_packet() {
        let f = Forward {
            to: vec!["127.0.0.1:9060".parse().unwrap()],
            transport: ForwardTransport::Tcp,
            capture_id: 77,
            auth_key: Some("k3y".into()),
            buffer_dir: "/nonexistent".into(),
            buffer_bytes: 1 << 20,
        };
        let rtcp = [0x81, 200, 0, 6, 1, 2, 3, 4, 0, 0, 0, 0];
        let cases: [(&[u8], Transport, split::Kind); 3] = [
            (
                b"BYE sip:a@192.0.2.1 SIP/2.0\r\nCall-ID: f\r\n\r\n",
                Transport::Tcp,
                split::Kind::Sip,
            ),
            (
                &[0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 9, 0xff, 0x7f],
                Transport::Udp,
                split::Kind::Rtp,
            ),
            (&rtcp, Transport::Udp, split::Kind::Rtcp),
        ];
        let mut d = HepDecoder::new(HepPolicy {
            capture_ids: vec![77],
            auth_key: Some("k3y".into()),
        });
        for (data, transport, kind) in cases {
            let p = Payload {
                ts: Timestamp::from_secs_micros(1_795_221_000, 123_456),
                packet_index: 1,
                transport,
                src: "192.0.2.1:5060".parse().unwrap(),
                dst: "198.51.100.2:5062".parse().unwrap(),
                data,
                l2: None,
            };
            let b = hep_bytes(&f, &p, kind).unwrap();
            let out = d.decode(&b, Timestamp::ZERO).unwrap().unwrap();
            assert_eq!(out.packet.ts, p.ts);
            assert_eq!(out.capture_point, "hep:77");
            assert!(out.packet.data.ends_with(data), "{kind:?}");
        }
    }
}
