//! SIP messages and their SDP bodies: a lenient, zero-copy parser.
//!
//! Lenient because the appliance watches other people's traffic: a message a
//! strict parser would reject may still be a call that must be recorded.

pub mod sdp;

/// A parsed SIP message borrowing from the captured bytes.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    pub start: StartLine<'a>,
    /// (name as written, value) in order; folded lines joined.
    headers: Vec<(&'a str, std::borrow::Cow<'a, str>)>,
    pub body: &'a [u8],
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
    #[error("bad header at line {0}")]
    BadHeader(usize),
    #[error("message is not UTF-8 in its headers")]
    Encoding,
}

/// Compact header forms (RFC 3261 7.3.3 and extensions).
fn expand_compact(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'e' => "Content-Encoding",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'f' => "From",
        b's' => "Subject",
        b'k' => "Supported",
        b't' => "To",
        b'v' => "Via",
        b'r' => "Refer-To",
        b'b' => "Referred-By",
        b'x' => "Session-Expires",
        b'o' => "Event",
        _ => name,
    }
}

/// Quick test used to find SIP on ports not configured for it.
pub fn looks_like_sip(data: &[u8]) -> bool {
    let line_end = data.iter().position(|&b| b == b'\r' || b == b'\n').unwrap_or(data.len()).min(512);
    let line = &data[..line_end];
    line.starts_with(b"SIP/2.0 ") || line.ends_with(b" SIP/2.0")
}

/// Parses one message. `data` may carry trailing bytes past Content-Length;
/// the body is cut to Content-Length when present.
pub fn parse(data: &[u8]) -> Result<Message<'_>, SipError> {
    // Headers end at the first empty line; accept bare LF too.
    let (head_len, body_start) = find_head_end(data);
    let head = std::str::from_utf8(&data[..head_len]).map_err(|_| SipError::Encoding)?;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().ok_or(SipError::NotSip)?;
    let start = parse_start(first)?;
    let mut headers: Vec<(&str, std::borrow::Cow<'_, str>)> = Vec::with_capacity(16);
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            // Folded continuation of the previous header.
            let (_, v) = headers.last_mut().ok_or(SipError::BadHeader(i + 2))?;
            let joined = format!("{} {}", v, line.trim());
            *v = std::borrow::Cow::Owned(joined);
            continue;
        }
        let (name, value) = line.split_once(':').ok_or(SipError::BadHeader(i + 2))?;
        headers.push((expand_compact(name.trim()), std::borrow::Cow::Borrowed(value.trim())));
    }
    let mut msg = Message { start, headers, body: &data[body_start.min(data.len())..] };
    if let Some(len) = msg.header("Content-Length").and_then(|v| v.trim().parse::<usize>().ok()) {
        msg.body = &msg.body[..len.min(msg.body.len())];
    }
    Ok(msg)
}

fn find_head_end(data: &[u8]) -> (usize, usize) {
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
    if let Some(rest) = line.strip_prefix("SIP/2.0 ") {
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let code: u16 = code.parse().map_err(|_| SipError::BadStartLine)?;
        if !(100..700).contains(&code) {
            return Err(SipError::BadStartLine);
        }
        return Ok(StartLine::Response { code, reason });
    }
    let mut parts = line.split(' ');
    let (method, uri, version) = (parts.next(), parts.next(), parts.next());
    match (method, uri, version) {
        (Some(m), Some(u), Some("SIP/2.0")) if !m.is_empty() && !u.is_empty() => {
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
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
    }
    /// Every value of a header, in order, including repeated header lines.
    /// Comma-separated lists are not split (see [`split_list`]).
    pub fn headers<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_ref())
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
    /// The SDP body: the whole body for application/sdp, or the SDP part of a
    /// multipart body.
    pub fn sdp(&self) -> Option<&'a [u8]> {
        if self.body.is_empty() {
            return None;
        }
        let ct = self.header("Content-Type").unwrap_or("application/sdp");
        if ct.to_ascii_lowercase().starts_with("application/sdp") {
            return Some(self.body);
        }
        None
    }
}

/// Splits a header value on commas outside quotes and angle brackets.
pub fn split_list(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    for (i, c) in v.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth <= 0 => {
                out.push(v[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(v[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// `"Display" <uri>;tag=x` or `uri;tag=x`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameAddr<'a> {
    pub display: Option<&'a str>,
    pub uri: &'a str,
    /// Header parameters after the URI (tag, etc.), raw, without the leading ';'.
    pub params: &'a str,
}

impl<'a> NameAddr<'a> {
    pub fn parse(v: &'a str) -> NameAddr<'a> {
        let v = v.trim();
        if let Some(lt) = v.find('<') {
            let gt = v[lt..].find('>').map(|g| lt + g).unwrap_or(v.len());
            let display = v[..lt].trim().trim_matches('"').trim();
            let params = v.get(gt + 1..).unwrap_or("").trim().trim_start_matches(';');
            return NameAddr {
                display: (!display.is_empty()).then_some(display),
                uri: &v[lt + 1..gt],
                params,
            };
        }
        let (uri, params) = v.split_once(';').unwrap_or((v, ""));
        NameAddr { display: None, uri: uri.trim(), params: params.trim() }
    }
    pub fn param(&self, name: &str) -> Option<&'a str> {
        param(self.params, name)
    }
    pub fn tag(&self) -> Option<&'a str> {
        self.param("tag")
    }
}

/// Value of `name` in a `;`-separated parameter list (`a=1;b;c=3`).
pub fn param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().trim_matches('"'))
    })
}

/// User part of a sip:/sips:/tel: URI (`sip:0312@host;user=phone` -> `0312`).
pub fn uri_user(uri: &str) -> Option<&str> {
    let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
    let (scheme, rest) = uri.split_once(':')?;
    match scheme.to_ascii_lowercase().as_str() {
        "tel" => Some(rest.split(';').next().unwrap_or(rest)),
        "sip" | "sips" => {
            let at = rest.find('@')?;
            let user = &rest[..at];
            Some(user.split(';').next().unwrap_or(user))
        }
        _ => None,
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
}
