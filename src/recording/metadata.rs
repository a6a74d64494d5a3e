//! The JSON that travels beside each WAV (`schema: 1`).
//!
//! Receivers rely on it: field names and meanings are the contract in
//! DESIGN.md. It is published after the WAV, so a receiver that sees it
//! knows the WAV is complete.

use serde::Serialize;

#[derive(Clone, Debug, Serialize)]
pub struct Metadata {
    pub schema: u32,
    pub call_id: String,
    pub contract: String,
    pub service: String,
    pub direction: String,
    pub prefix: Option<String>,
    /// "anonymous" when the caller withheld the number.
    pub caller: String,
    pub callee: String,
    pub invite_at: String,
    pub answered_at: String,
    pub guidance: GuidanceMeta,
    pub ended_at: String,
    pub end_reason: String,
    pub segment: SegmentMeta,
    pub audio: AudioMeta,
    pub pauses: Vec<PauseMeta>,
    pub quality: QualityMeta,
    /// Why none of the audio could be decoded ("media-encrypted",
    /// "codec-unsupported:NAME"); such a segment is never delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undecodable: Option<String>,
    /// When the announcement started reaching the parties (billing starts
    /// there); the answer when none was played.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billing_start: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GuidanceMeta {
    pub id: u8,
    /// False when the prompt could not be sent (or announcements are off).
    pub played: bool,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    /// `announce.mode` the prompt was played in ("inline", "inject", "off"...).
    pub mode: String,
    /// Prompt packets sent (or rewritten, inline) towards each party.
    pub sent: SentMeta,
    /// "in-stream" when the subscriber heard the prompt in the other
    /// party's own RTP stream; "separate-stream" for injection beside it;
    /// otherwise why not.
    pub to_subscriber: String,
    /// The same for the remote party.
    pub to_remote: String,
}

/// Packets of the prompt per receiving party.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct SentMeta {
    pub subscriber: u64,
    pub remote: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SegmentMeta {
    pub index: u32,
    pub count: u32,
    pub started_at: String,
    pub ended_at: String,
    /// What started this segment: "answer", "refer", "replaces", "identity-change".
    pub cause: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct AudioMeta {
    pub file: String,
    pub format: String,
    pub channels: u16,
    pub channel_map: Vec<String>,
    pub sample_rate: u32,
    /// The codec each party's audio arrived in (the last one decoded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codecs: Option<CodecsMeta>,
    pub duration_ms: u64,
    pub sha256: String,
    pub bytes: u64,
}

/// The codec per party; None where no audio was decoded.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CodecsMeta {
    pub subscriber: Option<&'static str>,
    pub remote: Option<&'static str>,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct PauseMeta {
    pub from_ms: u64,
    pub to_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct QualityMeta {
    pub subscriber: serde_json::Value,
    pub remote: serde_json::Value,
}

impl Metadata {
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// The file stem: `K-0001/20261121/20261121T093000_out_0312340001_0312349999_3fa9c2_1`.
/// Built only from `[A-Za-z0-9._-]` whatever the SIP said.
pub fn stem(
    contract: &str,
    start_local: (String, String),
    dir: &str,
    caller: &str,
    callee: &str,
    short_id: &str,
    seg: u32,
) -> String {
    let (day, full) = start_local;
    format!(
        "{}/{day}/{full}_{dir}_{}_{}_{}_{seg}",
        safe(contract),
        safe(caller),
        safe(callee),
        safe(short_id)
    )
}

/// Keeps `[A-Za-z0-9._-]`, maps anything else to `_`, never empty, never a
/// dot-only name.
pub fn safe(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.chars().all(|c| c == '.') {
        out = format!("_{out}");
    }
    out.truncate(64);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_are_safe() {
        let s = stem(
            "K-0001",
            ("20261121".into(), "20261121T093000".into()),
            "out",
            "03/../../etc",
            "0312 349999",
            "3fa9c2",
            1,
        );
        assert_eq!(
            s,
            "K-0001/20261121/20261121T093000_out_03_.._.._etc_0312_349999_3fa9c2_1"
        );
        assert_eq!(safe(".."), "_..");
        assert_eq!(safe(""), "_");
    }
}
