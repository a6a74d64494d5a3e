//! SDP (RFC 4566) as far as recording needs it: where each audio stream
//! goes, which payload types mean what, ptime and direction.

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
    pub formats: Vec<u8>,
    pub rtpmaps: Vec<RtpMap>,
    pub ptime: Option<u32>,
    pub direction: Direction,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Sdp {
    pub origin_session: Option<String>,
    pub media: Vec<Media>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SdpError {
    #[error("SDP is not text")]
    Encoding,
    #[error("SDP has no v= line")]
    NoVersion,
}

impl Sdp {
    /// The first audio stream with a non-zero port.
    pub fn audio(&self) -> Option<&Media> {
        self.media
            .iter()
            .find(|m| m.kind.eq_ignore_ascii_case("audio") && m.port != 0)
    }
}

impl Media {
    /// Encoding name for a payload type: the rtpmap, else the static table.
    pub fn encoding(&self, pt: u8) -> Option<&str> {
        if let Some(m) = self.rtpmaps.iter().find(|m| m.pt == pt) {
            return Some(&m.encoding);
        }
        match pt {
            0 => Some("PCMU"),
            8 => Some("PCMA"),
            13 => Some("CN"),
            _ => None,
        }
    }
}

pub fn parse(data: &[u8]) -> Result<Sdp, SdpError> {
    let text = std::str::from_utf8(data).map_err(|_| SdpError::Encoding)?;
    let mut sdp = Sdp::default();
    let mut session_addr = None;
    let mut session_dir = Direction::SendRecv;
    let mut seen_v = false;
    for line in text.lines() {
        let line = line.trim_end();
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k.trim() {
            "v" => seen_v = true,
            "o" => sdp.origin_session = v.split_whitespace().nth(1).map(String::from),
            "c" => {
                let addr = v
                    .split_whitespace()
                    .nth(2)
                    .and_then(|a| a.split('/').next()?.parse().ok());
                match sdp.media.last_mut() {
                    Some(m) => m.addr = addr,
                    None => session_addr = addr,
                }
            }
            "m" => {
                let mut it = v.split_whitespace();
                let kind = it.next().unwrap_or("").to_string();
                let port = it
                    .next()
                    .and_then(|p| p.split('/').next()?.parse().ok())
                    .unwrap_or(0);
                let proto = it.next().unwrap_or("").to_string();
                let formats = it.filter_map(|f| f.parse().ok()).collect();
                sdp.media.push(Media {
                    kind,
                    addr: session_addr,
                    port,
                    proto,
                    formats,
                    rtpmaps: Vec::new(),
                    ptime: None,
                    direction: session_dir,
                });
            }
            "a" => {
                let (name, value) = v.split_once(':').unwrap_or((v, ""));
                let dir = match name {
                    "sendrecv" => Some(Direction::SendRecv),
                    "sendonly" => Some(Direction::SendOnly),
                    "recvonly" => Some(Direction::RecvOnly),
                    "inactive" => Some(Direction::Inactive),
                    _ => None,
                };
                match (dir, sdp.media.last_mut()) {
                    (Some(d), Some(m)) => m.direction = d,
                    (Some(d), None) => session_dir = d,
                    (None, Some(m)) if name == "rtpmap" => {
                        let (pt, enc) = value.split_once(' ').unwrap_or((value, ""));
                        let mut parts = enc.trim().split('/');
                        if let Ok(pt) = pt.trim().parse() {
                            m.rtpmaps.push(RtpMap {
                                pt,
                                encoding: parts.next().unwrap_or("").to_string(),
                                clock_rate: parts
                                    .next()
                                    .and_then(|r| r.parse().ok())
                                    .unwrap_or(8000),
                            });
                        }
                    }
                    (None, Some(m)) if name == "ptime" => m.ptime = value.trim().parse().ok(),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if !seen_v {
        return Err(SdpError::NoVersion);
    }
    Ok(sdp)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
