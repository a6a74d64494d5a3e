//! Compliance announcements: the five guidance prompts ([`prompts`]), the
//! Sans-IO player that turns a prompt into paced RTP towards both parties
//! ([`player`]), the sinks that put those packets on the wire or in a file
//! ([`sink`]), and the [`announcer`] that ties them to calls.

pub mod announcer;
pub mod inline;
pub mod mirror;
pub mod outcome;
pub mod player;
pub mod prompts;
pub mod rewrite;
pub mod sink;

pub use player::{BeepKind, OutPacket, PlayError, PlayTimes, Player, Target};
pub use prompts::{G711, Prompt, PromptError, Prompts, WavProblem};
pub use sink::{InjectSink, OffSink, PcapSink, Sink, SinkError, UdpSink};

/// Checks the prompt files of every guidance id the contracts use (all
/// five when announcements are on), naming the file that is wrong.
pub fn check_prompts(cfg: &crate::config::Config) -> Result<(), PromptError> {
    if cfg.announce.mode == crate::config::AnnounceMode::Off {
        return Ok(());
    }
    Prompts::load(&cfg.announce.dir).map(|_| ())
}
