use super::*;
use crate::calls::tracker::snapshot::{DialogSnapshot, VerdictSnap};
use std::os::unix::fs::PermissionsExt;

fn record() -> CallRecord {
    CallRecord {
        call_id: "c1".into(),
        short_id: "abc123".into(),
        direction: Some("outbound".into()),
        contract: Some("K-1".into()),
        decision: "record".into(),
        invite_at: "2026-11-21T09:30:00.000+09:00".into(),
        segments: 1,
        ..CallRecord::default()
    }
}

fn state() -> CallState {
    CallState {
        saved_at_us: 1_795_221_000_000_000,
        dialog: DialogSnapshot {
            call_id: "c1".into(),
            history_call_id: "c1".into(),
            subscriber_is_b: false,
            short_id: "abc123".into(),
            verdict: VerdictSnap {
                record: true,
                reason: None,
                direction: Some("outbound".into()),
                contract: Some("K-1".into()),
                service: Some("mobile".into()),
                prefix: Some("007726".into()),
                caller: "0312340001".into(),
                callee: "0312349999".into(),
                priority: false,
            },
            state: "confirmed".into(),
            invite_at_us: 1_795_221_000_000_000,
            invite_cseq: 1,
            a_tag: Some("aaa".into()),
            b_tag: Some("bbb".into()),
            a_media: None,
            b_media: None,
            early: Vec::new(),
            answered_at_us: Some(1_795_221_001_000_000),
            segments: 1,
            a_sip: None,
            b_sip: None,
            src_ip: None,
        },
        engine: Some(EnginePart {
            contract: "K-1".into(),
            short_id: "abc123".into(),
            billing_start_us: Some(1_795_221_001_000_000),
            record_start_us: 1_795_221_001_000_000,
            guidance: None,
            segment: 1,
            paused: true,
        }),
    }
}

fn journal(root: &Path) -> CallJournal {
    CallJournal::open(&root.join("state/calls/eth1"), Timestamp(42)).unwrap()
}

#[test]
fn a_saved_file_reads_back_whole_with_private_modes() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(dir.path());
    j.save(7, &record(), &state()).unwrap();
    let path = j.file_of(7);
    assert_eq!(path.file_name().unwrap(), "42_7.json");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o640);
    assert_eq!(mode(j.dir()), 0o750);
    assert_eq!(mode(&dir.path().join("state")), 0o750);
    let Loaded::Whole(r, s) = read_file(&path) else {
        panic!("{:?}", read_file(&path))
    };
    assert_eq!((r, *s), (record(), state()));
    j.remove(7);
    assert!(!path.exists());
    j.remove(7); // twice: nothing to say
}

#[test]
fn a_file_cut_anywhere_or_corrupt_never_panics_and_keeps_what_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(dir.path());
    j.save(1, &record(), &state()).unwrap();
    let whole = std::fs::read(j.file_of(1)).unwrap();
    let first_line = whole.iter().position(|&b| b == b'\n').unwrap();
    let second_line = first_line
        + 1
        + whole[first_line + 1..]
            .iter()
            .position(|&b| b == b'\n')
            .unwrap();
    assert_eq!(whole.len(), 4096, "one page, padded");
    let cut = dir.path().join("cut.json");
    for n in 0..whole.len() {
        std::fs::write(&cut, &whole[..n]).unwrap();
        match read_file(&cut) {
            Loaded::Unreadable(_) => assert!(n < first_line, "cut at {n}"),
            Loaded::HistoryOnly(r, _) => {
                assert!(n >= first_line, "cut at {n}");
                assert_eq!(r, record());
            }
            Loaded::Whole(..) => assert!(n >= second_line, "cut at {n}"),
        }
    }
    // Garbage of every kind: a power cut can leave zeros or old blocks.
    for junk in [
        &b""[..],
        b"\0\0\0\0",
        b"{\"call_id\":",
        b"\xff\xfe\n\n",
        b"[]\n{}",
    ] {
        std::fs::write(&cut, junk).unwrap();
        assert!(matches!(read_file(&cut), Loaded::Unreadable(_)), "{junk:?}");
    }
    // A state line that parses as JSON but not as a state.
    let mut odd = whole[..=first_line].to_vec();
    odd.extend_from_slice(b"{\"saved_at_us\":\"yesterday\"}\n");
    std::fs::write(&cut, odd).unwrap();
    assert!(matches!(read_file(&cut), Loaded::HistoryOnly(..)));
}

