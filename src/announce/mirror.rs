//! Mirror mode's announcements (`announce.mode = "inject"`): callrec sees
//! copies of the media and cannot change them, so it sends the prompt *as
//! the party's own stream*, ahead of it. For each flow in its prompt, the
//! first real packet seen (sequence number s, timestamp t, SSRC x) sets
//! the stream's clock; from then on, whenever real packet s+k is seen,
//! packets up to s+k+[`LEAD`] are sent at once with SSRC x, those sequence
//! numbers and the matching timestamps, carrying the prompt in the
//! stream's G.711. They reach the phone [`LEAD`] packet times before the
//! real ones, whose jitter buffer then drops the real packets as
//! duplicates (RFC 3550 section A.1: one packet per sequence number). The
//! frames are copies of the real frame (same Ethernet, IP and UDP headers)
//! with the RTP header and payload replaced, injected on
//! `announce.interface`.
//!
//! Which phones play it is measured, not assumed: `tests/phones_live.rs`.
//! The first packet of each stream (before any was seen) is heard as it
//! was sent: the prompt starts one packet time after the stream does.

use super::inline::{Cmd, InlineError, InlineHandle, InlineStats};
use super::outcome::Outcome;
use super::prompts::{G711, Prompt};
use super::rewrite::{FlowKey, fix_udp_checksum, parse};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

/// How many packets ahead of the real stream the prompt's packets are
/// sent. One (20 ms) did better than three with baresip in
/// `tests/phones_live.rs` (5 of 6 calls played against about half): a
/// burst of copies far ahead seems to upset its playout.
pub const LEAD: u16 = 1;

/// One flow carrying a clip in the sender's own stream (Sans-IO).
#[derive(Debug)]
pub struct OwnStream {
    clip: Prompt,
    party: usize,
    outcome: Option<Arc<Outcome>>,
    /// Sequence number and timestamp of the first real packet seen.
    base: Option<(u16, u32)>,
    /// Next sequence number to send.
    next: u16,
    pub done: bool,
    pub sent: u64,
}

impl OwnStream {
    pub fn new(clip: Prompt, party: usize, outcome: Option<Arc<Outcome>>) -> OwnStream {
        OwnStream {
            clip,
            party,
            outcome,
            base: None,
            next: 0,
            done: false,
            sent: 0,
        }
    }

    /// A real packet `ip` (IPv4/IPv6, from its IP header on) of this flow
    /// was seen at `now_us`: returns the IP packets to send now, each a
    /// copy of `ip` with the next sequence numbers, timestamps and prompt.
    pub fn on_real(&mut self, ip: &[u8], now_us: i64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let Some(p) = parse(ip) else { return out };
        let rtp = &ip[p.rtp..p.end];
        // Only plain RTP (no CSRC, extension or padding) is copied.
        if self.done || rtp.len() <= 12 || rtp[0] != 0x80 {
            return out;
        }
        let pt = rtp[1] & 0x7f;
        let Some(codec) = G711::from_payload_type(pt) else {
            if !matches!(pt, 13 | 72..=127) {
                self.done = true;
                if let Some(o) = &self.outcome {
                    o.fail(self.party, "the stream's codec is not G.711");
                }
            }
            return out;
        };
        let seq = u16::from_be_bytes([rtp[2], rtp[3]]);
        let ts = u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]);
        if self.base.is_none() {
            self.base = Some((seq, ts));
            self.next = seq.wrapping_add(1);
        }
        let (seq0, _) = self.base.unwrap_or((seq, ts));
        // Behind the real stream (our copies were lost): it already passed.
        if (seq.wrapping_sub(self.next) as i16) >= 0 {
            self.next = seq.wrapping_add(1);
        }
        let n = rtp.len() - 12;
        let bytes = self.clip.payload(codec);
        let last = seq.wrapping_add(LEAD);
        while (last.wrapping_sub(self.next) as i16) >= 0 {
            let k = usize::from(self.next.wrapping_sub(seq0));
            let offset = (k - 1) * n;
            if offset >= bytes.len() {
                self.done = true;
                break;
            }
            let mut pkt = ip.to_vec();
            let r = &mut pkt[p.rtp..p.end];
            r[1] &= 0x7f; // no marker
            r[2..4].copy_from_slice(&self.next.to_be_bytes());
            // The timestamp follows the latest real packet's (a sender's
            // clock may jump; a copy must match the packet it stands for).
            let ahead = u32::from(self.next.wrapping_sub(seq));
            r[4..8].copy_from_slice(&ts.wrapping_add(ahead * n as u32).to_be_bytes());
            let silence = codec.encode(0);
            for (i, b) in r[12..].iter_mut().enumerate() {
                *b = bytes.get(offset + i).copied().unwrap_or(silence);
            }
            fix_udp_checksum(&mut pkt, &p);
            out.push(pkt);
            self.next = self.next.wrapping_add(1);
            self.sent += 1;
            if let Some(o) = &self.outcome {
                o.sent_one(self.party, now_us);
            }
        }
        out
    }
}

