//! Lexical helpers shared by the header parsers: lists, parameters and
//! name-addr values, all aware of quoted strings (with `\"` escapes) and
//! angle brackets, and all borrowing from the header text.

/// Scans `v` and yields the byte offsets of `sep` that are outside quoted
/// strings and (when `angles`) outside `<...>`.
fn unquoted_positions(v: &str, sep: u8, angles: bool) -> impl Iterator<Item = usize> + '_ {
    let (mut depth, mut quoted, mut escaped) = (0i32, false, false);
    v.bytes().enumerate().filter_map(move |(i, b)| {
        if escaped {
            escaped = false;
            return None;
        }
        match b {
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'<' if angles && !quoted => depth += 1,
            b'>' if angles && !quoted => depth = (depth - 1).max(0),
            _ if b == sep && !quoted && depth == 0 => return Some(i),
            _ => {}
        }
        None
    })
}

/// Splits `v` on `sep` outside quotes (and angle brackets when `angles`);
/// pieces are trimmed, empty pieces dropped.
pub(crate) fn split_unquoted(v: &str, sep: u8, angles: bool) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in unquoted_positions(v, sep, angles) {
        out.push(v[start..i].trim());
        start = i + 1;
    }
    out.push(v[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// Offset of the first `sep` outside quotes and angle brackets.
pub(crate) fn find_unquoted(v: &str, sep: u8, angles: bool) -> Option<usize> {
    unquoted_positions(v, sep, angles).next()
}

/// Splits a header value on commas outside quotes and angle brackets.
pub fn split_list(v: &str) -> Vec<&str> {
    split_unquoted(v, b',', true)
}

/// Value of `name` in a `;`-separated parameter list (`a=1;b;c="3"`):
/// `Some("")` for a flag parameter, quotes removed (escapes left as written).
pub fn param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params_iter(params)
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.unwrap_or(""))
}

/// Every `(name, value)` of a `;`-separated parameter list, in order.
pub fn params_iter(params: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    split_unquoted(params, b';', false)
        .into_iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim()))),
            None => (p.trim(), None),
        })
}

/// Removes one pair of surrounding double quotes, if present.
pub(crate) fn unquote(v: &str) -> &str {
    let v = v.trim();
    if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
        &v[1..v.len() - 1]
    } else {
        v.trim_matches('"')
    }
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
        // The display name may be a quoted string holding '<' or '>'.
        if let Some(lt) = find_unquoted(v, b'<', false) {
            let gt = v[lt..].find('>').map(|g| lt + g).unwrap_or(v.len());
            let display = unquote(v[..lt].trim()).trim();
            let params = v
                .get(gt + 1..)
                .unwrap_or("")
                .trim()
                .trim_start_matches(';')
                .trim();
            return NameAddr {
                display: (!display.is_empty()).then_some(display),
                uri: v[lt + 1..gt].trim(),
                params,
            };
        }
        // addr-spec form: parameters after the URI belong to the header.
        let (uri, params) = v.split_once(';').unwrap_or((v, ""));
        NameAddr {
            display: None,
            uri: uri.trim(),
            params: params.trim(),
        }
    }
    pub fn param(&self, name: &str) -> Option<&'a str> {
        param(self.params, name)
    }
    pub fn tag(&self) -> Option<&'a str> {
        self.param("tag")
    }
    /// The URI, parsed; None for schemes other than sip, sips and tel.
    pub fn parsed_uri(&self) -> Option<super::uri::Uri<'a>> {
        super::uri::Uri::parse(self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_respects_quotes_escapes_and_angles() {
        let v = r#""Smith, \"J\" <x>" <sip:a@192.0.2.1;x=1,2>;tag=1, <tel:+81312345678>"#;
        let l = split_list(v);
        assert_eq!(l.len(), 2, "{l:?}");
        assert_eq!(l[1], "<tel:+81312345678>");
        let na = NameAddr::parse(l[0]);
        assert_eq!(na.display, Some(r#"Smith, \"J\" <x>"#));
        assert_eq!(na.uri, "sip:a@192.0.2.1;x=1,2");
        assert_eq!(na.tag(), Some("1"));
    }

    #[test]
    fn params_quoted_and_flags() {
        let p = r#"tag=a;lr;reason="a;b";Counter=2"#;
        assert_eq!(param(p, "lr"), Some(""));
        assert_eq!(param(p, "reason"), Some("a;b"));
        assert_eq!(param(p, "counter"), Some("2"));
        assert_eq!(param(p, "x"), None);
    }

    #[test]
    fn addr_spec_without_brackets() {
        let na = NameAddr::parse(" sip:0312@192.0.2.1 ;tag=zz");
        assert_eq!(na.display, None);
        assert_eq!(na.uri, "sip:0312@192.0.2.1");
        assert_eq!(na.tag(), Some("zz"));
    }
}
