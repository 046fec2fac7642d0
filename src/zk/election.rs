//! Leader election among agents through their EPHEMERAL_SEQUENTIAL registration nodes: the
//! `leaders` smallest sequence numbers lead. A standby watches only the `leaders` nodes just
//! ahead of it, so a leader's death wakes its successor, not the herd.

use crate::clock::monotonic_us;
use crate::model::layout::{sorted_by_sequence, WORKER_PREFIX};
use crate::metrics::Metrics;
use crate::zk::registration::Registered;
use crate::zk::session::{Phase, SessionHandle};
use futures::future::select_all;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

/// This agent's part in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// Not leading: standing by, or unsure (disconnected, registering).
    Standby,
    /// Leading on session `generation` through election node `node`.
    Leader {
        /// The session generation leadership is tied to.
        generation: u64,
        /// Our election node's full path; every leader write is fenced on it.
        node: String,
        /// Its data version at confirmation, for the fence's version check.
        node_version: i32,
    },
}

impl Leadership {
    /// True when leading.
    pub fn is_leader(&self) -> bool {
        matches!(self, Leadership::Leader { .. })
    }
}

/// One agent's election: what it reads, and where it says how it stands.
pub struct Election {
    /// Parent of the election nodes.
    pub parent: String,
    /// How many of the smallest sequence numbers lead.
    pub leaders: usize,
    /// The session the election node lives on.
    pub session: SessionHandle,
    /// Our election node, as its keeper re-creates it.
    pub registered: watch::Receiver<Option<Registered>>,
    /// Where our leadership is published (the agent's leader work follows it).
    pub out: watch::Sender<Leadership>,
    /// Marked at the first decision, either way, so READY=1 waits for it.
    pub first_sync: crate::ready::ReadyPart,
    /// The `zkcoord_leader` gauge.
    pub metrics: Arc<Metrics>,
}

impl Election {
    /// Runs the election until `shutdown`, publishing our leadership on `out` (and as the
    /// `zkcoord_leader` gauge).
    pub async fn run(self, shutdown: CancellationToken) {
        let Election { parent, leaders, mut session, mut registered, out, first_sync, metrics } = self;
        let started = Instant::now();
        let step_down = |why: &str| {
            // Published before the timestamp is taken, so a logged interval contains the real one.
            let was_leader = out.send_replace(Leadership::Standby).is_leader();
            metrics.leadership(false);
            if was_leader {
                tracing::warn!(mono_us = monotonic_us(), since_start_ms = started.elapsed().as_millis() as u64, "leadership: stepping down ({why})");
            }
        };
        loop {
            // Wait for a registration on a connected session of the same generation.
            let reg = registered.borrow_and_update().clone();
            let view = session.current();
            let ready = match (reg, view.client) {
                (Some(r), Some(c)) if view.phase == Phase::Connected && view.generation == r.generation => Some((r, c)),
                _ => None,
            };
            let Some((reg, client)) = ready else {
                step_down("no registration on a connected session");
                tokio::select! {
                    _ = shutdown.cancelled() => { step_down("shutting down"); return; }
                    _ = registered.changed() => {}
                    _ = session.changed() => {}
                }
                continue;
            };
            let generation = reg.generation;
            match evaluate(&client, &parent, leaders, &reg).await {
                Ok(Position::Leading { node_version }) => {
                    // Timestamp before publishing leadership (and step-downs after), so logged
                    // intervals contain the real ones.
                    let since = monotonic_us();
                    let was_leader = out.borrow().is_leader();
                    out.send_replace(Leadership::Leader { generation, node: reg.path.clone(), node_version });
                    metrics.leadership(true);
                    // The first decision, either way, is this component's first sync (marked once
                    // it is published, so READY's STATUS line already shows it).
                    first_sync.mark();
                    if !was_leader {
                        tracing::info!(mono_us = since, node = %reg.path, since_start_ms = started.elapsed().as_millis() as u64, "leadership: leader");
                    }
                    // Lead until the session wavers or our node changes.
                    tokio::select! {
                        _ = shutdown.cancelled() => { step_down("shutting down"); return; }
                        _ = registered.changed() => step_down("our election node changed"),
                        v = session.changed() => step_down(&format!("session {}", v.phase)),
                    }
                }
                Ok(Position::Standby { ahead }) => {
                    step_down("others lead");
                    first_sync.mark();
                    tracing::debug!(node = %reg.name, ahead = ahead.len(), "standing by");
                    let mut watchers = Vec::new();
                    let mut gone = false;
                    for name in &ahead {
                        match client.check_and_watch_stat(&format!("{parent}/{name}")).await {
                            Ok((Some(_), w)) => watchers.push(Box::pin(w.changed())),
                            Ok((None, _)) => gone = true,
                            Err(e) => {
                                session.recover(generation, &e, "watching the election nodes ahead", &shutdown).await;
                                gone = true;
                            }
                        }
                    }
                    if gone || watchers.is_empty() {
                        continue;
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = select_all(watchers) => {}
                        _ = registered.changed() => {}
                        _ = session.changed() => {}
                    }
                }
                Ok(Position::Unregistered) => {
                    step_down("our election node is missing");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = registered.changed() => {}
                        _ = session.changed() => {}
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
                Err(e) => {
                    step_down(&format!("election read failed: {e}"));
                    session.recover(generation, &e, "the election read", &shutdown).await;
                }
            }
        }
    }
}

/// Where we stand among the election nodes.
enum Position {
    /// Among the first `leaders`, confirmed to be our own current session's node.
    Leading {
        /// Our node's data version, for fencing.
        node_version: i32,
    },
    /// Behind others; the names of the `leaders` nodes just ahead.
    Standby {
        /// Nodes to watch.
        ahead: Vec<String>,
    },
    /// Our node is not (or no longer) there.
    Unregistered,
}

async fn evaluate(client: &zk::Client, parent: &str, leaders: usize, reg: &Registered) -> Result<Position, zk::Error> {
    let children = client.list_children(parent).await?;
    tracing::debug!(node = %reg.name, children = children.len(), "election: listed children");
    let order = sorted_by_sequence(&children, WORKER_PREFIX);
    let Some(idx) = order.iter().position(|(_, n)| *n == reg.name) else {
        return Ok(Position::Unregistered);
    };
    if idx < leaders {
        // Before acting as leader, confirm the node is owned by this very session: a node left
        // by our previous session is not us.
        match client.check_stat(&reg.path).await? {
            Some(stat) if stat.ephemeral_owner == client.session_id().0 => {
                Ok(Position::Leading { node_version: stat.version })
            }
            _ => Ok(Position::Unregistered),
        }
    } else {
        let ahead = order[idx.saturating_sub(leaders)..idx].iter().map(|(_, n)| n.to_string()).collect();
        Ok(Position::Standby { ahead })
    }
}
