//! TOML text to the validated [`Config`](super::Config).
//!
//! Every value is read with its byte span (`toml::Spanned`), so an error
//! names the file, the 1-based line, the key as a path (`contract[1].guidance`)
//! and the reason: `conf/x.toml:17: contract[1].guidance: must be 1..5, got 7`.
//! Errors found by the TOML parser itself (syntax, wrong types, unknown keys)
//! are mapped to the same form by locating their span in the text.
//!
//! Unknown keys are errors: a typo must not silently change behaviour.
//! Every key has a default that works except the contract and destination
//! fields that identify something. Relative paths (`spool_dir`, `announce.dir`,
//! `identity`) are resolved against the configuration file's directory.
//!
//! `load_str` parses the whole text into raw, spanned values, then reads
//! each section with its own reader (one module each under `load/`), in
//! the fixed order of `load_str`: of two errors in different sections, the
//! earlier reader's is reported. Checks across sections are made by the
//! later reader:
//! destinations against `delivery.allowed_networks`, contracts against the
//! destinations.

use crate::config::Config;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

mod announce;
mod capture;
mod contracts;
mod ctx;
mod daemon;
mod delivery;
mod destinations;
mod general;
#[path = "history.rs"]
mod history_cfg;
mod limits;
mod overload;
mod recording;
#[path = "sources.rs"]
mod sources;
mod units;

use ctx::{Ctx, IntOrStr, S, safe_name};
pub use destinations::base64_decode;
pub use units::parse_duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `line` is 1-based; 0 when the error is not tied to one line.
    #[error("{}:{line}: {key}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        reason: String,
    },
}

impl ConfigError {
    /// The 1-based line, when the error has one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } if *line > 0 => Some(*line),
            _ => None,
        }
    }
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, path)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    general: general::RawGeneral,
    #[serde(default)]
    capture: capture::RawCapture,
    #[serde(default)]
    recording: recording::RawRecording,
    #[serde(default)]
    announce: announce::RawAnnounce,
    #[serde(default)]
    overload: overload::RawOverload,
    #[serde(default)]
    delivery: delivery::RawDelivery,
    #[serde(default)]
    destination: Vec<Spanned<destinations::RawDestination>>,
    #[serde(default)]
    contract: Vec<Spanned<contracts::RawContract>>,
    #[serde(default)]
    limits: limits::RawLimits,
    #[serde(default)]
    daemon: daemon::RawDaemon,
    #[serde(default)]
    history: history_cfg::RawHistory,
    #[serde(default)]
    hep: history_cfg::RawHep,
    #[serde(default)]
    api: history_cfg::RawApi,
    #[serde(default)]
    forward: sources::RawForward,
}

pub fn load_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let cx = Ctx { path, text };
    let raw: Raw = toml::from_str(text).map_err(|e| cx.from_toml(e))?;
    // The readers run in this order: it decides which of two errors is reported.
    let general = general::general(&cx, &raw.general)?;
    let capture = capture::capture(&cx, &raw.capture)?;
    let recording = recording::recording(&cx, &raw.recording)?;
    let announce = announce::announce(&cx, &raw.announce)?;
    let overload = overload::overload(&cx, &raw.overload)?;
    let delivery = delivery::delivery(&cx, &raw.delivery)?;
    let destinations = destinations::destinations(&cx, &raw.destination, &delivery)?;
    let contracts = contracts::contracts(&cx, &raw.contract, &destinations)?;
    let limits = limits::limits(&cx, &raw.limits)?;
    let daemon = daemon::daemon(&cx, &raw.daemon)?;
    let forward = sources::forward(&cx, &raw.forward)?;
    Ok(Config {
        source: path.to_path_buf(),
        general,
        capture,
        recording,
        announce,
        overload,
        delivery,
        destinations,
        contracts,
        limits,
        daemon,
        history: history_cfg::history(&cx, &raw.history)?,
        hep: history_cfg::hep(&cx, &raw.hep)?,
        api: history_cfg::api(&cx, &raw.api)?,
        forward,
    })
}