/// Where the IP header starts in an Ethernet frame (after VLAN tags).
fn ip_offset(frame: &[u8]) -> Option<usize> {
    let mut at = 12;
    loop {
        let et = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
        match et {
            0x8100 | 0x88a8 => at += 4,
            0x0800 | 0x86dd => return Some(at + 2),
            _ => return None,
        }
    }
}

/// Opens the capture on `capture` and the injection on `inject` and starts
/// the mirror worker; the announcer talks to it as to the inline worker.
pub fn start(capture: &str, inject: &str) -> Result<InlineHandle, InlineError> {
    let err = |what: String| {
        move |e: pcap::Error| InlineError::Setup {
            what,
            reason: e.to_string(),
        }
    };
    let cap = pcap::Capture::from_device(capture)
        .map_err(err(format!("cannot capture on {capture}")))?
        .snaplen(2048)
        .promisc(true)
        .immediate_mode(true)
        .open()
        .map_err(err(format!("cannot capture on {capture}")))?
        .setnonblock()
        .map_err(err(format!("cannot capture on {capture}")))?;
    // Our own injected frames must not be taken for the real stream.
    let _ = cap.direction(pcap::Direction::In);
    let tx = super::sink::InjectSink::open(inject).map_err(|e| InlineError::Setup {
        what: format!("cannot inject on {inject}"),
        reason: e.to_string(),
    })?;
    let (handle, rx) = InlineHandle::detached();
    let stats = handle.stats.clone();
    std::thread::Builder::new()
        .name("mirror-announce".into())
        .spawn(move || Worker::new(cap, tx, stats).run(&rx))
        .map_err(|e| InlineError::Setup {
            what: "cannot start the mirror announcement thread".into(),
            reason: e.to_string(),
        })?;
    tracing::info!(
        capture,
        inject,
        "mirror announcements: prompts sent in the parties' own streams, ahead of them"
    );
    Ok(handle)
}

struct Worker {
    cap: pcap::Capture<pcap::Active>,
    tx: super::sink::InjectSink,
    stats: Arc<InlineStats>,
    flows: HashMap<FlowKey, (u64, OwnStream, Instant)>,
}

impl Worker {
    fn new(
        cap: pcap::Capture<pcap::Active>,
        tx: super::sink::InjectSink,
        stats: Arc<InlineStats>,
    ) -> Worker {
        let mut w = Worker {
            cap,
            tx,
            stats,
            flows: HashMap::new(),
        };
        w.refilter();
        w
    }

