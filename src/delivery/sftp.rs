//! One SFTP connection to a destination and the remote publish protocol.
//!
//! Connection: TCP with a timeout, SSH handshake preferring the pinned key's
//! algorithm, the server's host key compared (type and bytes) with the
//! pinned `host_key` *before* any authentication, public-key authentication,
//! keepalives, and a session timeout so a dead line fails a blocking call
//! within seconds instead of hanging.
//!
//! Publish of one recording, in two steps so several connections can
//! upload at once while the final names still appear in queue order:
//! [`Remote::stage`] uploads the WAV and the JSON to `NAME.part`, fsyncs
//! each (`fsync@openssh.com`) and checks its size on the open handle;
//! [`Remote::commit`] renames the WAV and then the JSON to `NAME`. The rename is a plain SFTP rename, which OpenSSH implements with
//! link()+unlink(): it never replaces an existing file and is atomic, so a
//! final name is either absent or complete. A final name that already exists
//! with the same size and SHA-256 (read back) counts as delivered (a re-send
//! after a crash); with other content it is a [`SftpError::Conflict`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use ssh2::{ErrorCode, HostKeyType, MethodType, OpenFlags, OpenType, Session, Sftp};

use crate::config::{Delivery, Destination};

// libssh2 SFTP status codes (SSH_FX_*).
const FX_NO_SUCH_FILE: i32 = 2;
const FX_PERMISSION_DENIED: i32 = 3;
const FX_FAILURE: i32 = 4;
const FX_OP_UNSUPPORTED: i32 = 8;
const FX_NO_SPACE: i32 = 14;
const FX_QUOTA_EXCEEDED: i32 = 15;

/// Upload buffer: large writes let libssh2 pipeline many SFTP write requests.
const CHUNK: usize = 1 << 20;

/// Why a connection or an upload failed; [`SftpError::kind`] says what the
/// worker does about it.
#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    #[error("destination {dest}: {addr} not in delivery.allowed_networks; refusing to connect")]
    NotAllowed { dest: String, addr: SocketAddr },
    #[error("destination {dest}: pinned host_key does not parse: {reason}")]
    BadPinnedKey { dest: String, reason: String },
    #[error(
        "destination {dest}: HOST KEY MISMATCH at {addr}: server offered {got}, pinned {pinned}; nothing uploaded"
    )]
    HostKeyMismatch {
        dest: String,
        addr: SocketAddr,
        got: String,
        pinned: String,
    },
    #[error("destination {dest}: authentication refused for user {user} with {identity}: {msg}")]
    AuthRefused {
        dest: String,
        user: String,
        identity: PathBuf,
        msg: String,
    },
    #[error("destination {dest}: permission denied on {path}: {msg}")]
    PermissionDenied {
        dest: String,
        path: String,
        msg: String,
    },
    #[error("destination {dest}: no space on the server writing {path}: {msg}")]
    NoSpace {
        dest: String,
        path: String,
        msg: String,
    },
    #[error("destination {dest}: connection lost or failed ({what}): {msg}")]
    Connection {
        dest: String,
        what: String,
        msg: String,
    },
    #[error("destination {dest}: {path} already exists on the server with different content")]
    Conflict { dest: String, path: String },
    #[error("destination {dest}: local spool file {path}: {msg}")]
    BadSpoolFile {
        dest: String,
        path: PathBuf,
        msg: String,
    },
}

/// What the worker does with a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The destination is unusable for now: drop the connection, back off,
    /// put the recording back in ready.
    Retry,
    /// This recording can never be published as is: held, alarm.
    Hold,
    /// The local files are damaged: quarantine.
    Quarantine,
}

impl SftpError {
    pub fn kind(&self) -> FailureKind {
        match self {
            SftpError::Conflict { .. } => FailureKind::Hold,
            SftpError::BadSpoolFile { .. } => FailureKind::Quarantine,
            _ => FailureKind::Retry,
        }
    }
    /// Failures that need an operator (logged at error level every time).
    pub fn is_alarm(&self) -> bool {
        matches!(
            self,
            SftpError::HostKeyMismatch { .. }
                | SftpError::BadPinnedKey { .. }
                | SftpError::NotAllowed { .. }
                | SftpError::Conflict { .. }
                | SftpError::AuthRefused { .. }
                | SftpError::PermissionDenied { .. }
                | SftpError::BadSpoolFile { .. }
        )
    }
}

