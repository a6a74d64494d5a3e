//! SRTP (RFC 3711) with SDES keys (RFC 4568 `a=crypto`), decrypted through
//! libsrtp2 (Debian's libsrtp2, through the `srtp` crate's raw bindings).
//!
//! [`Keys`] says how a party's media is protected, from its SDP.
//! [`SrtpLeg`] holds one direction's libsrtp session: the keys the
//! *sender* offered in its own SDP (RFC 4568 section 6.1: each side
//! announces the key it encrypts with). Keys live only in memory: they are
//! never logged (Debug prints the suite only) and never stored.

use crate::sip::sdp::{Crypto, Media};

/// How a party's media is protected, as its SDP says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Keys {
    /// RTP/AVP: plain RTP.
    #[default]
    Clear,
    /// RTP/SAVP with `a=crypto` lines: decryptable.
    Sdes(Vec<Crypto>),
    /// Encrypted with keys callrec cannot see: "dtls" (DTLS-SRTP), "zrtp",
    /// or "no-keys" (a secure profile without usable key lines).
    Unseen(&'static str),
}

impl Keys {
    /// From an SDP media section.
    pub fn from_sdp(m: &Media) -> Keys {
        if let Some(why) = m.unseen_keys {
            return Keys::Unseen(why);
        }
        if !m.is_secure() {
            return Keys::Clear;
        }
        if m.crypto.is_empty() {
            Keys::Unseen("no-keys")
        } else {
            Keys::Sdes(m.crypto.clone())
        }
    }
}

use base64::Engine as _;
use srtp::sys;

/// Why a leg's SRTP could not be set up or a packet not decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("crypto suite not supported")]
    Suite,
    #[error("malformed key parameters")]
    KeyParams,
    #[error("libsrtp refused the keys (status {0})")]
    Create(u32),
    #[error("authentication failed")]
    Auth,
    #[error("replayed packet")]
    Replay,
    #[error("undecryptable packet (status {0})")]
    Other(u32),
}

/// Suite → (cipher type, cipher key length with salt, auth type, auth key
/// length, tag length, service), RFC 4568 section 6.2 and RFC 7714 section 14.
fn suite(name: &str) -> Option<sys::srtp_crypto_policy_t> {
    const ICM128: u32 = 1;
    const ICM192: u32 = 4;
    const ICM256: u32 = 5;
    const GCM128: u32 = 6;
    const GCM256: u32 = 7;
    const HMAC_SHA1: u32 = 3;
    let (cipher, klen, auth, alen, tag) = match name {
        "AES_CM_128_HMAC_SHA1_80" => (ICM128, 30, HMAC_SHA1, 20, 10),
        "AES_CM_128_HMAC_SHA1_32" => (ICM128, 30, HMAC_SHA1, 20, 4),
        "AES_192_CM_HMAC_SHA1_80" => (ICM192, 38, HMAC_SHA1, 20, 10),
        "AES_192_CM_HMAC_SHA1_32" => (ICM192, 38, HMAC_SHA1, 20, 4),
        "AES_256_CM_HMAC_SHA1_80" => (ICM256, 46, HMAC_SHA1, 20, 10),
        "AES_256_CM_HMAC_SHA1_32" => (ICM256, 46, HMAC_SHA1, 20, 4),
        "AEAD_AES_128_GCM" => (GCM128, 28, 0, 0, 16),
        "AEAD_AES_256_GCM" => (GCM256, 44, 0, 0, 16),
        _ => return None,
    };
    Some(sys::srtp_crypto_policy_t {
        cipher_type: cipher,
        cipher_key_len: klen,
        auth_type: auth,
        auth_key_len: alen,
        auth_tag_len: tag,
        sec_serv: 3,
    })
}

/// One `inline:` key parameter: master key and salt, MKI value and length.
struct MasterKey {
    key: Vec<u8>,
    mki: Vec<u8>,
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        // Keys never outlive their session in memory we let go of.
        self.key.iter_mut().for_each(|b| *b = 0);
    }
}

