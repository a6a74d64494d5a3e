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
