//! The one owner of the ZooKeeper session. It connects with backoff, reports every state
//! change, and after an expiry builds a fresh client (the crate's client is dead for good once
//! expired). Everyone else borrows the current client through a [`SessionHandle`] and, by
//! watching the generation number, learns when to re-register, re-watch and re-read.

use crate::backoff::Backoff;
use crate::config::ZkConfig;
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

/// Where the session is in its life, as the design names the states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No session yet (starting, or building a new one after expiry).
    Connecting,
    /// Session established and a server is answering.
    Connected,
    /// Session alive but no server answering; it may come back or expire.
    Disconnected,
    /// The session is gone; its ephemeral nodes are gone with it.
    Expired,
    /// Closed on purpose at shutdown.
    Closed,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Connecting => "connecting",
            Phase::Connected => "connected",
            Phase::Disconnected => "disconnected",
            Phase::Expired => "expired",
            Phase::Closed => "closed",
        })
    }
}

/// What every component sees of the session.
#[derive(Debug, Clone)]
pub struct SessionView {
    /// Counts sessions: a new number means re-register, re-watch and re-read everything.
    pub generation: u64,
    /// The current phase.
    pub phase: Phase,
    /// The client of this generation, while it is alive.
    pub client: Option<zk::Client>,
    /// Why there is no usable session though a server answers (a missing chroot), in the
    /// words STATUS and `/healthz` show; None otherwise.
    pub problem: Option<String>,
}

/// A component's window on the session.
#[derive(Debug, Clone)]
pub struct SessionHandle {
    /// Updates from the supervisor.
    rx: watch::Receiver<SessionView>,
}

/// What became of a session an operation was running on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Same session, connected again: re-read what may have been missed, then go on.
    Reconnected,
    /// That session is over (expired, replaced or closed): start over with a new one.
    Replaced,
}

impl SessionHandle {
    /// The view right now, marked as seen so [`Self::changed`] waits for the next change.
    pub fn current(&mut self) -> SessionView {
        self.rx.borrow_and_update().clone()
    }

    /// Waits for a connected session; None once the session was closed for shutdown.
    pub async fn connected(&mut self) -> Option<(u64, zk::Client)> {
        loop {
            {
                let v = self.rx.borrow_and_update();
                match (&v.phase, &v.client) {
                    (Phase::Connected, Some(c)) => return Some((v.generation, c.clone())),
                    (Phase::Closed, _) => return None,
                    _ => {}
                }
            }
            if self.rx.changed().await.is_err() {
                return None;
            }
        }
    }

    /// Like [`SessionHandle::connected`], but None as soon as `stop` is cancelled too: the head
    /// of every component's session loop.
    pub async fn connected_until(&mut self, stop: &CancellationToken) -> Option<(u64, zk::Client)> {
        tokio::select! {
            _ = stop.cancelled() => None,
            c = self.connected() => c,
        }
    }

    /// Waits for the next change of phase or generation.
    pub async fn changed(&mut self) -> SessionView {
        if self.rx.changed().await.is_err() {
            return SessionView { generation: u64::MAX, phase: Phase::Closed, client: None, problem: None };
        }
        self.current()
    }

    /// After an operation failed on session `generation`, waits until that session is
    /// connected again or known to be over.
    pub async fn settle(&mut self, generation: u64) -> Settled {
        loop {
            {
                let v = self.rx.borrow_and_update();
                if v.generation != generation || matches!(v.phase, Phase::Expired | Phase::Closed) {
                    return Settled::Replaced;
                }
                if v.phase == Phase::Connected {
                    return Settled::Reconnected;
                }
            }
            if self.rx.changed().await.is_err() {
                return Settled::Replaced;
            }
        }
    }

    /// After an operation failed because session `generation` is gone, waits until the
    /// supervisor has noticed too (bounded, in case it never reports).
    pub async fn wait_replaced(&mut self, generation: u64) {
        let replaced = async {
            loop {
                {
                    let v = self.rx.borrow_and_update();
                    if v.generation != generation || matches!(v.phase, Phase::Expired | Phase::Closed) {
                        return;
                    }
                }
                if self.rx.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), replaced).await;
    }

    /// After `err` on session `generation`, waits for what the error calls for: the next
    /// session, a reconnect, or a second before `what` is tried again. False when `stop` came
    /// first. The one recovery rule every watching component shares.
    pub async fn recover(&mut self, generation: u64, err: &zk::Error, what: &str, stop: &CancellationToken) -> bool {
        match classify(err) {
            ErrorKind::SessionGone => {
                self.wait_replaced(generation).await;
                true
            }
            ErrorKind::ConnectionLost => tokio::select! {
                _ = stop.cancelled() => false,
                _ = self.settle(generation) => true,
            },
            ErrorKind::Other => {
                tracing::warn!("{what} failed: {err}; retrying in 1s");
                tokio::select! {
                    _ = stop.cancelled() => false,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => true,
                }
            }
        }
    }

