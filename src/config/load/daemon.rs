//! `[daemon]`: `control_socket` (a path, `/run/callrec/control.sock` by
//! default) and `metrics_listen`, the Prometheus text endpoint as
//! ADDRESS:PORT (e.g. `127.0.0.1:9477`); absent, empty or `"off"` = off.

use super::{ConfigError, Ctx, S};
use crate::config::Daemon;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDaemon {
    control_socket: S<String>,
    metrics_listen: S<String>,
}

pub(super) fn daemon(cx: &Ctx, rm: &RawDaemon) -> Result<Daemon, ConfigError> {
    Ok(Daemon {
        control_socket: rm
            .control_socket
            .as_ref()
            .map(|s| PathBuf::from(s.get_ref()))
            .unwrap_or_else(|| "/run/callrec/control.sock".into()),
        metrics_listen: match &rm.metrics_listen {
            None => None,
            Some(s) if s.get_ref() == "off" || s.get_ref().is_empty() => None,
            Some(s) => Some(s.get_ref().parse().map_err(|_| {
                cx.err(
                    s.span(),
                    "daemon.metrics_listen",
                    format!(
                        "expected ADDRESS:PORT like 127.0.0.1:9477 or \"off\", got {:?}",
                        s.get_ref()
                    ),
                )
            })?),
        },
    })
}
