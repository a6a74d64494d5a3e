//! A network namespace made by the test, with a veth pair inside it: the
//! daemon captures on `va`, tcpreplay sends on `vb`. Nothing else speaks
//! there (IPv6 is off, so no router or neighbour solicitations), so the
//! link is truly silent when the test stops sending.
#![allow(dead_code)]

use std::process::{Command, Stdio};

pub struct Netns {
    pub name: String,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Netns {
    /// Makes `cr-<tag>-<pid>` with `va`/`vb` up, or prints why the test
    /// `tag` is skipped (no root, no iproute2) and returns `None`.
    pub fn new(tag: &str) -> Option<Netns> {
        let name = format!("cr-{tag}-{}", std::process::id());
        let _ = ip(&["netns", "del", &name]);
        if !ip(&["netns", "add", &name]) {
            eprintln!("SKIP {tag}: cannot create a network namespace (needs root and iproute2)");
            return None;
        }
        let ns = Netns { name };
        let ok = ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"])
            && ns.sysctl("net.ipv6.conf.all.disable_ipv6=1")
            && ns.sysctl("net.ipv6.conf.default.disable_ipv6=1")
            && ns.ip(&["link", "set", "va", "up"])
            && ns.ip(&["link", "set", "vb", "up"])
            && ns.ip(&["link", "set", "lo", "up"]);
        if !ok {
            eprintln!("SKIP {tag}: cannot set up veth in {}", ns.name);
            return None;
        }
        Some(ns)
    }

    /// `ip -n NS ARGS...`.
    pub fn ip(&self, args: &[&str]) -> bool {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip(&a)
    }

    fn sysctl(&self, kv: &str) -> bool {
        self.cmd("sysctl")
            .args(["-q", "-w", kv])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `program` run inside the namespace (`ip netns exec` execs it, so
    /// the child's pid is the program's own: signals reach it directly).
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Plays `pcap` onto `vb` at its own pace and waits until it is sent.
    pub fn replay(&self, pcap: &std::path::Path) {
        let st = self
            .cmd("tcpreplay")
            .args(["-q", "-i", "vb"])
            .arg(pcap)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "tcpreplay into {}", self.name);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}
