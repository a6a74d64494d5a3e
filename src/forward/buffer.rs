//! The forwarder's bounded disk buffer: HEP packets that could not be
//! sent wait here, in order, while the central appliance is unreachable.
//!
//! Files `NNNNNNNNNNNN.hep` in `forward.buffer_dir` (mode 0600, the
//! directory 0700: they hold call signalling) each hold HEP packets back
//! to back; HEP's length field frames them, so no index is needed and a
//! file cut short by a crash loses at most its last packet. New packets
//! go to the newest file, which is closed at [`SEGMENT_BYTES`]; the
//! sender takes the oldest closed file whole. When the buffer would pass
//! `forward.buffer_bytes`, the oldest file is deleted and its packets are
//! counted and logged as lost: the buffer never grows past its size
//! (plus one segment being written). A restart finds the files and sends
//! them first.

use crate::capture::hep::{MAX_PACKET, frame_len};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Bytes per buffer file (the unit dropped when the buffer is full, and
/// read into memory at once when sending).
pub const SEGMENT_BYTES: u64 = 4 << 20;

/// Counters of the buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Packets written to the buffer.
    pub buffered: u64,
    /// Packets dropped because the buffer was full.
    pub dropped: u64,
    /// Bytes on disk now.
    pub bytes: u64,
}

struct Segment {
    seq: u64,
    bytes: u64,
    packets: u64,
}

/// A FIFO of HEP packets on disk, bounded by bytes.
pub struct DiskBuffer {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Closed files, oldest first.
    closed: VecDeque<Segment>,
    open: Option<(Segment, BufWriter<File>)>,
    next_seq: u64,
    stats: BufferStats,
}

impl DiskBuffer {
    /// Opens (creating) the directory and takes over files a previous run left.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<DiskBuffer> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        // An existing directory keeps its mode through create: set it.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let mut found: Vec<(u64, PathBuf)> = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            let seq = p
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok());
            if let (Some(seq), Some("hep")) = (seq, p.extension().and_then(|e| e.to_str())) {
                found.push((seq, p));
            }
        }
        found.sort();
        let mut b = DiskBuffer {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: SEGMENT_BYTES.min(max_bytes / 4).max(64 * 1024),
            closed: VecDeque::new(),
            open: None,
            next_seq: found.last().map_or(1, |(s, _)| s + 1),
            stats: BufferStats::default(),
        };
        for (seq, p) in found {
            let data = std::fs::read(&p)?;
            let packets = split(&data).len() as u64;
            b.stats.bytes += data.len() as u64;
            b.closed.push_back(Segment {
                seq,
                bytes: data.len() as u64,
                packets,
            });
        }
        if !b.closed.is_empty() {
            tracing::info!(dir = %dir.display(), bytes = b.stats.bytes, "forward buffer holds packets from before the restart: they are sent first");
        }
        Ok(b)
    }

    pub fn stats(&self) -> BufferStats {
        self.stats
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.closed.is_empty() && self.open.as_ref().is_none_or(|(s, _)| s.packets == 0)
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:012}.hep"))
    }

    /// Appends one HEP packet, dropping the oldest file first if the
    /// buffer would pass its size.
    pub fn push(&mut self, hep: &[u8]) -> std::io::Result<()> {
        while self.stats.bytes + hep.len() as u64 > self.max_bytes && !self.closed.is_empty() {
            self.drop_oldest();
        }
        if self.open.is_none() {
            let seq = self.next_seq;
            self.next_seq += 1;
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(self.path(seq))?;
            let seg = Segment {
                seq,
                bytes: 0,
                packets: 0,
            };
            self.open = Some((seg, BufWriter::with_capacity(256 * 1024, f)));
        }
        let Some((seg, w)) = self.open.as_mut() else {
            return Ok(());
        };
        w.write_all(hep)?;
        seg.bytes += hep.len() as u64;
        seg.packets += 1;
        self.stats.bytes += hep.len() as u64;
        self.stats.buffered += 1;
        if seg.bytes >= self.segment_bytes {
            self.close_open()?;
        }
        Ok(())
    }

    fn drop_oldest(&mut self) {
        let Some(seg) = self.closed.pop_front() else {
            return;
        };
        let _ = std::fs::remove_file(self.path(seg.seq));
        self.stats.bytes -= seg.bytes.min(self.stats.bytes);
        self.stats.dropped += seg.packets;
        tracing::warn!(
            packets = seg.packets,
            bytes = seg.bytes,
            dropped_total = self.stats.dropped,
            "forward buffer full (forward.buffer_bytes): the oldest packets are dropped"
        );
    }

    /// Closes the file being written (flushed), so it can be sent.
    pub fn close_open(&mut self) -> std::io::Result<()> {
        if let Some((seg, mut w)) = self.open.take() {
            w.flush()?;
            if seg.packets > 0 {
                self.closed.push_back(seg);
            } else {
                let _ = std::fs::remove_file(self.path(seg.seq));
            }
        }
        Ok(())
    }

    /// The oldest packets, a file's worth (closing the open file when it
    /// is the only one); `None` when nothing waits. Call [`DiskBuffer::sent`]
    /// once they are delivered.
    pub fn oldest(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.closed.is_empty() {
            self.close_open()?;
        }
        match self.closed.front() {
            None => Ok(None),
            Some(seg) => std::fs::read(self.path(seg.seq)).map(Some),
        }
    }

    /// The file [`DiskBuffer::oldest`] returned was delivered: removes it.
    pub fn sent(&mut self) {
        if let Some(seg) = self.closed.pop_front() {
            let _ = std::fs::remove_file(self.path(seg.seq));
            self.stats.bytes -= seg.bytes.min(self.stats.bytes);
        }
    }
}

/// The whole HEP packets in `data`, in order (a cut tail is left out).
pub fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(Ok(n)) = frame_len(rest, MAX_PACKET) {
        let Some(p) = rest.get(..n) else { break };
        out.push(p);
        rest = &rest[n..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(i: u32, len: usize) -> Vec<u8> {
        let mut v = b"HEP3\0\0".to_vec();
        v.extend_from_slice(&i.to_be_bytes());
        v.resize(len, 0);
        let n = len as u16;
        v[4..6].copy_from_slice(&n.to_be_bytes());
        v
    }

    #[test]
    fn in_order_bounded_and_kept_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let max = 1 << 20;
        let mut b = DiskBuffer::open(dir.path(), max).unwrap();
        // 3 MiB into a 1 MiB buffer: the oldest go, counted.
        for i in 0..3000u32 {
            b.push(&pkt(i, 1000)).unwrap();
        }
        let st = b.stats();
        assert!(st.bytes <= max + b.segment_bytes, "{st:?}");
        assert!(st.dropped > 1500, "{st:?}");
        b.close_open().unwrap();
        drop(b);
        let mut b = DiskBuffer::open(dir.path(), max).unwrap();
        let mut got = Vec::new();
        while let Some(data) = b.oldest().unwrap() {
            for p in split(&data) {
                got.push(u32::from_be_bytes(p[6..10].try_into().unwrap()));
            }
            b.sent();
        }
        assert_eq!(*got.last().unwrap(), 2999);
        assert!(
            got.windows(2).all(|w| w[1] == w[0] + 1),
            "in order, no gap after the drops"
        );
        assert_eq!(got.len() as u64 + st.dropped, 3000);
        assert!(b.is_empty());
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0);
    }
}
