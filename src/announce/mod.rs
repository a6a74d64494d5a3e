//! Compliance announcements: the five guidance prompts ([`prompts`]), the
//! Sans-IO player that turns a prompt into paced RTP towards both parties
//! ([`player`]), and the sinks that put those packets on the wire or in a
//! file ([`sink`]).

pub mod player;
pub mod prompts;
pub mod sink;

pub use player::{BeepKind, OutPacket, PlayError, PlayTimes, Player, Target};
pub use prompts::{G711, Prompt, PromptError, Prompts, WavProblem};
pub use sink::{InjectSink, OffSink, PcapSink, Sink, SinkError, UdpSink};
