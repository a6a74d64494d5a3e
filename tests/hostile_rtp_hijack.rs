//! Issue 18, finding 4: a stranger sending RTP to a recorded call's media
//! address must never reach the recording. For each latch case, a flood
//! of valid RTP carrying a 2,500 Hz tone from an address that no evidence
//! supports, starting before, with and after the party's own stream, with
//! and without NAT (the party's RTP from another port than its SDP says,
//! or from a public address while its SDP names a private one), from the
//! attacker's own SSRC and from the party's: the recording holds only the
//! parties' own tones, and the dropped packets are counted per call in
//! the metadata.

#[path = "support/hostile.rs"]
mod hostile;
use callrec::media::rtp::build_rtp;
use callrec::time::Timestamp;
use callrec_testkit::scenario::{CallSpec, Datagram};
use hostile::{T0, config, replay_datagrams, tone_blocks, tone_ms};
use std::net::SocketAddr;

const TALK_MS: u32 = 6_000;
const ATTACK_HZ: f64 = 2_500.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nat {
    /// RTP from the SDP address.
    None,
    /// RTP from the SDP's IP, another port (a NAT that keeps the address).
    Port,
    /// SDP names a private address; RTP comes from a public one, which
    /// only the far end's replies (symmetric RTP) point at; signalling
    /// comes through a proxy elsewhere.
    Private,
}

#[derive(Clone, Copy, Debug)]
enum Start {
    Before,
    With,
    After,
}

struct Case {
    nat: Nat,
    start: Start,
    party_ssrc: bool,
}

/// The call, and where the subscriber's RTP really comes from.
fn call(nat: Nat) -> (CallSpec, SocketAddr) {
    let mut c = CallSpec::simple(
        1,
        "0312340001",
        "0077260312349999",
        Timestamp::from_secs_micros(T0, 0),
        TALK_MS,
    );
    c.ring_ms = 1_000;
    // The subscriber starts talking half a second after the answer, so a
    // flood can get there first.
    c.a_voice.starts_ms = 500;
    let real = match nat {
        Nat::None => c.a_rtp,
        Nat::Port => SocketAddr::new(c.a_rtp.ip(), c.a_rtp.port() + 30_000),
        Nat::Private => {
            let public = SocketAddr::new(c.a_rtp.ip(), 40_002);
            c.a_rtp = "10.0.0.5:4000".parse().unwrap();
            c.a_sip = "192.0.2.200:5060".parse().unwrap();
            public
        }
    };
    (c, real)
}

/// The capture of `case`, and how many flood packets went to each party's
/// address (subscriber leg, remote leg).
fn capture(case: &Case) -> (CallSpec, Vec<Datagram>, u64, u64) {
    let (c, real) = call(case.nat);
    let mut all: Vec<Datagram> = c
        .datagrams()
        .into_iter()
        .map(|mut d| {
            // Behind NAT the party sends from, and is sent to, `real`.
            if d.src == c.a_rtp {
                d.src = real;
            }
            if d.dst == c.a_rtp {
                d.dst = real;
            }
            d
        })
        .collect();
    let party = all.iter().find(|d| d.src == real).unwrap().payload.clone();
    let (pseq, pts, pssrc) = (
        u16::from_be_bytes([party[2], party[3]]),
        u32::from_be_bytes(party[4..8].try_into().unwrap()),
        u32::from_be_bytes(party[8..12].try_into().unwrap()),
    );
    let attacker: SocketAddr = "203.0.113.66:40000".parse().unwrap();
    let answer = c.answer_at();
    let from_ms = match case.start {
        Start::Before => 0,
        Start::With => 500,
        Start::After => 2_000,
    };
    let (mut to_sub, mut to_remote) = (0, 0);
    let mut k = 0u32;
    let mut t_ms = from_ms;
    while t_ms + 20 <= TALK_MS {
        let at = answer.add_micros(t_ms as i64 * 1000);
        let samples: Vec<u8> = (0..160)
            .map(|i| {
                let n = (t_ms * 8 + i) as f32;
                let s =
                    12_000.0 * (2.0 * std::f32::consts::PI * ATTACK_HZ as f32 * n / 8000.0).sin();
                callrec::media::codec::encode_ulaw(s as i16)
            })
            .collect();
        let (ssrc, seq, ts) = if case.party_ssrc {
            // The party's own stream identity, numbered as the party's
            // packets of the same moment would be.
            let off = t_ms.saturating_sub(500) / 20;
            (
                pssrc,
                pseq.wrapping_add(off as u16),
                pts.wrapping_add(off * 160),
            )
        } else {
            (0x0bad_cafe, k as u16, k * 160)
        };
        let rtp = build_rtp(0, seq, ts, ssrc, k == 0, &samples);
        // Towards the remote party's address: the subscriber's channel.
        all.push(Datagram {
            ts: at.add_micros(7_000),
            src: attacker,
            dst: c.b_rtp,
            payload: rtp.clone(),
        });
        to_sub += 1;
        // Towards the subscriber's SDP address: the remote channel.
        all.push(Datagram {
            ts: at.add_micros(9_000),
            src: attacker,
            dst: c.a_rtp,
            payload: rtp,
        });
        to_remote += 1;
        k += 1;
        t_ms += 20;
    }
    all.sort_by_key(|d| d.ts);
    (c, all, to_sub, to_remote)
}

