//! `[[contract]]`: which calls are recorded, how, and where they go.
//!
//! | key | unit | default |
//! |---|---|---|
//! | `id` | A-Z a-z 0-9 . _ -, at most 64, unique: it names a directory | required |
//! | `service` | mobile (prefix 0077-26) or fixed (prefix 0077-27) | required |
//! | `numbers` | 0ABJ, 050, 070, 080 or 090 numbers, each in one contract only; +81 and separators accepted, kept normalised | required, at least one |
//! | `guidance` | announcement 1..5 | required |
//! | `channels` | mono or stereo (left: subscriber, right: remote) | mono |
//! | `sample_rate` | 8000, 16000 or auto | auto |
//! | `segments` | all or longest | all |
//! | `pause_dtmf`, `resume_dtmf` | 1 to 8 of 0-9 * # A-D, both or neither, neither starting the other | none |
//! | `destination` | the name of a `[[destination]]` | required |

use super::{ConfigError, Ctx, S, safe_name};
use crate::calls::numbering;
use crate::config::{Channels, Contract, Destination, SampleRate, SegmentPolicy, Service};
use serde::Deserialize;
use std::collections::HashMap;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawContract {
    id: Spanned<String>,
    service: Spanned<String>,
    numbers: Spanned<Vec<Spanned<String>>>,
    guidance: Spanned<i64>,
    channels: S<String>,
    sample_rate: S<String>,
    segments: S<String>,
    pause_dtmf: S<String>,
    resume_dtmf: S<String>,
    destination: Spanned<String>,
}

/// Every `[[contract]]`, in order, each checked against `destinations`.
pub(super) fn contracts(
    cx: &Ctx,
    raw: &[Spanned<RawContract>],
    destinations: &[Destination],
) -> Result<Vec<Contract>, ConfigError> {
    let mut contracts: Vec<Contract> = Vec::new();
    // Number -> the contract id it belongs to: a number is in one contract only.
    let mut owner: HashMap<String, String> = HashMap::new();
    for (i, c) in raw.iter().enumerate() {
        let c = contract(cx, i, c.get_ref(), &contracts, &mut owner, destinations)?;
        contracts.push(c);
    }
    Ok(contracts)
}

/// `contract[i]`; `before` are the contracts above it (ids are unique).
fn contract(
    cx: &Ctx,
    i: usize,
    c: &RawContract,
    before: &[Contract],
    owner: &mut HashMap<String, String>,
    destinations: &[Destination],
) -> Result<Contract, ConfigError> {
    let k = |f: &str| format!("contract[{i}].{f}");
    let id = id(cx, &k("id"), c, before)?;
    let service = cx.choice(
        &k("service"),
        &Some(c.service.clone()),
        Service::Mobile,
        &[("mobile", Service::Mobile), ("fixed", Service::Fixed)],
    )?;
    let numbers = numbers(cx, &k("numbers"), c, owner)?;
    let g = *c.guidance.get_ref();
    if !(1..=5).contains(&g) {
        return Err(cx.err(
            c.guidance.span(),
            k("guidance"),
            format!("must be 1..5, got {g}"),
        ));
    }
    let (channels, sample_rate, segments) = media(cx, &k, c)?;
    dtmf(cx, &k, c)?;
    let dest = c.destination.get_ref();
    if !destinations.iter().any(|d| &d.name == dest) {
        return Err(cx.err(
            c.destination.span(),
            k("destination"),
            format!("no [[destination]] named {dest:?}"),
        ));
    }
    Ok(Contract {
        id: id.clone(),
        service,
        numbers,
        guidance: g as u8,
        channels,
        sample_rate,
        segments,
        pause_dtmf: c.pause_dtmf.as_ref().map(|s| s.get_ref().clone()),
        resume_dtmf: c.resume_dtmf.as_ref().map(|s| s.get_ref().clone()),
        destination: dest.clone(),
    })
}

/// `id`: it becomes a directory name, so it is a safe name, and unique.
fn id<'a>(
    cx: &Ctx,
    key: &str,
    c: &'a RawContract,
    before: &[Contract],
) -> Result<&'a String, ConfigError> {
    let id = c.id.get_ref();
    if !safe_name(id) {
        return Err(cx.err(
            c.id.span(),
            key,
            format!("{id:?}: use only A-Z a-z 0-9 . _ - (at most 64); it becomes a directory name"),
        ));
    }
    if before.iter().any(|x| &x.id == id) {
        return Err(cx.err(
            c.id.span(),
            key,
            format!("contract {id:?} is defined twice"),
        ));
    }
    Ok(id)
}

