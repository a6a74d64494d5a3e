//! Log output: `tracing` to stderr. Under systemd stderr is the journal
//! (StandardError=journal), so the timestamps journald adds are not
//! repeated. Level from `CALLREC_LOG` (an EnvFilter), default `info`.

pub fn init() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CALLREC_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if under_systemd {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}
