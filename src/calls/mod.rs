//! Calls: which calls exist (dialog tracking), and which must be recorded
//! (numbering plan and contract policy).

pub mod early;
pub mod numbering;
pub mod policy;
pub mod tracker;
