//! The frames the capture clock holds back ([`crate::daemon::clock`]):
//! placed when the clock resolves them, with the RTP votes that inform
//! its decision, then processed in time order across capture points.
//! Apart from the per-packet path, which they only join when held.

use super::Engine;
use crate::capture::Packet;
use crate::daemon::clock::{HeldFrame, Kind, Resolution};
use crate::time::Timestamp;

impl Engine {
    /// A frame shorter than on the wire: counted; the first is logged.
    #[cold]
    pub(super) fn note_cut(&mut self, pkt: &Packet<'_>) {
        if self.stats.frames_cut == 0 {
            tracing::warn!(
                capture = self.clock.point_name(),
                packet = pkt.index,
                captured = pkt.data.len(),
                length = pkt.orig_len,
                "frames are cut below their length on the wire (snap length): what they carried beyond it is lost"
            );
        }
        self.stats.frames_cut += 1;
    }

    /// Places the frames the clock held back, as it decided, and
    /// processes them in their order, with other points' held frames the
    /// clock has now reached (in time order among them, ties to the point
    /// registered first, as a merge of files does; so a 200 OK held
    /// on the signalling point comes before the RTP a media point's
    /// resolution places after it).
    #[cold]
    pub(super) fn resolve_held(&mut self) {
        let mut placed = self.resolve_point();
        if !self.held.is_empty() {
            placed.extend(self.resolve_caught_up());
            placed.sort_by_key(|p| (p.1, p.0.point));
        }
        self.process_placed(placed);
    }

    /// Other points' held frames the clock has reached since (see
    /// [`CaptureClock::caught_up_point`]): placed and processed now.
    #[cold]
    pub(super) fn release_caught_up(&mut self) {
        let mut placed = self.resolve_caught_up();
        placed.sort_by_key(|p| (p.1, p.0.point));
        self.process_placed(placed);
    }

    /// Resolves, as at their end, the points other than the current one
    /// whose held frames the clock has reached; the current point stays.
    fn resolve_caught_up(&mut self) -> Vec<(HeldFrame, Timestamp, bool)> {
        let current = self.clock.select_current();
        let mut placed = Vec::new();
        // Bounded: a group the clock would not place is not tried forever.
        for _ in 0..8 {
            let Some(p) = self.clock.caught_up_point() else {
                break;
            };
            self.clock.select_index(p);
            if self.clock.finish_point() {
                placed.extend(self.resolve_point());
            }
            self.clock.select_index(current);
        }
        placed
    }

    /// The current point's held frames as the clock places them: each with
    /// its time and whether it came after a gap. The decision may rest on
    /// their RTP: each held RTP packet of a recorded stream says by how
    /// much its stamp moved from its media clock.
    fn resolve_point(&mut self) -> Vec<(HeldFrame, Timestamp, bool)> {
        let base = self.clock.held_base();
        let point = self.clock.select_current();
        let votes: Vec<i64> = self
            .held
            .iter()
            .filter(|f| f.point == point)
            .filter_map(|f| {
                let (src, dst, payload) = crate::decode::peek_udp(f.link, &f.data)?;
                let r = self
                    .by_dst
                    .get(&dst)
                    .filter(|r| r.latched() == Some(src))
                    .or_else(|| self.by_src.get(&src))?;
                r.vote(payload, f.raw.add_micros(base))
            })
            .collect();
        let res = self.clock.resolve(&votes);
        // The clock resolved the current point's frames (at the start: all
        // of them, whichever point); other points' frames stay held, and
        // so does what the clock did not place.
        let (mut frames, mut others): (Vec<HeldFrame>, Vec<HeldFrame>) = match res.kind {
            Kind::Start { .. } => (std::mem::take(&mut self.held), Vec::new()),
            _ => std::mem::take(&mut self.held)
                .into_iter()
                .partition(|f| f.point == point),
        };
        others.extend(frames.split_off(res.times.len().min(frames.len())));
        self.held = others;
        self.note_resolution(&res, &frames);
        let gap = matches!(res.kind, Kind::Gap { .. } | Kind::Start { .. });
        frames
            .into_iter()
            .zip(res.times)
            .map(|(f, ts)| (f, ts, gap))
            .collect()
    }

    fn process_placed(&mut self, placed: Vec<(HeldFrame, Timestamp, bool)>) {
        let tol = self.clock.tolerance_us();
        for (f, ts, gap) in placed {
            if gap && self.first_ts.is_some() && ts.since(self.now) > tol {
                // A silent stretch, or a step nothing could tell from one:
                // it does not count towards calls ringing across it.
                self.tracker.skip_setup_time(ts.since(self.now));
            }
            self.process(&f.packet(ts));
        }
    }

    /// Counts and logs what the clock decided about held frames.
    fn note_resolution(&mut self, res: &Resolution, frames: &[HeldFrame]) {
        let point = self.clock.point_name().to_owned();
        for ((f, &t), _) in frames
            .iter()
            .zip(&res.times)
            .zip(&res.outlier)
            .filter(|(_, o)| **o)
        {
            self.outlier_log.note(&point, f.source(), f.raw, t);
        }
        match res.kind {
            Kind::Outliers | Kind::Start { .. } => {}
            Kind::Step { offset_us } => tracing::warn!(
                capture = %point,
                offset_us,
                "the capture clock of {point} stepped: its packets are placed {:+.3} s from their stamps from now on (clock step)",
                offset_us as f64 / 1e6
            ),
            Kind::Gap { gap_us } => {
                tracing::debug!(capture = %point, gap_us, "no packet for a while: time passed")
            }
        }
        let c = self.clock.stats();
        self.stats.clock_outliers = c.outliers;
        self.stats.clock_steps = c.steps;
        self.stats.clock_gaps = c.gaps;
    }
}