fn check(case: Case) {
    let what = format!(
        "{:?} NAT, flood {:?} the party's stream, {} SSRC",
        case.nat,
        case.start,
        if case.party_ssrc {
            "the party's"
        } else {
            "its own"
        }
    );
    let dir = tempfile::tempdir().unwrap();
    let (c, all, to_sub, to_remote) = capture(&case);
    let run = replay_datagrams(dir.path(), "hijack", config(dir.path(), ""), &all);
    let r = run
        .recording(&c.call_id)
        .unwrap_or_else(|| panic!("{what}: not recorded"));
    for (ch, own) in [(0usize, 440.0), (1, 1000.0)] {
        let foreign = tone_blocks(&r.ch[ch], ATTACK_HZ);
        assert_eq!(
            foreign, 0,
            "{what}: channel {ch} holds {foreign} blocks of the attacker's tone"
        );
        // The party's own voice is there: all of it, but for the start of
        // a stream only the far end's replies vouch for (Nat::Private).
        let want = TALK_MS as i64 - if ch == 0 { 500 } else { 0 } - 100;
        let slack = if case.nat == Nat::Private { 100 } else { 0 };
        let got = tone_ms(&r.ch[ch], own);
        assert!(
            got >= want - slack,
            "{what}: channel {ch} holds {got} ms of its party's {own} Hz, want {want}"
        );
    }
    let q = &r.meta["quality"];
    assert_eq!(
        q["subscriber"]["foreign"].as_u64(),
        Some(to_sub),
        "{what}: {q}"
    );
    // Packets for the subscriber's SDP address: from a stranger, all of
    // them (behind NAT no party sends there).
    assert_eq!(
        q["remote"]["foreign"].as_u64(),
        Some(to_remote),
        "{what}: {q}"
    );
    assert_eq!(run.report.stats.rtp_foreign, to_sub + to_remote, "{what}");
}

#[test]
fn a_flood_before_the_party_never_takes_the_latch() {
    for nat in [Nat::None, Nat::Port, Nat::Private] {
        for party_ssrc in [false, true] {
            check(Case {
                nat,
                start: Start::Before,
                party_ssrc,
            });
        }
    }
}

#[test]
fn a_flood_with_or_after_the_party_never_reaches_the_recording() {
    for nat in [Nat::None, Nat::Port, Nat::Private] {
        for start in [Start::With, Start::After] {
            for party_ssrc in [false, true] {
                check(Case {
                    nat,
                    start,
                    party_ssrc,
                });
            }
        }
    }
}
