//! HEPv3 from capture agents over UDP and TCP (`capture.hep_listen`), as
//! a [`PacketSource`]: every listening address takes both, like heplify
//! and Kamailio's siptrace send either.
//!
//! Non-blocking throughout: [`HepListener::next_packet`] returns what is
//! there and `Ok(None)` when nothing is; a capture thread waits in
//! [`HepListener::wait`] on every descriptor and its [`Waker`] at once
//! (or polls [`HepListener::fds`] itself with other sources).
//!
//! TCP carries HEP packets back to back (the length field frames them).
//! Connections are limited to [`HepLimits::max_connections`] (one more is
//! accepted and closed at once, counted, unless the connection silent the
//! longest has been for [`IDLE_CLOSE`]: that one gives way); a packet longer than
//! [`HepLimits::max_packet`] or a stream that is not HEPv3 closes its
//! connection, as a byte stream cannot be resynchronised reliably.
//! Memory: at most `max_packet` + 64 KiB buffered per connection.
//!
//! Bad packets are counted per reason ([`HepError`]) and logged at warn
//! once per sender and reason per minute.

use super::hep::{HepDecoder, HepError, HepPolicy, HepStats, frame_len};
use super::{CaptureError, Packet, PacketSource, Waker};
use crate::time::Timestamp;
use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime};

/// Refused or duplicate packets read in a row before the thread turns its loop.
const MAX_REFUSED: u32 = 4096;
/// Silence after which a connection gives way to a new one at the limit.
const IDLE_CLOSE: Duration = Duration::from_secs(60);
/// Packets between two looks for new TCP connections on a busy listener.
const ACCEPT_EVERY: u32 = 1024;
/// Bytes read from a TCP connection at a time.
const READ_CHUNK: usize = 64 * 1024;
/// UDP receive buffer asked of the kernel per socket (bursts from many
/// agents; the kernel caps it at net.core.rmem_max).
const UDP_RCVBUF: libc::c_int = 8 << 20;
/// How often one sender's bad packets of one kind are logged.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Senders remembered for log rate limiting (then the memory starts over).
const LOG_SENDERS: usize = 4096;

/// Limits of a HEP listener.
#[derive(Clone, Copy, Debug)]
pub struct HepLimits {
    /// Open TCP connections at most.
    pub max_connections: usize,
    /// Longest HEP packet accepted on TCP, bytes (the field allows 65,535).
    pub max_packet: usize,
}

impl Default for HepLimits {
    fn default() -> Self {
        HepLimits {
            max_connections: 256,
            max_packet: super::hep::MAX_PACKET,
        }
    }
}

/// Counters for `status` and the `callrec_hep_*` metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HepListenerStats {
    pub hep: HepStats,
    /// TCP connections accepted since start.
    pub connections: u64,
    /// TCP connections open now.
    pub open_connections: u64,
    /// TCP connections closed at once: over `max_connections`.
    pub connections_refused: u64,
}

impl HepListenerStats {
    /// The `callrec status` line.
    pub fn status_line(&self) -> String {
        let bad: Vec<String> = HepError::ALL
            .iter()
            .filter(|e| self.hep.bad(**e) > 0)
            .map(|e| format!("{} {}", e.as_str(), self.hep.bad(*e)))
            .collect();
        format!(
            "hep: packets {}  bytes {}  duplicates {}  connections {} open {} refused {}  unknown chunks {}  bad: {}",
            self.hep.packets,
            self.hep.bytes,
            self.hep.duplicates,
            self.connections,
            self.open_connections,
            self.connections_refused,
            self.hep.unknown_chunks,
            if bad.is_empty() {
                "none".into()
            } else {
                bad.join(", ")
            }
        )
    }
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    buf: Vec<u8>,
    /// Start of unread bytes in `buf`.
    start: usize,
    /// When it last sent anything.
    last_data: Instant,
}

/// UDP sockets and TCP listeners on every `capture.hep_listen` address.
pub struct HepListener {
    name: String,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    conns: Vec<Conn>,
    limits: HepLimits,
    decoder: HepDecoder,
    dgram: Vec<u8>,
    /// Next UDP socket / connection to look at (fair turns).
    turn: usize,
    /// The last look found nothing to read.
    idle: bool,
    since_accept: u32,
    stats: HepListenerStats,
    logged: HashMap<(IpAddr, HepError), Instant>,
}