/// A pinned host key: algorithm name and key blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedKey {
    pub algo: String,
    pub blob: Vec<u8>,
}

/// Parses "ssh-ed25519 AAAA... [comment]" (a known_hosts line with a host
/// field in front is accepted too).
pub fn parse_pinned_key(s: &str) -> Result<PinnedKey, String> {
    let mut toks = s.split_whitespace();
    let algo = loop {
        match toks.next() {
            Some(t) if t.starts_with("ssh-") || t.starts_with("ecdsa-sha2-") => break t,
            Some(_) => continue,
            None => return Err("no key type (ssh-ed25519, ecdsa-sha2-..., ssh-rsa)".into()),
        }
    };
    let b64 = toks.next().ok_or("no key data after the key type")?;
    let blob = base64_decode(b64).ok_or("key data is not base64")?;
    // The blob starts with the algorithm name as an SSH string.
    let inner = blob.get(4..).and_then(|rest| {
        let n = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
        rest.get(..n)
    });
    if inner != Some(algo.as_bytes()) {
        return Err(format!("key data is not a {algo} key"));
    }
    Ok(PinnedKey {
        algo: algo.to_string(),
        blob,
    })
}

fn key_type_name(t: HostKeyType) -> &'static str {
    match t {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => "unknown",
    }
}

use crate::config::base64_decode;

/// A destination's rate limit, shared by all its connections.
pub type SharedBucket = std::sync::Arc<std::sync::Mutex<TokenBucket>>;

/// A token bucket limiting upload bytes per second (the shared line).
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket for a destination's connections to share.
    pub fn shared(bytes_per_sec: u64) -> SharedBucket {
        std::sync::Arc::new(std::sync::Mutex::new(TokenBucket::new(bytes_per_sec)))
    }

    /// Upload write size under this limit: about a tenth of a second of
    /// traffic, so a slow line sees an even flow rather than bursts of a
    /// whole buffer at full speed followed by long pauses.
    pub fn chunk(&self) -> usize {
        ((self.rate / 10.0) as usize).clamp(16 * 1024, CHUNK)
    }

    pub fn new(bytes_per_sec: u64) -> TokenBucket {
        let rate = bytes_per_sec.max(1) as f64;
        // A tenth of a second of burst, at least one write's worth.
        let capacity = (rate / 10.0).max(32.0 * 1024.0);
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            last: Instant::now(),
        }
    }
    /// How long to wait before sending `n` bytes; takes the tokens.
    pub fn take(&mut self, n: usize, now: Instant) -> Duration {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Result of publishing one recording.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// Both files uploaded now.
    Uploaded,
    /// Both final names were already there with the same content (a re-send).
    AlreadyThere,
}

/// One file uploaded under its temporary name.
#[derive(Debug)]
struct StagedFile {
    part: String,
    remote: String,
    size: u64,
    sha256: String,
}

/// A recording whose WAV and JSON are on the server under temporary names.
#[derive(Debug)]
pub struct Staged {
    wav: StagedFile,
    json: StagedFile,
}

/// An authenticated SFTP session to one destination.
pub struct Remote {
    dest: String,
    _sess: Session,
    sftp: Sftp,
    remote_dir: String,
    bucket: Option<SharedBucket>,
    made_dirs: std::collections::HashSet<String>,
    keepalive: Duration,
    last_traffic: Instant,
    sess_for_keepalive: Session,
}

