//! Registers this host's `[[service]]` entries as live members: an ephemeral node with JSON
//! data (`{"host": ..., "port": ..., ...}`) under the service's path, kept by the same
//! [`registration::keep`] that keeps status and election nodes (so re-creation after deletion
//! or expiry, and adoption after a lost create, work the same way).
//!
//! The node exists exactly while the service is *wanted*: healthy (its check passed `rise`
//! times in a row, and has not since failed `fall` times in a row) and not drained (no flag at
//! `<root>/drain/<node_id>/<service>`, which `zkcoordctl drain` creates from anywhere).

use crate::config::ServiceConfig;
use crate::host::hooks;
use crate::zk::registration::{self, NodeSpec};
use crate::zk::session::{self, SessionHandle};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why a service is or is not registered right now, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// Healthy and not drained: the member node is kept.
    Registered,
    /// The health check has not passed (yet, or any more).
    Unhealthy,
    /// An operator drained this host's member.
    Drained,
    /// The drain flag has not been read yet: a drained host must not flash back into rotation
    /// at every start.
    Unknown,
}

impl Wanted {
    fn of(healthy: bool, drained: Option<bool>) -> Wanted {
        match (healthy, drained) {
            (_, None) => Wanted::Unknown,
            (_, Some(true)) => Wanted::Drained,
            (false, Some(false)) => Wanted::Unhealthy,
            (true, Some(false)) => Wanted::Registered,
        }
    }
}

/// Everything one service's registration needs.
pub struct ServiceRunner {
    /// The `[[service]]` entry.
    pub service: ServiceConfig,
    /// This host's node id: the member's default name and the drain flag's parent.
    pub node_id: String,
    /// The drain flag this runner watches.
    pub drain_flag: String,
    /// Where whether the member is wanted is recorded (`zkcoord_service_registered`).
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// How often the member is looked at besides its watch (top-level `resync_interval`).
    pub resync: Option<std::time::Duration>,
}

impl ServiceRunner {
    /// Keeps the member registered while it is wanted, until `shutdown`; the member is removed
    /// on the way out (and the session's close would remove it anyway).
    pub async fn run(self, session: SessionHandle, shutdown: CancellationToken) {
        let svc = &self.service;
        let (health_tx, mut healthy) = watch::channel(svc.check.is_none());
        let (drain_tx, mut drained) = watch::channel(None);
        let helpers = shutdown.child_token();
        let health = tokio::spawn(watch_health(svc.clone(), health_tx, helpers.clone()));
        let drain = tokio::spawn(watch_drain(self.drain_flag.clone(), session.clone(), drain_tx, helpers.clone()));
        let spec = NodeSpec {
            parent: svc.members_path(),
            name: svc.node_name.clone().unwrap_or_else(|| self.node_id.clone()),
            sequential: svc.sequential,
            parent_kind: crate::zk::identity::NodeKind::ServiceParent,
            tombstone: None,
            conflict: None,
            resync: self.resync,
            write_delay: crate::zk::registration::WriteDelay::NONE,
        };
        let (_data_tx, data_rx) = watch::channel(svc.member_data());
        let mut keeper: Option<(CancellationToken, JoinHandle<()>)> = None;
        let mut last = None;
        loop {
            let wanted = Wanted::of(*healthy.borrow_and_update(), *drained.borrow_and_update());
            if last != Some(wanted) {
                self.metrics.service_registered(&svc.name, Some(wanted == Wanted::Registered));
                match wanted {
                    Wanted::Registered => {
                        tracing::info!(service = %svc.name, path = %spec.parent, "service healthy and not drained; registering its member");
                        let stop = shutdown.child_token();
                        let (reg_tx, _) = watch::channel(None);
                        let task = tokio::spawn(registration::keep(spec.clone(), session.clone(), data_rx.clone(), reg_tx, stop.clone()));
                        keeper = Some((stop, task));
                    }
                    other => {
                        if let Some((stop, task)) = keeper.take() {
                            stop.cancel();
                            let _ = task.await;
                        }
                        let why = match other {
                            Wanted::Drained => "drained",
                            Wanted::Unknown => "waiting for its drain flag to be read",
                            _ => "not healthy",
                        };
                        tracing::info!(service = %svc.name, path = %spec.parent, "service {why}; its member is not registered");
                    }
                }
                last = Some(wanted);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Ok(()) = healthy.changed() => {}
                Ok(()) = drained.changed() => {}
            }
        }
        helpers.cancel();
        if let Some((stop, task)) = keeper.take() {
            stop.cancel();
            let _ = task.await;
        }
        let _ = health.await;
        let _ = drain.await;
        self.metrics.service_registered(&svc.name, None);
    }
}

