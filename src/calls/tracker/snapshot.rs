//! A dialog as the call-state journal keeps it ([`crate::daemon::journal`]).
//!
//! A child of the tracker so it can read and rebuild the private
//! [`Dialog`]; plain serde structs mirror the types that carry no serde
//! (the verdict's enums and `&'static str` prefix, endpoints, sides). The
//! contract is kept by id, not by index, so a configuration that lists
//! its contracts in another order at the next start still finds it. The
//! connected party's asserted identity is left out: it may be withheld.

use super::{CallKey, Dialog, Endpoint, Side, State, Tracker};
use crate::calls::policy::{Direction, SkipReason, Verdict};
use crate::config::Service;
use crate::history::CallRecord;
use crate::sip::sdp;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Where one party receives its audio ([`Endpoint`] with plain fields).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSnap {
    pub addr: SocketAddr,
    pub payloads: Vec<(u8, String)>,
    pub ptime: Option<u32>,
    /// "sendrecv", "sendonly", "recvonly" or "inactive".
    pub direction: String,
    /// Decodable payload types with clock and fmtp. SRTP keys are never
    /// journalled: a restart segment of SRTP media is undecodable and says
    /// so (`media-encrypted`).
    #[serde(default)]
    pub formats: Vec<(u8, crate::media::codec::Format)>,
}

/// The policy's decision ([`Verdict`] with its enums as their strings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictSnap {
    pub record: bool,
    pub reason: Option<String>,
    pub direction: Option<String>,
    /// The contract's id (its index may differ at the next start).
    pub contract: Option<String>,
    pub service: Option<String>,
    pub prefix: Option<String>,
    pub caller: String,
    pub callee: String,
    /// A priority line: decides `priority-bypass` under congestion at the
    /// answer (journals written before it existed read as no).
    #[serde(default)]
    pub priority: bool,
}

/// One dialog of a call in progress. Times are µs since the Unix epoch
/// (capture time).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DialogSnapshot {
    pub call_id: String,
    pub history_call_id: String,
    /// Whether the subscriber is side B (the callee: inbound calls).
    pub subscriber_is_b: bool,
    pub short_id: String,
    pub verdict: VerdictSnap,
    /// "proceeding", "challenged" or "confirmed".
    pub state: String,
    pub invite_at_us: i64,
    pub invite_cseq: u32,
    pub a_tag: Option<String>,
    pub b_tag: Option<String>,
    pub a_media: Option<EndpointSnap>,
    pub b_media: Option<EndpointSnap>,
    pub early: Vec<(String, EndpointSnap)>,
    pub answered_at_us: Option<i64>,
    pub segments: u32,
    /// Where each side's signalling came from (evidence for where its
    /// media may come from) and where the initial INVITE came from (the
    /// source an unanswered dialog counts against). Absent in journals
    /// written before them.
    #[serde(default)]
    pub a_sip: Option<std::net::IpAddr>,
    #[serde(default)]
    pub b_sip: Option<std::net::IpAddr>,
    #[serde(default)]
    pub src_ip: Option<std::net::IpAddr>,
}

/// Why a snapshot cannot be taken back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestoreError {
    #[error("contract {0} is no longer configured")]
    ContractGone(String),
    #[error("{field} has an unknown value {value:?}")]
    BadValue { field: &'static str, value: String },
    #[error("a dialog with Call-ID {0:?} is already in progress")]
    Duplicate(String),
}

fn bad(field: &'static str, value: &str) -> RestoreError {
    RestoreError::BadValue {
        field,
        value: value.to_owned(),
    }
}

const DIRECTIONS: [Direction; 2] = [Direction::Outbound, Direction::Inbound];
const SERVICES: [Service; 2] = [Service::Mobile, Service::Fixed];
const SKIPS: [SkipReason; 8] = [
    SkipReason::NoPrefix,
    SkipReason::NotAContractNumber,
    SkipReason::DestinationNotRecordable,
    SkipReason::ServiceMismatch,
    SkipReason::NotAnswered,
    SkipReason::PriorityBypass,
    SkipReason::Overload,
    SkipReason::InboundToMobileNumber,
];
const SDP_DIRECTIONS: [(sdp::Direction, &str); 4] = [
    (sdp::Direction::SendRecv, "sendrecv"),
    (sdp::Direction::SendOnly, "sendonly"),
    (sdp::Direction::RecvOnly, "recvonly"),
    (sdp::Direction::Inactive, "inactive"),
];
const STATES: [(State, &str); 3] = [
    (State::Proceeding, "proceeding"),
    (State::Challenged, "challenged"),
    (State::Confirmed, "confirmed"),
];

