//! Live capture from a network interface through libpcap.
//!
//! Opened in immediate mode (frames are handed over as they arrive, not
//! when the kernel buffer fills) with a short read timeout, so the reading
//! thread wakes regularly to check for shutdown even on a silent link.

use super::{CaptureError, LinkType, Packet, PacketSource};

/// Read timeout: how long `next_packet` may wait before returning `Ok(None)`.
pub const READ_TIMEOUT_MS: i32 = 100;

/// Kernel and libpcap counters for a live interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveStats {
    pub received: u64,
    /// Dropped because the ring buffer was full (we read too slowly).
    pub dropped: u64,
    /// Dropped by the interface or its driver.
    pub if_dropped: u64,
}

/// Frames from one interface. Unlike a file, `Ok(None)` from
/// [`PacketSource::next_packet`] means "nothing within the read timeout":
/// call again.
pub struct LiveSource {
    cap: pcap::Capture<pcap::Active>,
    name: String,
    link: LinkType,
    index: u64,
}

impl LiveSource {
    pub fn open(
        interface: &str,
        snaplen: u32,
        promisc: bool,
        buffer_bytes: u32,
    ) -> Result<LiveSource, CaptureError> {
        let err = |e: pcap::Error| CaptureError::Open {
            source_name: interface.to_string(),
            reason: e.to_string(),
        };
        let cap = pcap::Capture::from_device(interface)
            .map_err(err)?
            .snaplen(snaplen.min(i32::MAX as u32) as i32)
            .promisc(promisc)
            .buffer_size(buffer_bytes.min(i32::MAX as u32) as i32)
            .immediate_mode(true)
            .timeout(READ_TIMEOUT_MS)
            .open()
            .map_err(err)?;
        // Only what arrives: a mirror port delivers every call as incoming
        // frames, and what this host sends itself (announcements and
        // beeps injected on this interface, which the kernel also shows
        // every capture on it) must never be taken for a party's media.
        if let Err(e) = cap.direction(pcap::Direction::In) {
            tracing::warn!(interface, error = %e, "cannot ignore this host's own frames; injected announcements may be captured");
        }
        let link = LinkType::from_dlt(cap.get_datalink().0);
        Ok(LiveSource {
            cap,
            name: interface.to_string(),
            link,
            index: 0,
        })
    }

    pub fn link_type(&self) -> LinkType {
        self.link
    }

    /// libpcap's counters; the `dropped` figure is what the metrics report
    /// as frames lost before we saw them.
    pub fn stats(&mut self) -> Result<LiveStats, CaptureError> {
        let s = self.cap.stats().map_err(|e| CaptureError::Open {
            source_name: self.name.clone(),
            reason: e.to_string(),
        })?;
        Ok(LiveStats {
            received: s.received as u64,
            dropped: s.dropped as u64,
            if_dropped: s.if_dropped as u64,
        })
    }
}

impl PacketSource for LiveSource {
    fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        let (cap, index) = (&mut self.cap, &mut self.index);
        match cap.next_packet() {
            Ok(p) => {
                *index += 1;
                Ok(Some(super::from_pcap(p, *index, self.link)))
            }
            Err(pcap::Error::TimeoutExpired) => Ok(None),
            Err(e) => Err(CaptureError::Corrupt {
                source_name: self.name.clone(),
                after_packet: *index,
                reason: e.to_string(),
            }),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}