/// Runs the health check every `interval` and publishes the verdict with rise/fall hysteresis.
/// A service with a check starts unhealthy: it is announced once it has passed `rise` times.
async fn watch_health(svc: ServiceConfig, tx: watch::Sender<bool>, stop: CancellationToken) {
    let Some(check) = svc.check.clone() else {
        stop.cancelled().await;
        return;
    };
    let (mut passes, mut fails, mut healthy) = (0u32, 0u32, false);
    let mut tick = tokio::time::interval(svc.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let run = tokio::select! {
            _ = stop.cancelled() => return,
            r = hooks::run(&check, None, svc.timeout) => r,
        };
        if run.ok() {
            passes += 1;
            fails = 0;
            if !healthy && passes >= svc.rise {
                healthy = true;
                tracing::info!(service = %svc.name, "health check passed {passes} time(s) in a row: healthy");
                tx.send_replace(true);
            }
        } else {
            fails += 1;
            passes = 0;
            let why = run.describe("health check", &check);
            if healthy && fails >= svc.fall {
                healthy = false;
                tracing::warn!(service = %svc.name, "health check failed {fails} time(s) in a row: unhealthy: {why}");
                tx.send_replace(false);
            } else if fails == 1 {
                tracing::info!(service = %svc.name, healthy, "health check failed: {why}");
            }
        }
    }
}

/// Watches the drain flag (an exists watch, which also fires when the flag is created), and
/// publishes whether it is there. While ZooKeeper is unreachable the last answer stands: the
/// member cannot be registered then anyway.
async fn watch_drain(flag: String, session: SessionHandle, tx: watch::Sender<Option<bool>>, stop: CancellationToken) {
    let what = format!("watching the drain flag {flag}");
    session::keep_watching(session, stop, &what, |client| {
        let (flag, tx) = (flag.clone(), tx.clone());
        async move {
            let (stat, watcher) = client.check_and_watch_stat(&flag).await?;
            let drained = Some(stat.is_some());
            let was = *tx.borrow();
            // Logged on every change, and at the first read only when the flag is there.
            if tx.send_if_modified(|d| std::mem::replace(d, drained) != drained) && (was.is_some() || drained == Some(true)) {
                tracing::info!(flag = %flag, "drain flag {}", if drained == Some(true) { "set" } else { "cleared" });
            }
            Ok(watcher)
        }
    }, || {})
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn drained_wins_over_healthy() {
        assert_eq!(Wanted::of(true, Some(false)), Wanted::Registered);
        assert_eq!(Wanted::of(true, Some(true)), Wanted::Drained);
        assert_eq!(Wanted::of(false, Some(true)), Wanted::Drained);
        assert_eq!(Wanted::of(false, Some(false)), Wanted::Unhealthy);
        assert_eq!(Wanted::of(true, None), Wanted::Unknown, "nothing registers before the drain flag was read");
    }

    #[tokio::test]
    async fn health_rises_and_falls_with_the_check() {
        let d = tempfile::tempdir().unwrap();
        let flag = d.path().join("healthy");
        let toml = format!(
            "name = \"web\"\nport = 80\ncheck = [\"test\", \"-f\", \"{}\"]\ninterval = \"20ms\"\nrise = 2\nfall = 2\n",
            flag.display()
        );
        let svc: ServiceConfig = toml::from_str(&toml).unwrap();
        let (tx, mut rx) = watch::channel(false);
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch_health(svc, tx, stop.clone()));
        std::fs::write(&flag, "").unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|h| *h)).await.unwrap().unwrap();
        std::fs::remove_file(&flag).unwrap();
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|h| !*h)).await.unwrap().unwrap();
        stop.cancel();
        task.await.unwrap();
    }
}
