//! Placeholder (replaced by the policy branch).
use std::path::Path;
pub enum OutFormat { Table, Csv, Json }
pub struct CallsQuery { pub contract: Option<String>, pub direction: Option<String>, pub decision: Option<String>, pub reason: Option<String>, pub number: Option<String>, pub since: Option<String>, pub until: Option<String>, pub limit: Option<usize> }
pub fn check_config_report(_c: &crate::config::Config) -> String { String::new() }
pub fn render_calls(_s: &Path, _q: &CallsQuery, _f: OutFormat) -> std::io::Result<String> { Ok(String::new()) }
