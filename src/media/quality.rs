//! Per-leg reception statistics: counts, RFC 3550 interarrival jitter,
//! the longest gap, and an E-model (ITU-T G.107, simplified) MOS estimate.

use serde::Serialize;

/// What the metadata reports for one leg.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LegQuality {
    /// RTP packets received after the recording start (duplicates excluded).
    pub packets: u64,
    /// Expected minus received, per SSRC (RFC 3550 A.3), summed.
    pub lost: u64,
    pub duplicates: u64,
    /// Packets that arrived after their place in the recording was written.
    pub late: u64,
    /// RFC 3550 A.8 interarrival jitter, in milliseconds.
    pub jitter_ms: f64,
    /// Longest time between two consecutive packets, in milliseconds.
    pub max_gap_ms: u64,
    /// E-model estimate, 1.0 .. 4.5; absent when no audio was decoded
    /// (a MOS of audio nobody can hear would be a lie).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mos: Option<f64>,
    /// Packets that were not valid RTP (wrong version, truncated ...).
    pub malformed: u64,
    /// Packets with a payload type the SDP did not map to any codec.
    pub unknown_pt: u64,
    /// Audio packets decoded into the recording.
    pub decoded: u64,
    /// Packets that gave no audio: a codec callrec cannot decode, a frame
    /// its decoder refused, or SRTP that did not authenticate.
    pub undecodable: u64,
    /// Packets sent to this leg's address from a source no evidence
    /// supports as the party's (dropped on the capture thread).
    pub foreign: u64,
}

/// Running state behind [`LegQuality`]; integer arithmetic per packet.
#[derive(Clone, Debug, Default)]
pub struct QualityTracker {
    pub packets: u64,
    pub duplicates: u64,
    pub late: u64,
    pub malformed: u64,
    pub unknown_pt: u64,
    pub decoded: u64,
    pub undecodable: u64,
    pub foreign: u64,
    /// Loss of the SSRCs already finished.
    lost_closed: u64,
    /// Current SSRC: first and highest extended sequence and packets seen.
    base_seq: i64,
    max_seq: i64,
    received: u64,
    have_stream: bool,
    /// Jitter in 1/16 sample units (RFC 3550 A.8 scaled integer form).
    jitter_q4: i64,
    last_transit: Option<i64>,
    last_arrival_us: Option<i64>,
    max_gap_us: i64,
}

impl QualityTracker {
    /// A new stream (SSRC change, or a sequence restart) begins.
    pub fn new_stream(&mut self, ext_seq: i64) {
        self.close_stream();
        self.base_seq = ext_seq;
        self.max_seq = ext_seq;
        self.received = 0;
        self.have_stream = true;
        self.last_transit = None;
    }

    fn close_stream(&mut self) {
        if self.have_stream {
            self.lost_closed += self.stream_lost();
        }
        self.have_stream = false;
    }

    fn stream_lost(&self) -> u64 {
        let expected = (self.max_seq - self.base_seq + 1).max(0) as u64;
        expected.saturating_sub(self.received)
    }