    fn run(mut self, rx: &Receiver<Cmd>) {
        loop {
            let cmd = if self.flows.is_empty() {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return,
                }
            };
            if let Some(c) = cmd {
                self.on_cmd(c);
            }
            if !self.flows.is_empty() && self.read() == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.release_finished();
        }
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Divert {
                call,
                flows,
                clip,
                outcome,
            } => {
                let until = Instant::now() + clip.duration() + Duration::from_millis(1500);
                for (k, party) in flows {
                    let s = OwnStream::new(clip.clone(), party, outcome.clone());
                    self.flows.insert(k, (call, s, until));
                }
                self.stats.flows_added.fetch_add(2, Ordering::Relaxed);
            }
            Cmd::Release { call, why } => {
                for (_, s, until) in self.flows.values_mut().filter(|f| f.0 == call) {
                    if let (false, Some(o)) = (s.done, &s.outcome) {
                        o.fail(s.party, why);
                    }
                    *until = Instant::now();
                }
            }
        }
        self.refilter();
    }

    /// Reads what the capture holds; returns how many frames.
    fn read(&mut self) -> usize {
        let mut n = 0;
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        while n < 256 {
            let frame = match self.cap.next_packet() {
                Ok(p) => p.data.to_vec(),
                Err(_) => break,
            };
            n += 1;
            let Some(at) = ip_offset(&frame) else {
                continue;
            };
            let Some(p) = parse(&frame[at..]) else {
                continue;
            };
            let Some((_, s, _)) = self.flows.get_mut(&p.key) else {
                continue;
            };
            self.stats.diverted.fetch_add(1, Ordering::Relaxed);
            for ip in s.on_real(&frame[at..], now_us) {
                let mut out = frame[..at].to_vec();
                out.extend_from_slice(&ip);
                match self.tx.send_frame(&out) {
                    Ok(()) => self.stats.rewritten.fetch_add(1, Ordering::Relaxed),
                    Err(_) => self.stats.nft_errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
        n
    }

    fn release_finished(&mut self) {
        let now = Instant::now();
        let before = self.flows.len();
        self.flows.retain(|k, (call, s, until)| {
            let keep = !s.done && *until > now;
            if !keep {
                if let (false, Some(o)) = (s.done, &s.outcome) {
                    o.fail(s.party, "the other party's RTP was not seen during the prompt");
                }
                tracing::info!(call = format_args!("{call:x}"), from = %k.src, to = %k.dst, sent = s.sent, finished = s.done, "mirror prompt flow ended");
            }
            keep
        });
        if self.flows.len() != before {
            self.stats
                .flows_released
                .fetch_add((before - self.flows.len()) as u64, Ordering::Relaxed);
            self.refilter();
        }
    }

    /// Captures only the flows in a prompt (nothing when there is none).
    fn refilter(&mut self) {
        let mut keys: Vec<&FlowKey> = self.flows.keys().collect();
        keys.sort();
        let expr = if keys.is_empty() {
            "less 1".to_owned()
        } else {
            let one = |k: &FlowKey| {
                format!(
                    "(src host {} and src port {} and dst host {} and dst port {})",
                    k.src.ip(),
                    k.src.port(),
                    k.dst.ip(),
                    k.dst.port()
                )
            };
            let all: Vec<String> = keys.into_iter().map(one).collect();
            format!("udp and ({})", all.join(" or "))
        };
        if let Err(e) = self.cap.filter(&expr, true) {
            tracing::warn!(error = %e, filter = %expr, "mirror announcements: cannot set the capture filter");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(seq: u16, ts: u32) -> Vec<u8> {
        let mut rtp = vec![0x80, 0x80, 0, 0, 0, 0, 0, 0, 0xca, 0xfe, 0xba, 0xbe];
        rtp[2..4].copy_from_slice(&seq.to_be_bytes());
        rtp[4..8].copy_from_slice(&ts.to_be_bytes());
        rtp.extend(std::iter::repeat_n(0x7f, 160));
        let b =
            etherparse::PacketBuilder::ipv4([192, 0, 2, 11], [192, 0, 2, 12], 64).udp(40000, 40002);
        let mut out = Vec::new();
        b.write(&mut out, &rtp).unwrap();
        out
    }

    #[test]
    fn prompt_goes_ahead_in_the_senders_own_stream() {
        let clip = Prompt::from_samples("t", (0..800).map(|i| i as i16 * 20).collect());
        let o = Arc::new(Outcome::new("inject", "own-stream"));
        let mut s = OwnStream::new(clip.clone(), 1, Some(o.clone()));
        let seq_of = |p: &Vec<u8>| u16::from_be_bytes([p[30], p[31]]);
        let first = s.on_real(&ip(65534, 1000), 5);
        assert_eq!(first.len(), usize::from(LEAD), "LEAD packets ahead at once");
        assert_eq!(seq_of(&first[0]), 65535, "the next sequence number");
        let ts = u32::from_be_bytes([first[0][32], first[0][33], first[0][34], first[0][35]]);
        assert_eq!(ts, 1000 + 160, "the next timestamp");
        assert_eq!(&first[0][36..40], &[0xca, 0xfe, 0xba, 0xbe], "same SSRC");
        assert_eq!(first[0][29] & 0x80, 0, "no marker");
        assert_eq!(&first[0][40..], &clip.payload(G711::Pcmu)[..160]);
        // Each real packet (a duplicate by then) brings one more, wrapping;
        // 800 samples = 5 packets, then nothing more.
        let mut seqs: Vec<u16> = first.iter().map(seq_of).collect();
        for (k, seq) in [65535u16, 0, 1, 2, 3, 4].into_iter().enumerate() {
            let more = s.on_real(&ip(seq, 1160 + 160 * k as u32), 6);
            seqs.extend(more.iter().map(seq_of));
        }
        assert_eq!(seqs, vec![65535, 0, 1, 2, 3]);
        assert!(s.done);
        assert_eq!(o.sent(1), 5);
        assert_eq!(o.placement(1), "own-stream");
    }

    #[test]
    fn vlan_frames_and_garbage() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x81, 0x00, 0, 5, 0x08, 0x00]);
        assert_eq!(ip_offset(&f), Some(18));
        assert_eq!(ip_offset(&[0u8; 13]), None);
        let clip = Prompt::from_samples("t", vec![0; 800]);
        let mut s = OwnStream::new(clip, 0, None);
        let good = ip(1, 1);
        for cut in 0..good.len() {
            let _ = s.on_real(&good[..cut], 0);
        }
    }
}