#[test]
fn a_shorter_or_a_larger_record_replaces_the_last_one_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(dir.path());
    let mut big = state();
    big.dialog.early = (0..40)
        .map(|i| {
            let ep = crate::calls::tracker::snapshot::EndpointSnap {
                addr: format!("198.51.100.{i}:5000").parse().unwrap(),
                payloads: vec![(0, "PCMU".into()), (101, "TELEPHONE-EVENT".into())],
                ptime: Some(20),
                direction: "sendrecv".into(),
                formats: vec![(
                    0,
                    crate::media::codec::Format::of(crate::media::codec::Codec::Pcmu),
                )],
            };
            (format!("fork{i}"), ep)
        })
        .collect();
    let path = j.file_of(1);
    for s in [state(), big.clone(), state(), big] {
        j.save(1, &record(), &s).unwrap();
        let Loaded::Whole(_, back) = read_file(&path) else {
            panic!("{:?}", read_file(&path))
        };
        assert_eq!(*back, s);
        assert!(!j.dir().join("42_1.json.tmp").exists());
    }
    j.save(1, &record(), &state()).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        4096,
        "the larger record's bytes cut off"
    );
}

#[test]
fn load_all_drops_cut_temporaries_and_move_aside_keeps_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(dir.path());
    j.save(1, &record(), &state()).unwrap();
    j.save(2, &record(), &state()).unwrap();
    // A write cut by the kill before its rename.
    std::fs::write(j.dir().join(".42_3.tmp"), b"{\"call_").unwrap();
    std::fs::write(j.dir().join("42_9.json"), b"\0\0").unwrap();
    let j2 = CallJournal::open(j.dir(), Timestamp(43)).unwrap();
    let all = j2.load_all();
    let names: Vec<String> = all
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["42_1.json", "42_2.json", "42_9.json"]);
    assert!(!j.dir().join(".42_3.tmp").exists());
    let bad = &all[2].0;
    let moved = j2.move_aside(bad).unwrap();
    assert_eq!(moved, dir.path().join("state/corrupt/eth1_42_9.json"));
    assert_eq!(std::fs::read(&moved).unwrap(), b"\0\0");
    assert!(!bad.exists());
    // The call carried on under this run's name: one file, never two.
    j2.adopt(&all[0].0, 5).unwrap();
    assert!(!all[0].0.exists() && j2.file_of(5).exists());
}

#[test]
fn events_map_to_journal_operations() {
    let ev = CallEvent::NewSegment {
        key: 3,
        at: Timestamp(0),
        cause: "refer",
    };
    assert_eq!(JournalOp::of(&ev), JournalOp::Save(3));
    let ev = CallEvent::Replaced {
        key: 3,
        call_id: "c2".into(),
    };
    assert_eq!(JournalOp::of(&ev), JournalOp::Track(3, "c2".into()));
    let ev = CallEvent::InfoDigit {
        key: 3,
        at: Timestamp(0),
        digit: '5',
    };
    assert_eq!(JournalOp::of(&ev), JournalOp::None);
}

#[test]
fn a_journal_write_stays_well_under_a_few_milliseconds() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = journal(dir.path());
    let (r, s) = (record(), state());
    for k in 0..200 {
        j.save(k, &r, &s).unwrap();
    }
    let each = j.write_us / j.writes;
    eprintln!("journal write: {each} µs each (200 new files; serialisation included, as built)");
    // Generous: a capture thread must never wait on this for long.
    assert!(each < 5_000, "{each} µs per write");
}

#[test]
fn the_journal_of_an_earlier_set_of_interfaces_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    // A release that ran an engine per interface, or `eth1` alone before
    // `eth2` was added: their calls are in folders of their own.
    let mut old1 = journal(dir.path());
    old1.save(7, &record(), &state()).unwrap();
    let mut old2 = CallJournal::open(&dir.path().join("state/calls/eth2"), Timestamp(42)).unwrap();
    old2.save(7, &record(), &state()).unwrap();
    let now = CallJournal::open(&dir.path().join("state/calls/eth1+eth2"), Timestamp(99)).unwrap();
    let loaded = now.load_all();
    assert_eq!(loaded.len(), 2, "{loaded:?}");
    for (path, l) in &loaded {
        assert_eq!(path.parent().unwrap(), now.dir(), "{path:?}");
        assert!(matches!(l, Loaded::Whole(..)), "{path:?}: {l:?}");
    }
    // The same name from both folders: the second is named after its folder.
    let names: Vec<String> = loaded
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.contains(&"42_7.json".to_owned()), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("_42_7.json")), "{names:?}");
    assert!(!dir.path().join("state/calls/eth1").exists());
    assert!(!dir.path().join("state/calls/eth2").exists());
}