/// `inline:<base64>[|lifetime][|MKI:len]` (RFC 4568 section 9.2). The
/// lifetime is checked for form only: libsrtp enforces its own key limit.
fn master_key(param: &str, key_len: usize) -> Result<MasterKey, SrtpError> {
    let rest = param.strip_prefix("inline:").ok_or(SrtpError::KeyParams)?;
    let mut parts = rest.split('|');
    let b64 = parts.next().ok_or(SrtpError::KeyParams)?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| SrtpError::KeyParams)?;
    if key.len() != key_len {
        return Err(SrtpError::KeyParams);
    }
    let mut mki = Vec::new();
    for p in parts {
        if let Some((v, len)) = p.split_once(':') {
            let len: usize = len.parse().map_err(|_| SrtpError::KeyParams)?;
            let v: u64 = v.parse().map_err(|_| SrtpError::KeyParams)?;
            if !(1..=8).contains(&len) || (len < 8 && v >> (8 * len) != 0) {
                return Err(SrtpError::KeyParams);
            }
            mki = v.to_be_bytes()[8 - len..].to_vec();
        } else if !(p.starts_with("2^") || p.bytes().all(|b| b.is_ascii_digit())) {
            return Err(SrtpError::KeyParams);
        }
    }
    Ok(MasterKey { key, mki })
}

/// libsrtp's one-time initialisation.
fn init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    // SAFETY: srtp_init has no preconditions; called once.
    INIT.call_once(|| unsafe {
        sys::srtp_init();
    });
}

/// One direction's SRTP: decrypts and authenticates what one party sends.
pub struct SrtpLeg {
    ctx: sys::srtp_t,
    use_mki: bool,
    buf: Vec<u8>,
    /// Packets decrypted, and refused (authentication, replay).
    pub ok: u64,
    pub failed: u64,
}

// SAFETY: the libsrtp session is owned and only used through &mut self.
unsafe impl Send for SrtpLeg {}

impl std::fmt::Debug for SrtpLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SrtpLeg(ok {}, failed {})", self.ok, self.failed)
    }
}

impl SrtpLeg {
    /// A session for the keys of one `a=crypto` line (every key of the
    /// line, selected by MKI when it has one).
    pub fn new(c: &Crypto) -> Result<SrtpLeg, SrtpError> {
        init();
        let mut policy: sys::srtp_policy_t = unsafe { std::mem::zeroed() };
        let rtp = suite(&c.suite).ok_or(SrtpError::Suite)?;
        policy.rtp = rtp;
        policy.rtcp = rtp;
        policy.ssrc.type_ = sys::srtp_ssrc_type_t_ssrc_any_inbound;
        let keys: Vec<MasterKey> = c
            .key_params
            .iter()
            .map(|p| master_key(p, rtp.cipher_key_len as usize))
            .collect::<Result<_, _>>()?;
        let use_mki = keys.iter().any(|k| !k.mki.is_empty());
        if keys.is_empty() || (use_mki && keys.iter().any(|k| k.mki.len() != keys[0].mki.len())) {
            return Err(SrtpError::KeyParams);
        }
        let mut raw: Vec<sys::srtp_master_key_t> = keys
            .iter()
            .map(|k| sys::srtp_master_key_t {
                key: k.key.as_ptr() as *mut u8,
                mki_id: k.mki.as_ptr() as *mut u8,
                mki_size: k.mki.len() as u32,
            })
            .collect();
        let mut ptrs: Vec<*mut sys::srtp_master_key_t> =
            raw.iter_mut().map(|k| k as *mut _).collect();
        if use_mki {
            policy.keys = ptrs.as_mut_ptr();
            policy.num_master_keys = ptrs.len() as _;
        } else {
            policy.key = keys[0].key.as_ptr() as *mut u8;
        }
        // A mirror port can show a packet twice: a replay is counted, not fatal.
        policy.window_size = 1024;
        let mut ctx: sys::srtp_t = std::ptr::null_mut();
        // SAFETY: policy and the key buffers outlive the call; libsrtp
        // copies what it keeps.
        let st = unsafe { sys::srtp_create(&mut ctx, &policy) };
        if st != 0 || ctx.is_null() {
            return Err(SrtpError::Create(st));
        }
        Ok(SrtpLeg {
            ctx,
            use_mki,
            buf: Vec::with_capacity(1500),
            ok: 0,
            failed: 0,
        })
    }

    /// Decrypts one SRTP packet; the plain RTP is valid until the next call.
    pub fn unprotect(&mut self, pkt: &[u8]) -> Result<&[u8], SrtpError> {
        if pkt.len() < 12 || pkt.len() > 4096 {
            self.failed += 1;
            return Err(SrtpError::Other(0));
        }
        self.buf.clear();
        self.buf.extend_from_slice(pkt);
        let mut len = pkt.len() as i32;
        // SAFETY: buf holds len bytes; libsrtp only shortens the packet.
        let st = unsafe {
            let p = self.buf.as_mut_ptr() as *mut std::ffi::c_void;
            if self.use_mki {
                sys::srtp_unprotect_mki(self.ctx, p, &mut len, 1)
            } else {
                sys::srtp_unprotect(self.ctx, p, &mut len)
            }
        };
        match st {
            0 => {
                self.ok += 1;
                self.buf.truncate(len.max(0) as usize);
                Ok(&self.buf)
            }
            sys::srtp_err_status_t_srtp_err_status_replay_fail => Err(SrtpError::Replay),
            sys::srtp_err_status_t_srtp_err_status_auth_fail => {
                self.failed += 1;
                Err(SrtpError::Auth)
            }
            s => {
                self.failed += 1;
                Err(SrtpError::Other(s))
            }
        }
    }
}

