//! SIP messages and their SDP bodies: a lenient, zero-copy parser.
//!
//! Lenient because the appliance watches other people's traffic: a message a
//! strict parser would reject may still be a call that must be recorded. So
//! only the start line must be well formed; a header line that is not
//! `name: value` is skipped and counted, a header value that is not UTF-8 is
//! kept with replacement characters, and the body is bytes.
//!
//! No crate on crates.io fitted (see ARCHITECTURE.md): the candidates own
//! their data, are strict, or are built for user agents, not for capture.

mod headers;
mod multipart;
pub mod sdp;
mod text;
mod uri;

pub use headers::{HistoryInfo, Privacy, Replaces, ResourcePriority, Via};
pub use text::{NameAddr, param, params_iter, split_list};
pub use uri::{Uri, percent_decode, uri_user};

use std::borrow::Cow;

/// A parsed SIP message borrowing from the captured bytes.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    pub start: StartLine<'a>,
    /// (name with compact forms expanded, value) in order; folded lines
    /// joined; a value is owned only when folded or not UTF-8.
    headers: Vec<(&'a str, Cow<'a, str>)>,
    pub body: &'a [u8],
    /// Content-Length as declared, when it parsed.
    declared_len: Option<usize>,
    /// Header lines skipped because they were not `name: value`.
    skipped_lines: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartLine<'a> {
    Request { method: &'a str, uri: &'a str },
    Response { code: u16, reason: &'a str },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SipError {
    #[error("not a SIP start line")]
    NotSip,
    #[error("bad start line")]
    BadStartLine,
    /// Kept for callers; the lenient parser skips bad header lines instead
    /// (see [`Message::skipped_lines`]).
    #[error("bad header at line {0}")]
    BadHeader(usize),
    #[error("message is not UTF-8 in its start line")]
    Encoding,
}

/// Compact header forms (RFC 3261 7.3.3 and the RFCs that added more).
fn expand_compact(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'a' => "Accept-Contact",
        b'b' => "Referred-By",
        b'c' => "Content-Type",
        b'd' => "Request-Disposition",
        b'e' => "Content-Encoding",
        b'f' => "From",
        b'i' => "Call-ID",
        b'j' => "Reject-Contact",
        b'k' => "Supported",
        b'l' => "Content-Length",
        b'm' => "Contact",
        b'n' => "Identity-Info",
        b'o' => "Event",
        b'r' => "Refer-To",
        b's' => "Subject",
        b't' => "To",
        b'u' => "Allow-Events",
        b'v' => "Via",
        b'x' => "Session-Expires",
        b'y' => "Identity",
        _ => name,
    }
}

/// Bytes of CR/LF keep-alives (RFC 5626) before a message.
fn keepalive_len(data: &[u8]) -> usize {
    data.iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count()
}

/// Quick test used to find SIP on ports not configured for it.
pub fn looks_like_sip(data: &[u8]) -> bool {
    let data = &data[keepalive_len(data)..];
    // Every request line starts with a method token and every status line
    // with "SIP/2.0": a letter. Media (RTP starts 0x80) is rejected here
    // without scanning for a line end.
    if !data.first().is_some_and(u8::is_ascii_alphabetic) {
        return false;
    }
    let line_end = data
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(data.len())
        .min(512);
    let line = &data[..line_end];
    line.starts_with(b"SIP/2.0 ") || line.ends_with(b" SIP/2.0")
}

