//! Typed views of the headers the tracker and the policy read: Via,
//! identities (P-Asserted-Identity, Privacy), redirection (Diversion,
//! History-Info), Resource-Priority and transfer (Refer-To, Referred-By,
//! Replaces). All borrow from the message where the text allows.

use super::Message;
use super::text::{NameAddr, param, split_list, split_unquoted};
use super::uri::Uri;
use std::borrow::Cow;

/// One Via entry: `SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    /// "SIP/2.0/UDP".
    pub protocol: &'a str,
    /// "UDP", "TCP", "TLS", "WS" ...
    pub transport: &'a str,
    /// Host, IPv6 kept in brackets.
    pub host: &'a str,
    pub port: Option<u16>,
    /// Raw, without the leading ';'.
    pub params: &'a str,
}

impl<'a> Via<'a> {
    pub fn parse(v: &'a str) -> Option<Via<'a>> {
        let (head, params) = v.split_once(';').unwrap_or((v, ""));
        let head = head.trim();
        let split = head.find(char::is_whitespace)?;
        let (protocol, sent_by) = (head[..split].trim(), head[split..].trim());
        let transport = protocol.rsplit('/').next().unwrap_or("").trim();
        let uri = Uri::parse_hostport(sent_by);
        Some(Via {
            protocol,
            transport,
            host: uri.0,
            port: uri.1,
            params: params.trim(),
        })
    }
    pub fn param(&self, name: &str) -> Option<&'a str> {
        param(self.params, name)
    }
    pub fn branch(&self) -> Option<&'a str> {
        self.param("branch")
    }
    pub fn received(&self) -> Option<&'a str> {
        self.param("received")
    }
    /// `Some(None)` for a bare `rport`, `Some(Some(p))` when filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport").map(|p| p.parse().ok())
    }
}

impl<'a> Uri<'a> {
    /// `host[:port]` with IPv6 in brackets.
    pub(crate) fn parse_hostport(s: &'a str) -> (&'a str, Option<u16>) {
        let s = s.trim();
        if s.starts_with('[') {
            return match s.find(']') {
                Some(end) => (
                    &s[..=end],
                    s[end + 1..]
                        .strip_prefix(':')
                        .and_then(|p| p.trim().parse().ok()),
                ),
                None => (s, None),
            };
        }
        match s.split_once(':') {
            Some((h, p)) => (h.trim(), p.trim().parse().ok()),
            None => (s, None),
        }
    }
}

/// The Privacy header (RFC 3323/3325), all values merged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Privacy {
    pub id: bool,
    pub user: bool,
    pub header: bool,
    pub session: bool,
    pub critical: bool,
    pub none: bool,
}

impl Privacy {
    pub fn parse(v: &str) -> Privacy {
        let mut p = Privacy::default();
        p.add(v);
        p
    }
    fn add(&mut self, v: &str) {
        // Values are ';'-separated; some devices use ','.
        for t in v.split([';', ',']).map(str::trim) {
            match t.to_ascii_lowercase().as_str() {
                "id" => self.id = true,
                "user" => self.user = true,
                "header" => self.header = true,
                "session" => self.session = true,
                "critical" => self.critical = true,
                "none" => self.none = true,
                _ => {}
            }
        }
    }
    /// The caller asked for the identity to be withheld.
    pub fn withholds_identity(&self) -> bool {
        !self.none && (self.id || self.user || self.header)
    }
}

/// One History-Info entry (RFC 7044).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryInfo<'a> {
    pub addr: NameAddr<'a>,
    /// "1.1.2" as written.
    pub index: Option<&'a str>,
}

impl<'a> HistoryInfo<'a> {
    /// The index as numbers ("1.2" -> [1, 2]); None when absent or bad.
    pub fn index_path(&self) -> Option<Vec<u32>> {
        self.index?
            .split('.')
            .map(|n| n.trim().parse().ok())
            .collect()
    }
    /// The redirection cause: the URI's `cause=` parameter (RFC 4458) or the
    /// cause in an escaped `?Reason=SIP;cause=302` URI header (RFC 4244).
    pub fn cause(&self) -> Option<u16> {
        let uri = self.addr.parsed_uri()?;
        if let Some(c) = uri.param("cause").and_then(|c| c.parse().ok()) {
            return Some(c);
        }
        let reason = uri.header("Reason")?;
        param(reason.split_once(';')?.1, "cause")?.parse().ok()
    }
}

/// One Resource-Priority value (RFC 4412): `ets.0` -> ("ets", "0").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResourcePriority<'a> {
    pub namespace: &'a str,
    pub priority: &'a str,
}

