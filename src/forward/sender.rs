//! One central appliance's sender thread: HEP packets from the capture
//! threads go out over TCP (back to back) or UDP.
//!
//! TCP: while the connection is down (refused, reset, a write that fails
//! or times out, the peer closing), packets go to the [`DiskBuffer`]; once
//! connected again the buffer is sent, oldest first, before any new
//! packet, so the central appliance sees the capture in order. HEP has no
//! acknowledgements: what the kernel had accepted when the peer died
//! unannounced (up to the socket's send buffer) is lost; a peer that
//! closes is seen before the next write (a peek), and a refused or
//! failed connection loses nothing within the buffer's size. A buffer
//! file whose sending failed midway is sent again whole: the central
//! appliance may see some packets twice (its TCP reassembly and call
//! table take a repeated SIP message as a retransmission).
//!
//! UDP: sent as they come; nothing is known to be lost, nothing buffered.

use super::buffer::{BufferStats, DiskBuffer};
use crate::config::ForwardTransport;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest wait for a connection or a write before the peer counts as down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// First and longest wait between two connection attempts.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Packets taken from the queue and written in one go.
const BATCH: usize = 512;

/// What `callrec forward` reports per central appliance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// HEP packets handed to the kernel.
    pub sent: u64,
    pub connected: bool,
    /// Connections made (the first and each reconnection).
    pub connections: u64,
    /// UDP sends that failed.
    pub send_errors: u64,
    pub buffer: BufferStats,
}

/// A sender thread's state.
pub struct Sender {
    pub addr: SocketAddr,
    pub transport: ForwardTransport,
    /// TCP only.
    pub buffer: Option<DiskBuffer>,
    pub stats: Arc<Mutex<SenderStats>>,
    conn: Option<TcpStream>,
    udp: Option<UdpSocket>,
    next_try: Instant,
    backoff: Duration,
    /// The current outage was logged.
    warned: bool,
}

impl Sender {
    pub fn new(
        addr: SocketAddr,
        transport: ForwardTransport,
        buffer: Option<DiskBuffer>,
    ) -> Sender {
        Sender {
            addr,
            transport,
            buffer,
            stats: Arc::default(),
            conn: None,
            udp: None,
            next_try: Instant::now(),
            backoff: RETRY_FIRST,
            warned: false,
        }
    }

