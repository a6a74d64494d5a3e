//! One writer per spool: `SPOOL/.lock`, held with an exclusive flock(2)
//! by the daemon (and `replay`) for its whole life. Two daemons on one
//! spool would recover each other's in-flight uploads and interleave the
//! call history; the second one refuses to start instead. flock is
//! released by the kernel when the process dies, however it dies, so a
//! crash never leaves a stale lock behind. The file holds the holder's pid
//! for the refusal message only.

use crate::recording::perms;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name in the spool root.
pub const LOCK_FILE: &str = ".lock";

/// Held while the process writes the spool; dropping it unlocks.
#[derive(Debug)]
pub struct SpoolLock {
    _file: File,
    path: PathBuf,
}

impl SpoolLock {
    /// Takes the lock at `path`, or says who holds it.
    pub fn take(path: &Path) -> io::Result<SpoolLock> {
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| named(e, path, "cannot open the spool lock"))?;
        perms::apply_file(&file).map_err(|e| named(e, path, "cannot set the lock's mode"))?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(named(e, path, "cannot lock the spool"));
            }
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!(
                    "{}: another callrec process (pid {}) is writing this spool; refusing to share it",
                    path.display(),
                    pid.trim()
                ),
            ));
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(SpoolLock {
            _file: file,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn named(e: io::Error, path: &Path, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Refuses a spool folder this process cannot write into (its mode or
/// owner changed by hand), naming the folder, its mode and owner.
pub fn check_writable(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).map_err(|e| named(e, dir, "spool folder"))?;
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in spool path"))?;
    // SAFETY: access(2) reads the NUL-terminated path we own.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "spool folder {}: not writable by uid {} (mode {:04o}, owner {}:{}); fix its permissions",
                dir.display(),
                // SAFETY: getuid cannot fail.
                unsafe { libc::getuid() },
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_named() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(LOCK_FILE);
        let first = SpoolLock::take(&p).unwrap();
        let e = SpoolLock::take(&p).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy);
        assert!(
            e.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(first);
        SpoolLock::take(&p).unwrap();
    }
}