impl Drop for SrtpLeg {
    fn drop(&mut self) {
        // SAFETY: ctx came from srtp_create and is freed once.
        unsafe {
            sys::srtp_dealloc(self.ctx);
        }
    }
}

/// How one leg's packets are to be read.
#[derive(Debug, Default)]
pub enum LegCrypto {
    /// Plain RTP.
    #[default]
    Clear,
    /// SRTP with keys from the SDP.
    Srtp(Box<SrtpLeg>),
    /// Encrypted with keys out of sight (or keys that would not load):
    /// every packet is undecodable, never decoded as if it were plain.
    Opaque(&'static str),
}

impl LegCrypto {
    /// Keys out of sight, or SRTP of which nothing authenticated.
    pub fn encrypted(&self) -> bool {
        match self {
            LegCrypto::Clear => false,
            LegCrypto::Srtp(s) => s.ok == 0 && s.failed > 0,
            LegCrypto::Opaque(_) => true,
        }
    }

    /// For packets `sender` sends: its own keys (RFC 4568 section 6.1),
    /// the line whose tag the receiver's answer accepted if it names one.
    pub fn for_sender(sender: &Keys, receiver: &Keys) -> LegCrypto {
        match sender {
            Keys::Clear => LegCrypto::Clear,
            Keys::Unseen(why) => LegCrypto::Opaque(why),
            Keys::Sdes(lines) => {
                let tags: Vec<u32> = match receiver {
                    Keys::Sdes(r) => r.iter().map(|c| c.tag).collect(),
                    _ => Vec::new(),
                };
                let line = lines
                    .iter()
                    .find(|c| tags.contains(&c.tag))
                    .or(lines.first());
                match line.map(SrtpLeg::new) {
                    Some(Ok(s)) => LegCrypto::Srtp(Box::new(s)),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "SRTP keys unusable: the leg is recorded as encrypted");
                        LegCrypto::Opaque("bad-keys")
                    }
                    None => LegCrypto::Opaque("no-keys"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crypto(suite: &str, params: &str) -> Crypto {
        Crypto::parse(&format!("1 {suite} {params}")).unwrap()
    }

    #[test]
    fn key_params_are_checked() {
        let k30 = base64::engine::general_purpose::STANDARD.encode([7u8; 30]);
        assert!(SrtpLeg::new(&crypto("AES_CM_128_HMAC_SHA1_80", &format!("inline:{k30}"))).is_ok());
        assert!(
            SrtpLeg::new(&crypto(
                "AES_CM_128_HMAC_SHA1_80",
                &format!("inline:{k30}|2^20|1:4")
            ))
            .is_ok()
        );
        assert_eq!(
            SrtpLeg::new(&crypto("AES_CM_128_HMAC_SHA1_80", "inline:AAAA")).unwrap_err(),
            SrtpError::KeyParams
        );
        assert_eq!(
            SrtpLeg::new(&crypto("F8_128_HMAC_SHA1_80", &format!("inline:{k30}"))).unwrap_err(),
            SrtpError::Suite
        );
        assert_eq!(
            SrtpLeg::new(&crypto(
                "AES_CM_128_HMAC_SHA1_80",
                &format!("inline:{k30}|1:9")
            ))
            .unwrap_err(),
            SrtpError::KeyParams
        );
    }

    #[test]
    fn garbage_is_refused_not_decoded() {
        let k30 = base64::engine::general_purpose::STANDARD.encode([7u8; 30]);
        let mut s =
            SrtpLeg::new(&crypto("AES_CM_128_HMAC_SHA1_80", &format!("inline:{k30}"))).unwrap();
        let pkt = crate::media::rtp::build_rtp(0, 1, 160, 9, false, &[0x55; 170]);
        assert_eq!(s.unprotect(&pkt).unwrap_err(), SrtpError::Auth);
        assert!(s.unprotect(&[0x80; 5]).is_err());
        assert_eq!((s.ok, s.failed), (0, 2));
    }
}
