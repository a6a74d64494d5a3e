//! The Japanese numbering plan as the recording service sees it.
//!
//! Two jobs: turn whatever a SIP message carries (a `sip:`/`sips:`/`tel:`
//! URI or a bare number) into one national-format digit string
//! ([`normalize`]), and say what kind of number a dialled string is and
//! whether a prefixed call to it may be recorded ([`classify`],
//! [`DestClass::recordable`]).
//!
//! # Normalisation
//! - the user part of `sip:`/`sips:` URIs (`user=phone` or not), the number of
//!   `tel:` URIs; URI parameters (`;isub=`, `;phone-context=`, `;ext=`, ...)
//!   and URI headers (`?Reason=...`) are dropped; `%23`/`%2A` are unescaped;
//! - visual separators `-` `.` `(` `)` and spaces are removed;
//! - `+81` becomes the national trunk prefix `0` (`+81312345678` ->
//!   `0312345678`); any other `+CC` becomes the international prefix `010CC`.
//!   A bare `81...` without `+` is left alone: without the `+` it is not
//!   known to be E.164, and Japanese national numbers never start with 8;
//! - `#` and `*` are kept: they make a number non-recordable, not invalid;
//! - `anonymous`, an empty user and anything else that is not `+?[0-9*#]+`
//!   give `None`.
//!
//! # Classes (MIC Telecommunications Numbering Plan, as the service uses it)
//! | class | form | recordable with a prefix |
//! |---|---|---|
//! | geographic `0ABJ` | `0` + A=1..9, 10 digits, not `0A0`, not a non-geographic `0AB0` | yes |
//! | international | `010` + country code + number | yes |
//! | IP phone | `050` + 8 digits | yes |
//! | mobile | `070`/`080`/`090` + 8 digits | yes |
//! | freephone | `0120` + 6 digits, `0800` + 7 digits | yes, not from a 050 line |
//! | navi dial | `0570` + 6 digits | yes, not from a 050 line |
//! | other non-geographic | other `0A0` (020, 060, ...) and `0AB0` (`01X0`, `0910`, `0990`) | no |
//! | emergency | `110`, `118`, `119` | no |
//! | service | other `1XY...` (104, 117, 171, 184/186 + number, ...) | no |
//! | carrier code | `00XY...` | no |
//! | `#`/`*` numbers | contains `#` or `*` | no |
//! | local without area code | 6..8 digits, not starting with 0 or 1 | no |
//! | extension | up to 5 digits, not starting with 0 or 1 | no |
//! | wrong length | starts with 0 but the class's length does not match | no |
//!
//! Geographic area codes with a `0` as fourth digit exist (0280, 0470, ...),
//! so only the `0AB0` codes the plan reserves for non-geographic services
//! (`01X0`, `0570`, `0800`, `0910`, `0990`) are excluded from `0ABJ`.

use crate::config::Service;

/// Outbound service prefixes, as the leading digits of the dialled number.
pub const PREFIX_MOBILE: &str = "007726";
pub const PREFIX_FIXED: &str = "007727";

/// Number from a sip:/sips:/tel: URI or a bare number, in national format:
/// `+81312345678` -> `0312345678`, separators and `;isub=` removed.
pub fn normalize(uri_or_number: &str) -> Option<String> {
    let s = uri_or_number
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    let user = match s.split_once(':') {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "sip" | "sips" => {
                // URI headers start at '?', the host at the last '@' of the user part.
                let rest = rest.split('?').next().unwrap_or(rest);
                match rest.rfind('@') {
                    Some(at) => &rest[..at],
                    None => rest,
                }
            }
            "tel" => rest.split('?').next().unwrap_or(rest),
            _ => return None,
        },
        None => s,
    };
    // A user part may carry a password (`user:pw`) and tel parameters.
    let user = user.split(':').next().unwrap_or(user);
    let user = user.split(';').next().unwrap_or(user);
    let mut out = String::with_capacity(user.len());
    let bytes = user.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'0'..=b'9' | b'*' | b'#' => out.push(c as char),
            b'+' if out.is_empty() => out.push('+'),
            b'-' | b'.' | b'(' | b')' | b' ' | b'\t' => {}
            b'%' => {
                let hex = user.get(i + 1..i + 3)?;
                match u8::from_str_radix(hex, 16).ok()? {
                    b'#' => out.push('#'),
                    b'*' => out.push('*'),
                    b' ' => {}
                    _ => return None,
                }
                i += 2;
            }
            _ => return None,
        }
        i += 1;
    }
    if let Some(intl) = out.strip_prefix('+') {
        if intl.is_empty() || !intl.as_bytes()[0].is_ascii_digit() {
            return None;
        }
        return Some(match intl.strip_prefix("81") {
            // Some equipment writes +81 0 3...; the trunk 0 is not part of E.164.
            Some(nat) if !nat.is_empty() => format!("0{}", nat.strip_prefix('0').unwrap_or(nat)),
            _ => format!("010{intl}"),
        });
    }
    if out.is_empty() { None } else { Some(out) }
}

