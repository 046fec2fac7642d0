//! Unix signals become messages: the rest of the daemon never sees a signal number.

use futures::StreamExt;
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

/// Starts listening; messages arrive on the returned channel.
pub fn listen() -> std::io::Result<mpsc::UnboundedReceiver<Request>> {
    let mut signals = signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let (tx, rx) = mpsc::unbounded_channel();
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
