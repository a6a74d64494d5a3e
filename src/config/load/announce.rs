//! `[announce]`: how the guidance prompt reaches the parties.
//!
//! | key | unit | default |
//! |---|---|---|
//! | `mode` | inline, inject, udp, pcap or off | off |
//! | `interface` | interface name; required for inject | none |
//! | `dir` | path of guidance1.wav .. guidance5.wav, relative to the configuration file | `/usr/share/callrec/guidance-audio` |
//! | `queue` | inline: NFQUEUE number, 0..65535 | 14 |
//! | `mark` | inline: mark bit(s) on diverted packets, 1..0xffffffff | 0x140000 |
//! | `nft_table` | inline: nftables tables callrec owns; letters, digits and _ | "callrec" |
//! | `nft_setup` | inline: false when the operator's firewall installs table and FORWARD rule | true |

use super::{ConfigError, Ctx, S};
use crate::announce::inline::InlineConfig;
use crate::config::{Announce, AnnounceMode};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAnnounce {
    mode: S<String>,
    interface: S<String>,
    dir: S<String>,
    queue: S<i64>,
    mark: S<i64>,
    nft_table: S<String>,
    nft_setup: S<bool>,
}

pub(super) fn announce(cx: &Ctx, ra: &RawAnnounce) -> Result<Announce, ConfigError> {
    let mode = cx.choice(
        "announce.mode",
        &ra.mode,
        AnnounceMode::Off,
        &[
            ("inline", AnnounceMode::Inline),
            ("inject", AnnounceMode::Inject),
            ("udp", AnnounceMode::Udp),
            ("pcap", AnnounceMode::Pcap),
            ("off", AnnounceMode::Off),
        ],
    )?;
    if mode == AnnounceMode::Inject && ra.interface.is_none() {
        let span = ra.mode.as_ref().map(|s| s.span()).unwrap_or(0..0);
        return Err(cx.err(
            span,
            "announce.interface",
            "required when announce.mode is \"inject\"",
        ));
    }
    Ok(Announce {
        mode,
        inline: inline(cx, ra)?,
        interface: ra.interface.as_ref().map(|s| s.get_ref().clone()),
        dir: match &ra.dir {
            None => "/usr/share/callrec/guidance-audio".into(),
            Some(s) => cx.resolve(s.get_ref()),
        },
    })
}

/// `queue`, `mark`, `nft_table`, `nft_setup`: checked in every mode, not
/// only inline.
fn inline(cx: &Ctx, ra: &RawAnnounce) -> Result<InlineConfig, ConfigError> {
    let nft_table = ra
        .nft_table
        .as_ref()
        .map_or_else(|| "callrec".to_owned(), |s| s.get_ref().clone());
    if let Some(s) = &ra.nft_table
        && (nft_table.is_empty()
            || !nft_table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(cx.err(s.span(), "announce.nft_table", "letters, digits and _ only"));
    }
    let mark = cx.int("announce.mark", &ra.mark, 0x0014_0000, 1..=0xffff_ffff)? as u32;
    Ok(InlineConfig {
        queue: cx.int("announce.queue", &ra.queue, 14, 0..=65535)? as u16,
        mark,
        nft_table,
        setup: ra.nft_setup.as_ref().is_none_or(|b| *b.get_ref()),
    })
}
