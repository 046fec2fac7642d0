//! Keeps one ephemeral node of ours alive for as long as the daemon runs: created on every new
//! session, re-created within a second when someone deletes it, updated when its data changes,
//! and never duplicated when a create is lost with the connection.

use crate::zk::session::{self, SessionHandle};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

/// Which node to keep.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The parent znode (created if missing).
    pub parent: String,
    /// The node name, or the name prefix when `sequential`.
    pub name: String,
    /// EPHEMERAL_SEQUENTIAL (election) or plain EPHEMERAL (status).
    pub sequential: bool,
    /// What the parent is, for its ACL if we have to create it.
    pub parent_kind: crate::zk::identity::NodeKind,
    /// What the node says when we stop and may not delete it (a status parent gives hosts no
    /// DELETE, so a removed app's node stays until the session ends): readers skip it.
    /// Maps the node's last data to what it says then.
    pub tombstone: Option<fn(&[u8]) -> Option<Vec<u8>>>,
    /// Told when our name is held by another session for longer than a session timeout (an
    /// impostor, or a stuck predecessor), and cleared once the node is ours: the host reports
    /// itself unhealthy meanwhile.
    pub conflict: Option<std::sync::Arc<watch::Sender<Option<String>>>>,
    /// How often to look at the node by itself, besides its watch (None: never): a watch that
    /// was missed, or data someone else overwrote (which a watch wakes for but nothing else
    /// corrects), is put right at the next pass. Each pass reads the node once.
    pub resync: Option<Duration>,
    /// How long a change of the data waits before it is written (changes meanwhile go in the
    /// same write): a fleet's status writes then come after its reads of a new version, not
    /// among them ([`WriteDelay::NONE`]: at once).
    pub write_delay: WriteDelay,
}

/// How long a change of a node's data waits before it is written: `base`, plus this node's
/// spot in a window of `per_sibling` for each node under the same parent, the window at most
/// `max_window`. The parent is counted when the node is registered and at each periodic pass,
/// not per write. A thousand hosts told of a version at once would otherwise all write within
/// the same few milliseconds, among each other's reads of it; spread out, a fleet's writes come
/// at a pace that does not grow with the fleet until the window reaches its cap. The spot
/// follows from the node's name and the count, so while the fleet stays the same size a host
/// writes at the same point of the window every time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteDelay {
    /// The wait every write has.
    pub base: Duration,
    /// The window's length per sibling (ZERO: no window, no count).
    pub per_sibling: Duration,
    /// The longest window, however many siblings: a report must not lag by minutes on a fleet
    /// of tens of thousands.
    pub max_window: Duration,
}

impl WriteDelay {
    /// Writes at once.
    pub const NONE: WriteDelay = WriteDelay { base: Duration::ZERO, per_sibling: Duration::ZERO, max_window: Duration::ZERO };

    /// The wait of the node `name` among `siblings` nodes (itself included).
    pub fn of(&self, name: &str, siblings: u32) -> Duration {
        if self.per_sibling.is_zero() || siblings <= 1 {
            return self.base;
        }
        // The name's sha256, as canaries are ranked (`model::rollout`): the same spot for the
        // same name and count, across restarts and upgrades.
        let hex = crate::digest::sha256_hex(name.as_bytes());
        let h = u64::from_str_radix(&hex[..16], 16).expect("sha256 hex");
        let window = (self.per_sibling * siblings).min(self.max_window);
        self.base + window.mul_f64((h % u64::from(siblings)) as f64 / f64::from(siblings))
    }

    /// The wait of our node `name` under `parent`: the parent is counted only when there is a
    /// window. A count that cannot be had is no reason to stop keeping the node: the node then
    /// takes its spot in the longest window.
    async fn counted(&self, client: &zk::Client, parent: &str, name: &str) -> Duration {
        if self.per_sibling.is_zero() {
            return self.base;
        }
        let siblings = match client.check_stat(parent).await {
            Ok(stat) => stat.map_or(1, |st| st.num_children.max(1) as u32),
            Err(e) => {
                tracing::debug!(parent, name, "cannot count the nodes beside ours ({e}); spreading our writes over the longest window");
                u32::MAX
            }
        };
        self.of(name, siblings)
    }
}

/// Our node as it currently exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The session generation that owns it.
    pub generation: u64,
    /// Its full path.
    pub path: String,
    /// Its name (last path segment).
    pub name: String,
}

