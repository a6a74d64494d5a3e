//! Inline mode's decisions, without a kernel: the announcer asks its
//! worker to divert exactly the call's two flows (each party's own stream
//! towards the other), plays beeps the same way but never over the prompt,
//! releases on a BYE or a media move during the prompt, and says in the
//! outcome why a call could not be announced (no G.711, worker gone). The
//! `[announce]` keys of inline mode are checked by the loader.

use callrec::announce::BeepKind;
use callrec::announce::announcer::Announcer;
use callrec::announce::inline::{Cmd, InlineHandle};
use callrec::announce::outcome::{TO_REMOTE, TO_SUBSCRIBER};
use callrec::announce::rewrite::FlowKey;
use callrec::calls::tracker::{Endpoint, MediaLegs};
use callrec::time::Timestamp;
use std::path::Path;
use std::sync::mpsc::Receiver;

const SUB: &str = "192.0.2.12:40200";
const REM: &str = "198.51.100.7:30000";

fn config(extra: &str) -> Result<callrec::config::Config, String> {
    let text = format!(
        r#"[recording]
spool_dir = "/tmp/callrec-inline-test"
[announce]
mode = "inline"
dir = "{}"
{extra}
[delivery]
allowed_networks = ["192.0.2.0/24"]
[[destination]]
name = "acme"
url = "sftp://rec@192.0.2.10:22/incoming"
identity = "/nonexistent/key"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5WY6hfGbgKdwr827M61Dy9fKgVJoLX3pwmoStKx7MO"
[[contract]]
id = "K-0001"
service = "mobile"
numbers = ["0312340001"]
guidance = 2
destination = "acme"
"#,
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("guidance-audio")
            .display()
    );
    callrec::config::load_str(&text, Path::new("inline.toml")).map_err(|e| e.to_string())
}

fn announcer() -> (Announcer, Receiver<Cmd>) {
    let cfg = config("").unwrap();
    let (handle, rx) = InlineHandle::detached();
    let a = Announcer::from_config(&cfg, Path::new("/nonexistent.pcap"))
        .unwrap()
        .unwrap()
        .with_inline(handle);
    (a, rx)
}

fn endpoint(addr: &str, codec: &str) -> Endpoint {
    Endpoint {
        addr: addr.parse().unwrap(),
        payloads: vec![(0, codec.to_owned()), (101, "TELEPHONE-EVENT".into())],
        ptime: Some(20),
        direction: Default::default(),
        formats: Vec::new(),
        keys: Default::default(),
    }
}

fn legs(codec: &str) -> MediaLegs {
    MediaLegs {
        subscriber: Some(endpoint(SUB, codec)),
        remote: Some(endpoint(REM, codec)),
        ..Default::default()
    }
}

fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(1_795_221_000_000 + ms)
}

#[test]
fn prompt_diverts_both_streams_and_beeps_wait_for_its_end() {
    let (mut a, rx) = announcer();
    let played = a.start(7, "c7", t(0), 2, &legs("PCMU")).expect("played");
    assert_eq!(played.started_at, t(0));
    assert_eq!(played.ended_at, t(7625), "guidance2.wav is 7.625 s");
    let Ok(Cmd::Divert {
        call,
        flows,
        clip,
        outcome,
    }) = rx.try_recv()
    else {
        panic!("a divert request")
    };
    assert_eq!(call, 7);
    assert_eq!(clip.duration().as_millis(), 7625);
    let key = |s: &str, d: &str| FlowKey {
        src: s.parse().unwrap(),
        dst: d.parse().unwrap(),
    };
    assert_eq!(
        flows,
        vec![(key(REM, SUB), TO_SUBSCRIBER), (key(SUB, REM), TO_REMOTE)],
        "the remote party's stream carries the prompt to the subscriber and back"
    );
    let o = outcome.unwrap();
    assert_eq!(o.mode, "inline");
    assert_eq!(a.outcome(7).unwrap().mode, "inline");

    // A pause during the prompt is silent; after it, the beep is diverted too.
    assert!(!a.beep(7, "c7", t(5000), BeepKind::Pause, &legs("PCMU")));
    assert!(rx.try_recv().is_err());
    assert!(a.beep(7, "c7", t(9000), BeepKind::Pause, &legs("PCMU")));
    let Ok(Cmd::Divert { clip, outcome, .. }) = rx.try_recv() else {
        panic!("a beep")
    };
    assert_eq!(clip.duration().as_millis(), 250);
    assert!(outcome.is_none(), "beeps are not counted as the prompt");

    // The call ends: its flows are released.
    a.forget(7);
    assert!(matches!(rx.try_recv(), Ok(Cmd::Release { call: 7, .. })));
}

