//! callrec: a carrier-side call-recording appliance.
//!
//! The pipeline, in the order a packet meets it:
//! [`capture`] (frames from libpcap) → [`decode`] (link, IP, tunnels,
//! fragments, TCP) → [`sip`] (messages, SDP) → [`calls`] (dialogs, policy)
//! → [`media`] (RTP, jitter, G.711, mixing) → [`recording`] (WAV and
//! metadata) → [`delivery`] (spool queues, SFTP). [`announce`] plays the
//! compliance prompts; [`daemon`] wires it all to threads, sockets and
//! signals. Everything up to the file writers is Sans-IO: driven by packet
//! time, never by a clock.

pub mod announce;
pub mod calls;
pub mod capture;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod delivery;
pub mod history;
pub mod media;
pub mod prefetch;
pub mod recording;
pub mod report;
pub mod sip;
pub mod time;