/// Runs until `shutdown`, publishing where our node is (None while it is not) on `out`.
/// The node's data is the latest value of `data`. On shutdown the node is deleted, so a
/// removed app's status (or a stopping agent's registration) vanishes at once.
pub async fn keep(
    spec: NodeSpec,
    session: SessionHandle,
    data: watch::Receiver<Vec<u8>>,
    out: watch::Sender<Option<Registered>>,
    shutdown: CancellationToken,
) {
    let mut cleanup_session = session.clone();
    let last_data = data.clone();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = keep_until_cancelled(&spec, session, data, &out) => {}
    }
    let ours = out.send_replace(None);
    let view = cleanup_session.current();
    if let (Some(reg), Some(client)) = (ours, view.client) {
        if reg.generation == view.generation {
            let deleted = tokio::time::timeout(Duration::from_secs(1), client.delete(&reg.path, None)).await;
            let last = spec.tombstone.and_then(|f| f(&last_data.borrow()));
            if let (Ok(Err(zk::Error::NoAuth)), Some(last)) = (deleted, last) {
                // No DELETE on the parent: say "removed" instead; the node goes with the session.
                tracing::info!(node = %reg.path, "not allowed to delete our node; marking it removed until the session ends");
                let _ = tokio::time::timeout(Duration::from_secs(1), client.set_data(&reg.path, &last, None)).await;
            }
        }
    }
}

async fn keep_until_cancelled(
    spec: &NodeSpec,
    mut session: SessionHandle,
    mut data: watch::Receiver<Vec<u8>>,
    out: &watch::Sender<Option<Registered>>,
) {
    loop {
        out.send_replace(None);
        let Some((generation, client)) = session.connected().await else {
            return;
        };
        let mut on_session = session.clone();
        let err = match keep_on_session(spec, &client, generation, &mut data, out).await {
            Ok(never) => match never {},
            Err(e) => e,
        };
        drop(client);
        // The caller's shutdown ends this whole loop, so the wait needs no stop of its own.
        let what = format!("keeping our ephemeral node under {}", spec.parent);
        on_session.recover(generation, &err, &what, &CancellationToken::new()).await;
    }
}

