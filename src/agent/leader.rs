//! The leader at work: one `Leader` holds what every step needs (the config, the layout, the
//! session's client, the fence, the metrics), and its methods turn one request into an outcome
//! (`handle_request`: claim, read, check, decide, finish) and prune old versions. Every write
//! is fenced (see [`crate::zk::fence`]).

use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::layout::{self, Layout, VersionId};
use crate::model::request::{self, validate_header, validate_inline, Outcome, RequestHeader, VersionMeta};
use crate::zk::fence::{AgentError, Fence};
use crate::zk::identity::NodeKind;
use crate::zk::session;
use std::collections::BTreeSet;
use crate::model::freeze::Freezes;
use tokio::sync::watch;
use zookeeper_client as zk;

/// What leading takes, for as long as one leadership lasts.
pub(crate) struct Leader<'a> {
    /// The agent's config (apps, `keep_versions`, `leaders`, size limit).
    pub config: &'a Config,
    /// Where every znode lives, built once per leadership.
    pub layout: Layout,
    /// The session's client leadership is tied to.
    pub client: &'a zk::Client,
    /// The election node every write checks.
    pub fence: &'a Fence,
    /// Publishes handled, by outcome.
    pub metrics: &'a Metrics,
    /// What this leadership learnt from its own writes; a new leadership starts empty.
    pub known: std::sync::Mutex<Known>,
    /// The freeze flags in force (None until first read), kept by [`crate::zk::freeze::keep`].
    pub freezes: watch::Receiver<Option<Freezes>>,
    /// Set once a wait for the flags' first read timed out: later publishes are refused at
    /// once rather than each waiting again (a batch would otherwise wait per request).
    pub freeze_wait_spent: std::sync::atomic::AtomicBool,
    /// Set once the server refused a multi read (older than 3.6): listings and records are
    /// then read apart (see [`crate::zk::rollout::list_with_record`]).
    pub no_multi_read: std::sync::atomic::AtomicBool,
    /// The versions this leadership follows until they settle, for their records.
    pub unsettled: crate::agent::unsettled::Unsettled,
}

/// What a leader knows without reading it again, from its own writes.
#[derive(Default)]
pub(crate) struct Known {
    /// Apps whose metadata parent exists (made once per leadership, not per publish).
    pub meta_parents: BTreeSet<String>,
    /// Per app, the newest version it created: (stream, name, sha256), for dedupe without
    /// reading the version back. Used only while the listing still names it newest.
    pub newest: std::collections::HashMap<String, (i64, String, String)>,
    /// Per app, its versions as the last publish listed them plus the one it created: the
    /// prune after that publish needs no listing of its own. Taken by the prune.
    pub listed: std::collections::HashMap<String, Vec<VersionId>>,
    /// Per app, when its chunks directory was last seen empty. Within [`BLOBLESS_RECHECK`] of
    /// that, and with no chunked publish handled since, a prune does not list it again.
    pub blobless: std::collections::HashMap<String, std::time::Instant>,
}

/// How long an app's empty chunks directory is taken as still empty by the prune: chunks come
/// with a chunked publish, which clears it at once; only an upload abandoned before its request
/// (an orphan, removed after [`crate::zk::blobs::ORPHAN_AGE`] anyway) waits this long to be seen.
pub(crate) const BLOBLESS_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// The request a publish came in: answered in the new version's own multi-op.
#[derive(Clone, Copy)]
pub(crate) struct Reply<'a> {
    /// The request node's name.
    pub req: &'a str,
    /// Whether this leader holds a claim on it, removed with it.
    pub claimed: bool,
}

/// Metadata to write beside a version: (app, version, meta).
pub(crate) type MetaFor = Option<(String, String, VersionMeta)>;

