//! AMR and AMR-WB RTP payloads (RFC 4867 section 4) to the storage format
//! decoders read (RFC 4867 section 5: one header byte `FT << 3 | Q << 2`,
//! then the frame's bits, MSB first, padded to a byte), for single-channel
//! streams without interleaving or CRC, in both payload layouts:
//! octet-aligned (section 4.4) and bandwidth-efficient (section 4.3).

/// Frame bits per frame type, AMR-NB (3GPP TS 26.101 table 1a; 8 = SID,
/// 9..11 other SIDs, 15 = no data).
const NB_BITS: [u16; 16] = [
    95, 103, 118, 134, 148, 159, 204, 244, 39, 43, 38, 37, 0, 0, 0, 0,
];
/// Frame bits per frame type, AMR-WB (3GPP TS 26.201 table 2; 9 = SID,
/// 14 = speech lost, 15 = no data).
const WB_BITS: [u16; 16] = [
    132, 177, 253, 285, 317, 365, 397, 461, 477, 40, 0, 0, 0, 0, 0, 0,
];
/// More frames than this in one packet (240 ms) is not a real sender.
pub const MAX_FRAMES: usize = 12;

/// Why a payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmrError {
    #[error("AMR payload truncated at bit {0}")]
    Truncated(usize),
    #[error("AMR frame type {0} is reserved")]
    BadFrameType(u8),
    #[error("AMR table of contents longer than {MAX_FRAMES} frames")]
    TooManyFrames,
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn take(&mut self, n: usize) -> Result<u32, AmrError> {
        if self.pos + n > self.data.len() * 8 {
            return Err(AmrError::Truncated(self.pos));
        }
        let mut v = 0u32;
        for _ in 0..n {
            let b = self.data[self.pos / 8] >> (7 - self.pos % 8) & 1;
            v = v << 1 | b as u32;
            self.pos += 1;
        }
        Ok(v)
    }
    fn align(&mut self) {
        self.pos = self.pos.div_ceil(8) * 8;
    }
}

/// Appends the storage-format frames of one RTP payload to `out`; returns
/// how many frames it held. `out` is left as it was on error.
pub fn depacketize(
    payload: &[u8],
    wideband: bool,
    octet_aligned: bool,
    out: &mut Vec<u8>,
) -> Result<usize, AmrError> {
    let table = if wideband { &WB_BITS } else { &NB_BITS };
    let mut r = Bits {
        data: payload,
        pos: 0,
    };
    // CMR: a request to the other side, nothing to decode.
    r.take(4)?;
    if octet_aligned {
        r.take(4)?;
    }
    let mut toc: Vec<(u8, u8)> = Vec::new();
    loop {
        let f = r.take(1)?;
        let ft = r.take(4)? as u8;
        let q = r.take(1)? as u8;
        if octet_aligned {
            r.take(2)?;
        }
        let valid = if wideband {
            ft <= 9 || ft >= 14
        } else {
            ft <= 11 || ft == 15
        };
        if !valid {
            return Err(AmrError::BadFrameType(ft));
        }
        toc.push((ft, q));
        if toc.len() > MAX_FRAMES {
            return Err(AmrError::TooManyFrames);
        }
        if f == 0 {
            break;
        }
    }
    let mark = out.len();
    let frames = toc.len();
    for (ft, q) in toc {
        let bits = table[ft as usize] as usize;
        out.push(ft << 3 | q << 2);
        for i in 0..bits.div_ceil(8) {
            let n = (bits - 8 * i).min(8);
            match r.take(n) {
                Ok(v) => out.push((v << (8 - n)) as u8),
                Err(e) => {
                    out.truncate(mark);
                    return Err(e);
                }
            }
        }
        if octet_aligned {
            r.align();
        }
    }
    Ok(frames)
}

/// Bytes of one storage-format frame whose header byte is `h` (header included).
pub fn frame_len(h: u8, wideband: bool) -> usize {
    let table = if wideband { &WB_BITS } else { &NB_BITS };
    1 + (table[(h >> 3 & 15) as usize] as usize).div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octet_aligned_two_frames() {
        // CMR 15, two 12.2 kbit/s (FT 7) frames: 31 bytes each.
        let mut p = vec![0xf0, 0x80 | 7 << 3 | 4, 7 << 3 | 4];
        p.extend(std::iter::repeat_n(0xaa, 31));
        p.extend(std::iter::repeat_n(0x55, 31));
        let mut out = Vec::new();
        assert_eq!(depacketize(&p, false, true, &mut out), Ok(2));
        assert_eq!(out.len(), 64);
        assert_eq!(out[0], 7 << 3 | 4);
        assert_eq!(out[32], 7 << 3 | 4);
        // The last byte of 244 bits keeps only its top 4 bits.
        assert_eq!((out[31], out[63]), (0xa0, 0x50));
    }

    #[test]
    fn bandwidth_efficient_matches_octet_aligned() {
        // One AMR-WB 23.85 kbit/s frame (FT 8, 477 bits) both ways.
        let frame: Vec<u8> = (0..60u8).map(|i| i.wrapping_mul(37)).collect();
        let mut oa = vec![0xf0, 8 << 3 | 4];
        oa.extend(&frame);
        // Bandwidth-efficient: CMR(4) F(1) FT(4) Q(1), then the 477 bits.
        let mut bits: Vec<u8> = vec![1, 1, 1, 1, 0, 1, 0, 0, 0, 1];
        for i in 0..477 {
            bits.push(frame[i / 8] >> (7 - i % 8) & 1);
        }
        let be: Vec<u8> = bits
            .chunks(8)
            .map(|c| {
                c.iter()
                    .enumerate()
                    .fold(0u8, |a, (i, &b)| a | b << (7 - i))
            })
            .collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        assert_eq!(depacketize(&oa, true, true, &mut a), Ok(1));
        assert_eq!(depacketize(&be, true, false, &mut b), Ok(1));
        assert_eq!(a, b);
    }

    #[test]
    fn bad_input_is_refused() {
        let mut out = vec![9];
        assert!(matches!(
            depacketize(&[], false, true, &mut out),
            Err(AmrError::Truncated(_))
        ));
        assert_eq!(
            depacketize(&[0xf0, 12 << 3], true, true, &mut out),
            Err(AmrError::BadFrameType(12))
        );
        // F set on the last entry: the table of contents runs off the end.
        assert!(matches!(
            depacketize(&[0xf0, 0xff], true, true, &mut out),
            Err(AmrError::Truncated(_))
        ));
        let mut many = vec![0xf0];
        many.extend([0xbc; 20]);
        assert_eq!(
            depacketize(&many, false, true, &mut out),
            Err(AmrError::TooManyFrames)
        );
        assert!(matches!(
            depacketize(&[0xf0, 7 << 3, 1, 2], false, true, &mut out),
            Err(AmrError::Truncated(_))
        ));
        assert_eq!(out, vec![9], "nothing appended on error");
    }

    /// The fuzz target's invariants over 20,000 pseudo-random payloads.
    #[test]
    fn random_payloads_keep_the_invariants() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000 {
            let len = (i % 90) as usize;
            let p: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let (wb, oa) = (i & 1 == 1, i & 2 == 2);
            let mut out = Vec::new();
            match depacketize(&p, wb, oa, &mut out) {
                Ok(n) => {
                    let mut s = &out[..];
                    for _ in 0..n {
                        s = &s[frame_len(s[0], wb)..];
                    }
                    assert!(s.is_empty() && n <= MAX_FRAMES);
                }
                Err(_) => assert!(out.is_empty()),
            }
        }
    }
}
