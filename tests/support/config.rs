//! Configuration text the replay tests share.
#![allow(dead_code)]

/// The delivery section with one destination, `acme`, on a documentation
/// address. Replay tests never deliver, so it is never contacted; it is
/// there because every contract needs a destination.
pub const ACME_UNREACHED: &str = r#"[delivery]
allowed_networks = ["192.0.2.0/24"]
[[destination]]
name = "acme"
url = "sftp://rec@192.0.2.10:22/incoming"
identity = "/nonexistent/key"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5WY6hfGbgKdwr827M61Dy9fKgVJoLX3pwmoStKx7MO"
"#;
