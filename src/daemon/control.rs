//! The control socket: a Unix stream socket answering one-line commands
//! (`status`, `pause CALL`, `resume CALL`) with text. `callrec status` is
//! its client.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

/// Sends one command and returns the daemon's answer.
pub fn query(path: &Path, command: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(command.as_bytes())?;
    s.write_all(b"\n")?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Mode of the control socket: pause and resume are operator actions, so
/// the service's group may connect, others not.
pub const SOCKET_MODE: u32 = 0o660;

/// Serves commands until the process ends; `answer` produces the reply.
/// Runs on its own thread: the socket is off the packet path.
///
/// A socket left by a process that died is replaced; one that a live
/// daemon still answers on is not taken over: the error (`AddrInUse`)
/// names it. The socket is [`SOCKET_MODE`] with the configured group
/// whatever the umask; a folder created for it gets the folder mode.
pub fn serve<F>(path: &Path, answer: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: Fn(&str) -> String + Send + 'static,
{
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        crate::recording::perms::create_dir_all(dir)?;
    }
    if UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "{}: another callrec daemon answers on this control socket; refusing to take it over",
                path.display()
            ),
        ));
    }
    // A socket left by a previous run would make bind fail.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))?;
    if let Some(g) = crate::recording::perms::current().gid {
        std::os::unix::fs::chown(path, None, Some(g))?;
    }
    std::thread::Builder::new()
        .name("callrec-control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut line = String::new();
                if BufReader::new(&conn)
                    .take(4096)
                    .read_line(&mut line)
                    .is_err()
                {
                    continue;
                }
                let reply = answer(line.trim());
                let _ = conn.write_all(reply.as_bytes());
            }
        })
}
