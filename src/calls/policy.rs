//! Must this call be recorded, and for which contract?
//!
//! The rules are DESIGN.md's "The service being automated":
//! - **outbound**: the dialled number (Request-URI user, else To) starts with
//!   0077-26 (mobile) or 0077-27 (fixed) and the caller (P-Asserted-Identity,
//!   else From) is a number of a contract of that service; the rest of the
//!   dialled number must be a recordable destination
//!   ([`numbering::DestClass::recordable`]), with the 050 rule;
//! - **inbound**: the called number (Request-URI user, To, or for forwarded
//!   calls a Diversion / History-Info entry) is a contract number of class
//!   0ABJ or 050; calls to a contract's 070/080/090 numbers are not recorded;
//! - **congestion**: a call that would be recorded while `max_active_calls`
//!   calls are active or the spool is full is connected unrecorded:
//!   "priority-bypass" for disaster-priority lines (listed numbers or a
//!   Resource-Priority header), "overload" for the rest. The tracker takes
//!   this part at the answer ([`Policy::classify`] at the INVITE,
//!   [`Policy::admit_at_answer`] at the 2xx), so unanswered INVITEs never
//!   hold recording capacity; [`Policy::decide`] does both at once.
//!
//! A withheld caller's number is used to find the contract and the priority
//! line, but the [`Verdict`] only ever says "anonymous".

use std::collections::{HashMap, HashSet};

use crate::calls::numbering::{self, DestClass, NotRecordable};
use crate::config::{Config, Service};
use crate::sip::{Message, NameAddr, split_list};

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
    /// Called on a contract's 070/080/090 number: inbound calls are recorded
    /// only on 0ABJ and 050 numbers.
    InboundToMobileNumber,
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
            SkipReason::InboundToMobileNumber => "inbound-to-mobile-number",
        }
    }
}

/// What the INVITE says, extracted once, normalised, before any decision.
///
/// `Debug` prints `asserted_number` and `from_number` redacted when the
/// caller withheld the number, so a logged `InviteFacts` never leaks it.
#[derive(Clone, Default, PartialEq, Eq)]
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

impl std::fmt::Debug for InviteFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hide = |n: &Option<String>| match (self.withheld, n) {
            (true, Some(_)) => Some("<withheld>".to_string()),
            (_, n) => n.clone(),
        };
        f.debug_struct("InviteFacts")
            .field("request_user", &self.request_user)
            .field("to_number", &self.to_number)
            .field("from_number", &hide(&self.from_number))
            .field("asserted_number", &hide(&self.asserted_number))
            .field("withheld", &self.withheld)
            .field("diverted_from", &self.diverted_from)
            .field("resource_priority", &self.resource_priority)
            .finish()
    }
}

impl InviteFacts {
    pub fn from_message(msg: &Message<'_>) -> InviteFacts {
        let request_user = msg.request_uri().and_then(numbering::normalize);
        let to_number = msg
            .header("To")
            .and_then(|v| numbering::normalize(NameAddr::parse(v).uri));
        let from = msg.header("From").map(NameAddr::parse);
        let from_number = from.as_ref().and_then(|f| numbering::normalize(f.uri));
        let from_anonymous = from.as_ref().is_some_and(|f| {
            let uri = f.uri.to_ascii_lowercase();
            uri.contains("anonymous@") || uri.ends_with("anonymous.invalid")
        });
        // Several P-Asserted-Identity values (a sip: and a tel: form) are
        // allowed; the first that is a number wins.
        let asserted_number = msg
            .headers("P-Asserted-Identity")
            .flat_map(split_list)
            .find_map(|v| numbering::normalize(NameAddr::parse(v).uri));
        let privacy = msg.headers("Privacy").any(|v| {
            v.split([';', ',']).any(|t| {
                matches!(
                    t.trim().to_ascii_lowercase().as_str(),
                    "id" | "user" | "header"
                )
            })
        });
        // Diversion (RFC 5806) lists the most recent diversion first.
        let mut diverted_from: Vec<String> = Vec::new();
        let mut diversion: Vec<String> = msg
            .headers("Diversion")
            .flat_map(split_list)
            .filter_map(|v| numbering::normalize(NameAddr::parse(v).uri))
            .collect();
        diversion.reverse();
        // History-Info (RFC 7044) is in index order: the original target first,
        // the current target (the Request-URI) last.
        let history = msg
            .headers("History-Info")
            .flat_map(split_list)
            .filter_map(|v| numbering::normalize(NameAddr::parse(v).uri));
        for n in diversion.into_iter().chain(history) {
            if Some(&n) != request_user.as_ref() && !diverted_from.contains(&n) {
                diverted_from.push(n);
            }
        }
        InviteFacts {
            request_user,
            to_number,
            from_number,
            asserted_number,
            withheld: privacy || from_anonymous,
            diverted_from,
            resource_priority: msg
                .headers("Resource-Priority")
                .any(|v| !v.trim().is_empty()),
        }
    }

    /// The caller's real number (asserted identity first). Internal only: a
    /// withheld number must not be copied out of the policy.
    fn caller_number(&self) -> Option<&str> {
        self.asserted_number
            .as_deref()
            .or(self.from_number.as_deref())
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
    /// For "destination-not-recordable": which rule refused it.
    pub not_recordable: Option<NotRecordable>,
    /// A disaster-priority line (a listed number or a Resource-Priority
    /// header): under congestion such a call is "priority-bypass".
    pub priority: bool,
}

/// The caller shown when the number is withheld.
pub const ANONYMOUS: &str = "anonymous";
/// The caller or callee shown when the message carries no number.
pub const UNKNOWN: &str = "unknown";

/// The contract rules, indexed for one lookup per INVITE.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Normalised contract number -> index into `Config::contracts`.
    numbers: HashMap<String, usize>,
    services: Vec<Service>,
    priority: HashSet<String>,
    max_active_calls: usize,
}

