//! Real phones for live tests: the network of `tests/phones/lab.sh` (two
//! phones, a Kamailio proxy and callrec's bridge, each in a namespace made
//! for the run), baresip with a tone as its microphone and its decoded
//! audio dumped by the sndfile module, and the audio checks run on what
//! each phone played out.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PROXY: &str = "192.0.2.10";
pub const PHONE_A: &str = "192.0.2.11";
pub const PHONE_B: &str = "192.0.2.12";

fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/phones/lab.sh")
}

/// The namespaces of one run (`TAG-br`, `TAG-a`, `TAG-b`, `TAG-p`),
/// removed on drop with every process started in them.
pub struct Lab {
    pub tag: String,
    pub dir: PathBuf,
    children: Vec<Child>,
}

impl Lab {
    /// Builds the network, or prints why `test` is skipped.
    pub fn up(test: &str, dir: &Path) -> Option<Lab> {
        for (tool, arg) in [
            ("baresip", "-h"),
            ("kamailio", "-v"),
            ("nft", "--version"),
            ("iptables", "--version"),
        ] {
            if Command::new(tool)
                .arg(arg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
            {
                eprintln!("SKIP {test}: {tool} is not installed (scripts/setup.sh installs it)");
                return None;
            }
        }
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("p14-{}-{run}", std::process::id() % 100_000);
        let ok = Command::new(lab_script())
            .args(["up", &tag])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new(lab_script()).args(["down", &tag]).status();
            eprintln!(
                "SKIP {test}: cannot build the network namespaces (needs root, veth, bridge, br_netfilter)"
            );
            return None;
        }
        Some(Lab {
            tag,
            dir: dir.to_owned(),
            children: Vec::new(),
        })
    }