impl HepListener {
    /// Binds UDP and TCP on each address (`0` as a port is for tests:
    /// [`HepListener::local_addrs`] says what was bound).
    pub fn bind(
        addrs: &[SocketAddr],
        policy: HepPolicy,
        limits: HepLimits,
    ) -> Result<HepListener, CaptureError> {
        let err = |a: &SocketAddr, e: std::io::Error| CaptureError::Open {
            source_name: format!("hep_listen {a}"),
            reason: e.to_string(),
        };
        let (mut udp, mut tcp) = (Vec::new(), Vec::new());
        for a in addrs {
            let t = TcpListener::bind(a).map_err(|e| err(a, e))?;
            // Same port for UDP as TCP got (it matters with port 0).
            let u =
                UdpSocket::bind(t.local_addr().map_err(|e| err(a, e))?).map_err(|e| err(a, e))?;
            t.set_nonblocking(true).map_err(|e| err(a, e))?;
            u.set_nonblocking(true).map_err(|e| err(a, e))?;
            set_rcvbuf(&u);
            udp.push(u);
            tcp.push(t);
        }
        let name = addrs
            .iter()
            .map(|a| format!("hep:{a}"))
            .collect::<Vec<_>>()
            .join(",");
        Ok(HepListener {
            name,
            udp,
            tcp,
            conns: Vec::new(),
            limits,
            decoder: HepDecoder::new(policy),
            dgram: vec![0; 65_536],
            turn: 0,
            idle: true,
            since_accept: 0,
            stats: HepListenerStats::default(),
            logged: HashMap::new(),
        })
    }

    /// `capture.hep_listen` bound with its policy, when configured (a busy
    /// port fails the start, naming it).
    pub fn from_config(cfg: &crate::config::Config) -> Result<Option<HepListener>, CaptureError> {
        let h = &cfg.capture.hep;
        if h.listen.is_empty() {
            return Ok(None);
        }
        let policy = HepPolicy {
            capture_ids: h.capture_ids.clone(),
            auth_key: h.auth_key.clone(),
        };
        let l = HepListener::bind(&h.listen, policy, HepLimits::default())?;
        tracing::info!(listen = ?h.listen, "HEP capture listening (UDP and TCP)");
        Ok(Some(l))
    }

