//! Live capture from a network interface through libpcap.
//!
//! The handle is opened in immediate mode by default (frames are handed
//! over as they arrive; TPACKET_V3's block timeout delays a 200 OK, and
//! with it the announcement, by up to the timeout, so blocks are an option:
//! `capture.block_timeout`) and **non-blocking**: libpcap's read
//! timeout does not guarantee that a read returns on a silent link, so the
//! caller waits itself, in [`LiveSource::wait`], on the capture descriptor
//! and a [`Waker`] at once. A capture thread therefore wakes for frames,
//! for a signal or a control request (someone calls [`Waker::wake`]) and
//! for its own timers, whatever the wire does.
//!
//! A kernel filter keeps what callrec cannot use (`capture.filter`, by
//! default all but UDP, SIP over TCP, fragments and tunnels) and this
//! host's own outgoing frames (`inbound`) out of the ring. Those are not
//! ours to record (announcements and beeps injected on the interface must
//! never be taken for a party's media), and on the loopback, where each frame shows up once outgoing and once incoming,
//! they would fill the ring and double the drop counter.

use super::{CaptureError, LinkType, Packet, PacketSource};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// First and longest wait between two attempts to reopen an interface
/// that failed (doubling in between), for every thread that captures.
pub const REOPEN_FIRST: Duration = Duration::from_millis(500);
pub const REOPEN_MAX: Duration = Duration::from_secs(10);

/// Kernel and libpcap counters for a live interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveStats {
    /// Frames that passed the kernel filter (`ps_recv`).
    pub received: u64,
    /// Frames lost on arrival because the ring was full (we read too slowly).
    pub dropped: u64,
    /// Dropped by the interface or its driver.
    pub if_dropped: u64,
    /// Frames longer than the snap length, cut short (counted by us).
    pub truncated: u64,
}