/// `numbers`, normalised; a number may appear once, in one contract.
/// `owner` maps the numbers seen so far to their contract's id.
fn numbers(
    cx: &Ctx,
    key: &str,
    c: &RawContract,
    owner: &mut HashMap<String, String>,
) -> Result<Vec<String>, ConfigError> {
    if c.numbers.get_ref().is_empty() {
        return Err(cx.err(
            c.numbers.span(),
            key,
            "a contract needs at least one number",
        ));
    }
    let id = c.id.get_ref();
    let mut numbers = Vec::new();
    for n in c.numbers.get_ref() {
        let norm = numbering::normalize(n.get_ref()).ok_or_else(|| {
            cx.err(
                n.span(),
                key,
                format!("{:?} is not a telephone number", n.get_ref()),
            )
        })?;
        let class = numbering::classify(&norm);
        if !class.is_subscriber_number() {
            return Err(cx.err(
                n.span(),
                key,
                format!(
                    "{norm} is a {} number; a contract number must be 0ABJ, 050, 070, 080 or 090",
                    class.as_str()
                ),
            ));
        }
        if let Some(other) = owner.get(&norm) {
            let why = if other == id {
                format!("{norm} is listed twice")
            } else {
                format!("{norm} already belongs to contract {other:?}")
            };
            return Err(cx.err(n.span(), key, why));
        }
        owner.insert(norm.clone(), id.clone());
        numbers.push(norm);
    }
    Ok(numbers)
}

/// `channels`, `sample_rate`, `segments`.
fn media(
    cx: &Ctx,
    k: &dyn Fn(&str) -> String,
    c: &RawContract,
) -> Result<(Channels, SampleRate, SegmentPolicy), ConfigError> {
    let channels = cx.choice(
        &k("channels"),
        &c.channels,
        Channels::Mono,
        &[("mono", Channels::Mono), ("stereo", Channels::Stereo)],
    )?;
    let sample_rate = cx.choice(
        &k("sample_rate"),
        &c.sample_rate,
        SampleRate::Auto,
        &[
            ("8000", SampleRate::Narrow),
            ("16000", SampleRate::Wide),
            ("auto", SampleRate::Auto),
        ],
    )?;
    let segments = cx.choice(
        &k("segments"),
        &c.segments,
        SegmentPolicy::All,
        &[
            ("all", SegmentPolicy::All),
            ("longest", SegmentPolicy::Longest),
        ],
    )?;
    Ok((channels, sample_rate, segments))
}

/// `pause_dtmf` and `resume_dtmf`: both or neither, and neither may start
/// the other, or one sequence would be read as the other.
fn dtmf(cx: &Ctx, k: &dyn Fn(&str) -> String, c: &RawContract) -> Result<(), ConfigError> {
    for (f, v) in [
        ("pause_dtmf", &c.pause_dtmf),
        ("resume_dtmf", &c.resume_dtmf),
    ] {
        if let Some(s) = v
            && !valid_dtmf(s.get_ref())
        {
            return Err(cx.err(
                s.span(),
                k(f),
                format!("{:?}: 1 to 8 of 0-9 * # A-D", s.get_ref()),
            ));
        }
    }
    match (&c.pause_dtmf, &c.resume_dtmf) {
        (Some(p), Some(r)) => {
            let (p0, r0) = (p.get_ref(), r.get_ref());
            if p0.starts_with(r0.as_str()) || r0.starts_with(p0.as_str()) {
                return Err(cx.err(
                    r.span(),
                    k("resume_dtmf"),
                    format!("{r0:?} must differ from pause_dtmf {p0:?} (and neither may start the other)"),
                ));
            }
        }
        (Some(p), None) => {
            return Err(cx.err(
                p.span(),
                k("resume_dtmf"),
                "pause_dtmf is set, resume_dtmf is missing",
            ));
        }
        (None, Some(r)) => {
            return Err(cx.err(
                r.span(),
                k("pause_dtmf"),
                "resume_dtmf is set, pause_dtmf is missing",
            ));
        }
        (None, None) => {}
    }
    Ok(())
}

fn valid_dtmf(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 8
        && s.chars()
            .all(|c| matches!(c, '0'..='9' | '*' | '#' | 'A'..='D'))
}
