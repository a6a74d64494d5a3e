//! A real OpenSSH server for tests, on 127.0.0.1 and a free port.
//!
//! Keys are made with ssh-keygen in a private folder; the server runs
//! `/usr/sbin/sshd -D -e -f CONFIG` with a chrooted `internal-sftp` user
//! `callrec-test` (created with useradd when missing). The chroot needs
//! root-owned, not group/world-writable folders on the whole path, so the
//! test folder lives under /var/lib/callrec-sshd-test, not /tmp. Without
//! root (or useradd) it falls back to root with internal-sftp and a plain
//! folder. [`Sshd::start`] returns `None` (after printing why) where sshd or
//! ssh-keygen is absent.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";
pub const USER: &str = "callrec-test";
static SEQ: AtomicU32 = AtomicU32::new(0);

pub struct Sshd {
    /// Private folder with keys, config, log (removed on drop).
    pub base: PathBuf,
    pub port: u16,
    /// Login user.
    pub user: String,
    /// The folder uploads land in, as a local path.
    pub incoming: PathBuf,
    /// The same folder as the SFTP client sees it.
    pub remote_dir: String,
    /// Client private key (authorized on the server).
    pub client_key: PathBuf,
    /// The server's host key, "ssh-ed25519 AAAA...".
    pub host_pub: String,
    config: PathBuf,
    child: Option<Child>,
    tmpfs: bool,
}

fn keygen(path: &Path) -> std::io::Result<String> {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "callrec-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()?;
    if !st.success() {
        return Err(std::io::Error::other("ssh-keygen failed"));
    }
    Ok(std::fs::read_to_string(path.with_extension("pub"))?
        .trim()
        .to_string())
}

