//! Inline mode's worker: the part of the announcer that touches the kernel.
//!
//! callrec sits on the media path as a transparent bridge (br_netfilter on)
//! or a router. The kernel forwards every packet by itself; only the RTP
//! flows of calls in their prompt or a beep are diverted to user space:
//!
//! - an nftables table (`announce.nft_table`, family `ip` and `ip6`) holds
//!   a set of diverted flows (source address and port, destination address
//!   and port) and marks the packets that match it with `announce.mark`
//!   (elements carry a timeout, so a flow is released by the kernel itself
//!   if callrec hangs);
//! - one iptables/ip6tables rule in FORWARD sends marked packets to
//!   NFQUEUE `announce.queue` with `--queue-bypass`: when no process is
//!   bound to the queue (callrec stopped or killed) they pass untouched.
//!   (nftables' own `queue` statement is not in every kernel; the xtables
//!   NFQUEUE target is.) The queue is also set to fail open: when it is
//!   full, the kernel forwards rather than drops;
//! - a queue thread reads the diverted packets, rewrites them
//!   ([`super::rewrite`]) and gives every one back with an accept verdict;
//! - a control thread takes divert and release requests from the capture
//!   threads, adds and deletes set elements (`nft`), and releases a flow
//!   once its prompt is over or its deadline passed.
//!
//! Flows outside a prompt never reach callrec: the set is empty between
//! prompts, and the nft counters show it (`nft list table ip callrec`).