    /// The bound addresses (UDP and TCP share each).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|t| t.local_addr().ok())
            .collect()
    }

    pub fn stats(&self) -> HepListenerStats {
        HepListenerStats {
            hep: self.decoder.stats().clone(),
            open_connections: self.conns.len() as u64,
            ..self.stats.clone()
        }
    }

    /// Every descriptor to poll for readability.
    pub fn fds(&self) -> Vec<RawFd> {
        let u = self.udp.iter().map(|s| s.as_raw_fd());
        let t = self.tcp.iter().map(|s| s.as_raw_fd());
        u.chain(t)
            .chain(self.conns.iter().map(|c| c.stream.as_raw_fd()))
            .collect()
    }

    /// Waits up to `timeout` for a packet, a connection or a wake.
    pub fn wait(&self, waker: &Waker, timeout: Duration) {
        waker.wait_with(&self.fds(), timeout);
    }

    /// Finds the next HEP packet that makes a frame (the decoder keeps
    /// it); false when nothing is waiting.
    fn pump(&mut self) -> bool {
        // New connections are looked for when the last look found nothing
        // to read, or every ACCEPT_EVERY packets on a busy listener: not
        // an accept(2) per packet, and a flood cannot keep agents out.
        self.since_accept += 1;
        if self.idle || self.since_accept >= ACCEPT_EVERY {
            self.since_accept = 0;
            self.accept();
        }
        self.idle = !self.pump_once();
        !self.idle
    }

    /// One frame from the sockets in turn (round robin, so a flood on one
    /// cannot starve the others); false once each was found empty, or
    /// after [`MAX_REFUSED`] refused packets in a row (the thread then
    /// turns its loop: timers, control, heartbeat).
    fn pump_once(&mut self) -> bool {
        let (mut empty, mut refused) = (0, 0);
        loop {
            let n = self.udp.len() + self.conns.len();
            if n == 0 || empty >= n || refused >= MAX_REFUSED {
                return false;
            }
            let i = self.turn % n;
            let got = if i < self.udp.len() {
                self.udp_one(i)
            } else {
                self.tcp_one(i - self.udp.len())
            };
            self.turn = self.turn.wrapping_add(1);
            match got {
                Some(true) => return true,
                Some(false) => refused += 1,
                None => empty += 1,
            }
        }
    }

    /// One datagram: `None` when the socket is empty, else whether it made a frame.
    fn udp_one(&mut self, i: usize) -> Option<bool> {
        let (n, peer) = match self.udp[i].recv_from(&mut self.dgram) {
            Ok(v) => v,
            Err(_) => return None,
        };
        let r = self
            .decoder
            .decode(&self.dgram[..n], arrival())
            .map(|d| d.is_some());
        Some(self.outcome(r, peer.ip()))
    }

    /// One packet from connection `i`, reading more when it holds no whole one.
    fn tcp_one(&mut self, i: usize) -> Option<bool> {
        loop {
            let c = &mut self.conns[i];
            match frame_len(&c.buf[c.start..], self.limits.max_packet) {
                Some(Ok(len)) if c.buf.len() - c.start >= len => {
                    let (s, peer) = (c.start, c.peer.ip());
                    c.start += len;
                    let r = self
                        .decoder
                        .decode(&self.conns[i].buf[s..s + len], arrival());
                    let r = r.map(|d| d.is_some());
                    return Some(self.outcome(r, peer));
                }
                Some(Err(e)) => {
                    self.decoder.count_bad(e);
                    let peer = c.peer;
                    self.warn(peer.ip(), e);
                    tracing::warn!(peer = %peer, reason = e.as_str(), "HEP over TCP: closing the connection (the stream cannot be resynchronised)");
                    self.conns.swap_remove(i);
                    return None;
                }
                _ => {}
            }
            if !self.fill(i) {
                return None;
            }
        }
    }

    /// Reads more from connection `i`; false when nothing came (the
    /// connection may have been closed and removed).
    fn fill(&mut self, i: usize) -> bool {
        let c = &mut self.conns[i];
        if c.start > 0 {
            c.buf.drain(..c.start);
            c.start = 0;
        }
        let have = c.buf.len();
        c.buf.resize(have + READ_CHUNK, 0);
        let r = c.stream.read(&mut c.buf[have..]);
        match r {
            Ok(n) if n > 0 => {
                c.buf.truncate(have + n);
                c.last_data = Instant::now();
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                c.buf.truncate(have);
                false
            }
            _ => {
                // Closed (or failed): a packet cut short is counted.
                if have > 0 {
                    self.decoder.count_bad(HepError::Truncated);
                }
                tracing::debug!(peer = %c.peer, "HEP connection closed");
                self.conns.swap_remove(i);
                false
            }
        }
    }

    fn accept(&mut self) {
        for l in &self.tcp {
            while let Ok((stream, peer)) = l.accept() {
                self.stats.connections += 1;
                if self.conns.len() >= self.limits.max_connections {
                    make_room(&mut self.conns);
                }
                if self.conns.len() >= self.limits.max_connections
                    || stream.set_nonblocking(true).is_err()
                {
                    self.stats.connections_refused += 1;
                    tracing::warn!(peer = %peer, limit = self.limits.max_connections, "HEP over TCP: too many connections, closing this one");
                    continue;
                }
                tracing::info!(peer = %peer, "HEP connection");
                self.conns.push(Conn {
                    stream,
                    peer,
                    buf: Vec::new(),
                    start: 0,
                    last_data: Instant::now(),
                });
            }
        }
    }

    fn outcome(&mut self, r: Result<bool, HepError>, peer: IpAddr) -> bool {
        match r {
            Ok(made) => made,
            Err(e) => {
                self.warn(peer, e);
                false
            }
        }
    }

    /// Logs a refusal once per sender and reason per [`LOG_EVERY`].
    fn warn(&mut self, peer: IpAddr, e: HepError) {
        if self.logged.len() >= LOG_SENDERS {
            self.logged.clear();
        }
        let now = Instant::now();
        let due = self
            .logged
            .get(&(peer, e))
            .is_none_or(|t| now.duration_since(*t) >= LOG_EVERY);
        if due {
            self.logged.insert((peer, e), now);
            let total = self.decoder.stats().bad(e);
            tracing::warn!(peer = %peer, reason = e.as_str(), total, "HEP packet refused ({}); further ones from this sender are counted, logged once a minute", e.as_str());
        }
    }
}

/// The counters a daemon's HEP listener last published, for `status`
/// and the metrics (one listener per process).
static PUBLISHED: std::sync::Mutex<Option<HepListenerStats>> = std::sync::Mutex::new(None);

/// Publishes the listener's counters (its capture thread, once a second).
pub fn publish(stats: HepListenerStats) {
    *PUBLISHED.lock().unwrap_or_else(|e| e.into_inner()) = Some(stats);
}