fn ensure_user() -> bool {
    let exists = Command::new("id")
        .arg(USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if exists.map(|s| s.success()).unwrap_or(false) {
        return true;
    }
    // '*' (not '!'): a locked password would make sshd refuse even key logins.
    Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--password",
            "*",
            USER,
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn chown(path: &Path, user: &str) {
    let _ = Command::new("chown")
        .arg(format!("{user}:"))
        .arg(path)
        .status();
}

impl Sshd {
    /// Starts a server, or returns None (with a message) where it cannot run.
    pub fn start() -> Option<Sshd> {
        Sshd::start_opts(false)
    }

    /// As [`Sshd::start`], with the upload folder on a 1 MiB tmpfs (None,
    /// with a message, where mounting is not allowed).
    pub fn start_with_small_disk() -> Option<Sshd> {
        Sshd::start_opts(true)
    }

    fn start_opts(small_disk: bool) -> Option<Sshd> {
        if !Path::new(SSHD).exists() || Command::new("ssh-keygen").arg("-?").output().is_err() {
            eprintln!("SKIP: {SSHD} or ssh-keygen not installed");
            return None;
        }
        let root = Path::new("/var/lib/callrec-sshd-test");
        let base = root.join(format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&base);
        if let Err(e) = std::fs::create_dir_all(&base) {
            eprintln!("SKIP: cannot create {}: {e}", base.display());
            return None;
        }
        for p in [root, base.as_path()] {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
        }
        let keys = base.join("keys");
        std::fs::create_dir_all(&keys).ok()?;
        std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o700)).ok()?;
        let host_pub = keygen(&keys.join("host_ed25519"))
            .map_err(|e| eprintln!("SKIP: ssh-keygen: {e}"))
            .ok()?;
        let client_pub = keygen(&keys.join("client_ed25519")).ok()?;
        let auth = base.join("authorized_keys");
        std::fs::write(&auth, format!("{client_pub}\n")).ok()?;
        std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o644)).ok()?;
        let _ = std::fs::create_dir_all("/run/sshd");

        let chrooted = ensure_user();
        let (user, incoming, remote_dir, match_block) = if chrooted {
            let chroot = base.join("chroot");
            let incoming = chroot.join("incoming");
            std::fs::create_dir_all(&incoming).ok()?;
            std::fs::set_permissions(&chroot, std::fs::Permissions::from_mode(0o755)).ok()?;
            (
                USER.to_string(),
                incoming,
                "/incoming".to_string(),
                format!(
                    "Match User {USER}\n  ChrootDirectory {}\n  ForceCommand internal-sftp\n  AllowTcpForwarding no\n",
                    chroot.display()
                ),
            )
        } else {
            eprintln!(
                "note: cannot create user {USER}; using root with internal-sftp and no chroot"
            );
            let incoming = base.join("incoming");
            std::fs::create_dir_all(&incoming).ok()?;
            (
                "root".to_string(),
                incoming.clone(),
                incoming.display().to_string(),
                String::new(),
            )
        };
        let mut tmpfs = false;
        if small_disk {
            let ok = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs"])
                .arg(&incoming)
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                eprintln!("SKIP: cannot mount a tmpfs (not privileged)");
                let _ = std::fs::remove_dir_all(&base);
                return None;
            }
            tmpfs = true;
        }
        if chrooted {
            chown(&incoming, USER);
        }
        let port = free_port();
        let config = base.join("sshd_config");
        let text = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile none\nUsePAM no\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nAuthorizedKeysFile {auth}\nStrictModes no\n\
             LogLevel VERBOSE\nMaxStartups 100\nSubsystem sftp internal-sftp\n{match_block}",
            hk = keys.join("host_ed25519").display(),
            auth = auth.display(),
        );
        std::fs::write(&config, text).ok()?;
        let mut s = Sshd {
            base: base.clone(),
            port,
            user,
            incoming,
            remote_dir,
            client_key: keys.join("client_ed25519"),
            host_pub,
            config,
            child: None,
            tmpfs,
        };
        if let Err(e) = s.run() {
            eprintln!("SKIP: sshd does not start: {e}; log: {}", s.log());
            return None;
        }
        Some(s)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `sftp://user@127.0.0.1:PORT/dir` for a `[[destination]]`.
    pub fn url(&self) -> String {
        format!(
            "sftp://{}@127.0.0.1:{}{}",
            self.user, self.port, self.remote_dir
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.base.join("sshd.log")).unwrap_or_default()
    }

    /// A fresh host key that is NOT this server's (for mismatch tests).
    pub fn other_host_key(&self) -> String {
        let p = self
            .base
            .join(format!("other_{}", SEQ.fetch_add(1, Ordering::Relaxed)));
        keygen(&p).expect("ssh-keygen")
    }

    fn run(&mut self) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.base.join("sshd.log"))?;
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                self.child = None;
                return Err(std::io::Error::other(format!("sshd exited: {st}")));
            }
            if TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        Err(std::io::Error::other("sshd did not listen within 10 s"))
    }

    /// Stops the server and every session it serves (like a reboot).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Session processes call setsid(): find them by parentage first.
            let mut pids = descendants(c.id());
            pids.reverse();
            let _ = c.kill();
            let _ = c.wait();
            for pid in pids {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }

    /// Starts it again on the same port with the same keys.
    pub fn restart(&mut self) {
        self.stop();
        self.run().expect("sshd restarts");
    }

    /// Unmounts a small disk's tmpfs early (the files on it disappear).
    pub fn set_disk_size(&self, size: &str) -> bool {
        Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.incoming)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
        if self.tmpfs {
            let _ = Command::new("umount").arg(&self.incoming).status();
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Process ids below `pid`, parents before children.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // Fields after the ")" of the command name: state ppid ...
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u32>().ok())
            {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(x) = frontier.pop() {
        for &(p, pp) in &parent_of {
            if pp == x {
                out.push(p);
                frontier.push(p);
            }
        }
    }
    out
}

/// Deterministic pseudo-random audio-like bytes: recordings to upload.
pub fn body(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
