//! What every follower does, whatever its content comes from (published versions or a
//! service's live members): keep this host's status node for the app, and run its looks on
//! each connected session, waiting after a ZooKeeper error as [`SessionHandle::recover`] says.
//! Each follower only says what one turn on a session is.

use crate::metrics::Metrics;
use crate::model::layout::Layout;
use crate::model::status::StatusReport;
use crate::zk::registration::{self, NodeSpec};
use crate::zk::session::SessionHandle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

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
    /// Starts keeping `app`'s status node for `node_id`, holding `first` until a report follows.
    pub fn keep(layout: &Layout, app: &str, node_id: &str, first: &StatusReport, session: &SessionHandle, shutdown: &CancellationToken) -> StatusNode {
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