/// What [`publish`] last stored; `None` without a HEP listener.
pub fn published() -> Option<HepListenerStats> {
    PUBLISHED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// At the connection limit, the connection silent the longest goes if it
/// has been silent for [`IDLE_CLOSE`]: a dead agent, or one that opens
/// connections and sends nothing, cannot keep a working one out.
fn make_room(conns: &mut Vec<Conn>) {
    let Some((i, c)) = conns.iter().enumerate().min_by_key(|(_, c)| c.last_data) else {
        return;
    };
    if c.last_data.elapsed() >= IDLE_CLOSE {
        tracing::warn!(peer = %c.peer, idle_s = c.last_data.elapsed().as_secs(), "HEP over TCP: at the connection limit, closing the connection silent the longest");
        conns.swap_remove(i);
    }
}

/// Wall time of arrival, for packets without a timestamp.
fn arrival() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(d.as_micros() as i64)
}

fn set_rcvbuf(u: &UdpSocket) {
    // SAFETY: passes a live c_int of the size given to our own socket.
    unsafe {
        libc::setsockopt(
            u.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&UDP_RCVBUF as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl PacketSource for HepListener {
    fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        Ok(self.pump().then(|| self.decoder.last().packet))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn next_packet_at_point(&mut self) -> Result<Option<(Packet<'_>, Option<&str>)>, CaptureError> {
        if !self.pump() {
            return Ok(None);
        }
        let d = self.decoder.last();
        Ok(Some((d.packet, Some(d.capture_point))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::hep::{HepPacket, encode};
    use std::io::Write;

    fn hep(node: u32, payload: &[u8]) -> Vec<u8> {
        encode(&HepPacket {
            ts: Timestamp::from_secs_micros(1_700_000_000, 0),
            src: "192.0.2.1:5060".parse().unwrap(),
            dst: "198.51.100.2:5060".parse().unwrap(),
            transport: 17,
            proto: 1,
            node_id: node,
            correlation: None,
            payload,
        })
        .unwrap()
    }

    fn drain(l: &mut HepListener, waker: &Waker, want: usize) -> Vec<(Vec<u8>, String)> {
        let mut got = Vec::new();
        let until = Instant::now() + Duration::from_secs(5);
        while got.len() < want && Instant::now() < until {
            match l.next_packet_at_point().unwrap() {
                Some((p, point)) => got.push((p.data.to_vec(), point.unwrap().to_owned())),
                None => l.wait(waker, Duration::from_millis(50)),
            }
        }
        got
    }

    #[test]
    fn udp_and_tcp_packets_become_frames_with_their_capture_point() {
        let mut l = HepListener::bind(
            &["127.0.0.1:0".parse().unwrap()],
            HepPolicy::default(),
            HepLimits::default(),
        )
        .unwrap();
        let addr = l.local_addrs()[0];
        let waker = Waker::new().unwrap();
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.send_to(&hep(3, b"INVITE one"), addr).unwrap();
        u.send_to(b"HEP3\x00\x03", addr).unwrap();
        let mut t = TcpStream::connect(addr).unwrap();
        let mut two = hep(4, b"INVITE two");
        two.extend_from_slice(&hep(4, b"INVITE three"));
        // Split mid-packet: framing must wait for the rest.
        t.write_all(&two[..10]).unwrap();
        t.flush().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        t.write_all(&two[10..]).unwrap();
        let got = drain(&mut l, &waker, 3);
        let points: Vec<&str> = got.iter().map(|g| g.1.as_str()).collect();
        assert_eq!(got.len(), 3, "{points:?}");
        assert!(points.contains(&"hep:3") && points.contains(&"hep:4"));
        assert!(got.iter().any(|g| g.0.ends_with(b"INVITE three")));
        let st = l.stats();
        assert_eq!(st.hep.bad(HepError::Truncated), 1);
        assert_eq!((st.connections, st.open_connections), (1, 1));
    }

    #[test]
    fn connections_over_the_limit_are_refused_and_garbage_closes_one() {
        let limits = HepLimits {
            max_connections: 1,
            max_packet: 1000,
        };
        let mut l = HepListener::bind(
            &["127.0.0.1:0".parse().unwrap()],
            HepPolicy::default(),
            limits,
        )
        .unwrap();
        let addr = l.local_addrs()[0];
        let waker = Waker::new().unwrap();
        let mut a = TcpStream::connect(addr).unwrap();
        let _b = TcpStream::connect(addr).unwrap();
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            assert!(l.next_packet().unwrap().is_none());
            l.wait(&waker, Duration::from_millis(20));
        }
        let st = l.stats();
        assert_eq!(st.connections_refused, 1);
        assert_eq!(st.open_connections, 0);
        assert_eq!(st.hep.bad(HepError::Version), 1);
    }
}
