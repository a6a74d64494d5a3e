//! Configuration text the replay tests share.
#![allow(dead_code)]

/// The delivery section with one destination, `acme`, on a documentation
/// address. Replay tests never deliver, so it is never contacted; it is
/// there because every contract needs a destination.
pub const ACME_UNREACHED: &str = r#"[delivery]
allowed_networks = ["192.0.2.0/24"]
[[destination]]
name = "acme"
url = "sftp://rec@192.0.2.10:22/incoming"
identity = "/nonexistent/key"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5WY6hfGbgKdwr827M61Dy9fKgVJoLX3pwmoStKx7MO"
"#;

/// The stereo mobile contract K-0001 (number 0312340001), delivering to `acme`.
pub const K0001_STEREO: &str = r#"[[contract]]
id = "K-0001"
service = "mobile"
numbers = ["0312340001"]
guidance = 2
channels = "stereo"
destination = "acme"
"#;

/// Where a live test's daemon keeps its files.
pub struct LiveFiles {
    pub cfg: std::path::PathBuf,
    pub spool: std::path::PathBuf,
    pub sock: std::path::PathBuf,
}

/// Writes `dir/callrec.toml` for a live daemon capturing on `lo` with
/// announcements off, its control socket in `dir` plus any `daemon_extra`
/// lines, and K-0001 delivering to `acme` at a closed port on the
/// loopback: recordings stay queued.
pub fn live_on_lo(dir: &std::path::Path, daemon_extra: &str) -> LiveFiles {
    let f = LiveFiles {
        cfg: dir.join("callrec.toml"),
        spool: dir.join("spool"),
        sock: dir.join("control.sock"),
    };
    // A port that was free a moment ago and is closed now.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = format!(
        r#"
[general]
timezone = "+09:00"
[capture]
interfaces = ["lo"]
# The loopback coalesces other tests' traffic into frames far above any
# MTU (GRO); the shipped 2,048 bytes are for a mirror port with GRO off.
snaplen = 65535
[recording]
spool_dir = "{spool}"
[announce]
mode = "off"
[daemon]
control_socket = "{sock}"
{daemon_extra}
[delivery]
allowed_networks = ["127.0.0.0/8"]
[[destination]]
name = "acme"
url = "sftp://rec@127.0.0.1:{closed_port}/incoming"
identity = "/nonexistent/key"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5WY6hfGbgKdwr827M61Dy9fKgVJoLX3pwmoStKx7MO"
{K0001_STEREO}"#,
        spool = f.spool.display(),
        sock = f.sock.display(),
    );
    std::fs::write(&f.cfg, text).unwrap();
    f
}
