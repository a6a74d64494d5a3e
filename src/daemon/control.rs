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

/// Serves commands until the process ends; `answer` produces the reply.
/// Runs on its own thread: the socket is off the packet path.
pub fn serve<F>(path: &Path, answer: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: Fn(&str) -> String + Send + 'static,
{
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a previous run would make bind fail.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
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
