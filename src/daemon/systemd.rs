//! The systemd notify protocol (`Type=notify`, `WatchdogSec=`), spoken
//! directly: one datagram per state change to `$NOTIFY_SOCKET`. Twenty
//! lines do not justify a dependency. Outside systemd every call is a
//! no-op.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub struct Notifier {
    socket: Option<(UnixDatagram, String)>,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(p) if !p.is_empty() => Notifier::to(&p),
            _ => Notifier { socket: None },
        }
    }

    /// Notifies the socket at `path` (`@name` for an abstract one).
    pub fn to(path: &str) -> Notifier {
        let socket = UnixDatagram::unbound().ok().map(|s| (s, path.to_owned()));
        Notifier { socket }
    }

    pub fn notify(&self, state: &str) {
        let Some((sock, path)) = &self.socket else {
            return;
        };
        let sent = if let Some(name) = path.strip_prefix('@') {
            // An abstract socket (Linux): the name after the '@'.
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
        } else {
            sock.send_to(state.as_bytes(), path)
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }

    /// Half the watchdog period systemd asked for, if it asked.
    pub fn watchdog_interval() -> Option<Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_arrive_as_datagrams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = Notifier::to(path.to_str().unwrap());
        n.notify("READY=1\nSTATUS=capturing on lo");
        n.notify("WATCHDOG=1");
        let mut buf = [0u8; 256];
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"READY=1\nSTATUS=capturing on lo");
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"WATCHDOG=1");
    }

    #[test]
    fn abstract_socket_names_work() {
        let name = format!("callrec-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        Notifier::to(&format!("@{name}")).notify("STOPPING=1");
        let mut buf = [0u8; 64];
        let k = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..k], b"STOPPING=1");
    }
}
