//! The systemd notify protocol (`Type=notify`, `WatchdogSec=`), through the
//! `sd-notify` crate: one datagram per state change to `$NOTIFY_SOCKET`
//! (sd_notify(3)). Outside systemd every call is a no-op.

use sd_notify::NotifyState;
use std::time::Duration;

/// Sends state changes (`READY=1`, `WATCHDOG=1`, `STOPPING=1`, `STATUS=...`)
/// to the service manager that started us, if one did.
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// A notifier for `$NOTIFY_SOCKET` (a path, or `@name` for an abstract
    /// socket); silent when the variable is unset or empty.
    pub fn from_env() -> Notifier {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some_and(|p| !p.is_empty());
        Notifier { enabled }
    }

    /// Sends `state`: newline-separated `KEY=VALUE` assignments, as
    /// sd_notify(3) defines them. A failure is logged, never fatal: the
    /// service manager's timeouts handle a daemon it cannot hear.
    pub fn notify(&self, state: &str) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(&[NotifyState::Custom(state)]) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }

    /// Half the watchdog period systemd asked for (`WATCHDOG_USEC`, for this
    /// process when `WATCHDOG_PID` is set), if it asked.
    pub fn watchdog_interval() -> Option<Duration> {
        sd_notify::watchdog_enabled()
            .filter(|d| !d.is_zero())
            .map(|d| d / 2)
    }
}