/// Parses one message. Leading CR/LF keep-alives are skipped; `data` may
/// carry trailing bytes past Content-Length: the body is cut to
/// Content-Length when present (and kept whole, short, when it declares
/// more than there is: see [`Message::body_truncated`]).
pub fn parse(data: &[u8]) -> Result<Message<'_>, SipError> {
    let data = &data[keepalive_len(data)..];
    if data.is_empty() {
        return Err(SipError::NotSip);
    }
    // Headers end at the first empty line; accept bare LF too.
    let (head_len, body_start) = find_head_end(data);
    let mut lines = data[..head_len]
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next().ok_or(SipError::NotSip)?;
    let first = std::str::from_utf8(first).map_err(|_| SipError::Encoding)?;
    let start = parse_start(first)?;
    let mut headers: Vec<(&str, Cow<'_, str>)> = Vec::with_capacity(16);
    let mut skipped_lines = 0;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // Folded continuation of the previous header (RFC 3261 7.3.1).
            match headers.last_mut() {
                Some((_, v)) => {
                    let more = String::from_utf8_lossy(line);
                    let more = more.trim();
                    if !more.is_empty() {
                        *v = Cow::Owned(format!("{} {}", v, more));
                    }
                }
                None => skipped_lines += 1,
            }
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            skipped_lines += 1;
            continue;
        };
        let name = match std::str::from_utf8(&line[..colon]) {
            Ok(n) if is_token(n.trim()) => n.trim(),
            _ => {
                skipped_lines += 1;
                continue;
            }
        };
        let value = match std::str::from_utf8(&line[colon + 1..]) {
            Ok(v) => Cow::Borrowed(v.trim()),
            // Keep the header: one bad byte in a display name must not
            // lose the call.
            Err(_) => Cow::Owned(
                String::from_utf8_lossy(&line[colon + 1..])
                    .trim()
                    .to_string(),
            ),
        };
        headers.push((expand_compact(name), value));
    }
    let mut msg = Message {
        start,
        headers,
        body: &data[body_start.min(data.len())..],
        declared_len: None,
        skipped_lines,
    };
    msg.declared_len = msg
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<usize>().ok());
    if let Some(len) = msg.declared_len {
        msg.body = &msg.body[..len.min(msg.body.len())];
    }
    Ok(msg)
}

/// Length of the first whole message in a stream buffer (keep-alives
/// before it included), framed by Content-Length (0 when absent); None
/// while the head or the body is incomplete. For TCP framing.
pub fn message_len(data: &[u8]) -> Option<usize> {
    let skip = keepalive_len(data);
    let data = &data[skip..];
    let (head_len, body_start) = find_head_end(data);
    if head_len == data.len() {
        return None;
    }
    let head = &data[..head_len];
    let mut len = 0usize;
    for line in head.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = std::str::from_utf8(&line[..colon]).unwrap_or("").trim();
        if expand_compact(name).eq_ignore_ascii_case("Content-Length") {
            len = std::str::from_utf8(&line[colon + 1..])
                .ok()?
                .trim()
                .parse()
                .ok()?;
            break;
        }
    }
    let total = skip.checked_add(body_start)?.checked_add(len)?;
    (total <= skip + data.len()).then_some(total)
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

/// (end of the header block, start of the body).
pub(crate) fn find_head_end(data: &[u8]) -> (usize, usize) {
    let mut i = 0;
    while i < data.len() {
        if data[i] == b'\n' {
            if data.get(i + 1) == Some(&b'\n') {
                return (i, i + 2);
            }
            if data.get(i + 1) == Some(&b'\r') && data.get(i + 2) == Some(&b'\n') {
                return (i, i + 3);
            }
        }
        i += 1;
    }
    (data.len(), data.len())
}

fn parse_start(line: &str) -> Result<StartLine<'_>, SipError> {
    let line = line.trim();
    let is_version = |v: &str| v.eq_ignore_ascii_case("SIP/2.0");
    if line.get(..7).is_some_and(is_version) && line[7..].starts_with([' ', '\t']) {
        let rest = line[7..].trim_start();
        let (code, reason) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
        let code: u16 = code.parse().map_err(|_| SipError::BadStartLine)?;
        if !(100..700).contains(&code) {
            return Err(SipError::BadStartLine);
        }
        return Ok(StartLine::Response {
            code,
            reason: reason.trim(),
        });
    }
    let mut parts = line.split_ascii_whitespace();
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(u), Some(v), None) if is_version(v) && is_token(m) => {
            Ok(StartLine::Request { method: m, uri: u })
        }
        _ => Err(SipError::NotSip),
    }
}

