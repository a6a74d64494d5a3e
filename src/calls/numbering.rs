//! The Japanese numbering plan as the recording service sees it.
//!
//! STUB: to be implemented in issue 2.

/// Number from a sip:/tel: URI or a bare number, in national format:
/// `+81312345678` -> `0312345678`, separators and `;isub=` removed.
pub fn normalize(_uri_or_number: &str) -> Option<String> {
    None
}
