//! MIME bodies: finds the part of a given type (application/sdp) inside
//! multipart/mixed or multipart/alternative bodies, e.g. SIP-I INVITEs that
//! carry ISUP beside SDP, or PIDF-LO location next to the offer.

use super::text::{param, unquote};

/// Nesting bound: a crafted body cannot make us recurse without end.
const MAX_DEPTH: u8 = 4;

/// The part of `body` (whose Content-Type is `content_type`) with media
/// type `want`; the body itself when it is of that type.
pub(crate) fn find_part<'a>(
    body: &'a [u8],
    content_type: &str,
    want: &str,
    depth: u8,
) -> Option<&'a [u8]> {
    let (mime, params) = content_type.split_once(';').unwrap_or((content_type, ""));
    let mime = mime.trim();
    if mime.eq_ignore_ascii_case(want) {
        return Some(body);
    }
    let is_multipart = mime
        .get(..10)
        .is_some_and(|p| p.eq_ignore_ascii_case("multipart/"));
    if !is_multipart || depth >= MAX_DEPTH {
        return None;
    }
    let boundary = unquote(param(params, "boundary")?);
    if boundary.is_empty() {
        return None;
    }
    parts(body, boundary.as_bytes())
        .into_iter()
        .find_map(|part| {
            let (head, content) = split_part(part);
            let ct = part_content_type(head).unwrap_or("text/plain");
            find_part(content, ct, want, depth + 1)
        })
}

/// Offsets of `--boundary` delimiters that start a line.
fn delimiters(body: &[u8], boundary: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    if body.len() < boundary.len() + 2 {
        return out;
    }
    for i in 0..=body.len() - boundary.len() - 2 {
        if body[i] == b'-'
            && body[i + 1] == b'-'
            && &body[i + 2..i + 2 + boundary.len()] == boundary
            && (i == 0 || body[i - 1] == b'\n')
        {
            out.push(i);
        }
    }
    out
}

/// The parts between delimiters; the line break before a delimiter belongs
/// to the delimiter (RFC 2046 5.1.1); stops at the closing `--boundary--`.
fn parts<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<&'a [u8]> {
    let d = delimiters(body, boundary);
    let mut out = Vec::new();
    for w in d.windows(2) {
        let after = w[0] + 2 + boundary.len();
        if body[after..].starts_with(b"--") {
            break;
        }
        // Skip transport padding up to the end of the delimiter line.
        let start = body[after..w[1]]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| after + p + 1)
            .unwrap_or(w[1]);
        let mut end = w[1];
        if end > start && body[end - 1] == b'\n' {
            end -= 1;
            if end > start && body[end - 1] == b'\r' {
                end -= 1;
            }
        }
        out.push(&body[start..end.max(start)]);
    }
    // A body cut short (no closing delimiter) still yields its last part.
    if let Some(&last) = d.last() {
        let after = last + 2 + boundary.len();
        if !body[after..].starts_with(b"--")
            && let Some(p) = body[after..].iter().position(|&b| b == b'\n')
        {
            out.push(&body[after + p + 1..]);
        }
    }
    out
}

/// Splits a part into its header block and content at the first empty line.
fn split_part(part: &[u8]) -> (&[u8], &[u8]) {
    if part.starts_with(b"\r\n") {
        return (&[], &part[2..]);
    }
    if part.starts_with(b"\n") {
        return (&[], &part[1..]);
    }
    let (head_len, body_start) = super::find_head_end(part);
    (&part[..head_len], &part[body_start.min(part.len())..])
}

fn part_content_type(head: &[u8]) -> Option<&str> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let line = std::str::from_utf8(line).ok()?;
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("Content-Type") || name.eq_ignore_ascii_case("c"))
            .then(|| value.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &[u8] =
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\n";

    fn multipart(kind: &str, boundary: &str, sdp_last: bool, nl: &str) -> Vec<u8> {
        let isup = format!(
            "Content-Type: application/ISUP;version=itu-t92+{nl}Content-Disposition: signal;handling=optional{nl}{nl}\x01\x00\x49\x00\x00\x03\x02\x00\x07{nl}"
        );
        let sdp = format!(
            "Content-Type: application/sdp{nl}{nl}{}{nl}",
            String::from_utf8_lossy(SDP).replace("\r\n", nl)
        );
        let (a, b) = if sdp_last { (isup, sdp) } else { (sdp, isup) };
        let _ = kind;
        format!("--{boundary}{nl}{a}--{boundary}{nl}{b}--{boundary}--{nl}").into_bytes()
    }

    #[test]
    fn finds_sdp_in_mixed_and_alternative() {
        for (ct, boundary) in [
            (
                "multipart/mixed;boundary=unique-boundary-1",
                "unique-boundary-1",
            ),
            ("Multipart/Alternative; boundary=\"b o;u\"", "b o;u"),
        ] {
            for sdp_last in [true, false] {
                for nl in ["\r\n", "\n"] {
                    let body = multipart(ct, boundary, sdp_last, nl);
                    let part = find_part(&body, ct, "application/sdp", 0).expect(ct);
                    let want = String::from_utf8_lossy(SDP).replace("\r\n", nl);
                    assert_eq!(part, want.as_bytes(), "{ct} {sdp_last} {nl:?}");
                }
            }
        }
    }

    #[test]
    fn nothing_when_no_sdp_part() {
        let body = b"--x\r\nContent-Type: application/pidf+xml\r\n\r\n<presence/>\r\n--x--\r\n";
        assert_eq!(
            find_part(body, "multipart/mixed;boundary=x", "application/sdp", 0),
            None
        );
        assert_eq!(
            find_part(body, "multipart/mixed", "application/sdp", 0),
            None
        );
    }

    #[test]
    fn nested_multipart() {
        let inner = b"--in\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--in--";
        let mut body = b"--out\r\nContent-Type: multipart/alternative;boundary=in\r\n\r\n".to_vec();
        body.extend_from_slice(inner);
        body.extend_from_slice(b"\r\n--out--\r\n");
        assert_eq!(
            find_part(&body, "multipart/mixed;boundary=out", "application/sdp", 0),
            Some(&b"v=0"[..])
        );
    }
}
