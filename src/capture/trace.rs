//! A source wrapper that logs every frame at `trace` level, for debugging a
//! capture without changing what the pipeline sees.

use super::{CaptureError, Packet, PacketSource};

pub struct TraceSource<S: PacketSource> {
    inner: S,
    /// Copied once so logging does not fight the borrow of the frame.
    name: String,
}

impl<S: PacketSource> TraceSource<S> {
    pub fn new(inner: S) -> Self {
        let name = inner.name().to_string();
        TraceSource { inner, name }
    }
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: PacketSource> PacketSource for TraceSource<S> {
    fn next_packet(&mut self) -> Result<Option<Packet<'_>>, CaptureError> {
        let name = &self.name;
        let r = self.inner.next_packet();
        match &r {
            Ok(Some(p)) => tracing::trace!(
                source = %name,
                index = p.index,
                ts = p.ts.micros(),
                link = ?p.link,
                caplen = p.data.len(),
                len = p.orig_len,
                "frame"
            ),
            Ok(None) => tracing::trace!(source = %name, "no frame"),
            Err(e) => tracing::trace!(source = %name, error = %e, "capture error"),
        }
        r
    }

    fn name(&self) -> &str {
        self.inner.name()
    }
}