/// Creates (or adopts) our node on this session and keeps it; returns only with an error.
async fn keep_on_session(
    spec: &NodeSpec,
    client: &zk::Client,
    generation: u64,
    data: &mut watch::Receiver<Vec<u8>>,
    out: &watch::Sender<Option<Registered>>,
) -> Result<std::convert::Infallible, zk::Error> {
    session::ensure_path(client, &spec.parent, spec.parent_kind).await?;
    let mut current: Option<String> = find_ours(client, spec).await?;
    loop {
        let path = match current.take() {
            Some(p) => p,
            None => {
                let bytes = data.borrow_and_update().clone();
                create(client, spec, &bytes).await?
            }
        };
        let name = path.rsplit('/').next().unwrap_or_default().to_string();
        // Counted again at each periodic pass: a fleet registering at once counts low at first.
        let mut write_delay = spec.write_delay.counted(client, &spec.parent, &name).await;
        tracing::info!(node = %path, ?write_delay, "ephemeral node registered");
        out.send_replace(Some(Registered { generation, path: path.clone(), name: name.clone() }));
        // Bring the data up to date (it may have changed while we were creating).
        if data.has_changed().unwrap_or(false) {
            let bytes = data.borrow_and_update().clone();
            set_or_recreate(client, &path, &bytes).await?;
        }
        // Once the data's sender is gone the data is final; keep watching the node.
        let mut data_open = true;
        let mut next_pass = spec.resync.map(|r| tokio::time::Instant::now() + crate::backoff::jittered(r));
        // The watch on our node: a persistent one where the server has them (3.6+), so that
        // our own writes (a status report per publish) cost no request to set the watch again;
        // an exists watch set again after each event otherwise. Set after the node was made,
        // so a deletion in between is looked for once.
        let mut persistent = match client.watch(&path, zk::AddWatchMode::Persistent).await {
            Ok(w) => Some(w),
            Err(e) if crate::zk::session::is_unsupported(&e) => None,
            Err(e) => return Err(e),
        };
        if persistent.is_some() && client.check_stat(&path).await?.is_none() {
            tracing::warn!(node = %path, "our ephemeral node was deleted while the session lives; re-creating it");
            out.send_replace(None);
            continue;
        }
        loop {
            let oneshot = match persistent {
                Some(_) => None,
                None => {
                    let (stat, watcher) = client.check_and_watch_stat(&path).await?;
                    if stat.is_none() {
                        break;
                    }
                    Some(watcher)
                }
            };
            let node_event = async {
                match (persistent.as_mut(), oneshot) {
                    (Some(w), _) => w.changed().await,
                    (None, Some(w)) => w.changed().await,
                    (None, None) => unreachable!("one of the two watches is set"),
                }
            };
            let pass = async {
                match next_pass {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = pass => {
                    next_pass = spec.resync.map(|r| tokio::time::Instant::now() + crate::backoff::jittered(r));
                    write_delay = spec.write_delay.counted(client, &spec.parent, &name).await;
                    let ours = data.borrow().clone();
                    match client.get_data(&path).await {
                        Err(zk::Error::NoNode) => break,
                        Err(e) => return Err(e),
                        Ok((theirs, _)) if theirs != ours => {
                            tracing::warn!(node = %path, "periodic pass: our ephemeral node's data was changed by someone else; writing ours again");
                            if !set_or_recreate(client, &path, &ours).await? {
                                break;
                            }
                        }
                        Ok(_) => {}
                    }
                }
                ev = node_event => match ev.event_type {
                    zk::EventType::NodeDeleted => break,
                    zk::EventType::Session if ev.session_state.is_terminated() => return Err(session::state_error(ev.session_state)),
                    // A persistent watch's reconnect: a deletion meanwhile is not replayed, and
                    // the client does not set persistent watches again on the new connection
                    // (see `crate::zk::version_events`): set it again (the old one is dropped
                    // after, so no removal reaches the server), then look.
                    zk::EventType::Session if ev.session_state == zk::SessionState::SyncConnected => {
                        persistent = Some(client.watch(&path, zk::AddWatchMode::Persistent).await?);
                        if client.check_stat(&path).await?.is_none() {
                            break;
                        }
                    }
                    _ => continue,
                },
                changed = data.changed(), if data_open => {
                    if changed.is_err() {
                        data_open = false;
                        continue;
                    }
                    if !write_delay.is_zero() {
                        tokio::time::sleep(write_delay).await;
                    }
                    let bytes = data.borrow_and_update().clone();
                    if !set_or_recreate(client, &path, &bytes).await? {
                        break;
                    }
                }
            }
        }
        tracing::warn!(node = %path, "our ephemeral node was deleted while the session lives; re-creating it");
        out.send_replace(None);
    }
}

/// Sets data; false when the node vanished (the caller re-creates it).
async fn set_or_recreate(client: &zk::Client, path: &str, bytes: &[u8]) -> Result<bool, zk::Error> {
    match client.set_data(path, bytes, None).await {
        Ok(_) => Ok(true),
        Err(zk::Error::NoNode) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates the node. A create lost with the connection may have landed, so on connection loss
/// we look for a node owned by our session before trying again.
async fn create(client: &zk::Client, spec: &NodeSpec, bytes: &[u8]) -> Result<String, zk::Error> {
    let mode = if spec.sequential { zk::CreateMode::EphemeralSequential } else { zk::CreateMode::Ephemeral };
    let acl = crate::zk::identity::for_node(crate::zk::identity::NodeKind::Owned);
    let opts = mode.with_acls(zk::Acls::new(&acl));
    let base = format!("{}/{}", spec.parent, spec.name);
    loop {
        match client.create(&base, bytes, &opts).await {
            Ok((_, seq)) => return Ok(if spec.sequential { format!("{base}{seq}") } else { base }),
            Err(zk::Error::ConnectionLoss) => {
                // Wait for the same session to come back, then look before creating again.
                let mut states = client.state_watcher();
                while states.peek_state() != zk::SessionState::SyncConnected {
                    if states.peek_state().is_terminated() {
                        return Err(zk::Error::SessionExpired);
                    }
                    states.changed().await;
                }
                if let Some(p) = find_ours(client, spec).await? {
                    return Ok(p);
                }
            }
            Err(zk::Error::NodeExists) if !spec.sequential => {
                // A node of that name owned by another session: most likely our own previous
                // process (killed, restarted faster than its session expired). Replace it so
                // our registration does not vanish when that session expires; where the parent
                // gives us no DELETE (status, with ACLs), wait for that session to expire.
                match client.check_stat(&base).await? {
                    Some(stat) if stat.ephemeral_owner == client.session_id().0 => return Ok(base),
                    Some(stat) => {
                        let owner = zk::SessionId(stat.ephemeral_owner);
                        match client.delete(&base, Some(stat.version)).await {
                            Ok(()) | Err(zk::Error::NoNode) | Err(zk::Error::BadVersion) => {
                                tracing::info!(node = %base, %owner, "replaced a node left by an earlier session");
                            }
                            Err(zk::Error::NoAuth) => wait_for_owner_to_go(client, spec, &base, owner).await?,
                            Err(e) => return Err(e),
                        }
                    }
                    None => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Waits until the node `path`, held by session `owner`, is gone (its session expired). Logs
/// once at info; after twice our session timeout (longer than any session of a predecessor on
/// this ensemble should last) logs an error naming the node and the owner, and reports the
/// conflict, since then someone else most likely holds our name.
async fn wait_for_owner_to_go(client: &zk::Client, spec: &NodeSpec, path: &str, owner: zk::SessionId) -> Result<(), zk::Error> {
    tracing::info!(node = %path, %owner, "our node is held by an earlier session and we may not delete it; waiting for that session to expire");
    let patience = client.session_timeout() * 2;
    let deadline = tokio::time::Instant::now() + patience;
    let mut told = false;
    loop {
        let (stat, watcher) = client.check_and_watch_stat(path).await?;
        if stat.is_none() {
            if let Some(c) = &spec.conflict {
                c.send_replace(None);
            }
            return Ok(());
        }
        let timeout = if told { None } else { Some(deadline) };
        match timeout {
            Some(at) => {
                if tokio::time::timeout_at(at, watcher.changed()).await.is_err() {
                    told = true;
                    let why = format!(
                        "{path} is held by session {owner}, not ours, for more than {patience:?}: another host may be reporting under our name"
                    );
                    tracing::error!("{why}");
                    if let Some(c) = &spec.conflict {
                        c.send_replace(Some(why));
                    }
                }
            }
            None => {
                watcher.changed().await;
            }
        }
    }
}

/// Our node under the parent, if our current session already owns one.
async fn find_ours(client: &zk::Client, spec: &NodeSpec) -> Result<Option<String>, zk::Error> {
    let me = client.session_id().0;
    let candidates: Vec<String> = if spec.sequential {
        client
            .list_children(&spec.parent)
            .await?
            .into_iter()
            .filter(|c| crate::model::layout::sequence_of(c, &spec.name).is_some())
            .collect()
    } else {
        vec![spec.name.clone()]
    };
    for c in candidates {
        let path = format!("{}/{}", spec.parent, c);
        if let Some(stat) = client.check_stat(&path).await? {
            if stat.ephemeral_owner == me {
                return Ok(Some(path));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleets_writes_spread_over_a_window_that_grows_with_it_and_each_host_keeps_its_spot() {
        let d = WriteDelay { base: Duration::from_millis(50), per_sibling: Duration::from_micros(500), max_window: Duration::from_secs(2) };
        assert_eq!(WriteDelay::NONE.of("web-1", 1000), Duration::ZERO);
        assert_eq!(d.of("web-1", 1), Duration::from_millis(50), "alone: the base only");
        assert_eq!(d.of("web-1", 1000), d.of("web-1", 1000), "the same spot every time");
        let spots: Vec<Duration> = (0..1000).map(|i| d.of(&format!("sim-{i:04}"), 1000)).collect();
        assert!(spots.iter().all(|s| *s >= Duration::from_millis(50) && *s < Duration::from_millis(550)), "inside base + 1,000 x 0.5 ms");
        // Spread, not bunched: every tenth of the window gets some of the thousand.
        let mut tenths = [0usize; 10];
        for s in &spots {
            tenths[((s.as_micros() - 50_000) / 50_000) as usize] += 1;
        }
        assert!(tenths.iter().all(|n| *n >= 50), "{tenths:?}");
        let small: Vec<Duration> = (0..10).map(|i| d.of(&format!("web-{i}"), 10)).collect();
        assert!(small.iter().all(|s| *s < Duration::from_millis(55)), "10 hosts: within 5 ms of the base");
        let huge: Vec<Duration> = (0..2000).map(|i| d.of(&format!("sim-{i:05}"), 50_000)).collect();
        assert!(huge.iter().all(|s| *s < Duration::from_millis(2050)), "50,000 hosts: the window stops at 2 s");
        assert!(huge.iter().any(|s| *s > Duration::from_millis(1800)), "and is used to its end");
        assert!(d.of("web-1", u32::MAX) < Duration::from_millis(2050), "no count: the longest window, no overflow");
    }
}
