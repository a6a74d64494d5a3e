//! SIP dialog tracking (Sans-IO).
//!
//! The tracker is fed every SIP message with its capture time and the
//! addresses it travelled between, and answers with [`CallEvent`]s: a call
//! was decided, answered, changed its media, was transferred, ended. It
//! never reads a clock; [`Tracker::tick`] is driven by packet time, so a
//! capture replayed twice produces the same events.
//!
//! One [`Dialog`] per Call-ID. The side that sent the initial INVITE is
//! side A (the caller), the other side B. Which of them is the contract's
//! subscriber follows from the policy's direction: outbound calls are placed
//! by the subscriber (A), inbound calls reach the subscriber (B).
//!
//! Unanswered dialogs are bounded apart ([`crate::calls::early`]) and hold
//! no recording capacity: whether a recordable call is recorded or goes
//! unrecorded under congestion is decided at its answer.

use crate::calls::early::EarlyDialogs;
use crate::calls::policy::{Direction, InviteFacts, Load, Policy, SkipReason, Verdict};
use crate::config::Config;
use crate::history::CallRecord;
use crate::sip::{self, Message, sdp};
use crate::time::Timestamp;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

mod reload;
pub mod snapshot;

/// Identifies a call for the life of the process (never reused).
pub type CallKey = u64;

/// Where one party receives its audio, as its SDP says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Payload type to encoding name (upper case), from rtpmap or the static table.
    pub payloads: Vec<(u8, String)>,
    pub ptime: Option<u32>,
    pub direction: sdp::Direction,
    /// Decodable payload types with clock and fmtp (see [`crate::media::codec::Format`]).
    pub formats: Vec<(u8, crate::media::codec::Format)>,
    /// How the party's media is protected (SDES keys, keys out of sight, none).
    pub keys: crate::media::srtp::Keys,
}

impl Endpoint {
    /// The first audio codec the party offered that we can play or record.
    pub fn g711_pt(&self) -> Option<u8> {
        self.payloads
            .iter()
            .find(|(_, e)| e == "PCMU" || e == "PCMA")
            .map(|(pt, _)| *pt)
    }
    pub fn telephone_event_pt(&self) -> Option<u8> {
        self.payloads
            .iter()
            .find(|(_, e)| e == "TELEPHONE-EVENT")
            .map(|(pt, _)| *pt)
    }
}

/// The two parties of a recorded call, by role.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaLegs {
    pub subscriber: Option<Endpoint>,
    pub remote: Option<Endpoint>,
    /// Where each party's signalling came from (the initial INVITE for the
    /// caller, the answering 2xx for the callee): evidence for where its
    /// media may come from when that is not its SDP address (NAT).
    pub subscriber_sip: Option<IpAddr>,
    pub remote_sip: Option<IpAddr>,
}

// A few events per call, never per packet: boxing the big ones would buy
// nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum CallEvent {
    /// The policy decided on a new call (recorded or not).
    Decided {
        key: CallKey,
        call_id: String,
        short_id: String,
        verdict: Verdict,
    },
    /// A recorded call was answered (2xx to the initial INVITE).
    Answered {
        key: CallKey,
        invite_at: Timestamp,
        at: Timestamp,
        legs: MediaLegs,
    },
    /// A recorded call's media moved (re-INVITE, UPDATE, late answer, hold).
    MediaChanged {
        key: CallKey,
        at: Timestamp,
        legs: MediaLegs,
    },
    /// A recorded call was transferred: a new segment starts at `at`.
    NewSegment {
        key: CallKey,
        at: Timestamp,
        cause: &'static str,
    },
    /// A recorded call now continues in another dialog (an INVITE with
    /// Replaces was answered): its media keep-alive follows `call_id`.
    Replaced { key: CallKey, call_id: String },
    /// A DTMF digit sent by SIP INFO from the subscriber.
    InfoDigit {
        key: CallKey,
        at: Timestamp,
        digit: char,
    },
    /// A call ended; `record` is its history line (billing_start filled in
    /// by whoever played the announcement).
    Ended {
        key: CallKey,
        at: Timestamp,
        recorded: bool,
        record: CallRecord,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// INVITE seen, no final response yet.
    Proceeding,
    /// The INVITE was challenged (401/407); the caller may retry with credentials.
    Challenged,
    Confirmed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    A,
    B,
}

#[derive(Debug)]
struct Dialog {
    key: CallKey,
    call_id: String,
    /// The Call-ID the history knows the call by: this dialog's, or for a
    /// dialog that replaced a recorded one (RFC 3891), the original's.
    history_call_id: String,
    /// Which side is the contract's subscriber (the left channel).
    sub_side: Side,
    /// Set while this dialog is an unanswered INVITE with Replaces aimed at
    /// a recorded dialog (that dialog's Call-ID): until answered it is only
    /// an attempt, and its failure ends nothing.
    takes_over: Option<String>,
    short_id: String,
    verdict: Verdict,
    state: State,
    invite_at: Timestamp,
    invite_cseq: u32,
    a_tag: Option<String>,
    b_tag: Option<String>,
    a_media: Option<Endpoint>,
    b_media: Option<Endpoint>,
    /// Early SDP per To tag (forked 18x), used when the 2xx has none.
    early: Vec<(String, Endpoint)>,
    answered_at: Option<Timestamp>,
    last_activity: Timestamp,
    segments: u32,
    /// The connected party's asserted identity, to notice a transfer.
    remote_identity: Option<String>,
    /// BYE seen; the dialog lingers briefly for retransmissions.
    ended: bool,
    /// Where the initial INVITE came from: the source its early dialog
    /// counts against.
    src_ip: IpAddr,
    /// Counted in [`EarlyDialogs`] (INVITE seen, not answered, not ended).
    in_early: bool,
    /// Counted in the recorded calls in progress (answered and recorded).
    counted: bool,
    /// Signalling addresses of side A (the INVITE) and B (the 2xx).
    a_sip: Option<IpAddr>,
    b_sip: Option<IpAddr>,
}

