//! The announcer: plays a recorded call's prompt to both parties when it is
//! answered, and the pause and resume beeps when its recording pauses and
//! resumes, through the configured sink, and says whether it could.
//!
//! Runs on the capture thread, which already knows every call's media
//! addresses and sees the frames MAC addresses are learned from. MACs are
//! learned from signalling frames (cheap: SIP is a small share of packets)
//! per IP address: the MAC a host's frames come from, and the MAC frames
//! towards it carry, with their VLAN tags.

use crate::announce::inline::{Cmd, InlineHandle, call_flows};
use crate::announce::outcome::{Outcome, TO_REMOTE, TO_SUBSCRIBER};
use crate::announce::{BeepKind, Player, Prompts, Sink, Target};
use crate::calls::tracker::{CallKey, MediaLegs};
use crate::config::{AnnounceMode, Config};
use crate::decode::L2Info;
use crate::time::Timestamp;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum AnnouncerError {
    #[error(transparent)]
    Prompt(#[from] crate::announce::PromptError),
    #[error(transparent)]
    Sink(#[from] crate::announce::SinkError),
}

#[derive(Clone, Debug, Default)]
pub struct AnnounceStats {
    pub played: u64,
    /// Prompts that could not be sent at all (no MAC yet, interface down,
    /// no G.711 codec negotiated): the call is recorded from the answer.
    pub failed: u64,
    pub packets: u64,
    pub send_errors: u64,
    /// Pause and resume beeps started.
    pub beeps: u64,
}

#[derive(Clone, Copy, Default)]
struct Seen {
    as_src: Option<[u8; 6]>,
    as_dst: Option<[u8; 6]>,
    vlans: [u16; 2],
}

/// Bound on the learned MAC table; a flood of spoofed sources must not grow it forever.
const MAX_MACS: usize = 65_536;

pub struct Announcer {
    mode: AnnounceMode,
    prompts: Prompts,
    player: Player,
    sink: Box<dyn Sink>,
    macs: HashMap<IpAddr, Seen>,
    stats: AnnounceStats,
    /// Inline mode: the worker that diverts and rewrites the parties' flows.
    inline: Option<InlineHandle>,
    /// Each call's prompt outcome, the subscriber's media address (to tell
    /// the two parties' packets apart) and when the prompt ends.
    outcomes: HashMap<CallKey, (Arc<Outcome>, Option<SocketAddr>, Timestamp)>,
}

/// When the prompt played, if it did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Played {
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
}

impl Announcer {
    /// None when announcements are off. `pcap_path` is where mode "pcap" writes.
    pub fn from_config(
        cfg: &Config,
        pcap_path: &Path,
    ) -> Result<Option<Announcer>, AnnouncerError> {
        if cfg.announce.mode == AnnounceMode::Off {
            return Ok(None);
        }
        let prompts = Prompts::load(&cfg.announce.dir)?;
        let sink = crate::announce::sink::open(
            cfg.announce.mode,
            cfg.announce.interface.as_deref(),
            pcap_path,
        )?;
        // A fixed seed: SSRCs and sequence numbers look random to the
        // endpoints, yet a replay writes the same announcements.pcap.
        Ok(Some(Announcer {
            mode: cfg.announce.mode,
            inline: None,
            outcomes: HashMap::new(),
            prompts,
            player: Player::new(0x63_616c_6c72_6563), // "callrec" in ASCII
            sink,
            macs: HashMap::new(),
            stats: AnnounceStats::default(),
        }))
    }

    /// Inline mode: the worker started by the daemon. Without one (replay),
    /// an inline announcer plays nothing and says so in the metadata.
    pub fn with_inline(mut self, handle: InlineHandle) -> Announcer {
        self.inline = Some(handle);
        self
    }

    /// What became of the call's prompt (None before its answer).
    pub fn outcome(&self, call: CallKey) -> Option<Arc<Outcome>> {
        self.outcomes.get(&call).map(|o| o.0.clone())
    }

    pub fn stats(&self) -> &AnnounceStats {
        &self.stats
    }

    /// Learns MAC addresses from a captured frame between `src` and `dst`.
    pub fn learn(&mut self, l2: &L2Info, src: IpAddr, dst: IpAddr) {
        if self.macs.len() >= MAX_MACS && !self.macs.contains_key(&src) {
            return;
        }
        let s = self.macs.entry(src).or_default();
        s.as_src = Some(l2.src_mac);
        let d = self.macs.entry(dst).or_default();
        d.as_dst = Some(l2.dst_mac);
        d.vlans = l2.vlans;
    }

    fn l2_for(&self, from: IpAddr, to: IpAddr) -> Option<L2Info> {
        let src_mac = self.macs.get(&from)?.as_src?;
        let dst = self.macs.get(&to)?;
        Some(L2Info {
            src_mac,
            dst_mac: dst.as_dst?,
            vlans: dst.vlans,
        })
    }

    /// Starts guidance `id` towards both parties at `now`. None when it
    /// cannot be played; the caller then records from the answer.
    pub fn start(
        &mut self,
        call: CallKey,
        short_id: &str,
        now: Timestamp,
        id: u8,
        legs: &MediaLegs,
    ) -> Option<Played> {
        let placement = match (self.mode, self.inline.is_some()) {
            (AnnounceMode::Inline, _) => "in-stream",
            (AnnounceMode::Inject, true) => "own-stream",
            _ => "separate-stream",
        };
        let outcome = Arc::new(Outcome::new(self.mode.as_str(), placement));
        let sub_addr = legs.subscriber.as_ref().map(|e| e.addr);
        self.outcomes.insert(call, (outcome.clone(), sub_addr, now));
        let targets = match self.targets(legs) {
            Ok(t) => t,
            Err(why) => return self.fail(call, short_id, why),
        };
        let Ok(prompt) = self.prompts.get(id) else {
            return self.fail(call, short_id, "no such guidance prompt");
        };
        if self.uses_worker() {
            return self.start_inline(call, short_id, now, prompt.clone(), &targets, outcome);
        }
        let times = match self.player.start(call, now, prompt, targets) {
            Ok(t) => t,
            Err(e) => return self.fail(call, short_id, &e.to_string()),
        };
        if let Some(o) = self.outcomes.get_mut(&call) {
            o.2 = times.ended_at;
        }
        // Send what is due now; if the very first packets cannot go out
        // (no MAC yet, interface down), nobody hears the prompt.
        let mut first_error = None;
        let (sink, stats, outcomes) = (&mut self.sink, &mut self.stats, &self.outcomes);
        self.player.poll(now, &mut |p| {
            stats.packets += 1;
            if let Err(e) = sink.send(&p) {
                stats.send_errors += 1;
                if p.call == call && first_error.is_none() {
                    first_error = Some(e.to_string());
                }
            } else {
                count_sent(outcomes, &p);
            }
        });
        if let Some(e) = first_error {
            self.player.stop(call);
            return self.fail(call, short_id, &e);
        }
        self.stats.played += 1;
        tracing::info!(call = %short_id, guidance = id, duration_ms = times.ended_at.since(times.started_at) / 1000, "announcement played");
        Some(Played {
            started_at: times.started_at,
            ended_at: times.ended_at,
        })
    }

    /// Inline: asks the worker to divert both flows of the call and play
    /// `prompt` in them. The prompt ends, by the parties' own RTP clocks,
    /// one prompt length after their first diverted packet.
    fn start_inline(
        &mut self,
        call: CallKey,
        short_id: &str,
        now: Timestamp,
        prompt: crate::announce::Prompt,
        targets: &[Target; 2],
        outcome: Arc<Outcome>,
    ) -> Option<Played> {
        let ended_at = now.add(prompt.duration());
        let flows = call_flows(targets[0].to, targets[1].to);
        let sent = self.inline.as_ref().is_some_and(|h| {
            h.send(Cmd::Divert {
                call,
                flows,
                clip: prompt,
                outcome: Some(outcome),
            })
        });
        if !sent {
            return self.fail(call, short_id, "the inline worker is not running");
        }
        if let Some(o) = self.outcomes.get_mut(&call) {
            o.2 = ended_at;
        }
        self.stats.played += 1;
        Some(Played {
            started_at: now,
            ended_at,
        })
    }

    /// The subscriber and the remote party, each addressed from the other.
    fn targets(&self, legs: &MediaLegs) -> Result<[Target; 2], &'static str> {
        let (Some(sub), Some(rem)) = (&legs.subscriber, &legs.remote) else {
            return Err("the SDP of one party is missing");
        };
        // A prompt in clear RTP (or rewritten into an SRTP packet, whose
        // authentication tag then fails) would be silence to the phone.
        let clear = |e: &crate::calls::tracker::Endpoint| e.keys == crate::media::srtp::Keys::Clear;
        if !(clear(sub) && clear(rem)) {
            return Err("SRTP media: the prompt cannot be placed in an encrypted stream");
        }
        let (Some(sub_pt), Some(rem_pt)) = (sub.g711_pt(), rem.g711_pt()) else {
            return Err("no G.711 codec negotiated");
        };
        Ok([
            Target {
                to: sub.addr,
                from: rem.addr,
                pt: sub_pt,
                l2: self.l2_for(rem.addr.ip(), sub.addr.ip()),
            },
            Target {
                to: rem.addr,
                from: sub.addr,
                pt: rem_pt,
                l2: self.l2_for(sub.addr.ip(), rem.addr.ip()),
            },
        ])
    }

    /// Tells both parties that the recording paused or resumed at `now`,
    /// with the same streams the prompt used. Never cuts the prompt short:
    /// a pause asked for while it plays (through the control interface)
    /// takes effect silently, since recording has not begun. Whether or
    /// not the beep can be sent, the pause itself stands.
    pub fn beep(
        &mut self,
        call: CallKey,
        short_id: &str,
        now: Timestamp,
        kind: BeepKind,
        legs: &MediaLegs,
    ) -> bool {
        if self.player.is_prompting(call) || self.in_prompt(call, now) {
            return false;
        }
        if self.uses_worker() {
            return self.beep_inline(call, short_id, kind, legs);
        }
        let started = self.targets(legs).map_err(|e| e.to_string()).and_then(|t| {
            self.player
                .beep(call, now, t, kind)
                .map_err(|e| e.to_string())
        });
        if let Err(why) = started {
            tracing::warn!(call = %short_id, beep = ?kind, reason = %why, "pause beep not played");
            return false;
        }
        self.stats.beeps += 1;
        self.poll(now);
        true
    }

    /// Inline mode, and mirror injection with its worker (the prompt in
    /// the parties' own streams), go through a worker; otherwise the
    /// player sends a separate stream.
    fn uses_worker(&self) -> bool {
        self.mode == AnnounceMode::Inline
            || (self.mode == AnnounceMode::Inject && self.inline.is_some())
    }

    /// Whether a worker's prompt is still playing at `now`.
    fn in_prompt(&self, call: CallKey, now: Timestamp) -> bool {
        self.uses_worker() && self.outcomes.get(&call).is_some_and(|o| now < o.2)
    }

    fn beep_inline(
        &mut self,
        call: CallKey,
        short_id: &str,
        kind: BeepKind,
        legs: &MediaLegs,
    ) -> bool {
        let sent = match self.targets(legs) {
            Ok(t) => self.inline.as_ref().is_some_and(|h| {
                h.send(Cmd::Divert {
                    call,
                    flows: call_flows(t[0].to, t[1].to),
                    clip: self.player.beep_clip(kind).clone(),
                    outcome: None,
                })
            }),
            Err(why) => {
                tracing::warn!(call = %short_id, beep = ?kind, reason = %why, "pause beep not played");
                return false;
            }
        };
        if sent {
            self.stats.beeps += 1;
        }
        sent
    }

    /// The call's media moved (re-INVITE, UPDATE) at `now`: an inline
    /// prompt still playing is stopped (its flows are no longer the
    /// call's), and the metadata says the parties heard only part of it.
    pub fn media_changed(&mut self, call: CallKey, now: Timestamp) {
        if self.in_prompt(call, now)
            && let Some(h) = &self.inline
        {
            h.send(Cmd::Release {
                call,
                why: "the media moved (re-INVITE or UPDATE) during the prompt",
            });
        }
    }

    fn fail(&mut self, call: CallKey, short_id: &str, why: &str) -> Option<Played> {
        if let Some((o, _, _)) = self.outcomes.get(&call) {
            o.fail(TO_SUBSCRIBER, why);
            o.fail(TO_REMOTE, why);
        }
        self.stats.failed += 1;
        tracing::warn!(call = %short_id, reason = why, "announcement failed: guidance not played; recording from the answer");
        None
    }

    /// Sends every packet due by `now`.
    pub fn poll(&mut self, now: Timestamp) {
        if self.player.next_due().is_none_or(|t| t > now) {
            return;
        }
        let (sink, stats, outcomes) = (&mut self.sink, &mut self.stats, &self.outcomes);
        self.player.poll(now, &mut |p| {
            stats.packets += 1;
            if let Err(e) = sink.send(&p) {
                stats.send_errors += 1;
                tracing::debug!(error = %e, "announcement packet not sent");
            } else {
                count_sent(outcomes, &p);
            }
        });
    }

    /// The call ended: stop its prompt and drop its state.
    pub fn forget(&mut self, call: CallKey) {
        self.player.stop(call);
        self.player.forget(call);
        if let (Some(h), Some(_)) = (&self.inline, self.outcomes.remove(&call)) {
            h.send(Cmd::Release {
                call,
                why: "the call ended during the prompt",
            });
        }
    }

    /// End of input: send the rest of every prompt still playing (a replay
    /// has no later packets to drive the clock), then flush the sink.
    pub fn finish(&mut self, now: Timestamp) {
        if let Some(last) = self.player.next_due().map(|_| now.add_micros(120_000_000)) {
            self.poll(last);
        }
        if let Err(e) = self.sink.flush() {
            tracing::error!(error = %e, "announcement sink flush failed");
        }
    }
}

/// Counts a sent prompt packet for its party (beeps after the prompt's end
/// are not the prompt).
fn count_sent(
    outcomes: &HashMap<CallKey, (Arc<Outcome>, Option<SocketAddr>, Timestamp)>,
    p: &crate::announce::OutPacket,
) {
    if let Some((o, sub, end)) = outcomes.get(&p.call)
        && p.at < *end
    {
        let party = if Some(p.to) == *sub {
            TO_SUBSCRIBER
        } else {
            TO_REMOTE
        };
        o.sent_one(party, p.at.micros());
    }
}
