//! Unix signals become messages: the rest of the daemon never sees a signal number.

use futures::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::sync::mpsc;

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// SIGTERM or SIGINT: stop cleanly.
    Shutdown,
    /// SIGHUP: re-read the configuration.
    Reload,
}

/// A stop requested before the daemon was ready to listen (during start-up).
#[derive(Debug, Clone, Default)]
pub struct EarlyStop(Arc<AtomicBool>);

/// Catches SIGTERM/SIGINT from the first moment of `main`, so a stop that arrives while the
/// daemon is still starting ends in a clean exit rather than death by signal.
pub fn catch_early() -> EarlyStop {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT] {
        // Registration only fails for forbidden signals; these two are allowed.
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    let _ = signal_hook::flag::register(SIGHUP, Arc::new(AtomicBool::new(false)));
    EarlyStop(flag)
}

/// Starts listening; messages arrive on the returned channel. A stop caught early comes first.
pub fn listen(early: &EarlyStop) -> std::io::Result<mpsc::UnboundedReceiver<Request>> {
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let (tx, rx) = mpsc::unbounded_channel();
    if early.0.load(Ordering::SeqCst) {
        let _ = tx.send(Request::Shutdown);
    }
    tokio::spawn(async move {
        while let Some(sig) = signals.next().await {
            let req = if sig == SIGHUP { Request::Reload } else { Request::Shutdown };
            if tx.send(req).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}
