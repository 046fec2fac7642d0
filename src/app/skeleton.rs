//! What every follower does, whatever its content comes from (published versions or a
//! service's live members): keep this host's status node for the app, and run its looks on
//! each connected session, waiting after a ZooKeeper error as [`SessionHandle::recover`] says.
//! Each follower only says what one turn on a session is.

use crate::metrics::Metrics;
use crate::model::layout::Layout;
use crate::model::status::{ApplyResult, StatusReport};
use crate::zk::registration::{self, NodeSpec};
use crate::zk::session::SessionHandle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

/// How long a host waits after its report changed before it writes the status node (later
/// changes in that window go in the same write). A publish reaches every host at once; written
/// at once, each host's status write (a quorum write) would queue among the other hosts' reads
/// of the new version on the same servers. So each waits 50 ms, plus its spot in a window of
/// 0.5 ms per host reporting the app, at most 2 s: 10 hosts' writes spread over 5 ms, 1,000
/// hosts' over half a second, 4,000 or more over 2 s. Readers of status (`publish --wait`,
/// canaries, records) see it this much later.
pub const STATUS_WRITE_DELAY: crate::zk::registration::WriteDelay = crate::zk::registration::WriteDelay {
    base: std::time::Duration::from_millis(50),
    per_sibling: std::time::Duration::from_micros(500),
    max_window: std::time::Duration::from_secs(2),
};

/// How one application stands, as its follower last saw it. The daemon's STATUS line and
/// `/healthz` both read it, so they never disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppView {
    /// The application.
    pub name: String,
    /// The status report (applied version, last result, attempted version, error); None until
    /// the follower has read its state file.
    pub report: Option<StatusReport>,
    /// Whether the follower has listed the versions at least once.
    pub looked: bool,
    /// Whether an apply is running right now.
    pub applying: bool,
    /// The newest version at the last look.
    pub newest: Option<String>,
    /// Versions newer than the applied one at the last look.
    pub behind: u64,
    /// Whether a failed apply will be tried again without a new publish (write errors back off
    /// and retry; a failed check or reload waits for a newer version).
    pub retrying: bool,
    /// Why our status node is not ours: another session holds our name (see
    /// [`crate::zk::registration`]); the host is unhealthy while it lasts.
    pub conflict: Option<String>,
    /// Why the follower holds back what it would apply (a rendered app's member guard,
    /// [`crate::model::member_guard`]): the file is behind on purpose, and the host unhealthy
    /// until the members come back or an operator accepts the change.
    pub held: Option<String>,
}

impl AppView {
    /// The freeze that holds this app, if any: shown by STATUS and `/healthz`, healthy (a
    /// fleet-wide freeze must not take every host out of a load balancer).
    pub fn frozen(&self) -> Option<&str> {
        self.report.as_ref().and_then(|r| r.frozen.as_deref())
    }
}

impl AppView {
    /// The view of an app whose follower has not started yet.
    pub fn starting(name: &str) -> AppView {
        AppView { name: name.into(), report: None, looked: false, applying: false, newest: None, behind: 0, retrying: false, conflict: None, held: None }
    }

    /// This app's part of the STATUS line: `nginxconf=conf-0000000012`,
    /// `nginxconf=conf-0000000011 (check-failed conf-0000000012)`, `nginxconf=waiting`.
    pub fn summary(&self) -> String {
        let name = &self.name;
        let Some(r) = &self.report else {
            return format!("{name}=starting");
        };
        let edited = match &r.drift {
            Some(d) if d.held() => " (held: edited by hand)",
            Some(_) => " (drifted: edited by hand)",
            None if self.held.is_some() => " (held: members)",
            None if self.frozen().is_some() => " (frozen)",
            None => "",
        };
        match (&r.version, r.result) {
            (v, ApplyResult::Ok) => format!("{name}={}{edited}", v.as_deref().unwrap_or("none")),
            (_, ApplyResult::Pending) => format!("{name}=waiting"),
            (v, res) => format!(
                "{name}={} ({} {})",
                v.as_deref().unwrap_or("none"),
                res.as_str(),
                r.attempted.as_deref().unwrap_or("")
            ),
        }
    }

