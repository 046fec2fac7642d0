//! The app role for one application: follow its versions and keep the destination at the
//! newest one. Re-lists after every wake-up and every reconnect (events alone can be missed),
//! syncs before reading on a new session, never goes backwards, and coalesces bursts because it
//! always takes the newest version at the moment it looks.

use crate::config::AppConfig;
use crate::install::{self, InstallResult};
use crate::layout::{self, Layout, VersionId};
use crate::registration::{self, NodeSpec};
use crate::request::{self, VersionMeta};
use crate::session::{classify, ErrorKind, SessionHandle};
use crate::state::{now_secs, Applied, StateStore};
use crate::status::{ApplyResult, StatusReport};
use crate::systemd::ReadyPart;
use crate::backoff::Backoff;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

/// Everything one application's follower needs.
pub struct AppFollower {
    /// The `[[app]]` entry.
    pub app: AppConfig,
    /// Where its versions live.
    pub versions: String,
    /// The layout (metadata and status paths).
    pub layout: Layout,
    /// This host's node id, for the status node.
    pub node_id: String,
    /// Where applied versions are remembered.
    pub state: StateStore,
    /// Told once the first look at ZooKeeper is done.
    pub ready: ReadyPart,
    /// Published to summarise this app in the daemon's STATUS line.
    pub summary: watch::Sender<String>,
}

/// What the follower knows between wake-ups.
struct Progress {
    /// The last version installed here.
    applied: Option<Applied>,
    /// The version whose check or reload failed: not retried until a newer one comes.
    failed: Option<u64>,
    /// When an I/O failure asks for a retry, and the backoff for it.
    retry: Option<Duration>,
    /// Backoff for I/O retries.
    backoff: Backoff,
    /// The session generation we last synced on.
    synced: u64,
    /// The current status report.
    report: StatusReport,
}

