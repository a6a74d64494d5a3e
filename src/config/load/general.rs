//! `[general]`: `timezone`, the offset from UTC (`+09:00`) used for every
//! time written in metadata; +09:00 when absent.

use super::{ConfigError, Ctx, S};
use crate::config::General;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGeneral {
    timezone: S<String>,
}

pub(super) fn general(cx: &Ctx, r: &RawGeneral) -> Result<General, ConfigError> {
    Ok(General {
        utc_offset_secs: match &r.timezone {
            None => 9 * 3600,
            Some(s) => crate::time::parse_offset(s.get_ref()).ok_or_else(|| {
                cx.err(
                    s.span(),
                    "general.timezone",
                    format!("expected an offset like +09:00, got {:?}", s.get_ref()),
                )
            })?,
        },
    })
}
