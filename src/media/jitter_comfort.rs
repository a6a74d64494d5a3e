//! Comfort noise on a leg's timeline: an RFC 3389 CN packet, or a codec
//! frame that ends in a SID (G.729 Annex B), opens a comfort noise period;
//! what the sender then leaves out (DTX) is synthesised by the leg's
//! decoder ([`LegDecoder::comfort_noise`]) at playout, and when its next
//! audio packet arrives, up to that packet before it is decoded, so the
//! generator steps through the frames in order. A telephone event's span
//! stays silent. Sans-IO, like the rest of the jitter buffer.

use super::{JitterBuffer, Placed};
use crate::media::codec::Format;
use crate::media::codecs::LegDecoder;

impl JitterBuffer {
    /// RFC 3389 comfort noise (payload type 13 or an rtpmap `CN`): 10 ms
    /// of the noise it describes, and more of it at playout until the
    /// sender's next speech packet. Counted as silence, as before.
    pub(super) fn comfort_packet(
        &mut self,
        pos: i64,
        new: bool,
        pt: u8,
        fmt: Format,
        payload: &[u8],
    ) -> Placed {
        if new {
            // An update: the previous noise runs up to it.
            self.end_comfort(pos);
        }
        let rate = self.rate();
        let mut dec = self
            .decoder
            .take()
            .unwrap_or_else(|| Box::new(LegDecoder::new(rate)));
        if let Ok(s) = dec.decode(pt, fmt, payload) {
            let end = pos + s.len() as i64;
            self.place(pos, dec.last());
            if new {
                self.comfort = Some(end);
            }
        }
        self.decoder = Some(dec);
        Placed::Silence
    }

    /// The newest audio packet, at `pos`, ends the comfort noise period:
    /// the noise runs up to it. Synthesised now, before the packet is
    /// decoded, so a codec's generator steps through the frames in order.
    pub(super) fn end_comfort(&mut self, pos: i64) {
        if let Some(from) = self.comfort.take() {
            self.synthesise(from, pos);
        }
    }

    /// Comfort noise into the window's span `from..to`, where the sender
    /// sent nothing (G.729 Annex B 4.4: the receiver keeps generating the
    /// noise its last SID described; RFC 3389 section 4 likewise).
    fn synthesise(&mut self, from: i64, to: i64) {
        let (a, b) = (
            from.max(self.read_pos),
            to.min(self.read_pos + self.ring.len() as i64),
        );
        if a < b
            && let Some(dec) = self.decoder.as_mut()
        {
            for (i, &v) in dec.comfort_noise((b - a) as usize).iter().enumerate() {
                self.ring[((a + i as i64) & self.mask) as usize] = v;
            }
            let (ef, et) = self.event_span;
            if ef < b && a < et {
                self.silence(ef.max(a), et.min(b));
            }
        }
    }

    /// At playout of the next `n` samples: the open comfort noise period
    /// is synthesised as far as they reach.
    pub(super) fn fill_comfort(&mut self, n: usize) {
        let end = self.read_pos + n as i64;
        if let Some(from) = self.comfort
            && from < end
        {
            self.synthesise(from, end);
            self.comfort = Some(end);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{blocks, pkt, push};
    use super::*;
    use crate::media::rtp::build_rtp;
    use crate::time::Timestamp;

    const START: Timestamp = super::super::tests::START;

    /// RFC 3389 with G.711: the noise fills what the sender left out after
    /// a CN packet, up to its next speech packet, even past the window.
    #[test]
    fn comfort_noise_fills_the_gap_until_speech() {
        let mut jb = JitterBuffer::new(START, None);
        push(&mut jb, 0, &pkt(1, 0, 1, 100));
        push(&mut jb, 20, &build_rtp(13, 2, 160, 1, false, &[50]));
        let mut out = vec![0i16; 160];
        // 1 s with no packet: played out as it goes (longer than the ring).
        let mut quiet = 0;
        for _ in 0..50 {
            jb.pop(&mut out);
            quiet += out.iter().all(|&s| s == 0) as usize;
        }
        assert_eq!(quiet, 0, "every 20 ms after the CN holds noise");
        push(&mut jb, 1200, &pkt(3, 9600, 1, 100));
        while jb.read_pos() < 9600 {
            jb.pop(&mut out);
            assert!(out.iter().any(|&s| s != 0), "noise up to the speech");
        }
        let b = blocks(&mut jb, 2);
        assert!(
            b[0].is_some() && b[1].is_none(),
            "the speech, then silence: {b:?}"
        );
    }
}
