//! Compliance announcements.

/// Checks the prompt files the configuration refers to.
pub fn check_prompts(_cfg: &crate::config::Config) -> Result<(), std::io::Error> {
    Ok(())
}