/// Wakes a thread waiting in [`LiveSource::wait`] (an eventfd): cheap to
/// call from any thread, and a wake that comes before the wait is not lost.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub fn new() -> std::io::Result<Waker> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that nothing else owns.
        Ok(Waker {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Makes the next (or current) wait return at once.
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. A full
        // counter (EAGAIN) still leaves it readable, which is all we need.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Clears pending wakes.
    fn drain(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64 from our own eventfd.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
    }

    /// Waits until the waker is woken or `timeout` passes; for threads
    /// that have no capture to wait on (an interface being reopened).
    pub fn sleep(&self, timeout: Duration) {
        poll_fds(&[self.fd.as_raw_fd()], timeout);
        self.drain();
    }

    /// Waits up to `timeout` until any of `fds` is readable or the waker
    /// is woken, whichever comes first (at once when one already is).
    pub fn wait_with(&self, fds: &[RawFd], timeout: Duration) {
        let mut all = Vec::with_capacity(fds.len() + 1);
        all.extend_from_slice(fds);
        all.push(self.fd.as_raw_fd());
        let r = poll_fds(&all, timeout);
        if r.last().copied().unwrap_or(false) {
            self.drain();
        }
    }
}

/// Waits for any of `fds` to be readable; returns which were.
fn poll_fds(fds: &[RawFd], timeout: Duration) -> Vec<bool> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // ppoll, not poll: a capture thread that holds frames for a sleeping
    // engine waits fractions of a millisecond.
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: p is a live array of p.len() pollfd structs, ts a live
    // timespec; no signal mask is passed.
    let n = unsafe {
        libc::ppoll(
            p.as_mut_ptr(),
            p.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if n <= 0 {
        return vec![false; fds.len()];
    }
    p.iter().map(|x| x.revents != 0).collect()
}

/// Attaches the compiled `expr` (always `inbound`, and the configured
/// filter) to the capture socket ourselves. Through `pcap_setfilter`,
/// libpcap also runs a new filter in user space
/// on the frames it thinks were already in the ring, and its user-space
/// BPF cannot evaluate the packet-type load `inbound` compiles to on
/// Linux: it rejected the first frame that arrived after start (the
/// first INVITE of a capture, seen in `tests/daemon_live.rs`). The
/// kernel evaluates it; libpcap, not knowing of it, filters nothing.
fn attach_kernel_filter(cap: &pcap::Capture<pcap::Active>, expr: &str) -> Result<(), String> {
    let prog = cap.compile(expr, true).map_err(|e| e.to_string())?;
    let ins = prog.get_instructions();
    let fprog = libc::sock_fprog {
        len: u16::try_from(ins.len()).map_err(|_| "filter too long".to_owned())?,
        // pcap's BpfInstruction is a transparent `struct bpf_insn`, which
        // has the kernel's `struct sock_filter` layout.
        filter: ins.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points at `len` live instructions for the duration of
    // the call; the kernel copies them.
    let rc = unsafe {
        libc::setsockopt(
            cap.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error().to_string()),
    }
}

/// How an interface is opened (from `[capture]`).
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Bytes kept of each frame (2,048 by default: a 1,500-byte MTU with
    /// VLAN tags and tunnel headers; a bigger snap length makes every slot
    /// of the kernel ring bigger and the ring hold fewer frames).
    pub snaplen: u32,
    pub promisc: bool,
    /// The kernel ring, bytes.
    pub buffer_bytes: u32,
    /// Zero: immediate mode (TPACKET_V2, each frame as it arrives). Above:
    /// TPACKET_V3 blocks handed over when full or this old.
    pub block_timeout: Duration,
    /// A libpcap expression the kernel runs on every frame (after
    /// `inbound`); `None` keeps every arriving frame.
    pub filter: Option<String>,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            snaplen: 2048,
            promisc: true,
            buffer_bytes: 64 << 20,
            block_timeout: Duration::ZERO,
            filter: None,
        }
    }
}

impl LiveOptions {
    /// The options `[capture]` gives.
    pub fn from_config(c: &crate::config::Capture) -> LiveOptions {
        LiveOptions {
            snaplen: c.snaplen,
            promisc: c.promiscuous,
            buffer_bytes: c.buffer_bytes,
            block_timeout: c.block_timeout,
            filter: c.filter.clone(),
        }
    }
}

/// Frames from one interface. Unlike a file, `Ok(None)` from
/// [`PacketSource::next_packet`] means "nothing to read now": call
/// [`LiveSource::wait`], then again.
pub struct LiveSource {
    cap: pcap::Capture<pcap::Active>,
    name: String,
    link: LinkType,
    index: u64,
    truncated: u64,
}

impl LiveSource {
    /// Opens `interface` in immediate mode with no filter but `inbound`
    /// (see [`LiveSource::open_with`]).
    pub fn open(
        interface: &str,
        snaplen: u32,
        promisc: bool,
        buffer_bytes: u32,
    ) -> Result<LiveSource, CaptureError> {
        LiveSource::open_with(
            interface,
            &LiveOptions {
                snaplen,
                promisc,
                buffer_bytes,
                ..LiveOptions::default()
            },
        )
    }

    /// Opens `interface` as `o` says. Frames this host sends are left out
    /// in the kernel, with `o.filter` (a libpcap expression) when given.
    pub fn open_with(interface: &str, o: &LiveOptions) -> Result<LiveSource, CaptureError> {
        let err = |e: pcap::Error| CaptureError::Open {
            source_name: interface.to_string(),
            reason: e.to_string(),
        };
        let blocks = !o.block_timeout.is_zero();
        let mut cap = pcap::Capture::from_device(interface)
            .map_err(err)?
            .snaplen(o.snaplen.min(i32::MAX as u32) as i32)
            .promisc(o.promisc)
            .buffer_size(o.buffer_bytes.min(i32::MAX as u32) as i32)
            .immediate_mode(!blocks);
        if blocks {
            // libpcap's read timeout is TPACKET_V3's block retire timeout.
            let ms = o.block_timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
            cap = cap.timeout(ms);
        }
        let mut cap = cap.open().map_err(err)?.setnonblock().map_err(err)?;
        // Only what arrives: in the kernel where it can be (frames this host
        // sends never take ring space), and in libpcap in any case.
        let expr = match &o.filter {
            Some(f) => format!("inbound and ({f})"),
            None => "inbound".to_owned(),
        };
        if let Err(e) = attach_kernel_filter(&cap, &expr) {
            match &o.filter {
                // The operator's filter must hold even where the kernel
                // cannot run it: libpcap runs it in user space then.
                Some(f) => cap.filter(f, true).map_err(err)?,
                None => {
                    tracing::debug!(interface, error = %e, "no kernel inbound filter; filtering in libpcap")
                }
            }
        }
        if let Err(e) = cap.direction(pcap::Direction::In) {
            tracing::warn!(interface, error = %e, "cannot ignore this host's own frames; injected announcements may be captured");
        }
        let link = LinkType::from_dlt(cap.get_datalink().0);
        Ok(LiveSource {
            cap,
            name: interface.to_string(),
            link,
            index: 0,
            truncated: 0,
        })
    }

    pub fn link_type(&self) -> LinkType {
        self.link
    }

    /// Waits up to `timeout` for a frame or a wake of `waker`, whichever
    /// comes first. Returns at once when either is already pending.
    pub fn wait(&self, waker: &Waker, timeout: Duration) {
        waker.wait_with(&[self.cap.as_raw_fd()], timeout);
    }

    /// The capture descriptor, readable when frames wait in the ring: for
    /// a thread that waits on several sources at once
    /// ([`Waker::wait_with`]).
    pub fn raw_fd(&self) -> RawFd {
        self.cap.as_raw_fd()
    }

    /// libpcap's counters; `dropped` is what the metrics report as frames
    /// lost on arrival.
    pub fn stats(&mut self) -> Result<LiveStats, CaptureError> {
        let s = self.cap.stats().map_err(|e| CaptureError::Open {
            source_name: self.name.clone(),
            reason: e.to_string(),
        })?;
        Ok(LiveStats {
            received: s.received as u64,
            dropped: s.dropped as u64,
            if_dropped: s.if_dropped as u64,
            truncated: self.truncated,
        })
    }
}

impl PacketSource for LiveSource {
    fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        let (cap, index) = (&mut self.cap, &mut self.index);
        match cap.next_packet() {
            Ok(p) => {
                *index += 1;
                if p.header.caplen < p.header.len {
                    self.truncated += 1;
                    if self.truncated == 1 {
                        tracing::warn!(interface = %self.name, frame_bytes = p.header.len, kept_bytes = p.header.caplen, "a frame was longer than capture.snaplen and was cut (GRO/LRO on the capture interface makes frames bigger than the MTU: turn it off with ethtool -K IFACE gro off lro off)");
                    }
                }
                Ok(Some(super::from_pcap(p, *index, self.link)))
            }
            Err(pcap::Error::TimeoutExpired | pcap::Error::NoMorePackets) => Ok(None),
            Err(e) => Err(CaptureError::Corrupt {
                source_name: self.name.clone(),
                after_packet: *index,
                reason: e.to_string(),
            }),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}
