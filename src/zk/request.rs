//! Publish requests in flight: queue one for the leader and wait for its outcome (used by
//! `zkcoordctl` and the legacy trigger alike).

use crate::model::layout::{Layout, REQUEST_PREFIX};
use crate::model::request::{encode, Outcome, RequestHeader};
use std::time::Duration;
use zookeeper_client as zk;

/// Queues a request for the leader; returns the request node's name and the parents it
/// made itself. The parents are looked after only when the create finds them missing (a
/// first publish, or a new deployment), so queueing is one request to ZooKeeper.
pub async fn submit(client: &zk::Client, layout: &Layout, header: &RequestHeader, data: &[u8]) -> Result<(String, Vec<String>), zk::Error> {
    match create(client, layout, header, data).await {
        Err(zk::Error::NoNode) => {
            let made = ensure_parents(client, layout).await?;
            Ok((create(client, layout, header, data).await?, made))
        }
        done => Ok((done?, Vec::new())),
    }
}

/// Makes sure the requests and outcomes parents exist (two round trips). A long-lived
/// submitter (the legacy trigger) does this once per session, not once per request.
///
/// With ACLs only agents may create them: a publisher that comes while a new leader is still
/// making its parents waits for them (up to [`PARENT_PATIENCE`]) instead of being refused.
/// Returns the parents it created itself.
pub async fn ensure_parents(client: &zk::Client, layout: &Layout) -> Result<Vec<String>, zk::Error> {
    use crate::zk::identity::NodeKind;
    let mut made = Vec::new();
    for (path, kind) in [(layout.requests(), NodeKind::RequestsParent), (layout.outcomes(), NodeKind::OutcomesParent)] {
        match crate::zk::session::ensure_path(client, &path, kind).await {
            Err(zk::Error::NoAuth) => await_parent(client, &path).await?,
            Ok(true) => made.push(path),
            other => {
                other?;
            }
        }
    }
    Ok(made)
}

/// How long a publisher waits for a leader to make a parent it may not make itself.
pub const PARENT_PATIENCE: Duration = Duration::from_secs(10);

/// Waits for `path` to exist; NoAuth (what creating it was answered) when it does not in time.
async fn await_parent(client: &zk::Client, path: &str) -> Result<(), zk::Error> {
    let deadline = tokio::time::Instant::now() + PARENT_PATIENCE;
    loop {
        let (stat, watcher) = client.check_and_watch_stat(path).await?;
        if stat.is_some() {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, watcher.changed()).await.is_err() {
            return Err(zk::Error::NoAuth);
        }
    }
}

/// Queues a request for the leader, its parents known to exist ([`ensure_parents`]); returns
/// the request node's name.
pub async fn create(client: &zk::Client, layout: &Layout, header: &RequestHeader, data: &[u8]) -> Result<String, zk::Error> {
    let prefix = format!("{}/{}", layout.requests(), REQUEST_PREFIX);
    let acl = crate::zk::identity::for_node(crate::zk::identity::NodeKind::Owned);
    let opts = zk::CreateMode::PersistentSequential.with_acls(zk::Acls::new(&acl));
    let (_, seq) = client.create(&prefix, &encode(header, data), &opts).await?;
    Ok(format!("{REQUEST_PREFIX}{seq}"))
}

/// Why no outcome arrived.
#[derive(Debug, thiserror::Error)]
pub enum AwaitError {
    /// No leader answered in time; the request was withdrawn, nothing was published.
    #[error("no leading agent answered within {0:?}; the request was withdrawn and nothing was published")]
    NoLeader(Duration),
    /// ZooKeeper failed underneath.
    #[error("ZooKeeper: {0}")]
    Zk(#[from] zk::Error),
    /// The outcome node held something unreadable.
    #[error("unreadable outcome: {0}")]
    Garbled(String),
}

/// Waits for the leader's outcome of `req`, withdrawing the request if none comes in `timeout`.
pub async fn await_outcome(client: &zk::Client, layout: &Layout, req: &str, timeout: Duration) -> Result<Outcome, AwaitError> {
    let path = layout.outcome(req);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (stat, watcher) = client.check_and_watch_stat(&path).await?;
        if stat.is_some() {
            return read_outcome(client, &path).await;
        }
        if tokio::time::timeout_at(deadline, watcher.changed()).await.is_err() {
            // Withdraw; if the request is already gone, the leader took it: read its outcome.
            match client.delete(&format!("{}/{}", layout.requests(), req), None).await {
                Ok(()) => return Err(AwaitError::NoLeader(timeout)),
                Err(zk::Error::NoNode) => {
                    let (_, w) = client.check_and_watch_stat(&path).await?;
                    if client.check_stat(&path).await?.is_none() {
                        let _ = tokio::time::timeout(Duration::from_secs(5), w.changed()).await;
                    }
                    return read_outcome(client, &path).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Reads an outcome and leaves it: the leader removes answers after `outcome_ttl` (see
/// `agent::outcomes`), so reading one costs the publisher no write.
async fn read_outcome(client: &zk::Client, path: &str) -> Result<Outcome, AwaitError> {
    let (bytes, _) = client.get_data(path).await?;
    serde_json::from_slice(&bytes).map_err(|e| AwaitError::Garbled(e.to_string()))
}