    /// Why there is no usable session though a server answers (see [`SessionView::problem`]).
    pub fn problem(&self) -> Option<String> {
        self.rx.borrow().problem.clone()
    }

    /// The phase right now, without marking it seen (for readers that do not wait on changes).
    pub fn phase(&self) -> Phase {
        self.rx.borrow().phase
    }

    /// True while session `generation` is connected; components acting as leader check this.
    pub fn is_connected(&self, generation: u64) -> bool {
        let v = self.rx.borrow();
        v.generation == generation && v.phase == Phase::Connected
    }
}

/// The sending half, owned by [`SessionSupervisor::supervise`].
pub struct SessionSupervisor {
    /// Where views are published.
    tx: watch::Sender<SessionView>,
    /// Records state changes, reconnects and expiries as they are published.
    metrics: Arc<Metrics>,
}

/// A supervisor and the first handle on it.
pub fn channel(metrics: Arc<Metrics>) -> (SessionSupervisor, SessionHandle) {
    let (tx, rx) = watch::channel(SessionView { generation: 0, phase: Phase::Connecting, client: None, problem: None });
    metrics.session_phase(&Phase::Connecting.to_string());
    (SessionSupervisor { tx, metrics }, SessionHandle { rx })
}

/// Opens one session, failing fast when no server answers so the caller's backoff decides.
/// Authenticates with this process's digest credentials, if it has any.
pub async fn connect_once(hosts: &str, session_timeout: Duration) -> Result<zk::Client, zk::Error> {
    let mut connector = zk::Client::connector().with_session_timeout(session_timeout).with_fail_eagerly();
    if let Some(c) = crate::zk::identity::credentials() {
        connector = match c.scheme {
            crate::config::AuthScheme::Digest => connector.with_auth("digest", c.user_password.as_bytes()),
            crate::config::AuthScheme::Sasl => {
                let (user, password) = c.user_password.split_once(':').unwrap_or((&c.user_password, ""));
                connector.with_sasl(zk::SaslOptions::digest_md5(user.to_string(), password.to_string()))
            }
        };
    }
    match crate::zk::tls::options() {
        Some(tls) => connector.with_tls(tls.clone()).secure_connect(hosts).await,
        None => connector.connect(hosts).await,
    }
}

impl SessionSupervisor {
    /// Keeps a session alive until `shutdown`, then closes it so our ephemeral nodes vanish at
    /// once. Callers must drop their clients first (they hold the session open).
    pub async fn supervise(self, cfg: ZkConfig, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut generation = 0u64;
        let mut failures = 0u32;
        loop {
            let attempt = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = connect_once(&cfg.hosts, cfg.session_timeout) => r,
            };
            let client = match attempt {
                Ok(c) => c,
                Err(e) => {
                    failures += 1;
                    let delay = backoff.next_delay();
                    if failures == 1 || failures % 20 == 0 {
                        tracing::warn!(hosts = %cfg.hosts, "cannot reach ZooKeeper ({e}); retrying (attempt {failures}, next in {delay:?})");
                    } else {
                        tracing::debug!(hosts = %cfg.hosts, "cannot reach ZooKeeper ({e}); retrying in {delay:?}");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            // A session inside a chroot nobody created answers every write "node not exists":
            // create it when we may, else say so and keep trying (an operator may create it).
            if let Ok(cs) = crate::config::ConnectString::parse(&cfg.hosts) {
                if let Err(e) = ensure_chroot(&client, &cs, cfg.session_timeout, true).await {
                    drop(client);
                    failures += 1;
                    let delay = backoff.next_delay();
                    if failures == 1 || failures % 20 == 0 {
                        tracing::error!(hosts = %cfg.hosts, "{e}; retrying (attempt {failures}, next in {delay:?})");
                    }
                    let why = e.to_string();
                    self.tx.send_modify(|v| v.problem = Some(why));
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            }
            failures = 0;
            backoff.reset();
            generation += 1;
            self.metrics.session_established();
            let mut states = client.state_watcher();
            tracing::info!(
                session = %client.session_id(),
                timeout_ms = client.session_timeout().as_millis() as u64,
                generation,
                "ZooKeeper session established"
            );
            self.publish(generation, Phase::Connected, Some(client));
            let ended = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break None,
                    s = states.changed() => match s {
                        zk::SessionState::Disconnected => {
                            tracing::warn!(generation, "ZooKeeper connection lost; session may still be alive");
                            self.set_phase(Phase::Disconnected);
                        }
                        zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                            tracing::info!(generation, "ZooKeeper connection re-established; same session");
                            if self.tx.borrow().phase == Phase::Disconnected {
                                self.metrics.session_reconnected();
                            }
                            self.set_phase(Phase::Connected);
                        }
                        terminal => break Some(terminal),
                    },
                }
            };
            match ended {
                None => {
                    self.close(states).await;
                    return;
                }
                Some(state) => {
                    tracing::warn!(generation, "ZooKeeper session ended ({state}); building a new one");
                    self.metrics.session_expired();
                    self.publish(generation, Phase::Expired, None);
                }
            }
        }
        self.publish(generation, Phase::Closed, None);
    }