    /// `program` in namespace `TAG-ns`.
    pub fn cmd(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}-{ns}", self.tag), program]);
        c
    }

    /// Output of a command in a namespace (stdout, empty on failure).
    pub fn output(&self, ns: &str, program: &str, args: &[&str]) -> String {
        self.cmd(ns, program)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Keeps `child` to be killed when the lab goes.
    pub fn keep(&mut self, child: Child) {
        self.children.push(child);
    }

    /// Kamailio on 192.0.2.10:5060, in the foreground of its namespace.
    pub fn start_proxy(&mut self) {
        let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/phones/kamailio.cfg");
        let child = self
            .cmd("p", "kamailio")
            .arg("-f")
            .arg(&cfg)
            .args(["-DD", "-E", "-w"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("kamailio.log")).unwrap())
            .spawn()
            .expect("kamailio");
        self.keep(child);
        std::thread::sleep(Duration::from_millis(500));
    }

    /// Whether the phones' flows are diverted now (callrec's nft set has elements).
    pub fn diverted_now(&self) -> bool {
        self.output("br", "nft", &["list", "set", "ip", "callrec", "divert"])
            .contains("elements")
    }

    /// The packet counters of callrec's nft chain: (all forwarded UDP, diverted).
    pub fn nft_counters(&self) -> (u64, u64) {
        let text = self.output("br", "nft", &["list", "table", "ip", "callrec"]);
        let count = |tag: &str| {
            text.lines()
                .find(|l| l.contains(tag))
                .and_then(|l| l.split("packets ").nth(1))
                .and_then(|s| s.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        (count("all forwarded UDP"), count("\"diverted\""))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SIGTERM first: Kamailio's main process then ends the worker
            // processes it forked (a SIGKILL left them running).
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(3);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new(lab_script())
            .args(["down", &self.tag])
            .status();
    }
}

/// One baresip phone: `user@ip`, sending a sine at `tone_hz` from a file,
/// answering automatically, dumping what it decodes to `dir/dump-*-dec.wav`.
pub struct Baresip {
    pub dir: PathBuf,
    pub ns: &'static str,
}

impl Baresip {
    pub fn configure(lab: &Lab, ns: &'static str, user: &str, ip: &str, tone_hz: u32) -> Baresip {
        let dir = lab.dir.join(format!("baresip-{ns}"));
        std::fs::create_dir_all(&dir).unwrap();
        let tone = dir.join("tone.wav");
        write_tone(&tone, tone_hz, 60);
        let config = format!(
            "poll_method epoll\nsip_listen {ip}:5060\naudio_player alsa,null\naudio_alert alsa,null\n\
             audio_source aufile,{tone}\naudio_srate 8000\naudio_channels 1\nrtp_ports 40000-40100\n\
             module_path /usr/lib/baresip/modules\nmodule stdio.so\nmodule g711.so\nmodule alsa.so\n\
             module aufile.so\nmodule sndfile.so\nmodule_app account.so\nmodule_app menu.so\n\
             snd_path {dir}\nnet_interface eth0\n",
            tone = tone.display(),
            dir = dir.display()
        );
        std::fs::write(dir.join("config"), config).unwrap();
        let account = format!(
            "<sip:{user}@{ip}>;regint=0;answermode=auto;audio_codecs=PCMU;outbound=\"sip:{PROXY};transport=udp\"\n"
        );
        std::fs::write(dir.join("accounts"), account).unwrap();
        Baresip { dir, ns }
    }

    /// Starts baresip for `secs` seconds, dialling `dial` if given; its
    /// keypad is the returned child's stdin.
    pub fn start(&self, lab: &Lab, secs: u32, dial: Option<&str>) -> Child {
        let mut c = lab.cmd(self.ns, "baresip");
        c.arg("-f").arg(&self.dir).args(["-t", &secs.to_string()]);
        if let Some(uri) = dial {
            c.args(["-e", &format!("/dial {uri}")]);
        }
        c.stdin(Stdio::piped())
            .stdout(std::fs::File::create(self.dir.join("baresip.log")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("baresip")
    }

    /// The decoded audio it played out (the sndfile module's dump).
    pub fn playout(&self) -> Vec<i16> {
        let dump = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
            .unwrap_or_else(|| panic!("no decoded dump in {}", self.dir.display()));
        callrec::recording::wav::read_wav(&dump)
            .unwrap()
            .samples
            .remove(0)
    }

    /// Removes the dumps of an earlier call.
    pub fn clear(&self) {
        for e in std::fs::read_dir(&self.dir).unwrap().flatten() {
            if e.path().to_string_lossy().contains("dump-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// A 8 kHz mono 16-bit WAV of a sine at `hz`, half full scale.
pub fn write_tone(path: &Path, hz: u32, secs: u32) {
    let n = 8000 * secs as usize;
    let mut b = Vec::with_capacity(44 + 2 * n);
    let data = (2 * n) as u32;
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&8000u32.to_le_bytes());
    b.extend_from_slice(&16000u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    for i in 0..n {
        let v = 16000.0 * (2.0 * std::f64::consts::PI * hz as f64 * i as f64 / 8000.0).sin();
        b.extend_from_slice(&(v as i16).to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

/// Normalised cross-correlation of `a` and `b` over their common length.
pub fn ncc(a: &[i16], b: &[i16]) -> f64 {
    let n = a.len().min(b.len());
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..n {
        let (x, y) = (a[i] as f64, b[i] as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa * bb).sqrt()
    }
}

/// Where `clip` best matches `x` at a lag up to `max_lag` samples:
/// (lag, correlation over the whole clip). The lag is found with the
/// clip's first half second, then the whole clip is correlated there.
pub fn find_clip(x: &[i16], clip: &[i16], max_lag: usize) -> (usize, f64) {
    let head = &clip[..clip.len().min(4000)];
    let mut best = (0, f64::MIN);
    for lag in 0..=max_lag.min(x.len().saturating_sub(head.len())) {
        let c = ncc(&x[lag..], head);
        if c > best.1 {
            best = (lag, c);
        }
    }
    let lag = best.0;
    let end = (lag + clip.len()).min(x.len());
    (lag, ncc(&x[lag..end], &clip[..end - lag]))
}

/// Per 10 ms block of `x`: whether it holds a sine at one of `hz` (at
/// least 30% of the block's energy there, and not near silence).
pub fn tone_blocks(x: &[i16], hz: &[f64]) -> Vec<bool> {
    x.chunks(80)
        .map(|b| {
            let ms = b.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / b.len() as f64;
            ms > 300.0 * 300.0
                && hz
                    .iter()
                    .any(|&f| super::audio::power_norm(b, f) / ms > 0.3)
        })
        .collect()
}

/// The longest run of `false` in `blocks`, in ms (10 ms blocks).
pub fn longest_gap_ms(blocks: &[bool]) -> usize {
    let (mut best, mut run) = (0, 0);
    for &b in blocks {
        run = if b { 0 } else { run + 1 };
        best = best.max(run);
    }
    best * 10
}

/// Start (ms) of each run of at least `min_ms` of `true` in `blocks`.
pub fn runs_ms(blocks: &[bool], min_ms: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &b) in blocks.iter().chain(std::iter::once(&false)).enumerate() {
        match (b, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if (i - s) * 10 >= min_ms {
                    out.push(s * 10);
                }
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// Waits until `f` holds, polling every 20 ms, at most `limit`.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Instant> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// linphonec (liblinphone 5.1) as a phone: file mode ("soundcard use
/// files"), playing a tone file and recording what it plays out, answering
/// automatically. linphonec only runs its event loop when a line of input
/// arrives (stdin not a terminal), so a feeder thread sends an empty line
/// every 20 ms; [`Linphonec::keys`] types into the same stream.
pub struct Linphonec {
    pub dir: PathBuf,
    pub ns: &'static str,
    stdin: std::sync::Arc<std::sync::Mutex<Option<std::process::ChildStdin>>>,
}

impl Linphonec {
    pub fn configure(lab: &Lab, ns: &'static str, tone_hz: u32) -> Linphonec {
        let dir = lab.dir.join(format!("linphonec-{ns}"));
        std::fs::create_dir_all(dir.join(".local/share/linphone")).unwrap();
        write_tone(&dir.join("tone.wav"), tone_hz, 60);
        let rc = "[sip]\nsip_port=5060\ndefault_proxy=-1\n[rtp]\naudio_rtp_port=40200\n\
                  [sound]\nechocancellation=0\n\
                  [audio_codec_0]\nmime=PCMU\nrate=8000\nchannels=1\nenabled=1\n\
                  [audio_codec_1]\nmime=opus\nrate=48000\nchannels=2\nenabled=0\n\
                  [audio_codec_2]\nmime=speex\nrate=16000\nchannels=1\nenabled=0\n";
        std::fs::write(dir.join("rc"), rc).unwrap();
        Linphonec {
            dir,
            ns,
            stdin: Default::default(),
        }
    }

    /// Starts linphonec for `secs` seconds (then `quit`).
    pub fn start(&self, lab: &Lab, secs: u64) -> Child {
        let mut child = lab
            .cmd(self.ns, "linphonec")
            .arg("-c")
            .arg(self.dir.join("rc"))
            .args(["-d", "3", "-l"])
            .arg(self.dir.join("linphonec.log"))
            .env("HOME", &self.dir)
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(self.dir.join("linphonec.out")).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("linphonec");
        *self.stdin.lock().unwrap() = child.stdin.take();
        let dir = self.dir.display().to_string();
        self.keys(&format!(
            "soundcard use files\nplay {dir}/tone.wav\nrecord {dir}/playout.wav\nautoanswer enable\n"
        ));
        let stdin = self.stdin.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
                if let Some(s) = stdin.lock().unwrap().as_mut() {
                    let _ = std::io::Write::write_all(s, b"\n");
                }
            }
            if let Some(mut s) = stdin.lock().unwrap().take() {
                let _ = std::io::Write::write_all(&mut s, b"quit\n");
            }
        });
        child
    }

    /// Types `text` (commands, or DTMF digits during a call).
    pub fn keys(&self, text: &str) {
        if let Some(s) = self.stdin.lock().unwrap().as_mut() {
            let _ = std::io::Write::write_all(s, text.as_bytes());
        }
    }

    /// What it played out (its `record` file).
    pub fn playout(&self) -> Vec<i16> {
        callrec::recording::wav::read_wav(&self.dir.join("playout.wav"))
            .unwrap()
            .samples
            .remove(0)
    }
}

/// [`find_clip`] for players whose jitter buffer stretches or drops
/// audio (linphone's adaptive buffer and flow control do): the clip is
/// cut into half-second pieces, each found within ±200 ms of where the
/// previous one ended. Returns (lag of the first piece, lag of the
/// clip's end in `x` relative to its nominal end, mean correlation).
pub fn find_clip_pieces(x: &[i16], clip: &[i16], max_lag: usize) -> (usize, isize, f64) {
    const PIECE: usize = 4000;
    const SLACK: isize = 1600;
    let (first, _) = find_clip(x, clip, max_lag);
    let mut lag = first as isize;
    let (mut sum, mut n) = (0.0, 0);
    for (k, piece) in clip.chunks(PIECE).enumerate() {
        if piece.len() < PIECE / 4 {
            break;
        }
        let nominal = lag + (k * PIECE) as isize;
        let mut best = (nominal, f64::MIN);
        for at in (nominal - SLACK).max(0)..=nominal + SLACK {
            let at_u = at as usize;
            if at_u + piece.len() > x.len() {
                break;
            }
            let c = ncc(&x[at_u..at_u + piece.len()], piece);
            if c > best.1 {
                best = (at, c);
            }
        }
        if best.1 == f64::MIN {
            break;
        }
        lag = best.0 - (k * PIECE) as isize;
        sum += best.1;
        n += 1;
    }
    let mean = if n == 0 { 0.0 } else { sum / n as f64 };
    (first, lag - first as isize, mean)
}

/// Where the longest run of `false` in `blocks` starts, in ms.
pub fn longest_gap_at_ms(blocks: &[bool]) -> usize {
    let (mut best, mut at, mut run) = (0, 0, 0);
    for (i, &b) in blocks.iter().enumerate() {
        run = if b { 0 } else { run + 1 };
        if run > best {
            best = run;
            at = i + 1 - run;
        }
    }
    at * 10
}

/// Per 10 ms block: whether it is a DTMF key tone (two sines; their
/// energy together at least 30% of the block's).
pub fn dtmf_blocks(x: &[i16]) -> Vec<bool> {
    const F: [f64; 8] = [697.0, 770.0, 852.0, 941.0, 1209.0, 1336.0, 1477.0, 1633.0];
    x.chunks(80)
        .map(|b| {
            let ms = b.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / b.len() as f64;
            ms > 300.0 * 300.0
                && F.iter()
                    .map(|&f| super::audio::power_norm(b, f))
                    .sum::<f64>()
                    / ms
                    > 0.3
        })
        .collect()
}
