//! SIGTERM, SIGINT and SIGHUP for the long-running commands (`run`,
//! `forward`): a small tokio runtime on its own thread waits for them and
//! sets flags the main loop reads. tokio runs what waits, never the packet
//! path.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// What the signal thread sets for a main loop.
#[derive(Clone, Default)]
pub struct Signals {
    /// SIGTERM or SIGINT arrived (set once, never cleared).
    pub stop: Arc<AtomicBool>,
    /// SIGHUP arrived since the main loop last took it (`swap(false)`).
    pub reload: Arc<AtomicBool>,
}

/// Starts the thread. The handlers are registered before this returns, so
/// a signal from now on is not missed. `on_hup` names what SIGHUP does,
/// for the log line.
pub fn watch(signals: &Signals, on_hup: &'static str) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut term, mut int, mut hup) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        ))
    })?;
    let s = signals.clone();
    std::thread::Builder::new()
        .name("callrec-signals".into())
        .spawn(move || {
            rt.block_on(async {
                loop {
                    tokio::select! {
                        _ = term.recv() => { tracing::info!("SIGTERM"); break }
                        _ = int.recv() => { tracing::info!("SIGINT"); break }
                        _ = hup.recv() => {
                            tracing::info!("SIGHUP: {on_hup}");
                            s.reload.store(true, Ordering::Relaxed);
                        }
                    }
                }
            });
            s.stop.store(true, Ordering::Relaxed);
        })?;
    Ok(())
}