    /// Sends what `rx` brings until `stop` is set and the queue is empty
    /// (the capture threads have ended); then what could not be sent
    /// stays in the buffer for the next start.
    pub fn run(mut self, rx: Receiver<Vec<u8>>, stop: Arc<AtomicBool>) {
        let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(p) => batch.push(p),
                Err(RecvTimeoutError::Timeout) if stop.load(Ordering::Relaxed) => break,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            self.deliver(&mut batch);
            self.publish();
        }
        self.deliver(&mut batch);
        if let Some(b) = self.buffer.as_mut() {
            let _ = b.close_open();
        }
        self.publish();
    }

    fn publish(&self) {
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        s.connected = self.conn.is_some() || self.udp.is_some();
        if let Some(b) = &self.buffer {
            s.buffer = b.stats();
        }
    }

    fn deliver(&mut self, batch: &mut Vec<Vec<u8>>) {
        match self.transport {
            ForwardTransport::Udp => self.udp_send(batch),
            ForwardTransport::Tcp => self.tcp_send(batch),
        }
        batch.clear();
    }

    fn udp_send(&mut self, batch: &[Vec<u8>]) {
        if self.udp.is_none() {
            let any: SocketAddr = match self.addr {
                SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("literal"),
                SocketAddr::V6(_) => "[::]:0".parse().expect("literal"),
            };
            self.udp = UdpSocket::bind(any).ok();
        }
        let Some(u) = &self.udp else { return };
        let (mut ok, mut bad) = (0, 0);
        for p in batch {
            match u.send_to(p, self.addr) {
                Ok(_) => ok += 1,
                Err(_) => bad += 1,
            }
        }
        let mut s = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        s.sent += ok;
        s.send_errors += bad;
    }

    fn tcp_send(&mut self, batch: &[Vec<u8>]) {
        self.check_peer();
        if self.conn.is_none() && Instant::now() >= self.next_try {
            self.connect();
        }
        if self.conn.is_some() && !self.flush_buffer() {
            self.down("sending the buffer failed");
        }
        let buffered = self.buffer.as_ref().is_some_and(|b| !b.is_empty());
        if self.conn.is_some() && !buffered && !batch.is_empty() {
            let bytes: Vec<u8> = batch.concat();
            let r = self.conn.as_mut().map(|c| c.write_all(&bytes));
            if let Some(Ok(())) = r {
                self.stats.lock().unwrap_or_else(|e| e.into_inner()).sent += batch.len() as u64;
                return;
            }
            self.down("write failed");
        }
        if let Some(b) = self.buffer.as_mut() {
            for p in batch {
                if let Err(e) = b.push(p) {
                    tracing::error!(alarm = true, error = %e, "forward buffer cannot be written: packets are lost");
                    break;
                }
            }
        }
    }

    /// Sends buffered files, oldest first; false when a write failed.
    fn flush_buffer(&mut self) -> bool {
        let (Some(b), Some(c)) = (self.buffer.as_mut(), self.conn.as_mut()) else {
            return true;
        };
        while let Ok(Some(data)) = b.oldest() {
            if c.write_all(&data).is_err() {
                return false;
            }
            let n = super::buffer::split(&data).len() as u64;
            b.sent();
            self.stats.lock().unwrap_or_else(|e| e.into_inner()).sent += n;
        }
        true
    }

    fn connect(&mut self) {
        match TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT) {
            Ok(c) => {
                let _ = c.set_write_timeout(Some(WRITE_TIMEOUT));
                let _ = c.set_nodelay(true);
                tracing::info!(to = %self.addr, "forward: connected to the central appliance");
                self.stats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .connections += 1;
                self.conn = Some(c);
                self.backoff = RETRY_FIRST;
                self.warned = false;
            }
            Err(e) => {
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(to = %self.addr, error = %e, "forward: central appliance unreachable; packets go to the disk buffer until it is back");
                }
                self.next_try = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(RETRY_MAX);
            }
        }
    }

    fn down(&mut self, why: &str) {
        if self.conn.take().is_some() {
            self.warned = true;
            tracing::warn!(to = %self.addr, why, "forward: central appliance unreachable; packets go to the disk buffer until it is back");
        }
        self.next_try = Instant::now() + self.backoff;
    }

    /// A peer that closed (or reset) is noticed before we write to it:
    /// the central appliance never sends, so anything readable is the end.
    fn check_peer(&mut self) {
        let Some(c) = &self.conn else { return };
        let mut b = [0u8; 1];
        // SAFETY: peeks at most 1 byte into a live buffer on our socket.
        let n = unsafe {
            libc::recv(
                c.as_raw_fd(),
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        let err = std::io::Error::last_os_error().kind();
        if n == 0 || (n < 0 && err != std::io::ErrorKind::WouldBlock) {
            self.down("the central appliance closed the connection");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    fn pkt(i: u32) -> Vec<u8> {
        let mut v = b"HEP3\0\x0e".to_vec();
        v.extend_from_slice(&[0, 0, 0, 0]);
        v.extend_from_slice(&i.to_be_bytes());
        v
    }

    /// Reads `n` packets of [`pkt`] from `s`, returning their numbers.
    fn read_n(s: &mut TcpStream, n: usize) -> Vec<u32> {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = vec![0u8; n * 14];
        s.read_exact(&mut b).unwrap();
        b.chunks(14)
            .map(|c| u32::from_be_bytes(c[10..14].try_into().unwrap()))
            .collect()
    }

    #[test]
    fn packets_wait_on_disk_while_the_appliance_is_down_and_arrive_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let buffer = DiskBuffer::open(dir.path(), 1 << 20).unwrap();
        let s = Sender::new(addr, ForwardTransport::Tcp, Some(buffer));
        let stats = s.stats.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1024);
        let stop = Arc::new(AtomicBool::new(false));
        let t = {
            let stop = stop.clone();
            std::thread::spawn(move || s.run(rx, stop))
        };
        // Down: refused connections, the packets go to the buffer.
        for i in 0..100 {
            tx.send(pkt(i)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(stats.lock().unwrap().buffer.buffered, 100);
        let l = TcpListener::bind(addr).unwrap();
        let (mut c, _) = l.accept().unwrap();
        for i in 100..200 {
            tx.send(pkt(i)).unwrap();
        }
        assert_eq!(
            read_n(&mut c, 200),
            (0..200).collect::<Vec<_>>(),
            "the buffer first, in order"
        );
        // The appliance closes: noticed before the next write, nothing lost.
        drop(c);
        std::thread::sleep(Duration::from_millis(200));
        for i in 200..250 {
            tx.send(pkt(i)).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let (mut c, _) = l.accept().unwrap();
        assert_eq!(read_n(&mut c, 50), (200..250).collect::<Vec<_>>());
        stop.store(true, Ordering::Relaxed);
        drop(tx);
        t.join().unwrap();
        let st = *stats.lock().unwrap();
        assert_eq!(
            (st.sent, st.buffer.dropped, st.buffer.bytes),
            (250, 0, 0),
            "{st:?}"
        );
    }

    #[test]
    fn over_udp_each_packet_is_a_datagram_and_nothing_is_buffered() {
        let r = UdpSocket::bind("127.0.0.1:0").unwrap();
        r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let s = Sender::new(r.local_addr().unwrap(), ForwardTransport::Udp, None);
        let stats = s.stats.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let stop = Arc::new(AtomicBool::new(false));
        let t = std::thread::spawn(move || s.run(rx, stop));
        for i in 0..5 {
            tx.send(pkt(i)).unwrap();
        }
        drop(tx);
        let mut got = Vec::new();
        let mut b = [0u8; 64];
        for _ in 0..5 {
            let n = r.recv(&mut b).unwrap();
            assert_eq!(n, 14, "one HEP packet per datagram");
            got.push(u32::from_be_bytes(b[10..14].try_into().unwrap()));
        }
        t.join().unwrap();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        let st = *stats.lock().unwrap();
        assert_eq!((st.sent, st.send_errors, st.buffer.buffered), (5, 0, 0));
    }
}
