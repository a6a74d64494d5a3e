//! What the recorder needs from the parties' SDP: the meaning of each
//! payload type a leg's packets carry, the codecs it cannot decode, and
//! the recording's sample rate.

use crate::calls::tracker::{Endpoint, MediaLegs};
use crate::config::{Contract, SampleRate};
use crate::media::codec::{Codec, Format};
use crate::media::srtp::Keys;
use crate::recording::recorder::Leg;

/// Decodable payload types with their formats, and the types bound to
/// codecs callrec cannot decode, by name.
pub type LegFormats = (Vec<(u8, Format)>, Vec<(u8, String)>);

/// The payload types `leg`'s packets may carry: the receiver's SDP binds
/// dynamic types (RFC 3264 section 5.1), the sender's fills any gap. The
/// second list names the types bound to codecs callrec cannot decode.
pub fn leg_formats(legs: &MediaLegs, leg: Leg) -> LegFormats {
    let (sender, receiver) = match leg {
        Leg::Subscriber => (&legs.subscriber, &legs.remote),
        Leg::Remote => (&legs.remote, &legs.subscriber),
    };
    let mut map: Vec<(u8, Format)> = Vec::new();
    let mut unsupported: Vec<(u8, String)> = Vec::new();
    for ep in [receiver.as_ref(), sender.as_ref()].into_iter().flatten() {
        for (pt, name) in &ep.payloads {
            if map.iter().any(|(p, _)| p == pt) || unsupported.iter().any(|(p, _)| p == pt) {
                continue;
            }
            match ep.formats.iter().find(|(p, _)| p == pt) {
                Some(&(_, f)) => map.push((*pt, f)),
                None if !name.is_empty() => unsupported.push((*pt, name.clone())),
                None => {}
            }
        }
    }
    (map, unsupported)
}

/// The SDP keys of `leg`'s sender and of its receiver.
pub fn leg_keys(legs: &MediaLegs, leg: Leg) -> (Keys, Keys) {
    let (sender, receiver) = match leg {
        Leg::Subscriber => (&legs.subscriber, &legs.remote),
        Leg::Remote => (&legs.remote, &legs.subscriber),
    };
    let keys = |e: &Option<Endpoint>| e.as_ref().map(|e| e.keys.clone()).unwrap_or_default();
    (keys(sender), keys(receiver))
}

/// The first audio codec an endpoint offered that callrec decodes.
fn preferred(ep: &Endpoint) -> Option<Format> {
    ep.payloads
        .iter()
        .find_map(|(pt, _)| ep.formats.iter().find(|(p, _)| p == pt).map(|&(_, f)| f))
        .filter(|f| f.codec.is_audio())
}

/// The recording's rate: the contract's, or for "auto" 16 kHz when either
/// party's preferred codec is wideband (G.722, AMR-WB, Opus, L16/16000+).
pub fn recording_rate(contract: &Contract, legs: &MediaLegs) -> u32 {
    match contract.sample_rate {
        SampleRate::Narrow => 8000,
        SampleRate::Wide => 16000,
        SampleRate::Auto => {
            let wide = [&legs.subscriber, &legs.remote]
                .into_iter()
                .flatten()
                .filter_map(preferred)
                .any(|f| f.is_wideband());
            if wide { 16000 } else { 8000 }
        }
    }
}

/// Names the codec a leg used, for metadata: the decoded one, else the
/// one the SDP preferred.
pub fn codec_name(decoded: Option<Codec>, legs: &MediaLegs, leg: Leg) -> Option<&'static str> {
    decoded.map(Codec::name).or_else(|| {
        let (map, _) = leg_formats(legs, leg);
        map.iter()
            .map(|(_, f)| f.codec)
            .find(|c| c.is_audio())
            .map(Codec::name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::sdp;

    #[test]
    fn auto_rate_follows_the_widest_preferred_codec() {
        let ep = |body: &str| {
            let s = sdp::parse(body.as_bytes()).unwrap();
            let m = s.audio().unwrap();
            Endpoint {
                addr: "192.0.2.1:4000".parse().unwrap(),
                payloads: m
                    .formats
                    .iter()
                    .map(|&pt| (pt, m.encoding(pt).unwrap_or("").to_ascii_uppercase()))
                    .collect(),
                ptime: None,
                direction: sdp::Direction::SendRecv,
                formats: crate::media::codec::formats_from_sdp(m),
                keys: Default::default(),
            }
        };
        let g722 = ep(
            "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 9 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
        );
        let pcmu = ep(
            "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0 96\r\na=rtpmap:96 G723/8000\r\n",
        );
        let legs = MediaLegs {
            subscriber: Some(pcmu.clone()),
            remote: Some(g722),
            ..Default::default()
        };
        let mut c = crate::config::Contract {
            id: "K".into(),
            service: crate::config::Service::Mobile,
            numbers: vec![],
            guidance: 1,
            channels: crate::config::Channels::Stereo,
            sample_rate: SampleRate::Auto,
            segments: crate::config::SegmentPolicy::All,
            pause_dtmf: None,
            resume_dtmf: None,
            destination: "d".into(),
        };
        assert_eq!(recording_rate(&c, &legs), 16000);
        let narrow = MediaLegs {
            subscriber: Some(pcmu.clone()),
            remote: Some(pcmu),
            ..Default::default()
        };
        assert_eq!(recording_rate(&c, &narrow), 8000);
        c.sample_rate = SampleRate::Wide;
        assert_eq!(recording_rate(&c, &narrow), 16000);
        let (map, unsupported) = leg_formats(&narrow, Leg::Remote);
        assert_eq!(map.iter().map(|(p, _)| *p).collect::<Vec<_>>(), vec![0]);
        assert_eq!(unsupported, vec![(96, "G723".to_string())]);
    }
}
