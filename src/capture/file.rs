//! Capture files (pcap and pcapng) read through libpcap.
//!
//! libpcap 1.10 reads both formats with the same call, so one source covers
//! them. A file cut short or corrupt mid-way yields every readable packet
//! first and then one [`CaptureError::Corrupt`] naming the last good packet.
//!
//! Two kinds of damage libpcap passes through are noted here: records with
//! impossible headers ([`super::record_header_problem`]) are skipped and
//! listed, and frames captured shorter than they were on the wire (a
//! small snap length) are counted, with the first one's number, so that
//! `replay` can say what was lost and where.

use super::{CaptureError, LinkType, Packet, PacketSource};
use std::path::Path;

/// Frames from a pcap or pcapng file, numbered from 1.
pub struct FileSource {
    // Declared before `_read_buf`, so dropped (and the stream closed) before
    // the buffer the stream reads into is freed.
    cap: pcap::Capture<pcap::Offline>,
    _read_buf: Box<[u8]>,
    name: String,
    link: LinkType,
    index: u64,
    finished: bool,
    snaplen: u32,
    /// Frames whose captured length is below their length on the wire.
    cut: u64,
    first_cut: Option<u64>,
    /// Records skipped for an impossible header: all counted, the first
    /// [`MAX_BAD_LISTED`] listed as (packet number, what is wrong).
    bad: u64,
    bad_listed: Vec<(u64, String)>,
}

/// Bad records named one by one; beyond, only counted.
const MAX_BAD_LISTED: usize = 8;

impl FileSource {
    pub fn open(path: impl AsRef<Path>) -> Result<FileSource, CaptureError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let mut read_buf = vec![0u8; READ_BUFFER].into_boxed_slice();
        let cap = open_buffered(path, &mut read_buf).map_err(|reason| CaptureError::Open {
            source_name: name.clone(),
            reason,
        })?;
        let link = LinkType::from_dlt(cap.get_datalink().0);
        // SAFETY: the handle is open and owned by `cap`.
        let snaplen = unsafe { pcap_snapshot(cap.as_ptr().cast()) }.max(0) as u32;
        Ok(FileSource {
            cap,
            _read_buf: read_buf,
            name,
            link,
            index: 0,
            finished: false,
            snaplen,
            cut: 0,
            first_cut: None,
            bad: 0,
            bad_listed: Vec::new(),
        })
    }

    /// The snap length in the file's header.
    pub fn snaplen(&self) -> u32 {
        self.snaplen
    }

    /// Frames read so far that were cut below their length on the wire,
    /// and the number of the first one.
    pub fn cut_frames(&self) -> (u64, Option<u64>) {
        (self.cut, self.first_cut)
    }

    /// Records skipped for an impossible header: how many, and the first
    /// few as (packet number, what is wrong).
    pub fn bad_records(&self) -> (u64, &[(u64, String)]) {
        (self.bad, &self.bad_listed)
    }

    /// One line per record skipped for its header (the first few named
    /// by packet number), for the replay's errors.
    pub fn bad_record_lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .bad_listed
            .iter()
            .map(|(n, what)| format!("{}: packet {n}: {what}; record skipped", self.name))
            .collect();
        let more = self.bad - self.bad_listed.len() as u64;
        if more > 0 {
            out.push(format!(
                "{}: {more} more records with malformed headers skipped",
                self.name
            ));
        }
        out
    }

    /// The frames cut by the snap length, if any, as one line: `fatal`
    /// when the caller knows no call could be recorded.
    pub fn cut_line(&self, fatal: bool) -> Option<String> {
        let first = self.first_cut?;
        Some(format!(
            "{}: {} of {} frames cut below their length on the wire by the capture's snap length {} (first: packet {first}); {}",
            self.name,
            self.cut,
            self.index,
            self.snaplen,
            if fatal {
                "no call could be recorded"
            } else {
                "what they carried beyond it is lost"
            }
        ))
    }
}

/// Read-ahead for capture files. libpcap reads a file through stdio,
/// whose buffer is one filesystem block (4 KiB): a read system call every
/// twenty packets, 85,000 of them for the pipeline benchmark's capture.
const READ_BUFFER: usize = 64 << 10;

