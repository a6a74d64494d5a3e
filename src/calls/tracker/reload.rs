//! A new configuration for a running tracker (SIGHUP), without ending or
//! re-deciding any call in progress.

use super::Tracker;
use crate::calls::policy::Policy;
use crate::config::Config;
use std::time::Duration;

impl Tracker {
    /// Takes `cfg` for the calls that start from now on: the policy
    /// (contracts, numbers, priority lines), timeouts and limits. Dialogs in
    /// progress keep their verdict; their contract index is moved to the
    /// same contract id in the new list, and a contract that is no longer
    /// configured stays known by its id (appended after the configured
    /// ones) until its last call has ended and been written to the history.
    pub fn reload(&mut self, cfg: &Config) {
        let mut ids: Vec<String> = cfg.contracts.iter().map(|c| c.id.clone()).collect();
        for d in self.dialogs.values_mut() {
            let Some(old) = d.verdict.contract else {
                continue;
            };
            let Some(id) = self.contract_ids.get(old) else {
                continue;
            };
            let at = ids.iter().position(|x| x == id).unwrap_or_else(|| {
                ids.push(id.clone());
                ids.len() - 1
            });
            d.verdict.contract = Some(at);
        }
        self.contract_ids = ids;
        self.policy = Policy::new(cfg);
        let us = |d: Duration| d.as_micros() as i64;
        self.offset = cfg.general.utc_offset_secs;
        self.setup_timeout = us(cfg.recording.setup_timeout);
        self.rtp_timeout = us(cfg.recording.rtp_timeout);
        self.max_call_length = us(cfg.recording.max_call_length);
        self.max_dialogs = cfg.limits.max_dialogs.max(1);
        self.max_early = cfg.limits.early_dialogs.max(1);
        self.max_early_per_source = cfg.limits.early_dialogs_per_source.max(1);
    }
}
