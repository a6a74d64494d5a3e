//! `[history]`, `[hep]` and `[api]` (issue 16), parsed with the loader's
//! context so errors name the file, line and key like every other section.

use super::{Ctx, S};
use crate::config::{Api, Hep, History};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHistory {
    keep: S<String>,
    appliance: S<String>,
    postgres: S<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHep {
    collector: S<String>,
    all_calls: Option<bool>,
    node_id: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    token: S<String>,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "callrec".into())
}

pub(super) fn history(cx: &Ctx, r: &RawHistory) -> Result<History, super::ConfigError> {
    let keep = match &r.keep {
        Some(s) if s.get_ref() == "forever" => None,
        Some(_) => Some(cx.duration("history.keep", &r.keep, Default::default())?),
        None => None,
    };
    let appliance = match &r.appliance {
        Some(a) => {
            let v = a.get_ref();
            if v.is_empty()
                || v.len() > 64
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(cx.err(
                    a.span(),
                    "history.appliance",
                    format!("expected a name of letters, digits, '-', '_' or '.', got {v:?}"),
                ));
            }
            v.clone()
        }
        None => host_name(),
    };
    let postgres = match &r.postgres {
        Some(p)
            if !p.get_ref().starts_with("postgres://")
                && !p.get_ref().starts_with("postgresql://") =>
        {
            return Err(cx.err(
                p.span(),
                "history.postgres",
                "expected a URL like postgres://callrec@192.0.2.5/callrec",
            ));
        }
        p => p.as_ref().map(|p| p.get_ref().clone()),
    };
    Ok(History {
        keep,
        appliance,
        postgres,
    })
}

pub(super) fn hep(cx: &Ctx, r: &RawHep) -> Result<Hep, super::ConfigError> {
    let collector = match &r.collector {
        None => None,
        Some(s) if s.get_ref() == "off" => None,
        Some(s) => Some(s.get_ref().parse().map_err(|_| {
            cx.err(
                s.span(),
                "hep.collector",
                format!(
                    "expected ADDRESS:PORT like 192.0.2.20:9060, got {:?}",
                    s.get_ref()
                ),
            )
        })?),
    };
    Ok(Hep {
        collector,
        all_calls: r.all_calls.unwrap_or(false),
        node_id: r.node_id.unwrap_or(2001),
    })
}

pub(super) fn api(cx: &Ctx, r: &RawApi) -> Result<Api, super::ConfigError> {
    let token = match &r.token {
        Some(t)
            if t.get_ref().len() < 16
                || t.get_ref()
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control()) =>
        {
            return Err(cx.err(
                t.span(),
                "api.token",
                "expected at least 16 characters without spaces",
            ));
        }
        t => t.as_ref().map(|t| t.get_ref().clone()),
    };
    Ok(Api { token })
}