    fn publish(&self, generation: u64, phase: Phase, client: Option<zk::Client>) {
        self.metrics.session_phase(&phase.to_string());
        self.tx.send_replace(SessionView { generation, phase, client, problem: None });
    }

    fn set_phase(&self, phase: Phase) {
        self.metrics.session_phase(&phase.to_string());
        self.tx.send_modify(|v| v.phase = phase);
    }

    /// Drops our client and waits (briefly) for the crate to send CloseSession.
    async fn close(&self, states: zk::StateWatcher) {
        let generation = self.tx.borrow().generation;
        self.publish(generation, Phase::Closed, None);
        wait_closed(states).await;
    }
}

/// How long a clean stop waits for the server to confirm that our session is closed.
const CLOSE_PATIENCE: Duration = Duration::from_secs(3);

/// Waits (briefly) until the session behind `states` is closed, once every client of it was
/// dropped (the crate sends CloseSession then), so our ephemeral nodes vanish at once rather
/// than one session timeout later.
pub async fn wait_closed(mut states: zk::StateWatcher) {
    let closed = async {
        loop {
            if matches!(states.peek_state(), zk::SessionState::Closed | zk::SessionState::Expired) {
                return;
            }
            states.changed().await;
        }
    };
    match tokio::time::timeout(CLOSE_PATIENCE, closed).await {
        Ok(()) => tracing::info!("ZooKeeper session closed"),
        Err(_) => tracing::warn!("ZooKeeper session did not close within {CLOSE_PATIENCE:?}; the server will expire it"),
    }
}

/// Closes a session owned by one client (a one-shot run's): drops it and waits for the close.
pub async fn close(client: zk::Client) {
    let states = client.state_watcher();
    drop(client);
    wait_closed(states).await;
}

/// Why a one-shot connect gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectFailure {
    /// ZooKeeper answered and refused our credentials: retrying cannot help.
    #[error("{0}")]
    Refused(String),
    /// No server answered (down, wrong address, or a TLS handshake that failed).
    #[error("{0}")]
    Unreachable(String),
}

/// Connects, retrying with backoff until `patience` runs out: for one-shot runs, which must
/// ride out a quorum election but give up on a ZooKeeper that is down. The error says what was
/// tried and the last reason; refused credentials end it at once.
pub async fn connect_within(hosts: &str, session_timeout: Duration, patience: Duration) -> Result<zk::Client, ConnectFailure> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let why = match tokio::time::timeout_at(deadline, connect_once(hosts, session_timeout)).await {
            Ok(Ok(c)) => return Ok(c),
            Ok(Err(zk::Error::AuthFailed)) => {
                let who = crate::zk::identity::credentials().map(|c| format!("{:?}", c)).unwrap_or_else(|| "no credentials".into());
                return Err(ConnectFailure::Refused(format!(
                    "ZooKeeper at {hosts} refused our credentials ({who}): authentication failed; check [zookeeper] auth_file and auth_scheme"
                )));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_string(),
        };
        // The whole patience is used: the last pause is cut to what is left, and the last
        // attempt ends at the deadline.
        let now = tokio::time::Instant::now();
        let delay = backoff.next_delay().min(deadline.saturating_duration_since(now));
        if now >= deadline {
            let hint = if crate::zk::tls::options().is_some() {
                " (over TLS: check that the servers' certificates chain to ca_file and name the hosts, and that the client certificate is accepted)"
            } else {
                ""
            };
            return Err(ConnectFailure::Unreachable(format!(
                "cannot reach ZooKeeper at {hosts} within {}: {why}{hint}",
                humantime::format_duration(patience)
            )));
        }
        tracing::debug!(hosts, "cannot reach ZooKeeper ({why}); retrying in {delay:?}");
        tokio::time::sleep(delay).await;
    }
}

