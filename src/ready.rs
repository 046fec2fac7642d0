//! The first-sync gate: systemd hears READY=1 only once every component (each app, the
//! election) has done its first look at ZooKeeper, so `systemctl start` returns when the host
//! serves what ZooKeeper holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// Counts the components that still have to finish their first look at ZooKeeper.
#[derive(Debug, Clone)]
pub struct ReadyGate {
    /// How many parts are still pending.
    pending: watch::Sender<usize>,
}

/// One component's share of the gate; marking twice counts once.
#[derive(Debug, Clone)]
pub struct ReadyPart {
    /// The gate.
    pending: watch::Sender<usize>,
    /// Whether this part already counted.
    marked: Arc<AtomicBool>,
}

impl ReadyGate {
    /// A gate with no parts.
    pub fn new() -> ReadyGate {
        ReadyGate { pending: watch::channel(0).0 }
    }
    /// A new part that must be marked before the gate opens.
    pub fn part(&self) -> ReadyPart {
        self.pending.send_modify(|n| *n += 1);
        ReadyPart { pending: self.pending.clone(), marked: Arc::new(AtomicBool::new(false)) }
    }
    /// Resolves when every part was marked.
    pub async fn wait(&self) {
        let mut rx = self.pending.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

impl Default for ReadyGate {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadyPart {
    /// This component has done its first sync.
    pub fn mark(&self) {
        if !self.marked.swap(true, Ordering::SeqCst) {
            self.pending.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}