/// The value of `all` whose name is `s`.
fn parse<T: Copy>(
    all: &[T],
    name: impl Fn(T) -> &'static str,
    field: &'static str,
    s: &str,
) -> Result<T, RestoreError> {
    all.iter()
        .copied()
        .find(|x| name(*x) == s)
        .ok_or_else(|| bad(field, s))
}

fn opt<T: Copy>(
    all: &[T],
    name: impl Fn(T) -> &'static str,
    field: &'static str,
    s: &Option<String>,
) -> Result<Option<T>, RestoreError> {
    s.as_deref().map(|s| parse(all, name, field, s)).transpose()
}

fn pair_name<T: Copy + PartialEq>(
    table: &'static [(T, &'static str)],
) -> impl Fn(T) -> &'static str {
    move |x| table.iter().find(|(v, _)| *v == x).map_or("", |(_, n)| n)
}

impl EndpointSnap {
    fn of(e: &Endpoint) -> EndpointSnap {
        EndpointSnap {
            addr: e.addr,
            payloads: e.payloads.clone(),
            ptime: e.ptime,
            direction: pair_name(&SDP_DIRECTIONS)(e.direction).to_owned(),
            formats: e.formats.clone(),
        }
    }
    fn endpoint(&self) -> Result<Endpoint, RestoreError> {
        let dirs: Vec<sdp::Direction> = SDP_DIRECTIONS.iter().map(|(d, _)| *d).collect();
        Ok(Endpoint {
            addr: self.addr,
            payloads: self.payloads.clone(),
            ptime: self.ptime,
            direction: parse(
                &dirs,
                pair_name(&SDP_DIRECTIONS),
                "direction",
                &self.direction,
            )?,
            formats: self.formats.clone(),
            keys: crate::media::srtp::Keys::default(),
        })
    }
}

impl VerdictSnap {
    fn of(v: &Verdict, contract_ids: &[String]) -> VerdictSnap {
        VerdictSnap {
            record: v.record,
            reason: v.reason.map(|r| r.as_str().to_owned()),
            direction: v.direction.map(|d| d.as_str().to_owned()),
            contract: v.contract.and_then(|i| contract_ids.get(i)).cloned(),
            service: v.service.map(|s| s.as_str().to_owned()),
            prefix: v.prefix.map(str::to_owned),
            caller: v.caller.clone(),
            callee: v.callee.clone(),
            priority: v.priority,
        }
    }
    fn verdict(&self, contract_ids: &[String]) -> Result<Verdict, RestoreError> {
        let contract = match &self.contract {
            None => None,
            Some(id) => Some(
                contract_ids
                    .iter()
                    .position(|c| c == id)
                    .ok_or_else(|| RestoreError::ContractGone(id.clone()))?,
            ),
        };
        // The prefix is one of the two services' prefixes (static strings).
        let prefix = match self.prefix.as_deref() {
            None => None,
            Some(p) => Some(
                SERVICES
                    .iter()
                    .map(|s| s.prefix())
                    .find(|x| *x == p)
                    .ok_or_else(|| bad("prefix", p))?,
            ),
        };
        Ok(Verdict {
            record: self.record,
            reason: opt(&SKIPS, SkipReason::as_str, "reason", &self.reason)?,
            direction: opt(&DIRECTIONS, Direction::as_str, "direction", &self.direction)?,
            contract,
            service: opt(&SERVICES, Service::as_str, "service", &self.service)?,
            prefix,
            caller: self.caller.clone(),
            callee: self.callee.clone(),
            not_recordable: None,
            priority: self.priority,
        })
    }
}

fn snap_ep(e: &Option<Endpoint>) -> Option<EndpointSnap> {
    e.as_ref().map(EndpointSnap::of)
}

fn ep(e: &Option<EndpointSnap>) -> Result<Option<Endpoint>, RestoreError> {
    e.as_ref().map(EndpointSnap::endpoint).transpose()
}