/// How a ZooKeeper error should be handled by a component's loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The connection dropped mid-request: settle, then re-read (the request may have landed).
    ConnectionLost,
    /// The session is gone: start over on the next one.
    SessionGone,
    /// Anything else: log it and retry after a pause.
    Other,
}

/// Sorts a ZooKeeper error into what a component should do next.
pub fn classify(e: &zk::Error) -> ErrorKind {
    match e {
        zk::Error::ConnectionLoss | zk::Error::Timeout => ErrorKind::ConnectionLost,
        zk::Error::SessionExpired | zk::Error::ClientClosed | zk::Error::SessionMoved | zk::Error::AuthFailed => {
            ErrorKind::SessionGone
        }
        _ => ErrorKind::Other,
    }
}

/// Follows one thing under one-shot watches for as long as `stop` allows: `look` reads it on
/// the current session and returns the watch that fires when it changes; it runs again when the
/// watch fires, and after the session is recovered (an error, or a session event on the watch).
/// The one loop of every component that only follows a node (drain flags, freeze flags).
/// `lost` runs when a session's looking ends in an error, before it is recovered: what was
/// read may be stale by the time the next session reads again.
pub async fn keep_watching<F, Fut>(mut session: SessionHandle, stop: CancellationToken, what: &str, mut look: F, mut lost: impl FnMut())
where
    F: FnMut(zk::Client) -> Fut,
    Fut: std::future::Future<Output = Result<zk::OneshotWatcher, zk::Error>>,
{
    loop {
        let Some((generation, client)) = session.connected_until(&stop).await else {
            return;
        };
        let err = loop {
            let watcher = match look(client.clone()).await {
                Ok(w) => w,
                Err(e) => break e,
            };
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                ev = watcher.changed() => ev,
            };
            if ev.event_type == zk::EventType::Session {
                break state_error(ev.session_state);
            }
        };
        drop(client);
        lost();
        if !session.recover(generation, &err, what, &stop).await {
            return;
        }
    }
}

/// The error a watch's session event stands for (the crate keeps its own mapping private).
pub fn state_error(state: zk::SessionState) -> zk::Error {
    match state {
        zk::SessionState::Expired => zk::Error::SessionExpired,
        zk::SessionState::AuthFailed => zk::Error::AuthFailed,
        zk::SessionState::Closed => zk::Error::ClientClosed,
        _ => zk::Error::ConnectionLoss,
    }
}

/// Creates the operator's flag `path` (owned by its creator) with `data`, and its directories
/// `dirs` (outermost first, of `kind`) only when it finds them missing, deepest first: under
/// ACLs a publisher may create inside a directory it could not create (the root is the
/// agents'), and ZooKeeper checks CREATE on a parent before it says a child exists. The flag
/// that already exists is `NodeExists`, for the caller to say so.
pub async fn create_flag(client: &zk::Client, path: &str, data: &[u8], dirs: &[&str], kind: crate::zk::identity::NodeKind) -> Result<(), zk::Error> {
    let owned = crate::zk::identity::for_node(crate::zk::identity::NodeKind::Owned);
    let leaf = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&owned));
    match client.create(path, data, &leaf).await {
        Err(zk::Error::NoNode) => {}
        r => return r.map(|_| ()),
    }
    let dir_acl = crate::zk::identity::for_node(kind);
    let dir_mode = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&dir_acl));
    // The deepest directory that can be made now; above it, what is missing too.
    let mut made = dirs.len();
    while made > 0 {
        match client.create(dirs[made - 1], b"", &dir_mode).await {
            Ok(_) | Err(zk::Error::NodeExists) => break,
            Err(zk::Error::NoNode) => made -= 1,
            Err(e) => return Err(e),
        }
    }
    if made == 0 {
        if let Some((root, _)) = dirs.first().and_then(|d| d.rsplit_once('/')).filter(|(r, _)| !r.is_empty()) {
            ensure_path(client, root, crate::zk::identity::NodeKind::AgentParent).await?;
        }
    }
    for dir in &dirs[made..] {
        match client.create(dir, b"", &dir_mode).await {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(e),
        }
    }
    client.create(path, data, &leaf).await.map(|_| ())
}

