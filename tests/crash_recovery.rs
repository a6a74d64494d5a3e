//! A recording cut short by a crash is recovered as a valid file at the
//! next start and queued with its metadata.
//!
//! The replay reads its capture from a FIFO, so the test decides how far
//! it gets: half a long call goes in, the recording is growing in tmp/,
//! and the process is killed with SIGKILL. The next replay into the same
//! spool repairs the WAV and publishes it.

#[path = "support/audio.rs"]
mod audio;
#[path = "support/config.rs"]
mod config_text;
#[path = "support/tools.rs"]
mod tools;
use audio::{files, power};
use callrec::capture::LinkType;
use callrec::config::AudioFormat;
use callrec::daemon::replay::{ReplayOptions, replay};
use callrec::recording::wav::{WavWriter, read_wav, sha256_file};
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, merge};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const T0: i64 = 1_795_221_000;

fn config_text(dir: &Path) -> String {
    format!(
        r#"
[general]
timezone = "+09:00"
[recording]
spool_dir = "{spool}"
[announce]
mode = "off"
{acme}{k0001}"#,
        acme = config_text::ACME_UNREACHED,
        k0001 = config_text::K0001_STEREO,
        spool = dir.join("spool").display()
    )
}

#[test]
fn recording_cut_by_sigkill_is_repaired_and_queued_at_next_start() {
    if !tools::tool_present("mkfifo", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("callrec.toml");
    std::fs::write(&cfg_path, config_text(dir.path())).unwrap();
    let spool = dir.path().join("spool");

    // A 120 s call: 440 Hz from the subscriber, 1000 Hz from the remote.
    let call = CallSpec::simple(
        1,
        "0312340001",
        "0077260312349999",
        Timestamp::from_secs_micros(T0, 0),
        120_000,
    );
    let pcap = dir.path().join("call.pcap");
    let mut w = PcapWriter::create(&pcap, LinkType::Ethernet).unwrap();
    for d in merge(&[call]) {
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();
    let bytes = std::fs::read(&pcap).unwrap();

    let fifo = dir.path().join("live.pcap");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_callrec"))
        .args(["replay", "--config"])
        .arg(&cfg_path)
        .arg("--out")
        .arg(&spool)
        .arg(&fifo)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Half the call goes in; the writer keeps the FIFO open, so the replay
    // waits for more instead of seeing the end of the capture.
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writer.write_all(&bytes[..bytes.len() / 2]).unwrap();
    writer.flush().unwrap();
    let tmp = spool.join("tmp");
    let deadline = Instant::now() + Duration::from_secs(30);
    let grown = loop {
        let wav = files(&tmp, ".wav")
            .into_iter()
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 500_000));
        if wav.is_some() || Instant::now() > deadline {
            break wav;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().unwrap();
    let _ = child.wait();
    drop(writer);
    let cut = grown.expect("the recording grew in tmp/ before the kill");
    assert!(
        files(&spool.join("queue"), ".wav").is_empty(),
        "nothing published before the end of the call"
    );
    assert_eq!(
        files(&tmp, ".wav.intent.json").len(),
        1,
        "the intent sits beside it"
    );

    // A WAV without an intent (a crash before it was written): kept, never lost.
    let orphan = tmp.join("orphan_9_1.wav");
    let mut ow = WavWriter::create(&orphan, AudioFormat::Pcm16, 1).unwrap();
    ow.write_samples(&vec![1000i16; 8000]).unwrap();
    drop(ow);
    // Dropped without finishing, like a crash: what reached the disk stays.
    let orphan_frames = (std::fs::metadata(&orphan).unwrap().len() as usize - 44) / 2;
    assert!(orphan_frames > 0);

    // The next start.
    let cfg = callrec::config::load_str(&config_text(dir.path()), &cfg_path).unwrap();
    let report = replay(
        cfg,
        &ReplayOptions {
            out: spool.clone(),
            captures: vec![],
            deliver: false,
            deliver_timeout: Duration::from_secs(1),
            shards: Some(1),
        },
    )
    .unwrap();
    assert_eq!(
        report.recovered.published.len(),
        1,
        "{:?}",
        report.recovered
    );
    assert_eq!(
        report.recovered.unclaimed.len(),
        1,
        "{:?}",
        report.recovered
    );
    assert!(report.recovered.failed.is_empty());
    assert!(files(&tmp, ".wav").is_empty() && files(&tmp, ".intent.json").is_empty());
    assert!(!cut.exists());

    let wavs = files(&spool.join("queue/acme/ready"), ".wav");
    let jsons = files(&spool.join("queue/acme/ready"), ".json");
    assert_eq!((wavs.len(), jsons.len()), (1, 1));
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&jsons[0]).unwrap()).unwrap();
    assert_eq!(meta["end_reason"], "recovered");
    assert_eq!(meta["contract"], "K-0001");
    assert_eq!(meta["call_id"], "call-1@callrec.test");
    assert_eq!(meta["segment"]["index"], 1);
    assert!(meta["quality"]["subscriber"].is_null());
    let (size, sha) = sha256_file(&wavs[0]).unwrap();
    assert_eq!(meta["audio"]["sha256"].as_str(), Some(sha.as_str()));
    assert_eq!(meta["audio"]["bytes"].as_u64(), Some(size));
    assert_eq!(
        wavs[0].file_name().unwrap().to_str(),
        meta["audio"]["file"].as_str()
    );
    // A valid file: sizes in the header match, whole stereo frames, the
    // length the metadata states, and each party's tone on its channel.
    let w = read_wav(&wavs[0]).unwrap();
    assert_eq!((w.channels, w.rate), (2, 8000));
    let frames = w.samples[0].len();
    assert!(frames >= 500_000 / 4 - 8000, "{frames} frames survived");
    assert_eq!(
        meta["audio"]["duration_ms"].as_u64(),
        Some(frames as u64 / 8)
    );
    let b = std::fs::read(&wavs[0]).unwrap();
    assert_eq!(
        u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize + 8,
        b.len()
    );
    let (l, r) = (&w.samples[0][8000..], &w.samples[1][8000..]);
    assert!(
        power(l, 440.0) > 100.0 * power(l, 1000.0),
        "subscriber is 440 Hz"
    );
    assert!(
        power(r, 1000.0) > 100.0 * power(r, 440.0),
        "remote is 1000 Hz"
    );

    let unclaimed = files(&spool.join("unclaimed"), ".wav");
    assert_eq!(unclaimed.len(), 1);
    let o = read_wav(&unclaimed[0]).unwrap();
    assert_eq!(o.samples[0].len(), orphan_frames);
    assert!(o.samples[0].iter().all(|&s| s == 1000));
}