/// The service prefix at the start of a dialled number, and the rest.
pub fn split_prefix(number: &str) -> Option<(Service, &str)> {
    if let Some(rest) = number.strip_prefix(PREFIX_MOBILE) {
        Some((Service::Mobile, rest))
    } else if let Some(rest) = number.strip_prefix(PREFIX_FIXED) {
        Some((Service::Fixed, rest))
    } else {
        None
    }
}

/// What kind of number a national-format string is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DestClass {
    /// 0ABJ: 10 digits, area code 0A.., A = 1..9.
    Geographic,
    /// 010 + country code + number.
    International,
    /// 050 + 8 digits.
    IpPhone,
    /// 070/080/090 + 8 digits.
    Mobile,
    /// 0120 + 6 digits or 0800 + 7 digits.
    Freephone,
    /// 0570 + 6 digits.
    NaviDial,
    /// Other 0A0 (020, 060, ...) and 0AB0 (01X0, 0910, 0990) numbers.
    OtherNonGeographic,
    /// 110, 118, 119.
    Emergency,
    /// Other 1XY... service numbers (104, 117, 171, 184/186 + number, ...).
    ServiceNumber,
    /// 00XY... carrier selection codes.
    CarrierCode,
    /// Contains `#` or `*` (e.g. #8000, *67).
    HashOrStar,
    /// 6..8 digits without area code.
    LocalWithoutAreaCode,
    /// Up to 5 digits, a PBX extension.
    Extension,
    /// Starts with 0, but not with the length its class needs.
    WrongLength,
}

/// Why a destination may not be recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotRecordable {
    /// The class is never recordable.
    Class(DestClass),
    /// 0120/0800/0570 dialled from a contract line that is a 050 number.
    FreephoneFrom050,
}

impl NotRecordable {
    /// A short token for logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            NotRecordable::FreephoneFrom050 => "050-line-to-0120-0800-0570",
            NotRecordable::Class(c) => c.as_str(),
        }
    }
}

impl std::fmt::Display for NotRecordable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DestClass {
    pub fn as_str(self) -> &'static str {
        match self {
            DestClass::Geographic => "geographic-0abj",
            DestClass::International => "international",
            DestClass::IpPhone => "ip-phone-050",
            DestClass::Mobile => "mobile",
            DestClass::Freephone => "freephone",
            DestClass::NaviDial => "navi-dial",
            DestClass::OtherNonGeographic => "other-non-geographic",
            DestClass::Emergency => "emergency",
            DestClass::ServiceNumber => "service-number",
            DestClass::CarrierCode => "carrier-code",
            DestClass::HashOrStar => "hash-or-star",
            DestClass::LocalWithoutAreaCode => "no-area-code",
            DestClass::Extension => "extension",
            DestClass::WrongLength => "wrong-length",
        }
    }

    /// May a prefixed call to this class be recorded? `contract_line_is_050`:
    /// the calling contract line is itself a 050 number, which cannot reach
    /// 0120/0800/0570.
    pub fn recordable(self, contract_line_is_050: bool) -> Result<(), NotRecordable> {
        match self {
            DestClass::Geographic
            | DestClass::International
            | DestClass::IpPhone
            | DestClass::Mobile => Ok(()),
            DestClass::Freephone | DestClass::NaviDial => {
                if contract_line_is_050 {
                    Err(NotRecordable::FreephoneFrom050)
                } else {
                    Ok(())
                }
            }
            other => Err(NotRecordable::Class(other)),
        }
    }

    /// Numbers a contract may own and be called on: 0ABJ, 050, 070/080/090.
    pub fn is_subscriber_number(self) -> bool {
        matches!(
            self,
            DestClass::Geographic | DestClass::IpPhone | DestClass::Mobile
        )
    }

    /// Inbound calls to a contract number of this class are recorded (0ABJ, 050).
    pub fn records_inbound(self) -> bool {
        matches!(self, DestClass::Geographic | DestClass::IpPhone)
    }
}

