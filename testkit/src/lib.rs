//! Generators for callrec's tests, benchmarks, fuzz targets and demo:
//! [`scenario`] builds calls (SIP dialogs with SDP, RTP with known tones
//! or voices, mid-call events) as timed datagrams, and [`pcapgen`] frames
//! them (Ethernet, VLAN, tunnels, fragments, TCP) into pcap files.
//!
//! They live outside the product library on purpose: nothing in `callrec`
//! itself depends on them, and nothing here is shipped in the package.

pub mod pcapgen;
pub mod scenario;