impl AppFollower {
    /// Follows until `shutdown`; an apply in progress is finished first.
    pub async fn run(self, mut session: SessionHandle, shutdown: CancellationToken) {
        let applied = self.state.load(&self.app.name);
        let report = StatusReport {
            host: self.node_id.clone(),
            pid: std::process::id(),
            app: self.app.name.clone(),
            version: applied.as_ref().map(|a| a.version.clone()),
            sha256: applied.as_ref().map(|a| a.sha256.clone()),
            result: if applied.is_some() { ApplyResult::Ok } else { ApplyResult::Pending },
            attempted: None,
            error: None,
            time: now_secs(),
        };
        let (status_tx, status_rx) = watch::channel(report.to_bytes());
        let (reg_tx, _reg_rx) = watch::channel(None);
        let spec = NodeSpec { parent: self.layout.status(&self.app.name), name: self.node_id.clone(), sequential: false };
        let keeper = tokio::spawn(registration::keep(spec, session.clone(), status_rx, reg_tx, shutdown.clone()));
        let mut p = Progress {
            applied,
            failed: None,
            retry: None,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            synced: 0,
            report,
        };
        self.summarise(&p);
        loop {
            let Some((generation, client)) = (tokio::select! {
                _ = shutdown.cancelled() => break,
                c = session.connected() => c,
            }) else {
                break;
            };
            let waited = match self.look(&client, generation, &mut p, &status_tx).await {
                Ok(wake) => {
                    self.ready.mark();
                    let retry = p.retry.map(tokio::time::sleep);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = wake => Ok(()),
                        _ = session.changed() => Ok(()),
                        _ = async { match retry { Some(r) => r.await, None => std::future::pending().await } } => Ok(()),
                    }
                }
                Err(e) => Err(e),
            };
            if let Err(e) = waited {
                drop(client);
                match classify(&e) {
                    ErrorKind::SessionGone => session.wait_replaced(generation).await,
                    ErrorKind::ConnectionLost => {
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = session.settle(generation) => {}
                        }
                    }
                    ErrorKind::Other => {
                        tracing::warn!(app = %self.app.name, "reading versions failed: {e}; retrying in 1s");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        }
        let _ = keeper.await;
    }

    /// One look: list (with a watch), apply the newest if needed. Returns what to wait on.
    async fn look(
        &self,
        client: &zk::Client,
        generation: u64,
        p: &mut Progress,
        status: &watch::Sender<Vec<u8>>,
    ) -> Result<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>, zk::Error> {
        if p.synced != generation {
            // A new session may be served by a lagging follower: catch it up before reading.
            match client.sync(&self.versions).await {
                Ok(()) | Err(zk::Error::NoNode) => {}
                Err(e) => return Err(e),
            }
            p.synced = generation;
        }
        let (children, parent, watcher) = match client.get_and_watch_children(&self.versions).await {
            Ok(r) => r,
            Err(zk::Error::NoNode) => {
                // Nothing published yet: wait for the parent to appear.
                let (stat, w) = client.check_and_watch_stat(&self.versions).await?;
                if stat.is_some() {
                    return Ok(Box::pin(async {}));
                }
                tracing::debug!(app = %self.app.name, path = %self.versions, "no versions yet; waiting for the node");
                return Ok(Box::pin(async move {
                    w.changed().await;
                }));
            }
            Err(e) => return Err(e),
        };
        let wake = Box::pin(async move {
            watcher.changed().await;
        });
        let Some(newest) = layout::newest_version(&children) else {
            return Ok(wake);
        };
        if self.needs_apply(&newest, parent.czxid, p) {
            self.apply(client, &newest, parent.czxid, p).await?;
            status.send_replace(p.report.to_bytes());
            self.summarise(p);
        }
        Ok(wake)
    }

    fn needs_apply(&self, newest: &VersionId, stream: i64, p: &mut Progress) -> bool {
        if p.failed == Some(newest.seq) && p.retry.is_none() {
            return false;
        }
        match &p.applied {
            None => true,
            // A state file from before streams were recorded adopts the current one.
            Some(a) if a.stream == 0 => {
                p.applied.as_mut().expect("matched").stream = stream;
                self.needs_apply(newest, stream, p)
            }
            Some(a) if a.stream != stream => {
                tracing::warn!(app = %self.app.name, path = %self.versions, "the versions' parent node was re-created; following the new version stream");
                true
            }
            Some(a) if newest.seq > a.seq => true,
            Some(a) if newest.seq == a.seq => {
                let drifted = !install::holds(&self.app.dest, &a.sha256);
                if drifted {
                    tracing::warn!(app = %self.app.name, dest = %self.app.dest.display(), version = %a.version, "destination drifted from the applied version; re-applying");
                }
                drifted
            }
            Some(a) => {
                tracing::debug!(app = %self.app.name, newest = %newest, applied = %a.version, "newest is older than what is applied; not going backwards");
                false
            }
        }
    }

    /// Fetches, verifies and installs `v`, updating state and the status report.
    async fn apply(&self, client: &zk::Client, v: &VersionId, stream: i64, p: &mut Progress) -> Result<(), zk::Error> {
        let name = &self.app.name;
        let (bytes, stat) = match client.get_data(&format!("{}/{}", self.versions, v.name)).await {
            Ok(r) => r,
            Err(zk::Error::NoNode) => return Ok(()), // deleted meanwhile; the watch re-lists
            Err(e) => return Err(e),
        };
        let sha = request::sha256_hex(&bytes);
        let meta: Option<VersionMeta> = match client.get_data(&format!("{}/{}", self.layout.meta(name), v.name)).await {
            Ok((m, _)) => serde_json::from_slice(&m).ok(),
            Err(zk::Error::NoNode) => None,
            Err(e) => return Err(e),
        };
        let refuse = if let Err(e) = request::check_size(bytes.len()) {
            Some(e)
        } else if let Some(m) = meta.as_ref().filter(|m| m.sha256 != sha) {
            Some(format!("sha256 mismatch: metadata says {}, bytes hash to {sha}; not installing", m.sha256))
        } else {
            None
        };
        if let Some(reason) = refuse {
            tracing::error!(app = %name, version = %v, "{reason}");
            self.record_failure(p, v, ApplyResult::Error, reason, false);
            return Ok(());
        }
        let age_ms = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as i64 - stat.ctime).max(0);
        if install::holds(&self.app.dest, &sha) {
            tracing::info!(app = %name, version = %v, "destination already holds this version; recording it without a reload");
            self.record_success(p, v, stream, &sha);
            return Ok(());
        }
        tracing::info!(app = %name, version = %v, bytes = bytes.len(), "applying");
        match install::install(&self.app, bytes).await {
            Ok(InstallResult::Applied { reload }) => {
                if let Some(r) = reload.filter(|r| !r.output.trim().is_empty()) {
                    tracing::info!(app = %name, "reload said: {}", r.output.trim());
                }
                tracing::info!(app = %name, version = %v, dest = %self.app.dest.display(), since_publish_ms = age_ms, "applied");
                self.record_success(p, v, stream, &sha);
            }
            Ok(InstallResult::CheckFailed(why)) => {
                tracing::error!(app = %name, version = %v, "check failed, old file kept: {why}");
                self.record_failure(p, v, ApplyResult::CheckFailed, why, false);
            }
            Ok(InstallResult::ReloadFailed(why)) => {
                tracing::error!(app = %name, version = %v, "reload failed: {why}");
                self.record_failure(p, v, ApplyResult::ReloadFailed, why, false);
            }
            Err(e) => {
                let delay = p.backoff.next_delay();
                tracing::error!(app = %name, version = %v, "cannot install: {e}; old file kept; retrying in {delay:?}");
                self.record_failure(p, v, ApplyResult::Error, e.to_string(), true);
                p.retry = Some(delay);
            }
        }
        Ok(())
    }

    fn record_success(&self, p: &mut Progress, v: &VersionId, stream: i64, sha: &str) {
        let applied = Applied { version: v.name.clone(), seq: v.seq, sha256: sha.to_string(), applied_at: now_secs(), stream };
        if let Err(e) = self.state.store(&self.app.name, &applied) {
            tracing::error!(app = %self.app.name, "cannot remember the applied version: {e}");
        }
        p.applied = Some(applied);
        p.failed = None;
        p.retry = None;
        p.backoff.reset();
        p.report.version = Some(v.name.clone());
        p.report.sha256 = Some(sha.to_string());
        p.report.result = ApplyResult::Ok;
        p.report.attempted = None;
        p.report.error = None;
        p.report.time = now_secs();
    }

    fn record_failure(&self, p: &mut Progress, v: &VersionId, result: ApplyResult, error: String, retry: bool) {
        p.failed = Some(v.seq);
        if !retry {
            p.retry = None;
            p.backoff.reset();
        }
        p.report.result = result;
        p.report.attempted = Some(v.name.clone());
        p.report.error = Some(error);
        p.report.time = now_secs();
    }

    fn summarise(&self, p: &Progress) {
        let r = &p.report;
        let s = match (&r.version, r.result) {
            (v, ApplyResult::Ok) => format!("{}={}", self.app.name, v.as_deref().unwrap_or("none")),
            (_, ApplyResult::Pending) => format!("{}=waiting", self.app.name),
            (v, res) => format!(
                "{}={} ({} {})",
                self.app.name,
                v.as_deref().unwrap_or("none"),
                serde_json::to_value(res).ok().and_then(|x| x.as_str().map(String::from)).unwrap_or_default(),
                r.attempted.as_deref().unwrap_or("")
            ),
        };
        self.summary.send_replace(s);
    }
}
