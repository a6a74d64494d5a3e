//! Who may read what callrec writes: recordings, metadata, the call history
//! and every other file in the spool are `file_mode` (default 0640), the
//! folders `dir_mode` (0750, the file mode with an execute bit wherever it
//! has a read bit), owned by `group` when one is configured, whatever the
//! process umask. Customers' calls are personal data: only the service and
//! the receivers' group read them.
//!
//! Modes are set explicitly (`fchmod`/`chmod` after creation), because a
//! mode given to open(2) is masked by the umask, which may be anything
//! (0 under some supervisors). The setting is process-wide: one
//! configuration per process, set once at start by `run` and `replay`
//! ([`configure`]); until then the defaults hold.

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::RwLock;

/// Modes and group for what the daemon writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perms {
    /// Mode of every file (permission bits only, e.g. 0o640).
    pub file_mode: u32,
    /// Mode of every folder (e.g. 0o750).
    pub dir_mode: u32,
    /// Group id every file and folder is given; None keeps the process's.
    pub gid: Option<u32>,
}

impl Default for Perms {
    fn default() -> Self {
        Perms::from_file_mode(0o640, None)
    }
}

impl Perms {
    /// Folder mode from a file mode: each read bit gains its execute bit
    /// (0640 -> 0750, 0660 -> 0770, 0600 -> 0700).
    pub fn from_file_mode(file_mode: u32, gid: Option<u32>) -> Perms {
        let file_mode = file_mode & 0o777;
        let x = (file_mode & 0o444) >> 2;
        Perms {
            file_mode,
            dir_mode: file_mode | x,
            gid,
        }
    }
}

static CURRENT: RwLock<Perms> = RwLock::new(Perms {
    file_mode: 0o640,
    dir_mode: 0o750,
    gid: None,
});

/// Sets the modes and group for the rest of the process.
pub fn configure(p: Perms) {
    *CURRENT.write().unwrap_or_else(|e| e.into_inner()) = p;
}

/// The modes and group in force.
pub fn current() -> Perms {
    *CURRENT.read().unwrap_or_else(|e| e.into_inner())
}

fn chown_gid(path: &Path, gid: Option<u32>) -> io::Result<()> {
    match gid {
        Some(g) => std::os::unix::fs::chown(path, None, Some(g)),
        None => Ok(()),
    }
}

/// Gives an open file the configured mode and group.
pub fn apply_file(f: &File) -> io::Result<()> {
    let p = current();
    f.set_permissions(std::fs::Permissions::from_mode(p.file_mode))?;
    if let Some(g) = p.gid {
        std::os::unix::fs::fchown(f, None, Some(g))?;
    }
    Ok(())
}

/// Gives the file at `path` (written by someone else, e.g. libpcap) the
/// configured mode and group.
pub fn apply_path(path: &Path) -> io::Result<()> {
    let p = current();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(p.file_mode))?;
    chown_gid(path, p.gid)
}

/// Gives an existing folder the configured mode and group.
pub fn apply_dir(path: &Path) -> io::Result<()> {
    let p = current();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(p.dir_mode))?;
    chown_gid(path, p.gid)
}

/// Creates (truncating) a file with the configured mode and group.
pub fn create(path: &Path) -> io::Result<File> {
    let f = File::create(path)?;
    apply_file(&f)?;
    Ok(f)
}

/// `std::fs::write` with the configured mode and group.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    create(path)?.write_all(bytes)
}

/// `create_dir_all`, each folder it creates given the configured mode and
/// group (folders that already exist are left as they are).
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    let p = current();
    match std::fs::DirBuilder::new().mode(p.dir_mode).create(path) {
        Ok(()) => apply_dir(path),
        // Another thread made it meanwhile: theirs has the mode already.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The group id of `name` (getgrnam_r(3)); None when there is no such group.
pub fn group_id(name: &str) -> io::Result<Option<u32>> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in group name"))?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is to memory we own, sized as passed.
    let rc =
        unsafe { libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut out) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok((!out.is_null()).then_some(grp.gr_gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_modes_follow_file_modes() {
        assert_eq!(Perms::from_file_mode(0o640, None).dir_mode, 0o750);
        assert_eq!(Perms::from_file_mode(0o660, None).dir_mode, 0o770);
        assert_eq!(Perms::from_file_mode(0o600, None).dir_mode, 0o700);
    }

    #[test]
    fn groups_resolve_and_missing_ones_are_none() {
        assert_eq!(group_id("root").unwrap(), Some(0));
        assert_eq!(group_id("no-such-group-callrec-test").unwrap(), None);
    }

    #[test]
    fn nested_folders_get_the_mode_whatever_the_umask() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a/b/c");
        create_dir_all(&deep).unwrap();
        for p in [d.path().join("a"), d.path().join("a/b"), deep] {
            let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
            assert_eq!(m, 0o750, "{}", p.display());
        }
        let f = d.path().join("a/file");
        write(&f, b"x").unwrap();
        let m = std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777;
        assert_eq!(m, 0o640);
    }
}
