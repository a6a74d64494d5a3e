//! The jitter window, kept where a killed process leaves it: live only.
//!
//! The recorder writes a sample to the WAV only once it has waited
//! [`PLAYOUT_DELAY`](crate::media::jitter::PLAYOUT_DELAY) (200 ms) for
//! stragglers, so at any instant the last 200 ms of a call's audio exist
//! only in the two legs' jitter rings. In the live daemon each segment
//! keeps a copy of those rings in a shared file mapping beside its WAV
//! (`<name>.wav.tail`, 16 KiB at 8 kHz, 32 KiB at 16 kHz): every
//! packet's samples are copied there as they are placed (a 320-byte copy
//! at 8 kHz, no system call) and the played-out
//! part is zeroed as the WAV write of it returns. The pages belong to the
//! kernel's page cache, so `kill -9` loses none of it; at the next start
//! [`restore_tail`] mixes what the window held past the WAV's end and
//! appends it, before the WAV is repaired and published. (A power cut
//! loses the mapping's unwritten pages like any other unsynced write.)
//!
//! Layout (native endian, this host only): a 64-byte header (magic,
//! recording start, played-out position, end of the newest audio, the
//! last pause, channels, ring length) and the two rings, each as long as
//! the jitter buffer's (RING samples at 8 kHz, twice that at 16 kHz; a
//! ring length of 0 in the header means RING, as files written before
//! 16 kHz recordings were mirrored have it), holding each sample at its
//! ring position (timeline position mod ring length).

use crate::media::jitter::{JitterBuffer, RING};
use crate::recording::wav;
use crate::time::Timestamp;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

const MAGIC: [u8; 8] = *b"CRTAIL01";
/// No pause: the pause interval's open end.
const OPEN: i64 = i64::MAX;
/// Header bytes before the rings.
const HEADER: usize = 64;
/// Longest ring a tail file holds (a 48 kHz timeline's, 6 × RING): a
/// header claiming more is not a tail file.
const MAX_RING: usize = 6 * RING;

#[repr(C)]
struct Header {
    magic: [u8; 8],
    start_us: i64,
    /// Timeline position up to which the WAV holds the audio (written).
    committed: i64,
    /// End of the newest audio placed in either ring.
    end: i64,
    /// The last pause, `from..to` (to = [`OPEN`] while paused); from =
    /// to = 0 when none.
    pause_from: i64,
    pause_to: i64,
    channels: i64,
    /// Samples per ring (a power of two); 0 = [`RING`].
    ring: i64,
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER);

/// File size of a tail whose rings hold `ring` samples each.
fn file_size(ring: usize) -> usize {
    HEADER + 2 * ring * 2
}

/// Where the tail of the segment written at `wav` is kept.
pub fn tail_path(wav: &Path) -> PathBuf {
    let mut p = wav.as_os_str().to_owned();
    p.push(".tail");
    PathBuf::from(p)
}

/// One segment's jitter-window copy, mapped from its file.
pub struct TailMirror {
    map: NonNull<u8>,
    ring: usize,
    path: PathBuf,
}

// The mapping is owned by this value alone; it moves with the recorder
// from the shard to its finisher and is unmapped once.
unsafe impl Send for TailMirror {}