use super::outcome::Outcome;
use super::prompts::Prompt;
use super::rewrite::{Flow, FlowKey, FlowTable, Verdict};
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Settings of the inline worker (from `[announce]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlineConfig {
    /// NFQUEUE number (0-65535).
    pub queue: u16,
    /// Packet mark bit(s) the nft table sets on diverted packets.
    pub mark: u32,
    /// Name of the nftables tables (family ip and ip6) callrec owns.
    pub nft_table: String,
    /// Install the table and the FORWARD rule at start (off when the
    /// operator's firewall provides them).
    pub setup: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InlineError {
    #[error("announce.mode = \"inline\": {what}: {reason}")]
    Setup { what: String, reason: String },
}

/// One request from a capture thread.
pub enum Cmd {
    /// Divert `flows` and play `clip` in them; `outcome` counts (beeps: None).
    Divert {
        call: u64,
        flows: Vec<(FlowKey, usize)>,
        clip: Prompt,
        outcome: Option<Arc<Outcome>>,
    },
    /// Stop the call's diversion now (BYE, re-INVITE); `why` goes to the
    /// outcome of flows not yet done.
    Release { call: u64, why: &'static str },
}

/// Counters of the inline path (read by `status` and the benchmark).
#[derive(Debug, Default)]
pub struct InlineStats {
    /// Packets the kernel diverted to callrec.
    pub diverted: AtomicU64,
    pub rewritten: AtomicU64,
    pub flows_added: AtomicU64,
    pub flows_released: AtomicU64,
    pub nft_errors: AtomicU64,
}

/// The capture threads' handle on the worker.
#[derive(Clone)]
pub struct InlineHandle {
    tx: Sender<Cmd>,
    pub stats: Arc<InlineStats>,
}

impl InlineHandle {
    /// Sends a request; false when the worker is gone.
    pub fn send(&self, cmd: Cmd) -> bool {
        self.tx.send(cmd).is_ok()
    }

    /// A handle whose requests go to `rx` (tests and replay, where there is
    /// no kernel to divert in).
    pub fn detached() -> (InlineHandle, Receiver<Cmd>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let stats = Arc::new(InlineStats::default());
        (InlineHandle { tx, stats }, rx)
    }
}

/// Sets up the kernel side and starts the two threads.
pub fn start(cfg: &InlineConfig) -> Result<InlineHandle, InlineError> {
    let nft = Nft::new(cfg);
    if cfg.setup {
        nft.install()?;
    }
    nft.flush();
    let mut q = nfq::Queue::open().map_err(|e| setup_err("cannot open the NFQUEUE socket", e))?;
    q.bind(cfg.queue)
        .map_err(|e| setup_err(&format!("cannot bind NFQUEUE {}", cfg.queue), e))?;
    // Full queue: the kernel forwards rather than drops (fail-open).
    if let Err(e) = q.set_fail_open(cfg.queue, true) {
        tracing::warn!(error = %e, "NFQUEUE fail-open not supported; a full queue drops");
    }
    let _ = q.set_queue_max_len(cfg.queue, 4096);
    let table = Arc::new(Mutex::new(FlowTable::default()));
    let stats = Arc::new(InlineStats::default());
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let (table, stats) = (table.clone(), stats.clone());
        std::thread::Builder::new()
            .name("inline-queue".into())
            .spawn(move || queue_loop(q, &table, &stats))
            .map_err(|e| setup_err("cannot start the queue thread", e))?;
    }
    {
        let (table, stats) = (table.clone(), stats.clone());
        std::thread::Builder::new()
            .name("inline-ctl".into())
            .spawn(move || Control::new(nft, table, stats).run(&rx))
            .map_err(|e| setup_err("cannot start the control thread", e))?;
    }
    tracing::info!(queue = cfg.queue, table = %cfg.nft_table, "inline announcements: diverting flows in their prompt through NFQUEUE");
    Ok(InlineHandle { tx, stats })
}

fn setup_err(what: &str, e: impl std::fmt::Display) -> InlineError {
    InlineError::Setup {
        what: what.into(),
        reason: e.to_string(),
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Reads diverted packets for ever and gives each one back, rewritten or
/// not. Any error on one packet still accepts it.
fn queue_loop(mut q: nfq::Queue, table: &Mutex<FlowTable>, stats: &InlineStats) {
    loop {
        let mut msg = match q.recv() {
            Ok(m) => m,
            Err(e) => {
                // ENOBUFS and the like: the kernel accepted what it could not queue.
                tracing::debug!(error = %e, "NFQUEUE receive failed");
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        stats.diverted.fetch_add(1, Ordering::Relaxed);
        let verdict = match table.lock() {
            Ok(mut t) => t.on_packet(msg.get_payload_mut(), now_us()),
            Err(_) => Verdict::Untouched,
        };
        if verdict == Verdict::Rewritten {
            stats.rewritten.fetch_add(1, Ordering::Relaxed);
        }
        msg.set_verdict(nfq::Verdict::Accept);
        if let Err(e) = q.verdict(msg) {
            tracing::debug!(error = %e, "NFQUEUE verdict failed");
        }
    }
}

/// How long a flow may stay diverted beyond its clip (a party that sends
/// late or slowly): then it is released whatever happened.
const GRACE: Duration = Duration::from_millis(1500);

struct Control {
    nft: Nft,
    table: Arc<Mutex<FlowTable>>,
    stats: Arc<InlineStats>,
    /// Release deadline of each diverted flow.
    deadlines: HashMap<FlowKey, Instant>,
}

impl Control {
    fn new(nft: Nft, table: Arc<Mutex<FlowTable>>, stats: Arc<InlineStats>) -> Control {
        Control {
            nft,
            table,
            stats,
            deadlines: HashMap::new(),
        }
    }

    fn run(mut self, rx: &Receiver<Cmd>) {
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(cmd) => self.on_cmd(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.nft.flush();
                    return;
                }
            }
            self.release_finished();
        }
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Divert {
                call,
                flows,
                clip,
                outcome,
            } => {
                let hold = clip.duration() + GRACE;
                let mut added = Vec::new();
                if let Ok(mut t) = self.table.lock() {
                    for (key, party) in flows {
                        let f = Flow::new(call, clip.clone(), party, outcome.clone());
                        t.flows.insert(key, f);
                        added.push(key);
                    }
                }
                if let Err(e) = self.nft.add(&added, hold + GRACE) {
                    self.stats.nft_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "cannot divert a call's media; it goes unannounced");
                    if let Some(o) = &outcome {
                        (0..2).for_each(|p| o.fail(p, "the flows could not be diverted (nft)"));
                    }
                }
                tracing::info!(
                    call = format_args!("{call:x}"),
                    flows = added.len(),
                    clip_ms = hold.as_millis() as u64 - GRACE.as_millis() as u64,
                    "inline flows diverted"
                );
                for k in added {
                    self.deadlines.insert(k, Instant::now() + hold);
                }
                self.stats.flows_added.fetch_add(2, Ordering::Relaxed);
            }
            Cmd::Release { call, why } => {
                let keys: Vec<FlowKey> = match self.table.lock() {
                    Ok(t) => t
                        .flows
                        .iter()
                        .filter(|(_, f)| f.call == call)
                        .map(|(k, f)| {
                            if let (false, Some(o)) = (f.done, &f.outcome) {
                                o.fail(f.party, why);
                            }
                            *k
                        })
                        .collect(),
                    Err(_) => Vec::new(),
                };
                self.release(&keys);
            }
        }
    }

    /// Releases flows whose clip is over (or unplayable) or whose deadline
    /// passed; a flow that never saw a packet is reported as such.
    fn release_finished(&mut self) {
        let now = Instant::now();
        let keys: Vec<FlowKey> = match self.table.lock() {
            Ok(t) => t
                .flows
                .iter()
                .filter(|(k, f)| f.done || self.deadlines.get(k).is_none_or(|d| *d <= now))
                .map(|(k, f)| {
                    if let (false, Some(o)) = (f.done, &f.outcome) {
                        if f.rewritten == 0 {
                            o.fail(
                                f.party,
                                "no RTP from the other party arrived during the prompt",
                            );
                        } else {
                            o.fail(f.party, "the other party's RTP stopped during the prompt");
                        }
                    }
                    *k
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        if !keys.is_empty() {
            self.release(&keys);
        }
    }

    fn release(&mut self, keys: &[FlowKey]) {
        if keys.is_empty() {
            return;
        }
        // Out of the kernel's set first, then out of the table: a packet
        // queued in between finds no flow and passes untouched.
        let started = Instant::now();
        if let Err(e) = self.nft.delete(keys) {
            self.stats.nft_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "cannot release diverted flows; the kernel's timeout will");
        }
        if let Ok(mut t) = self.table.lock() {
            for k in keys {
                if let Some(f) = t.flows.remove(k) {
                    tracing::info!(
                        call = format_args!("{:x}", f.call),
                        from = %k.src,
                        to = %k.dst,
                        rewritten = f.rewritten,
                        finished = f.done,
                        nft_ms = started.elapsed().as_millis() as u64,
                        "inline flow released"
                    );
                }
            }
        }
        for k in keys {
            self.deadlines.remove(k);
        }
        self.stats
            .flows_released
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
    }
}

/// The nftables and iptables commands callrec runs (a few per call, never
/// per packet).
struct Nft {
    cfg: InlineConfig,
}

impl Nft {
    fn new(cfg: &InlineConfig) -> Nft {
        Nft { cfg: cfg.clone() }
    }

    /// Creates the tables, sets and marking chains, and the FORWARD rules
    /// that queue marked packets (idempotent).
    fn install(&self) -> Result<(), InlineError> {
        let t = &self.cfg.nft_table;
        let m = self.cfg.mark;
        let mut script = String::new();
        for (fam, addr, ipk) in [("ip", "ipv4_addr", "ip"), ("ip6", "ipv6_addr", "ip6")] {
            script.push_str(&format!(
                "table {fam} {t} {{}}\ndelete table {fam} {t}\n\
                 table {fam} {t} {{\n  set divert {{ type {addr} . inet_service . {addr} . inet_service; flags timeout; }}\n  \
                 chain forward {{\n    type filter hook forward priority -150; policy accept;\n    \
                 meta l4proto udp counter comment \"all forwarded UDP\"\n    \
                 {ipk} saddr . udp sport . {ipk} daddr . udp dport @divert counter meta mark set meta mark | {m:#x} comment \"diverted\"\n  }}\n}}\n"
            ));
        }
        run_nft(&script).map_err(|reason| InlineError::Setup {
            what: format!("cannot install nftables table {t}"),
            reason,
        })?;
        for tool in ["iptables", "ip6tables"] {
            let rule = [
                "FORWARD",
                "-m",
                "mark",
                "--mark",
                &format!("{m:#x}/{m:#x}"),
                "-j",
                "NFQUEUE",
                "--queue-num",
                &self.cfg.queue.to_string(),
                "--queue-bypass",
            ];
            let present = Command::new(tool)
                .arg("-C")
                .args(rule)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if present {
                continue;
            }
            let out = Command::new(tool).arg("-I").args(rule).output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) if tool == "ip6tables" => tracing::warn!(
                    error = %String::from_utf8_lossy(&o.stderr).trim(),
                    "ip6tables NFQUEUE rule not installed; IPv6 calls go unannounced"
                ),
                Ok(o) => {
                    return Err(InlineError::Setup {
                        what: format!("{tool} -I {}", rule.join(" ")),
                        reason: String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                    });
                }
                Err(e) => return Err(setup_err(&format!("cannot run {tool}"), e)),
            }
        }
        Ok(())
    }

    /// Empties both sets (at start: flows a killed predecessor left).
    fn flush(&self) {
        let t = &self.cfg.nft_table;
        let _ = run_nft(&format!(
            "flush set ip {t} divert\nflush set ip6 {t} divert\n"
        ));
    }

    fn add(&self, keys: &[FlowKey], timeout: Duration) -> Result<(), String> {
        run_nft(&self.elements("add", keys, Some(timeout)))
    }

    fn delete(&self, keys: &[FlowKey]) -> Result<(), String> {
        // One command per element: an element the kernel's timeout already
        // removed must not make the others fail.
        let mut err = Ok(());
        for k in keys {
            if let Err(e) = run_nft(&self.elements("delete", &[*k], None))
                && !e.contains("No such file")
            {
                err = Err(e);
            }
        }
        err
    }

    fn elements(&self, verb: &str, keys: &[FlowKey], timeout: Option<Duration>) -> String {
        let t = &self.cfg.nft_table;
        let mut s = String::new();
        for k in keys {
            let fam = if k.src.is_ipv4() { "ip" } else { "ip6" };
            let to = timeout.map_or(String::new(), |d| format!(" timeout {}ms", d.as_millis()));
            s.push_str(&format!(
                "{verb} element {fam} {t} divert {{ {} . {} . {} . {}{to} }}\n",
                k.src.ip(),
                k.src.port(),
                k.dst.ip(),
                k.dst.port()
            ));
        }
        s
    }
}

/// Runs `nft -f -` with `script`; the error is nft's own message.
fn run_nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// The two flows of a call that carry a clip to its parties: towards the
/// subscriber (from the remote party's address) and towards the remote
/// party. Index 0 and 1 as in [`Outcome`].
pub fn call_flows(subscriber: SocketAddr, remote: SocketAddr) -> Vec<(FlowKey, usize)> {
    vec![
        (
            FlowKey {
                src: remote,
                dst: subscriber,
            },
            super::outcome::TO_SUBSCRIBER,
        ),
        (
            FlowKey {
                src: subscriber,
                dst: remote,
            },
            super::outcome::TO_REMOTE,
        ),
    ]
}