/// Classifies a normalised national number (prefix already removed).
pub fn classify(n: &str) -> DestClass {
    if n.contains(['#', '*']) {
        return DestClass::HashOrStar;
    }
    let b = n.as_bytes();
    let len = b.len();
    let digit = |i: usize| b.get(i).copied().unwrap_or(b'x');
    match digit(0) {
        b'1' => {
            if matches!(n, "110" | "118" | "119") {
                DestClass::Emergency
            } else {
                DestClass::ServiceNumber
            }
        }
        b'0' => match digit(1) {
            b'0' => DestClass::CarrierCode,
            b'1' if digit(2) == b'0' => {
                // 010 + at least a country code and a few digits, E.164 max 15.
                if (7..=18).contains(&len) {
                    DestClass::International
                } else {
                    DestClass::WrongLength
                }
            }
            b'1'..=b'9' => {
                // The four-digit 0AB0 service codes first: 0800 is freephone,
                // not an 080 mobile number (080-0 is never allocated to mobiles).
                let code4 = &n[..len.min(4)];
                let special = match code4 {
                    "0120" => Some((DestClass::Freephone, 10)),
                    "0800" => Some((DestClass::Freephone, 11)),
                    "0570" => Some((DestClass::NaviDial, 10)),
                    c if c.len() == 4
                        && c.ends_with('0')
                        && (c.starts_with("01") || c == "0910" || c == "0990") =>
                    {
                        return DestClass::OtherNonGeographic;
                    }
                    _ => None,
                };
                let (class, want) = match special {
                    Some(s) => s,
                    // 0A0: non-geographic three-digit codes.
                    None if digit(2) == b'0' => match digit(1) {
                        b'5' => (DestClass::IpPhone, 11),
                        b'7' | b'8' | b'9' => (DestClass::Mobile, 11),
                        _ => return DestClass::OtherNonGeographic,
                    },
                    None => (DestClass::Geographic, 10),
                };
                if len == want {
                    class
                } else {
                    DestClass::WrongLength
                }
            }
            _ => DestClass::WrongLength,
        },
        _ => {
            if len <= 5 {
                DestClass::Extension
            } else if len <= 8 {
                DestClass::LocalWithoutAreaCode
            } else {
                // Longer strings not starting with 0 are no Japanese number at all.
                DestClass::WrongLength
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_forms() {
        assert_eq!(
            normalize("sip:+81-3-1234-5678@192.0.2.1;user=phone").as_deref(),
            Some("0312345678")
        );
        assert_eq!(
            normalize("tel:+81312345678;isub=12").as_deref(),
            Some("0312345678")
        );
        assert_eq!(
            normalize("tel:03-1234-5678;phone-context=+81").as_deref(),
            Some("0312345678")
        );
        assert_eq!(
            normalize("<sip:(03)1234.5678@h>").as_deref(),
            Some("0312345678")
        );
        assert_eq!(normalize("+14155550100").as_deref(), Some("01014155550100"));
        assert_eq!(normalize("sip:%238000@h").as_deref(), Some("#8000"));
        assert_eq!(normalize("sip:anonymous@anonymous.invalid"), None);
        assert_eq!(normalize("sip:alice@example.com"), None);
        assert_eq!(normalize(""), None);
        assert_eq!(normalize("sip:@h"), None);
        assert_eq!(
            normalize("sip:0312345678@h?Reason=SIP%3Bcause%3D302").as_deref(),
            Some("0312345678")
        );
        assert_eq!(normalize("mailto:x@y"), None);
    }

    #[test]
    fn classes() {
        assert_eq!(classify("0312345678"), DestClass::Geographic);
        assert_eq!(classify("0280123456"), DestClass::Geographic);
        assert_eq!(classify("0120123456"), DestClass::Freephone);
        assert_eq!(classify("08001234567"), DestClass::Freephone);
        assert_eq!(classify("08012345678"), DestClass::Mobile);
        assert_eq!(classify("0180123456"), DestClass::OtherNonGeographic);
        assert_eq!(classify("02012345678"), DestClass::OtherNonGeographic);
        assert_eq!(classify("031234567"), DestClass::WrongLength);
        assert_eq!(classify("0033"), DestClass::CarrierCode);
        assert_eq!(classify("2345"), DestClass::Extension);
    }
}