/// Replaces (RFC 3891): the dialog a new INVITE takes over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replaces<'a> {
    pub call_id: Cow<'a, str>,
    pub to_tag: Option<Cow<'a, str>>,
    pub from_tag: Option<Cow<'a, str>>,
    pub early_only: bool,
}

impl<'a> Replaces<'a> {
    pub fn parse(v: &'a str) -> Option<Replaces<'a>> {
        let (call_id, params) = v.trim().split_once(';').unwrap_or((v.trim(), ""));
        let call_id = call_id.trim();
        if call_id.is_empty() {
            return None;
        }
        Some(Replaces {
            call_id: Cow::Borrowed(call_id),
            to_tag: param(params, "to-tag").map(Cow::Borrowed),
            from_tag: param(params, "from-tag").map(Cow::Borrowed),
            early_only: param(params, "early-only").is_some(),
        })
    }
    fn from_cow(v: Cow<'a, str>) -> Option<Replaces<'a>> {
        match v {
            Cow::Borrowed(s) => Replaces::parse(s),
            Cow::Owned(s) => Replaces::parse(&s).map(Replaces::into_owned),
        }
    }
    pub fn into_owned(self) -> Replaces<'static> {
        Replaces {
            call_id: Cow::Owned(self.call_id.into_owned()),
            to_tag: self.to_tag.map(|t| Cow::Owned(t.into_owned())),
            from_tag: self.from_tag.map(|t| Cow::Owned(t.into_owned())),
            early_only: self.early_only,
        }
    }
}

impl<'a> Message<'a> {
    /// Every name-addr of every `name` header, comma lists split, in order.
    pub fn name_addrs<'s>(&'s self, name: &'s str) -> Vec<NameAddr<'s>> {
        self.headers(name)
            .flat_map(split_list)
            .map(NameAddr::parse)
            .collect()
    }
    /// Every Via entry, topmost first.
    pub fn vias(&self) -> Vec<Via<'_>> {
        self.headers("Via")
            .flat_map(split_list)
            .filter_map(Via::parse)
            .collect()
    }
    /// P-Asserted-Identity entries (a sip: and a tel: one are common).
    pub fn asserted_identities(&self) -> Vec<NameAddr<'_>> {
        self.name_addrs("P-Asserted-Identity")
    }
    pub fn preferred_identities(&self) -> Vec<NameAddr<'_>> {
        self.name_addrs("P-Preferred-Identity")
    }
    /// All Privacy headers merged; default (nothing set) when absent.
    pub fn privacy(&self) -> Privacy {
        let mut p = Privacy::default();
        for v in self.headers("Privacy") {
            p.add(v);
        }
        p
    }
    /// Diversion entries (RFC 5806), most recent redirection first; read
    /// `reason`, `counter` with [`NameAddr::param`].
    pub fn diversions(&self) -> Vec<NameAddr<'_>> {
        self.name_addrs("Diversion")
    }
    /// History-Info entries in the order written.
    pub fn history_info(&self) -> Vec<HistoryInfo<'_>> {
        self.name_addrs("History-Info")
            .into_iter()
            .map(|addr| HistoryInfo {
                index: addr.param("index"),
                addr,
            })
            .collect()
    }
    pub fn resource_priorities(&self) -> Vec<ResourcePriority<'_>> {
        self.headers("Resource-Priority")
            .flat_map(|v| split_unquoted(v, b',', false))
            .map(|r| match r.split_once('.') {
                Some((ns, p)) => ResourcePriority {
                    namespace: ns.trim(),
                    priority: p.trim(),
                },
                None => ResourcePriority {
                    namespace: r,
                    priority: "",
                },
            })
            .collect()
    }
    pub fn refer_to(&self) -> Option<NameAddr<'_>> {
        self.header("Refer-To").map(NameAddr::parse)
    }
    pub fn referred_by(&self) -> Option<NameAddr<'_>> {
        self.header("Referred-By").map(NameAddr::parse)
    }
    /// The Replaces header of an INVITE.
    pub fn replaces(&self) -> Option<Replaces<'_>> {
        self.header("Replaces").and_then(Replaces::parse)
    }
    /// Replaces carried URL-encoded in the Refer-To URI (attended transfer).
    pub fn refer_to_replaces(&self) -> Option<Replaces<'_>> {
        let uri = Uri::parse(self.refer_to()?.uri)?;
        Replaces::from_cow(uri.header("Replaces")?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    const MSG: &[u8] = b"INVITE sip:0077260312349999@198.51.100.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;rport, SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK2;received=203.0.113.9\r\n\
v: SIP/2.0/UDP 192.0.2.3;branch=z9hG4bK3\r\n\
P-Asserted-Identity: \"Caller, A\" <sip:+81312345678@192.0.2.1;user=phone>, <tel:+81312345678>\r\n\
Privacy: id;critical\r\n\
Diversion: <sip:0312340001@192.0.2.1>;reason=unconditional;counter=1,\r\n <sip:0312340002@192.0.2.1>;reason=user-busy\r\n\
History-Info: <sip:0312340001@192.0.2.1>;index=1, <sip:0312340002@192.0.2.1?Reason=SIP%3Bcause%3D302%3Btext%3D%22x%22>;index=1.1\r\n\
History-Info: <sip:0312340003@192.0.2.1;cause=486>;index=1.1.1;mp=1.1\r\n\
Resource-Priority: ets.0, wps.1\r\n\
Replaces: 425928@bobster.example.org;to-tag=7743;from-tag=6472;early-only\r\n\
Refer-To: <sip:carol@198.51.100.2?Replaces=12345%40192.0.2.3%3Bto-tag%3D12345%3Bfrom-tag%3D5FFE-3994>\r\n\
b: <sip:alice@192.0.2.1>\r\n\
Call-ID: x\r\nCSeq: 1 INVITE\r\n\r\n";

    #[test]
    fn via_list() {
        let m = parse(MSG).unwrap();
        let v = m.vias();
        assert_eq!(v.len(), 3);
        assert_eq!(
            (v[0].transport, v[0].host, v[0].port),
            ("UDP", "192.0.2.1", Some(5060))
        );
        assert_eq!(v[0].branch(), Some("z9hG4bK1"));
        assert_eq!(v[0].rport(), Some(None));
        assert_eq!(
            (v[1].transport, v[1].host, v[1].port),
            ("TCP", "[2001:db8::1]", Some(5070))
        );
        assert_eq!(v[1].received(), Some("203.0.113.9"));
        assert_eq!(
            (v[2].host, v[2].port, v[2].branch()),
            ("192.0.2.3", None, Some("z9hG4bK3"))
        );
    }

    #[test]
    fn identities_and_privacy() {
        let m = parse(MSG).unwrap();
        let p = m.asserted_identities();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].display, Some("Caller, A"));
        assert_eq!(super::super::uri_user(p[0].uri), Some("+81312345678"));
        assert!(p[0].parsed_uri().unwrap().is_phone());
        assert_eq!(p[1].uri, "tel:+81312345678");
        let pr = m.privacy();
        assert!(pr.id && pr.critical && !pr.user && !pr.none);
        assert!(pr.withholds_identity());
        assert!(!Privacy::parse("none").withholds_identity());
        assert!(Privacy::parse("User; Header").withholds_identity());
        assert_eq!(
            parse(b"OPTIONS sip:x SIP/2.0\r\n\r\n").unwrap().privacy(),
            Privacy::default()
        );
    }

    #[test]
    fn redirections() {
        let m = parse(MSG).unwrap();
        let d = m.diversions();
        assert_eq!(d.len(), 2, "folded list");
        assert_eq!(d[0].param("reason"), Some("unconditional"));
        assert_eq!(d[0].param("counter"), Some("1"));
        assert_eq!(d[1].param("reason"), Some("user-busy"));
        let h = m.history_info();
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].index_path(), Some(vec![1]));
        assert_eq!(h[1].index, Some("1.1"));
        assert_eq!(h[1].cause(), Some(302));
        assert_eq!(h[2].cause(), Some(486));
        assert_eq!(h[2].index_path(), Some(vec![1, 1, 1]));
        assert_eq!(h[0].cause(), None);
    }

    #[test]
    fn priority_and_transfer() {
        let m = parse(MSG).unwrap();
        let rp = m.resource_priorities();
        assert_eq!(
            rp,
            vec![
                ResourcePriority {
                    namespace: "ets",
                    priority: "0"
                },
                ResourcePriority {
                    namespace: "wps",
                    priority: "1"
                }
            ]
        );
        let r = m.replaces().unwrap();
        assert_eq!(r.call_id, "425928@bobster.example.org");
        assert_eq!(r.to_tag.as_deref(), Some("7743"));
        assert_eq!(r.from_tag.as_deref(), Some("6472"));
        assert!(r.early_only);
        let r = m.refer_to_replaces().unwrap();
        assert_eq!(r.call_id, "12345@192.0.2.3");
        assert_eq!(r.to_tag.as_deref(), Some("12345"));
        assert_eq!(r.from_tag.as_deref(), Some("5FFE-3994"));
        assert!(!r.early_only);
        assert_eq!(
            m.refer_to().unwrap().parsed_uri().unwrap().user,
            Some("carol")
        );
        assert_eq!(m.referred_by().unwrap().uri, "sip:alice@192.0.2.1");
    }
}