    /// A packet that is not a duplicate: `arrival_us` is its capture time in
    /// microseconds, `rtp_ts` its extended RTP timestamp (8 kHz units).
    pub fn on_packet(&mut self, ext_seq: i64, arrival_us: i64, rtp_ts: i64) {
        self.packets += 1;
        self.received += 1;
        self.max_seq = self.max_seq.max(ext_seq);
        self.base_seq = self.base_seq.min(ext_seq);
        if let Some(prev) = self.last_arrival_us {
            self.max_gap_us = self.max_gap_us.max(arrival_us - prev);
        }
        self.last_arrival_us = Some(
            self.last_arrival_us
                .map_or(arrival_us, |p| p.max(arrival_us)),
        );
        // Arrival in RTP units (8 kHz: 125 µs per unit).
        let transit = arrival_us.div_euclid(125) - rtp_ts;
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            // J += (|D| - J) / 16, kept in 1/16 units as in RFC 3550 A.8.
            self.jitter_q4 += d - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// The timeline was re-anchored (timestamp jump): transit restarts.
    pub fn reset_transit(&mut self) {
        self.last_transit = None;
    }

    pub fn snapshot(&self) -> LegQuality {
        let lost = self.lost_closed
            + if self.have_stream {
                self.stream_lost()
            } else {
                0
            };
        let jitter_ms = self.jitter_q4 as f64 / 16.0 / 8.0;
        let expected = self.packets + lost;
        let loss_pct = if expected == 0 {
            0.0
        } else {
            100.0 * lost as f64 / expected as f64
        };
        LegQuality {
            packets: self.packets,
            lost,
            duplicates: self.duplicates,
            late: self.late,
            jitter_ms: (jitter_ms * 100.0).round() / 100.0,
            max_gap_ms: (self.max_gap_us.max(0) / 1000) as u64,
            mos: (self.decoded > 0)
                .then(|| (mos_g711(loss_pct, jitter_ms) * 100.0).round() / 100.0),
            malformed: self.malformed,
            unknown_pt: self.unknown_pt,
            decoded: self.decoded,
            undecodable: self.undecodable,
            foreign: self.foreign,
        }
    }
}

/// Simplified E-model for G.711 (Ie = 0, Bpl = 4.3: losses are filled with
/// silence, no packet-loss concealment), random loss (BurstR = 1). The
/// one-way delay is not observable from a tap; it is taken as the
/// packetisation (20 ms) plus a jitter buffer of twice the jitter, plus a
/// nominal 40 ms network, which puts Id well below the 177.3 ms knee for
/// ordinary calls.
pub fn mos_g711(loss_pct: f64, jitter_ms: f64) -> f64 {
    let ppl = loss_pct.clamp(0.0, 100.0);
    let ie_eff = 95.0 * ppl / (ppl + 4.3);
    let d = 60.0 + 2.0 * jitter_ms;
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let r = 93.2 - id - ie_eff;
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        (1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7e-6).clamp(1.0, 4.5)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mos_falls_with_loss() {
        let clean = mos_g711(0.0, 0.0);
        assert!(clean > 4.3 && clean <= 4.5, "{clean}");
        let lossy = mos_g711(5.0, 0.0);
        assert!(lossy < 3.5 && lossy > 1.0, "{lossy}");
        assert!(mos_g711(50.0, 100.0) < lossy);
    }

    #[test]
    fn jitter_of_alternating_delay() {
        let mut q = QualityTracker::default();
        q.new_stream(0);
        // Every other packet 10 ms late: |D| = 80 units each time, so J
        // converges towards 80 units = 10 ms.
        for i in 0..2000i64 {
            let arrival = i * 20_000 + if i % 2 == 1 { 10_000 } else { 0 };
            q.on_packet(i, arrival, i * 160);
        }
        let s = q.snapshot();
        assert_eq!(s.mos, None, "no audio decoded: no MOS");
        q.decoded = 1;
        let s = q.snapshot();
        assert!((s.jitter_ms - 10.0).abs() < 0.5, "{}", s.jitter_ms);
        assert_eq!(s.max_gap_ms, 30);
        assert_eq!(s.lost, 0);
        let json = serde_json::to_value(&s).unwrap();
        for k in [
            "packets",
            "lost",
            "duplicates",
            "late",
            "jitter_ms",
            "max_gap_ms",
            "mos",
        ] {
            assert!(json.get(k).is_some(), "{k}");
        }
    }

    #[test]
    fn loss_over_ssrc_change() {
        let mut q = QualityTracker::default();
        q.new_stream(100);
        for s in [100, 101, 103] {
            q.on_packet(s, s * 20_000, s * 160);
        }
        q.new_stream(5000);
        for s in [5000, 5003] {
            q.on_packet(s, s * 20_000, s * 160);
        }
        assert_eq!(q.snapshot().lost, 1 + 2);
        assert_eq!(q.snapshot().packets, 5);
    }
}