impl Tracker {
    /// The dialog `call_id` as the journal keeps it; None when no such
    /// dialog is in progress (or it is an unanswered takeover attempt,
    /// which is not the call yet).
    pub fn snapshot(&self, call_id: &str) -> Option<DialogSnapshot> {
        let d = self.dialogs.get(call_id)?;
        if d.ended || d.takes_over.is_some() {
            return None;
        }
        Some(DialogSnapshot {
            call_id: d.call_id.clone(),
            history_call_id: d.history_call_id.clone(),
            subscriber_is_b: d.sub_side == Side::B,
            short_id: d.short_id.clone(),
            verdict: VerdictSnap::of(&d.verdict, &self.contract_ids),
            state: pair_name(&STATES)(d.state).to_owned(),
            invite_at_us: d.invite_at.0,
            invite_cseq: d.invite_cseq,
            a_tag: d.a_tag.clone(),
            b_tag: d.b_tag.clone(),
            a_media: snap_ep(&d.a_media),
            b_media: snap_ep(&d.b_media),
            early: d
                .early
                .iter()
                .map(|(t, e)| (t.clone(), EndpointSnap::of(e)))
                .collect(),
            answered_at_us: d.answered_at.map(|t| t.0),
            segments: d.segments,
            a_sip: d.a_sip,
            b_sip: d.b_sip,
            src_ip: Some(d.src_ip),
        })
    }

    /// The history line the call would get if it ended now, without its
    /// end: what the journal keeps first, so that even a journal file cut
    /// after it gives the call its line. Mirrors the record built at the
    /// call's end: both come from `history_record`.
    pub fn history_template(&self, call_id: &str) -> Option<CallRecord> {
        let d = self.dialogs.get(call_id)?;
        Some(super::history_record(d, &self.contract_ids, self.offset))
    }

    /// Takes a journalled dialog back after a restart, under a new key.
    /// Its inactivity clock starts at `now`; an answered recorded call
    /// counts one more segment (the `restart` segment its recording goes
    /// on in). Returns the new key and the verdict.
    pub fn restore(
        &mut self,
        s: &DialogSnapshot,
        now: Timestamp,
    ) -> Result<(CallKey, Verdict), RestoreError> {
        if self.dialogs.get(&s.call_id).is_some_and(|d| !d.ended) {
            return Err(RestoreError::Duplicate(s.call_id.clone()));
        }
        let verdict = s.verdict.verdict(&self.contract_ids)?;
        let states: Vec<State> = STATES.iter().map(|(x, _)| *x).collect();
        let state = parse(&states, pair_name(&STATES), "state", &s.state)?;
        let early = s
            .early
            .iter()
            .map(|(t, e)| Ok((t.clone(), e.endpoint()?)))
            .collect::<Result<Vec<_>, RestoreError>>()?;
        let key = self.next_key;
        let confirmed = state == State::Confirmed;
        let recorded = verdict.record && confirmed && s.answered_at_us.is_some();
        let d = Dialog {
            key,
            call_id: s.call_id.clone(),
            history_call_id: s.history_call_id.clone(),
            sub_side: if s.subscriber_is_b { Side::B } else { Side::A },
            takes_over: None,
            short_id: s.short_id.clone(),
            verdict: verdict.clone(),
            state,
            invite_at: Timestamp(s.invite_at_us),
            invite_cseq: s.invite_cseq,
            a_tag: s.a_tag.clone(),
            b_tag: s.b_tag.clone(),
            a_media: ep(&s.a_media)?,
            b_media: ep(&s.b_media)?,
            early,
            answered_at: s.answered_at_us.map(Timestamp),
            last_activity: now,
            segments: s.segments + u32::from(recorded),
            // Not journalled: a connected party's asserted identity may be
            // a withheld number, which never goes into a file. The next
            // one seen is taken as it is (a transfer that changes it right
            // after a restart goes unnoticed).
            remote_identity: None,
            ended: false,
            src_ip: s.src_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()),
            in_early: !confirmed,
            // Only answered recorded calls hold recording capacity.
            counted: recorded,
            a_sip: s.a_sip,
            b_sip: s.b_sip,
        };
        self.next_key += 1;
        if recorded {
            self.active_recorded += 1;
        }
        if !confirmed {
            // The setup timeout counts from the restart: the INVITE's own
            // time may be long past by then.
            self.pending.push_back((now, s.call_id.clone(), key));
            let dialogs = &self.dialogs;
            self.early.add(d.src_ip, key, &s.call_id, &|k, c| {
                dialogs.get(c).is_some_and(|d| d.key == k && d.in_early)
            });
        }
        self.dialogs.insert(s.call_id.clone(), d);
        Ok((key, verdict))
    }

    /// The media legs of a restored dialog (as `Answered` carries them).
    pub fn legs_of(&self, call_id: &str) -> Option<super::MediaLegs> {
        self.dialogs.get(call_id).map(Dialog::legs)
    }

    /// The dialog's segment count (the restart segment's index after
    /// [`Tracker::restore`]).
    pub fn segments_of(&self, call_id: &str) -> Option<u32> {
        self.dialogs.get(call_id).map(|d| d.segments)
    }
}

#[cfg(test)]
mod tests;