impl Dialog {
    fn subscriber_side(&self) -> Side {
        self.sub_side
    }
    fn legs(&self) -> MediaLegs {
        let (s, r, s_sip, r_sip) = match self.subscriber_side() {
            Side::A => (&self.a_media, &self.b_media, self.a_sip, self.b_sip),
            Side::B => (&self.b_media, &self.a_media, self.b_sip, self.a_sip),
        };
        MediaLegs {
            subscriber: s.clone(),
            remote: r.clone(),
            subscriber_sip: s_sip,
            remote_sip: r_sip,
        }
    }
    /// Which side sent `msg`. Requests come from the side whose tag is in
    /// From; responses from the other one.
    fn sender(&self, msg: &Message<'_>) -> Side {
        let from_tag = msg.from().and_then(|f| f.tag().map(str::to_owned));
        let from_a = match (&from_tag, &self.a_tag) {
            (Some(t), Some(a)) => t == a,
            _ => true,
        };
        match (msg.is_request(), from_a) {
            (true, true) | (false, false) => Side::A,
            _ => Side::B,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct TrackerStats {
    pub sip_messages: u64,
    pub invites: u64,
    pub retransmissions: u64,
    /// In-dialog messages for a Call-ID we never saw the INVITE of.
    pub orphans: u64,
    /// Extra 2xx from other forks after the first answer.
    pub forked_answers: u64,
    pub evicted: u64,
    pub bad_sdp: u64,
    /// INVITEs not followed: their source was at `limits.early_dialogs_per_source`.
    pub invites_throttled: u64,
    /// Unanswered dialogs shed at `limits.early_dialogs` (also in `evicted`).
    pub early_evicted: u64,
    /// The most unanswered dialogs followed at once.
    pub early_peak: usize,
}

pub struct Tracker {
    policy: Policy,
    /// Contract ids by index, as the policy's verdicts refer to them.
    contract_ids: Vec<String>,
    offset: i32,
    setup_timeout: i64,
    rtp_timeout: i64,
    max_call_length: i64,
    max_dialogs: usize,
    max_early: usize,
    max_early_per_source: usize,
    early: EarlyDialogs,
    dialogs: HashMap<String, Dialog>,
    /// Call-IDs in INVITE order, for setup timeouts and eviction. Entries
    /// whose dialog is gone or answered are skipped lazily.
    pending: VecDeque<(Timestamp, String, CallKey)>,
    next_key: CallKey,
    active_recorded: usize,
    spool_full: bool,
    last_tick: Timestamp,
    stats: TrackerStats,
}

/// How long an ended dialog is kept to absorb retransmitted BYE/200.
const LINGER_US: i64 = 32_000_000;

impl Tracker {
    pub fn new(cfg: &Config) -> Tracker {
        let us = |d: Duration| d.as_micros() as i64;
        Tracker {
            policy: Policy::new(cfg),
            contract_ids: cfg.contracts.iter().map(|c| c.id.clone()).collect(),
            offset: cfg.general.utc_offset_secs,
            setup_timeout: us(cfg.recording.setup_timeout),
            rtp_timeout: us(cfg.recording.rtp_timeout),
            max_call_length: us(cfg.recording.max_call_length),
            max_dialogs: cfg.limits.max_dialogs.max(1),
            max_early: cfg.limits.early_dialogs.max(1),
            max_early_per_source: cfg.limits.early_dialogs_per_source.max(1),
            early: EarlyDialogs::default(),
            dialogs: HashMap::new(),
            pending: VecDeque::new(),
            next_key: 1,
            active_recorded: 0,
            spool_full: false,
            last_tick: Timestamp::ZERO,
            stats: TrackerStats::default(),
        }
    }

    pub fn stats(&self) -> &TrackerStats {
        &self.stats
    }
    /// Unanswered dialogs followed now.
    pub fn early_dialogs(&self) -> usize {
        self.early.total()
    }
    pub fn active_dialogs(&self) -> usize {
        self.dialogs.len()
    }
    pub fn active_recorded(&self) -> usize {
        self.active_recorded
    }
    /// Set by the spool watcher: new calls go unrecorded ("overload") while true.
    pub fn set_spool_full(&mut self, full: bool) {
        self.spool_full = full;
    }

    /// RTP was seen for a call: keeps it from ending by inactivity.
    pub fn touch(&mut self, call_id: &str, at: Timestamp) {
        if let Some(d) = self.dialogs.get_mut(call_id) {
            d.last_activity = d.last_activity.max(at);
        }
    }

    /// Feeds one SIP message. `src` is where it came from.
    pub fn on_message(
        &mut self,
        at: Timestamp,
        src: SocketAddr,
        msg: &Message<'_>,
        out: &mut Vec<CallEvent>,
    ) {
        self.stats.sip_messages += 1;
        let Some(call_id) = msg.call_id().map(str::trim).filter(|c| !c.is_empty()) else {
            return;
        };
        let Some((cseq, cseq_method)) = msg.cseq() else {
            return;
        };
        let method = msg.method().unwrap_or("").to_ascii_uppercase();
        let to_tag = msg.to().and_then(|t| t.tag().map(str::to_owned));

        if msg.is_request() && method == "INVITE" && to_tag.is_none() {
            self.on_initial_invite(at, src, call_id, cseq, msg, out);
            return;
        }
        let Some(d) = self.dialogs.get_mut(call_id) else {
            self.stats.orphans += 1;
            return;
        };
        d.last_activity = d.last_activity.max(at);
        if d.ended {
            return;
        }
        let key = d.key;
        let sender = d.sender(msg);
        // Once answered, the dialog is the one with the answering fork's
        // tag; anything else (another fork's late 2xx) is not this call.
        if d.state == State::Confirmed && d.b_tag.is_some() {
            let from_tag = msg.from().and_then(|f| f.tag().map(str::to_owned));
            if to_tag != d.b_tag && from_tag != d.b_tag {
                if msg.status().is_some_and(|c| (200..300).contains(&c)) {
                    self.stats.forked_answers += 1;
                }
                return;
            }
        }

        // SDP may come in INVITE, 18x, 2xx, ACK, UPDATE and their answers.
        if let Some(body) = msg.sdp() {
            match sdp::parse(body) {
                Ok(s) => {
                    if let Some(ep) = endpoint_from_sdp(&s) {
                        let is_early = matches!(msg.status(), Some(101..=199));
                        match (is_early, &to_tag) {
                            (true, Some(tag)) if d.state != State::Confirmed => {
                                d.early.retain(|(t, _)| t != tag);
                                d.early.push((tag.clone(), ep.clone()));
                                if d.b_media.is_none() || d.b_tag.is_none() {
                                    d.b_media = Some(ep);
                                }
                            }
                            _ => {
                                let slot = match sender {
                                    Side::A => &mut d.a_media,
                                    Side::B => &mut d.b_media,
                                };
                                let changed = slot.as_ref() != Some(&ep);
                                // Old-style hold (c=0.0.0.0) keeps the address the
                                // party last announced; only the direction changes.
                                let ep = match (slot.as_ref(), ep.addr.ip().is_unspecified()) {
                                    (Some(prev), true) => Endpoint {
                                        addr: prev.addr,
                                        ..ep
                                    },
                                    _ => ep,
                                };
                                *slot = Some(ep);
                                if changed && d.state == State::Confirmed && d.verdict.record {
                                    out.push(CallEvent::MediaChanged {
                                        key,
                                        at,
                                        legs: d.legs(),
                                    });
                                }
                            }
                        }
                    }
                }
                Err(_) => self.stats.bad_sdp += 1,
            }
        }

        match msg.status() {
            Some(code) => {
                self.on_response(at, src, call_id, code, cseq, cseq_method, to_tag, msg, out)
            }
            None => self.on_request(at, call_id, &method, sender, msg, out),
        }
    }

    fn on_initial_invite(
        &mut self,
        at: Timestamp,
        src: SocketAddr,
        call_id: &str,
        cseq: u32,
        msg: &Message<'_>,
        out: &mut Vec<CallEvent>,
    ) {
        self.stats.invites += 1;
        if let Some(d) = self.dialogs.get_mut(call_id) {
            if !d.ended && (d.state != State::Confirmed) && cseq <= d.invite_cseq {
                self.stats.retransmissions += 1;
                return;
            }
            if !d.ended && d.state != State::Confirmed {
                // The same call tried again with a higher CSeq (with
                // credentials after a 401/407, whether or not the challenge
                // was captured): keep its identity.
                d.invite_cseq = cseq;
                d.state = State::Proceeding;
                d.last_activity = at;
                return;
            }
            if !d.ended && d.state == State::Confirmed {
                // A second initial INVITE on a live dialog's Call-ID: a
                // retransmission of the original after the answer.
                self.stats.retransmissions += 1;
                return;
            }
            // Call-ID reused after the old call ended: a new call.
            self.dialogs.remove(call_id);
        }
        // A new dialog: its source must be within its share first.
        let src_ip = src.ip();
        if self.early.count(src_ip) >= self.max_early_per_source {
            self.stats.invites_throttled += 1;
            if self.early.alarm_once(src_ip) {
                tracing::error!(
                    alarm = true,
                    source = %src_ip,
                    early_dialogs = self.early.count(src_ip),
                    limit = self.max_early_per_source,
                    "INVITE FLOOD: {src_ip} has {} unanswered INVITEs, at limits.early_dialogs_per_source; its further INVITEs are not followed (counted) until some are answered, cancelled or time out",
                    self.early.count(src_ip)
                );
            }
            return;
        }
        if self.replacing_invite(at, src_ip, call_id, cseq, msg) {
            self.shed_early(at, out);
            self.stats.early_peak = self.stats.early_peak.max(self.early.total());
            return;
        }
        let facts = InviteFacts::from_message(msg);
        // Recordable or not; congestion is the answer's to decide.
        let verdict = self.policy.classify(&facts);
        let key = self.next_key;
        self.next_key += 1;
        let short_id = short_id(call_id, at);
        if !verdict.record {
            // Final now; a recordable call's decision is logged at its
            // answer (or its end, unanswered).
            self.log_decision(&short_id, &verdict);
        }
        out.push(CallEvent::Decided {
            key,
            call_id: call_id.to_owned(),
            short_id: short_id.clone(),
            verdict: verdict.clone(),
        });
        let a_media = msg
            .sdp()
            .and_then(|b| sdp::parse(b).ok())
            .and_then(|s| endpoint_from_sdp(&s));
        let sub_side = match verdict.direction {
            Some(Direction::Inbound) => Side::B,
            _ => Side::A,
        };
        let d = Dialog {
            key,
            call_id: call_id.to_owned(),
            history_call_id: call_id.to_owned(),
            sub_side,
            takes_over: None,
            short_id,
            verdict,
            state: State::Proceeding,
            invite_at: at,
            invite_cseq: cseq,
            a_tag: msg.from().and_then(|f| f.tag().map(str::to_owned)),
            b_tag: None,
            a_media,
            b_media: None,
            early: Vec::new(),
            answered_at: None,
            last_activity: at,
            segments: 0,
            remote_identity: caller_identity(sub_side, msg),
            ended: false,
            src_ip,
            in_early: true,
            counted: false,
            a_sip: Some(src_ip),
            b_sip: None,
        };
        let dialogs = &self.dialogs;
        self.early.add(src_ip, key, call_id, &|k, c| {
            dialogs.get(c).is_some_and(|d| d.key == k && d.in_early)
        });
        self.dialogs.insert(call_id.to_owned(), d);
        self.pending.push_back((at, call_id.to_owned(), key));
        self.compact_pending();
        self.shed_early(at, out);
        self.stats.early_peak = self.stats.early_peak.max(self.early.total());
        if self.dialogs.len() > self.max_dialogs {
            self.evict(at, out);
        }
    }

    /// The "call decision" log line, once the decision is final.
    fn log_decision(&self, short_id: &str, verdict: &Verdict) {
        tracing::info!(
            call = %short_id,
            decision = if verdict.record { "record" } else { "skip" },
            reason = verdict.reason.map(|r| r.as_str()).unwrap_or("-"),
            contract = verdict.contract.and_then(|i| self.contract_ids.get(i)).map_or("-", |s| s.as_str()),
            direction = verdict.direction.map(|d| d.as_str()).unwrap_or("-"),
            caller = %verdict.caller,
            callee = %verdict.callee,
            "call decision"
        );
    }

    /// Over `limits.early_dialogs`: the heaviest source's oldest
    /// unanswered dialogs are ended ("evicted") until within it.
    fn shed_early(&mut self, at: Timestamp, out: &mut Vec<CallEvent>) {
        while self.early.total() > self.max_early {
            let dialogs = &self.dialogs;
            let Some((_, call_id)) = self
                .early
                .heaviest_oldest(&|k, c| dialogs.get(c).is_some_and(|d| d.key == k && d.in_early))
            else {
                break;
            };
            self.stats.evicted += 1;
            self.stats.early_evicted += 1;
            self.end(&call_id, at, "evicted", out);
            self.dialogs.remove(&call_id);
        }
    }

    /// Drops setup-timeout entries of dialogs long gone once they
    /// outnumber the dialogs (shedding takes them out of order).
    fn compact_pending(&mut self) {
        if self.pending.len() > 2 * self.dialogs.len() + 1024 {
            let dialogs = &self.dialogs;
            self.pending.retain(|(_, c, k)| {
                dialogs
                    .get(c)
                    .is_some_and(|d| d.key == *k && d.state != State::Confirmed && !d.ended)
            });
        }
    }

    /// A stretch of capture time with no packets at all was passed over
    /// (a quiet link, or a clock step nothing could tell from one): it does
    /// not count towards setup timeouts, so a call ringing across it is
    /// not given up for the silence.
    pub fn skip_setup_time(&mut self, gap_us: i64) {
        if gap_us <= 0 {
            return;
        }
        for e in self.pending.iter_mut() {
            e.0 = e.0.add_micros(gap_us);
        }
    }

    /// An INVITE with Replaces (RFC 3891) aimed at a confirmed recorded
    /// dialog: an attended transfer hands that call to a new dialog. The
    /// new dialog joins the recorded call (same key, same history line) and,
    /// once answered, takes over from the old one with a new segment. The
    /// party that stays keeps its channel; the newcomer takes the channel
    /// of the party it replaces. Returns false when the INVITE is not such
    /// a takeover (it is then an ordinary new call).
    fn replacing_invite(
        &mut self,
        at: Timestamp,
        src_ip: IpAddr,
        call_id: &str,
        cseq: u32,
        msg: &Message<'_>,
    ) -> bool {
        let Some(r) = msg.replaces() else {
            return false;
        };
        let Some(old) = self.dialogs.get(r.call_id.as_ref()) else {
            return false;
        };
        if old.ended || old.state != State::Confirmed || !old.verdict.record || r.early_only {
            return false;
        }
        // The to-tag is the tag of the dialog's party receiving this INVITE
        // (the one that stays); both tags must name the old dialog.
        let side_of = |tag: Option<&str>| match tag {
            Some(t) if old.a_tag.as_deref() == Some(t) => Some(Side::A),
            Some(t) if old.b_tag.as_deref() == Some(t) => Some(Side::B),
            _ => None,
        };
        let (Some(stays), Some(leaves)) =
            (side_of(r.to_tag.as_deref()), side_of(r.from_tag.as_deref()))
        else {
            return false;
        };
        if stays == leaves {
            return false;
        }
        // In the new dialog the staying party answers (B) and the newcomer
        // calls (A).
        let sub_side = if stays == old.sub_side {
            Side::B
        } else {
            Side::A
        };
        tracing::info!(call = %old.short_id, "recorded call being replaced by a new dialog (attended transfer)");
        let d = Dialog {
            key: old.key,
            call_id: call_id.to_owned(),
            history_call_id: old.history_call_id.clone(),
            sub_side,
            takes_over: Some(old.call_id.clone()),
            short_id: old.short_id.clone(),
            verdict: old.verdict.clone(),
            state: State::Proceeding,
            invite_at: old.invite_at,
            invite_cseq: cseq,
            a_tag: msg.from().and_then(|f| f.tag().map(str::to_owned)),
            b_tag: None,
            a_media: msg
                .sdp()
                .and_then(|b| sdp::parse(b).ok())
                .and_then(|s| endpoint_from_sdp(&s)),
            b_media: None,
            early: Vec::new(),
            answered_at: old.answered_at,
            last_activity: at,
            segments: old.segments,
            remote_identity: caller_identity(sub_side, msg),
            ended: false,
            src_ip,
            in_early: true,
            // The old dialog holds the call's place until this one answers.
            counted: false,
            a_sip: Some(src_ip),
            b_sip: None,
        };
        let key = d.key;
        let dialogs = &self.dialogs;
        self.early.add(src_ip, key, call_id, &|k, c| {
            dialogs.get(c).is_some_and(|d| d.key == k && d.in_early)
        });
        self.dialogs.insert(call_id.to_owned(), d);
        self.pending.push_back((at, call_id.to_owned(), key));
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn on_response(
        &mut self,
        at: Timestamp,
        src: SocketAddr,
        call_id: &str,
        code: u16,
        cseq: u32,
        cseq_method: &str,
        to_tag: Option<String>,
        msg: &Message<'_>,
        out: &mut Vec<CallEvent>,
    ) {
        let Some(d) = self.dialogs.get_mut(call_id) else {
            return;
        };
        let is_initial_invite = cseq_method.eq_ignore_ascii_case("INVITE") && cseq == d.invite_cseq;
        if !is_initial_invite || d.state == State::Confirmed {
            if is_initial_invite
                && (200..300).contains(&code)
                && to_tag.is_some()
                && to_tag != d.b_tag
            {
                self.stats.forked_answers += 1;
            }
            if cseq_method.eq_ignore_ascii_case("REFER")
                && (200..300).contains(&code)
                && d.verdict.record
            {
                // The transferee accepted: the far party is about to change.
                d.segments += 1;
                out.push(CallEvent::NewSegment {
                    key: d.key,
                    at,
                    cause: "refer",
                });
            }
            return;
        }
        match code {
            100..=199 => {}
            200..=299 => {
                d.state = State::Confirmed;
                d.b_tag = to_tag.clone();
                d.b_sip = Some(src.ip());
                if std::mem::replace(&mut d.in_early, false) {
                    self.early.remove(d.src_ip);
                }
                if msg.sdp().is_none()
                    && let Some((_, ep)) = d.early.iter().find(|(t, _)| Some(t) == to_tag.as_ref())
                {
                    d.b_media = Some(ep.clone());
                }
                d.early.clear();
                if d.sub_side == Side::A {
                    // The answer comes from the callee, the remote party
                    // only when the subscriber called (outbound). On an
                    // inbound call it is the subscriber's own identity:
                    // the remote one came with the INVITE.
                    d.remote_identity = asserted_identity(msg);
                }
                if let Some(old) = d.takes_over.take() {
                    d.segments += 1;
                    let (key, legs) = (d.key, d.legs());
                    out.push(CallEvent::Replaced {
                        key,
                        call_id: call_id.to_owned(),
                    });
                    out.push(CallEvent::NewSegment {
                        key,
                        at,
                        cause: "replaces",
                    });
                    out.push(CallEvent::MediaChanged { key, at, legs });
                    // The old dialog is over without ending the call: its
                    // BYE, when it comes, finds nothing. Its place among the
                    // recorded calls passes to this one.
                    let counted = self.dialogs.remove(&old).is_some_and(|o| o.counted);
                    if let Some(d) = self.dialogs.get_mut(call_id) {
                        d.counted = counted;
                    }
                    return;
                }
                d.answered_at = Some(at);
                if !d.verdict.record {
                    return;
                }
                // The congestion rule, now that the call is real.
                let load = Load {
                    active_calls: self.active_recorded,
                    spool_full: self.spool_full,
                };
                if self.policy.admit_at_answer(&mut d.verdict, load) {
                    d.counted = true;
                    self.active_recorded += 1;
                    d.segments = 1;
                    out.push(CallEvent::Answered {
                        key: d.key,
                        invite_at: d.invite_at,
                        at,
                        legs: d.legs(),
                    });
                }
                let (short_id, verdict) = (d.short_id.clone(), d.verdict.clone());
                self.log_decision(&short_id, &verdict);
            }
            401 | 407 => d.state = State::Challenged,
            _ => {
                let reason = if code == 487 {
                    "cancel".to_owned()
                } else {
                    format!("failed-{code}")
                };
                self.end(call_id, at, &reason, out);
            }
        }
    }

    fn on_request(
        &mut self,
        at: Timestamp,
        call_id: &str,
        method: &str,
        sender: Side,
        msg: &Message<'_>,
        out: &mut Vec<CallEvent>,
    ) {
        let Some(d) = self.dialogs.get_mut(call_id) else {
            return;
        };
        match method {
            "BYE" => {
                let who = if sender == d.subscriber_side() {
                    "bye-subscriber"
                } else {
                    "bye-remote"
                };
                let reason = if d.state == State::Confirmed {
                    who
                } else {
                    "cancel"
                };
                self.end(call_id, at, reason, out);
            }
            "CANCEL" if d.state != State::Confirmed => self.end(call_id, at, "cancel", out),
            "INVITE" | "UPDATE" if d.state == State::Confirmed && d.verdict.record => {
                // A new asserted identity for the connected party means the
                // call now reaches someone else: a transfer.
                if sender != d.subscriber_side()
                    && let Some(id) = asserted_identity(msg)
                {
                    if d.remote_identity.as_ref().is_some_and(|old| *old != id) {
                        d.segments += 1;
                        out.push(CallEvent::NewSegment {
                            key: d.key,
                            at,
                            cause: "identity-change",
                        });
                    }
                    d.remote_identity = Some(id);
                }
            }
            "INFO"
                if d.state == State::Confirmed
                    && d.verdict.record
                    && sender == d.subscriber_side() =>
            {
                if let Some(digit) = info_digit(msg) {
                    out.push(CallEvent::InfoDigit {
                        key: d.key,
                        at,
                        digit,
                    });
                }
            }
            _ => {}
        }
    }

    /// Ends timed-out calls. Call it with packet time as it advances; it
    /// does real work at most once per second of packet time.
    #[inline]
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<CallEvent>) {
        // Called for every packet; the work is once a second. Kept apart
        // so the per-packet call is a comparison, not the big function's
        // prologue (3% of the capture thread in the pipeline benchmark).
        if now.since(self.last_tick) >= 1_000_000 {
            self.tick_due(now, out);
        }
    }

    #[cold]
    fn tick_due(&mut self, now: Timestamp, out: &mut Vec<CallEvent>) {
        self.last_tick = now;
        while let Some((t, call_id, key)) = self.pending.front().cloned() {
            let live = self.dialogs.get(&call_id).filter(|d| d.key == key);
            match live {
                Some(d) if d.state != State::Confirmed && !d.ended => {
                    if now.since(t) < self.setup_timeout {
                        break;
                    }
                    self.pending.pop_front();
                    self.end(&call_id, now, "setup-timeout", out);
                }
                _ => {
                    self.pending.pop_front();
                }
            }
        }
        let mut expired: Vec<(CallKey, String, Timestamp, &'static str)> = Vec::new();
        for d in self.dialogs.values() {
            if d.ended {
                if now.since(d.last_activity) > LINGER_US {
                    expired.push((d.key, d.call_id.clone(), now, ""));
                }
            } else if d.state == State::Confirmed {
                let answered = d.answered_at.unwrap_or(d.invite_at);
                if now.since(answered) >= self.max_call_length {
                    expired.push((
                        d.key,
                        d.call_id.clone(),
                        answered.add_micros(self.max_call_length),
                        "max-call-length",
                    ));
                } else if now.since(d.last_activity) >= self.rtp_timeout {
                    expired.push((d.key, d.call_id.clone(), d.last_activity, "rtp-timeout"));
                }
            }
        }
        // HashMap order is arbitrary; events must not be.
        expired.sort_by_key(|e| e.0);
        for (_, call_id, at, reason) in expired {
            if reason.is_empty() {
                self.dialogs.remove(&call_id);
            } else {
                self.end(&call_id, at, reason, out);
            }
        }
    }

    /// Ends every call still open (end of a replayed capture, shutdown).
    pub fn finish(&mut self, at: Timestamp, reason: &str, out: &mut Vec<CallEvent>) {
        let mut open: Vec<(CallKey, String)> = self
            .dialogs
            .values()
            .filter(|d| !d.ended)
            .map(|d| (d.key, d.call_id.clone()))
            .collect();
        open.sort();
        for (_, call_id) in open {
            self.end(&call_id, at, reason, out);
        }
        self.dialogs.clear();
        self.pending.clear();
        self.early.clear();
    }

    /// Memory bound: the oldest unanswered dialog goes first.
    fn evict(&mut self, at: Timestamp, out: &mut Vec<CallEvent>) {
        while self.dialogs.len() > self.max_dialogs {
            let Some((_, call_id, key)) = self.pending.pop_front() else {
                break;
            };
            if self
                .dialogs
                .get(&call_id)
                .is_some_and(|d| d.key == key && d.state != State::Confirmed)
            {
                self.stats.evicted += 1;
                self.end(&call_id, at, "evicted", out);
                self.dialogs.remove(&call_id);
            }
        }
    }

    fn end(&mut self, call_id: &str, at: Timestamp, reason: &str, out: &mut Vec<CallEvent>) {
        let Some(d) = self.dialogs.get_mut(call_id) else {
            return;
        };
        if d.ended {
            return;
        }
        d.ended = true;
        // Never before the call began or was answered, whatever time the
        // message that ended it carried.
        let at = at
            .max(d.invite_at)
            .max(d.answered_at.unwrap_or(d.invite_at));
        d.last_activity = at;
        if std::mem::replace(&mut d.in_early, false) {
            self.early.remove(d.src_ip);
        }
        if d.takes_over.is_some() {
            // A takeover that never happened: the recorded call goes on in
            // its own dialog.
            return;
        }
        if std::mem::replace(&mut d.counted, false) {
            self.active_recorded = self.active_recorded.saturating_sub(1);
        }
        let answered = d.answered_at.is_some();
        if d.verdict.record && !answered {
            // A recordable call's decision is final here: not answered.
            if reason == "evicted" {
                tracing::debug!(call = %d.short_id, decision = "skip", reason = "not-answered", end_reason = reason, "call decision");
            } else {
                tracing::info!(call = %d.short_id, decision = "skip", reason = "not-answered", end_reason = reason, "call decision");
            }
        }
        let recorded = d.verdict.record && answered;
        let record = CallRecord {
            ended_at: Some(at.rfc3339(self.offset)),
            end_reason: Some(reason.to_owned()),
            ..history_record(d, &self.contract_ids, self.offset)
        };
        out.push(CallEvent::Ended {
            key: d.key,
            at,
            recorded,
            record,
        });
    }
}

/// A dialog's history line without its end (`ended_at`, `end_reason`
/// unset): at the call's end, and for the journal while it goes on.
/// `contract_ids` names the verdict's contract index; `offset` is the
/// configured UTC offset in seconds.
fn history_record(d: &Dialog, contract_ids: &[String], offset: i32) -> CallRecord {
    let v = &d.verdict;
    let recorded = v.record && d.answered_at.is_some();
    let (decision, skip) = if recorded {
        ("record", None)
    } else if v.record {
        ("skip", Some(SkipReason::NotAnswered))
    } else {
        ("skip", v.reason)
    };
    let ts = |t: Timestamp| t.rfc3339(offset);
    CallRecord {
        call_id: d.history_call_id.clone(),
        short_id: d.short_id.clone(),
        direction: v.direction.map(|x| x.as_str().to_owned()),
        contract: v.contract.and_then(|i| contract_ids.get(i)).cloned(),
        service: v.service.map(|s| s.as_str().to_owned()),
        caller: v.caller.clone(),
        callee: v.callee.clone(),
        prefix: v.prefix.map(str::to_owned),
        decision: decision.to_owned(),
        reason: skip.map(|r| r.as_str().to_owned()),
        invite_at: ts(d.invite_at),
        answered_at: d.answered_at.map(ts),
        billing_start: None,
        ended_at: None,
        end_reason: None,
        segments: if recorded { d.segments.max(1) } else { 0 },
    }
}

/// Six hex digits from the Call-ID and INVITE time: short enough for a log
/// line, and it never carries SIP text into a file name.
pub fn short_id(call_id: &str, at: Timestamp) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(call_id.as_bytes());
    h.update(at.0.to_le_bytes());
    hex::encode(&h.finalize()[..3])
}

fn endpoint_from_sdp(s: &sdp::Sdp) -> Option<Endpoint> {
    let m = s.audio()?;
    let ip: IpAddr = m.addr?;
    let payloads = m
        .formats
        .iter()
        .map(|&pt| (pt, m.encoding(pt).unwrap_or("").to_ascii_uppercase()))
        .collect();
    let direction = if ip.is_unspecified() {
        sdp::Direction::Inactive
    } else {
        m.direction
    };
    Some(Endpoint {
        addr: SocketAddr::new(ip, m.port),
        payloads,
        ptime: m.ptime,
        direction,
        formats: crate::media::codec::formats_from_sdp(m),
        keys: crate::media::srtp::Keys::from_sdp(m),
    })
}

/// The remote party's identity from a dialog's initial INVITE: the
/// caller's asserted identity when the caller (side A) is the remote party
/// (`sub_side` B, an inbound call); otherwise it comes with the answer.
fn caller_identity(sub_side: Side, msg: &Message<'_>) -> Option<String> {
    (sub_side == Side::B)
        .then(|| asserted_identity(msg))
        .flatten()
}

fn asserted_identity(msg: &Message<'_>) -> Option<String> {
    let v = msg.header("P-Asserted-Identity")?;
    let first = sip::split_list(v).into_iter().next()?;
    Some(sip::NameAddr::parse(first).uri.to_owned())
}

/// The digit of an INFO carrying `application/dtmf-relay` (`Signal=5`) or
/// `application/dtmf` (`5`).
fn info_digit(msg: &Message<'_>) -> Option<char> {
    let ct = msg.header("Content-Type")?.to_ascii_lowercase();
    let body = std::str::from_utf8(msg.body).ok()?;
    let raw = if ct.starts_with("application/dtmf-relay") {
        body.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            k.trim().eq_ignore_ascii_case("signal").then(|| v.trim())
        })?
    } else if ct.starts_with("application/dtmf") {
        body.trim()
    } else {
        return None;
    };
    let c = raw.chars().next()?;
    match c {
        '0'..='9' | '*' | '#' | 'A'..='D' => Some(c),
        'a'..='d' => Some(c.to_ascii_uppercase()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"
[delivery]
allowed_networks = ["192.0.2.0/24"]
[[destination]]
name = "acme"
url = "sftp://rec@192.0.2.10:22/in"
identity = "/k"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5WY6hfGbgKdwr827M61Dy9fKgVJoLX3pwmoStKx7MO"
[[contract]]
id = "K-1"
service = "mobile"
numbers = ["0312340001"]
guidance = 1
destination = "acme"
"#;

    fn tracker() -> Tracker {
        Tracker::new(&crate::config::load_str(CFG, std::path::Path::new("t.toml")).unwrap())
    }

    fn sdp(ip: &str, port: u16) -> String {
        format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n"
        )
    }

    /// A message from A (caller) or B; `to_tag` None for the initial INVITE.
    fn msg(
        start: &str,
        cseq: &str,
        to_tag: Option<&str>,
        from_b: bool,
        extra: &str,
        body: Option<String>,
    ) -> Vec<u8> {
        let (from, to) = (
            "<sip:0312340001@192.0.2.1>;tag=aaa".to_string(),
            format!(
                "<sip:0077260312349999@203.0.113.1>{}",
                to_tag.map(|t| format!(";tag={t}")).unwrap_or_default()
            ),
        );
        let (f, t) = if from_b { (to, from) } else { (from, to) };
        let body = body.unwrap_or_default();
        let ct = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!("{start}\r\nCall-ID: c1\r\nCSeq: {cseq}\r\nFrom: {f}\r\nTo: {t}\r\n{extra}{ct}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }

    fn feed(t: &mut Tracker, ms: i64, m: &[u8]) -> Vec<CallEvent> {
        let mut out = Vec::new();
        let parsed = crate::sip::parse(m).unwrap();
        t.on_message(
            Timestamp::from_millis(1_795_221_000_000 + ms),
            "192.0.2.1:5060".parse().unwrap(),
            &parsed,
            &mut out,
        );
        out
    }

    const INVITE: &str = "INVITE sip:0077260312349999@203.0.113.1 SIP/2.0";

    /// A message of another dialog, between the subscriber (A of `c1`,
    /// tag `aaa` there) and a third party T.
    fn msg3(
        call_id: &str,
        start: &str,
        cseq: &str,
        from: &str,
        to: &str,
        extra: &str,
        body: Option<String>,
    ) -> Vec<u8> {
        let body = body.unwrap_or_default();
        let ct = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!("{start}\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\nFrom: {from}\r\nTo: {to}\r\n{extra}{ct}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes()
    }

    #[test]
    fn replaces_hands_the_recorded_call_to_the_new_dialog() {
        let mut t = tracker();
        feed(
            &mut t,
            0,
            &msg(
                INVITE,
                "1 INVITE",
                None,
                false,
                "",
                Some(sdp("192.0.2.1", 4000)),
            ),
        );
        let ev = feed(
            &mut t,
            900,
            &msg(
                "SIP/2.0 200 OK",
                "1 INVITE",
                Some("bbb"),
                false,
                "",
                Some(sdp("198.51.100.1", 5000)),
            ),
        );
        assert!(matches!(ev[..], [CallEvent::Answered { .. }]), "{ev:?}");
        let (tp, sub) = ("<sip:0312345555@203.0.113.9>", "<sip:0312340001@192.0.2.1>");
        // A takeover attempt that fails changes nothing.
        let ev = feed(
            &mut t,
            1500,
            &msg3(
                "c3",
                "INVITE sip:0312340001@192.0.2.1 SIP/2.0",
                "1 INVITE",
                &format!("{tp};tag=x3"),
                sub,
                "Replaces: c1;to-tag=aaa;from-tag=bbb\r\n",
                Some(sdp("203.0.113.9", 7100)),
            ),
        );
        assert!(ev.is_empty(), "no new call decided: {ev:?}");
        let ev = feed(
            &mut t,
            1600,
            &msg3(
                "c3",
                "SIP/2.0 486 Busy Here",
                "1 INVITE",
                &format!("{tp};tag=x3"),
                &format!("{sub};tag=a3"),
                "",
                None,
            ),
        );
        assert!(ev.is_empty(), "a failed takeover ends nothing: {ev:?}");
        // T calls the subscriber to take over B's dialog (B transferred).
        let ev = feed(
            &mut t,
            2000,
            &msg3(
                "c2",
                "INVITE sip:0312340001@192.0.2.1 SIP/2.0",
                "1 INVITE",
                &format!("{tp};tag=ttt"),
                sub,
                "Replaces: c1;to-tag=aaa;from-tag=bbb\r\n",
                Some(sdp("203.0.113.9", 7000)),
            ),
        );
        assert!(ev.is_empty(), "{ev:?}");
        let ev = feed(
            &mut t,
            2100,
            &msg3(
                "c2",
                "SIP/2.0 200 OK",
                "1 INVITE",
                &format!("{tp};tag=ttt"),
                &format!("{sub};tag=a2"),
                "",
                Some(sdp("192.0.2.1", 4002)),
            ),
        );
        let [
            CallEvent::Replaced { key: k1, call_id },
            CallEvent::NewSegment {
                key: k2,
                cause: "replaces",
                ..
            },
            CallEvent::MediaChanged { key: k3, legs, .. },
        ] = &ev[..]
        else {
            panic!("{ev:?}")
        };
        assert_eq!((k1, k2, k3, call_id.as_str()), (&1, &1, &1, "c2"));
        // The subscriber stays on the left channel; T is the remote party.
        assert_eq!(
            legs.subscriber.as_ref().unwrap().addr,
            "192.0.2.1:4002".parse().unwrap()
        );
        assert_eq!(
            legs.remote.as_ref().unwrap().addr,
            "203.0.113.9:7000".parse().unwrap()
        );
        // The replaced dialog's BYE ends nothing; the new dialog's does.
        let ev = feed(
            &mut t,
            2200,
            &msg("BYE sip:x SIP/2.0", "2 BYE", Some("bbb"), true, "", None),
        );
        assert!(ev.is_empty(), "{ev:?}");
        let ev = feed(
            &mut t,
            5000,
            &msg3(
                "c2",
                "BYE sip:0312340001@192.0.2.1 SIP/2.0",
                "2 BYE",
                &format!("{tp};tag=ttt"),
                &format!("{sub};tag=a2"),
                "",
                None,
            ),
        );
        let [
            CallEvent::Ended {
                key: 1,
                recorded: true,
                record,
                ..
            },
        ] = &ev[..]
        else {
            panic!("{ev:?}")
        };
        assert_eq!(
            record.call_id, "c1",
            "history keeps the recorded call's Call-ID"
        );
        assert_eq!(record.segments, 2);
        assert_eq!(record.end_reason.as_deref(), Some("bye-remote"));
        assert_eq!(t.active_recorded(), 0);
    }

    /// An INVITE from `src` for Call-ID `id` to a recordable number.
    fn invite_from(t: &mut Tracker, ms: i64, id: &str, src: &str) -> Vec<CallEvent> {
        let m = msg(
            INVITE,
            "1 INVITE",
            None,
            false,
            "",
            Some(sdp("192.0.2.1", 4000)),
        )
        .replace_call_id(id);
        let parsed = crate::sip::parse(&m).unwrap();
        let mut out = Vec::new();
        t.on_message(
            Timestamp::from_millis(1_795_221_000_000 + ms),
            src.parse().unwrap(),
            &parsed,
            &mut out,
        );
        out
    }

    trait CallIdExt {
        fn replace_call_id(self, id: &str) -> Vec<u8>;
    }
    impl CallIdExt for Vec<u8> {
        fn replace_call_id(self, id: &str) -> Vec<u8> {
            String::from_utf8(self)
                .unwrap()
                .replace("Call-ID: c1", &format!("Call-ID: {id}"))
                .into_bytes()
        }
    }

    #[test]
    fn unanswered_invites_are_bounded_per_source_and_hold_no_capacity() {
        let mut cfg = crate::config::load_str(CFG, std::path::Path::new("t.toml")).unwrap();
        cfg.limits.early_dialogs = 5;
        cfg.limits.early_dialogs_per_source = 3;
        cfg.recording.max_active_calls = 1;
        let mut t = Tracker::new(&cfg);
        for i in 0..4 {
            invite_from(&mut t, i, &format!("flood{i}"), "198.18.0.1:5060");
        }
        assert_eq!(t.stats().invites_throttled, 1, "the fourth from one source");
        assert_eq!(t.active_recorded(), 0, "nothing answered, nothing counted");
        // Three more from elsewhere: the total is 5, the flooding source
        // (the heaviest) sheds its oldest.
        for i in 0..3 {
            invite_from(
                &mut t,
                10 + i,
                &format!("other{i}"),
                &format!("192.0.2.{}:5060", 50 + i),
            );
        }
        assert_eq!(t.early_dialogs(), 5);
        assert_eq!(t.stats().early_evicted, 1);
        assert!(!t.dialogs.contains_key("flood0"));
        assert!(t.dialogs.contains_key("other0"));
    }

    #[test]
    fn reinvite_moves_media_without_a_new_segment() {
        let mut t = tracker();
        let ev = feed(
            &mut t,
            0,
            &msg(
                INVITE,
                "1 INVITE",
                None,
                false,
                "",
                Some(sdp("192.0.2.1", 4000)),
            ),
        );
        assert!(matches!(&ev[0], CallEvent::Decided { verdict, .. } if verdict.record));
        let ev = feed(
            &mut t,
            900,
            &msg(
                "SIP/2.0 200 OK",
                "1 INVITE",
                Some("bbb"),
                false,
                "",
                Some(sdp("198.51.100.1", 5000)),
            ),
        );
        let CallEvent::Answered { legs, .. } = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(
            legs.subscriber.as_ref().unwrap().addr,
            "192.0.2.1:4000".parse().unwrap()
        );
        assert_eq!(
            legs.remote.as_ref().unwrap().addr,
            "198.51.100.1:5000".parse().unwrap()
        );
        // The far side (a B2BUA) re-anchors media: same party, new address.
        let ev = feed(
            &mut t,
            5000,
            &msg(
                INVITE,
                "7 INVITE",
                Some("bbb"),
                true,
                "",
                Some(sdp("198.51.100.9", 6000)),
            ),
        );
        assert_eq!(ev.len(), 1, "{ev:?}");
        let CallEvent::MediaChanged { legs, .. } = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(
            legs.remote.as_ref().unwrap().addr,
            "198.51.100.9:6000".parse().unwrap()
        );
        // Retransmitted re-INVITE: nothing new.
        assert!(
            feed(
                &mut t,
                5100,
                &msg(
                    INVITE,
                    "7 INVITE",
                    Some("bbb"),
                    true,
                    "",
                    Some(sdp("198.51.100.9", 6000))
                )
            )
            .is_empty()
        );
        // Hold (sendonly from the subscriber) keeps recording: no event but media.
        let ev = feed(
            &mut t,
            6000,
            &msg(
                "BYE sip:x@192.0.2.1 SIP/2.0",
                "2 BYE",
                Some("bbb"),
                false,
                "",
                None,
            ),
        );
        let CallEvent::Ended {
            record, recorded, ..
        } = &ev[0]
        else {
            panic!("{ev:?}")
        };
        assert!(recorded);
        assert_eq!(record.end_reason.as_deref(), Some("bye-subscriber"));
        assert_eq!(record.segments, 1);
    }

    #[test]
    fn forked_answer_takes_the_early_sdp_of_the_answering_branch() {
        let mut t = tracker();
        feed(
            &mut t,
            0,
            &msg(
                INVITE,
                "1 INVITE",
                None,
                false,
                "",
                Some(sdp("192.0.2.1", 4000)),
            ),
        );
        feed(
            &mut t,
            100,
            &msg(
                "SIP/2.0 183 Session Progress",
                "1 INVITE",
                Some("fork1"),
                false,
                "",
                Some(sdp("198.51.100.1", 5000)),
            ),
        );
        feed(
            &mut t,
            120,
            &msg(
                "SIP/2.0 183 Session Progress",
                "1 INVITE",
                Some("fork2"),
                false,
                "",
                Some(sdp("198.51.100.2", 5002)),
            ),
        );
        let ev = feed(
            &mut t,
            900,
            &msg("SIP/2.0 200 OK", "1 INVITE", Some("fork2"), false, "", None),
        );
        let CallEvent::Answered { legs, .. } = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(
            legs.remote.as_ref().unwrap().addr,
            "198.51.100.2:5002".parse().unwrap()
        );
        // The other fork answers too: counted, ignored.
        assert!(
            feed(
                &mut t,
                950,
                &msg(
                    "SIP/2.0 200 OK",
                    "1 INVITE",
                    Some("fork1"),
                    false,
                    "",
                    Some(sdp("198.51.100.1", 5000))
                )
            )
            .is_empty()
        );
        assert_eq!(t.stats().forked_answers, 1);
    }

    #[test]
    fn refer_and_new_identity_start_segments() {
        let mut t = tracker();
        feed(
            &mut t,
            0,
            &msg(
                INVITE,
                "1 INVITE",
                None,
                false,
                "",
                Some(sdp("192.0.2.1", 4000)),
            ),
        );
        feed(
            &mut t,
            900,
            &msg(
                "SIP/2.0 200 OK",
                "1 INVITE",
                Some("bbb"),
                false,
                "P-Asserted-Identity: <sip:0312349999@203.0.113.1>\r\n",
                Some(sdp("198.51.100.1", 5000)),
            ),
        );
        feed(
            &mut t,
            2000,
            &msg(
                "REFER sip:x@192.0.2.1 SIP/2.0",
                "5 REFER",
                Some("bbb"),
                true,
                "Refer-To: <sip:0312348888@203.0.113.1>\r\n",
                None,
            ),
        );
        let ev = feed(
            &mut t,
            2050,
            &msg(
                "SIP/2.0 202 Accepted",
                "5 REFER",
                Some("bbb"),
                true,
                "",
                None,
            ),
        );
        assert!(
            matches!(ev[..], [CallEvent::NewSegment { cause: "refer", .. }]),
            "{ev:?}"
        );
        let ev = feed(
            &mut t,
            3000,
            &msg(
                INVITE,
                "6 INVITE",
                Some("bbb"),
                true,
                "P-Asserted-Identity: <sip:0312347777@203.0.113.1>\r\n",
                Some(sdp("198.51.100.1", 5000)),
            ),
        );
        assert!(
            matches!(
                ev[..],
                [CallEvent::NewSegment {
                    cause: "identity-change",
                    ..
                }]
            ),
            "{ev:?}"
        );
        let mut out = Vec::new();
        t.finish(
            Timestamp::from_millis(1_795_221_009_000),
            "capture-end",
            &mut out,
        );
        let CallEvent::Ended { record, .. } = &out[0] else {
            panic!()
        };
        assert_eq!(record.segments, 3);
    }
}
