//! Delivery against a real OpenSSH server started by each test on
//! 127.0.0.1 (chrooted internal-sftp user). Skipped with a message where
//! sshd is absent. Config values that are never dialled use documentation
//! addresses; real connections go only to 127.0.0.1.

#[path = "support/sshd.rs"]
mod sshd;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use callrec::config::{Config, load_str};
use callrec::delivery::{
    Clock, QueueCmd, QueueState, Spool, SystemClock, Workers, deliver_until_empty, queue_command,
};
use sha2::{Digest, Sha256};
use sshd::{Sshd, body};

// ---------- log capture (alarms are asserted) ----------

static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);
impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        std::io::stderr().write_all(b)?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_log() {
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = LogWriter(buf.clone());
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || w.clone())
                .finish(),
        );
        buf
    });
}

fn log_text() -> String {
    String::from_utf8_lossy(&LOG.get().unwrap().lock().unwrap()).into_owned()
}

// ---------- fixtures ----------

struct Dest<'a> {
    name: &'a str,
    url: String,
    identity: PathBuf,
    host_key: String,
    contract: &'a str,
    max_rate: Option<u64>,
}

fn config(spool: &Path, dests: &[Dest], extra_delivery: &str) -> (Config, String) {
    let mut t = format!(
        "[recording]\nspool_dir = {:?}\n\n[delivery]\nallowed_networks = [\"127.0.0.0/8\", \"192.0.2.0/24\"]\n{extra_delivery}\n",
        spool.display().to_string()
    );
    for d in dests {
        t += &format!(
            "\n[[destination]]\nname = {:?}\nurl = {:?}\nidentity = {:?}\nhost_key = {:?}\n",
            d.name,
            d.url,
            d.identity.display().to_string(),
            d.host_key
        );
        if let Some(r) = d.max_rate {
            t += &format!("max_rate = {r}\n");
        }
    }
    // A number belongs to one contract only: number them apart.
    for (i, d) in dests.iter().enumerate() {
        t += &format!(
            "\n[[contract]]\nid = {:?}\nservice = \"mobile\"\nnumbers = [\"03123400{:02}\"]\nguidance = 1\ndestination = {:?}\n",
            d.contract,
            i + 1,
            d.name
        );
    }
    let mut cfg = load_str(&t, Path::new("test.toml")).expect("test config loads");
    cfg.delivery.keepalive = Duration::from_secs(1);
    cfg.delivery.connect_timeout = Duration::from_secs(2);
    (cfg, t)
}

fn dest_for<'a>(srv: &Sshd, name: &'a str, contract: &'a str) -> Dest<'a> {
    Dest {
        name,
        url: srv.url(),
        identity: srv.client_key.clone(),
        host_key: srv.host_pub.clone(),
        contract,
        max_rate: None,
    }
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn stem(contract: &str, i: u32) -> String {
    format!(
        "{contract}/20261121/20261121T09{:02}{:02}_out_0312340001_0312349999_{i:06x}_1",
        i / 60,
        i % 60
    )
}

/// Publishes a recording; returns (stem, wav bytes, json bytes).
fn publish(spool: &Spool, dest: &str, stem: &str, seed: u64, len: usize) -> (Vec<u8>, Vec<u8>) {
    let wav = body(seed, len);
    let tmp = spool.tmp_dir().join(format!("rec-{seed}.wav"));
    std::fs::write(&tmp, &wav).unwrap();
    let json = serde_json::to_vec(&serde_json::json!({
        "schema": 1, "contract": stem.split('/').next().unwrap(),
        "audio": {"file": format!("{}.wav", stem.rsplit('/').next().unwrap()), "sha256": sha(&wav)}
    }))
    .unwrap();
    spool.publish(dest, stem, &tmp, &json).unwrap();
    (wav, json)
}

/// Files below `dir`, relative path -> bytes.
fn remote_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn rec(base: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                rec(base, &p, out);
            } else if let Ok(b) = std::fs::read(&p) {
                out.insert(p.strip_prefix(base).unwrap().display().to_string(), b);
            }
        }
    }
    let mut out = BTreeMap::new();
    rec(dir, dir, &mut out);
    out
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

/// Checks what a receiver can see at one moment against the queue order
/// (`order`: stems, oldest first): the recordings visible under their final
/// names are a prefix of the order (nothing overtook an older one), and a
/// JSON is only there with its WAV.
fn order_violation(present: &[String], order: &[String]) -> Option<String> {
    let has = |s: &str, ext: &str| present.iter().any(|p| *p == format!("{s}.{ext}"));
    let mut gap: Option<&String> = None;
    for s in order {
        let (w, j) = (has(s, "wav"), has(s, "json"));
        if j && !w {
            return Some(format!("{s}.json visible without its WAV"));
        }
        if w || j {
            if let Some(g) = gap {
                return Some(format!("{s} visible before the older {g}"));
            }
        } else if gap.is_none() {
            gap = Some(s);
        }
    }
    None
}

