//! Whether a recorded call's audio can be decoded at all, decided on the
//! capture thread where the call's history line is written: no recording
//! of encrypted or undecodable media is ever presented as good.
//!
//! Only calls whose SDP gives cause are watched (a secure profile, or a
//! payload type bound to a codec callrec cannot decode): their routes ask
//! [`MediaCheck::on_packet`] per packet; every other call costs nothing.
//! For SDES keys, the first [`PROBE_PACKETS`] packets of each leg are
//! authenticated with a libsrtp session of the capture thread's own (the
//! shard decrypts for the recording with its own session): a wrong key or
//! tag fails there. At the end, [`MediaCheck::verdict`] says
//! `media-encrypted` or `codec-unsupported:NAME` when no leg gave audio.

use crate::calls::tracker::{CallKey, MediaLegs};
use crate::media::srtp::{Keys, LegCrypto, SrtpLeg};
use crate::recording::formats::{leg_formats, leg_keys};
use crate::recording::recorder::Leg;
use foldhash::{HashMap, HashMapExt};

/// SRTP packets per leg whose authentication the capture thread checks.
pub const PROBE_PACKETS: u32 = 16;

#[derive(Default)]
struct LegCheck {
    /// Bit n: payload type n is bound to a codec callrec cannot decode.
    bad_pts: u128,
    good: u64,
    bad: u64,
    /// Keys out of sight: every packet is undecodable.
    opaque: bool,
    probe: Option<Box<SrtpLeg>>,
    probed: u32,
    auth_ok: u64,
    auth_failed: u64,
}

impl LegCheck {
    fn traffic(&self) -> bool {
        self.good + self.bad + self.auth_failed > 0
    }
    fn encrypted(&self) -> bool {
        self.opaque || (self.auth_ok == 0 && self.auth_failed > 0)
    }
    fn decodable(&self) -> bool {
        !self.encrypted() && self.good > 0
    }
}

#[derive(Default)]
struct CallCheck {
    legs: [LegCheck; 2],
    unsupported: Option<String>,
}

/// The watched calls of one engine.
#[derive(Default)]
pub struct MediaCheck {
    calls: HashMap<CallKey, CallCheck>,
}

impl MediaCheck {
    pub fn new() -> MediaCheck {
        MediaCheck {
            calls: HashMap::new(),
        }
    }

    /// A call's media as (re)signalled; true when its packets must be
    /// shown to [`MediaCheck::on_packet`]. Counts so far are kept.
    pub fn set_legs(&mut self, key: CallKey, legs: &MediaLegs) -> bool {
        let mut watch = self.calls.contains_key(&key);
        let mut fresh = CallCheck::default();
        for leg in [Leg::Subscriber, Leg::Remote] {
            let (_, unsupported) = leg_formats(legs, leg);
            let (sender, receiver) = leg_keys(legs, leg);
            let l = &mut fresh.legs[leg as usize];
            for (pt, name) in &unsupported {
                l.bad_pts |= 1u128 << (pt & 127);
                fresh.unsupported.get_or_insert_with(|| name.clone());
            }
            match LegCrypto::for_sender(&sender, &receiver) {
                LegCrypto::Clear => {}
                LegCrypto::Opaque(_) => l.opaque = true,
                LegCrypto::Srtp(s) => l.probe = Some(s),
            }
            watch |= l.bad_pts != 0 || l.opaque || !matches!(sender, Keys::Clear);
        }
        if !watch {
            return false;
        }
        let c = self.calls.entry(key).or_default();
        for (old, new) in c.legs.iter_mut().zip(fresh.legs) {
            old.bad_pts = new.bad_pts;
            old.opaque = new.opaque;
            if new.probe.is_some() {
                // New keys: probe again (a key that rolled over).
                old.probe = new.probe;
                old.probed = 0;
            }
        }
        c.unsupported = fresh.unsupported.or(c.unsupported.take());
        true
    }

    /// One packet routed to a watched call.
    pub fn on_packet(&mut self, key: CallKey, leg: Leg, data: &[u8]) {
        let Some(c) = self.calls.get_mut(&key) else {
            return;
        };
        let l = &mut c.legs[leg as usize];
        if crate::media::rtp::is_rtcp(data) || data.len() < 12 {
            return;
        }
        if l.probed < PROBE_PACKETS
            && let Some(p) = l.probe.as_mut()
        {
            l.probed += 1;
            match p.unprotect(data) {
                Ok(_) => l.auth_ok += 1,
                Err(crate::media::srtp::SrtpError::Replay) => {}
                Err(_) => l.auth_failed += 1,
            }
        }
        let pt = data[1] & 0x7f;
        if l.bad_pts >> pt & 1 == 1 {
            l.bad += 1;
        } else {
            l.good += 1;
        }
    }

    /// At the call's end: why none of its audio can be heard, if so.
    pub fn verdict(&mut self, key: CallKey) -> Option<String> {
        let c = self.calls.remove(&key)?;
        let heard: Vec<&LegCheck> = c.legs.iter().filter(|l| l.traffic()).collect();
        if heard.is_empty() || heard.iter().any(|l| l.decodable()) {
            return None;
        }
        if heard.iter().any(|l| l.encrypted()) {
            return Some("media-encrypted".into());
        }
        Some(format!(
            "codec-unsupported:{}",
            c.unsupported.as_deref().unwrap_or("unknown")
        ))
    }

    /// Forgets a call without a verdict.
    pub fn forget(&mut self, key: CallKey) {
        self.calls.remove(&key);
    }
}