impl Remote {
    /// Connects, checks the pinned host key, authenticates and opens SFTP.
    /// `bucket`: the destination's rate limit (one for all its
    /// connections); `None` = unlimited.
    pub fn connect(
        dest: &Destination,
        delivery: &Delivery,
        bucket: Option<SharedBucket>,
    ) -> Result<Remote, SftpError> {
        let name = dest.name.clone();
        let addr = SocketAddr::new(dest.host, dest.port);
        if !delivery
            .allowed_networks
            .iter()
            .any(|n| n.contains(dest.host))
        {
            return Err(SftpError::NotAllowed { dest: name, addr });
        }
        let pinned =
            parse_pinned_key(&dest.host_key).map_err(|reason| SftpError::BadPinnedKey {
                dest: name.clone(),
                reason,
            })?;
        let conn = |what: &str, msg: String| SftpError::Connection {
            dest: name.clone(),
            what: what.into(),
            msg,
        };
        let connect_timeout = delivery.connect_timeout.max(Duration::from_millis(100));
        let tcp = TcpStream::connect_timeout(&addr, connect_timeout)
            .map_err(|e| conn("connect", format!("{addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let mut sess = Session::new().map_err(|e| conn("session", e.to_string()))?;
        sess.set_tcp_stream(tcp);
        // Every blocking call fails after this long without progress: a dead
        // line is noticed within seconds.
        sess.set_timeout(op_timeout(delivery).as_millis().min(u32::MAX as u128) as u32);
        // Ask for the pinned algorithm so a server with several host keys
        // shows the one we pinned.
        let _ = sess.method_pref(MethodType::HostKey, &pinned.algo);
        sess.handshake()
            .map_err(|e| conn("handshake", e.to_string()))?;
        let (blob, ty) = sess
            .host_key()
            .ok_or_else(|| conn("handshake", "no host key from server".into()))?;
        if key_type_name(ty) != pinned.algo || blob != pinned.blob.as_slice() {
            return Err(SftpError::HostKeyMismatch {
                dest: name,
                addr,
                got: format!("{} SHA256:{}", key_type_name(ty), fingerprint(blob)),
                pinned: format!("{} SHA256:{}", pinned.algo, fingerprint(&pinned.blob)),
            });
        }
        sess.userauth_pubkey_file(&dest.user, None, &dest.identity, None)
            .map_err(|e| SftpError::AuthRefused {
                dest: name.clone(),
                user: dest.user.clone(),
                identity: dest.identity.clone(),
                msg: e.to_string(),
            })?;
        if !sess.authenticated() {
            return Err(SftpError::AuthRefused {
                dest: name,
                user: dest.user.clone(),
                identity: dest.identity.clone(),
                msg: "not authenticated".into(),
            });
        }
        let ka = delivery.keepalive.as_secs().clamp(1, u32::MAX as u64) as u32;
        sess.set_keepalive(true, ka);
        let sftp = sess
            .sftp()
            .map_err(|e| conn("sftp subsystem", e.to_string()))?;
        Ok(Remote {
            dest: name,
            sess_for_keepalive: sess.clone(),
            _sess: sess,
            sftp,
            remote_dir: dest.remote_dir.trim_end_matches('/').to_string(),
            bucket,
            made_dirs: Default::default(),
            keepalive: delivery.keepalive,
            last_traffic: Instant::now(),
        })
    }

    /// Sends a keepalive when the session has been idle for the keepalive
    /// interval; an error means the line is dead.
    pub fn keepalive(&mut self) -> Result<(), SftpError> {
        if self.last_traffic.elapsed() >= self.keepalive {
            self.sess_for_keepalive
                .keepalive_send()
                .map_err(|e| self.classify("keepalive", "", e))?;
            // A cheap round trip proves the server still answers.
            self.sftp
                .stat(Path::new(if self.remote_dir.is_empty() {
                    "/"
                } else {
                    &self.remote_dir
                }))
                .map_err(|e| self.classify("stat", &self.remote_dir.clone(), e))?;
            self.last_traffic = Instant::now();
        }
        Ok(())
    }

    /// Publishes one recording: WAV, then JSON ([`Remote::stage`] then
    /// [`Remote::commit`]). `wav_sha256` is the local WAV's verified hash
    /// (lowercase hex).
    pub fn publish(
        &mut self,
        stem: &str,
        wav: &Path,
        json: &Path,
        wav_sha256: &str,
    ) -> Result<Published, SftpError> {
        let staged = self.stage(stem, wav, json, wav_sha256)?;
        self.commit(&staged)
    }

    /// Uploads both files of a recording under their temporary names
    /// (`.part`, fsynced, size checked); nothing is visible under a final
    /// name yet. Several connections may stage at once; [`Remote::commit`]
    /// then publishes in queue order.
    pub fn stage(
        &mut self,
        stem: &str,
        wav: &Path,
        json: &Path,
        wav_sha256: &str,
    ) -> Result<Staged, SftpError> {
        let base = format!("{}/{}", self.remote_dir, stem);
        if let Some((dir, _)) = base.rsplit_once('/') {
            self.make_dirs(dir)?;
        }
        let json_sha =
            crate::delivery::spool::sha256_file(json).map_err(|e| SftpError::BadSpoolFile {
                dest: self.dest.clone(),
                path: json.to_path_buf(),
                msg: e.to_string(),
            })?;
        let ext = crate::delivery::spool::audio_ext(wav);
        let wav = self.stage_file(wav, format!("{base}.{ext}"), wav_sha256.to_string())?;
        let json = match self.stage_file(json, format!("{base}.json"), json_sha) {
            Ok(j) => j,
            Err(e) => {
                self.unlink_part(&wav);
                return Err(e);
            }
        };
        self.last_traffic = Instant::now();
        Ok(Staged { wav, json })
    }

    /// Renames a staged recording's WAV and then its JSON to their final
    /// names (the JSON never without the WAV).
    pub fn commit(&mut self, staged: &Staged) -> Result<Published, SftpError> {
        let a = match self.commit_file(&staged.wav) {
            Ok(a) => a,
            Err(e) => {
                self.unlink_part(&staged.json);
                return Err(e);
            }
        };
        let b = self.commit_file(&staged.json)?;
        self.last_traffic = Instant::now();
        Ok(if a && b {
            Published::AlreadyThere
        } else {
            Published::Uploaded
        })
    }

    /// Removes a staged recording's temporary files (best effort: the line
    /// may be gone, and a later upload truncates them anyway).
    pub fn discard(&mut self, staged: &Staged) {
        self.unlink_part(&staged.wav);
        self.unlink_part(&staged.json);
    }

    fn unlink_part(&mut self, p: &StagedFile) {
        let _ = self.sftp.unlink(Path::new(&p.part));
    }

    /// Uploads one file to `remote.part`.
    fn stage_file(
        &mut self,
        local: &Path,
        remote: String,
        sha256: String,
    ) -> Result<StagedFile, SftpError> {
        let size = std::fs::metadata(local)
            .map_err(|e| SftpError::BadSpoolFile {
                dest: self.dest.clone(),
                path: local.to_path_buf(),
                msg: e.to_string(),
            })?
            .len();
        let part = format!("{remote}.part");
        if let Err(e) = self.upload_part(local, &part, size) {
            // Free the space a half-written part takes (best effort: the line may be gone).
            if matches!(e, SftpError::NoSpace { .. }) {
                let _ = self.sftp.unlink(Path::new(&part));
            }
            return Err(e);
        }
        Ok(StagedFile {
            part,
            remote,
            size,
            sha256,
        })
    }

    /// Renames `part` to its final name; true when the final name was
    /// already there with the same content.
    fn commit_file(&mut self, f: &StagedFile) -> Result<bool, SftpError> {
        // No existence check up front (one round trip less per file): the
        // rename refuses an existing final name, and only then do we compare.
        match self
            .sftp
            .rename(Path::new(&f.part), Path::new(&f.remote), None)
        {
            Ok(()) => Ok(false),
            Err(e) => {
                // Already published (a re-send after a crash, or a previous
                // attempt whose reply was lost): the content decides.
                match self.already_there(&f.remote, f.size, &f.sha256) {
                    Ok(true) => {
                        self.unlink_part(f);
                        Ok(true)
                    }
                    Ok(false) => Err(self.classify("rename", &f.remote, e)),
                    Err(c @ SftpError::Conflict { .. }) => {
                        self.unlink_part(f);
                        Err(c)
                    }
                    Err(other) => Err(other),
                }
            }
        }
    }

    fn upload_part(&mut self, local: &Path, part: &str, size: u64) -> Result<(), SftpError> {
        let mut src = std::fs::File::open(local).map_err(|e| SftpError::BadSpoolFile {
            dest: self.dest.clone(),
            path: local.to_path_buf(),
            msg: e.to_string(),
        })?;
        let mut dst = self
            .sftp
            .open_mode(
                Path::new(part),
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                0o644,
                OpenType::File,
            )
            .map_err(|e| self.classify("open", part, e))?;
        let chunk = match &self.bucket {
            Some(b) => b.lock().map(|b| b.chunk()).unwrap_or(CHUNK),
            None => CHUNK,
        };
        let mut buf = vec![0u8; chunk];
        let mut sent = 0u64;
        loop {
            let n = src.read(&mut buf).map_err(|e| SftpError::BadSpoolFile {
                dest: self.dest.clone(),
                path: local.to_path_buf(),
                msg: e.to_string(),
            })?;
            if n == 0 {
                break;
            }
            if let Some(b) = &self.bucket {
                // Take under the lock, sleep outside it: the debt each
                // connection runs up spaces them all to the one rate.
                let wait = b
                    .lock()
                    .map(|mut b| b.take(n, Instant::now()))
                    .unwrap_or_default();
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
            }
            dst.write_all(&buf[..n])
                .map_err(|e| self.classify_io("write", part, e))?;
            sent += n as u64;
        }
        if sent != size {
            return Err(SftpError::BadSpoolFile {
                dest: self.dest.clone(),
                path: local.to_path_buf(),
                msg: format!("changed size while uploading ({size} -> {sent})"),
            });
        }
        match dst.fsync() {
            Ok(()) => {}
            Err(e) if matches!(e.code(), ErrorCode::SFTP(FX_OP_UNSUPPORTED)) => {
                tracing::debug!(destination = %self.dest, "server has no fsync@openssh.com");
            }
            Err(e) => return Err(self.classify("fsync", part, e)),
        }
        let st = dst.stat().map_err(|e| self.classify("stat", part, e))?;
        dst.close().map_err(|e| self.classify("close", part, e))?;
        if st.size != Some(size) {
            return Err(SftpError::Connection {
                dest: self.dest.clone(),
                what: "size check".into(),
                msg: format!(
                    "{part} is {:?} bytes on the server, {size} expected",
                    st.size
                ),
            });
        }
        Ok(())
    }

    /// Whether `remote` exists with this size and hash. Exists with other
    /// content: [`SftpError::Conflict`].
    fn already_there(&mut self, remote: &str, size: u64, sha256: &str) -> Result<bool, SftpError> {
        let st = match self.sftp.stat(Path::new(remote)) {
            Ok(st) => st,
            Err(e) if matches!(e.code(), ErrorCode::SFTP(FX_NO_SUCH_FILE)) => return Ok(false),
            Err(e) => return Err(self.classify("stat", remote, e)),
        };
        let conflict = || SftpError::Conflict {
            dest: self.dest.clone(),
            path: remote.to_string(),
        };
        if st.size != Some(size) {
            return Err(conflict());
        }
        let mut f = self
            .sftp
            .open(Path::new(remote))
            .map_err(|e| self.classify("open", remote, e))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| self.classify_io("read back", remote, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        if hex::encode(h.finalize()) != sha256 {
            return Err(conflict());
        }
        Ok(true)
    }

    fn make_dirs(&mut self, dir: &str) -> Result<(), SftpError> {
        if self.made_dirs.contains(dir) {
            return Ok(());
        }
        if self
            .sftp
            .stat(Path::new(dir))
            .map(|s| s.is_dir())
            .unwrap_or(false)
        {
            self.made_dirs.insert(dir.to_string());
            return Ok(());
        }
        let mut cur = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            cur.push('/');
            cur.push_str(part);
            if cur.len() <= self.remote_dir.len() && self.remote_dir.starts_with(&cur) {
                continue; // the configured remote_dir is the server's to provide
            }
            if let Err(e) = self.sftp.mkdir(Path::new(&cur), 0o755) {
                // "Already exists" comes back as a generic failure: look.
                if !self
                    .sftp
                    .stat(Path::new(&cur))
                    .map(|s| s.is_dir())
                    .unwrap_or(false)
                {
                    return Err(self.classify("mkdir", &cur, e));
                }
            }
        }
        self.made_dirs.insert(dir.to_string());
        Ok(())
    }

    fn classify(&self, what: &str, path: &str, e: ssh2::Error) -> SftpError {
        let dest = self.dest.clone();
        let msg = e.to_string();
        match e.code() {
            ErrorCode::SFTP(FX_PERMISSION_DENIED) => SftpError::PermissionDenied {
                dest,
                path: path.into(),
                msg,
            },
            // OpenSSH reports ENOSPC/EDQUOT as a generic failure on write/fsync/close.
            ErrorCode::SFTP(FX_NO_SPACE | FX_QUOTA_EXCEEDED) => SftpError::NoSpace {
                dest,
                path: path.into(),
                msg,
            },
            ErrorCode::SFTP(FX_FAILURE) if matches!(what, "write" | "fsync" | "close") => {
                SftpError::NoSpace {
                    dest,
                    path: path.into(),
                    msg: format!("{msg} (generic failure, probably full or over quota)"),
                }
            }
            _ => SftpError::Connection {
                dest,
                what: format!("{what} {path}"),
                msg,
            },
        }
    }

    fn classify_io(&self, what: &str, path: &str, e: io::Error) -> SftpError {
        // ssh2's File turns SFTP errors into io::Error keeping only the
        // message (ssh2::Error::from_errno's text): map it back.
        let code = match e.to_string().as_str() {
            "permission denied" => Some(FX_PERMISSION_DENIED),
            "failure" => Some(FX_FAILURE),
            "no space on filesystem" => Some(FX_NO_SPACE),
            "quota exceeded" => Some(FX_QUOTA_EXCEEDED),
            _ => None,
        };
        match code {
            Some(c) => self.classify(what, path, ssh2::Error::from_errno(ErrorCode::SFTP(c))),
            None => SftpError::Connection {
                dest: self.dest.clone(),
                what: format!("{what} {path}"),
                msg: e.to_string(),
            },
        }
    }
}

/// Timeout of each blocking SSH call: twice the keepalive, at least 5 s.
pub fn op_timeout(delivery: &Delivery) -> Duration {
    (delivery.keepalive * 2).max(Duration::from_secs(5))
}

fn fingerprint(blob: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let d = Sha256::digest(blob);
    let mut s = String::new();
    for c in d.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_key_parses_and_checks_type() {
        // A real ed25519 public key (generated for this test).
        let k =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMYiHbMDRP9aiBpSV+Vnvi3HOQ/SdFbsQV27zZlKlQwP test";
        let p = parse_pinned_key(k).unwrap();
        assert_eq!(p.algo, "ssh-ed25519");
        assert_eq!(p.blob.len(), 51);
        assert!(parse_pinned_key(&format!("192.0.2.10 {k}")).is_ok());
        assert!(
            parse_pinned_key(
                "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIMYiHbMDRP9aiBpSV+Vnvi3HOQ/SdFbsQV27zZlKlQwP"
            )
            .is_err()
        );
        assert!(parse_pinned_key("ssh-ed25519 !!!").is_err());
        assert!(parse_pinned_key("AAAA").is_err());
    }

    #[test]
    fn base64_roundtrip_vectors() {
        assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("Zm9vYg==").unwrap(), b"foob");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert!(base64_decode("Z").is_none());
    }

    #[test]
    fn token_bucket_limits_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000_000);
        // Burst allowance first, then 1 MB costs one second.
        let mut waited = Duration::ZERO;
        let mut now = t0;
        for _ in 0..20 {
            let w = b.take(100_000, now);
            now += w;
            waited += w;
        }
        let secs = waited.as_secs_f64();
        assert!((1.8..2.0).contains(&secs), "{secs}");
    }
}
