//! `[overload]`: `priority_numbers`, the disaster-priority lines, written
//! as telephone numbers and kept normalised to national numbers
//! (`0312340099`); a number with `#` or `*` is refused. Empty by default.

use super::{ConfigError, Ctx, S};
use crate::calls::numbering;
use crate::config::Overload;
use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOverload {
    priority_numbers: S<Vec<Spanned<String>>>,
}

pub(super) fn overload(cx: &Ctx, r: &RawOverload) -> Result<Overload, ConfigError> {
    let mut priority_numbers = Vec::new();
    for n in r.priority_numbers.iter().flat_map(|l| l.get_ref()) {
        let norm = numbering::normalize(n.get_ref())
            .filter(|x| !x.contains(['#', '*']))
            .ok_or_else(|| {
                cx.err(
                    n.span(),
                    "overload.priority_numbers",
                    format!("{:?} is not a telephone number", n.get_ref()),
                )
            })?;
        priority_numbers.push(norm);
    }
    Ok(Overload { priority_numbers })
}
