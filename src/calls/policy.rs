//! Must this call be recorded, and for which contract?
//!
//! STUB: to be implemented in issue 2.

use crate::config::{Config, Service};
use crate::sip::Message;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// Why a call is not recorded. The strings are the history's `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    NoPrefix,
    NotAContractNumber,
    DestinationNotRecordable,
    /// A prefixed call from a contract of the other service.
    ServiceMismatch,
    NotAnswered,
    PriorityBypass,
    Overload,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NoPrefix => "no-prefix",
            SkipReason::NotAContractNumber => "not-a-contract-number",
            SkipReason::DestinationNotRecordable => "destination-not-recordable",
            SkipReason::ServiceMismatch => "service-mismatch",
            SkipReason::NotAnswered => "not-answered",
            SkipReason::PriorityBypass => "priority-bypass",
            SkipReason::Overload => "overload",
        }
    }
}

/// What the INVITE says, extracted once, normalised, before any decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InviteFacts {
    /// Request-URI user part, normalised (prefix still on).
    pub request_user: Option<String>,
    pub to_number: Option<String>,
    pub from_number: Option<String>,
    /// Asserted identity of the caller (P-Asserted-Identity), normalised.
    pub asserted_number: Option<String>,
    /// The caller withheld the number (Privacy: id/user/header, anonymous From).
    pub withheld: bool,
    /// Numbers the call was forwarded from (Diversion, History-Info), oldest first.
    pub diverted_from: Vec<String>,
    pub resource_priority: bool,
}

impl InviteFacts {
    pub fn from_message(_msg: &Message<'_>) -> InviteFacts {
        InviteFacts::default()
    }
}

/// Platform load when the INVITE arrives.
#[derive(Clone, Copy, Debug, Default)]
pub struct Load {
    pub active_calls: usize,
    /// The spool is over its size limit.
    pub spool_full: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub record: bool,
    pub reason: Option<SkipReason>,
    pub direction: Option<Direction>,
    /// Index into `Config::contracts`.
    pub contract: Option<usize>,
    pub service: Option<Service>,
    /// "007726" / "007727" for prefixed calls.
    pub prefix: Option<&'static str>,
    /// National format, or "anonymous" when withheld. Never the withheld number.
    pub caller: String,
    /// National format, without the service prefix.
    pub callee: String,
}

pub struct Policy {}

impl Policy {
    pub fn new(_cfg: &Config) -> Policy {
        Policy {}
    }
    pub fn decide(&self, facts: &InviteFacts, _load: Load) -> Verdict {
        Verdict {
            record: false,
            reason: Some(SkipReason::NotAContractNumber),
            direction: None,
            contract: None,
            service: None,
            prefix: None,
            caller: facts.from_number.clone().unwrap_or_default(),
            callee: facts.request_user.clone().unwrap_or_default(),
        }
    }
}