/// Watches a server folder until `stop`: every listing must pass
/// [`order_violation`] (WAVs of the recording being published may lead its
/// JSON, never the other way round). Returns (violations, listings).
fn watch_order(
    incoming: PathBuf,
    order: Vec<String>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<String>, u64)> {
    std::thread::spawn(move || {
        let mut bad = Vec::new();
        let mut polls = 0;
        while !stop.load(Ordering::Relaxed) {
            let present: Vec<String> = remote_names(&incoming)
                .into_iter()
                .filter(|n| !n.ends_with(".part"))
                .collect();
            if let Some(v) = order_violation(&present, &order) {
                bad.push(v);
            }
            polls += 1;
        }
        (bad, polls)
    })
}

/// Names (relative paths) of the files below `dir`, without reading them.
fn remote_names(dir: &Path) -> Vec<String> {
    fn rec(base: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                rec(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    rec(dir, dir, &mut out);
    out
}

#[test]
fn order_violation_sees_overtaking_and_lone_json() {
    let order: Vec<String> = (0..3).map(|i| format!("s{i}")).collect();
    let v = |names: &[&str]| {
        order_violation(
            &names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &order,
        )
    };
    assert_eq!(v(&[]), None);
    assert_eq!(v(&["s0.wav"]), None);
    assert_eq!(v(&["s0.wav", "s0.json", "s1.wav"]), None);
    assert!(v(&["s1.wav"]).is_some(), "overtook s0");
    assert!(v(&["s0.wav", "s0.json", "s2.wav", "s2.json"]).is_some());
    assert!(v(&["s0.json"]).is_some(), "JSON before its WAV");
}

fn ctime_ns(p: &Path) -> i128 {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap();
    m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128
}

fn mtime_ns(p: &Path) -> u128 {
    std::fs::metadata(p)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

// ---------- tests ----------

/// Server down with recordings queued, then up: all arrive, oldest first,
/// with matching SHA-256; the connection attempts while down were probes
/// per destination (a few), not one per file.
#[test]
fn server_down_then_up_delivers_all_in_order() {
    init_log();
    let Some(mut srv) = Sshd::start() else { return };
    srv.stop();
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let (cfg, _) = config(
        dir.path(),
        &[dest_for(&srv, "acme", "K-0001")],
        "retry_initial = \"100ms\"\nretry_max = \"400ms\"",
    );
    let mut expect = BTreeMap::new();
    // Published out of time order: delivery must still go by recording time.
    for i in [7u32, 2, 9, 0, 5, 1, 8, 3, 6, 4] {
        let s = stem("K-0001", i);
        let (w, j) = publish(&spool, "acme", &s, i as u64, 40_000 + i as usize * 1000);
        expect.insert(s, (w, j));
    }
    let workers = Workers::start(&cfg, &spool, Arc::new(SystemClock)).unwrap();
    let st = workers.status("acme").unwrap().clone();
    std::thread::sleep(Duration::from_millis(1500));
    let retries_while_down = st.retries.load(Ordering::Relaxed);
    assert!(
        retries_while_down >= 2,
        "probed while down: {retries_while_down}"
    );
    assert!(
        retries_while_down <= 15,
        "one probe per period, not per file: {retries_while_down}"
    );
    assert!(remote_files(&srv.incoming).is_empty());
    assert_eq!(spool.list("acme", QueueState::Ready).unwrap().len(), 10);

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_order(
        srv.incoming.clone(),
        expect.keys().cloned().collect(),
        stop.clone(),
    );
    srv.restart();
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || st
            .delivered
            .load(Ordering::Relaxed)
            == 10),
        "not all delivered"
    );
    eprintln!(
        "backlog of 10 drained {:?} after the server came back",
        t0.elapsed()
    );
    workers.stop();
    stop.store(true, Ordering::Relaxed);
    let (bad, polls) = watcher.join().unwrap();
    assert!(bad.is_empty(), "arrival order broken: {bad:?}");
    assert!(
        polls > 10,
        "the watcher looked while files arrived: {polls}"
    );

    let got = remote_files(&srv.incoming);
    assert_eq!(
        got.len(),
        20,
        "exactly the WAV and JSON of each: {:?}",
        got.keys().collect::<Vec<_>>()
    );
    let mut times = Vec::new();
    for (s, (w, j)) in &expect {
        assert_eq!(sha(&got[&format!("{s}.wav")]), sha(w), "{s}.wav");
        assert_eq!(&got[&format!("{s}.json")], j, "{s}.json");
        // The ctime is the rename's (link + unlink of the .part); the
        // kernel's coarse clock can give neighbours the same value.
        times.push(ctime_ns(&srv.incoming.join(format!("{s}.json"))));
    }
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "published oldest first: {times:?}"
    );
    assert_eq!(spool.list("acme", QueueState::Done).unwrap().len(), 10);
    let listing = queue_command(&cfg, QueueCmd::List).unwrap();
    assert!(listing.contains("acme"), "{listing}");
}

