//! The loader's context: the file's path and text, so that every reader
//! reports an error with the file, the 1-based line and the key, and the
//! value readers shared by every section (durations, sizes, integers in a
//! range, one of a list of names, paths relative to the file).
//!
//! Errors found by the TOML parser itself (syntax, wrong types, unknown
//! keys) are mapped to the same form by locating their span in the text.

use super::ConfigError;
use super::units::{parse_duration, parse_size};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A value with its byte span; `None` when the key is absent.
pub(super) type S<T> = Option<Spanned<T>>;

/// An integer or a string with a unit ("10GB", "20Mbit").
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged)]
pub(super) enum IntOrStr {
    Int(i64),
    Str(String),
}

/// Offset -> 1-based line.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The key path at a byte offset, found from the text (for errors the TOML
/// parser reports with a span only): the enclosing `[table]` or
/// `[[array]]` (with its 0-based index) and the nearest `key =` at or above
/// the offset within that table.
fn key_at(text: &str, offset: usize) -> String {
    let mut table = String::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut key = String::new();
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if pos > offset {
            break;
        }
        let t = line.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim().to_string();
            let n = counts.entry(name.clone()).or_insert(0);
            table = format!("{name}[{n}]");
            *n += 1;
            key.clear();
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = name.trim().to_string();
            key.clear();
        } else if let Some((k, _)) = t.split_once('=') {
            let k = k.trim();
            if !k.is_empty()
                && !k.starts_with('#')
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.\"".contains(c))
            {
                key = k.trim_matches('"').to_string();
            }
        }
        pos += line.len();
    }
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}

pub(super) struct Ctx<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
}

impl Ctx<'_> {
    pub(super) fn err(
        &self,
        span: std::ops::Range<usize>,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: line_of(self.text, span.start),
            key: key.into(),
            reason: reason.into(),
        }
    }

    // "from" the TOML error, in the context of this file.
    #[allow(clippy::wrong_self_convention)]
    pub(super) fn from_toml(&self, e: toml::de::Error) -> ConfigError {
        let span = e.span().unwrap_or(0..0);
        let msg = e
            .message()
            .trim()
            .replace('\n', " ")
            .replace("expected i64", "expected an integer");
        let mut key = key_at(self.text, span.start);
        // The parser points at the unknown key itself, or at the table that lacks a key.
        if let Some(rest) = msg.strip_prefix("unknown field `") {
            let name = rest.split('`').next().unwrap_or("");
            let table = key.rsplit_once('.').map(|(t, _)| t.to_string());
            key = match table {
                Some(t) if !key.ends_with(&format!("].{name}")) || key.starts_with(name) => {
                    format!("{t}.{name}")
                }
                _ if key.is_empty() || key == name => name.to_string(),
                _ => key,
            };
            if !key.ends_with(name) {
                key = format!("{key}.{name}");
            }
            return self.err(span, key, format!("unknown key `{name}`"));
        }
        if let Some(rest) = msg.strip_prefix("missing field `") {
            let name = rest.split('`').next().unwrap_or("");
            let table = key.split('.').next().unwrap_or("").to_string();
            let key = if table.is_empty() {
                name.to_string()
            } else {
                format!("{table}.{name}")
            };
            return self.err(span, key, "required key is missing");
        }
        self.err(span, key, msg)
    }

    pub(super) fn resolve(&self, p: &str) -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_relative() {
            match self.path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => return dir.join(p),
                _ => {}
            }
        }
        p
    }

    pub(super) fn duration(
        &self,
        key: &str,
        v: &S<String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => parse_duration(s.get_ref()).ok_or_else(|| {
                self.err(
                    s.span(),
                    key,
                    format!(
                        "expected a duration like 250ms, 5s, 10m, 24h or 7d, got {:?}",
                        s.get_ref()
                    ),
                )
            }),
        }
    }

    pub(super) fn size(
        &self,
        key: &str,
        v: &S<IntOrStr>,
        default: u64,
    ) -> Result<u64, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => match s.get_ref() {
                IntOrStr::Int(n) => u64::try_from(*n)
                    .map_err(|_| self.err(s.span(), key, format!("must not be negative, got {n}"))),
                IntOrStr::Str(t) => parse_size(t).ok_or_else(|| {
                    self.err(
                        s.span(),
                        key,
                        format!("expected a size like 65536, 64kB, 16MiB or 10GB, got {t:?}"),
                    )
                }),
            },
        }
    }

    pub(super) fn int(
        &self,
        key: &str,
        v: &S<i64>,
        default: i64,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<i64, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => {
                let n = *s.get_ref();
                if range.contains(&n) {
                    Ok(n)
                } else {
                    Err(self.err(
                        s.span(),
                        key,
                        format!("must be {}..{}, got {n}", range.start(), range.end()),
                    ))
                }
            }
        }
    }

    pub(super) fn choice<T: Copy>(
        &self,
        key: &str,
        v: &S<String>,
        default: T,
        options: &[(&str, T)],
    ) -> Result<T, ConfigError> {
        let Some(s) = v else { return Ok(default) };
        options
            .iter()
            .find(|(name, _)| *name == s.get_ref().as_str())
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                self.err(
                    s.span(),
                    key,
                    format!(
                        "expected one of {}, got {:?}",
                        names.join(", "),
                        s.get_ref()
                    ),
                )
            })
    }
}

/// A name that becomes a directory or file name: `[A-Za-z0-9._-]`, not `.`/`..`.
pub(super) fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