impl<'a> Message<'a> {
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
    /// The request method, or for a response the CSeq method.
    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => self.cseq().map(|(_, m)| m),
        }
    }
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            _ => None,
        }
    }
    pub fn request_uri(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Request { uri, .. } => Some(uri),
            _ => None,
        }
    }
    /// First value of a header; names compared case-insensitively, compact forms expanded.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = expand_compact(name);
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
    /// Every value of a header, in order, including repeated header lines.
    /// Comma-separated lists are not split (see [`split_list`]).
    pub fn headers<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        let name = expand_compact(name);
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }
    pub fn all_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (*n, v.as_ref()))
    }
    pub fn call_id(&self) -> Option<&str> {
        self.header("Call-ID")
    }
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let v = self.header("CSeq")?;
        let (n, m) = v.split_once(char::is_whitespace)?;
        Some((n.trim().parse().ok()?, m.trim()))
    }
    pub fn from(&self) -> Option<NameAddr<'_>> {
        self.header("From").map(NameAddr::parse)
    }
    pub fn to(&self) -> Option<NameAddr<'_>> {
        self.header("To").map(NameAddr::parse)
    }
    /// The SDP body: the whole body for application/sdp, or the SDP part of
    /// a multipart body (mixed or alternative, nested at most 4 deep). With
    /// no Content-Type, the body when it looks like SDP.
    pub fn sdp(&self) -> Option<&'a [u8]> {
        if self.body.is_empty() {
            return None;
        }
        match self.header("Content-Type") {
            Some(ct) => multipart::find_part(self.body, ct, "application/sdp", 0),
            None => self
                .body
                .trim_ascii_start()
                .starts_with(b"v=")
                .then_some(self.body),
        }
    }
    /// Parameters of the first `name` header: after the `>` of a name-addr,
    /// else after the first `;` outside quotes; without the leading `;`.
    /// `Some("")` when the header has none.
    pub fn header_params(&self, name: &str) -> Option<&str> {
        let v = self.header(name)?;
        let rest = match text::find_unquoted(v, b'<', false) {
            Some(lt) => match v[lt..].find('>') {
                Some(gt) => &v[lt + gt + 1..],
                None => "",
            },
            None => text::find_unquoted(v, b';', false)
                .map(|i| &v[i..])
                .unwrap_or(""),
        };
        Some(rest.trim().trim_start_matches(';').trim())
    }
    /// The media type of the body, without parameters ("application/sdp").
    pub fn content_type(&self) -> Option<&str> {
        self.header("Content-Type")
            .map(|v| v.split(';').next().unwrap_or(v).trim())
    }
    /// Content-Length as declared, when present and numeric.
    pub fn content_length(&self) -> Option<usize> {
        self.declared_len
    }
    /// Content-Length declared more bytes than the data held (a cut
    /// datagram or capture): the body is what there was.
    pub fn body_truncated(&self) -> bool {
        self.declared_len.is_some_and(|l| l > self.body.len())
    }
    /// Header lines skipped as malformed.
    pub fn skipped_lines(&self) -> usize {
        self.skipped_lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:0077260312349999@198.51.100.1;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
f: <sip:0312340001@192.0.2.1>;tag=abc\r\n\
t: <sip:0077260312349999@198.51.100.1>\r\n\
i: call-1@192.0.2.1\r\n\
CSeq: 1 INVITE\r\n\
Subject: a\r\n folded\r\n\
c: application/sdp\r\n\
l: 3\r\n\r\nv=0xx";

    #[test]
    fn parses_compact_and_folded() {
        let m = parse(INVITE).unwrap();
        assert_eq!(m.method(), Some("INVITE"));
        assert_eq!(m.call_id(), Some("call-1@192.0.2.1"));
        assert_eq!(m.from().unwrap().tag(), Some("abc"));
        assert_eq!(m.header("subject"), Some("a folded"));
        assert_eq!(m.body, b"v=0");
        assert_eq!(uri_user(m.request_uri().unwrap()), Some("0077260312349999"));
    }

    #[test]
    fn names_case_insensitive_and_all_compact_forms() {
        let m = parse(b"OPTIONS sip:x@192.0.2.1 SIP/2.0\r\ncall-id: A\r\nCSEQ: 7 OPTIONS\r\nv: SIP/2.0/UDP h\r\nk: timer\r\nm: <sip:a@192.0.2.1>\r\ns: hi\r\ne: gzip\r\nr: <sip:b@192.0.2.1>\r\nb: <sip:c@192.0.2.1>\r\nx: 1800\r\no: refer\r\nu: talk\r\na: *;audio\r\nj: *;video\r\nd: proxy\r\ny: sig\r\nn: <https://x>\r\n\r\n").unwrap();
        assert_eq!(m.call_id(), Some("A"));
        assert_eq!(m.header("CALL-ID"), Some("A"));
        assert_eq!(m.header("i"), Some("A"), "compact name in the query");
        assert_eq!(m.cseq(), Some((7, "OPTIONS")));
        for (long, v) in [
            ("Via", "SIP/2.0/UDP h"),
            ("Supported", "timer"),
            ("Contact", "<sip:a@192.0.2.1>"),
            ("Subject", "hi"),
            ("Content-Encoding", "gzip"),
            ("Refer-To", "<sip:b@192.0.2.1>"),
            ("Referred-By", "<sip:c@192.0.2.1>"),
            ("Session-Expires", "1800"),
            ("Event", "refer"),
            ("Allow-Events", "talk"),
            ("Accept-Contact", "*;audio"),
            ("Reject-Contact", "*;video"),
            ("Request-Disposition", "proxy"),
            ("Identity", "sig"),
            ("Identity-Info", "<https://x>"),
        ] {
            assert_eq!(m.header(&long.to_ascii_uppercase()), Some(v), "{long}");
        }
    }

    #[test]
    fn repeated_and_folded_headers() {
        let m = parse(b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=1\r\nRoute: <sip:p1;lr>,\r\n\t<sip:p2;lr>\r\nvia: SIP/2.0/UDP b;branch=2\r\nSubject: one\r\n   two  \r\n three\r\n\r\n").unwrap();
        assert_eq!(
            m.headers("Via").collect::<Vec<_>>(),
            vec!["SIP/2.0/UDP a;branch=1", "SIP/2.0/UDP b;branch=2"]
        );
        assert_eq!(m.header("Subject"), Some("one two three"));
        assert_eq!(
            split_list(m.header("Route").unwrap()),
            vec!["<sip:p1;lr>", "<sip:p2;lr>"]
        );
        assert_eq!(m.vias().len(), 2);
    }

    #[test]
    fn quoted_display_names_and_header_params() {
        let m = parse(
            br#"INVITE sip:x SIP/2.0
From: "A \"quoted\" <name>; x" <sip:0312@192.0.2.1;user=phone>;tag=9fx;epid=1
To: sip:0077260312349999@198.51.100.1;tag=t2
Content-Type: multipart/mixed;boundary="=b;1"
Call-ID: q

"#,
        )
        .unwrap();
        let f = m.from().unwrap();
        assert_eq!(f.display, Some(r#"A \"quoted\" <name>; x"#));
        assert_eq!(f.uri, "sip:0312@192.0.2.1;user=phone");
        assert_eq!(f.tag(), Some("9fx"));
        assert_eq!(m.header_params("From"), Some("tag=9fx;epid=1"));
        assert_eq!(m.header_params("To"), Some("tag=t2"));
        assert_eq!(m.to().unwrap().tag(), Some("t2"));
        assert_eq!(m.header_params("Content-Type"), Some(r#"boundary="=b;1""#));
        assert_eq!(
            param(m.header_params("c").unwrap(), "boundary"),
            Some("=b;1")
        );
        assert_eq!(m.header_params("Call-ID"), Some(""));
        assert_eq!(m.header_params("Nope"), None);
        assert_eq!(m.content_type(), Some("multipart/mixed"));
    }

    #[test]
    fn content_length_shorter_longer_absent() {
        let m = parse(b"SIP/2.0 200 OK\r\nContent-Length: 3\r\n\r\nv=0\r\nNEXT").unwrap();
        assert_eq!(m.body, b"v=0");
        assert!(!m.body_truncated());
        let m = parse(b"SIP/2.0 200 OK\r\nContent-Length: 100\r\n\r\nv=0\r\n").unwrap();
        assert_eq!(m.body, b"v=0\r\n");
        assert!(m.body_truncated());
        assert_eq!(m.content_length(), Some(100));
        let m = parse(b"SIP/2.0 200 OK\r\nContent-Length: junk\r\n\r\nv=0\r\n").unwrap();
        assert_eq!(m.body, b"v=0\r\n");
        assert_eq!(m.content_length(), None);
    }

    #[test]
    fn bare_lf_keepalives_and_start_lines() {
        let m = parse(b"\r\n\r\n\nBYE sip:x@192.0.2.1 SIP/2.0\nCall-ID: k\nl: 2\n\nabc").unwrap();
        assert_eq!(m.method(), Some("BYE"));
        assert_eq!(m.call_id(), Some("k"));
        assert_eq!(m.body, b"ab");
        assert!(looks_like_sip(b"\r\n\r\nSIP/2.0 180 Ringing\r\n"));
        assert_eq!(parse(b"\r\n\r\n").unwrap_err(), SipError::NotSip);
        assert_eq!(parse(b"").unwrap_err(), SipError::NotSip);
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n").unwrap_err(),
            SipError::NotSip
        );
        assert_eq!(
            parse(b"SIP/2.0 99 x\r\n\r\n").unwrap_err(),
            SipError::BadStartLine
        );
        assert_eq!(
            parse(b"SIP/2.0 abc\r\n\r\n").unwrap_err(),
            SipError::BadStartLine
        );
        assert_eq!(
            parse(b"INV\xffITE sip:x SIP/2.0\r\n\r\n").unwrap_err(),
            SipError::Encoding
        );
        let m = parse(b"sip/2.0  486 Busy Here\r\nCSeq: 2 INVITE\r\n\r\n").unwrap();
        assert_eq!((m.status(), m.method()), (Some(486), Some("INVITE")));
        let m = parse(b"SIP/2.0 200\r\n\r\n").unwrap();
        assert_eq!(
            m.start,
            StartLine::Response {
                code: 200,
                reason: ""
            }
        );
    }

    #[test]
    fn nul_and_invalid_utf8_are_tolerated() {
        let mut raw = b"INVITE sip:x SIP/2.0\r\nFrom: \"Caf\xe9\" <sip:a@192.0.2.1>;tag=1\r\nBad line without colon\r\n\xff\xfe: x\r\nCall-ID: u\r\nContent-Type: application/octet-stream\r\nContent-Length: 6\r\n\r\n".to_vec();
        raw.extend_from_slice(b"\x00\xff\x00\x80ab");
        let m = parse(&raw).unwrap();
        assert_eq!(m.call_id(), Some("u"));
        assert_eq!(m.from().unwrap().tag(), Some("1"));
        assert!(m.from().unwrap().display.unwrap().starts_with("Caf"));
        assert_eq!(m.skipped_lines(), 2);
        assert_eq!(m.body, b"\x00\xff\x00\x80ab");
        assert_eq!(m.sdp(), None, "not SDP");
    }

    #[test]
    fn sdp_body_plain_missing_type_and_multipart() {
        let m = parse(b"SIP/2.0 200 OK\r\nContent-Type: Application/SDP\r\n\r\nv=0\r\n").unwrap();
        assert_eq!(m.sdp(), Some(&b"v=0\r\n"[..]));
        let m = parse(b"SIP/2.0 200 OK\r\n\r\nv=0\r\n").unwrap();
        assert_eq!(m.sdp(), Some(&b"v=0\r\n"[..]));
        let m = parse(b"SIP/2.0 200 OK\r\n\r\nhello").unwrap();
        assert_eq!(m.sdp(), None);
        let m = parse(b"INVITE sip:x SIP/2.0\r\nc: multipart/mixed;boundary=unique-boundary-1\r\nMime-Version: 1.0\r\n\r\n--unique-boundary-1\r\nContent-Type: application/ISUP;version=nxv3;base=etsi121\r\nContent-Disposition: signal;handling=optional\r\n\r\n\x01\x00\x49\x00\r\n--unique-boundary-1\r\nc: application/sdp\r\n\r\nv=0\r\nm=audio 4000 RTP/AVP 0\r\n\r\n--unique-boundary-1\r\nContent-Type: application/pidf+xml\r\n\r\n<presence/>\r\n--unique-boundary-1--\r\n").unwrap();
        assert_eq!(m.sdp(), Some(&b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n"[..]));
        assert_eq!(
            sdp::parse(m.sdp().unwrap()).unwrap().audio().unwrap().port,
            4000
        );
    }

    #[test]
    fn stream_framing() {
        let a = b"\r\nINVITE sip:x SIP/2.0\r\nl: 3\r\n\r\nabcOPTIONS";
        assert_eq!(message_len(a), Some(a.len() - 7));
        assert_eq!(
            message_len(b"INVITE sip:x SIP/2.0\r\nContent-Length: 5\r\n\r\nab"),
            None
        );
        assert_eq!(message_len(b"INVITE sip:x SIP/2.0\r\nCall-ID: a"), None);
        assert_eq!(message_len(b"BYE sip:x SIP/2.0\r\n\r\nmore"), Some(21));
        assert_eq!(
            message_len(b"BYE sip:x SIP/2.0\r\nl: 99999999999999999999999\r\n\r\n"),
            None
        );
    }
}