impl Policy {
    pub fn new(cfg: &Config) -> Policy {
        let mut numbers = HashMap::new();
        for (i, c) in cfg.contracts.iter().enumerate() {
            for n in &c.numbers {
                // The loader refuses a number in two contracts; first wins otherwise.
                numbers.entry(n.clone()).or_insert(i);
            }
        }
        Policy {
            numbers,
            services: cfg.contracts.iter().map(|c| c.service).collect(),
            priority: cfg.overload.priority_numbers.iter().cloned().collect(),
            max_active_calls: cfg.recording.max_active_calls,
        }
    }

    fn contract_of(&self, number: Option<&str>) -> Option<usize> {
        number.and_then(|n| self.numbers.get(n).copied())
    }

    /// The whole decision at once: [`Policy::classify`], then the
    /// congestion rule with `load` ([`Policy::admit_at_answer`]).
    pub fn decide(&self, facts: &InviteFacts, load: Load) -> Verdict {
        let mut v = self.classify(facts);
        self.admit_at_answer(&mut v, load);
        v
    }

    /// The congestion rule for a recordable call, at its answer: with
    /// `max_active_calls` recorded calls in progress or the spool full it
    /// goes unrecorded, "priority-bypass" for priority lines, "overload"
    /// otherwise. Returns whether it is still recorded.
    pub fn admit_at_answer(&self, v: &mut Verdict, load: Load) -> bool {
        if v.record && (load.active_calls >= self.max_active_calls || load.spool_full) {
            v.record = false;
            v.reason = Some(if v.priority {
                SkipReason::PriorityBypass
            } else {
                SkipReason::Overload
            });
        }
        v.record
    }

    /// Whether the call is one to record, from the INVITE alone: no load
    /// is looked at (`record` means recordable until the answer decides).
    pub fn classify(&self, facts: &InviteFacts) -> Verdict {
        let caller_real = facts.caller_number();
        let caller = if facts.withheld {
            ANONYMOUS.to_string()
        } else {
            caller_real.unwrap_or(UNKNOWN).to_string()
        };
        let caller_contract = self.contract_of(caller_real);
        let mut v = Verdict {
            record: false,
            reason: None,
            direction: None,
            contract: None,
            service: None,
            prefix: None,
            caller,
            callee: facts
                .request_user
                .clone()
                .or_else(|| facts.to_number.clone())
                .unwrap_or_else(|| UNKNOWN.into()),
            not_recordable: None,
            priority: facts.resource_priority
                || caller_real.is_some_and(|n| self.priority.contains(n)),
        };

        // Outbound: a service prefix on the dialled number.
        let prefixed = [facts.request_user.as_deref(), facts.to_number.as_deref()]
            .into_iter()
            .flatten()
            .find_map(numbering::split_prefix);
        if let Some((service, dialled)) = prefixed {
            v.direction = Some(Direction::Outbound);
            v.prefix = Some(service.prefix());
            v.service = Some(service);
            v.callee = if dialled.is_empty() {
                UNKNOWN.into()
            } else {
                dialled.to_string()
            };
            let Some(ci) = caller_contract else {
                v.reason = Some(SkipReason::NotAContractNumber);
                return v;
            };
            v.contract = Some(ci);
            if self.services[ci] != service {
                v.reason = Some(SkipReason::ServiceMismatch);
                return v;
            }
            let line_is_050 =
                caller_real.is_some_and(|n| numbering::classify(n) == DestClass::IpPhone);
            if let Err(why) = numbering::classify(dialled).recordable(line_is_050) {
                v.reason = Some(SkipReason::DestinationNotRecordable);
                v.not_recordable = Some(why);
                return v;
            }
            v.record = true;
            return v;
        }

        // Inbound: a contract number called directly or forwarded from.
        let called = [facts.request_user.as_deref(), facts.to_number.as_deref()]
            .into_iter()
            .flatten()
            .chain(facts.diverted_from.iter().map(String::as_str));
        let mut mobile_hit: Option<(usize, &str)> = None;
        for n in called {
            let Some(ci) = self.contract_of(Some(n)) else {
                continue;
            };
            if numbering::classify(n).records_inbound() {
                v.direction = Some(Direction::Inbound);
                v.contract = Some(ci);
                v.service = Some(self.services[ci]);
                v.callee = n.to_string();
                v.record = true;
                return v;
            }
            mobile_hit.get_or_insert((ci, n));
        }
        if let Some(ci) = caller_contract {
            // A contract line calling out without the prefix.
            v.direction = Some(Direction::Outbound);
            v.contract = Some(ci);
            v.service = Some(self.services[ci]);
            v.reason = Some(SkipReason::NoPrefix);
            return v;
        }
        if let Some((ci, n)) = mobile_hit {
            v.direction = Some(Direction::Inbound);
            v.contract = Some(ci);
            v.service = Some(self.services[ci]);
            v.callee = n.to_string();
            v.reason = Some(SkipReason::InboundToMobileNumber);
            return v;
        }
        v.reason = Some(SkipReason::NotAContractNumber);
        v
    }
}