/// The sequence number `app`'s next version takes, from its versions parent's `stat` and
/// `children` (see [`layout::next_sequence`]): the name a sequential create would get now. Never
/// at or below the newest listed version: a server that counts `cversion` otherwise (creations
/// only) is answered with its `cversion`.
pub(crate) fn next_version_seq(stat: &zk::Stat, children: &[String]) -> u64 {
    let next = layout::next_sequence(stat.cversion, stat.num_children);
    match layout::newest_version(children) {
        Some(n) if next <= n.seq => (stat.cversion.max(0) as u64).max(n.seq + 1),
        _ => next,
    }
}

/// Adds version `name` (under `parent`) and its metadata (under `meta_parent`) to a fenced
/// multi-op: both appear in one transaction, so no reader ever sees the version without its
/// metadata, and the plain create of the name [`next_version_seq`] gave fails the whole
/// multi-op (NodeExists) when a plain client's sequential create took that number first.
pub(crate) fn add_version(w: &mut zk::CheckWriter<'_>, parent: &str, meta_parent: &str, name: &str, data: &[u8], meta: &VersionMeta) -> Result<(), zk::Error> {
    let owned = crate::zk::identity::for_node(NodeKind::Owned);
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&owned));
    let meta = serde_json::to_vec(meta).map_err(|e| zk::Error::UnexpectedError(format!("cannot encode metadata: {e}")))?;
    w.add_create(&format!("{parent}/{name}"), data, &persistent)?;
    w.add_create(&format!("{meta_parent}/{name}"), &meta, &persistent)
}

