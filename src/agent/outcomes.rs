//! Answers publishers have read. A publisher reads its outcome node and leaves it: deleting
//! it would be a second quorum write on every publish. The leader removes outcomes it has seen
//! for `outcome_ttl`, in one fenced multi-op per sweep, off the publish path. Outcomes whose
//! publisher died or timed out go the same way.

use crate::agent::leader::Leader;
use crate::zk::fence::AgentError;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use zookeeper_client as zk;

/// Deletions in one sweep's multi-op: well under ZooKeeper's packet limit.
const MAX_SWEEP_DELETES: usize = 500;

/// How often the leader sweeps: once a minute, or at the pace of a shorter `outcome_ttl`.
pub(crate) fn sweep_interval(ttl: Duration) -> Duration {
    ttl.min(Duration::from_secs(60))
}

/// When each outcome node was first seen, for one leadership. A new leader starts the clock
/// again for everything it finds, so an outcome is never removed sooner than `outcome_ttl`
/// after the publisher could read it.
#[derive(Default)]
pub(crate) struct Sweeper {
    first_seen: HashMap<String, Instant>,
}

impl Sweeper {
    /// Lists the outcomes once and removes those seen for `outcome_ttl`. Returns how many went.
    pub(crate) async fn sweep(&mut self, leader: &Leader<'_>) -> Result<usize, AgentError> {
        let Leader { config, layout, client, fence, .. } = leader;
        let names = match client.list_children(&layout.outcomes()).await {
            Ok(n) => n,
            Err(zk::Error::NoNode) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let now = Instant::now();
        let mut seen: HashMap<String, Instant> = names.into_iter().map(|n| (n, now)).collect();
        for (name, at) in seen.iter_mut() {
            if let Some(first) = self.first_seen.get(name) {
                *at = *first;
            }
        }
        self.first_seen = seen;
        let ttl = config.agent.outcome_ttl;
        let mut doomed: Vec<&String> = self.first_seen.iter().filter(|(_, at)| now.duration_since(**at) >= ttl).map(|(n, _)| n).collect();
        doomed.sort();
        doomed.truncate(MAX_SWEEP_DELETES);
        let paths: Vec<String> = doomed.iter().map(|n| layout.outcome(n)).collect();
        if paths.is_empty() {
            return Ok(0);
        }
        let mut w = fence.writer(client)?;
        for p in &paths {
            w.add_delete(p, None)?;
        }
        match fence.commit(w).await {
            Ok(_) => {}
            // One was removed meanwhile (a publisher of an older release deletes its own):
            // the rest one by one.
            Err(AgentError::Zk(zk::Error::NoNode)) => {
                for p in &paths {
                    let mut w = fence.writer(client)?;
                    w.add_delete(p, None)?;
                    match fence.commit(w).await {
                        Ok(_) | Err(AgentError::Zk(zk::Error::NoNode)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) => return Err(e),
        }
        let gone: Vec<String> = doomed.into_iter().cloned().collect();
        for name in &gone {
            self.first_seen.remove(name);
        }
        tracing::debug!(removed = gone.len(), "answered publish outcomes removed");
        Ok(gone.len())
    }
}
