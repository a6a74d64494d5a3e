//! Fuzzes the SIP parser and every accessor the tracker and policy use.
#![no_main]

use callrec::sip;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sip::looks_like_sip(data);
    let _ = sip::message_len(data);
    let Ok(m) = sip::parse(data) else { return };
    let _ = (m.is_request(), m.method(), m.status(), m.request_uri(), m.call_id(), m.cseq());
    let _ = (m.from().map(|f| f.tag()), m.to().map(|t| t.parsed_uri()));
    let _ = (m.content_type(), m.content_length(), m.body_truncated(), m.skipped_lines());
    for (n, v) in m.all_headers() {
        let _ = (m.header_params(n), sip::split_list(v), sip::uri_user(v));
        let _ = sip::Uri::parse(v).map(|u| (u.header("Replaces"), u.host_ip(), u.is_phone()));
    }
    let _ = (m.vias(), m.asserted_identities(), m.privacy(), m.diversions(), m.resource_priorities());
    let _ = m.history_info().iter().map(|h| (h.cause(), h.index_path())).count();
    let _ = (m.replaces(), m.refer_to_replaces(), m.referred_by());
    if let Some(body) = m.sdp() {
        let _ = sip::sdp::parse(body);
    }
});