impl Leader<'_> {
    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes sure `app`'s metadata parent exists: looked at once per leadership, not per publish.
    pub(crate) async fn ensure_meta_parent(&self, app: &str) -> Result<(), AgentError> {
        if !self.known().meta_parents.contains(app) {
            session::ensure_path(self.client, &self.layout.meta(app), NodeKind::AgentParent).await?;
            self.known().meta_parents.insert(app.to_string());
        }
        Ok(())
    }

    /// The sha256 of `app`'s version `name` in `stream`, when this leadership created it and
    /// it is still the newest this leadership knows of.
    pub(crate) fn known_sha256(&self, app: &str, stream: i64, name: &str) -> Option<String> {
        self.known().newest.get(app).filter(|(s, n, _)| *s == stream && n == name).map(|(_, _, sum)| sum.clone())
    }

    /// Lists `app`'s versions with its rollout record, in one round trip; None when the
    /// versions parent does not exist.
    pub(crate) async fn list(&self, app: &str) -> Result<Option<crate::zk::rollout::Listed>, AgentError> {
        let parent = self.layout.versions(app);
        Ok(crate::zk::rollout::list_with_record(self.client, &self.layout, app, &parent, &self.no_multi_read).await?)
    }

    /// Remembers `app`'s versions as `children` listed them plus those `created`, for the prune.
    pub(crate) fn listed_with<'n>(&self, app: &str, children: &[String], created: impl IntoIterator<Item = &'n str>) {
        let mut all = layout::versions(children);
        all.extend(created.into_iter().filter_map(VersionId::parse));
        all.sort_by_key(|v| v.seq);
        all.dedup_by_key(|v| v.seq);
        self.known().listed.insert(app.to_string(), all);
    }

    /// Says a chunked publish to `app` was handled: its chunks directory is no longer known empty.
    pub(crate) fn chunked(&self, app: &str) {
        self.known().blobless.remove(app);
    }

    /// Remembers that this leadership created `name` in `stream` as `app`'s newest version.
    pub(crate) fn created(&self, app: &str, stream: i64, name: &str, sha256: &str) {
        self.known().newest.insert(app.to_string(), (stream, name.to_string(), sha256.to_string()));
        self.unsettled.track(app, stream, name);
    }

    /// Turns one request into an outcome. Returns the app when a version was created.
    pub(crate) async fn handle_request(&self, name: &str) -> Result<Option<String>, AgentError> {
        let Leader { config, layout, client, .. } = self;
        let req_path = format!("{}/{}", layout.requests(), name);
        // With one leader the fence alone makes it the only writer, so the claim (a quorum write
        // on every publish's path) is only needed when several leaders share the requests.
        let claimed = config.agent.leaders > 1;
        if claimed && !self.claim(name).await? {
            return Ok(None);
        }
        let bytes = match client.get_data(&req_path).await {
            Ok((b, _)) => b,
            Err(zk::Error::NoNode) => return Ok(None), // withdrawn by its publisher
            Err(e) => return Err(e.into()),
        };
        self.handle_fetched(name, &bytes, claimed).await
    }

    /// Turns one request whose node held `bytes` into an outcome, one round trip after another:
    /// the path for everything [`crate::agent::intake`] does not batch. Returns the app when a version
    /// was created.
    pub(crate) async fn handle_fetched(&self, name: &str, bytes: &[u8], claimed: bool) -> Result<Option<String>, AgentError> {
        let Leader { config, layout, client, metrics, .. } = self;
        // The header is checked first, whatever carries the bytes: its app name becomes znode paths.
        let decoded = request::decode(bytes).and_then(|(h, d)| validate_header(&h).map(|_| (h, d))).map_err(String::from);
        let checked = match decoded {
            // Chunked content: verify the blob; the version node will hold its marker.
            Ok((h, d)) if h.content.is_chunked() => {
                self.chunked(&h.app);
                crate::zk::blobs::verify_request(client, layout, &h, d, config.max_config_size).await?.map(|marker| (h, marker))
            }
            decoded => decoded.and_then(|(h, d)| validate_inline(&h, d).map(|_| (h, d.to_vec())).map_err(String::from)),
        };
        let reply = Reply { req: name, claimed };
        let (outcome, meta_for, app, answered, publish_id) = match checked {
            Err(reason) => (Outcome::Rejected { reason }, None, None, false, None),
            Ok((header, data)) => {
                let (outcome, meta_for, answered) = self.decide(&header, &data, Some(reply)).await?;
                (outcome, meta_for, Some(header.app), answered, header.publish_id)
            }
        };
        let publish_id = publish_id.as_deref().unwrap_or("-");
        tracing::info!(request = %name, outcome = %outcome, publish_id, "publish request handled");
        let published = matches!(outcome, Outcome::Published { .. });
        if !answered {
            self.finish(name, &outcome, meta_for, claimed).await?;
        }
        // Counted once the outcome is written: a request whose answer was lost with the connection
        // is handled again, and counted then.
        metrics.publish_handled(&outcome);
        Ok(app.filter(|_| published))
    }

    /// Turns a publish handed over in-process (see [`crate::agent::LocalPublish`]) into an
    /// outcome: no request node to read, answer or delete. Returns the app when a version was created.
    pub(crate) async fn handle_local(&self, h: &RequestHeader, data: &[u8]) -> Result<(Outcome, Option<String>), AgentError> {
        let checked = validate_header(h).and_then(|_| validate_inline(h, data)).map_err(|e| e.to_string());
        let outcome = match checked {
            Err(reason) => Outcome::Rejected { reason },
            Ok(()) => {
                let (outcome, meta_for, _) = self.decide(h, data, None).await?;
                if let Some((app, version, meta)) = meta_for {
                    // Unchanged, and its metadata was missing: fill it in (a racing fill is as good).
                    let owned = crate::zk::identity::for_node(NodeKind::Owned);
                    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&owned));
                    let mut w = self.fence.writer(self.client)?;
                    w.add_create(&format!("{}/{version}", self.layout.meta(&app)), &serde_json::to_vec(&meta).expect("meta"), &persistent)?;
                    match self.fence.commit(w).await {
                        Ok(_) | Err(AgentError::Zk(zk::Error::NodeExists)) => {}
                        Err(e) => return Err(e),
                    }
                }
                outcome
            }
        };
        tracing::info!(origin = %h.origin, outcome = %outcome, publish_id = h.publish_id.as_deref().unwrap_or("-"), "in-process publish handled");
        self.metrics.publish_handled(&outcome);
        let app = matches!(outcome, Outcome::Published { .. }).then(|| h.app.clone());
        Ok((outcome, app))
    }

    /// Claims request `req` for this leader: with `leaders > 1` several leaders see the same
    /// request, and only the one whose claim lands handles it. A claim is ephemeral, so a leader
    /// that dies mid-request frees it for the next (content dedupe makes the retry harmless).
    async fn claim(&self, req: &str) -> Result<bool, AgentError> {
        let Leader { layout, client, fence, .. } = self;
        let claim = layout.claim(req);
        let mut w = fence.writer(client)?;
        w.add_check_version(&format!("{}/{req}", layout.requests()), -1)?;
        let owned = crate::zk::identity::for_node(NodeKind::Owned);
        w.add_create(&claim, b"", &zk::CreateMode::Ephemeral.with_acls(zk::Acls::new(&owned)))?;
        match fence.commit(w).await {
            Ok(_) => Ok(true),
            // Already handled (request gone), or another leader holds it.
            Err(AgentError::Zk(zk::Error::NoNode)) => Ok(false),
            Err(AgentError::Zk(zk::Error::NodeExists)) => {
                // Ours from an earlier attempt on this session counts as ours.
                let owner = client.check_stat(&claim).await?.map(|s| s.ephemeral_owner);
                Ok(owner == Some(client.session_id().0))
            }
            Err(e) => Err(e),
        }
    }




    /// Why a publish to `app` is refused now: a freeze in force, or flags not read yet (at
    /// most a few seconds after a session starts; refused rather than risk publishing into a
    /// freeze). None: go ahead.
    pub(crate) async fn frozen(&self, app: &str) -> Option<String> {
        use std::sync::atomic::Ordering;
        let mut rx = self.freezes.clone();
        let patience = if self.freeze_wait_spent.load(Ordering::Relaxed) { 0 } else { 10 };
        let read = tokio::time::timeout(std::time::Duration::from_secs(patience), rx.wait_for(Option::is_some)).await;
        match read {
            Ok(Ok(board)) => {
                self.freeze_wait_spent.store(false, Ordering::Relaxed);
                board.as_ref().and_then(|b| b.refusal(app))
            }
            _ => {
                self.freeze_wait_spent.store(true, Ordering::Relaxed);
                Some("the freeze flags could not be read yet; nothing published, try again".into())
            }
        }
    }

    /// Creates the version unless it equals the newest one. With `reply`, a new version's
    /// multi-op also answers the request (outcome written, request removed), so a publish
    /// through a request node makes one write after the request's; the last value says
    /// whether it did (else [`Leader::finish`] answers).
    async fn decide(&self, h: &RequestHeader, data: &[u8], reply: Option<Reply<'_>>) -> Result<(Outcome, MetaFor, bool), AgentError> {
        if let Some(reason) = self.frozen(&h.app).await {
            return Ok((Outcome::Rejected { reason }, None, false));
        }
        let Leader { layout, client, fence, .. } = self;
        let parent = layout.versions(&h.app);
        let meta_parent = layout.meta(&h.app);
        // The listing also says whether the parent exists, so the first publish alone creates
        // it (beginning a new version stream), and gives the stream's identity, its czxid.
        // The rollout record comes with it, in the same round trip.
        let listed = match self.list(&h.app).await? {
            Some(l) => l,
            None => {
                self.begin_stream(&h.app).await?;
                self.list(&h.app).await?.ok_or(AgentError::Zk(zk::Error::NoNode))?
            }
        };
        let crate::zk::rollout::Listed { children, stat: parent_stat, record } = listed;
        let stream = parent_stat.czxid;
        let meta = VersionMeta::of(h, stream);
        if let Some(newest) = layout::newest_version(&children) {
            let read = match self.known_sha256(&h.app, stream, &newest.name) {
                Some(sum) => Ok(sum),
                None => client.get_data(&format!("{parent}/{}", newest.name)).await.map(|(b, _)| crate::model::content::content_sha256(&b)),
            };
            match read {
                Ok(sum) if sum == h.sha256 => {
                    // A leader that died between creating a version and answering leaves the request
                    // behind; this path answers it, and fills in the metadata if it is missing.
                    // Metadata of an earlier stream (the app's node was re-created) describes
                    // another version of the same name: it counts as missing, and is replaced.
                    let newest_meta = match client.get_data(&format!("{meta_parent}/{}", newest.name)).await {
                        Ok((m, stat)) => match serde_json::from_slice::<VersionMeta>(&m) {
                            Ok(m) if !m.belongs_to(stream, stat.czxid) => None,
                            parsed => Some(parsed.ok()),
                        },
                        Err(zk::Error::NoNode) => None,
                        Err(e) => return Err(e.into()),
                    };
                    // Signing content that exists unsigned (or signed by another key) is a new
                    // version: apps that require a signature could not install the old one. So
                    // is a fresh signature of the same content: hosts refuse a signature older
                    // than the one they run, so after a replay only a newer one gets them back;
                    // the very same signature (a retried request) is the same version.
                    let signer = |m: &VersionMeta| m.signature.as_ref().map(|s| s.public_key.clone());
                    let same_signer = match (&h.signature, &newest_meta) {
                        (None, _) => true,
                        (Some(s), Some(Some(m))) if s.issued_ms.is_some() => m.signature.as_ref() == Some(s),
                        (Some(s), Some(Some(m))) => signer(m).as_ref() == Some(&s.public_key),
                        // No metadata yet: our own earlier attempt; it gets this request's, signature included.
                        (Some(_), None) => true,
                        (Some(_), Some(None)) => false,
                    };
                    // A rollout holding the newest back (aborted, or still on canaries) is superseded
                    // only by a new version, and a --canary publish starts its own rollout: neither
                    // may be answered "unchanged".
                    let held = matches!(&record, Some((Some(r), _)) if r.state.holds_back());
                    if same_signer && !held && h.canary.is_none() {
                        let meta_for = newest_meta.is_none().then(|| (h.app.clone(), newest.name.clone(), meta));
                        return Ok((Outcome::Unchanged { version: newest.name }, meta_for, false));
                    }
                }
                Ok(_) | Err(zk::Error::NoNode) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let rollout = match crate::agent::rollout::plan_publish(client, layout, &self.config.agent.gates, &h.app, h.canary.as_ref(), &children, record).await? {
            Ok(plan) => plan,
            Err(reason) => return Ok((Outcome::Rejected { reason }, None, false)),
        };
        self.ensure_meta_parent(&h.app).await?;
        let version = VersionId::from_seq(next_version_seq(&parent_stat, &children)).name;
        let outcome = Outcome::Published { version: version.clone() };
        let mut reply = reply;
        let mut cleared = false;
        loop {
            let mut w = fence.writer(client)?;
            add_version(&mut w, &parent, &meta_parent, &version, data, &meta)?;
            rollout.add_to(&mut w)?;
            if let Some(r) = &reply {
                self.add_reply(&mut w, r, &outcome)?;
            }
            match fence.commit(w).await {
                Ok(_) => break,
                // A withdrawn request, or an outcome an earlier attempt left: nothing was
                // written; the version goes alone and `finish` answers as it knows how.
                Err(AgentError::Zk(zk::Error::NoNode | zk::Error::NodeExists)) if reply.is_some() => reply = None,
                Err(AgentError::Zk(zk::Error::NodeExists)) if !cleared && self.clear_stale_meta(&h.app, &version).await? => cleared = true,
                Err(e) => return Err(e),
            }
        }
        self.created(&h.app, stream, &version, &h.sha256);
        self.listed_with(&h.app, &children, [version.as_str()]);
        // The metadata went with the version: nothing to fill in when answering.
        Ok((outcome, None, reply.is_some()))
    }

    /// Adds the answer to a request to a multi-op: its outcome, and its request (and claim) removed.
    pub(crate) fn add_reply(&self, w: &mut zk::CheckWriter<'_>, reply: &Reply<'_>, outcome: &Outcome) -> Result<(), zk::Error> {
        let owned = crate::zk::identity::for_node(NodeKind::Owned);
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&owned));
        let encoded = serde_json::to_vec(outcome).map_err(|e| zk::Error::UnexpectedError(format!("cannot encode outcome: {e}")))?;
        w.add_create(&self.layout.outcome(reply.req), &encoded, &persistent)?;
        w.add_delete(&format!("{}/{}", self.layout.requests(), reply.req), None)?;
        if reply.claimed {
            w.add_delete(&self.layout.claim(reply.req), None)?;
        }
        Ok(())
    }

    /// Begins a new version stream for `app`, whose versions parent does not exist (never
    /// published, or deleted by an operator): creates the parent, then removes what an earlier
    /// stream left (metadata whose names the new stream's sequence numbers will reuse, and a
    /// rollout record naming the old versions). Only nodes last written before the parent was
    /// created go, so a second leader racing this one never loses the new stream's metadata.
    /// Returns the stream, the parent's czxid.
    pub(crate) async fn begin_stream(&self, app: &str) -> Result<i64, AgentError> {
        let Leader { layout, client, fence, .. } = self;
        let parent = layout.versions(app);
        session::ensure_path(client, &parent, NodeKind::AgentParent).await?;
        let stream = match client.check_stat(&parent).await? {
            Some(stat) => stat.czxid,
            None => return Err(AgentError::Zk(zk::Error::NoNode)),
        };
        let meta_parent = layout.meta(app);
        let children = match client.list_children(&meta_parent).await {
            Ok(c) => c,
            Err(zk::Error::NoNode) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let paths: Vec<String> = children.iter().map(|m| format!("{meta_parent}/{m}")).collect();
        let stats = futures::future::join_all(paths.iter().map(|p| client.check_stat(p))).await;
        let mut stale = Vec::new();
        for (path, stat) in paths.iter().zip(stats) {
            if let Some(stat) = stat? {
                if stat.czxid < stream {
                    stale.push((path, stat.version));
                }
            }
        }
        for batch in stale.chunks(200) {
            let mut w = fence.writer(client)?;
            for (path, version) in batch {
                w.add_delete(path, Some(*version))?;
            }
            match fence.commit(w).await {
                // Changed or gone meanwhile: the stream check on every read covers what is left.
                Ok(_) | Err(AgentError::Zk(zk::Error::NoNode | zk::Error::BadVersion)) => {}
                Err(e) => return Err(e),
            }
        }
        let rollout = client.check_stat(&layout.rollout(app)).await?.filter(|s| s.mzxid < stream);
        if let Some(r) = rollout {
            let mut w = fence.writer(client)?;
            w.add_delete(&layout.rollout(app), Some(r.version))?;
            match fence.commit(w).await {
                Ok(_) | Err(AgentError::Zk(zk::Error::NoNode | zk::Error::BadVersion | zk::Error::NotEmpty)) => {}
                Err(e) => return Err(e),
            }
        }
        if !stale.is_empty() || rollout.is_some() {
            tracing::warn!(app, metadata = stale.len(), rollout = rollout.is_some(), path = %parent, "the app's versions node was gone (deleted by hand?); removed what its old versions left and began a new version stream");
        }
        Ok(stream)
    }

    /// Whether the metadata node at `path` is stale: left by an earlier version stream of
    /// `app` (see [`VersionMeta::belongs_to`]). Returns its version for a checked delete, or
    /// None when it belongs (or is gone, or garbled: garbled metadata is never overwritten).
    async fn stale_meta(&self, app: &str, path: &str) -> Result<Option<i32>, AgentError> {
        let Leader { layout, client, .. } = self;
        let (meta, parent) = futures::join!(client.get_data(path), client.check_stat(&layout.versions(app)));
        let (Ok((bytes, stat)), Some(parent)) = (meta, parent?) else { return Ok(None) };
        Ok(match serde_json::from_slice::<VersionMeta>(&bytes) {
            Ok(m) if !m.belongs_to(parent.czxid, stat.czxid) => Some(stat.version),
            _ => None,
        })
    }

    /// After a version's multi-op failed with NodeExists: removes metadata that an earlier
    /// version stream of `app` left under `version`'s name (an app deleted and re-created by
    /// hand restarts its numbering), so the multi-op can be tried again. False when nothing
    /// stale was there: the name itself was taken (a plain client's create).
    pub(crate) async fn clear_stale_meta(&self, app: &str, version: &str) -> Result<bool, AgentError> {
        let path = format!("{}/{version}", self.layout.meta(app));
        let Some(v) = self.stale_meta(app, &path).await? else { return Ok(false) };
        tracing::info!(app = %app, %version, "replacing metadata left by an earlier version stream");
        let mut w = self.fence.writer(self.client)?;
        w.add_delete(&path, Some(v))?;
        match self.fence.commit(w).await {
            Ok(_) | Err(AgentError::Zk(zk::Error::NoNode | zk::Error::BadVersion)) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Writes metadata and the outcome and removes the request (and its claim), in one fenced
    /// multi-op. Metadata that an earlier version stream left under the same name is replaced.
    pub(crate) async fn finish(&self, req: &str, outcome: &Outcome, mut meta_for: MetaFor, claimed: bool) -> Result<(), AgentError> {
        let Leader { layout, client, fence, .. } = self;
        let outcome_path = layout.outcome(req);
        let owned = crate::zk::identity::for_node(NodeKind::Owned);
        let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::new(&owned));
        for attempt in 0..2 {
            let mut w = fence.writer(client)?;
            if let Some((app, version, meta)) = &meta_for {
                w.add_create(&format!("{}/{version}", layout.meta(app)), &serde_json::to_vec(meta).expect("meta"), &persistent)?;
            }
            self.add_reply(&mut w, &Reply { req, claimed }, outcome)?;
            match fence.commit(w).await {
                Ok(_) => return Ok(()),
                // The publisher withdrew the request (timed out) at the last moment: nothing to answer.
                Err(AgentError::Zk(zk::Error::NoNode)) => {
                    if claimed {
                        let _ = client.delete(&layout.claim(req), None).await;
                    }
                    return Ok(());
                }
                // An earlier attempt answered, and the answer was lost with the connection: replace it.
                // Or the metadata's name was taken: by an earlier stream's (replace it), or by our
                // own earlier attempt (keep it).
                Err(AgentError::Zk(zk::Error::NodeExists)) if attempt == 0 => {
                    match client.delete(&outcome_path, None).await {
                        Ok(()) | Err(zk::Error::NoNode) => {}
                        Err(e) => return Err(e.into()),
                    }
                    if let Some((app, version, _)) = &meta_for {
                        let path = format!("{}/{version}", layout.meta(app));
                        match self.stale_meta(app, &path).await? {
                            Some(v) => {
                                tracing::info!(app = %app, %version, "replacing metadata left by an earlier version stream");
                                let mut w = fence.writer(client)?;
                                w.add_delete(&path, Some(v))?;
                                match fence.commit(w).await {
                                    Ok(_) | Err(AgentError::Zk(zk::Error::NoNode | zk::Error::BadVersion)) => {}
                                    Err(e) => return Err(e),
                                }
                            }
                            None if client.check_stat(&path).await?.is_some() => meta_for = None,
                            None => {}
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(AgentError::Zk(zk::Error::NodeExists))
    }

    /// Deletes versions (and their metadata) beyond `keep_versions`, oldest first.
    pub(crate) async fn prune(&self, app: &str) -> Result<(), AgentError> {
        let Leader { config, layout, client, fence, .. } = self;
        let keep = config.agent.keep_versions as usize;
        let parent = layout.versions(app);
        // The publish just made listed the versions: a plain client's version created since
        // is counted by the next prune, and one deleted since fails the deletion (below).
        let cached = self.known().listed.remove(app);
        let all = match cached {
            Some(all) => all,
            None => layout::versions(&client.list_children(&parent).await?),
        };
        let pruned = all.len().saturating_sub(keep);
        let blobless = self.known().blobless.get(app).is_some_and(|at| at.elapsed() < BLOBLESS_RECHECK);
        let blobs = if blobless {
            Vec::new()
        } else {
            let doomed = crate::zk::blobs::doomed_blobs(client, layout, app, &parent, &all, pruned).await?;
            if doomed.is_none() {
                self.known().blobless.insert(app.to_string(), std::time::Instant::now());
            }
            doomed.unwrap_or_default()
        };
        if pruned == 0 {
            return self.prune_blobs(app, blobs).await;
        }
        let meta_parent = layout.meta(app);
        let doomed: Vec<&VersionId> = all.iter().take(pruned).collect();
        // Each version goes with its metadata. Versions this leader made have it; a version a
        // plain client made has none, which fails the multi-op (NoNode): then the metadata
        // is listed and only what exists is deleted.
        let mut metas: Option<BTreeSet<String>> = None;
        let mut start = 0;
        while start < doomed.len() {
            let batch = &doomed[start..doomed.len().min(start + 50)];
            let mut w = fence.writer(client)?;
            for v in batch {
                w.add_delete(&format!("{parent}/{}", v.name), None)?;
                if metas.as_ref().is_none_or(|m| m.contains(&v.name)) {
                    w.add_delete(&format!("{meta_parent}/{}", v.name), None)?;
                }
            }
            match fence.commit(w).await {
                Ok(_) => start += batch.len(),
                Err(AgentError::Zk(zk::Error::NoNode)) if metas.is_none() => {
                    metas = Some(match client.list_children(&meta_parent).await {
                        Ok(m) => m.into_iter().collect(),
                        Err(zk::Error::NoNode) => BTreeSet::new(),
                        Err(e) => return Err(e.into()),
                    });
                }
                // Someone else (an operator) deleted one meanwhile; the next publish prunes again.
                Err(AgentError::Zk(zk::Error::NoNode)) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        tracing::info!(app, pruned = doomed.len(), kept = keep, "pruned old versions");
        self.prune_blobs(app, blobs).await
    }

    /// Deletes the chunks of large configs that no kept version needs (see [`crate::zk::blobs`]),
    /// each blob in one fenced multi-op, after the versions that referenced them.
    async fn prune_blobs(&self, app: &str, blobs: Vec<crate::zk::blobs::DoomedBlob>) -> Result<(), AgentError> {
        let Leader { client, fence, .. } = self;
        let n = blobs.len();
        for (blob, chunks) in blobs {
            let mut w = fence.writer(client)?;
            for c in &chunks {
                w.add_delete(c, None)?;
            }
            w.add_delete(&blob, None)?;
            match fence.commit(w).await {
                // Gone meanwhile, or a publisher is re-uploading into it: the next prune looks again.
                Ok(_) | Err(AgentError::Zk(zk::Error::NoNode | zk::Error::NotEmpty)) => {}
                Err(e) => return Err(e),
            }
        }
        if n > 0 {
            tracing::info!(app, blobs = n, "pruned chunks of large configs");
        }
        Ok(())
    }
}
