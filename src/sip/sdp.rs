//! SDP (RFC 4566) as far as recording needs it: where each audio stream
//! goes, which payload types mean what (rtpmap, fmtp), ptime and direction,
//! and how its media is protected: SDES keys (`a=crypto`, RFC 4568) or keys
//! callrec cannot see (DTLS-SRTP `a=fingerprint`, RFC 5763; ZRTP
//! `a=zrtp-hash`, RFC 6189).

use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpMap {
    pub pt: u8,
    /// Encoding name as written, e.g. "PCMU", "telephone-event".
    pub encoding: String,
    pub clock_rate: u32,
    /// Audio channels (`a=rtpmap:97 L16/8000/2`); None when not written (1).
    pub channels: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Media {
    /// "audio", "video", "image" (T.38) ...
    pub kind: String,
    /// Connection address: media-level c= or else session-level c=.
    pub addr: Option<IpAddr>,
    /// 0 means the stream is disabled.
    pub port: u16,
    pub proto: String,
    /// Numeric formats (RTP payload types); empty for `m=image ... t38`.
    pub formats: Vec<u8>,
    pub rtpmaps: Vec<RtpMap>,
    pub ptime: Option<u32>,
    pub maxptime: Option<u32>,
    /// Media-level direction, else the session-level one, as written.
    pub direction: Direction,
    /// `a=rtcp:` port (RFC 3605); else RTCP is on port + 1.
    pub rtcp_port: Option<u16>,
    /// `a=rtcp:port IN IP4 addr`.
    pub rtcp_addr: Option<IpAddr>,
    /// `a=fmtp:<pt> <params>` (RFC 4566 section 6), parameters as written.
    pub fmtps: Vec<(u8, String)>,
    /// `a=crypto` lines (RFC 4568 section 9.1), in order of preference.
    pub crypto: Vec<Crypto>,
    /// Keys negotiated out of callrec's sight: "dtls" (`a=fingerprint` or a
    /// DTLS proto) or "zrtp" (`a=zrtp-hash`).
    pub unseen_keys: Option<&'static str>,
}

/// One `a=crypto:<tag> <suite> <key-params>` line (RFC 4568 section 9.1).
/// Its Debug output never shows the key: keys are never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Crypto {
    pub tag: u32,
    /// e.g. "AES_CM_128_HMAC_SHA1_80", "AEAD_AES_256_GCM".
    pub suite: String,
    /// Each `inline:<base64 key||salt>[|<lifetime>][|<MKI>:<length>]`.
    pub key_params: Vec<String>,
    /// Session parameters (UNENCRYPTED_SRTP, KDR=...), as written.
    pub session_params: Vec<String>,
}

impl std::fmt::Debug for Crypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Crypto({} {} <{} key(s)>)",
            self.tag,
            self.suite,
            self.key_params.len()
        )
    }
}

