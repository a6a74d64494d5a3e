//! sip:, sips: and tel: URIs: user, host (IPv6 in brackets), port,
//! parameters and `?` headers, borrowed from the message.

use std::borrow::Cow;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uri<'a> {
    /// As written ("sip", "SIP", "tel" ...).
    pub scheme: &'a str,
    /// User part without password, user parameters kept
    /// (`0312;isub=1`); for tel: the number.
    pub user: Option<&'a str>,
    pub password: Option<&'a str>,
    /// Host; an IPv6 reference keeps its brackets. Empty for tel:.
    pub host: &'a str,
    pub port: Option<u16>,
    /// URI parameters, raw, without the leading ';'.
    pub params: &'a str,
    /// URI headers, raw, without the leading '?' (`Replaces=...&x=y`).
    pub headers: &'a str,
}

impl<'a> Uri<'a> {
    /// Parses a sip:, sips: or tel: URI (surrounding `<>` tolerated).
    pub fn parse(s: &'a str) -> Option<Uri<'a>> {
        let s = s
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .trim();
        let (scheme, rest) = s.split_once(':')?;
        let (rest, headers) = rest.split_once('?').unwrap_or((rest, ""));
        if scheme.eq_ignore_ascii_case("tel") {
            let (number, params) = rest.split_once(';').unwrap_or((rest, ""));
            return Some(Uri {
                scheme,
                user: Some(number.trim()),
                password: None,
                host: "",
                port: None,
                params,
                headers,
            });
        }
        if !(scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")) {
            return None;
        }
        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            // A password follows ':' but only before any user parameter.
            Some(u) => match u.find(':').filter(|&c| u.find(';').is_none_or(|sc| c < sc)) {
                Some(c) => (Some(&u[..c]), Some(&u[c + 1..])),
                None => (Some(u), None),
            },
            None => (None, None),
        };
        let (hostport, params) = hostpart.split_once(';').unwrap_or((hostpart, ""));
        let (host, port) = Uri::parse_hostport(hostport);
        Some(Uri {
            scheme,
            user,
            password,
            host: host.trim(),
            port,
            params,
            headers,
        })
    }

    pub fn param(&self, name: &str) -> Option<&'a str> {
        super::text::param(self.params, name)
    }

    /// A URI header (`?Replaces=...`), percent-decoded.
    pub fn header(&self, name: &str) -> Option<Cow<'a, str>> {
        self.headers.split('&').find_map(|h| {
            let (k, v) = h.split_once('=').unwrap_or((h, ""));
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| percent_decode(v))
        })
    }

    /// The user without user parameters (`0312;isub=1` -> `0312`).
    pub fn user_number(&self) -> Option<&'a str> {
        self.user.map(|u| u.split(';').next().unwrap_or(u))
    }

    /// tel: URI, or sip: with `user=phone`.
    pub fn is_phone(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("tel")
            || self
                .param("user")
                .is_some_and(|u| u.eq_ignore_ascii_case("phone"))
    }

    /// The host as an IP address, brackets removed; None for a name.
    pub fn host_ip(&self) -> Option<std::net::IpAddr> {
        self.host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()
    }
}

/// User part of a sip:/sips:/tel: URI (`sip:0312@host;user=phone` -> `0312`).
pub fn uri_user(uri: &str) -> Option<&str> {
    let u = Uri::parse(uri)?;
    u.user_number().map(str::trim).filter(|u| !u.is_empty())
}

/// Decodes `%XX` escapes; borrows when there are none. Bad escapes are kept
/// as written; invalid UTF-8 after decoding is replaced.
pub fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_uri_with_params_headers_and_password() {
        let u = Uri::parse(
            "<sip:0312;isub=12:pw@198.51.100.1:5070;user=phone;transport=udp?Subject=a%20b&X=1>",
        )
        .unwrap();
        assert_eq!(
            u.user,
            Some("0312;isub=12:pw"),
            "':' after a user parameter is not a password"
        );
        let u = Uri::parse(
            "sips:alice:secret@198.51.100.1:5070;user=phone;transport=udp?Subject=a%20b&X=1",
        )
        .unwrap();
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.password, Some("secret"));
        assert_eq!(u.host, "198.51.100.1");
        assert_eq!(u.port, Some(5070));
        assert!(u.is_phone());
        assert_eq!(u.param("transport"), Some("udp"));
        assert_eq!(u.header("subject").as_deref(), Some("a b"));
        assert_eq!(u.header("x").as_deref(), Some("1"));
    }

    #[test]
    fn ipv6_hosts() {
        let u = Uri::parse("sip:0312@[2001:db8::1]:5060;transport=tcp").unwrap();
        assert_eq!(u.host, "[2001:db8::1]");
        assert_eq!(u.port, Some(5060));
        assert_eq!(u.host_ip(), Some("2001:db8::1".parse().unwrap()));
        let u = Uri::parse("sip:[2001:db8::2]").unwrap();
        assert_eq!(u.user, None);
        assert_eq!(u.port, None);
        assert_eq!(u.host_ip(), Some("2001:db8::2".parse().unwrap()));
    }

    #[test]
    fn tel_uri_and_user() {
        let u = Uri::parse("tel:+81-3-1234-5678;phone-context=+81;isub=1").unwrap();
        assert_eq!(u.user, Some("+81-3-1234-5678"));
        assert!(u.is_phone());
        assert_eq!(u.param("isub"), Some("1"));
        assert_eq!(uri_user("TEL:0312345678"), Some("0312345678"));
        assert_eq!(
            uri_user("sip:0077260312349999@198.51.100.1;user=phone"),
            Some("0077260312349999")
        );
        assert_eq!(uri_user("sip:198.51.100.1"), None);
        assert_eq!(uri_user("mailto:a@b"), None);
        // '@' inside a URI header does not make a user part.
        assert_eq!(uri_user("sip:198.51.100.1?Replaces=a%40b"), None);
        assert_eq!(uri_user("sip:bob@198.51.100.1?Replaces=a%40b"), Some("bob"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40b%3Bto-tag%3d1"), "a@b;to-tag=1");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert!(matches!(percent_decode("plain"), Cow::Borrowed(_)));
    }
}
