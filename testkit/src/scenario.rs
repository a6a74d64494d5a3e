//! Synthetic calls: SIP signalling and G.711 RTP with known content, for
//! the tests, the bundled demo and the benchmarks.
//!
//! A [`CallSpec`] describes one call as a person would (who dials what,
//! when it is answered, how long it lasts, which tone each party "says",
//! which digits are keyed); [`CallSpec::datagrams`] turns it into the UDP
//! datagrams a mirror port would see. Framing them into a capture is the
//! job of [`crate::pcapgen`]. Everything is deterministic.

use callrec::media::rtp::build_rtp;
use callrec::time::Timestamp;
use std::net::SocketAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Law {
    Pcmu,
    Pcma,
}

impl Law {
    pub fn pt(self) -> u8 {
        match self {
            Law::Pcmu => 0,
            Law::Pcma => 8,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Law::Pcmu => "PCMU",
            Law::Pcma => "PCMA",
        }
    }
    pub fn encode(self, s: i16) -> u8 {
        match self {
            Law::Pcmu => callrec::media::codec::encode_ulaw(s),
            Law::Pcma => callrec::media::codec::encode_alaw(s),
        }
    }
}

/// One datagram on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub ts: Timestamp,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub payload: Vec<u8>,
}

/// What one party sends as audio.
#[derive(Clone, Debug)]
pub struct Voice {
    /// Sine frequency in Hz; 0 sends digital silence.
    pub tone_hz: f32,
    /// Peak amplitude (0..32767).
    pub amplitude: f32,
    /// Milliseconds after the answer when this party starts sending.
    pub starts_ms: u32,
    /// Intervals (ms after answer) with no packets at all (a party that
    /// goes silent with VAD, or loss on the line).
    pub gaps_ms: Vec<(u32, u32)>,
    /// RFC 4733 digits keyed at (ms after answer, digit).
    pub digits: Vec<(u32, char)>,
    /// From (ms after answer) on, the tone is this frequency instead (a
    /// different person after a transfer, hold music ...).
    pub tone_changes: Vec<(u32, f32)>,
    /// At (ms after answer) the stream starts afresh: new SSRC, sequence
    /// and timestamp base, as when another endpoint takes over the leg.
    pub new_stream_at: Vec<u32>,
}

impl Voice {
    pub fn tone(hz: f32) -> Voice {
        Voice {
            tone_hz: hz,
            amplitude: 8000.0,
            starts_ms: 0,
            gaps_ms: Vec::new(),
            digits: Vec::new(),
            tone_changes: Vec::new(),
            new_stream_at: Vec::new(),
        }
    }
}

/// An in-dialog event after the answer, at `at_ms` after it. Requests are
/// answered 20 ms later and INVITEs acknowledged 40 ms later.
#[derive(Clone, Debug, PartialEq)]
pub enum MidCall {
    /// The callee's side (B) sends a REFER to `refer_to`; A accepts it
    /// with 202 (a transfer carried out inside this dialog, as a B2BUA
    /// does towards the subscriber).
    ReferFromB { at_ms: u32, refer_to: String },
    /// B sends a re-INVITE with `identity` as P-Asserted-Identity (None:
    /// no such header) and, when `media` is set, a new SDP address: from
    /// then on B's RTP is sent from and to it. A answers 200 with its SDP.
    ReinviteFromB {
        at_ms: u32,
        identity: Option<String>,
        media: Option<SocketAddr>,
    },
    /// A puts the call on hold (re-INVITE with a=sendonly; B answers
    /// a=recvonly and sends no RTP) for `for_ms`, then takes it off hold
    /// with a=sendrecv. What A sends meanwhile is A's voice (set a tone
    /// change for hold music).
    HoldByA { at_ms: u32, for_ms: u32 },
    /// A sends a key in a SIP INFO (`application/dtmf-relay`, as SIP
    /// phones without RFC 4733 do); B answers 200.
    KeyInfoFromA { at_ms: u32, key: char },
}

