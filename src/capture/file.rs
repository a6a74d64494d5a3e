//! Capture files (pcap and pcapng) read through libpcap.
//!
//! libpcap 1.10 reads both formats with the same call, so one source covers
//! them. A file cut short or corrupt mid-way yields every readable packet
//! first and then one [`CaptureError::Corrupt`] naming the last good packet.

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
}

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
        Ok(FileSource {
            cap,
            _read_buf: read_buf,
            name,
            link,
            index: 0,
            finished: false,
        })
    }

    pub fn link_type(&self) -> LinkType {
        self.link
    }

    /// Packets read so far (the number of the last one returned).
    pub fn packets_read(&self) -> u64 {
        self.index
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
        // Borrow fields apart so the returned packet can borrow the capture
        // while the error arms update the counters.
        let (cap, finished, index) = (&mut self.cap, &mut self.finished, &mut self.index);
        match cap.next_packet() {
            Ok(p) => {
                *index += 1;
                Ok(Some(super::from_pcap(p, *index, self.link)))
            }
            Err(pcap::Error::NoMorePackets) => {
                *finished = true;
                Ok(None)
            }
            Err(e) => {
                *finished = true;
                Err(CaptureError::Corrupt {
                    source_name: self.name.clone(),
                    after_packet: *index,
                    reason: e.to_string(),
                })
            }
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}
