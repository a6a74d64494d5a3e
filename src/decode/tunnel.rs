//! GRE (RFC 2784 / 2890) and ERSPAN type I, II and III headers.
//!
//! Hand-written: etherparse 0.21 has no GRE or ERSPAN support. Mirror
//! ports deliver traffic this way, so only what decapsulation needs is
//! read: flags that change the header length and the payload protocol.

/// GRE protocol numbers (EtherTypes) we follow.
pub const ETH_IPV4: u16 = 0x0800;
pub const ETH_IPV6: u16 = 0x86DD;
pub const TRANSPARENT_ETHERNET: u16 = 0x6558;
pub const ERSPAN_I_II: u16 = 0x88BE;
pub const ERSPAN_III: u16 = 0x22EB;

/// A GRE header: what it carries, where the payload starts, and whether
/// a sequence number was present (that tells ERSPAN type I from II).
#[derive(Debug, PartialEq, Eq)]
pub struct Gre {
    pub protocol: u16,
    pub header_len: usize,
    pub sequenced: bool,
}

pub fn parse_gre(data: &[u8]) -> Option<Gre> {
    let (&b0, &b1) = (data.first()?, data.get(1)?);
    let version = b1 & 0x07;
    let routing = b0 & 0x40 != 0;
    if version != 0 || routing {
        // Version 1 is PPTP's enhanced GRE (PPP inside); source routing is
        // deprecated (RFC 2784) and never seen on mirror ports.
        return None;
    }
    let checksum = b0 & 0x80 != 0;
    let key = b0 & 0x20 != 0;
    let sequenced = b0 & 0x10 != 0;
    let header_len = 4 + 4 * (checksum as usize + key as usize + sequenced as usize);
    if data.len() < header_len {
        return None;
    }
    Some(Gre {
        protocol: u16::from_be_bytes([data[2], data[3]]),
        header_len,
        sequenced,
    })
}

/// Length of the ERSPAN header in front of the mirrored Ethernet frame.
pub fn erspan_header_len(protocol: u16, gre_sequenced: bool, data: &[u8]) -> Option<usize> {
    match protocol {
        // Type I has no header and no GRE sequence number; type II has both.
        ERSPAN_I_II if !gre_sequenced => Some(0),
        ERSPAN_I_II => (data.len() >= 8 && data[0] >> 4 == 1).then_some(8),
        ERSPAN_III => {
            if data.len() < 12 || data[0] >> 4 != 2 {
                return None;
            }
            // The O flag (last bit of the fixed header) announces an
            // 8-byte platform-specific subheader.
            let len = if data[11] & 0x01 != 0 { 20 } else { 12 };
            (data.len() >= len).then_some(len)
        }
        _ => None,
    }
}

/// Linux cooked capture v2 (LINKTYPE_LINUX_SLL2): 20 bytes, protocol
/// first. etherparse only knows v1. Returns (protocol, header length).
pub fn parse_sll2(data: &[u8]) -> Option<(u16, usize)> {
    (data.len() >= 20).then(|| (u16::from_be_bytes([data[0], data[1]]), 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gre_lengths() {
        assert_eq!(
            parse_gre(&[0, 0, 0x08, 0]),
            Some(Gre {
                protocol: 0x0800,
                header_len: 4,
                sequenced: false
            })
        );
        let keyed_seq = [0x30, 0, 0x88, 0xBE, 0, 0, 0, 1, 0, 0, 0, 2];
        assert_eq!(
            parse_gre(&keyed_seq),
            Some(Gre {
                protocol: 0x88BE,
                header_len: 12,
                sequenced: true
            })
        );
        assert_eq!(parse_gre(&[0x30, 0, 0x88, 0xBE, 0]), None);
        assert_eq!(parse_gre(&[0, 1, 0x88, 0x0B]), None);
    }

    #[test]
    fn erspan_lengths() {
        assert_eq!(erspan_header_len(ERSPAN_I_II, false, &[]), Some(0));
        assert_eq!(
            erspan_header_len(ERSPAN_I_II, true, &[0x10, 0, 0, 0, 0, 0, 0, 0]),
            Some(8)
        );
        let mut iii = [0u8; 20];
        iii[0] = 0x20;
        assert_eq!(erspan_header_len(ERSPAN_III, true, &iii), Some(12));
        iii[11] = 1;
        assert_eq!(erspan_header_len(ERSPAN_III, true, &iii), Some(20));
        assert_eq!(erspan_header_len(ERSPAN_III, true, &iii[..15]), None);
    }
}