#[derive(Clone, Debug)]
pub struct CallSpec {
    pub call_id: String,
    /// User part of the From URI (the calling line).
    pub from_user: String,
    /// User part of the Request-URI and To (what was dialled).
    pub to_user: String,
    /// Extra header lines for the INVITE, e.g. "Privacy: id".
    pub invite_headers: Vec<String>,
    /// Extra header lines for the 200 answering the INVITE, e.g. the
    /// callee's "P-Asserted-Identity: <sip:...>".
    pub answer_headers: Vec<String>,
    /// Signalling addresses of the caller's side (A) and the callee's side (B).
    pub a_sip: SocketAddr,
    pub b_sip: SocketAddr,
    /// Where each side receives audio (its SDP address).
    pub a_rtp: SocketAddr,
    pub b_rtp: SocketAddr,
    pub law: Law,
    pub ptime_ms: u32,
    pub invite_at: Timestamp,
    /// From INVITE to the final answer.
    pub ring_ms: u32,
    /// None: not answered (the caller cancels after `ring_ms`).
    pub talk_ms: Option<u32>,
    /// Who hangs up: true = the caller (A).
    pub bye_from_a: bool,
    pub a_voice: Voice,
    pub b_voice: Voice,
    /// In-dialog events after the answer, in time order.
    pub mid_call: Vec<MidCall>,
}

impl CallSpec {
    /// A plain outbound call from `from` dialling `to`, answered after 2 s,
    /// lasting `talk_ms`, A saying 440 Hz and B 1000 Hz.
    pub fn simple(n: u32, from: &str, to: &str, invite_at: Timestamp, talk_ms: u32) -> CallSpec {
        let a_ip = [192, 0, 2, 1 + (n % 200) as u8];
        let b_ip = [198, 51, 100, 1 + (n % 200) as u8];
        let port = 10_000 + 2 * (n % 25_000) as u16;
        CallSpec {
            call_id: format!("call-{n}@callrec.test"),
            from_user: from.into(),
            to_user: to.into(),
            invite_headers: Vec::new(),
            answer_headers: Vec::new(),
            a_sip: (a_ip, 5060).into(),
            b_sip: ([203, 0, 113, 1], 5060).into(),
            a_rtp: (a_ip, port).into(),
            b_rtp: (b_ip, port).into(),
            law: Law::Pcmu,
            ptime_ms: 20,
            invite_at,
            ring_ms: 2000,
            talk_ms: Some(talk_ms),
            bye_from_a: true,
            a_voice: Voice::tone(440.0),
            b_voice: Voice::tone(1000.0),
            mid_call: Vec::new(),
        }
    }

    pub fn answer_at(&self) -> Timestamp {
        self.invite_at.add_micros(self.ring_ms as i64 * 1000)
    }
    pub fn bye_at(&self) -> Option<Timestamp> {
        self.talk_ms
            .map(|t| self.answer_at().add_micros(t as i64 * 1000))
    }

    fn sdp(&self, rtp: SocketAddr, sess: u32) -> String {
        self.sdp_with(rtp, sess, 1, "sendrecv")
    }

    /// SDP with a session version and a direction attribute.
    fn sdp_with(&self, rtp: SocketAddr, sess: u32, version: u32, direction: &str) -> String {
        let ip = rtp.ip();
        let fam = if ip.is_ipv4() { "IP4" } else { "IP6" };
        format!(
            "v=0\r\no=- {sess} {version} IN {fam} {ip}\r\ns=-\r\nc=IN {fam} {ip}\r\nt=0 0\r\nm=audio {} RTP/AVP {} 101\r\na=rtpmap:{} {}/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:{}\r\na={direction}\r\n",
            rtp.port(),
            self.law.pt(),
            self.law.pt(),
            self.law.name(),
            self.ptime_ms
        )
    }

    fn sip(
        &self,
        start: &str,
        cseq: &str,
        to_tag: bool,
        via_branch: &str,
        extra: &[String],
        body: Option<&str>,
    ) -> Vec<u8> {
        self.sip_typed(
            start,
            cseq,
            to_tag,
            via_branch,
            extra,
            body.map(|b| ("application/sdp", b)),
        )
    }