    /// Whether this app is healthy: Ok when it is at the newest version it saw, or on its way
    /// there (an apply running, or a write error being retried), and not held by a hand edit;
    /// otherwise one line saying why not. A version whose check or reload failed is not healthy for as long as it stays the
    /// newest: the host then runs an older version and will not try again by itself.
    pub fn health(&self) -> Result<(), String> {
        let name = &self.name;
        let Some(r) = self.report.as_ref().filter(|_| self.looked) else {
            return Err(format!("app {name}: not yet synced with ZooKeeper"));
        };
        if let Some(why) = &self.conflict {
            return Err(format!("app {name}: {why}"));
        }
        if let Some(why) = &self.held {
            return Err(format!("app {name}: {why}"));
        }
        // A hold keeps new versions out until an operator acts: unhealthy until then, whether
        // or not a newer version waits. A reported edit (`on_drift = "report"`) is healthy.
        if let Some(d) = r.drift.as_ref().filter(|d| d.held()) {
            return Err(format!("app {name}: {}", d.describe()));
        }
        // Behind on purpose, by the operator's switch; a failed last apply still counts.
        let frozen_behind = self.frozen().is_some() && matches!(r.result, ApplyResult::Ok | ApplyResult::Pending);
        if self.behind == 0 || self.applying || self.retrying || frozen_behind {
            return Ok(());
        }
        match (r.result, &r.attempted) {
            (ApplyResult::Ok | ApplyResult::Pending, _) | (_, None) => Err(format!(
                "app {name}: {} version(s) behind, newest {}",
                self.behind,
                self.newest.as_deref().unwrap_or("unknown")
            )),
            (result, Some(attempted)) => Err(format!("app {name}: {} {attempted}", result.as_str())),
        }
    }
}

/// Publishes `view` for STATUS and `/healthz`, waking their readers only when it changed.
pub fn show(views: &watch::Sender<AppView>, view: AppView) {
    views.send_if_modified(|v| {
        let changed = *v != view;
        *v = view;
        changed
    });
}

/// What a follower's turn on a session asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Take the next turn (on this session or the next).
    Again,
    /// Shutting down: stop following.
    Stop,
}

/// This host's ephemeral status node for one app (`<root>/status/<app>/<node_id>`), kept by a
/// registration keeper: created on every session, re-created when deleted, marked removed when
/// the follower stops and may not delete it.
pub struct StatusNode {
    /// The report the node holds; sending a new one rewrites the node.
    pub report: watch::Sender<Vec<u8>>,
    /// Why the node's name is held by another session (for `/healthz`), as the keeper says.
    pub conflict: watch::Receiver<Option<String>>,
    /// The keeper, which ends at `shutdown`.
    keeper: JoinHandle<()>,
}

impl StatusNode {
    /// Starts keeping `app`'s status node for `node_id`, holding `first` until a report follows;
    /// the keeper also looks at the node every `resync` (the app's periodic pass), re-creating
    /// it if a deletion went unnoticed and rewriting data someone else changed.
    pub fn keep(layout: &Layout, app: &str, node_id: &str, first: &StatusReport, resync: Option<std::time::Duration>, session: &SessionHandle, shutdown: &CancellationToken) -> StatusNode {
        let (report, report_rx) = watch::channel(first.to_bytes());
        let (reg_tx, _reg_rx) = watch::channel(None);
        let (conflict_tx, conflict) = watch::channel(None);
        let spec = NodeSpec {
            parent: layout.status(app),
            name: node_id.to_string(),
            sequential: false,
            parent_kind: crate::zk::identity::NodeKind::StatusParent,
            tombstone: Some(StatusReport::tombstone_bytes),
            conflict: Some(std::sync::Arc::new(conflict_tx)),
            resync,
            write_delay: STATUS_WRITE_DELAY,
        };
        let keeper = tokio::spawn(registration::keep(spec, session.clone(), report_rx, reg_tx, shutdown.clone()));
        StatusNode { report, conflict, keeper }
    }

    /// Waits until the keeper has finished (after `shutdown`): the node is gone or marked.
    pub async fn stopped(self) {
        let _ = self.keeper.await;
    }
}

/// What one kind of follower does on a connected session: one look (and the wait for what
/// changes next), returning whether to go on.
pub trait Turn: Send {
    /// One turn on session `generation`; an error ends the turn and is recovered from.
    fn turn<'a>(
        &'a mut self,
        client: &'a zk::Client,
        generation: u64,
        session: &'a mut SessionHandle,
    ) -> impl std::future::Future<Output = Result<Flow, zk::Error>> + Send + 'a;
}

/// Runs `turns` on each connected session until one says stop or `shutdown` comes. After a
/// ZooKeeper error the wait is the one [`SessionHandle::recover`] rule (`what` names what
/// failed, for its log line). Counts the follower in `zkcoord_apps` while it runs.
pub async fn follow(app: &str, metrics: &Metrics, session: &mut SessionHandle, shutdown: &CancellationToken, what: &str, turns: &mut impl Turn) {
    metrics.app_started(app);
    loop {
        let Some((generation, client)) = session.connected_until(shutdown).await else {
            break;
        };
        let r = turns.turn(&client, generation, session).await;
        drop(client);
        match r {
            Ok(Flow::Stop) => break,
            Ok(Flow::Again) => {}
            Err(e) => {
                if !session.recover(generation, &e, what, shutdown).await {
                    break;
                }
            }
        }
    }
    metrics.app_stopped(app);
}