impl TailMirror {
    /// Creates `tail_path(wav)` (0640) and maps it, for rings of `ring`
    /// samples (the jitter buffer's: [`RING`] per 8 kHz of the recording's
    /// rate; a power of two).
    pub fn create(
        wav: &Path,
        start: Timestamp,
        channels: u16,
        ring: usize,
    ) -> io::Result<TailMirror> {
        if !ring.is_power_of_two() || ring > MAX_RING {
            return Err(io::Error::other(format!("tail ring of {ring} samples")));
        }
        let path = tail_path(wav);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&path)?;
        crate::recording::perms::apply_file(&file)?;
        let size = file_size(ring);
        file.set_len(size as u64)?;
        // SAFETY: a fresh shared mapping of a file of `size` bytes, checked
        // below; the file may be closed once mapped.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut t = TailMirror {
            map: NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?,
            ring,
            path,
        };
        let h = t.header();
        h.magic = MAGIC;
        h.start_us = start.0;
        h.channels = channels as i64;
        h.ring = ring as i64;
        Ok(t)
    }

    fn header(&mut self) -> &mut Header {
        // SAFETY: the mapping is page aligned, at least HEADER bytes,
        // zero-filled at creation (a valid Header) and only this value
        // refers to it.
        unsafe { &mut *self.map.as_ptr().cast::<Header>() }
    }

    /// The header and both rings, borrowed apart.
    fn parts(&mut self) -> (&mut Header, &mut [i16], &mut [i16]) {
        let n = self.ring;
        // SAFETY: the mapping holds the header, then 2 × n i16 samples
        // (page aligned + 64: aligned for i16); the three borrows do not
        // overlap and live no longer than &mut self.
        unsafe {
            let base = self.map.as_ptr();
            let rings = base.add(HEADER).cast::<i16>();
            (
                &mut *base.cast::<Header>(),
                std::slice::from_raw_parts_mut(rings, n),
                std::slice::from_raw_parts_mut(rings.add(n), n),
            )
        }
    }

    /// A packet put samples at `from..to` of `leg`'s ring: copy them.
    pub fn placed(&mut self, leg: usize, jb: &JitterBuffer, from: i64, to: i64) {
        let (h, r0, r1) = self.parts();
        jb.mirror_into(from, to, if leg == 0 { r0 } else { r1 });
        if to > h.end {
            h.end = to;
        }
    }

    /// The WAV now holds everything before `pos`: the copy of it goes.
    pub fn committed(&mut self, pos: i64) {
        let (n, mask) = (self.ring as i64, self.ring as i64 - 1);
        let (h, r0, r1) = self.parts();
        let from = h.committed.max(pos - n);
        for p in from..pos {
            let a = (p & mask) as usize;
            r0[a] = 0;
            r1[a] = 0;
        }
        h.committed = h.committed.max(pos);
    }

    pub fn paused(&mut self, pos: i64) {
        let h = self.header();
        h.pause_from = pos;
        h.pause_to = OPEN;
    }

    pub fn resumed(&mut self, pos: i64) {
        self.header().pause_to = pos;
    }

    /// The segment's WAV is finished (exactly its length): the window,
    /// which may reach past the segment's end, must not be appended to
    /// it after a crash.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for TailMirror {
    fn drop(&mut self) {
        // SAFETY: mapped in `create` with this size; unmapped once.
        unsafe {
            libc::munmap(self.map.as_ptr().cast(), file_size(self.ring));
        }
    }
}

fn field(b: &[u8], at: usize) -> i64 {
    i64::from_ne_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

fn sample(b: &[u8], ring: usize, leg: usize, pos: i64) -> i16 {
    let at = HEADER + (leg * ring + (pos & (ring as i64 - 1)) as usize) * 2;
    i16::from_ne_bytes([b[at], b[at + 1]])
}

/// The ring length a tail file's header gives, if its size matches.
fn ring_of(b: &[u8]) -> Option<usize> {
    if b.len() < HEADER || b[..8] != MAGIC {
        return None;
    }
    let ring = match field(b, 56) {
        0 => RING,
        n if n > 0 && (n as usize).is_power_of_two() && n as usize <= MAX_RING => n as usize,
        _ => return None,
    };
    (b.len() == file_size(ring)).then_some(ring)
}

/// Crash recovery, before [`wav::recover`]: appends to the WAV at `wav`
/// the audio its tail file held past the WAV's whole frames (mixed as the
/// recorder would: stereo or the saturating mono sum, muted inside the
/// last pause), then removes the tail file. Returns the frames added (0
/// without a usable tail file).
pub fn restore_tail(wav_path: &Path) -> io::Result<u64> {
    let path = tail_path(wav_path);
    let b = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let Some(ring) = ring_of(&b) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a tail file", path.display()),
        ));
    };
    let (committed, end, pause) = (field(&b, 16), field(&b, 24), (field(&b, 32), field(&b, 40)));
    let (frames, channels) = wav::whole_frames(wav_path)?;
    let from = (frames as i64).max(committed);
    // Saturating: the header is read back from a file, whatever it holds.
    let to = end.min(committed.saturating_add(ring as i64));
    let mut samples = Vec::new();
    for p in from..to {
        let muted = pause.0 <= p && p < pause.1;
        let (l, r) = if muted {
            (0, 0)
        } else {
            (sample(&b, ring, 0, p), sample(&b, ring, 1, p))
        };
        if channels == 2 {
            samples.extend([l, r]);
        } else {
            samples.push(l.saturating_add(r));
        }
    }
    let added = to.saturating_sub(from).max(0) as u64;
    if added > 0 && frames as i64 == from {
        wav::append_samples(wav_path, frames, &samples)?;
    }
    std::fs::remove_file(&path)?;
    Ok(if frames as i64 == from { added } else { 0 })
}

#[cfg(test)]
#[path = "tail_tests.rs"]
mod tests;
