//! RTP (RFC 3550) header parsing without copying, an encoder for tests and
//! the announcer, and the RTP/RTCP demultiplexing heuristic of RFC 5761.

/// One parsed RTP packet; `payload` borrows the input (padding removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub version: u8,
    pub padding: bool,
    pub extension: bool,
    pub marker: bool,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub csrc_count: u8,
    pub payload: &'a [u8],
}

/// Why a datagram is not a usable RTP packet. Each names the field at fault
/// and the lengths involved, so a debug log says where the packet broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("RTP version {0}, expected 2")]
    Version(u8),
    #[error("RTP header truncated: {len} bytes, need 12")]
    Truncated { len: usize },
    #[error("RTP CSRC count {count} runs past the end ({len} bytes)")]
    CsrcPastEnd { count: u8, len: usize },
    #[error(
        "RTP header extension of {words} words at offset {offset} runs past the end ({len} bytes)"
    )]
    ExtensionPastEnd {
        offset: usize,
        words: u16,
        len: usize,
    },
    #[error("RTP padding length {pad} exceeds the {available} bytes after the header")]
    PaddingPastEnd { pad: u8, available: usize },
}

const FIXED_HEADER: usize = 12;

impl<'a> RtpPacket<'a> {
    pub fn parse(data: &'a [u8]) -> Result<RtpPacket<'a>, RtpError> {
        if data.len() < FIXED_HEADER {
            // A version check first would be nicer, but a 1-byte packet has
            // no trustworthy version either: call it truncated.
            if let Some(&b0) = data.first()
                && b0 >> 6 != 2
            {
                return Err(RtpError::Version(b0 >> 6));
            }
            return Err(RtpError::Truncated { len: data.len() });
        }
        let b0 = data[0];
        let b1 = data[1];
        let version = b0 >> 6;
        if version != 2 {
            return Err(RtpError::Version(version));
        }
        let padding = b0 & 0x20 != 0;
        let extension = b0 & 0x10 != 0;
        let csrc_count = b0 & 0x0f;
        let mut offset = FIXED_HEADER + 4 * csrc_count as usize;
        if offset > data.len() {
            return Err(RtpError::CsrcPastEnd {
                count: csrc_count,
                len: data.len(),
            });
        }
        if extension {
            if offset + 4 > data.len() {
                return Err(RtpError::ExtensionPastEnd {
                    offset,
                    words: 0,
                    len: data.len(),
                });
            }
            let words = u16::from_be_bytes([data[offset + 2], data[offset + 3]]);
            let end = offset + 4 + 4 * words as usize;
            if end > data.len() {
                return Err(RtpError::ExtensionPastEnd {
                    offset,
                    words,
                    len: data.len(),
                });
            }
            offset = end;
        }
        let mut end = data.len();
        if padding {
            let available = end - offset;
            // The last byte counts itself, so 0 is as invalid as too large.
            let pad = data[end - 1];
            if pad == 0 || pad as usize > available {
                return Err(RtpError::PaddingPastEnd { pad, available });
            }
            end -= pad as usize;
        }
        Ok(RtpPacket {
            version,
            padding,
            extension,
            marker: b1 & 0x80 != 0,
            pt: b1 & 0x7f,
            seq: u16::from_be_bytes([data[2], data[3]]),
            ts: u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
            ssrc: u32::from_be_bytes([data[8], data[9], data[10], data[11]]),
            csrc_count,
            payload: &data[offset..end],
        })
    }
}

/// Encodes a plain RTP packet (no CSRC, extension or padding) into `out`,
/// which is cleared first, so a caller can reuse one buffer per stream.
pub fn write_rtp(
    out: &mut Vec<u8>,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    marker: bool,
    payload: &[u8],
) {
    out.clear();
    out.reserve(FIXED_HEADER + payload.len());
    out.push(0x80);
    out.push((pt & 0x7f) | if marker { 0x80 } else { 0 });
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Encodes a plain RTP packet into a new buffer.
pub fn build_rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    write_rtp(&mut v, pt, seq, ts, ssrc, marker, payload);
    v
}

/// RTCP sharing the RTP port (RFC 5761 section 4): version 2 and a second
/// byte of 200..=204 (SR, RR, SDES, BYE, APP). Such packets must not be
/// decoded as audio.
pub fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= 2 && data[0] >> 6 == 2 && (200..=204).contains(&data[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = build_rtp(8, 65535, 0xdead_beef, 0x1234_5678, true, &[1, 2, 3]);
        let r = RtpPacket::parse(&p).unwrap();
        assert_eq!(
            (r.pt, r.seq, r.ts, r.ssrc, r.marker),
            (8, 65535, 0xdead_beef, 0x1234_5678, true)
        );
        assert_eq!(r.payload, &[1, 2, 3]);
        assert!(!is_rtcp(&p));
    }

    #[test]
    fn csrc_extension_padding() {
        let mut p = vec![0xb2, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        p.extend_from_slice(&[0; 8]); // two CSRCs
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, 9, 9, 9, 9]); // extension, 1 word
        p.extend_from_slice(&[7, 7, 7, 0, 0, 3]); // payload + 3 padding bytes
        let r = RtpPacket::parse(&p).unwrap();
        assert_eq!(r.csrc_count, 2);
        assert_eq!(r.payload, &[7, 7, 7]);
    }

    #[test]
    fn bad_inputs() {
        let good = build_rtp(0, 1, 2, 3, false, &[0xff; 4]);
        assert_eq!(
            RtpPacket::parse(&good[..5]),
            Err(RtpError::Truncated { len: 5 })
        );
        assert_eq!(RtpPacket::parse(&[]), Err(RtpError::Truncated { len: 0 }));
        let mut v1 = good.clone();
        v1[0] = 0x40;
        assert_eq!(RtpPacket::parse(&v1), Err(RtpError::Version(1)));
        let mut cc = good.clone();
        cc[0] = 0x8f;
        assert!(matches!(
            RtpPacket::parse(&cc),
            Err(RtpError::CsrcPastEnd { count: 15, .. })
        ));
        let mut pad = good.clone();
        pad[0] |= 0x20;
        *pad.last_mut().unwrap() = 200;
        assert!(matches!(
            RtpPacket::parse(&pad),
            Err(RtpError::PaddingPastEnd { pad: 200, .. })
        ));
        *pad.last_mut().unwrap() = 0;
        assert!(matches!(
            RtpPacket::parse(&pad),
            Err(RtpError::PaddingPastEnd { pad: 0, .. })
        ));
        let mut ext = good.clone();
        ext[0] |= 0x10;
        ext[14] = 0;
        ext[15] = 9;
        assert!(matches!(
            RtpPacket::parse(&ext),
            Err(RtpError::ExtensionPastEnd { words: 9, .. })
        ));
        let ext_short = {
            let mut e = good[..13].to_vec();
            e[0] |= 0x10;
            e
        };
        assert!(matches!(
            RtpPacket::parse(&ext_short),
            Err(RtpError::ExtensionPastEnd { .. })
        ));
    }

    #[test]
    fn rtcp_heuristic() {
        assert!(is_rtcp(&[0x81, 200, 0, 6]));
        assert!(is_rtcp(&[0x80, 204]));
        assert!(!is_rtcp(&[0x80, 0x80]));
        assert!(!is_rtcp(&[0x81]));
    }
}