/// Creates `path` (with the ACL of `kind`) and its missing ancestors (with the ACL of
/// `kind.ancestors()`, the agents' parent ACL but for services) as persistent nodes. Existing
/// nodes are left as they are.
///
/// Says whether it created `path` itself (a caller that made a node for one use can take it
/// away again).
pub async fn ensure_path(client: &zk::Client, path: &str, kind: crate::zk::identity::NodeKind) -> Result<bool, zk::Error> {
    if client.check_stat(path).await?.is_some() {
        return Ok(false);
    }
    let mut created = false;
    let mut prefix = String::new();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    for (i, seg) in segments.iter().enumerate() {
        prefix.push('/');
        prefix.push_str(seg);
        let last = i + 1 == segments.len();
        let acl = crate::zk::identity::for_node(if last { kind } else { kind.ancestors() });
        match client.create(&prefix, b"", &zk::CreateMode::Persistent.with_acls(zk::Acls::new(&acl))).await {
            Ok(_) => created = last,
            Err(zk::Error::NodeExists) => {}
            // ZooKeeper checks CREATE on the parent before it looks for the node, so an app host
            // gets NoAuth for an ancestor that exists (made by an agent): go on below it.
            Err(zk::Error::NoAuth) if !last && client.check_stat(&prefix).await?.is_some() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}

/// Makes sure the chroot of `hosts` exists: looks with `client` (a session inside it), and
/// when it is missing and `create` is set, creates it (and its ancestors) from a session
/// without the chroot, with the agents' parent ACL.
pub async fn ensure_chroot(client: &zk::Client, hosts: &crate::config::ConnectString, session_timeout: Duration, create: bool) -> Result<(), crate::zk::chroot::ChrootError> {
    let Some(chroot) = &hosts.chroot else { return Ok(()) };
    if crate::zk::chroot::exists(client, hosts).await? {
        return Ok(());
    }
    if !create {
        return Err(crate::zk::chroot::ChrootError::Absent(chroot.clone()));
    }
    let outside = connect_once(&hosts.servers, session_timeout).await?;
    let made = ensure_path(&outside, chroot, crate::zk::identity::NodeKind::AgentParent.ancestors()).await;
    close(outside).await;
    match made {
        Ok(_) => {
            tracing::warn!(%chroot, "the chroot did not exist; created it");
            Ok(())
        }
        Err(zk::Error::NoAuth) => Err(crate::zk::chroot::ChrootError::Missing { chroot: chroot.clone(), why: "no permission to create it here".into() }),
        Err(e @ (zk::Error::ConnectionLoss | zk::Error::Timeout | zk::Error::SessionExpired)) => Err(crate::zk::chroot::ChrootError::Zk(e)),
        Err(e) => Err(crate::zk::chroot::ChrootError::Missing { chroot: chroot.clone(), why: format!("creating it failed: {e}") }),
    }
}

/// Errors by which a server says it does not know a request (addWatch and multi reads came
/// with ZooKeeper 3.6), as opposed to a connection or session that failed.
pub fn is_unsupported(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::Unimplemented | zk::Error::UnexpectedError(_) | zk::Error::UnexpectedErrorCode(_) | zk::Error::MarshallingError | zk::Error::BadArguments(_)
    )
}

/// One data read of a multi read, as a plain `get_data` answers it.
pub fn multi_data(r: zk::MultiReadResult) -> Result<(Vec<u8>, zk::Stat), zk::Error> {
    match r {
        zk::MultiReadResult::Data { data, stat } => Ok((data, stat)),
        zk::MultiReadResult::Error { err } => Err(err),
        _ => Err(zk::Error::UnexpectedError("a multi read answered something else than data for a data read".into())),
    }
}

/// Reads the data of every one of `paths` in one multi read (ZooKeeper 3.6+), each answered
/// as its own `get_data` would be; a server that refuses multi reads sets `no_multi_read`, and
/// this process reads them one by one from then on.
pub async fn get_many(client: &zk::Client, paths: &[String], no_multi_read: &std::sync::atomic::AtomicBool) -> Result<Vec<Result<(Vec<u8>, zk::Stat), zk::Error>>, zk::Error> {
    use std::sync::atomic::Ordering;
    if !no_multi_read.load(Ordering::Relaxed) {
        let mut r = client.new_multi_reader();
        for p in paths {
            r.add_get_data(p)?;
        }
        match r.commit().await {
            Ok(results) if results.len() == paths.len() => return Ok(results.into_iter().map(multi_data).collect()),
            Ok(results) => return Err(zk::Error::UnexpectedError(format!("a multi read of {} answered {}", paths.len(), results.len()))),
            Err(e) if is_unsupported(&e) => {
                tracing::info!("the server refuses multi reads ({e}; ZooKeeper older than 3.6?): reading nodes one by one");
                no_multi_read.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        out.push(client.get_data(p).await);
    }
    Ok(out)
}
