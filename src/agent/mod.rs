//! The leading agent's work: take publish requests, turn each into a version (or refuse it),
//! answer the publisher, and prune old versions. Every write is fenced: a multi-op that first
//! checks our own election node, so an agent that lost its session can never write as leader.
//!
//! This file follows the election and serves requests while we lead. Its rooms: `leader`
//! (one request, one step after another, and pruning), `intake` (requests that arrive together,
//! handled together), `rollout` (a staged rollout's record at publish time), `supervisor` (open
//! rollouts driven to their end), `settle` (the record of
//! each version's rollout, written once it settles; `unsettled` keeps which versions it follows) and `trigger` (the legacy `add|<data>`
//! listener).
//!
//! May use: everything below the roles (`zk`, `host`, `config`, `metrics`, `model`, leaves).
//! Never `app`, `service`, `daemon` or `ctl`.

pub(crate) mod intake;
pub(crate) mod leader;
pub(crate) mod outcomes;
pub(crate) mod rollout;
pub(crate) mod settle;
pub(crate) mod supervisor;
pub mod trigger;
pub(crate) mod unsettled;

use crate::zk::fence::{AgentError, Fence};
use leader::Leader;
use crate::zk::identity::NodeKind;
use crate::config::Config;
use crate::zk::election::Leadership;
use crate::metrics::Metrics;
use crate::zk::session::{self, classify, ErrorKind, SessionHandle};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A publish handed to this agent's leader in-process (the legacy trigger on the leading
/// agent): no request node, so the version's fenced multi-op is the publish's only write.
pub struct LocalPublish {
    pub header: crate::model::request::RequestHeader,
    pub data: Vec<u8>,
    /// The outcome; dropped unanswered when leadership ended first (the sender then queues a
    /// request node instead).
    pub reply: tokio::sync::oneshot::Sender<crate::model::request::Outcome>,
}

/// Where the trigger hands publishes to this agent's leader: set only while it serves.
#[derive(Clone, Default)]
pub struct LocalIntake(Arc<std::sync::Mutex<Option<tokio::sync::mpsc::Sender<LocalPublish>>>>);

impl LocalIntake {
    /// The leader's channel, if this agent is serving as leader now.
    pub fn sender(&self) -> Option<tokio::sync::mpsc::Sender<LocalPublish>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    fn set(&self, tx: Option<tokio::sync::mpsc::Sender<LocalPublish>>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = tx;
    }
}

/// Runs the agent's leader work whenever `leadership` says we lead, until `shutdown`.
pub async fn run(
    config: Arc<Config>,
    mut session: SessionHandle,
    mut leadership: watch::Receiver<Leadership>,
    metrics: Arc<Metrics>,
    local: LocalIntake,
    freezes: watch::Receiver<Option<crate::model::freeze::Freezes>>,
    shutdown: CancellationToken,
) {
    let layout = config.layout();
    loop {
        let lead = leadership.borrow_and_update().clone();
        let Leadership::Leader { generation, node, node_version } = lead else {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = leadership.changed() => continue,
            }
        };
        let view = session.current();
        let client = match view.client {
            Some(c) if view.generation == generation && session.is_connected(generation) => c,
            _ => {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = leadership.changed() => {}
                    _ = session.changed() => {}
                }
                continue;
            }
        };
        let fence = Fence::new(node, node_version);
        let leader = Leader { config: &config, layout: layout.clone(), client: &client, fence: &fence, metrics: &metrics, known: Default::default(), freezes: freezes.clone(), freeze_wait_spent: Default::default(), no_multi_read: Default::default(), unsettled: Default::default() };
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            // Disconnected or demoted: stop at once, mid-request if need be.
            _ = leadership.changed() => { local.set(None); continue }
            _ = session.changed() => { local.set(None); continue }
            r = serve(&leader, &local) => r,
            r = supervisor::supervise(&leader) => r,
            r = settle::run(&leader) => r,
        };
        local.set(None);
        let err = match result {
            Ok(never) => match never {},
            Err(e) => e,
        };
        match &err {
            AgentError::Fenced(_) => tracing::error!("{err}; stepping back until the election says otherwise"),
            AgentError::Zk(e) if classify(e) != ErrorKind::Other => tracing::info!("leader work paused: {err}"),
            AgentError::Zk(_) => tracing::warn!("leader work failed: {err}; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = leadership.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Serves requests as leader until something fails.
async fn serve(leader: &Leader<'_>, local: &LocalIntake) -> Result<std::convert::Infallible, AgentError> {
    let Leader { config, layout, client, .. } = leader;
    // Before anything: every parent we know of exists with the policy's ACL (or we say loudly
    // why not), so nobody else can have made one open for us.
    crate::zk::guard::secure_known(config, client).await?;
    session::ensure_path(client, &layout.requests(), NodeKind::RequestsParent).await?;
    session::ensure_path(client, &layout.outcomes(), NodeKind::OutcomesParent).await?;
    session::ensure_path(client, &layout.claims(), NodeKind::AgentParent).await?;
    // Publishers upload the chunks of large configs here; with ACLs they cannot create it.
    session::ensure_path(client, &layout.blobs(), NodeKind::Blobs).await?;
    // Said once the parents exist: a publisher that comes now finds where to put its request.
    tracing::info!(fence = %leader.fence.node(), "leader: taking publish requests");
    let (tx, mut rx) = tokio::sync::mpsc::channel(intake::MAX_BATCH_REQUESTS);
    local.set(Some(tx));
    let mut sweeper = outcomes::Sweeper::default();
    let mut sweep = tokio::time::interval(outcomes::sweep_interval(config.agent.outcome_ttl));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One leader hears of each request from a persistent watch; several leaders list on each
    // change (see [`crate::zk::request_feed`]).
    let mut feed = crate::zk::request_feed::RequestFeed::new(&layout.requests(), config.agent.leaders == 1);
    loop {
        let names = feed.take(client).await?;
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut touched = BTreeSet::new();
        if config.agent.leaders > 1 {
            // Several leaders share the requests: each is claimed, one at a time.
            for name in names {
                if let Some(app) = leader.handle_request(name).await? {
                    touched.insert(app);
                }
            }
        } else {
            // Requests that arrived together are handled together (see [`intake`]).
            for window in names.chunks(intake::MAX_BATCH_REQUESTS) {
                touched.extend(intake::handle_batch(leader, window).await?);
            }
        }
        for app in touched {
            leader.prune(&app).await?;
        }
        if feed.ready() {
            continue;
        }
        let changed = feed.changed();
        tokio::pin!(changed);
        // In-process publishes are served while the same watch waits for request nodes.
        loop {
            tokio::select! {
                heard = &mut changed => break heard.map_err(AgentError::Zk)?,
                // Answers publishers have had time to read (see [`outcomes`]).
                _ = sweep.tick() => {
                    sweeper.sweep(leader).await?;
                }
                Some(job) = rx.recv() => {
                    let (outcome, app) = leader.handle_local(&job.header, &job.data).await?;
                    let _ = job.reply.send(outcome);
                    if let Some(app) = app {
                        leader.prune(&app).await?;
                    }
                }
            }
        }
    }
}
