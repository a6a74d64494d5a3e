//! The fleet database against a real PostgreSQL (Debian's), started by
//! the test in a temporary folder on a free loopback port (as `nobody`
//! when the test runs as root: PostgreSQL refuses root). Two appliances
//! (two replays of one capture, different names) push to it; `calls --db`
//! sees both; the server stopped and restarted while rows are being
//! written and pushed loses none; each appliance's recordings reach the
//! segments table with their delivery state, and follow a delivery; a
//! newer schema is refused by name; a slow server delays the push, never
//! the history.

#[path = "support/config.rs"]
mod config_text;
use callrec::capture::LinkType;
use callrec::daemon::replay::{ReplayOptions, replay};
use callrec::history::{CallRecord, HistoryWriter};
use callrec::time::Timestamp;
use callrec_testkit::pcapgen::{PcapWriter, udp_frame};
use callrec_testkit::scenario::{CallSpec, merge};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn pg_bin() -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    v.sort();
    v.pop()
}

struct Server {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    root: bool,
}

impl Server {
    fn run(&self, tool: &str, args: &[&str]) -> Output {
        let exe = self.bin.join(tool);
        let mut c = if self.root {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        c.args(args).output().unwrap()
    }
    fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.parent().unwrap().display()
        );
        let log = self.data.parent().unwrap().join("pg.log");
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    fn stop(&self) {
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fn url(&self) -> String {
        format!("postgres://callrec@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &["-D", self.data.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}

fn server(dir: &Path) -> Option<Server> {
    let Some(bin) = pg_bin() else {
        eprintln!("SKIP: PostgreSQL is not installed (scripts/setup.sh installs postgresql)");
        return None;
    };
    let root = unsafe { libc::geteuid() } == 0;
    let pgdir = dir.join("pg");
    std::fs::create_dir(&pgdir).unwrap();
    if root {
        // PostgreSQL will not run as root: its folder belongs to nobody.
        for p in [dir, pgdir.as_path()] {
            let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
            assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let s = Server {
        bin,
        data: pgdir.join("data"),
        port,
        root,
    };
    let out = s.run(
        "initdb",
        &[
            "-D",
            s.data.to_str().unwrap(),
            "-U",
            "callrec",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
    );
    assert!(
        out.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.start();
    Some(s)
}

fn write_capture(path: &Path) {
    let t = |s: i64| Timestamp::from_secs_micros(1_795_221_000 + s, 0);
    let calls = vec![
        CallSpec::simple(1, "0312340001", "0077260312349999", t(0), 3_000),
        CallSpec::simple(2, "0312340001", "0312349999", t(1), 2_000),
        CallSpec::simple(3, "0398765432", "0312340001", t(2), 2_000),
    ];
    let mut w = PcapWriter::create(path, LinkType::Ethernet).unwrap();
    for d in merge(&calls) {
        w.write(d.ts, &udp_frame(d.src, d.dst, &d.payload)).unwrap();
    }
    w.finish().unwrap();
}

fn config(dir: &Path, name: &str, url: &str) -> PathBuf {
    let spool = dir.join(format!("spool-{name}"));
    let text = format!(
        "[general]\ntimezone = \"+09:00\"\n[recording]\nspool_dir = \"{}\"\n[announce]\nmode = \"off\"\n[history]\nappliance = \"{name}\"\npostgres = \"{url}\"\n{}{}",
        spool.display(),
        config_text::ACME_UNREACHED,
        config_text::K0001_STEREO
    );
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn callrec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_callrec"))
        .args(["--log-format", "text"])
        .args(args)
        .output()
        .unwrap()
}

fn fleet(url: &str) -> Vec<serde_json::Value> {
    let out = callrec(&[
        "calls", "--db", url, "--format", "json", "--limit", "100000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn two_appliances_one_view_and_no_row_lost_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pg) = server(dir.path()) else { return };
    let url = pg.url();
    let pcap = dir.path().join("in.pcap");
    write_capture(&pcap);
    let mut spools = Vec::new();
    for name in ["tokyo-1", "osaka-2"] {
        let cfg_path = config(dir.path(), name, &url);
        let cfg = callrec::config::load(&cfg_path).unwrap();
        let spool = cfg.recording.spool_dir.clone();
        let opts = ReplayOptions {
            out: spool.clone(),
            captures: vec![pcap.clone()],
            deliver: false,
            deliver_timeout: Duration::from_secs(1),
            shards: Some(1),
        };
        replay(cfg, &opts).expect("replay runs");
        let out = callrec(&["calls", "--config", cfg_path.to_str().unwrap(), "--push"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        spools.push((name, spool, cfg_path));
    }
    let rows = fleet(&url);
    assert_eq!(rows.len(), 6, "{rows:?}");
    for name in ["tokyo-1", "osaka-2"] {
        assert_eq!(rows.iter().filter(|r| r["appliance"] == name).count(), 3);
    }
    // The same filters as the local history.
    let out = callrec(&[
        "calls",
        "--db",
        &url,
        "--decision",
        "record",
        "--format",
        "csv",
    ]);
    let csv = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        csv.lines().count(),
        5,
        "two recorded calls per appliance: {csv}"
    );
    assert!(csv.starts_with("appliance,call_id,"), "{csv}");
    // Each appliance's recordings, queued (a replay does not deliver).
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let segments = |c: &mut postgres::Client, name: &str| -> Vec<(String, String, bool)> {
        c.query(
            "SELECT file, state, present FROM callrec_segments WHERE appliance = $1 ORDER BY file",
            &[&name],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    };
    for (name, spool, _) in &spools {
        let recorded: u64 = std::fs::read_to_string(spool.join("calls.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|h| h["decision"] == "record")
            .map(|h| h["segments"].as_u64().unwrap())
            .sum();
        let segs = segments(&mut c, name);
        assert!(recorded > 0);
        assert_eq!(segs.len() as u64, recorded, "{name}: {segs:?}");
        assert!(
            segs.iter()
                .all(|(f, st, p)| f.ends_with(".wav") && st == "queued" && *p)
        );
    }
    // Pushing again sends nothing twice.
    let out = callrec(&["calls", "--config", spools[0].2.to_str().unwrap(), "--push"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("0 rows pushed") && err.contains("(0 segment rows)"),
        "{err}"
    );
    assert_eq!(fleet(&url).len(), 6);
    // A delivery on tokyo-1 reaches the fleet with the next push.
    let sp = callrec::delivery::spool::Spool::open(&spools[0].1).unwrap();
    use callrec::delivery::spool::QueueState::{Done, Ready};
    let stem = sp.list("acme", Ready).unwrap().remove(0);
    sp.move_to("acme", &stem, Ready, Done).unwrap();
    let out = callrec(&["calls", "--config", spools[0].2.to_str().unwrap(), "--push"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("(1 segment rows)"));
    let segs = segments(&mut c, "tokyo-1");
    assert_eq!(
        segs.iter().filter(|(_, st, _)| st == "delivered").count(),
        1
    );
    assert!(
        segments(&mut c, "osaka-2")
            .iter()
            .all(|(_, st, _)| st == "queued")
    );

    // The daemon's pusher on tokyo-1 while calls go on ending; the server
    // goes down and comes back in the middle.
    let spool = spools[0].1.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let (spool, url, stop) = (spool.clone(), url.clone(), stop.clone());
        std::thread::spawn(move || {
            callrec::history::pg::push_loop(
                &spool,
                &url,
                "tokyo-1",
                Duration::from_millis(100),
                &stop,
            )
        })
    };
    let mut w = HistoryWriter::open(&spool).unwrap();
    let rec = |i: i64| CallRecord {
        call_id: format!("load-{i}@198.51.100.9"),
        short_id: format!("{i:08x}"),
        caller: "0312340001".into(),
        callee: "0612340002".into(),
        decision: "skip".into(),
        reason: Some("not-a-contract-number".into()),
        invite_at: Timestamp::from_secs_micros(1_795_300_000 + i, 0).rfc3339(9 * 3600),
        ..Default::default()
    };
    for i in 0..300 {
        w.append(&rec(i)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    pg.stop();
    for i in 300..600 {
        w.append(&rec(i)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    pg.start();
    for i in 600..900 {
        w.append(&rec(i)).unwrap();
    }
    drop(w);
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed() < Duration::from_secs(60) {
        n = fleet(&url)
            .iter()
            .filter(|r| r["appliance"] == "tokyo-1")
            .count();
        if n == 903 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    pusher.join().unwrap();
    assert_eq!(n, 903, "every row of tokyo-1 reached the fleet database");

    // A database migrated by a newer callrec is refused, by name.
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.execute("INSERT INTO callrec_schema VALUES (99)", &[])
        .unwrap();
    let out = callrec(&["calls", "--db", &url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("schema version 99 is newer"), "{err}");
}

/// A slow fleet database (every insert takes 20 ms, a trigger's
/// `pg_sleep`) delays the push, never the history: the daemon's log
/// writer appends at its own pace while the pusher crawls, and every row
/// arrives in the end.
#[test]
fn a_slow_server_delays_the_push_but_never_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pg) = server(dir.path()) else { return };
    let url = pg.url();
    let spool = dir.path().join("spool-slow");
    std::fs::create_dir_all(&spool).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let (spool, url, stop) = (spool.clone(), url.clone(), stop.clone());
        std::thread::spawn(move || {
            callrec::history::pg::push_loop(
                &spool,
                &url,
                "slow-1",
                Duration::from_millis(100),
                &stop,
            )
        })
    };
    let rec = |i: i64| CallRecord {
        call_id: format!("slow-{i}@198.51.100.9"),
        short_id: format!("{i:08x}"),
        caller: "0312340001".into(),
        callee: "0612340002".into(),
        decision: "skip".into(),
        reason: Some("not-a-contract-number".into()),
        invite_at: Timestamp::from_secs_micros(1_795_400_000 + i, 0).rfc3339(9 * 3600),
        ..Default::default()
    };
    let count = || {
        fleet(&url)
            .iter()
            .filter(|r| r["appliance"] == "slow-1")
            .count()
    };
    let mut w = HistoryWriter::open(&spool).unwrap();
    w.append(&rec(0)).unwrap();
    // The pusher made the schema and sent the first row: now slow it down.
    let t = Instant::now();
    while count() < 1 && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(count(), 1, "the first row arrives");
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute(
        "CREATE FUNCTION slow() RETURNS trigger AS $$ BEGIN PERFORM pg_sleep(0.02); RETURN NEW; END $$ LANGUAGE plpgsql;
         CREATE TRIGGER slow BEFORE INSERT ON callrec_calls FOR EACH ROW EXECUTE FUNCTION slow();",
    )
    .unwrap();
    let mut worst = Duration::ZERO;
    let started = Instant::now();
    for i in 1..=400 {
        let t = Instant::now();
        w.append(&rec(i)).unwrap();
        worst = worst.max(t.elapsed());
    }
    let appending = started.elapsed();
    drop(w);
    assert!(
        worst < Duration::from_millis(200),
        "an append waited {worst:?} on a slow database"
    );
    // 400 rows at 20 ms each take the pusher 8 s or more.
    assert!(
        appending < Duration::from_secs(4),
        "400 appends took {appending:?}"
    );
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed() < Duration::from_secs(90) {
        n = count();
        if n == 401 {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let pushed_in = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    pusher.join().unwrap();
    assert_eq!(n, 401, "every row reached the slow database");
    assert!(
        pushed_in + appending >= Duration::from_secs(7),
        "the database was slow: {pushed_in:?}"
    );
}