/// The child role of `killed_at_random_points_never_half_publishes`.
#[test]
fn child_delivery_role() {
    let Ok(path) = std::env::var("CALLREC_DELIVERY_CHILD_CONFIG") else {
        return;
    };
    let text = std::fs::read_to_string(&path).unwrap();
    let mut cfg = load_str(&text, Path::new(&path)).unwrap();
    if let Some(rate) = std::env::var("CALLREC_DELIVERY_CHILD_MAX_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        cfg.destinations[0].max_rate = Some(rate);
    }
    let spool = cfg.recording.spool_dir.clone();
    let _ = deliver_until_empty(&cfg, &spool, Duration::from_secs(60));
}

/// SIGKILL of a delivering process at random points, 20 times: every
/// recording ends up exactly once under its final name with the right hash,
/// no final name ever shows a partial file, and recordings become visible
/// in queue order (never one before an older one, never a JSON before its
/// WAV), although several connections upload at once.
#[test]
fn killed_at_random_points_never_half_publishes() {
    init_log();
    let Some(srv) = Sshd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    // Throttled so the kills land at every stage of many uploads.
    const RATE: u64 = 600_000;
    let mut d = dest_for(&srv, "acme", "K-0001");
    d.max_rate = Some(RATE);
    let (cfg, text) = config(
        dir.path(),
        &[d],
        "retry_initial = \"100ms\"\nretry_max = \"200ms\"",
    );
    let cfg_path = dir.path().join("callrec.toml");
    std::fs::write(&cfg_path, &text).unwrap();
    let mut expect: BTreeMap<String, String> = BTreeMap::new();
    const N: usize = 30;
    for i in 0..N as u32 {
        let s = stem("K-0001", i);
        let (w, j) = publish(&spool, "acme", &s, 100 + i as u64, 120_000 + i as usize * 7);
        expect.insert(format!("{s}.wav"), sha(&w));
        expect.insert(format!("{s}.json"), sha(&j));
    }
    // Watch the server's folder the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));
    let polls = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (stop, violations, polls, expect, incoming) = (
            stop.clone(),
            violations.clone(),
            polls.clone(),
            expect.clone(),
            srv.incoming.clone(),
        );
        let order: Vec<String> = expect
            .keys()
            .filter_map(|k| k.strip_suffix(".wav"))
            .map(str::to_string)
            .collect();
        std::thread::spawn(move || {
            // Hash each version (name, size, mtime) of a final file once.
            let mut seen = std::collections::HashSet::new();
            while !stop.load(Ordering::Relaxed) {
                // Names first (one directory read), then contents.
                let names: Vec<String> = remote_names(&incoming)
                    .into_iter()
                    .filter(|n| !n.ends_with(".part"))
                    .collect();
                if let Some(v) = order_violation(&names, &order) {
                    violations.lock().unwrap().push(v);
                }
                for (name, bytes) in remote_files(&incoming) {
                    if name.ends_with(".part") {
                        continue;
                    }
                    let version = (name.clone(), bytes.len(), mtime_ns(&incoming.join(&name)));
                    if !seen.insert(version) {
                        continue;
                    }
                    match expect.get(&name) {
                        Some(h) if *h == sha(&bytes) => {}
                        Some(_) => violations
                            .lock()
                            .unwrap()
                            .push(format!("partial or wrong content under {name}")),
                        None => violations
                            .lock()
                            .unwrap()
                            .push(format!("unexpected final name {name}")),
                    }
                }
                polls.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let mut seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill schedule seed {seed}");
    let exe = std::env::current_exe().unwrap();
    let mut finished_alone = 0;
    let mut progress = Vec::new();
    for _ in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(150 + seed % 1350);
        let mut child = std::process::Command::new(&exe)
            .args([
                "child_delivery_role",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CALLREC_DELIVERY_CHILD_CONFIG", &cfg_path)
            .env("CALLREC_DELIVERY_CHILD_MAX_RATE", RATE.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_some() {
            finished_alone += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let parts = remote_files(&srv.incoming)
            .keys()
            .filter(|k| k.ends_with(".part"))
            .count();
        progress.push((
            delay.as_millis(),
            spool.list("acme", QueueState::Done).unwrap().len(),
            parts,
        ));
    }
    eprintln!("(kill after ms, recordings done, part files on the server) per kill: {progress:?}");
    let rep = deliver_until_empty(&cfg, dir.path(), Duration::from_secs(60)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    eprintln!(
        "{} polls of the remote folder; {finished_alone}/20 children finished before the kill; {rep:?}",
        polls.load(Ordering::Relaxed)
    );
    let v = violations.lock().unwrap();
    assert!(v.is_empty(), "{v:?}");
    assert!(!rep.timed_out);
    let got = remote_files(&srv.incoming);
    let names: Vec<&String> = got.keys().collect();
    assert_eq!(
        names,
        expect.keys().collect::<Vec<_>>(),
        "each recording exactly once, no part files left"
    );
    for (name, h) in &expect {
        assert_eq!(&sha(&got[name]), h, "{name}");
    }
    assert_eq!(spool.list("acme", QueueState::Done).unwrap().len(), N);
    // The kills must have hit uploads in progress, not only start-up.
    assert!(
        progress.iter().any(|p| p.1 > 0 && p.1 < N),
        "no kill landed mid-backlog: {progress:?}"
    );
}

/// `max_rate` limits the destination as a whole, however many connections
/// it uploads on: the backlog cannot arrive faster than the rate allows
/// after the bucket's initial burst (a lower bound, which cannot be flaky;
/// one bucket per connection would finish in a fraction of the time).
#[test]
fn max_rate_limits_the_whole_destination() {
    init_log();
    let Some(srv) = Sshd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    const RATE: u64 = 500_000;
    let mut d = dest_for(&srv, "slow", "K-0001");
    d.max_rate = Some(RATE);
    let (cfg, text) = config(dir.path(), &[d], "");
    assert!(text.contains("max_rate = 500000"), "through the loader");
    assert_eq!(cfg.destinations[0].max_rate, Some(RATE));
    assert!(
        cfg.destinations[0].connections > 1,
        "{:?}",
        cfg.destinations[0]
    );
    let mut total = 0u64;
    for i in 0..6u32 {
        let (w, j) = publish(&spool, "slow", &stem("K-0001", i), 40 + i as u64, 200_000);
        total += (w.len() + j.len()) as u64;
    }
    let t0 = Instant::now();
    let rep = deliver_until_empty(&cfg, dir.path(), Duration::from_secs(60)).unwrap();
    let took = t0.elapsed();
    assert!(!rep.timed_out, "{rep:?}");
    assert_eq!(rep.destinations[0].delivered, 6, "{rep:?}");
    let burst = (RATE / 10).max(32 * 1024);
    let floor = Duration::from_secs_f64((total - burst) as f64 / RATE as f64);
    eprintln!(
        "{total} bytes at max_rate {RATE} B/s took {took:?} (floor {floor:?}, {:.0} B/s)",
        total as f64 / took.as_secs_f64()
    );
    assert!(took >= floor, "{took:?} < {floor:?}: faster than max_rate");
    assert_eq!(remote_files(&srv.incoming).len(), 12);
}

/// Two destinations, one dead (accepts TCP, never answers): the live one's
/// delivery time is what it is alone.
#[test]
fn dead_destination_does_not_slow_the_live_one() {
    init_log();
    let Some(srv) = Sshd::start() else { return };
    let blackhole = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = blackhole.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    {
        let held = held.clone();
        std::thread::spawn(move || {
            for s in blackhole.incoming().flatten() {
                held.lock().unwrap().push(s); // never answer
            }
        });
    }
    let run = |with_dead: bool, base: u64| -> Duration {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let live_contract = format!("K-L{base}");
        let mut dests = vec![dest_for(&srv, "live", &live_contract)];
        let dead_contract = format!("K-D{base}");
        if with_dead {
            dests.push(Dest {
                name: "dead",
                url: format!("sftp://rec@127.0.0.1:{dead_port}/incoming"),
                identity: srv.client_key.clone(),
                host_key: srv.host_pub.clone(),
                contract: &dead_contract,
                max_rate: None,
            });
        }
        let (cfg, _) = config(
            dir.path(),
            &dests,
            "retry_initial = \"100ms\"\nretry_max = \"1s\"",
        );
        for i in 0..12u32 {
            publish(
                &spool,
                "live",
                &stem(&format!("K-L{base}"), i),
                base + i as u64,
                100_000,
            );
            if with_dead {
                publish(
                    &spool,
                    "dead",
                    &stem(&dead_contract, i),
                    base + 50 + i as u64,
                    100_000,
                );
            }
        }
        let workers = Workers::start(&cfg, &spool, Arc::new(SystemClock)).unwrap();
        let live = workers.status("live").unwrap().clone();
        let t0 = Instant::now();
        assert!(wait_until(Duration::from_secs(30), || live
            .delivered
            .load(Ordering::Relaxed)
            == 12));
        let took = t0.elapsed();
        if with_dead {
            let dead = workers.status("dead").unwrap().clone();
            assert_eq!(dead.delivered.load(Ordering::Relaxed), 0);
            assert!(wait_until(Duration::from_secs(10), || dead
                .last_error
                .lock()
                .unwrap()
                .is_some()));
            eprintln!(
                "dead destination error: {:?}",
                dead.last_error.lock().unwrap()
            );
            assert_eq!(
                spool.list("dead", QueueState::Ready).unwrap().len()
                    + spool.list("dead", QueueState::Inflight).unwrap().len(),
                12
            );
        }
        workers.stop();
        took
    };
    let alone = run(false, 1000);
    let beside_dead = run(true, 2000);
    eprintln!("live destination: {alone:?} alone, {beside_dead:?} beside a dead one");
    // A dead line blocks a call for the session timeout (5 s): any coupling shows.
    assert!(
        beside_dead < alone + Duration::from_secs(3),
        "{beside_dead:?} vs {alone:?}"
    );
    assert!(beside_dead < Duration::from_secs(5), "{beside_dead:?}");
}

/// A server whose host key is not the pinned one: nothing uploaded, no
/// authentication attempted, alarm logged, recordings stay queued.
#[test]
fn changed_host_key_uploads_nothing_and_alarms() {
    init_log();
    let Some(srv) = Sshd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut d = dest_for(&srv, "pinned-elsewhere", "K-0001");
    d.host_key = srv.other_host_key();
    let (cfg, _) = config(
        dir.path(),
        &[d],
        "retry_initial = \"100ms\"\nretry_max = \"200ms\"",
    );
    for i in 0..3 {
        publish(
            &spool,
            "pinned-elsewhere",
            &stem("K-0001", i),
            i as u64,
            10_000,
        );
    }
    let workers = Workers::start(&cfg, &spool, Arc::new(SystemClock)).unwrap();
    let st = workers.status("pinned-elsewhere").unwrap().clone();
    assert!(wait_until(Duration::from_secs(10), || st
        .retries
        .load(Ordering::Relaxed)
        >= 3));
    workers.stop();
    let err = st.last_error.lock().unwrap().clone().unwrap_or_default();
    assert!(err.contains("HOST KEY MISMATCH"), "{err}");
    assert!(remote_files(&srv.incoming).is_empty(), "nothing uploaded");
    assert_eq!(
        spool
            .list("pinned-elsewhere", QueueState::Ready)
            .unwrap()
            .len(),
        3
    );
    let log = log_text();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("HOST KEY MISMATCH")
            && l.contains("pinned-elsewhere")),
        "alarm logged"
    );
    assert!(
        !srv.log().contains("Accepted publickey"),
        "never authenticated to the wrong server"
    );
}

/// Contract A's recordings go only to A's server, even when one is
/// misfiled in B's queue (it is quarantined instead).
#[test]
fn recordings_reach_only_their_contracts_server() {
    init_log();
    let Some(a) = Sshd::start() else { return };
    let Some(b) = Sshd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let (cfg, _) = config(
        dir.path(),
        &[dest_for(&a, "a", "K-A"), dest_for(&b, "b", "K-B")],
        "",
    );
    for i in 0..4 {
        publish(&spool, "a", &stem("K-A", i), i as u64, 20_000);
        publish(&spool, "b", &stem("K-B", i), 10 + i as u64, 20_000);
    }
    publish(&spool, "b", &stem("K-A", 99), 99, 20_000); // misfiled
    let rep = deliver_until_empty(&cfg, dir.path(), Duration::from_secs(30)).unwrap();
    assert!(!rep.timed_out, "{rep:?}");
    let on_a = remote_files(&a.incoming);
    let on_b = remote_files(&b.incoming);
    assert_eq!(on_a.len(), 8);
    assert_eq!(on_b.len(), 8);
    assert!(
        on_a.keys().all(|k| k.starts_with("K-A/")),
        "{:?}",
        on_a.keys()
    );
    assert!(
        on_b.keys().all(|k| k.starts_with("K-B/")),
        "{:?}",
        on_b.keys()
    );
    assert_eq!(
        spool.list("b", QueueState::Quarantine).unwrap(),
        vec![stem("K-A", 99)]
    );
    let rb = rep
        .destinations
        .iter()
        .find(|r| r.destination == "b")
        .unwrap();
    assert_eq!((rb.delivered, rb.failed), (4, 1));
}

/// A full remote disk: the recording that does not fit stays queued, its
/// final name never appears, and it is delivered once space is freed.
#[test]
fn full_remote_disk_keeps_queued_then_delivers() {
    init_log();
    let Some(srv) = Sshd::start_with_small_disk() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let (cfg, _) = config(
        dir.path(),
        &[dest_for(&srv, "small", "K-0001")],
        "retry_initial = \"200ms\"\nretry_max = \"400ms\"",
    );
    let mut expect = BTreeMap::new();
    for i in 0..3u32 {
        let s = stem("K-0001", i);
        let (w, _) = publish(&spool, "small", &s, 500 + i as u64, 400_000);
        expect.insert(s, sha(&w));
    }
    let third = stem("K-0001", 2);
    let workers = Workers::start(&cfg, &spool, Arc::new(SystemClock)).unwrap();
    let st = workers.status("small").unwrap().clone();
    assert!(wait_until(Duration::from_secs(20), || st
        .delivered
        .load(Ordering::Relaxed)
        == 2
        && st
            .last_error
            .lock()
            .unwrap()
            .as_deref()
            .is_some_and(|e| e.contains("no space"))));
    eprintln!("while full: {:?}", st.last_error.lock().unwrap());
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(st.delivered.load(Ordering::Relaxed), 2);
    assert!(
        !srv.incoming.join(format!("{third}.wav")).exists(),
        "no half-published final name"
    );
    assert!(!srv.incoming.join(format!("{third}.json")).exists());
    assert_eq!(
        spool.list("small", QueueState::Ready).unwrap().len()
            + spool.list("small", QueueState::Inflight).unwrap().len(),
        1
    );
    // The receiver takes its files away: space again.
    for i in 0..2 {
        let s = stem("K-0001", i);
        std::fs::remove_file(srv.incoming.join(format!("{s}.wav"))).unwrap();
    }
    assert!(wait_until(Duration::from_secs(20), || st
        .delivered
        .load(Ordering::Relaxed)
        == 3));
    workers.stop();
    let got = std::fs::read(srv.incoming.join(format!("{third}.wav"))).unwrap();
    assert_eq!(sha(&got), expect[&third]);
    assert!(
        remote_files(&srv.incoming)
            .keys()
            .all(|k| !k.ends_with(".part"))
    );
}

/// A full local spool: publish fails cleanly, the WAV goes back to the
/// recorder and nothing half-published is queued.
#[test]
fn full_local_spool_publishes_nothing_half() {
    let dir = Path::new("/var/lib/callrec-sshd-test").join(format!("spool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&dir)
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP: cannot mount a tmpfs for the spool");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let result = std::panic::catch_unwind(|| {
        let spool = Spool::open(&dir).unwrap();
        publish(&spool, "acme", &stem("K-0001", 0), 1, 600_000);
        let tmp = spool.tmp_dir().join("second.wav");
        std::fs::write(&tmp, body(2, 300_000)).unwrap();
        let big_json = vec![b' '; 400_000];
        let err = spool
            .publish("acme", &stem("K-0001", 1), &tmp, &big_json)
            .unwrap_err();
        eprintln!("publish on a full spool: {err}");
        assert!(tmp.exists(), "the WAV is back with the recorder");
        assert_eq!(
            spool.list("acme", QueueState::Ready).unwrap(),
            vec![stem("K-0001", 0)]
        );
        assert!(
            !spool
                .file("acme", QueueState::Ready, &stem("K-0001", 1), "wav")
                .exists()
        );
        assert!(
            spool
                .verify("acme", QueueState::Ready, &stem("K-0001", 0))
                .is_ok()
        );
        assert!(spool.bytes_used().unwrap() >= 900_000);
    });
    let _ = std::process::Command::new("umount").arg(&dir).status();
    let _ = std::fs::remove_dir_all(&dir);
    result.unwrap();
}

struct TestClock(Mutex<SystemTime>);
impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

/// Undeliverable past hold_after: held with an alarm, never deleted;
/// `queue release` and `queue retry` put them back; `queue hold` holds.
#[test]
fn hold_after_holds_and_queue_commands_move() {
    init_log();
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    // Nothing listens on this port: connection refused.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = Dest {
        name: "gone",
        url: format!("sftp://rec@127.0.0.1:{closed}/in"),
        identity: "/nonexistent".into(),
        host_key:
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMYiHbMDRP9aiBpSV+Vnvi3HOQ/SdFbsQV27zZlKlQwP"
                .into(),
        contract: "K-0001",
        max_rate: None,
    };
    let (cfg, _) = config(
        dir.path(),
        &[d],
        "retry_initial = \"50ms\"\nretry_max = \"100ms\"\nhold_after = \"7d\"",
    );
    for i in 0..3 {
        publish(&spool, "gone", &stem("K-0001", i), i as u64, 1000);
    }
    let clock = Arc::new(TestClock(Mutex::new(SystemTime::now())));
    let workers = Workers::start(&cfg, &spool, clock.clone()).unwrap();
    let st = workers.status("gone").unwrap().clone();
    assert!(wait_until(Duration::from_secs(5), || st
        .retries
        .load(Ordering::Relaxed)
        >= 2));
    assert_eq!(
        spool.list("gone", QueueState::Held).unwrap().len(),
        0,
        "not yet old"
    );
    *clock.0.lock().unwrap() += Duration::from_secs(7 * 86400 + 1);
    assert!(wait_until(Duration::from_secs(5), || spool
        .list("gone", QueueState::Held)
        .unwrap()
        .len()
        == 3));
    workers.stop();
    assert!(
        log_text()
            .lines()
            .any(|l| l.contains("ERROR") && l.contains("gone") && l.contains("held"))
    );
    let listing = queue_command(&cfg, QueueCmd::List).unwrap();
    eprintln!("{listing}");
    let row = listing.lines().find(|l| l.starts_with("gone")).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[1..6], &["0", "0", "0", "3", "0"], "{row}");
    assert!(row.contains("connect"), "last error shown: {row}");

    queue_command(
        &cfg,
        QueueCmd::Release {
            destination: Some("gone".into()),
        },
    )
    .unwrap();
    assert_eq!(spool.list("gone", QueueState::Ready).unwrap().len(), 3);
    queue_command(&cfg, QueueCmd::Hold { destination: None }).unwrap();
    assert_eq!(spool.list("gone", QueueState::Held).unwrap().len(), 3);
    queue_command(
        &cfg,
        QueueCmd::Retry {
            destination: Some("gone".into()),
        },
    )
    .unwrap();
    assert_eq!(spool.list("gone", QueueState::Ready).unwrap().len(), 3);
    assert!(spool.queue_dir("gone").join("retry-now").exists());
    assert!(
        queue_command(
            &cfg,
            QueueCmd::Hold {
                destination: Some("nope".into())
            }
        )
        .is_err()
    );
}

/// A final name already on the server: same content counts as delivered
/// (a re-send after a crash); other content is held with an alarm and the
/// server's file is left alone.
#[test]
fn existing_final_name_same_is_delivered_different_is_held() {
    init_log();
    let Some(srv) = Sshd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let (cfg, _) = config(dir.path(), &[dest_for(&srv, "exists", "K-0001")], "");
    let (same, other) = (stem("K-0001", 1), stem("K-0001", 2));
    let (w1, _) = publish(&spool, "exists", &same, 1, 30_000);
    publish(&spool, "exists", &other, 2, 30_000);
    let day = srv.incoming.join("K-0001/20261121");
    std::fs::create_dir_all(&day).unwrap();
    let _ = std::process::Command::new("chown")
        .args(["-R", &format!("{}:", srv.user)])
        .arg(srv.incoming.join("K-0001"))
        .status();
    std::fs::write(srv.incoming.join(format!("{same}.wav")), &w1).unwrap();
    std::fs::write(srv.incoming.join(format!("{other}.wav")), body(999, 30_000)).unwrap();
    let rep = deliver_until_empty(&cfg, dir.path(), Duration::from_secs(20)).unwrap();
    let r = &rep.destinations[0];
    assert_eq!((r.delivered, r.failed, r.remaining), (1, 1, 0), "{rep:?}");
    assert_eq!(
        spool.list("exists", QueueState::Done).unwrap(),
        vec![same.clone()]
    );
    assert_eq!(
        spool.list("exists", QueueState::Held).unwrap(),
        vec![other.clone()]
    );
    assert!(srv.incoming.join(format!("{same}.json")).exists());
    assert!(
        !srv.incoming.join(format!("{other}.json")).exists(),
        "JSON never published for a conflict"
    );
    assert_eq!(
        std::fs::read(srv.incoming.join(format!("{other}.wav"))).unwrap(),
        body(999, 30_000),
        "server's file untouched"
    );
    let files = remote_files(&srv.incoming);
    assert!(
        files.keys().all(|k| !k.ends_with(".part")),
        "{:?}",
        files.keys()
    );
    assert!(
        log_text().lines().any(|l| l.contains("ERROR")
            && l.contains("exists")
            && l.contains("different content"))
    );
}

/// A key the server does not accept, and a folder the user may not write:
/// each a clear error-level line naming the destination, the recordings
/// stay in ready (never held or lost), nothing reaches the server.
#[test]
fn refused_key_and_permission_denied_stay_queued() {
    init_log();
    let Some(srv) = Sshd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let stranger = dir.path().join("stranger_key");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .unwrap();
    assert!(st.success());
    let mut refused = dest_for(&srv, "refused", "K-R");
    refused.identity = stranger;
    // A folder owned by root, not writable by the chrooted user.
    let ro = srv.incoming.join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    let mut denied = dest_for(&srv, "denied", "K-D");
    denied.url = format!("{}/ro", srv.url());
    let chrooted = srv.user != "root";
    let mut dests = vec![refused];
    if chrooted {
        dests.push(denied);
    } else {
        eprintln!("SKIP (permission part): the server runs as root, which may write anywhere");
    }
    let (cfg, _) = config(
        dir.path(),
        &dests,
        "retry_initial = \"100ms\"\nretry_max = \"200ms\"",
    );
    for d in &dests {
        for i in 0..2 {
            publish(&spool, d.name, &stem(d.contract, i), i as u64, 5_000);
        }
    }
    let workers = Workers::start(&cfg, &spool, Arc::new(SystemClock)).unwrap();
    for d in &dests {
        let st = workers.status(d.name).unwrap().clone();
        assert!(
            wait_until(Duration::from_secs(10), || st
                .retries
                .load(Ordering::Relaxed)
                >= 2),
            "{} retried",
            d.name
        );
    }
    workers.stop();
    let log = log_text();
    assert!(
        log.lines().any(|l| l.contains("ERROR")
            && l.contains("destination refused")
            && l.contains("authentication refused")),
        "refused key logged"
    );
    if chrooted {
        assert!(
            log.lines().any(|l| l.contains("ERROR")
                && l.contains("destination denied")
                && l.contains("permission denied")),
            "permission denied logged"
        );
    }
    for d in &dests {
        assert_eq!(spool.list(d.name, QueueState::Ready).unwrap().len(), 2);
        assert!(spool.list(d.name, QueueState::Held).unwrap().is_empty());
    }
    assert!(remote_files(&srv.incoming).is_empty(), "nothing uploaded");
}

/// The server goes away in the middle of uploads (every session killed
/// while several files are half-sent), then comes back: every recording
/// arrives whole, exactly once, in order, and no partial file is ever
/// visible under a final name.
#[test]
fn connection_cut_mid_file_then_delivered_whole() {
    init_log();
    let Some(mut srv) = Sshd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut d = dest_for(&srv, "cut", "K-0001");
    // Slow enough that the cut lands mid-file on every lane.
    d.max_rate = Some(400_000);
    let (cfg, _) = config(
        dir.path(),
        &[d],
        "retry_initial = \"200ms\"\nretry_max = \"400ms\"",
    );
    let mut expect = BTreeMap::new();
    for i in 0..4u32 {
        let s = stem("K-0001", i);
        let (w, j) = publish(&spool, "cut", &s, 300 + i as u64, 400_000);
        expect.insert(s, (sha(&w), sha(&j)));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_order(
        srv.incoming.clone(),
        expect.keys().cloned().collect(),
        stop.clone(),
    );
    let workers = Workers::start(&cfg, &spool, Arc::new(SystemClock)).unwrap();
    let st = workers.status("cut").unwrap().clone();
    std::thread::sleep(Duration::from_millis(1500));
    srv.stop();
    let parts_at_cut: Vec<String> = remote_names(&srv.incoming)
        .into_iter()
        .filter(|n| n.ends_with(".part"))
        .collect();
    eprintln!("at the cut: {parts_at_cut:?}");
    assert!(!parts_at_cut.is_empty(), "the cut landed mid-file");
    assert!(wait_until(Duration::from_secs(10), || st
        .retries
        .load(Ordering::Relaxed)
        >= 1));
    std::thread::sleep(Duration::from_millis(500));
    srv.restart();
    assert!(
        wait_until(Duration::from_secs(30), || st
            .delivered
            .load(Ordering::Relaxed)
            == 4),
        "all delivered after the cut: {:?}",
        st.last_error.lock().unwrap()
    );
    workers.stop();
    stop.store(true, Ordering::Relaxed);
    let (bad, _) = watcher.join().unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let got = remote_files(&srv.incoming);
    assert_eq!(got.len(), 8, "{:?}", got.keys().collect::<Vec<_>>());
    for (s, (w, j)) in &expect {
        assert_eq!(&sha(&got[&format!("{s}.wav")]), w, "{s}.wav");
        assert_eq!(&sha(&got[&format!("{s}.json")]), j, "{s}.json");
    }
    assert!(
        log_text()
            .lines()
            .any(|l| l.contains("destination cut") && l.contains("connection lost")),
        "the cut is logged"
    );
}

/// A queued WAV damaged on disk while the worker runs (no start-up check in
/// between): it is quarantined with an error-level line naming it, never
/// sent, its files kept; the others are delivered.
#[test]
fn damaged_spool_file_is_quarantined_not_sent() {
    init_log();
    let Some(srv) = Sshd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let (cfg, _) = config(dir.path(), &[dest_for(&srv, "rot", "K-0001")], "");
    for i in 0..3 {
        publish(&spool, "rot", &stem("K-0001", i), 70 + i as u64, 20_000);
    }
    let bad = stem("K-0001", 1);
    let wav = spool.file("rot", QueueState::Ready, &bad, "wav");
    let mut bytes = std::fs::read(&wav).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&wav, &bytes).unwrap();
    let workers = Workers::start(&cfg, &spool, Arc::new(SystemClock)).unwrap();
    let st = workers.status("rot").unwrap().clone();
    assert!(wait_until(Duration::from_secs(20), || st
        .delivered
        .load(Ordering::Relaxed)
        == 2
        && st.failed.load(Ordering::Relaxed) == 1));
    workers.stop();
    assert_eq!(
        spool.list("rot", QueueState::Quarantine).unwrap(),
        vec![bad.clone()]
    );
    assert_eq!(
        std::fs::read(spool.file("rot", QueueState::Quarantine, &bad, "wav")).unwrap(),
        bytes,
        "kept as found"
    );
    let got = remote_files(&srv.incoming);
    assert_eq!(got.len(), 4);
    assert!(got.keys().all(|k| !k.starts_with(&bad)), "{:?}", got.keys());
    assert!(
        log_text().lines().any(|l| l.contains("ERROR")
            && l.contains(&bad)
            && l.contains("does not match metadata")
            && l.contains("quarantined")),
        "clear line for the damaged file"
    );
}

/// A local spool that refuses the move into inflight (here a file stands
/// where the contract's inflight folder belongs) is retried at the backoff
/// pace, not in a tight loop; once the spool is repaired everything goes.
#[test]
fn spool_refusing_inflight_backs_off_then_delivers() {
    init_log();
    let Some(srv) = Sshd::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let (cfg, _) = config(
        dir.path(),
        &[dest_for(&srv, "stuck", "K-0007")],
        "retry_initial = \"100ms\"\nretry_max = \"200ms\"",
    );
    for i in 0..2 {
        publish(&spool, "stuck", &stem("K-0007", i), 90 + i as u64, 10_000);
    }
    spool.ensure_destination("stuck").unwrap();
    let blocker = dir.path().join("queue/stuck/inflight/K-0007");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let workers = Workers::start(&cfg, &spool, Arc::new(SystemClock)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let refusals = log_text()
        .lines()
        .filter(|l| l.contains("destination=stuck") && l.contains("cannot move to inflight"))
        .count();
    assert!(refusals >= 1, "the refusal is logged");
    // At most one attempt per 100 ms backoff step (with room for jitter);
    // a tight loop makes thousands.
    assert!(refusals <= 30, "{refusals} attempts in 1.5 s");
    std::fs::remove_file(&blocker).unwrap();
    let st = workers.status("stuck").unwrap().clone();
    assert!(
        wait_until(Duration::from_secs(20), || st
            .delivered
            .load(Ordering::Relaxed)
            == 2),
        "delivered once the spool takes the move"
    );
    workers.stop();
    assert_eq!(remote_files(&srv.incoming).len(), 4);
}