impl Crypto {
    /// Parses the value of an `a=crypto` attribute; None when malformed.
    pub fn parse(value: &str) -> Option<Crypto> {
        let mut it = value.split_whitespace();
        let tag = it.next()?.parse().ok()?;
        let suite = it.next()?.to_owned();
        let keys = it.next()?;
        Some(Crypto {
            tag,
            suite,
            key_params: keys.split(';').map(str::to_owned).collect(),
            session_params: it.map(str::to_owned).collect(),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Sdp {
    pub origin_session: Option<String>,
    /// o= session version: a changed version means a changed offer.
    pub origin_version: Option<u64>,
    /// Session-level c= address.
    pub connection: Option<IpAddr>,
    /// Session-level direction attribute (default sendrecv).
    pub direction: Direction,
    pub media: Vec<Media>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    /// Kept for callers; lines that are not UTF-8 are now read lossily.
    #[error("SDP is not text")]
    Encoding,
    #[error("SDP has no v= line")]
    NoVersion,
}

impl Sdp {
    /// The first audio stream with a non-zero port.
    pub fn audio(&self) -> Option<&Media> {
        self.audio_streams().next()
    }
    /// Every enabled audio stream, in m-line order.
    pub fn audio_streams(&self) -> impl Iterator<Item = &Media> {
        self.media
            .iter()
            .filter(|m| m.kind.eq_ignore_ascii_case("audio") && !m.is_disabled())
    }
    /// An enabled T.38 fax stream (`m=image <port> udptl t38`).
    pub fn t38(&self) -> Option<&Media> {
        self.media.iter().find(|m| m.is_t38() && !m.is_disabled())
    }
}

impl Media {
    /// Encoding name for a payload type: the rtpmap, else the static table
    /// (RFC 3551).
    pub fn encoding(&self, pt: u8) -> Option<&str> {
        if let Some(m) = self.rtpmaps.iter().find(|m| m.pt == pt) {
            return Some(&m.encoding);
        }
        match pt {
            0 => Some("PCMU"),
            3 => Some("GSM"),
            4 => Some("G723"),
            8 => Some("PCMA"),
            9 => Some("G722"),
            13 => Some("CN"),
            18 => Some("G729"),
            _ => None,
        }
    }
    /// The `a=fmtp` parameters of a payload type ("" when none).
    pub fn fmtp(&self, pt: u8) -> &str {
        self.fmtps
            .iter()
            .find(|(p, _)| *p == pt)
            .map_or("", |(_, v)| v.as_str())
    }
    /// The RTP clock rate of a payload type: the rtpmap's, else RFC 3551's
    /// (8000 for every static audio type we know, G.722 included).
    pub fn clock_rate(&self, pt: u8) -> u32 {
        self.rtpmaps
            .iter()
            .find(|m| m.pt == pt)
            .map_or(8000, |m| m.clock_rate)
    }
    /// The profile protects the media (RTP/SAVP, RTP/SAVPF, UDP/TLS/RTP/SAVP).
    pub fn is_secure(&self) -> bool {
        self.proto.to_ascii_uppercase().contains("SAVP")
    }
    /// Port 0: the stream is refused or removed.
    pub fn is_disabled(&self) -> bool {
        self.port == 0
    }
    pub fn is_t38(&self) -> bool {
        self.kind.eq_ignore_ascii_case("image") && self.proto.to_ascii_lowercase().contains("udptl")
    }
    /// The stream is put on hold: sendonly or inactive (RFC 3264), recvonly
    /// (the answer to a hold), or the old RFC 2543 style `c=IN IP4 0.0.0.0`.
    pub fn is_hold(&self) -> bool {
        self.direction != Direction::SendRecv || self.addr.is_some_and(|a| a.is_unspecified())
    }
    /// The direction with old-style hold (`0.0.0.0`) read as inactive.
    pub fn effective_direction(&self) -> Direction {
        if self.addr.is_some_and(|a| a.is_unspecified()) {
            Direction::Inactive
        } else {
            self.direction
        }
    }
    /// Where RTCP for this stream goes: a=rtcp, else port + 1.
    pub fn rtcp(&self) -> Option<(Option<IpAddr>, u16)> {
        let port = self
            .rtcp_port
            .or_else(|| self.port.checked_add(1).filter(|_| self.port != 0))?;
        Some((self.rtcp_addr.or(self.addr), port))
    }
}

/// `IN IP4 224.2.1.1/127/3` -> the address (TTL and count dropped).
fn connection_addr(v: &str) -> Option<IpAddr> {
    let mut it = v.split_whitespace();
    let (_net, _kind, addr) = (it.next()?, it.next()?, it.next()?);
    addr.split('/').next()?.parse().ok()
}

fn direction(name: &str) -> Option<Direction> {
    match name.to_ascii_lowercase().as_str() {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    }
}

/// Parses an SDP body. Lenient: unknown or broken lines are skipped, bytes
/// that are not UTF-8 are replaced, CRLF and bare LF both end lines.
pub fn parse(data: &[u8]) -> Result<Sdp, SdpError> {
    let text = String::from_utf8_lossy(data);
    let mut sdp = Sdp::default();
    let mut seen_v = false;
    let mut session_unseen: Option<&'static str> = None;
    for line in text.lines() {
        let line = line.trim();
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "v" => seen_v = true,
            "o" => {
                let mut it = v.split_whitespace().skip(1);
                sdp.origin_session = it.next().map(String::from);
                sdp.origin_version = it.next().and_then(|n| n.parse().ok());
            }
            "c" => {
                // A c= that does not parse leaves the address as it was.
                if let Some(addr) = connection_addr(v) {
                    match sdp.media.last_mut() {
                        Some(m) => m.addr = Some(addr),
                        None => sdp.connection = Some(addr),
                    }
                }
            }
            "m" => {
                let mut it = v.split_whitespace();
                let kind = it.next().unwrap_or("").to_string();
                // `port/count`: the first port is the one used.
                let port = it
                    .next()
                    .and_then(|p| p.split('/').next()?.parse().ok())
                    .unwrap_or(0);
                let proto = it.next().unwrap_or("").to_string();
                let formats = it.filter_map(|f| f.parse().ok()).collect();
                sdp.media.push(Media {
                    kind,
                    addr: sdp.connection,
                    port,
                    proto,
                    formats,
                    rtpmaps: Vec::new(),
                    ptime: None,
                    maxptime: None,
                    direction: sdp.direction,
                    rtcp_port: None,
                    rtcp_addr: None,
                    fmtps: Vec::new(),
                    crypto: Vec::new(),
                    unseen_keys: None,
                });
                if let Some(m) = sdp.media.last_mut()
                    && m.proto.to_ascii_uppercase().contains("TLS")
                {
                    m.unseen_keys = Some("dtls");
                }
            }
            "a" => {
                let (name, value) = v.split_once(':').unwrap_or((v, ""));
                let (name, value) = (name.trim(), value.trim());
                if let Some(d) = direction(name) {
                    match sdp.media.last_mut() {
                        Some(m) => m.direction = d,
                        None => sdp.direction = d,
                    }
                    continue;
                }
                let Some(m) = sdp.media.last_mut() else {
                    // Session-level keys outside our sight apply to every stream.
                    match name.to_ascii_lowercase().as_str() {
                        "fingerprint" => session_unseen = Some("dtls"),
                        "zrtp-hash" => session_unseen = session_unseen.or(Some("zrtp")),
                        _ => {}
                    }
                    continue;
                };
                match name.to_ascii_lowercase().as_str() {
                    "rtpmap" => {
                        let (pt, enc) =
                            value.split_once(char::is_whitespace).unwrap_or((value, ""));
                        let mut parts = enc.trim().split('/');
                        if let Ok(pt) = pt.trim().parse() {
                            m.rtpmaps.push(RtpMap {
                                pt,
                                encoding: parts.next().unwrap_or("").trim().to_string(),
                                clock_rate: parts
                                    .next()
                                    .and_then(|r| r.trim().parse().ok())
                                    .unwrap_or(8000),
                                channels: parts.next().and_then(|c| c.trim().parse().ok()),
                            });
                        }
                    }
                    "fmtp" => {
                        let (pt, params) =
                            value.split_once(char::is_whitespace).unwrap_or((value, ""));
                        if let Ok(pt) = pt.trim().parse() {
                            m.fmtps.push((pt, params.trim().to_owned()));
                        }
                    }
                    "crypto" => m.crypto.extend(Crypto::parse(value)),
                    "fingerprint" => m.unseen_keys = Some("dtls"),
                    "zrtp-hash" => m.unseen_keys = m.unseen_keys.or(Some("zrtp")),
                    // Some devices write fractions ("20.0"); keep the integer part.
                    "ptime" => m.ptime = value.split('.').next().and_then(|p| p.parse().ok()),
                    "maxptime" => m.maxptime = value.split('.').next().and_then(|p| p.parse().ok()),
                    "rtcp" => {
                        let mut it = value.split_whitespace();
                        m.rtcp_port = it.next().and_then(|p| p.parse().ok());
                        let rest: Vec<&str> = it.collect();
                        m.rtcp_addr = (rest.len() >= 3)
                            .then(|| rest[2].split('/').next()?.parse().ok())
                            .flatten();
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if !seen_v {
        return Err(SdpError::NoVersion);
    }
    for m in &mut sdp.media {
        m.unseen_keys = m.unseen_keys.or(session_unseen);
    }
    Ok(sdp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypto_fmtp_and_unseen_keys() {
        let s = parse(b"v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/SAVP 96 9\r\na=rtpmap:96 AMR-WB/16000\r\na=fmtp:96 octet-align=1; mode-change-capability=2\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\r\na=crypto:2 bogus\r\n").unwrap();
        let m = s.audio().unwrap();
        assert!(m.is_secure());
        assert_eq!(m.fmtp(96), "octet-align=1; mode-change-capability=2");
        assert_eq!((m.clock_rate(96), m.clock_rate(9)), (16000, 8000));
        assert_eq!(m.crypto.len(), 1, "the malformed line is skipped");
        assert_eq!(m.crypto[0].suite, "AES_CM_128_HMAC_SHA1_80");
        let shown = format!("{:?}", m.crypto[0]);
        assert!(!shown.contains("WVNf"), "a key in Debug output: {shown}");
        assert_eq!(m.unseen_keys, None);
        let d = parse(b"v=0\r\na=fingerprint:sha-256 AB:CD\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 UDP/TLS/RTP/SAVPF 0\r\n").unwrap();
        assert_eq!(d.audio().unwrap().unseen_keys, Some("dtls"));
    }

    #[test]
    fn parses_audio() {
        let s = parse(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na=sendonly\r\n").unwrap();
        let a = s.audio().unwrap();
        assert_eq!(a.addr, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(a.port, 4000);
        assert_eq!(a.formats, vec![0, 101]);
        assert_eq!(a.encoding(101), Some("telephone-event"));
        assert_eq!(a.encoding(0), Some("PCMU"));
        assert_eq!(a.ptime, Some(20));
        assert_eq!(a.direction, Direction::SendOnly);
    }

    #[test]
    fn several_media_levels_and_overrides() {
        let s = parse(
            b"v=0\r\no=- 42 7 IN IP6 2001:db8::1\r\nc=IN IP6 2001:db8::1\r\na=recvonly\r\nt=0 0\r\n\
m=audio 0 RTP/AVP 0\r\n\
m=audio 5000/2 RTP/AVP 8 97 101\r\nc=IN IP4 192.0.2.7\r\na=rtpmap:97 L16/16000/2\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:30\r\na=maxptime:60\r\na=rtcp:5011 IN IP4 192.0.2.8\r\na=sendrecv\r\n\
m=video 6000 RTP/AVP 96\r\n\
m=audio 7000 RTP/AVP 0\r\n",
        )
        .unwrap();
        assert_eq!(s.origin_session.as_deref(), Some("42"));
        assert_eq!(s.origin_version, Some(7));
        assert_eq!(s.connection, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(s.direction, Direction::RecvOnly);
        assert_eq!(s.media.len(), 4);
        assert!(s.media[0].is_disabled());
        assert_eq!(
            s.media[0].direction,
            Direction::RecvOnly,
            "session level inherited"
        );
        let a = s.audio().unwrap();
        assert_eq!(a.port, 5000);
        assert_eq!(
            a.addr,
            Some("192.0.2.7".parse().unwrap()),
            "media c= overrides session c="
        );
        assert_eq!(
            a.direction,
            Direction::SendRecv,
            "media a= overrides session a="
        );
        assert_eq!(a.formats, vec![8, 97, 101]);
        assert_eq!(
            a.rtpmaps[0],
            RtpMap {
                pt: 97,
                encoding: "L16".into(),
                clock_rate: 16000,
                channels: Some(2)
            }
        );
        assert_eq!(a.rtpmaps[1].channels, None);
        assert_eq!(a.encoding(8), Some("PCMA"));
        assert_eq!((a.ptime, a.maxptime), (Some(30), Some(60)));
        assert_eq!(a.rtcp(), Some((Some("192.0.2.8".parse().unwrap()), 5011)));
        let streams: Vec<u16> = s.audio_streams().map(|m| m.port).collect();
        assert_eq!(streams, vec![5000, 7000]);
        assert_eq!(s.media[3].addr, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(
            s.media[3].rtcp(),
            Some((Some("2001:db8::1".parse().unwrap()), 7001))
        );
        assert!(s.media[3].is_hold(), "recvonly from the session");
    }

    #[test]
    fn multicast_ttl_and_bare_lf() {
        let s = parse(b"v=0\nc=IN IP4 233.252.0.1/127/3\nm=audio 4000 RTP/AVP 0\na=rtcp:4001\n")
            .unwrap();
        let a = s.audio().unwrap();
        assert_eq!(a.addr, Some("233.252.0.1".parse().unwrap()));
        assert_eq!(a.rtcp(), Some((a.addr, 4001)));
        let s = parse(b"v=0\nc=IN IP6 ff15::101/3\nm=audio 4000 RTP/AVP 0\n").unwrap();
        assert_eq!(s.audio().unwrap().addr, Some("ff15::101".parse().unwrap()));
    }

    #[test]
    fn hold_forms() {
        let old = parse(b"v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\n").unwrap();
        let a = old.audio().unwrap();
        assert!(a.is_hold());
        assert_eq!(a.direction, Direction::SendRecv);
        assert_eq!(a.effective_direction(), Direction::Inactive);
        for (attr, d) in [
            ("sendonly", Direction::SendOnly),
            ("inactive", Direction::Inactive),
            ("recvonly", Direction::RecvOnly),
        ] {
            let s = parse(
                format!("v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\na={attr}\r\n")
                    .as_bytes(),
            )
            .unwrap();
            assert_eq!(s.audio().unwrap().direction, d);
            assert!(s.audio().unwrap().is_hold());
        }
        let s = parse(b"v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\n").unwrap();
        assert!(!s.audio().unwrap().is_hold());
    }

    #[test]
    fn t38_image_stream() {
        let s = parse(b"v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 0 RTP/AVP 0\r\nm=image 4002 udptl t38\r\na=T38FaxVersion:0\r\n").unwrap();
        assert!(s.audio().is_none());
        let t = s.t38().unwrap();
        assert_eq!((t.port, t.formats.len()), (4002, 0));
    }

    #[test]
    fn lenient_on_garbage() {
        assert_eq!(parse(b"").unwrap_err(), SdpError::NoVersion);
        assert_eq!(parse(b"hello").unwrap_err(), SdpError::NoVersion);
        let s = parse(b"v=0\r\nc=IN IP4 not-an-ip\r\nm=audio x RTP/AVP zz 0\r\na=rtpmap:\r\na=ptime:abc\r\n\xff\xfe=\x00\r\n").unwrap();
        let m = &s.media[0];
        assert_eq!((m.port, m.addr, m.ptime), (0, None, None));
        assert_eq!(m.formats, vec![0]);
    }
}