    /// [`CallSpec::sip`] with a body of any content type.
    fn sip_typed(
        &self,
        start: &str,
        cseq: &str,
        to_tag: bool,
        via_branch: &str,
        extra: &[String],
        body: Option<(&str, &str)>,
    ) -> Vec<u8> {
        let host = self.b_sip.ip();
        let mut m = format!(
            "{start}\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK{via_branch}\r\nMax-Forwards: 70\r\nFrom: <sip:{}@{}>;tag=a-{}\r\nTo: <sip:{}@{host}>{}\r\nCall-ID: {}\r\nCSeq: {cseq}\r\nContact: <sip:{}@{}>\r\n",
            self.a_sip,
            self.from_user,
            self.a_sip.ip(),
            short(&self.call_id),
            self.to_user,
            if to_tag {
                format!(";tag=b-{}", short(&self.call_id))
            } else {
                String::new()
            },
            self.call_id,
            self.from_user,
            self.a_sip,
        );
        for h in extra {
            m.push_str(h);
            m.push_str("\r\n");
        }
        match body {
            Some((ct, b)) => m.push_str(&format!(
                "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => m.push_str("Content-Length: 0\r\n\r\n"),
        }
        m.into_bytes()
    }

    /// Every datagram of the call, in time order.
    pub fn datagrams(&self) -> Vec<Datagram> {
        let mut out = Vec::new();
        let ruri = format!("INVITE sip:{}@{} SIP/2.0", self.to_user, self.b_sip.ip());
        let offer = self.sdp(self.a_rtp, 1);
        let answer = self.sdp(self.b_rtp, 2);
        let t0 = self.invite_at;
        out.push(self.a2b(
            t0,
            self.sip(
                &ruri,
                "1 INVITE",
                false,
                "inv",
                &self.invite_headers,
                Some(&offer),
            ),
        ));
        out.push(self.b2a(
            t0.add_micros(30_000),
            self.sip("SIP/2.0 100 Trying", "1 INVITE", false, "inv", &[], None),
        ));
        out.push(self.b2a(
            t0.add_micros(200_000),
            self.sip("SIP/2.0 180 Ringing", "1 INVITE", true, "inv", &[], None),
        ));
        let ans = self.answer_at();
        let Some(talk) = self.talk_ms else {
            let cancel = format!("CANCEL sip:{}@{} SIP/2.0", self.to_user, self.b_sip.ip());
            out.push(self.a2b(ans, self.sip(&cancel, "1 CANCEL", false, "inv", &[], None)));
            out.push(self.b2a(
                ans.add_micros(20_000),
                self.sip("SIP/2.0 200 OK", "1 CANCEL", false, "inv", &[], None),
            ));
            out.push(self.b2a(
                ans.add_micros(25_000),
                self.sip(
                    "SIP/2.0 487 Request Terminated",
                    "1 INVITE",
                    true,
                    "inv",
                    &[],
                    None,
                ),
            ));
            out.push(self.a2b(
                ans.add_micros(40_000),
                self.sip(
                    &format!("ACK sip:{}@{} SIP/2.0", self.to_user, self.b_sip.ip()),
                    "1 ACK",
                    true,
                    "inv",
                    &[],
                    None,
                ),
            ));
            return out;
        };
        out.push(self.b2a(
            ans,
            self.sip(
                "SIP/2.0 200 OK",
                "1 INVITE",
                true,
                "inv",
                &self.answer_headers,
                Some(&answer),
            ),
        ));
        out.push(self.a2b(
            ans.add_micros(20_000),
            self.sip(
                &format!("ACK sip:{}@{} SIP/2.0", self.to_user, self.b_sip.ip()),
                "1 ACK",
                true,
                "ack",
                &[],
                None,
            ),
        ));
        let seed = short(&self.call_id);
        rtp_stream(
            &mut out,
            &self.a_voice,
            self.law,
            self.ptime_ms,
            ans,
            talk,
            self.a_rtp,
            self.b_rtp,
            seed ^ 0xa,
        );
        rtp_stream(
            &mut out,
            &self.b_voice,
            self.law,
            self.ptime_ms,
            ans,
            talk,
            self.b_rtp,
            self.a_rtp,
            seed ^ 0xb,
        );
        self.mid_call_datagrams(&mut out, ans);
        let bye_at = ans.add_micros(talk as i64 * 1000);
        let bye = format!("BYE sip:{}@{} SIP/2.0", self.to_user, self.b_sip.ip());
        if self.bye_from_a {
            out.push(self.a2b(bye_at, self.sip(&bye, "2 BYE", true, "bye", &[], None)));
            out.push(self.b2a(
                bye_at.add_micros(20_000),
                self.sip("SIP/2.0 200 OK", "2 BYE", true, "bye", &[], None),
            ));
        } else {
            // A BYE from B carries B's tag in From: swap the header roles.
            let m = self.sip(
                &format!("BYE sip:{}@{} SIP/2.0", self.from_user, self.a_sip.ip()),
                "1 BYE",
                true,
                "byeb",
                &[],
                None,
            );
            out.push(self.b2a(bye_at, swap_from_to(&m)));
            let ok = self.sip("SIP/2.0 200 OK", "1 BYE", true, "byeb", &[], None);
            out.push(self.a2b(bye_at.add_micros(20_000), swap_from_to(&ok)));
        }
        out.sort_by_key(|d| d.ts);
        out
    }
}

impl CallSpec {
    /// A SIP datagram from A to B.
    fn a2b(&self, ts: Timestamp, payload: Vec<u8>) -> Datagram {
        Datagram {
            ts,
            src: self.a_sip,
            dst: self.b_sip,
            payload,
        }
    }

    /// A SIP datagram from B to A.
    fn b2a(&self, ts: Timestamp, payload: Vec<u8>) -> Datagram {
        Datagram {
            ts,
            src: self.b_sip,
            dst: self.a_sip,
            payload,
        }
    }

    /// The in-dialog requests of `mid_call`, and their effect on the RTP
    /// already in `out`: a media move readdresses B's packets, a hold
    /// removes B's (recvonly sends nothing).
    fn mid_call_datagrams(&self, out: &mut Vec<Datagram>, ans: Timestamp) {
        let to_a = |method: &str| {
            format!(
                "{method} sip:{}@{} SIP/2.0",
                self.from_user,
                self.a_sip.ip()
            )
        };
        let to_b =
            |method: &str| format!("{method} sip:{}@{} SIP/2.0", self.to_user, self.b_sip.ip());
        let mut b_media = self.b_rtp;
        for (k, ev) in self.mid_call.iter().enumerate() {
            let cseq = 10 + k as u32;
            let branch = format!("mid{k}");
            // SDP versions only need to grow; two per event is enough.
            let version = 2 + 2 * k as u32;
            let at_ms = match ev {
                MidCall::ReferFromB { at_ms, .. }
                | MidCall::ReinviteFromB { at_ms, .. }
                | MidCall::HoldByA { at_ms, .. }
                | MidCall::KeyInfoFromA { at_ms, .. } => *at_ms,
            };
            let t = ans.add_micros(at_ms as i64 * 1000);
            let later = |ms: i64| t.add_micros(ms * 1000);
            // Requests from B carry B's tag in From; so do A's answers to them.
            let from_b = |start: &str, cs: &str, extra: &[String], body: Option<&str>| {
                swap_from_to(&self.sip(start, cs, true, &branch, extra, body))
            };
            match ev {
                MidCall::ReferFromB { refer_to, .. } => {
                    let cs = format!("{cseq} REFER");
                    let hdrs = [
                        format!("Refer-To: <{refer_to}>"),
                        format!("Referred-By: <sip:{}@{}>", self.to_user, self.b_sip.ip()),
                    ];
                    out.push(self.b2a(t, from_b(&to_a("REFER"), &cs, &hdrs, None)));
                    out.push(self.a2b(later(20), from_b("SIP/2.0 202 Accepted", &cs, &[], None)));
                }
                MidCall::ReinviteFromB {
                    identity, media, ..
                } => {
                    let new = media.unwrap_or(b_media);
                    let cs = format!("{cseq} INVITE");
                    let hdrs: Vec<String> = identity
                        .iter()
                        .map(|i| format!("P-Asserted-Identity: <{i}>"))
                        .collect();
                    let offer = self.sdp_with(new, 2, version, "sendrecv");
                    let answer = self.sdp_with(self.a_rtp, 1, version + 1, "sendrecv");
                    out.push(self.b2a(t, from_b(&to_a("INVITE"), &cs, &hdrs, Some(&offer))));
                    out.push(
                        self.a2b(later(20), from_b("SIP/2.0 200 OK", &cs, &[], Some(&answer))),
                    );
                    let ack = format!("{cseq} ACK");
                    out.push(self.b2a(later(40), from_b(&to_a("ACK"), &ack, &[], None)));
                    if new != b_media {
                        // Both ends switch once the offer is out: B sends
                        // from, and A sends to, the new address.
                        for d in out.iter_mut().filter(|d| d.ts > t) {
                            if d.src == b_media {
                                d.src = new;
                            }
                            if d.dst == b_media {
                                d.dst = new;
                            }
                        }
                        b_media = new;
                    }
                }
                MidCall::KeyInfoFromA { key, .. } => {
                    let cs = format!("{cseq} INFO");
                    let body = format!("Signal={key}\r\nDuration=160\r\n");
                    let info = self.sip_typed(
                        &to_b("INFO"),
                        &cs,
                        true,
                        &branch,
                        &[],
                        Some(("application/dtmf-relay", &body)),
                    );
                    out.push(self.a2b(t, info));
                    out.push(self.b2a(
                        later(20),
                        self.sip("SIP/2.0 200 OK", &cs, true, &branch, &[], None),
                    ));
                }
                MidCall::HoldByA { for_ms, .. } => {
                    let resume = t.add_micros(*for_ms as i64 * 1000);
                    for (n, (at, a_dir, b_dir)) in [
                        (t, "sendonly", "recvonly"),
                        (resume, "sendrecv", "sendrecv"),
                    ]
                    .into_iter()
                    .enumerate()
                    {
                        let cs = format!("{} INVITE", cseq * 10 + n as u32);
                        let br = format!("{branch}h{n}");
                        let v = version + n as u32;
                        let offer = self.sdp_with(self.a_rtp, 1, v, a_dir);
                        let answer = self.sdp_with(b_media, 2, v, b_dir);
                        out.push(self.a2b(
                            at,
                            self.sip(&to_b("INVITE"), &cs, true, &br, &[], Some(&offer)),
                        ));
                        out.push(self.b2a(
                            at.add_micros(20_000),
                            self.sip("SIP/2.0 200 OK", &cs, true, &br, &[], Some(&answer)),
                        ));
                        let ack = format!("{} ACK", cseq * 10 + n as u32);
                        out.push(self.a2b(
                            at.add_micros(40_000),
                            self.sip(&to_b("ACK"), &ack, true, &br, &[], None),
                        ));
                    }
                    let held = |d: &Datagram| d.src == b_media && d.ts >= t && d.ts < resume;
                    let skipped = out.iter().filter(|d| held(d)).count() as u16;
                    out.retain(|d| !held(d));
                    // A sender that stops sending does not use up sequence
                    // numbers: B resumes right after its last one.
                    for d in out
                        .iter_mut()
                        .filter(|d| d.src == b_media && d.ts >= resume)
                    {
                        if d.payload.len() >= 4 {
                            let seq = u16::from_be_bytes([d.payload[2], d.payload[3]]);
                            d.payload[2..4]
                                .copy_from_slice(&seq.wrapping_sub(skipped).to_be_bytes());
                        }
                    }
                }
            }
        }
    }
}

fn short(call_id: &str) -> u32 {
    call_id
        .bytes()
        .fold(2166136261u32, |h, b| (h ^ b as u32).wrapping_mul(16777619))
}

fn swap_from_to(m: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(m);
    let mut from = None;
    let mut to = None;
    for l in s.split("\r\n") {
        if let Some(v) = l.strip_prefix("From: ") {
            from = Some(v.to_owned());
        }
        if let Some(v) = l.strip_prefix("To: ") {
            to = Some(v.to_owned());
        }
    }
    let (Some(f), Some(t)) = (from, to) else {
        return m.to_vec();
    };
    s.split("\r\n")
        .map(|l| {
            if l.starts_with("From: ") {
                format!("From: {t}")
            } else if l.starts_with("To: ") {
                format!("To: {f}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        .into_bytes()
}

#[allow(clippy::too_many_arguments)]
fn rtp_stream(
    out: &mut Vec<Datagram>,
    v: &Voice,
    law: Law,
    ptime_ms: u32,
    answer: Timestamp,
    talk_ms: u32,
    src: SocketAddr,
    dst: SocketAddr,
    seed: u32,
) {
    let spp = 8 * ptime_ms; // samples per packet at 8 kHz
    let mut ssrc = seed.wrapping_mul(2654435761);
    let mut seq = (seed & 0x7fff) as u16;
    let mut ts0 = seed.wrapping_mul(40503);
    let mut t_ms = v.starts_ms;
    let mut digit_iter = v.digits.iter().peekable();
    let mut first = true;
    let mut streams = 0u32;
    while t_ms + ptime_ms <= talk_ms {
        let at = answer.add_micros(t_ms as i64 * 1000);
        // Another endpoint takes over: its own SSRC, sequence and clock.
        let restarts = v.new_stream_at.iter().filter(|&&r| r <= t_ms).count() as u32;
        if restarts > streams {
            streams = restarts;
            let s2 = seed ^ streams.wrapping_mul(0x9e37_79b9);
            ssrc = s2.wrapping_mul(2654435761);
            seq = (s2 & 0x7fff) as u16 ^ 0x4000;
            ts0 = s2.wrapping_mul(40503);
            first = true;
        }
        let tone_hz = v
            .tone_changes
            .iter()
            .filter(|&&(from, _)| from <= t_ms)
            .max_by_key(|&&(from, _)| from)
            .map_or(v.tone_hz, |&(_, hz)| hz);
        let rtp_ts = ts0.wrapping_add(t_ms * 8);
        let in_gap = v.gaps_ms.iter().any(|&(a, b)| t_ms >= a && t_ms < b);
        if let Some(&&(d_ms, digit)) = digit_iter.peek()
            && t_ms >= d_ms
        {
            // A digit: 100 ms of events then three end packets, all with
            // the event's start timestamp (RFC 4733 2.5.1).
            digit_iter.next();
            let code = dtmf_code(digit);
            let ev_ts = rtp_ts;
            let steps = 100 / ptime_ms.max(1);
            for i in 0..steps + 3 {
                let end = i >= steps;
                let dur = ((i.min(steps) + 1) * spp).min(u16::MAX as u32) as u16;
                let payload = [
                    code,
                    if end { 0x80 | 10 } else { 10 },
                    (dur >> 8) as u8,
                    dur as u8,
                ];
                let t = answer.add_micros(
                    (t_ms + i.min(steps) * ptime_ms) as i64 * 1000
                        + if end { (i - steps) as i64 * 1000 } else { 0 },
                );
                out.push(Datagram {
                    ts: t,
                    src,
                    dst,
                    payload: build_rtp(101, seq, ev_ts, ssrc, i == 0, &payload),
                });
                seq = seq.wrapping_add(1);
            }
            t_ms += steps * ptime_ms;
            continue;
        }
        if !in_gap {
            let mut payload = Vec::with_capacity(spp as usize);
            for i in 0..spp {
                let n = (t_ms * 8 + i) as f32;
                let s = if tone_hz > 0.0 {
                    (v.amplitude * (2.0 * std::f32::consts::PI * tone_hz * n / 8000.0).sin()) as i16
                } else {
                    0
                };
                payload.push(law.encode(s));
            }
            out.push(Datagram {
                ts: at,
                src,
                dst,
                payload: build_rtp(law.pt(), seq, rtp_ts, ssrc, first, &payload),
            });
            first = false;
        }
        seq = seq.wrapping_add(1);
        t_ms += ptime_ms;
    }
}

fn dtmf_code(d: char) -> u8 {
    match d {
        '0'..='9' => d as u8 - b'0',
        '*' => 10,
        '#' => 11,
        'A'..='D' => 12 + (d as u8 - b'A'),
        _ => 0,
    }
}

/// The bundled demo (`examples/make_capture.rs --demo`, `scripts/demo.sh`)
/// against `conf/callrec.toml`: six calls from 2026-11-21T09:30:00+09:00,
/// three of them recorded.
pub fn demo_calls() -> Vec<CallSpec> {
    const T0: i64 = 1_795_221_000;
    let t = |s: i64| Timestamp::from_secs_micros(T0 + s, 0);
    // Recorded outbound (mobile contract K-0001, stereo): the subscriber
    // keys *1 at 12 s (pause) and *2 at 16 s (resume), after the prompt.
    let mut out = CallSpec::simple(1, "0312340001", "0077260312349999", t(0), 24_000);
    out.a_voice.digits = vec![(12_000, '*'), (12_200, '1'), (16_000, '*'), (16_200, '2')];
    // Recorded inbound to the fixed contract K-0002 (mono); the callee hangs up.
    let mut inbound = CallSpec::simple(2, "0398765432", "0612340002", t(1), 15_000);
    inbound.bye_from_a = false;
    inbound.b_voice = Voice::tone(700.0);
    // Outbound without the prefix: not recorded.
    let noprefix = CallSpec::simple(3, "0312340001", "0312349999", t(2), 5_000);
    // Inbound, cancelled while ringing: not answered.
    let mut cancelled = CallSpec::simple(4, "0398765432", "05011110001", t(3), 0);
    cancelled.talk_ms = None;
    cancelled.ring_ms = 6_000;
    // Inbound from a caller who withheld the number: recorded as "anonymous".
    let mut withheld = CallSpec::simple(5, "anonymous", "05011110001", t(4), 14_000);
    withheld.invite_headers = vec![
        "P-Asserted-Identity: <tel:+81398760000>".into(),
        "Privacy: id".into(),
    ];
    // A prefixed call to an emergency number: never recorded.
    let emergency = CallSpec::simple(6, "0312340001", "007726110", t(5), 3_000);
    vec![out, inbound, noprefix, cancelled, withheld, emergency]
}

/// Merges several calls' datagrams into one time-ordered list.
pub fn merge(calls: &[CallSpec]) -> Vec<Datagram> {
    let mut all: Vec<Datagram> = calls.iter().flat_map(|c| c.datagrams()).collect();
    all.sort_by_key(|d| d.ts);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_call_has_signalling_and_both_legs() {
        let c = CallSpec::simple(
            1,
            "0312340001",
            "0077260312349999",
            Timestamp::from_secs_micros(1_795_221_000, 0),
            1000,
        );
        let d = c.datagrams();
        let sip: Vec<_> = d
            .iter()
            .filter(|d| d.src.port() == 5060 || d.dst.port() == 5060)
            .collect();
        assert_eq!(sip.len(), 7); // INVITE 100 180 200 ACK BYE 200
        let a = d.iter().filter(|d| d.src == c.a_rtp).count();
        let b = d.iter().filter(|d| d.src == c.b_rtp).count();
        assert_eq!((a, b), (50, 50));
        assert!(d.windows(2).all(|w| w[0].ts <= w[1].ts));
    }

    #[test]
    fn mid_call_events_shape_signalling_and_media() {
        let mut c = CallSpec::simple(
            2,
            "0312340001",
            "0077260312349999",
            Timestamp::from_secs_micros(1_795_221_000, 0),
            3000,
        );
        let moved: SocketAddr = "198.51.100.99:40000".parse().unwrap();
        c.mid_call = vec![
            MidCall::ReferFromB {
                at_ms: 500,
                refer_to: "sip:x@203.0.113.1".into(),
            },
            MidCall::ReinviteFromB {
                at_ms: 1000,
                identity: None,
                media: Some(moved),
            },
            MidCall::HoldByA {
                at_ms: 2000,
                for_ms: 400,
            },
        ];
        c.b_voice.new_stream_at = vec![500];
        let d = c.datagrams();
        let text = |d: &Datagram| String::from_utf8_lossy(&d.payload).into_owned();
        let starts: Vec<String> = d
            .iter()
            .filter(|d| d.src.port() == 5060)
            .map(|d| text(d).lines().next().unwrap().to_owned())
            .collect();
        // INVITE 100 180 200 ACK, REFER 202, re-INVITE 200 ACK, two holds
        // of 3 each, BYE 200.
        assert_eq!(starts.len(), 5 + 2 + 3 + 6 + 2, "{starts:?}");
        // The REFER comes from B with B's tag in From.
        let refer = d.iter().find(|d| text(d).starts_with("REFER")).unwrap();
        assert_eq!(refer.src, c.b_sip);
        assert!(text(refer).contains("From: <sip:0077260312349999@"));
        // B's media moved after 1 s, both directions; silent on hold.
        let b_rtp: Vec<&Datagram> = d
            .iter()
            .filter(|x| x.src == c.b_rtp || x.src == moved)
            .collect();
        assert!(
            b_rtp
                .iter()
                .all(|x| (x.src == moved) == (x.ts > c.answer_at().add_micros(1_000_000)))
        );
        assert!(d.iter().filter(|x| x.dst == moved).count() > 50);
        assert_eq!(b_rtp.len(), 150 - 20);
        // One new SSRC at 500 ms; sequence numbers continue across the hold.
        let ssrc = |x: &Datagram| u32::from_be_bytes(x.payload[8..12].try_into().unwrap());
        let seq = |x: &Datagram| u16::from_be_bytes([x.payload[2], x.payload[3]]);
        let after: Vec<&&Datagram> = b_rtp.iter().skip(25).collect();
        assert_ne!(ssrc(b_rtp[0]), ssrc(after[0]));
        assert!(after.iter().all(|x| ssrc(x) == ssrc(after[0])));
        assert!(
            after
                .windows(2)
                .all(|w| seq(w[1]) == seq(w[0]).wrapping_add(1))
        );
    }
}