unsafe extern "C" {
    // libpcap's own entry point for an already opened stream; the pcap
    // crate only offers it behind a descriptor it opens itself, without a
    // way to size the stream's buffer.
    fn pcap_fopen_offline(fp: *mut libc::FILE, errbuf: *mut libc::c_char) -> *mut libc::c_void;
    // The snap length of the file's header (the pcap crate does not bind it).
    fn pcap_snapshot(p: *mut libc::c_void) -> libc::c_int;
}

#[cfg(target_env = "gnu")]
unsafe extern "C" {
    // glibc's <stdio_ext.h>: lets the caller own the stream's locking.
    fn __fsetlocking(fp: *mut libc::FILE, kind: libc::c_int) -> libc::c_int;
}
#[cfg(target_env = "gnu")]
const FSETLOCKING_BYCALLER: libc::c_int = 2;

/// Opens a capture file as `pcap_open_offline` would, but with a larger
/// stdio buffer and without stdio's per-call locking. The error names what failed (the open, or the format).
fn open_buffered(path: &Path, buf: &mut [u8]) -> Result<pcap::Capture<pcap::Offline>, String> {
    use std::os::fd::IntoRawFd;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let fd = file.into_raw_fd();
    // SAFETY: `fd` is ours (taken from the File above); once fdopen
    // succeeds the FILE owns it, and libpcap owns the FILE (pcap_close
    // closes it), which the Capture closes on drop. glibc ignores the size
    // unless given the buffer too; `buf` outlives the FILE (see FileSource).
    unsafe {
        let fp = libc::fdopen(fd, c"rb".as_ptr());
        if fp.is_null() {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e.to_string());
        }
        // Best effort: with the default buffer the file is still read.
        libc::setvbuf(fp, buf.as_mut_ptr().cast(), libc::_IOFBF, buf.len());
        // libpcap makes two fread calls per packet, and each takes the
        // stream's lock once the process has threads. Only the thread that
        // owns this source ever touches the stream (the FileSource is not
        // shared), so the lock is pure cost.
        #[cfg(target_env = "gnu")]
        __fsetlocking(fp, FSETLOCKING_BYCALLER);
        let mut err = [0 as libc::c_char; 257];
        let handle = pcap_fopen_offline(fp, err.as_mut_ptr());
        match std::ptr::NonNull::new(handle.cast()) {
            Some(h) => Ok(pcap::Capture::from(h)),
            None => {
                libc::fclose(fp);
                Err(std::ffi::CStr::from_ptr(err.as_ptr())
                    .to_string_lossy()
                    .into_owned())
            }
        }
    }
}

impl PacketSource for FileSource {
    fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        if self.finished {
            return Ok(None);
        }
        loop {
            // The frame is taken apart into plain values so that a record
            // skipped here does not keep the capture borrowed into the next
            // round (a borrow returned on one path of a loop would).
            let (header, data, len) = match self.cap.next_packet() {
                Ok(p) => (*p.header, p.data.as_ptr(), p.data.len()),
                Err(pcap::Error::NoMorePackets) => {
                    self.finished = true;
                    return Ok(None);
                }
                Err(e) => {
                    self.finished = true;
                    return Err(CaptureError::Corrupt {
                        source_name: self.name.clone(),
                        after_packet: self.index,
                        reason: e.to_string(),
                    });
                }
            };
            self.index += 1;
            if let Some(what) = super::record_header_problem(&header) {
                self.bad += 1;
                if self.bad_listed.len() < MAX_BAD_LISTED {
                    tracing::error!(capture = %self.name, packet = self.index, "{what}; record skipped");
                    self.bad_listed.push((self.index, what));
                }
                continue;
            }
            if header.caplen < header.len {
                self.cut += 1;
                self.first_cut.get_or_insert(self.index);
            }
            // SAFETY: `data` is libpcap's buffer for the record just read,
            // `len` bytes long; it stays valid until the next read on this
            // handle, which needs `&mut self` and so cannot happen while
            // the returned packet (borrowing `self`) lives.
            let data = unsafe { std::slice::from_raw_parts(data, len) };
            return Ok(Some(Packet {
                index: self.index,
                ts: super::header_time(&header),
                link: self.link,
                data,
                orig_len: header.len,
            }));
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}