#[test]
fn media_move_during_the_prompt_releases_and_says_so() {
    let (mut a, rx) = announcer();
    a.start(3, "c3", t(0), 2, &legs("PCMA")).unwrap();
    let _ = rx.try_recv();
    a.media_changed(3, t(8000));
    assert!(
        rx.try_recv().is_err(),
        "after the prompt nothing is diverted"
    );
    a.media_changed(3, t(2000));
    let Ok(Cmd::Release { call: 3, why }) = rx.try_recv() else {
        panic!("released")
    };
    assert!(why.contains("re-INVITE"), "{why}");
}

#[test]
fn no_g711_or_no_worker_means_no_prompt_and_a_reason() {
    let (mut a, rx) = announcer();
    assert!(a.start(4, "c4", t(0), 2, &legs("G729")).is_none());
    assert!(rx.try_recv().is_err(), "nothing diverted");
    let o = a.outcome(4).unwrap();
    assert_eq!(o.placement(TO_SUBSCRIBER), "no G.711 codec negotiated");
    assert_eq!(o.placement(TO_REMOTE), "no G.711 codec negotiated");

    drop(rx);
    assert!(a.start(5, "c5", t(0), 2, &legs("PCMU")).is_none());
    assert_eq!(
        a.outcome(5).unwrap().placement(TO_SUBSCRIBER),
        "the inline worker is not running"
    );
}

#[test]
fn replay_in_inline_mode_plays_nothing_and_says_so() {
    let cfg = config("").unwrap();
    let mut a = Announcer::from_config(&cfg, Path::new("/nonexistent.pcap"))
        .unwrap()
        .unwrap();
    assert!(a.start(1, "c1", t(0), 2, &legs("PCMU")).is_none());
    assert_eq!(
        a.outcome(1).unwrap().placement(TO_REMOTE),
        "the inline worker is not running"
    );
}

#[test]
fn inline_keys_are_checked() {
    let cfg = config("queue = 7\nmark = 0x100\nnft_table = \"rec_1\"\nnft_setup = false").unwrap();
    let i = &cfg.announce.inline;
    assert_eq!(
        (i.queue, i.mark, i.nft_table.as_str(), i.setup),
        (7, 0x100, "rec_1", false)
    );
    assert!(cfg.announce.warning().is_none(), "inline needs no warning");
    let e = config("queue = 70000").unwrap_err();
    assert!(
        e.contains("announce.queue") && e.contains("0..65535"),
        "{e}"
    );
    let e = config("nft_table = \"a b\"").unwrap_err();
    assert!(e.contains("announce.nft_table"), "{e}");
    let e = config("mark = 0").unwrap_err();
    assert!(e.contains("announce.mark"), "{e}");
}

#[test]
fn off_and_inject_warn_that_the_network_must_play_the_notice() {
    for mode in ["off", "inject\"\ninterface = \"lo"] {
        let cfg = config_mode(&format!("mode = \"{mode}\""));
        let w = cfg.announce.warning().expect("a warning");
        assert!(w.contains("network"), "{w}");
    }
}

fn config_mode(mode_line: &str) -> callrec::config::Config {
    let text = format!(
        "[recording]\nspool_dir = \"/tmp/x\"\n[announce]\n{mode_line}\n[delivery]\nallowed_networks = [\"192.0.2.0/24\"]\n"
    );
    callrec::config::load_str(&text, Path::new("m.toml")).unwrap()
}

#[test]
fn srtp_calls_are_never_diverted_and_say_why() {
    let (mut a, rx) = announcer();
    let mut l = legs("PCMU");
    if let Some(e) = l.remote.as_mut() {
        e.keys = callrec::media::srtp::Keys::Unseen("dtls");
    }
    assert!(a.start(6, "c6", t(0), 2, &l).is_none());
    assert!(
        rx.try_recv().is_err(),
        "an encrypted call's flows are not diverted"
    );
    let why = "SRTP media: the prompt cannot be placed in an encrypted stream";
    assert_eq!(a.outcome(6).unwrap().placement(TO_SUBSCRIBER), why);
    assert_eq!(a.outcome(6).unwrap().placement(TO_REMOTE), why);
}
