//! Capture files (pcap and pcapng) read through libpcap.
//!
//! libpcap 1.10 reads both formats with the same call, so one source covers
//! them. A file cut short or corrupt mid-way yields every readable packet
//! first and then one [`CaptureError::Corrupt`] naming the last good packet.

use super::{CaptureError, LinkType, Packet, PacketSource};
use std::path::Path;

/// Frames from a pcap or pcapng file, numbered from 1.
pub struct FileSource {
    cap: pcap::Capture<pcap::Offline>,
    name: String,
    link: LinkType,
    index: u64,
    finished: bool,
}

impl FileSource {
    pub fn open(path: impl AsRef<Path>) -> Result<FileSource, CaptureError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let cap = pcap::Capture::from_file(path).map_err(|e| CaptureError::Open {
            source_name: name.clone(),
            reason: e.to_string(),
        })?;
        let link = LinkType::from_dlt(cap.get_datalink().0);
        Ok(FileSource {
            cap,
            name,
            link,
            index: 0,
            finished: false,
        })
    }

    pub fn link_type(&self) -> LinkType {
        self.link
    }

    /// Packets read so far (the number of the last one returned).
    pub fn packets_read(&self) -> u64 {
        self.index
    }
}

impl PacketSource for FileSource {
    fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        if self.finished {
            return Ok(None);
        }
        // Borrow fields apart so the returned packet can borrow the capture
        // while the error arms update the counters.
        let (cap, finished, index) = (&mut self.cap, &mut self.finished, &mut self.index);
        match cap.next_packet() {
            Ok(p) => {
                *index += 1;
                Ok(Some(Packet {
                    index: *index,
                    ts: super::header_time(p.header),
                    link: self.link,
                    data: p.data,
                    orig_len: p.header.len,
                }))
            }
            Err(pcap::Error::NoMorePackets) => {
                *finished = true;
                Ok(None)
            }
            Err(e) => {
                *finished = true;
                Err(CaptureError::Corrupt {
                    source_name: self.name.clone(),
                    after_packet: *index,
                    reason: e.to_string(),
                })
            }
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}
