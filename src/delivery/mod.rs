//! Delivery (placeholder until merged).
pub mod queue {
    pub enum QueueCmd { List, Retry(Option<String>), Hold(Option<String>), Release(Option<String>) }
    pub fn queue_command(_cfg: &crate::config::Config, _c: QueueCmd) -> Result<String, std::io::Error> { Ok(String::new()) }
}
