//! `[limits]`: memory bounds for hostile or broken traffic.
//!
//! | key | unit | default |
//! |---|---|---|
//! | `fragment_bytes` | size held by incomplete IP fragment sets | 16MiB |
//! | `fragment_timeout` | duration | 30s |
//! | `tcp_stream_bytes` | size buffered per TCP stream | 256KiB |
//! | `tcp_streams` | streams tracked at once, 1..10000000 | 65536 |
//! | `tcp_idle_timeout` | duration | 300s |
//! | `max_dialogs` | dialogs tracked at once, 1..100000000 | 200000 |
//! | `sip_message_bytes` | size, over UDP and TCP, at least 1024 | 64KiB |
//! | `early_dialogs` | unanswered INVITEs followed at once, 1..10000000 | 20000 |
//! | `early_dialogs_per_source` | per signalling address, 1..10000000 | 5000 |
//! | `clock_tolerance` | duration off the capture clock, 1ms..10s | 100ms |
//!
//! The defaults are [`Limits::default`].

use super::{ConfigError, Ctx, IntOrStr, S};
use crate::config::Limits;
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    fragment_bytes: S<IntOrStr>,
    fragment_timeout: S<String>,
    tcp_stream_bytes: S<IntOrStr>,
    tcp_streams: S<i64>,
    tcp_idle_timeout: S<String>,
    max_dialogs: S<i64>,
    sip_message_bytes: S<IntOrStr>,
    early_dialogs: S<i64>,
    early_dialogs_per_source: S<i64>,
    clock_tolerance: S<String>,
}

pub(super) fn limits(cx: &Ctx, rl: &RawLimits) -> Result<Limits, ConfigError> {
    let usize_of = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let limits = Limits {
        fragment_bytes: usize_of(cx.size("limits.fragment_bytes", &rl.fragment_bytes, 16 << 20)?),
        fragment_timeout: cx.duration(
            "limits.fragment_timeout",
            &rl.fragment_timeout,
            Duration::from_secs(30),
        )?,
        tcp_stream_bytes: usize_of(cx.size(
            "limits.tcp_stream_bytes",
            &rl.tcp_stream_bytes,
            256 << 10,
        )?),
        tcp_streams: cx.int(
            "limits.tcp_streams",
            &rl.tcp_streams,
            65_536,
            1..=10_000_000,
        )? as usize,
        tcp_idle_timeout: cx.duration(
            "limits.tcp_idle_timeout",
            &rl.tcp_idle_timeout,
            Duration::from_secs(300),
        )?,
        max_dialogs: cx.int(
            "limits.max_dialogs",
            &rl.max_dialogs,
            200_000,
            1..=100_000_000,
        )? as usize,
        sip_message_bytes: usize_of(cx.size(
            "limits.sip_message_bytes",
            &rl.sip_message_bytes,
            64 << 10,
        )?),
        early_dialogs: early_dialogs(cx, "limits.early_dialogs", &rl.early_dialogs, 20_000)?,
        early_dialogs_per_source: early_dialogs(
            cx,
            "limits.early_dialogs_per_source",
            &rl.early_dialogs_per_source,
            5_000,
        )?,
        clock_tolerance: cx.duration(
            "limits.clock_tolerance",
            &rl.clock_tolerance,
            Duration::from_millis(100),
        )?,
    };
    bounds(cx, rl, &limits)?;
    Ok(limits)
}

fn early_dialogs(cx: &Ctx, key: &str, v: &S<i64>, default: i64) -> Result<usize, ConfigError> {
    Ok(cx.int(key, v, default, 1..=10_000_000)? as usize)
}

/// The bounds checked once the values are read: `clock_tolerance` is
/// 1ms..10s, `sip_message_bytes` at least 1024.
fn bounds(cx: &Ctx, rl: &RawLimits, limits: &Limits) -> Result<(), ConfigError> {
    if limits.clock_tolerance.is_zero() || limits.clock_tolerance > Duration::from_secs(10) {
        let span = rl
            .clock_tolerance
            .as_ref()
            .map(|s| s.span())
            .unwrap_or(0..0);
        return Err(cx.err(span, "limits.clock_tolerance", "must be 1ms..10s"));
    }
    if limits.sip_message_bytes < 1024 {
        let span = rl
            .sip_message_bytes
            .as_ref()
            .map(|s| s.span())
            .unwrap_or(0..0);
        return Err(cx.err(span, "limits.sip_message_bytes", "must be at least 1024"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use std::path::Path;

    #[test]
    fn hostile_traffic_limits() {
        let base = r#"
[delivery]
allowed_networks = ["192.0.2.0/24"]
[[destination]]
name = "acme"
url = "sftp://rec@192.0.2.10:22/in"
identity = "/k"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5WY6hfGbgKdwr827M61Dy9fKgVJoLX3pwmoStKx7MO"
"#;
        let load = |extra: &str| load_str(&format!("{base}{extra}"), Path::new("t.toml"));
        let d = load("").unwrap().limits;
        let def = Limits::default();
        assert_eq!(
            (
                d.early_dialogs,
                d.early_dialogs_per_source,
                d.clock_tolerance
            ),
            (
                def.early_dialogs,
                def.early_dialogs_per_source,
                def.clock_tolerance
            )
        );
        let l = load("[limits]\nearly_dialogs = 10\nearly_dialogs_per_source = 2\nclock_tolerance = \"250ms\"\n")
            .unwrap()
            .limits;
        assert_eq!(
            (
                l.early_dialogs,
                l.early_dialogs_per_source,
                l.clock_tolerance
            ),
            (10, 2, Duration::from_millis(250))
        );
        for bad in [
            "early_dialogs = 0",
            "early_dialogs_per_source = -1",
            "clock_tolerance = \"0ms\"",
            "clock_tolerance = \"1m\"",
        ] {
            let e = load(&format!("[limits]\n{bad}\n")).unwrap_err().to_string();
            assert!(e.contains("limits."), "{bad}: {e}");
        }
    }
}
